"""The measured report: ``manifest.json`` (a public contract) and ``report.md`` (for people).

Both are written after every artifact file is in place, through a staging folder and renames,
so a reader never finds a manifest that points at missing or half-written files.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import shutil
from pathlib import Path

from edgeprune.errors import OutputError
from edgeprune.io import write_json_atomic

MANIFEST_VERSION = 1
VERSIONED_PACKAGES = ("edgeprune", "torch", "torchvision", "torch-pruning", "apache-tvm",
                      "onnxruntime", "onnx", "numpy")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            found[name.replace("apache-", "")] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name.replace("apache-", "")] = "not installed"
    return found


def ensure_writable(out: Path) -> None:
    """Fail before any long work if ``out`` cannot be created or written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"output directory {out} is not writable: {exc.strerror or exc}") from None


def file_table(root: Path) -> dict[str, dict]:
    """Every shipped file under ``root`` (hidden state folders excluded) with its sha256."""
    table = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            if rel.as_posix() != "manifest.json":
                table[rel.as_posix()] = {"sha256": sha256(path), "bytes": path.stat().st_size}
    return table


def publish(staging: Path, out: Path, manifest: dict, report_md: str) -> None:
    """Move staged files into ``out``, then write report.md and, last, manifest.json."""
    (staging / "report.md").write_text(report_md)
    for path in sorted(staging.rglob("*")):
        if path.is_file():
            dest = out / path.relative_to(staging)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)
    shutil.rmtree(staging, ignore_errors=True)
    manifest = dict(manifest, files=file_table(out))
    write_json_atomic(out / "manifest.json", manifest)


def _lat(entry: dict | None) -> str:
    if not entry:
        return "—"
    lat = entry["latency_ms"]
    return f"{lat['median']:.3f} ms (p90 {lat['p90']:.3f}) `{lat['source']}`"


def _provenance(m: dict) -> str:
    """One honest sentence on where the latencies came from (measured vs estimated)."""
    if m["result"]["latency_ms"]["source"].startswith("estimate:"):
        return ("**No board was reachable: latencies labelled `estimate:*` were computed from the "
                "target's peak compute and bandwidth, not measured.** Pass `--device` to measure. "
                "MAC counts are sizes, not latencies.")
    return ("Every latency above was measured on the compiled artifact on the device named above "
            "(warm-up, repeats, median and p90); the `source` label names the profiler. "
            "MAC counts are sizes, not latencies.")


def render_markdown(m: dict) -> str:
    """A short human report: the budget verdict, then the side-by-side measured table."""
    b, r = m["baseline"], m["result"]
    lines = [
        f"# edgeprune report — {m['model']} on target `{m['target']}`",
        "",
        f"- Shipped runtime: **{m['runtime']}** (`{m['artifact']}`)",
        f"- Budget: {m['budget']['requested']} = {m['budget']['latency_ms']:.3f} ms → "
        f"**{'met' if m['budget']['met'] else 'NOT met'}** ({r['latency_ms']['median']:.3f} ms measured)",
        f"- Accuracy (top-1 of the compiled artifact on {m['data']['val_samples']} validation samples): "
        f"{b['accuracy']:.4f} → {r['accuracy']:.4f}",
        f"- MACs {b['macs'] / 1e6:.2f} M → {r['macs'] / 1e6:.2f} M; params {b['params']:,} → {r['params']:,}",
        f"- Device: {m['device']}; energy: {m['energy']}",
        "",
        "## Measured latency, same CPU, same run",
        "",
        "| runtime | before pruning | after pruning | speed-up | notes |",
        "|---|---|---|---|---|",
    ]
    for name, entry in m["runtimes"].items():
        before, after = entry.get("baseline"), entry.get("result")
        speed = (f"{before['latency_ms']['median'] / after['latency_ms']['median']:.2f}×"
                 if before and after else "—")
        lines.append(f"| {name} | {_lat(before)} | {_lat(after)} | {speed} | {entry.get('note', '')} |")
    lines += ["", "## Search steps (each candidate compiled and measured)", "",
              "| step | latency (median) | MMACs | top-1 (PyTorch) | channels kept |", "|---|---|---|---|---|"]
    for s in m["search"]["steps"]:
        lines.append(f"| {s['step']} | {s['latency_ms']['median']:.3f} ms | {s['macs'] / 1e6:.2f} | "
                     f"{s['accuracy_pytorch']:.4f} | {s['kept_fraction']:.0%} |")
    lines += _scratch_lines(m.get("from_scratch"))
    lines += ["", "## Where the figures come from", "",
              _provenance(m), "",
              f"Stage wall times (s): {', '.join(f'{k} {v:.1f}' for k, v in m['timing_s'].items())}", "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()), ""]
    return "\n".join(lines)


def _scratch_lines(scratch: dict | None) -> list[str]:
    """Liu et al.'s baselines next to the fine-tuned model, when ``--from-scratch`` ran them."""
    if not scratch:
        return []
    lines = ["", "## Fine-tuned vs trained from scratch (Rethinking the Value of Network Pruning)", "",
             f"Same pruned architecture, {scratch['accuracy']}; Scratch-B trains "
             f"{scratch['macs_ratio']:.2f}× the epochs of Scratch-E (original MACs / pruned MACs).", "",
             "| model | epochs | top-1 (PyTorch) |", "|---|---|---|",
             f"| fine-tuned (inherited weights) | {scratch['E']['epochs_trained']:.2f} | "
             f"{scratch['fine_tuned_accuracy']:.4f} |"]
    for mode, label in (("E", "Scratch-E (same epochs)"), ("B", "Scratch-B (same compute)")):
        run = scratch[mode]
        lines.append(f"| {label} | {run['epochs_trained']:.2f} | {run['accuracy']:.4f} |")
    lines += ["", f"Scratch-E epochs = {scratch['epochs_basis']}."]
    return lines

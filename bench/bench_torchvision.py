"""Prune every torchvision classifier ~30 % with ``l1`` and with ``taylor``, export to ONNX, run it in
ONNX Runtime (outputs compared with PyTorch), optionally compile it with TVM (untuned, ``--tvm``).

Random weights; input 1x3x64x64, except models that need more (ViT, Swin, MaxViT need 224: their
patch/window sizes are fixed; others fall back to 224 when 64 does not run) — the table says
which. Each model runs in its own subprocess with a timeout, so one hang or crash costs one row.
Results go to ``--json`` (default ``bench/torchvision_results.json``) and a markdown table to
``--doc`` (default ``docs/torchvision.md``); both are rewritten after every model.

    .venv/bin/python bench/bench_torchvision.py                      # every model
    .venv/bin/python bench/bench_torchvision.py --models resnet18 vit_b_16 --timeout 600 --tvm
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEEDS_224 = ("vit_", "swin_", "maxvit")
CRITERIA = ("l1", "taylor")
FAMILY_ORDER = ("resnet18", "resnext50_32x4d", "regnet_x_400mf", "regnet_y_400mf", "mobilenet_v2",
                "mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x0_5", "densenet121", "squeezenet1_0",
                "mnasnet0_5", "convnext_tiny", "vit_b_16", "swin_t", "alexnet", "vgg11", "googlenet",
                "inception_v3", "efficientnet_v2_s", "wide_resnet50_2", "maxvit_t")


def input_size(name: str) -> int:
    return 224 if name.startswith(NEEDS_224) else 64


def run_one(name: str, use_tvm: bool) -> dict:
    """One model, in this process: the row of the table."""
    import logging
    import warnings

    import numpy as np
    import onnxruntime as ort
    import torch
    import torchvision

    from edgeprune.backends.onnx_export import export_onnx
    from edgeprune.criteria import ScoreContext, get_criterion
    from edgeprune.graph import GroupedModel, count_macs
    from edgeprune.plan import PruningPlan
    from edgeprune.prune import prune_between
    from edgeprune.search.planner import StepPolicy, next_plan

    warnings.simplefilter("ignore")
    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    logging.getLogger("edgeprune.graph").addHandler(Keep())
    logging.getLogger("edgeprune.graph").setLevel(logging.INFO)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torchvision.models.get_model(name, weights=None).eval()
    size = input_size(name)
    if size == 64:
        try:
            with torch.no_grad():
                model(torch.rand(1, 3, 64, 64))
        except Exception:  # noqa: BLE001 - too small for this architecture
            size = 224
    example = torch.rand(1, 3, size, size)
    row: dict = {"model": name, "input": size}
    t0 = time.monotonic()
    try:
        grouped = GroupedModel(model, example)
    except Exception as exc:  # noqa: BLE001 - a refusal (TraceError) is a row, not a crash
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return {**row, "error": f"refused ({type(exc).__name__}): {text[:200]}",
                "seconds": round(time.monotonic() - t0, 1)}
    row["group_s"] = round(time.monotonic() - t0, 1)
    row["groups"] = len(grouped.groups)
    row["kept_groups"] = len(grouped.excluded)
    row["kept_reasons"] = sorted(set(grouped.excluded.values()))
    base_macs = count_macs(model, example)[0]
    channels = {n: g.channels for n, g in grouped.groups.items()}
    g = torch.Generator().manual_seed(0)
    batches = ((torch.rand(2, 3, size, size, generator=g), torch.randint(0, 1000, (2,), generator=g)),)
    for crit in CRITERIA:
        entry: dict = {}
        row[crit] = entry
        try:
            work = __import__("copy").deepcopy(model)
            criterion = get_criterion(crit)
            scores = criterion(ScoreContext(work, GroupedModel(work, example), batches))
            plan = PruningPlan.identity(name, tuple(example.shape), crit, channels)
            new = next_plan(plan, scores, StepPolicy(0.3, criterion.scope))
            pruned = prune_between(work, example, plan, new).eval()
            entry["kept_fraction"] = round(new.kept_fraction(), 3)
            entry["mac_ratio"] = round(count_macs(pruned, example)[0] / base_macs, 3)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "m.onnx"
                export_onnx(pruned, example, path)
                session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                got = session.run(None, {session.get_inputs()[0].name: example.numpy()})[0]
            with torch.no_grad():
                want = pruned(example).numpy()
            entry["ort_max_abs_diff"] = float(np.abs(got - want).max())
            entry["output_max_abs"] = float(np.abs(want).max())  # random weights: say how big outputs are
            entry["ort_match"] = bool(np.allclose(got, want, atol=1e-4, rtol=1e-3))
            if use_tvm:
                entry["tvm_match"] = tvm_check(pruned, example, want)
            entry["status"] = "ok" if entry["ort_match"] and entry.get("tvm_match", True) else "mismatch"
        except Exception as exc:  # noqa: BLE001 - recorded in the table
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            entry["status"] = f"error: {type(exc).__name__}: {text[:160]}"
    row["seconds"] = round(time.monotonic() - t0, 1)
    return row


def tvm_check(model, example, want) -> bool:
    import numpy as np
    import torch
    import tvm
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    exported = torch.export.export(model, (example,))
    mod = from_exported_program(exported, keep_params_as_input=False)
    ex = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(example.numpy()))
    out = out[0] if not hasattr(out, "numpy") else out
    return bool(np.allclose(out.numpy(), want, atol=1e-4, rtol=1e-3))


def write_doc(rows: list[dict], all_models: list[str], doc: Path, use_tvm: bool) -> None:
    done = {r["model"]: r for r in rows}
    ok = [m for m, r in done.items() if all(r.get(c, {}).get("status") == "ok" for c in CRITERIA)]
    lines = [
        "# edgeprune on every torchvision classifier",
        "",
        "Generated by `bench/bench_torchvision.py` (random weights; each model pruned ~30 % of its channels "
        "per step with `l1` (per-layer ratio) and with `taylor` (global ranking), exported to ONNX and run in "
        "ONNX Runtime; outputs compared with the pruned PyTorch model at atol 1e-4 / rtol 1e-3"
        + ("; TVM untuned compile compared too" if use_tvm else "; TVM not run (`--tvm`)") + ").",
        "Input 1x3x64x64; 224x224 where the model needs it (ViT/Swin/MaxViT patch and window sizes; models "
        "that do not run at 64), shown per row.",
        "",
        f"**{len(ok)} of {len(done)} models run** prune → export → ONNX Runtime match with both criteria "
        f"({len(all_models)} classifiers in torchvision; {len(all_models) - len(done)} not run in this pass).",
        "",
        "`kept` = groups a rule kept unpruned (the reason is logged, see the notes); `MAC ratio` = pruned/original.",
        "",
        "What the rules do (`edgeprune/graph/rules.py`): concatenation branches are scored on the slice they "
        "cover; grouped convs (ResNeXt, RegNet) lose the same positions in every conv group; `chunk` loses "
        "as many channels per chunk; channel shuffle (ShuffleNetV2) and attention embedding widths "
        "(ViT, Swin) are kept whole with a logged reason while the MLP widths and the branch-internal "
        "channels are pruned; graph building runs under a wall-clock/memory guard "
        "(`EDGEPRUNE_GRAPH_TIMEOUT`, here a third of the per-model timeout) and stops with a one-line "
        "`TraceError` instead of hanging (MaxViT). Outputs of random-weight models can be tiny "
        "(`output_max_abs` in the JSON), so the ONNX Runtime match shows the export is faithful, not accuracy.",
        "",
        "Rerun: `.venv/bin/python bench/bench_torchvision.py [--models NAME ...] [--timeout 300] [--tvm]`.",
        "",
        "| model | input | groups | kept | l1 MAC ratio | l1 | taylor MAC ratio | taylor | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in all_models:
        r = done.get(name)
        if r is None:
            continue
        if "error" in r:
            lines.append(f"| {name} | {r.get('input', '')} | – | – | – | {r['error'][:120]} | – | – | {r.get('seconds', '')} |")
            continue
        cells = []
        for c in CRITERIA:
            e = r.get(c, {})
            cells += [str(e.get("mac_ratio", "–")), e.get("status", "–")[:120]]
        lines.append(f"| {name} | {r['input']} | {r['groups']} | {r['kept_groups']} | " + " | ".join(cells)
                     + f" | {r['seconds']} |")
    reasons: dict[str, list[str]] = {}
    for r in done.values():
        for why in r.get("kept_reasons", []):
            reasons.setdefault(why.split(" (")[0] if "attention block" in why else why, []).append(r["model"])
    lines += ["", "## Channels kept by a rule (not pruned), and where", ""]
    for why, models in sorted(reasons.items()):
        lines.append(f"- {why}: {', '.join(sorted(set(models))[:8])}{' …' if len(set(models)) > 8 else ''}")
    missing = [m for m in all_models if m not in done]
    if missing:
        lines += ["", "## Not run in this pass", "", ", ".join(missing)]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*")
    parser.add_argument("--timeout", type=float, default=400.0, help="seconds per model")
    parser.add_argument("--tvm", action="store_true")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "torchvision_results.json")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "torchvision.md")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, args.tvm)))
        return
    import torchvision

    all_models = sorted(torchvision.models.list_models(module=torchvision.models))
    chosen = args.models or ([m for m in FAMILY_ORDER if m in all_models]
                             + [m for m in all_models if m not in FAMILY_ORDER])
    rows = json.loads(args.json.read_text()) if args.json.exists() else []
    rows = [r for r in rows if r["model"] not in chosen]
    for name in chosen:
        cmd = [sys.executable, __file__, "--one", name] + (["--tvm"] if args.tvm else [])
        start = time.monotonic()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, cwd=ROOT,
                                  env={**__import__("os").environ, "EDGEPRUNE_GRAPH_TIMEOUT": str(args.timeout / 3)})
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line:
                row = json.loads(line[7:])
            else:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                row = {"model": name, "error": f"crashed (rc {proc.returncode}): {tail[:200]}"}
        except subprocess.TimeoutExpired:
            row = {"model": name, "error": f"timeout after {args.timeout:.0f} s"}
        row.setdefault("seconds", round(time.monotonic() - start, 1))
        rows.append(row)
        print(json.dumps({k: row.get(k) for k in ("model", "input", "groups", "kept_groups", "error")}
                         | {c: row.get(c, {}).get("status") for c in CRITERIA}
                         | {c + "_macs": row.get(c, {}).get("mac_ratio") for c in CRITERIA}), flush=True)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
        write_doc(rows, all_models, args.doc, args.tvm)


if __name__ == "__main__":
    main()

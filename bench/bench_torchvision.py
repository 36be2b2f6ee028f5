"""Prune every torchvision classifier ~30 % with ``l1`` and with ``taylor``, export to ONNX, run it in
ONNX Runtime (outputs compared with PyTorch), optionally compile it with TVM (untuned, ``--tvm``).

Random weights; input 1x3x64x64, except models that need more (ViT, Swin, MaxViT need 224: their
patch/window sizes are fixed; others fall back to 224 when 64 does not run) — the table says
which. Each model runs in its own subprocess with a timeout (``--timeout``: grouping, pruning,
ONNX Runtime), so one hang or crash costs one row; with ``--tvm`` each pruned model is compiled in
a further subprocess with its own budget (``--tvm-timeout``, per criterion): a slow TVM build is
a note in the row. ``--json`` and ``--doc`` (the markdown table) are rewritten after every model
and MERGED: rows of models not run now are kept, and so are TVM results on a rerun without ``--tvm``.

    .venv/bin/python bench/bench_torchvision.py                      # every model
    .venv/bin/python bench/bench_torchvision.py --models resnet18 vit_b_16 --timeout 600 --tvm
    .venv/bin/python bench/bench_torchvision.py --tvm --family --tvm-timeout 500 --stop-at 13:20
    .venv/bin/python bench/bench_torchvision.py --doc-only          # the markdown again, from the JSON
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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
TVM_KEYS = ("tvm_match", "tvm_max_abs_diff", "tvm_rel_diff", "tvm_compile_s", "tvm_error")
TVM_REL_TOL = 1e-3  # TVM output vs pruned PyTorch, relative to the output's scale (outputs can be ~1e-15)


def input_size(name: str) -> int:
    return 224 if name.startswith(NEEDS_224) else 64


def one_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:limit]


def load_model(name: str):
    """The random-weight model and the input side it runs at (64, else 224)."""
    import torch
    import torchvision

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
    return model, size


def run_one(name: str, tvm_timeout: float | None) -> dict:
    """One model, in this process: the row of the table (``tvm_timeout`` None: no TVM)."""
    import logging
    import warnings

    import torch

    from edgeprune.graph import GroupedModel, count_macs

    warnings.simplefilter("ignore")
    logging.getLogger("edgeprune.graph").addHandler(logging.NullHandler())  # reasons are in the row
    model, size = load_model(name)
    example = torch.rand(1, 3, size, size)
    row: dict = {"model": name, "input": size}
    t0 = time.monotonic()
    try:
        grouped = GroupedModel(model, example)
    except Exception as exc:  # noqa: BLE001 - a refusal (TraceError) is a row, not a crash
        return {**row, "error": f"refused ({type(exc).__name__}): {one_line(exc)}",
                "seconds": round(time.monotonic() - t0, 1)}
    row["group_s"] = round(time.monotonic() - t0, 1)
    row["groups"] = len(grouped.groups)
    row["kept_groups"] = len(grouped.excluded)
    row["kept_reasons"] = sorted(set(grouped.excluded.values()))
    base_macs = count_macs(model, example)[0]
    channels = {n: g.channels for n, g in grouped.groups.items()}
    g = torch.Generator().manual_seed(0)
    batches = ((torch.rand(2, 3, size, size, generator=g), torch.randint(0, 1000, (2,), generator=g)),)
    skipped = None  # after a TVM timeout the next criterion's model (as big) is not compiled
    for crit in CRITERIA:
        setup = (channels, batches, base_macs)
        row[crit] = check_criterion(name, model, example, crit, setup, None if skipped else tvm_timeout)
        if skipped and "ort_match" in row[crit]:
            row[crit]["tvm_error"] = skipped
        elif row[crit].get("tvm_error", "").startswith("timeout"):
            skipped = f"not tried: the {crit} TVM compile timed out"
    row["seconds"] = round(time.monotonic() - t0, 1)
    return row


def check_criterion(name: str, model, example, crit: str, setup: tuple, tvm_timeout: float | None) -> dict:
    """Prune a copy ~30 % with ``crit``, export, compare ONNX Runtime (and TVM) with PyTorch."""
    import copy

    import numpy as np
    import onnxruntime as ort
    import torch

    from edgeprune.backends.onnx_export import export_onnx
    from edgeprune.criteria import ScoreContext, get_criterion
    from edgeprune.graph import GroupedModel, count_macs
    from edgeprune.plan import PruningPlan
    from edgeprune.prune import prune_between
    from edgeprune.search.planner import StepPolicy, next_plan

    channels, batches, base_macs = setup
    entry: dict = {}
    try:
        work = copy.deepcopy(model)
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
        entry["status"] = "ok" if entry["ort_match"] else "mismatch"  # ONNX Runtime; TVM has its own keys
    except Exception as exc:  # noqa: BLE001 - recorded in the table
        entry["status"] = f"error: {type(exc).__name__}: {one_line(exc, 160)}"
        return entry
    if tvm_timeout is not None:
        try:
            entry.update(tvm_subprocess(pruned, example, want, tvm_timeout))
        except Exception as exc:  # noqa: BLE001 - e.g. the pruned model cannot be pickled for the child
            entry["tvm_error"] = f"not started: {type(exc).__name__}: {one_line(exc, 160)}"
    return entry


def tvm_subprocess(pruned, example, want, timeout: float) -> dict:
    """Compile and run the pruned model with TVM in a child process capped at ``timeout`` s."""
    import numpy as np
    import torch

    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch.save(pruned, folder / "model.pt")
        np.save(folder / "x.npy", example.numpy())
        np.save(folder / "want.npy", want)
        cmd = [sys.executable, __file__, "--tvm-one", str(folder)]
        try:
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout,
                                  cwd=ROOT, env={**os.environ, "TVM_NUM_THREADS": "1"})
        except subprocess.TimeoutExpired:
            return {"tvm_error": f"timeout: TVM export+compile+run took more than {timeout:.0f} s"}
    return result_of(proc, "tvm_error", f" after {time.monotonic() - start:.0f} s")


def result_of(proc: subprocess.CompletedProcess, key: str, where: str = "") -> dict:
    """The child's ``RESULT`` line, else ``{key: why it crashed}``."""
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line:
        return json.loads(line[7:])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {key: f"crashed (rc {proc.returncode}){where}: {tail[:200]}"}


def tvm_one(folder: Path) -> dict:
    """In the TVM child: torch.export -> Relax -> lowered -> ``tvm.compile`` (llvm, this host's
    CPU, untuned), the way ``edgeprune``'s TVM backend builds, then run it in the Relax VM."""
    import numpy as np
    import torch

    from edgeprune.backends.tvm.build import _lower, export_program, to_relax
    from edgeprune.backends.tvm.common import import_tvm
    from edgeprune.backends.tvm.target import resolve_target

    torch.set_num_threads(1)
    model = torch.load(folder / "model.pt", weights_only=False).eval()
    example = torch.from_numpy(np.load(folder / "x.npy"))
    want = np.load(folder / "want.npy")
    t0 = time.monotonic()
    try:
        tvm = import_tvm()
        from tvm import relax

        target = tvm.target.Target(resolve_target({"mcpu": "auto"}, threads=1))
        mod = _lower(to_relax(export_program(model, example)), target, layout_rewrite=False)
        vm = relax.VirtualMachine(tvm.compile(mod, target=target), tvm.cpu())
        compile_s = round(time.monotonic() - t0, 1)
        out = vm["main"](tvm.runtime.tensor(example.numpy(), tvm.cpu()))
        got = (out if hasattr(out, "numpy") else out[0]).numpy()
    except Exception as exc:  # noqa: BLE001 - a TVM failure is a note in the row
        return {"tvm_error": f"{type(exc).__name__}: {one_line(exc)}",
                "tvm_compile_s": round(time.monotonic() - t0, 1)}
    diff = float(np.abs(got - want).max())
    scale = float(np.abs(want).max())
    rel = diff / scale if scale > 0 else diff
    return {"tvm_match": bool(got.shape == want.shape and rel <= TVM_REL_TOL),
            "tvm_max_abs_diff": diff, "tvm_rel_diff": rel, "tvm_compile_s": compile_s}


def run_capped(cmd: list[str], timeout: float, env: dict) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; on timeout (or when this process is stopped) kill the
    whole group, so a TVM grandchild does not outlive its model."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def merge_row(old: dict | None, new: dict, ran_tvm: bool) -> dict:
    """The row to keep: ``new``, except that a rerun that lost its row (timeout, crash) keeps the
    old results with a note, and a rerun without TVM keeps the TVM results already recorded."""
    if old is None:
        return new
    if "error" in new and "error" not in old:
        return {**old, "rerun_note": new["error"]}
    if not ran_tvm:
        for crit in CRITERIA:
            kept = {k: v for k, v in old.get(crit, {}).items() if k in TVM_KEYS}
            if kept and crit in new:
                new[crit].update(kept)
                new.setdefault("tvm_run", old.get("tvm_run"))
    return new


def run_model(name: str, args: argparse.Namespace) -> dict:
    """One model in a child process; the TVM compiles (if any) get their own budget on top."""
    budget = args.timeout + (len(CRITERIA) * (args.tvm_timeout + 30) if args.tvm else 0)
    cmd = [sys.executable, __file__, "--one", name] + (["--tvm", "--tvm-timeout", str(args.tvm_timeout)]
                                                       if args.tvm else [])
    env = {**os.environ, "EDGEPRUNE_GRAPH_TIMEOUT": str(args.timeout / 3)}
    start = time.monotonic()
    try:
        row = {"model": name, **result_of(run_capped(cmd, budget, env), "error")}
    except subprocess.TimeoutExpired:
        row = {"model": name, "error": f"timeout after {budget:.0f} s"}
    row.setdefault("seconds", round(time.monotonic() - start, 1))
    return row


def tvm_cell(entry: dict) -> str:
    if "tvm_error" in entry:
        return {"timeout": "timeout", "not tried": "skipped"}.get(entry["tvm_error"].split(":")[0], "fail")
    if "tvm_match" not in entry:
        return "–"
    word = "match" if entry["tvm_match"] else f"MISMATCH (rel {entry.get('tvm_rel_diff', 0):.1e})"
    return f"{word} {entry.get('tvm_compile_s', '')} s"


def table_lines(rows: dict[str, dict], all_models: list[str]) -> list[str]:
    lines = [("| model | input | groups | kept | l1 MAC ratio | l1 ORT | taylor MAC ratio | taylor ORT "
              "| TVM l1 / taylor (compile s) | s |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in all_models:
        r = rows.get(name)
        if r is None:
            continue
        if "error" in r:
            lines.append(f"| {name} | {r.get('input', '')} | – | – | – | {r['error'][:120]} | – | – | – "
                         f"| {r.get('seconds', '')} |")
            continue
        cells = []
        for c in CRITERIA:
            e = r.get(c, {})
            cells += [str(e.get("mac_ratio", "–")), e.get("status", "–")[:120]]
        tvm = " / ".join(tvm_cell(r.get(c, {})) for c in CRITERIA)
        lines.append(f"| {name} | {r['input']} | {r['groups']} | {r['kept_groups']} | " + " | ".join(cells)
                     + f" | {tvm} | {r['seconds']} |")
    return lines


def tvm_failures(rows: dict[str, dict], tried: list[str]) -> list[str]:
    """One line per criterion that did not compile and match."""
    lines = []
    for m in tried:
        for c in CRITERIA:
            e = rows[m].get(c, {})
            if "tvm_error" in e:
                lines.append(f"- {m} ({c}): {e['tvm_error'][:200]}")
            elif e.get("tvm_match") is False:
                lines.append(f"- {m} ({c}): MISMATCH, max abs diff {e['tvm_max_abs_diff']:.2e}, "
                             f"relative {e['tvm_rel_diff']:.2e}")
    return lines


def tvm_section(rows: dict[str, dict], all_models: list[str]) -> list[str]:
    ort_ok = [m for m in all_models if m in rows and all(rows[m].get(c, {}).get("status") == "ok" for c in CRITERIA)]
    tried = [m for m in ort_ok if any(k in rows[m].get(c, {}) for c in CRITERIA for k in ("tvm_match", "tvm_error"))]
    compiled = [m for m in tried if all("tvm_match" in rows[m].get(c, {}) for c in CRITERIA)]
    matched = [m for m in compiled if all(rows[m][c]["tvm_match"] for c in CRITERIA)]
    untried = [m for m in ort_ok if m not in tried]
    lines = ["", "## TVM (untuned) compile of the pruned models", "",
             (f"**TVM: {len(tried)} of the {len(ort_ok)} models that pass ONNX Runtime were tried; {len(compiled)} "
              f"compiled and ran with both criteria, {len(matched)} of them matched the pruned PyTorch model; "
              f"{len(tried) - len(compiled)} did not finish (failed or timed out, below); {len(untried)} not tried (time).** "
              "Compile: torch.export → Relax → `tvm.compile`, llvm for this host's CPU, no tuning (the path of "
              "`edgeprune`'s TVM backend with `--tune-trials 0`), run in the Relax VM on 1 thread; match = "
              f"max |TVM − PyTorch| ≤ {TVM_REL_TOL:g} × max |PyTorch output| (scale-relative: random-weight "
              "outputs can be ~1e-15). `--tvm-timeout` caps each compile: a timeout is a note, not a lost row; "
              "after one the other criterion is not tried.")]
    failures = tvm_failures(rows, tried)
    lines += ["", "Failed or mismatched in TVM (one line each):", "", *failures] if failures else [
        "", "No TVM failure, timeout or mismatch among the models tried."]
    lines += [f"- {m}: TVM rerun lost, earlier results kept: {rows[m]['rerun_note']}"
              for m in ort_ok if rows[m].get("rerun_note")]
    if untried:
        lines += ["", f"Not tried with TVM (time; {len(untried)}): " + ", ".join(untried)]
    failed_ort = [m for m in all_models if m in rows and m not in ort_ok]
    if failed_ort:
        lines += ["", "Not tried with TVM because pruning/ONNX Runtime did not pass: " + ", ".join(failed_ort)]
    runs = sorted((r["tvm_run"] for r in rows.values() if r.get("tvm_run")), key=lambda x: x["at"])
    if runs:
        lines += ["", (f"TVM rows run {runs[0]['at']} → {runs[-1]['end']} UTC on {runs[0]['cpus']} CPUs shared "
                       f"with other work, niced; load average (1/5/15 min) before the first model "
                       f"{runs[0]['load_start']}, after the last {runs[-1]['load_end']}, highest 1-min value seen "
                       f"{max(max(r['load_start'][0], r['load_end'][0]) for r in runs)}; compile seconds are "
                       "under that load.")]
    return lines


INTRO = (
    "Generated by `bench/bench_torchvision.py` (random weights; each model pruned ~30 % of its channels "
    "per step with `l1` (per-layer ratio) and with `taylor` (global ranking), exported to ONNX and run in "
    "ONNX Runtime; outputs compared with the pruned PyTorch model at atol 1e-4 / rtol 1e-3; with `--tvm` "
    "the pruned model is also compiled with TVM, untuned, and compared — see the TVM column and section).\n"
    "Input 1x3x64x64; 224x224 where the model needs it (ViT/Swin/MaxViT patch and window sizes; models "
    "that do not run at 64), shown per row.\n\n{headline}\n\n"
    "`kept` = groups a rule kept unpruned (the reason is logged, see the notes); `MAC ratio` = pruned/original; `s` = "
    "seconds for the row (TVM compiles included where run); TVM column: `match N s` (compile seconds), `fail`/`timeout` (reason in the TVM section), `–` not tried.\n\n"
    "What the rules do (`docs/graph_rules.md`): concatenation branches are scored on the slice they "
    "cover; grouped convs (ResNeXt, RegNet) lose the same positions in every conv group; `chunk` loses "
    "as many channels per chunk; a channel shuffle (ShuffleNetV2) is an exact permutation whose tied "
    "channels go together, the groups it and its chunks tie are pruned as one coupled group in whole, "
    "balanced units (kept, with the reason, where no exact removal exists: ShuffleNetV2's 8-unit stage "
    "below x2.0); attention embedding widths (ViT, Swin) are kept whole with a logged reason while the "
    "MLP widths and the branch-internal channels are pruned; graph building runs under a wall-clock/memory guard "
    "(`EDGEPRUNE_GRAPH_TIMEOUT`, here a third of the per-model timeout) and stops with a one-line "
    "`TraceError` instead of hanging, and the walk that collects a group ends even where torch-pruning's "
    "would not (MaxViT's partitions: `edgeprune/graph/traverse.py`). Outputs of random-weight models can be tiny "
    "(`output_max_abs` in the JSON), so the ONNX Runtime match shows the export is faithful, not accuracy.\n\n"
    "Rerun: `.venv/bin/python bench/bench_torchvision.py [--models NAME ...] [--family] [--timeout 400] "
    "[--tvm [--tvm-timeout 500] [--stop-at HH:MM]]` (rows of models not named are kept).\n"
)


def write_doc(rows: list[dict], all_models: list[str], doc: Path) -> None:
    done = {r["model"]: r for r in rows}
    ok = [m for m, r in done.items() if all(r.get(c, {}).get("status") == "ok" for c in CRITERIA)]
    headline = (f"**{len(ok)} of {len(done)} models run** prune → export → ONNX Runtime match with both "
                f"criteria ({len(all_models)} classifiers in torchvision; {len(all_models) - len(done)} not run).")
    lines = ["# edgeprune on every torchvision classifier", "", *INTRO.format(headline=headline).splitlines(), ""]
    lines += table_lines(done, all_models) + tvm_section(done, all_models) + kept_section(done)
    missing = [m for m in all_models if m not in done]
    if missing:
        lines += ["", "## Not run", "", ", ".join(missing)]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines) + "\n")


def kept_section(done: dict[str, dict]) -> list[str]:
    reasons: dict[str, list[str]] = {}
    for r in done.values():
        for why in r.get("kept_reasons", []):
            reasons.setdefault(why.split(" (")[0] if "attention block" in why else why, []).append(r["model"])
    lines = ["", "## Channels kept by a rule (not pruned), and where", ""]
    for why, models in sorted(reasons.items()):
        lines.append(f"- {why}: {', '.join(sorted(set(models))[:8])}{' …' if len(set(models)) > 8 else ''}")
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*")
    parser.add_argument("--family", action="store_true", help="one model per family (FAMILY_ORDER), then --models")
    parser.add_argument("--timeout", type=float, default=400.0, help="seconds per model (prune + ONNX Runtime)")
    parser.add_argument("--tvm", action="store_true", help="also compile each pruned model with TVM (untuned)")
    parser.add_argument("--tvm-timeout", type=float, default=500.0, help="seconds per TVM compile (per criterion)")
    parser.add_argument("--stop-at", help="HH:MM UTC: start no model after this (rows not run are kept)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "torchvision_results.json")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "torchvision.md")
    parser.add_argument("--doc-only", action="store_true", help="rewrite --doc from --json, run nothing")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--tvm-one", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def utc_now(fmt: str = "%Y-%m-%d %H:%M") -> str:
    return time.strftime(fmt, time.gmtime())


def main() -> None:
    args = parse_args()
    if args.tvm_one:
        print("RESULT " + json.dumps(tvm_one(args.tvm_one)))
        return
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, args.tvm_timeout if args.tvm else None)))
        return
    import torchvision

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run_capped's finally kills the child group
    all_models = sorted(torchvision.models.list_models(module=torchvision.models))
    named = list(FAMILY_ORDER) if args.family else []
    named += [m for m in args.models or [] if m not in named]
    chosen = [m for m in named if m in all_models] or ([m for m in FAMILY_ORDER if m in all_models]
                                                       + [m for m in all_models if m not in FAMILY_ORDER])
    rows = {r["model"]: r for r in (json.loads(args.json.read_text()) if args.json.exists() else [])}
    if args.doc_only:
        write_doc(list(rows.values()), all_models, args.doc)
        return
    for name in chosen:
        if args.stop_at and utc_now("%H:%M") >= args.stop_at.zfill(5):
            print(f"stop-at {args.stop_at} reached: not starting {name} and later models", flush=True)
            break
        at, load_start = utc_now(), list(os.getloadavg())
        row = run_model(name, args)
        if args.tvm and "error" not in row:
            row["tvm_run"] = {"at": at, "end": utc_now(), "cpus": os.cpu_count(),
                              "load_start": [round(x, 2) for x in load_start],
                              "load_end": [round(x, 2) for x in os.getloadavg()]}
        rows[name] = merge_row(rows.get(name), row, args.tvm)
        print(json.dumps({k: row.get(k) for k in ("model", "input", "groups", "error", "seconds")}
                         | {c: row.get(c, {}).get("status") for c in CRITERIA}
                         | {c + "_tvm": tvm_cell(row.get(c, {})) for c in CRITERIA}), flush=True)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(list(rows.values()), indent=1))
        write_doc(list(rows.values()), all_models, args.doc)


if __name__ == "__main__":
    main()

"""Pruned and unpruned, FP32 vs INT8 vs FP16: the artifacts the ONNX Runtime *backend* ships,
timed on this host's CPU and scored on held-out digits.

Every file measured here comes from ``get_backend("onnxruntime").compile(..., CompileOptions(
precision=..., calibration=...))`` — the INT8 file is the backend's (uint8 activations, per-channel
int8 weights, calibrated on 64 training images), not a hand-built one — and is loaded with
``backend.load`` (ORT_ENABLE_ALL, the session deploy measures).

Models (all trained on scikit-learn's digits, so accuracy is real top-1 on the 359 held-out
images): the demo net (``edgeprune.models.demo.load_demo``, 1x1x32x32, cached), torchvision
resnet18 and mobilenet_v2 at 1x3x64x64 (digits upsampled, grey copied to 3 channels, 10 classes,
trained ``--epochs`` from random init here). "pruned" = 50 % of the channels of every group removed
by ``l1`` (``StepPolicy(0.5, "layer")``), then ``--finetune-epochs`` of fine-tuning.

Timing: for each model the six artifacts (unpruned/pruned x fp32/int8/fp16) are loaded first and
timed in ``--rounds`` interleaved rounds of ``--calls`` batch-1 calls in this one process, so a
burst of load from other jobs hits all of them; ratios are from that same run. Load average
before and after is recorded. Results: ``bench/quantize_results.json``. Example::

    .venv/bin/python bench/bench_quantize.py --threads 1
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgeprune.backends import CompileOptions, get_backend
from edgeprune.backends.base import Calibration
from edgeprune.data import Preprocessing, load_digits_data, make_loader
from edgeprune.training.finetune import TrainConfig, train

OUT = Path(__file__).with_name("quantize_results.json")  # overwritten by each run
PRECISIONS = ("fp32", "int8", "fp16")


class ThreeChannel(torch.utils.data.Dataset):
    """Grey digits as the 3-channel images torchvision classifiers expect."""

    def __init__(self, base: torch.utils.data.Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return x.expand(3, -1, -1), y


def model_and_data(name: str, epochs: float, cache: Path):
    """(trained model, train set, val set, input shape)."""
    if name == "demo":
        from edgeprune.models.demo import load_demo

        data = load_digits_data(Preprocessing())
        return load_demo(data, cache), data.train, data.val, (1, 32, 32)
    import torchvision

    data = load_digits_data(Preprocessing(resize=(64, 64)))
    tr, val = ThreeChannel(data.train), ThreeChannel(data.val)
    torch.manual_seed(0)
    net = getattr(torchvision.models, name)(weights=None, num_classes=10)
    train(net, make_loader(tr, 64, shuffle=True), TrainConfig(epochs=epochs, lr=0.05))
    return net.eval(), tr, val, (3, 64, 64)


def prune_half(model: torch.nn.Module, train_set, shape, epochs: float) -> torch.nn.Module:
    """l1, 50 % of every group, replayed from the plan on the original, then fine-tuned."""
    from edgeprune.criteria import ScoreContext, get_criterion
    from edgeprune.graph import GroupedModel
    from edgeprune.plan import PruningPlan
    from edgeprune.prune import apply_plan, group_channels
    from edgeprune.search.planner import StepPolicy, next_plan

    example = torch.zeros(1, *shape)
    batches = (next(iter(make_loader(train_set, 32, shuffle=False))),)
    crit = get_criterion("l1")
    scores = crit(ScoreContext(model, GroupedModel(model, example), batches))
    start = PruningPlan.identity("bench", tuple(example.shape), "l1", group_channels(model, example))
    plan = next_plan(start, scores, StepPolicy(0.5, "layer"))
    pruned = apply_plan(model, PruningPlan.from_json(plan.to_json()), example)
    torch.manual_seed(0)
    train(pruned, make_loader(train_set, 32, shuffle=True), TrainConfig(epochs=epochs, lr=0.01))
    return pruned.eval()


def compile_all(models: dict[str, torch.nn.Module], calib: Calibration, shape, work: Path) -> dict:
    backend = get_backend("onnxruntime")
    out = {}
    for state, model in models.items():
        for precision in PRECISIONS:
            options = CompileOptions("host", {}, work / "cache", precision=precision, calibration=calib)
            out[f"{state}/{precision}"] = backend.compile(model, torch.zeros(1, *shape), work / f"{state}-{precision}",
                                                          options)
    return out


def time_interleaved(sessions: dict, x: np.ndarray, rounds: int, calls: int) -> dict[str, dict]:
    for run in sessions.values():  # warm-up: allocations, thread pools
        for _ in range(10):
            run(x)
    samples: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for key, run in sessions.items():
            for _ in range(calls):
                t0 = time.perf_counter()
                run(x)
                samples[key].append((time.perf_counter() - t0) * 1e3)
    return {k: {"median_ms": float(np.median(v)), "p10_ms": float(np.percentile(v, 10)),
                "p90_ms": float(np.percentile(v, 90)), "calls": len(v)} for k, v in samples.items()}


def quality(sessions: dict, val_set) -> dict[str, dict]:
    xs = torch.stack([val_set[i][0] for i in range(len(val_set))]).numpy()
    ys = np.array([int(val_set[i][1]) for i in range(len(val_set))])
    logits = {k: np.concatenate([run(xs[i:i + 1]) for i in range(len(xs))]) for k, run in sessions.items()}
    out = {}
    for key, z in logits.items():
        ref = logits[key.split("/")[0] + "/fp32"]
        out[key] = {"accuracy": float((z.argmax(1) == ys).mean()),
                    "top1_agreement_with_fp32": float((z.argmax(1) == ref.argmax(1)).mean())}
    return out


def host() -> dict:
    text = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                 platform.processor())
    import onnxruntime

    return {"cpu": model, "nproc": os.cpu_count(), "vnni": sorted(set(text.split()) & {"avx512_vnni", "avx_vnni"}),
            "onnxruntime": onnxruntime.__version__, "torch": torch.__version__, "python": platform.python_version()}


def bench_model(name: str, args: argparse.Namespace, cache: Path) -> dict:
    t0 = time.monotonic()
    net, tr, val, shape = model_and_data(name, args.epochs, cache)
    pruned = prune_half(copy.deepcopy(net), tr, shape, args.finetune_epochs)
    xcal = torch.stack([tr[i][0] for i in range(64)]).numpy()
    calib = Calibration(tuple(xcal[i:i + 16] for i in range(0, 64, 16)), "minmax")
    backend = get_backend("onnxruntime")
    with tempfile.TemporaryDirectory() as tmp:
        arts = compile_all({"unpruned": net, "pruned": pruned}, calib, shape, Path(tmp))
        sessions = {k: backend.load(a, args.threads) for k, a in arts.items()}
        lat = time_interleaved(sessions, xcal[:1], args.rounds, args.calls)
        qual = quality(sessions, val)
    base = lat["unpruned/fp32"]["median_ms"]
    kernels = {k: a.meta.get("ort_kernel_counts", {}).get("integer_convs") for k, a in arts.items()}
    notes = {k: a.meta.get("note") for k, a in arts.items() if k.endswith("fp16")}
    return {"input": [1, *shape], "trained": "demo recipe (load_demo)" if name == "demo" else f"{args.epochs} epochs",
            "latency": lat, "quality": qual, "integer_convs": kernels, "fp16_notes": notes,
            "x_vs_unpruned_fp32": {k: v["median_ms"] / base for k, v in lat.items()},
            "x_vs_same_fp32": {k: v["median_ms"] / lat[k.split("/")[0] + "/fp32"]["median_ms"] for k, v in lat.items()},
            "seconds": round(time.monotonic() - t0, 1)}


def table(report: dict) -> str:
    rows = ["| model | variant | median ms (p10–p90) | × latency vs unpruned FP32 | × vs own FP32 | accuracy | int Convs |",
            "|---|---|---|---|---|---|---|"]
    for name, entry in report["models"].items():
        for key, lat in entry["latency"].items():
            q = entry["quality"][key]
            rows.append(f"| {name} | {key} | {lat['median_ms']:.3f} ({lat['p10_ms']:.3f}–{lat['p90_ms']:.3f}) | "
                        f"{entry['x_vs_unpruned_fp32'][key]:.2f} | {entry['x_vs_same_fp32'][key]:.2f} | "
                        f"{q['accuracy'] * 100:.1f} % | {entry['integer_convs'][key] if entry['integer_convs'][key] is not None else '—'} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo,resnet18,mobilenet_v2")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--epochs", type=float, default=2.0, help="training of the torchvision nets on digits")
    parser.add_argument("--finetune-epochs", type=float, default=1.0, help="fine-tuning after pruning")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="ORT intra-op threads; use 1 when other jobs share the cores")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "edgeprune-bench-cache")
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    report = {"host": host(), "load_average_before": os.getloadavg(), "threads": args.threads,
              "rounds": args.rounds, "calls_per_round": args.calls, "models": {}}
    for name in args.models.split(","):
        report["models"][name] = bench_model(name, args, args.cache)
        print(name, json.dumps({k: round(v, 2) for k, v in report["models"][name]["x_vs_unpruned_fp32"].items()}),
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        OUT.write_text(json.dumps(report, indent=2))
    report["load_average_after"] = os.getloadavg()
    OUT.write_text(json.dumps(report, indent=2))
    print(table(report))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

"""Pruned and unpruned, FP32 vs INT8 vs FP16: the artifacts the ONNX Runtime *backend* ships,
timed on this host's CPU and scored on held-out digits.

Every file measured here comes from ``get_backend("onnxruntime").compile(..., CompileOptions(
precision=..., calibration=...))`` — the INT8 file is the backend's (uint8 activations, per-channel
int8 weights, calibrated on 64 training images), not a hand-built one — and is loaded with
``backend.load`` (ORT_ENABLE_ALL, the session deploy measures).

Models (all trained on scikit-learn's digits, so accuracy is real top-1 on the 359 held-out
images): the demo net (``edgeprune.models.demo.load_demo``, 1x1x32x32, cached; ``--size`` does not
apply to it), torchvision resnet18 and mobilenet_v2 at 1x3x``--size``x``--size`` (digits upsampled,
grey copied to 3 channels, 10 classes), trained here from random init: SGD, cosine schedule from
``--lr``, ``--epochs`` (one figure, or per net, default ``resnet18=2,mobilenet_v2=8``), batches of
``--batch``, then (``--bn-recal``, default on) every BatchNorm's running statistics re-estimated on
the training set with the final weights, so eval mode does not use statistics that lag the weights
after a short high-LR schedule (the first 64² run, 2 epochs without it: mobilenet_v2 11.4 %).
"pruned" = 50 % of the channels of every group removed by ``l1`` (``StepPolicy(0.5, "layer")``),
then ``--finetune-epochs`` of fine-tuning at lr 0.01 (batch 32).

Timing: for each model the six artifacts (unpruned/pruned x fp32/int8/fp16) are loaded first and
timed in ``--rounds`` interleaved rounds of ``--calls`` batch-1 calls in this one process, so a
burst of load from other jobs hits all of them; ratios are from that same run, also per round
(``round_ratios``: INT8 / own FP32 round by round). Then ONNX Runtime's profiler splits the
unpruned FP32 and INT8 files' time by kind of node (depthwise / pointwise / other convs, the rest).
Load average before and after is recorded. Results: ``bench/quantize_results.json`` at 64²,
``bench/quantize_results_<size>.json`` otherwise (``--out``). ``--mixed-check NET`` instead times
FP32, all-INT8 and INT8 with the stem / the depthwise Convs kept FP32 (random-init NET, latency
only; ``bench/quantize_results_mixed_<NET>_<size>.json``). The runs in docs/quantization.md::

    .venv/bin/python bench/bench_quantize.py --threads 1 --epochs 2 --batch 64 --no-bn-recal   # 64x64
    nice -n 19 .venv/bin/python bench/bench_quantize.py --models mobilenet_v2,resnet18 --size 128 --threads 1
    nice -n 19 .venv/bin/python bench/bench_quantize.py --mixed-check mobilenet_v2 --size 128 --threads 1
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
from edgeprune.training.finetune import TrainConfig, pytorch_accuracy, train

HERE = Path(__file__).resolve().parent
PRECISIONS = ("fp32", "int8", "fp16")
DEFAULT_EPOCHS = "resnet18=2,mobilenet_v2=8"


class ThreeChannel(torch.utils.data.Dataset):
    """Grey digits as the 3-channel images torchvision classifiers expect."""

    def __init__(self, base: torch.utils.data.Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return x.expand(3, -1, -1), y


def epochs_for(spec: str, name: str) -> float:
    """``"4"``: every net 4 epochs; ``"resnet18=3,mobilenet_v2=12"``: per net (a net not named: 2)."""
    if "=" not in spec:
        return float(spec)
    table = dict(part.split("=", 1) for part in spec.split(",") if part.strip())
    return float(table.get(name, 2.0))


@torch.no_grad()
def recalibrate_bn(net: torch.nn.Module, data, batch: int) -> torch.nn.Module:
    """Precise BN: every BatchNorm's running mean/var re-estimated (equal-weight average over the
    batches, no gradient) on the training set with the final weights, so eval mode matches them."""
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    for x, _ in make_loader(data, batch, shuffle=False):
        net(x)
    for m, momentum in zip(bns, saved):
        m.momentum = momentum
    return net.eval()


def fit(net: torch.nn.Module, data, val, epochs: float, lr: float, batch: int, args: argparse.Namespace) -> dict:
    """Train (cosine from ``lr``), optionally re-estimate BN; what it cost and scored."""
    t0 = time.monotonic()
    losses = train(net, make_loader(data, batch, shuffle=True), TrainConfig(epochs=epochs, lr=lr))
    train_s = time.monotonic() - t0
    if args.bn_recal:
        recalibrate_bn(net, data, 64)
    acc = pytorch_accuracy(net.eval(), make_loader(val, 64, shuffle=False))
    return {"epochs": epochs, "lr": lr, "batch": batch, "steps": len(losses), "bn_recal": args.bn_recal,
            "train_seconds": round(train_s, 1), "seconds_per_epoch": round(train_s / max(epochs, 1e-9), 1),
            "final_loss": round(float(np.mean(losses[-10:])), 4) if losses else None,
            "pytorch_val_accuracy": acc}


def model_and_data(name: str, args: argparse.Namespace):
    """(trained model, train set, val set, input shape, training record)."""
    if name == "demo":
        from edgeprune.models.demo import load_demo

        data = load_digits_data(Preprocessing())
        return load_demo(data, args.cache), data.train, data.val, (1, 32, 32), {"recipe": "load_demo"}
    import torchvision

    data = load_digits_data(Preprocessing(resize=(args.size, args.size)))
    tr, val = ThreeChannel(data.train), ThreeChannel(data.val)
    torch.manual_seed(0)
    net = getattr(torchvision.models, name)(weights=None, num_classes=10)
    record = fit(net, tr, val, epochs_for(args.epochs, name), args.lr, args.batch, args)
    print(f"{name} {args.size}x{args.size} trained: {json.dumps(record)}", flush=True)
    return net.eval(), tr, val, (3, args.size, args.size), record


def prune_half(model: torch.nn.Module, train_set, val_set, shape, args: argparse.Namespace):
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
    if shape[0] == 1:  # the demo: its own cached recipe, fine-tuned as before
        train(pruned, make_loader(train_set, 32, shuffle=True), TrainConfig(epochs=args.finetune_epochs, lr=0.01))
        return pruned.eval(), {"finetune_epochs": args.finetune_epochs}
    record = fit(pruned, train_set, val_set, args.finetune_epochs, 0.01, 32, args)
    return pruned.eval(), record


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
    samples: dict[str, list[list[float]]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for key, run in sessions.items():
            times = []
            for _ in range(calls):
                t0 = time.perf_counter()
                run(x)
                times.append((time.perf_counter() - t0) * 1e3)
            samples[key].append(times)
    out = {}
    for k, per_round in samples.items():
        v = np.concatenate(per_round)
        out[k] = {"median_ms": float(np.median(v)), "p10_ms": float(np.percentile(v, 10)),
                  "p90_ms": float(np.percentile(v, 90)), "calls": len(v),
                  "round_medians_ms": [round(float(np.median(r)), 4) for r in per_round]}
    return out


def round_ratios(lat: dict) -> dict[str, dict]:
    """INT8 (and FP16) / own FP32, round by round: median and range of the per-round ratios."""
    out = {}
    for key, entry in lat.items():
        ref = lat[key.split("/")[0] + "/fp32"]["round_medians_ms"]
        r = np.array(entry["round_medians_ms"]) / np.array(ref)
        out[key] = {"median": round(float(np.median(r)), 3), "min": round(float(r.min()), 3),
                    "max": round(float(r.max()), 3)}
    return out


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


def conv_kinds(graph) -> dict[str, str]:
    """Conv-like node name (Conv, NchwcConv, QLinearConv, ...) -> depthwise / pointwise / conv KxK,
    from the node's ``group`` and ``kernel_shape`` (else its weight's shape) in the graph ORT runs."""
    from onnx import helper, numpy_helper

    shapes = {i.name: numpy_helper.to_array(i).shape for i in graph.initializer}
    kinds = {}
    for node in (n for n in graph.node if "Conv" in n.op_type):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weight = node.input[3] if node.op_type == "QLinearConv" else node.input[1]
        kernel = tuple(attrs.get("kernel_shape") or shapes.get(weight, (0, 0, 0, 0))[2:4])
        kinds[node.name] = ("depthwise" if attrs.get("group", 1) > 1 else
                            "pointwise" if kernel == (1, 1) else f"conv {'x'.join(map(str, kernel))}")
    return kinds


def op_profile(path: Path, x: np.ndarray, threads: int, calls: int = 40) -> dict:
    """ms per call by kind of node, from ONNX Runtime's profiler: same session options as
    ``backend.load``, 10 warm-up calls dropped; Convs classified in the graph that session runs
    (saved by it), so fused/NCHWc/QLinear nodes are matched by their own names."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.enable_profiling, opts.profile_file_prefix = True, str(Path(tmp) / "prof")
        opts.optimized_model_filepath, opts.log_severity_level = str(Path(tmp) / "placed.onnx"), 3
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        for _ in range(10 + calls):
            sess.run(None, {name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
        kinds = conv_kinds(onnx.load(opts.optimized_model_filepath).graph)
    runs = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    start = runs[10] if len(runs) > 10 else 0
    out: dict[str, float] = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] < start:
            continue
        node, op = e["name"][:-len("_kernel_time")], e.get("args", {}).get("op_name", "?")
        label = kinds.get(node) or ("conv (unmatched)" if "Conv" in op else f"other [{op}]")
        out[label] = out.get(label, 0.0) + e["dur"] / 1e3 / calls
    out = dict(sorted(((k, round(v, 4)) for k, v in out.items()), key=lambda kv: -kv[1]))
    return {"ms_per_call": out, "convs": {k: sum(v == k for v in kinds.values()) for k in sorted(set(kinds.values()))}}


def mixed_check(name: str, args: argparse.Namespace) -> dict:
    """Latency only (random-init ``name`` at ``--size``, calibrated on digits): FP32, all-INT8, and
    INT8 with the stem Conv / every depthwise Conv kept FP32 through ``layer_precisions``, timed
    interleaved — does keeping the layers INT8 gains least on in float pay?"""
    import onnx
    import torchvision

    shape = (3, args.size, args.size)
    torch.manual_seed(0)
    net = getattr(torchvision.models, name)(weights=None, num_classes=10).eval()
    data = ThreeChannel(load_digits_data(Preprocessing(resize=(args.size, args.size))).train)
    xcal = torch.stack([data[i][0] for i in range(64)]).numpy()
    calib = Calibration(tuple(xcal[i:i + 16] for i in range(0, 64, 16)), "minmax")
    backend = get_backend("onnxruntime")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)

        def build(tag: str, precision: str, layers: dict) -> object:
            options = CompileOptions("host", {}, work / "cache", precision=precision, layer_precisions=layers,
                                     calibration=calib)
            return backend.compile(net, torch.zeros(1, *shape), work / tag, options)

        fp32 = build("fp32", "fp32", {})
        convs = [n for n in onnx.load(str(fp32.path)).graph.node if n.op_type == "Conv"]
        depthwise = [n.name for n in convs if next((a.i for a in n.attribute if a.name == "group"), 1) > 1]
        arts = {"fp32": fp32, "int8": build("int8", "int8", {}),
                "int8, stem fp32": build("stem", "int8", {convs[0].name: "fp32"}),
                "int8, depthwise fp32": build("dw", "int8", dict.fromkeys(depthwise, "fp32"))}
        sessions = {k: backend.load(a, args.threads) for k, a in arts.items()}
        lat = time_interleaved(sessions, xcal[:1], args.rounds, args.calls)
        ints = {k: a.meta.get("ort_kernel_counts", {}).get("integer_convs") for k, a in arts.items()}
    ratios = round_ratios({f"x/{k}": v for k, v in lat.items()})
    return {k: {"median_ms": round(v["median_ms"], 4), "p10_ms": round(v["p10_ms"], 4), "p90_ms": round(v["p90_ms"], 4),
                "x_vs_fp32_per_round": ratios[f"x/{k}"], "integer_convs": ints[k]} for k, v in lat.items()}


def host() -> dict:
    text = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                 platform.processor())
    import onnxruntime

    return {"cpu": model, "nproc": os.cpu_count(), "vnni": sorted(set(text.split()) & {"avx512_vnni", "avx_vnni"}),
            "onnxruntime": onnxruntime.__version__, "torch": torch.__version__, "python": platform.python_version()}


def bench_model(name: str, args: argparse.Namespace) -> dict:
    t0 = time.monotonic()
    net, tr, val, shape, trained = model_and_data(name, args)
    pruned, finetuned = prune_half(copy.deepcopy(net), tr, val, shape, args)
    xcal = torch.stack([tr[i][0] for i in range(64)]).numpy()
    calib = Calibration(tuple(xcal[i:i + 16] for i in range(0, 64, 16)), "minmax")
    backend = get_backend("onnxruntime")
    with tempfile.TemporaryDirectory() as tmp:
        arts = compile_all({"unpruned": net, "pruned": pruned}, calib, shape, Path(tmp))
        sessions = {k: backend.load(a, args.threads) for k, a in arts.items()}
        load_timing = os.getloadavg()
        lat = time_interleaved(sessions, xcal[:1], args.rounds, args.calls)
        qual = quality(sessions, val)
        profile = {k: op_profile(arts[k].path, xcal[:1], args.threads) for k in ("unpruned/fp32", "unpruned/int8")}
    base = lat["unpruned/fp32"]["median_ms"]
    kernels = {k: a.meta.get("ort_kernel_counts", {}).get("integer_convs") for k, a in arts.items()}
    notes = {k: a.meta.get("note") for k, a in arts.items() if k.endswith("fp16")}
    return {"input": [1, *shape], "trained": trained, "pruned_finetune": finetuned,
            "latency": lat, "quality": qual, "integer_convs": kernels, "fp16_notes": notes,
            "int8_kernel_summary": arts["unpruned/int8"].meta.get("ort_kernel_counts"),
            "op_profile": profile,
            "x_vs_unpruned_fp32": {k: v["median_ms"] / base for k, v in lat.items()},
            "x_vs_same_fp32": {k: v["median_ms"] / lat[k.split("/")[0] + "/fp32"]["median_ms"] for k, v in lat.items()},
            "round_ratios_vs_same_fp32": round_ratios(lat), "load_average_at_timing": load_timing,
            "seconds": round(time.monotonic() - t0, 1)}


def table(report: dict) -> str:
    head = ("| model | variant | median ms (p10–p90) | × latency vs unpruned FP32 | × vs own FP32 (per-round range) "
            "| accuracy | int Convs |")
    rows = [head, "|---|---|---|---|---|---|---|"]
    for name, entry in report["models"].items():
        for key, lat in entry["latency"].items():
            q, rr, ints = entry["quality"][key], entry["round_ratios_vs_same_fp32"][key], entry["integer_convs"][key]
            rows.append(f"| {name} | {key} | {lat['median_ms']:.3f} ({lat['p10_ms']:.3f}–{lat['p90_ms']:.3f}) | "
                        f"{entry['x_vs_unpruned_fp32'][key]:.2f} | {entry['x_vs_same_fp32'][key]:.2f} "
                        f"({rr['min']:.2f}–{rr['max']:.2f}) | {q['accuracy'] * 100:.1f} % | "
                        f"{ints if ints is not None else '—'} |")
    return "\n".join(rows)


def verdict(name: str, entry: dict) -> str:
    """The goal: INT8 <= 0.4x own FP32 at <= 1 pt drop; pruned+INT8 faster than pruned FP32 at <= 1 pt."""
    lat, q = entry["latency"], entry["quality"]
    parts = []
    for state in ("unpruned", "pruned"):
        ratio = lat[f"{state}/int8"]["median_ms"] / lat[f"{state}/fp32"]["median_ms"]
        drop = (q[f"{state}/fp32"]["accuracy"] - q[f"{state}/int8"]["accuracy"]) * 100
        parts.append(f"{state} int8/fp32 {ratio:.2f}x, drop {drop:+.1f} pt")
    return f"{name}: " + "; ".join(parts)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo,resnet18,mobilenet_v2")
    parser.add_argument("--size", type=int, default=64, help="input side of the torchvision nets (demo: 32)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--epochs", default=DEFAULT_EPOCHS,
                        help="training of the torchvision nets: one figure or per net (name=epochs,...)")
    parser.add_argument("--lr", type=float, default=0.05, help="initial learning rate (cosine to 0)")
    parser.add_argument("--batch", type=int, default=32, help="training batch size")
    parser.add_argument("--bn-recal", action=argparse.BooleanOptionalAction, default=True,
                        help="re-estimate BatchNorm statistics on the training set after (fine-)tuning")
    parser.add_argument("--finetune-epochs", type=float, default=1.0, help="fine-tuning after pruning")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="ORT intra-op threads; use 1 when other jobs share the cores")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "edgeprune-bench-cache")
    parser.add_argument("--mixed-check", default="", help="only the stem/depthwise-in-FP32 latency check of this net")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: bench/quantize_results.json at 64, bench/quantize_results_<size>.json else")
    args = parser.parse_args()
    if args.out is None and args.mixed_check:
        args.out = HERE / f"quantize_results_mixed_{args.mixed_check}_{args.size}.json"
    elif args.out is None:
        args.out = HERE / ("quantize_results.json" if args.size == 64 else f"quantize_results_{args.size}.json")
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if args.mixed_check:
        before = os.getloadavg()
        result = {"net": args.mixed_check, "size": args.size, "load_average_before": before,
                  "variants": mixed_check(args.mixed_check, args), "load_average_after": os.getloadavg()}
        args.out.write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=1))
        return
    recipe = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "cache"}
    report = {"host": host(), "command": " ".join(sys.argv), "args": recipe, "load_average_before": os.getloadavg(),
              "threads": args.threads, "rounds": args.rounds, "calls_per_round": args.calls, "models": {}}
    for name in args.models.split(","):
        report["models"][name] = bench_model(name, args)
        print(name, json.dumps({k: round(v, 2) for k, v in report["models"][name]["x_vs_unpruned_fp32"].items()}),
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        args.out.write_text(json.dumps(report, indent=2))
    report["load_average_after"] = os.getloadavg()
    args.out.write_text(json.dumps(report, indent=2))
    print(table(report))
    for name, entry in report["models"].items():
        print(verdict(name, entry))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

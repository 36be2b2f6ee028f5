"""Benchmark the CPU runtimes edgeprune can ship on this host: TVM untuned, TVM tuned
(MetaSchedule, with its tuning wall time), ONNX Runtime and eager PyTorch.

Prints a markdown table (median, p90 and min latency, effective GFLOP/s = 2 * MACs / median
latency, and that as a share of the host's practical fp32 peak) and writes every figure to
``--out``. ONNX Runtime and eager PyTorch are timed here directly, so the script depends on no
other backend. Example::

    python bench/bench_runtimes.py --models demo,resnet18,mobilenet_v2 --trials 64,256 \\
        --out results.json

Everything is compiled first, then measured in ``--rounds`` interleaved rounds, and each
runtime reports its least disturbed round (lowest median): on a host whose cores other jobs
share, a burst of load then cannot single out one runtime. The peak is measured (the faster
of torch's and ONNX Runtime's fp32 matmul on the same threads) unless ``--peak-gflops`` is
given. Tuning records are cached in ``--cache``; budgets listed in ``--trials`` build on each
other (each tops every kernel up to its share of the larger budget). A rerun tunes nothing,
and then every budget compiles with the best records found so far, so per-budget figures come
from the run that did the tuning (or from a fresh ``--cache``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

try:
    import edgeprune  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgeprune.backends.base import CompileOptions
from edgeprune.backends.tvm import TVMBackend, usable_cores
from edgeprune.profilers.base import MeasureSettings
from edgeprune.profilers.host import cpu_description
from edgeprune.profilers.stats import LatencyStats, time_callable

TIME_BUDGET_S = 3.0  # one measuring round of one runtime on one model takes about this long


@dataclass
class Candidate:
    """One runtime on one model, ready to be measured again and again."""

    model: str
    runtime: str
    macs: int
    measure: Callable[[], LatencyStats]
    note: str = ""
    rounds: list[LatencyStats] = field(default_factory=list)

    def best(self) -> LatencyStats:
        return min(self.rounds, key=lambda s: s.median)


@dataclass(frozen=True)
class Row:
    model: str
    runtime: str
    median_ms: float
    p90_ms: float
    min_ms: float
    gflops: float
    peak_share: float
    note: str


def build_model(name: str, resolution: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """``demo`` is edgeprune's demo net (1x1x32x32); anything else is a torchvision model
    (``weights=None``) at ``1x3xRxR``, e.g. ``resnet18`` or ``mobilenet_v2@32`` for R=32."""
    name, _, res = name.partition("@")
    torch.manual_seed(0)
    if name == "demo":
        from edgeprune.models.demo_net import build_demo_net

        return build_demo_net().eval(), torch.rand(1, 1, 32, 32)
    import torchvision

    size = int(res or resolution)
    return getattr(torchvision.models, name)(weights=None).eval(), torch.rand(1, 3, size, size)


def count_macs(model: torch.nn.Module, example: torch.Tensor) -> int:
    import torch_pruning as tp

    macs, _params = tp.utils.count_ops_and_params(model, example)
    return int(macs)


def matmul_peak_gflops(threads: int, size: int = 2048, tries: int = 5) -> tuple[float, str]:
    """The practical fp32 peak: the faster of torch's and ONNX Runtime's square matmul.

    Both count: on AMD CPUs torch's MKL matmul takes a slower (AVX2) path, ~205 GFLOP/s on the
    2-core Zen 5 dev host, while ONNX Runtime's MLAS uses AVX-512 and reaches ~490 GFLOP/s,
    and ONNX Runtime's convolutions run near that. Taking torch alone would put runtimes above
    "100% of peak".
    """
    torch.set_num_threads(threads)
    a, b = torch.rand(size, size), torch.rand(size, size)
    rates = {"torch matmul": _best_rate(lambda: torch.mm(a, b), size, tries),
             "onnxruntime matmul": _best_rate(_ort_matmul(b, threads, a.numpy()), size, tries)}
    source = max(rates, key=rates.get)
    return rates[source], f"measured: {source} fp32 {size}^2"


def _ort_matmul(weight: torch.Tensor, threads: int, x: np.ndarray) -> Callable[[], object]:
    import onnxruntime as ort

    class MatMul(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(weight, requires_grad=False)

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            return inputs @ self.weight

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = str(Path(tmp) / "matmul.onnx")
        torch.onnx.export(MatMul(), (torch.from_numpy(x),), path, dynamo=False,
                          input_names=["x"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"x": x})


def _best_rate(run: Callable[[], object], size: int, tries: int) -> float:
    run()
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def settings_for(run: Callable[[], object], repeats: int, threads: int) -> MeasureSettings:
    """Enough repeats for a stable median, but a 1.5 s/call untuned model still finishes."""
    run()
    start = time.perf_counter()
    run()
    once_ms = (time.perf_counter() - start) * 1e3
    fits = max(3, int(TIME_BUDGET_S * 1e3 / max(once_ms, 1e-3)))
    return MeasureSettings(warmup=min(10, fits // 3), repeats=min(repeats, fits),
                           min_repeat_ms=20.0 if once_ms < 20 else 0.0, threads=threads)


def eager(model: torch.nn.Module, example: torch.Tensor, repeats: int,
          threads: int) -> Callable[[], LatencyStats]:
    def run() -> object:
        with torch.inference_mode():
            return model(example)

    def measure() -> LatencyStats:
        torch.set_num_threads(threads)
        settings = settings_for(run, repeats, threads)
        return LatencyStats.from_samples(time_callable(run, settings), settings.warmup,
                                         "measured:eager-local")

    return measure


def onnxruntime(model: torch.nn.Module, example: torch.Tensor, repeats: int,
                threads: int) -> Callable[[], LatencyStats]:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["logits"])
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {"input": example.numpy()}

    def measure() -> LatencyStats:
        run = lambda: session.run(None, feed)  # noqa: E731
        settings = settings_for(run, repeats, threads)
        return LatencyStats.from_samples(time_callable(run, settings), settings.warmup,
                                         "measured:onnxruntime-local")

    return measure


def tvm(backend: TVMBackend, model: torch.nn.Module, example: torch.Tensor, out: Path,
        options: CompileOptions, repeats: int) -> tuple[Callable[[], LatencyStats], dict]:
    """Compile (and tune) now; the returned callable measures the artifact."""
    start = time.perf_counter()
    artifact = backend.compile(model, example, out, options)
    compile_s = time.perf_counter() - start
    session = backend.load(artifact, options.threads)
    x = example.numpy()
    reference = model(example).detach().numpy()
    error = float(np.abs(session(x) - reference).max() / max(np.abs(reference).max(), 1e-12))

    def measure() -> LatencyStats:
        settings = settings_for(lambda: session(x), repeats, options.threads)
        return backend.measure(artifact, settings).latency

    return measure, {**artifact.meta, "compile_seconds": round(compile_s, 1),
                     "max_rel_error": error}


def prepare_model(name: str, args: argparse.Namespace, backend: TVMBackend,
                  work: Path) -> tuple[list[Candidate], dict]:
    """Export, compile and tune one model for every runtime; nothing is measured yet."""
    model, example = build_model(name, args.resolution)
    macs = count_macs(model, example)
    threads, repeats = args.threads, args.repeats
    candidates = [Candidate(name, "eager PyTorch", macs, eager(model, example, repeats, threads)),
                  Candidate(name, "ONNX Runtime", macs,
                            onnxruntime(model, example, repeats, threads))]
    details: dict = {"macs": macs, "input_shape": list(example.shape)}
    cumulative_s = 0.0
    for trials in ([] if args.skip_untuned else [0]) + args.trials:
        options = CompileOptions("host", {"kind": "llvm", "mcpu": args.mcpu}, args.cache,
                                 tune_trials=trials, threads=threads)
        measure, meta = tvm(backend, model, example, work / f"{name}-{trials}", options, repeats)
        cumulative_s += meta["tuning_seconds"]
        label = "TVM untuned" if trials == 0 else f"TVM tuned {trials}"
        note = "" if trials == 0 else (f"tuning {meta['tuning_seconds']:.0f} s "
                                       f"(cumulative {cumulative_s:.0f} s), "
                                       f"{meta['new_trials']} new trials, "
                                       f"{meta['tuning_tasks']} tasks")
        candidates.append(Candidate(name, label, macs, measure, note))
        details[label] = meta
        print(f"{name}: {label} compiled in {meta['compile_seconds']} s", flush=True)
    return candidates, details


def to_row(candidate: Candidate, peak: float) -> Row:
    stats = candidate.best()
    gflops = 2 * candidate.macs / (stats.median * 1e-3) / 1e9
    return Row(candidate.model, candidate.runtime, round(stats.median, 3), round(stats.p90, 3),
               round(stats.min, 3), round(gflops, 1), round(gflops / peak, 3), candidate.note)


def markdown(rows: list[Row]) -> str:
    lines = ["| model | runtime | median ms | p90 ms | min ms | GFLOP/s | % of peak | note |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r.model} | {r.runtime} | {r.median_ms:.3f} | {r.p90_ms:.3f} | "
                     f"{r.min_ms:.3f} | {r.gflops:.1f} | {100 * r.peak_share:.1f}% | {r.note} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="demo,resnet18,mobilenet_v2",
                        help="comma-separated: demo, or torchvision names (name@R for RxR input)")
    parser.add_argument("--trials", default="256",
                        help="comma-separated MetaSchedule budgets per model, e.g. 64,256")
    parser.add_argument("--skip-untuned", action="store_true",
                        help="skip untuned TVM (1.5 s/call for resnet18)")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--threads", type=int, default=usable_cores())
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mcpu", default="auto", help="LLVM CPU, or auto to detect this host")
    parser.add_argument("--peak-gflops", type=float, default=None,
                        help="fp32 peak of this host (default: measure a torch matmul)")
    parser.add_argument("--cache", type=Path, default=Path(".edgeprune-cache"),
                        help="holds tvm-tuning/<target>/ databases, reused across runs")
    parser.add_argument("--out", type=Path, default=Path("results.json"))
    args = parser.parse_args(argv)
    args.trials = [int(t) for t in args.trials.split(",") if t.strip() and int(t) > 0]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    backend = TVMBackend()
    candidates: list[Candidate] = []
    details: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            model_candidates, details[name] = prepare_model(name, args, backend, Path(tmp))
            candidates += model_candidates
        load_before = os.getloadavg()
        peak, peak_source = ((args.peak_gflops, "given") if args.peak_gflops
                             else matmul_peak_gflops(args.threads))
        for _ in range(args.rounds):
            for candidate in candidates:
                candidate.rounds.append(candidate.measure())
        load_after = os.getloadavg()
    rows = [to_row(c, peak) for c in candidates]
    host = {"cpu": cpu_description(args.threads), "peak_gflops": round(peak, 1),
            "peak_source": peak_source,
            "loadavg_before": load_before, "loadavg_after": load_after,
            "torch": torch.__version__, "rounds": args.rounds}
    args.out.write_text(json.dumps({"host": host, "rows": [asdict(r) for r in rows],
                                    "details": details}, indent=2, default=str))
    print(f"\n{host['cpu']}; fp32 peak {peak:.0f} GFLOP/s ({host['peak_source']}); load "
          f"average {load_before[0]:.1f} before measuring, {load_after[0]:.1f} after "
          f"(above {args.threads}: other jobs shared the cores)\n")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

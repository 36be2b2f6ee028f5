"""Which channel multiple do ONNX Runtime's INT8 (and FP32) CPU kernels want on this host?

Why: the search rounds kept channel counts to the target's ``channel_multiple`` (targets/host.yaml)
raised to what the runtime's backend asks for at the shipped precision
(``edgeprune.deploy.precision.channel_multiple``, the lcm). A kernel that pads channels to blocks
of ``m`` (VNNI: 4 int8 values per 32-bit lane, 16 lanes per AVX-512 register; MLAS's NCHWc FP32
layout: blocks of 16) charges a kept count of ``C`` as much as the next multiple of ``m``, so
stopping short of that multiple buys no latency. This bench measures the staircase instead of
assuming it.

Nets (batch 1, random weights, exported by ``edgeprune.backends.onnx_export.export_onnx``):
``conv3x3`` (C -> C, 3x3), ``conv1x1`` (C -> C, 1x1) and ``block`` (64 -> C, 3x3, ReLU, C -> 64,
3x3: C is both an output and an input count, as a pruned layer's channels are), at 28x28 and
56x56, for every C in ``--channels`` (default every C in 40..80, then 88, 96, 104 and
112..136 in steps of 4). Each is shipped twice:
the FP32 export and ``edgeprune.quantize.build.build_int8`` (what the ORT backend ships on host:
u8 activations, per-channel s8 weights, ``minmax`` on 4 random batches); the bench checks with
``kernel_summary`` that every Conv runs as ``QLinearConv``.

Timing: per (net, size) all C x {fp32, int8} x ``--threads`` sessions (the backend's ``load``:
ORT_ENABLE_ALL, CPU provider) are loaded first, warmed up, then timed in ``--rounds`` rounds in
one process, each round visiting every session in a fresh random order for ``--calls`` calls, so
load from other jobs hits every C alike. Per session: median and IQR of all calls.

Analysis, per (net, size, precision, threads), for m in 4, 8, 16, 32, 64: ``s_m`` = least-squares
slope of ``1 - t(C)/t(up_m(C))`` on ``1 - MACs(C)/MACs(up_m(C))`` over the C that are multiples of
m/2 but not of m (for m = 4: every C that is not a multiple of 4) whose next multiple of m,
``up_m(C)``, was measured: the step "already rounded to m/2, round on to m". ``s_m`` = 1: time
follows MACs (nothing padded); 0: C costs exactly what ``up_m(C)`` costs (padded to m); < 0: C is
even slower than ``up_m(C)``. The kernels "want" the largest m whose median ``s_m`` over the nets
is < 0.5 (a count short of the multiple buys back less than half the
latency its MACs suggest). Results: ``bench/channel_rounding_results.json``. Example::

    nice -n 19 .venv/bin/python bench/bench_channel_rounding.py          # ~5 min here
    nice -n 19 .venv/bin/python bench/bench_channel_rounding.py --quick  # ~15 s smoke test: 28x28, 48..80
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgeprune.artifact import Artifact
from edgeprune.backends import get_backend
from edgeprune.backends.onnx_export import export_onnx
from edgeprune.quantize.build import build_int8, kernel_summary

OUT = Path(__file__).with_name("channel_rounding_results.json")  # overwritten by each run
NETS = ("conv3x3", "conv1x1", "block")
MULTIPLES = (4, 8, 16, 32, 64)
BLOCK_OUTER = 64  # the block's fixed input/output channels
WANT_BELOW = 0.5  # s_m below this: the kernels pad to m (see the module docstring)
Key = tuple[int, str, int]  # (C, precision, threads)
STATS = ("median_ms", "p10_ms")  # p10: the call least hit by other jobs (see docs/channel_rounding.md)


def make_net(net: str, c: int) -> torch.nn.Module:
    """The net at channel count ``c`` (random weights: latency does not depend on their values)."""
    torch.manual_seed(c)
    if net == "conv3x3":
        return torch.nn.Conv2d(c, c, 3, padding=1).eval()
    if net == "conv1x1":
        return torch.nn.Conv2d(c, c, 1).eval()
    return torch.nn.Sequential(torch.nn.Conv2d(BLOCK_OUTER, c, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(c, BLOCK_OUTER, 3, padding=1)).eval()


def in_channels(net: str, c: int) -> int:
    """The input's channel count: the block keeps its outer 64, the single convs take C."""
    return BLOCK_OUTER if net == "block" else c


def macs(net: str, c: int, hw: int) -> int:
    """Multiply-accumulates of one batch-1 call: the normaliser for ns/MAC."""
    if net == "conv3x3":
        return hw * hw * c * c * 9
    if net == "conv1x1":
        return hw * hw * c * c
    return 2 * hw * hw * BLOCK_OUTER * c * 9


def build_pair(net: str, c: int, hw: int, work: Path, rng: np.random.Generator) -> tuple[Path, Path, dict]:
    """FP32 export and the shipped INT8 file (u8 activations, per-channel s8 weights, minmax)."""
    shape = (1, in_channels(net, c), hw, hw)
    fp32, int8 = work / f"{net}-{hw}-{c}.onnx", work / f"{net}-{hw}-{c}.int8.onnx"
    export_onnx(make_net(net, c), torch.zeros(shape), fp32)
    batches = [rng.standard_normal(shape).astype(np.float32) for _ in range(4)]
    build_int8(fp32, int8, batches, "minmax")
    return fp32, int8, kernel_summary(int8)


def load(path: Path, shape: tuple[int, ...], precision: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """The session deploy measures: ``OnnxRuntimeBackend.load`` (ORT_ENABLE_ALL, CPU provider)."""
    artifact = Artifact(runtime="onnxruntime", target="host", files=(path,), input_shape=shape, precision=precision)
    return get_backend("onnxruntime").load(artifact, threads)


def time_interleaved(runs: dict[Key, Callable[[], object]], rounds: int, calls: int, seed: int) -> dict[Key, list[float]]:
    """Per-call ms of every session; each round visits all sessions in a fresh random order."""
    for run in runs.values():  # warm-up: allocations, packed weights, thread pools
        for _ in range(3):
            run()
    keys = list(runs)
    order = np.random.default_rng(seed)
    samples: dict[Key, list[float]] = {k: [] for k in keys}
    for _ in range(rounds):
        for i in order.permutation(len(keys)):
            run = runs[keys[i]]
            for _ in range(calls):
                t0 = time.perf_counter_ns()
                run()
                samples[keys[i]].append((time.perf_counter_ns() - t0) / 1e6)
    return samples


def bench_group(net: str, hw: int, channels: list[int], threads: list[int], args: argparse.Namespace) -> dict:
    """Build, check fusion, time and summarise one (net, size) over all channel counts."""
    rng = np.random.default_rng(0)
    runs: dict[Key, Callable[[], object]] = {}
    fused: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="edgeprune-chround-") as tmp:
        for c in channels:
            fp32, int8, summary = build_pair(net, c, hw, Path(tmp), rng)
            fused[c] = {"integer_convs": summary["integer_convs"], "float_convs": summary["float_convs"]}
            shape = (1, in_channels(net, c), hw, hw)
            x = rng.standard_normal(shape).astype(np.float32)
            for precision, path in (("fp32", fp32), ("int8", int8)):
                for t in threads:
                    run = load(path, shape, precision, t)
                    runs[(c, precision, t)] = (lambda run=run, x=x: run(x))
        samples = time_interleaved(runs, args.rounds, args.calls, seed=hw + len(net))
    rows = []
    for (c, precision, t), v in sorted(samples.items()):
        p10, q1, med, q3 = np.percentile(v, [10, 25, 50, 75])
        rows.append({"C": c, "precision": precision, "threads": t, "median_ms": float(med), "q1_ms": float(q1),
                     "q3_ms": float(q3), "p10_ms": float(p10), "calls": len(v), "macs": macs(net, c, hw)})
    convs = 1 if net != "block" else 2
    all_fused = all(f["integer_convs"] == convs and f["float_convs"] == 0 for f in fused.values())
    return {"net": net, "hw": hw, "rows": rows, "int8_all_qlinearconv": all_fused,
            "int8_kernels": {str(c): f for c, f in fused.items()}}


def step_slope(times: dict[int, float], cost: Callable[[int], int], m: int) -> float | None:
    """``s_m`` over the counts that are multiples of m/2 but not of m (any non-multiple of 4 for
    m = 4), each against the next multiple of m: does rounding further, from m/2 to m, change
    latency as MACs say (1), not at all (0: padded to m), or the wrong way (< 0: the short count
    is slower)? Least-squares slope through the origin, so near-multiples weigh little."""
    num = den = 0.0
    for c, t in times.items():
        up = -(-c // m) * m
        if c % m == 0 or (m > 4 and c % (m // 2)) or up not in times:
            continue
        r, q = t / times[up], cost(c) / cost(up)
        num += (1 - r) * (1 - q)
        den += (1 - q) ** 2
    return num / den if den else None


def ns_per_mac(rows: list[dict], stat: str, keep: Callable[[int], bool]) -> float | None:
    """Median over the kept counts of ``stat`` (ms) per MAC, in ns."""
    vals = [r[stat] * 1e6 / r["macs"] for r in rows if keep(r["C"])]
    return float(np.median(vals)) if vals else None


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either side had no counts to measure (short --channels)."""
    return a / b if a is not None and b else None


def analyse(group: dict, stat: str) -> dict:
    """Per (precision, threads), on ``stat`` (``median_ms`` or ``p10_ms``): s_m for every m, and
    ns/MAC at multiples of 16 / at counts off multiples of 4, each over the other multiples of 4."""
    out: dict[str, dict] = {}
    cost = lambda c: macs(group["net"], c, group["hw"])
    for precision in ("fp32", "int8"):
        for t in sorted({r["threads"] for r in group["rows"]}):
            rows = [r for r in group["rows"] if r["precision"] == precision and r["threads"] == t]
            times = {r["C"]: r[stat] for r in rows}
            other4 = ns_per_mac(rows, stat, lambda c: c % 4 == 0 and c % 16 != 0)
            out[f"{precision}/{t}t"] = {
                "s_m": {m: step_slope(times, cost, m) for m in MULTIPLES},
                "ns_per_mac": ns_per_mac(rows, stat, lambda c: True),
                "x16_vs_other4k": ratio(ns_per_mac(rows, stat, lambda c: c % 16 == 0), other4),
                "not4_vs_4k": ratio(ns_per_mac(rows, stat, lambda c: c % 4 != 0),
                                    ns_per_mac(rows, stat, lambda c: c % 4 == 0))}
    return out


def wanted_multiple(groups: list[dict], stat: str, key: str) -> tuple[int, dict[int, float | None]]:
    """The largest m such that the median s_k over all (net, size) groups is below WANT_BELOW for
    every k from 8 to m (4 at least): a lone low s_64 after a high s_16 is not a padding staircase."""
    med: dict[int, float | None] = {}
    for m in MULTIPLES:
        vals = [g["analysis"][stat][key]["s_m"][m] for g in groups]
        vals = [v for v in vals if v is not None]
        med[m] = float(np.median(vals)) if vals else None
    wanted = 4  # the floor: the target YAML's multiple; counts off multiples of 4 are slower still
    for m in MULTIPLES[1:]:  # a padding staircase at m makes every step from 8 up to m flat
        if med[m] is None or med[m] >= WANT_BELOW:
            break
        wanted = m
    return wanted, med


def uptime() -> str:
    """``uptime``'s line: the load the figures were taken under (the cores are shared)."""
    return subprocess.run(["uptime"], check=False, capture_output=True, text=True).stdout.strip()


def host() -> dict:
    """CPU, VNNI flags, versions and load: the context every figure here depends on."""
    text = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                 platform.processor())
    import onnxruntime

    return {"cpu": model, "nproc": os.cpu_count(), "vnni": sorted(set(text.split()) & {"avx512_vnni", "avx_vnni"}),
            "onnxruntime": onnxruntime.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "uptime_before": uptime()}


def table(report: dict, stat: str) -> str:
    """Markdown, on ``stat``: per group and precision/threads, ns/MAC, s_m for each m, aligned ratios."""
    head = ("| net | HxW | prec/threads | ps/MAC | " + " | ".join(f"s_{m}" for m in MULTIPLES)
            + " | ps/MAC C%16=0 / other 4k | C%4!=0 / 4k | all QLinearConv |")
    rows = [head, "|" + "---|" * (len(MULTIPLES) + 7)]
    fmt = lambda v: "—" if v is None else f"{v:.2f}"
    for g in report["groups"]:
        for key, a in g["analysis"][stat].items():
            rows.append(f"| {g['net']} | {g['hw']} | {key} | {a['ns_per_mac'] * 1e3:.1f} | "
                        + " | ".join(fmt(a["s_m"][m]) for m in MULTIPLES)
                        + f" | {fmt(a['x16_vs_other4k'])} | {fmt(a['not4_vs_4k'])}"
                        + f" | {'yes' if g['int8_all_qlinearconv'] else 'NO'} |")
    return "\n".join(rows)


def curve(group: dict, threads: int) -> str:
    """Plain-text latency curve of one group: C, fp32 and int8 median ms (IQR) [p10], int8/fp32."""
    by = {(r["C"], r["precision"]): r for r in group["rows"] if r["threads"] == threads}
    lines = [f"{group['net']} {group['hw']}x{group['hw']} {threads}t:  C  fp32 ms (IQR) [p10]  int8 ms (IQR) [p10]  int8/fp32"]
    for c in sorted({c for c, _ in by}):
        f, i = by[(c, "fp32")], by[(c, "int8")]
        lines.append(f"  {c:4d}{'*' if c % 16 == 0 else ' '} {f['median_ms']:7.3f} ({f['q3_ms'] - f['q1_ms']:.3f})"
                     f" [{f['p10_ms']:.3f}]  {i['median_ms']:7.3f} ({i['q3_ms'] - i['q1_ms']:.3f}) [{i['p10_ms']:.3f}]"
                     f"  {i['median_ms'] / f['median_ms']:.2f}")
    return "\n".join(lines)


def parse_channels(text: str) -> list[int]:
    """``40-80,96,112-136/4`` -> every count in those inclusive ranges (``/step``: every step-th)."""
    out: list[int] = []
    for part in text.split(","):
        span, _, step = part.partition("/")
        lo, _, hi = span.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1, int(step or 1)))
    return sorted(set(out))


def main() -> None:
    """Parse options, run every (size, net) group, write the JSON after each, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 28x28, C 48..80, 1 thread, 4 rounds (too few pairs for a verdict)")
    parser.add_argument("--nets", default=",".join(NETS))
    parser.add_argument("--sizes", default="28,56")
    parser.add_argument("--channels", default="40-80,88,96,104,112-136/4")
    parser.add_argument("--threads", default="1,2", help="ORT intra-op threads, interleaved in one process")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.channels, args.threads, args.rounds, args.calls = "28", "48-80", "1", 4, 3
    torch.set_num_threads(1)
    threads = [int(t) for t in args.threads.split(",")]
    report = {"host": host(), "load_average_before": os.getloadavg(), "rounds": args.rounds, "calls": args.calls,
              "threads": threads, "channels": parse_channels(args.channels), "groups": []}
    for hw in (int(s) for s in args.sizes.split(",")):  # the small, short calls first
        for net in args.nets.split(","):
            t0 = time.monotonic()
            group = bench_group(net, hw, report["channels"], threads, args)
            group["analysis"] = {stat: analyse(group, stat) for stat in STATS}
            group["seconds"] = round(time.monotonic() - t0, 1)
            report["groups"].append(group)
            print(curve(group, threads[0]), f"\n  ({group['seconds']} s, load {os.getloadavg()[0]:.2f})", flush=True)
            finish(report, args.out)  # a partial file survives an interrupted run
    for stat in STATS:
        print(f"\n{stat}:\n" + table(report, stat))
    print("verdict:", json.dumps(report["verdict"]))
    print("load", report["load_average_before"], "->", report["load_average_after"], "| wrote", args.out)


def finish(report: dict, out: Path) -> None:
    """Verdict per statistic and precision/threads over the groups so far; load after; write."""
    report["verdict"] = {stat: {key: dict(zip(("wanted_multiple", "median_s_m"), wanted_multiple(
        report["groups"], stat, key))) for key in report["groups"][0]["analysis"][stat]} for stat in STATS}
    report["load_average_after"] = os.getloadavg()
    report["uptime_after"] = uptime()
    out.write_text(json.dumps(report, indent=2))

if __name__ == "__main__":
    main()

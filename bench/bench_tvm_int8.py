"""Can TVM 0.27 run real int8 kernels on this CPU, and are they faster than its fp32 or than ONNX
Runtime's QLinearConv (edgeprune's current INT8 path)? One 3x3 conv layer, C=64->64, measured.

Forms built in Relax and compiled for ``llvm -mcpu=<this host> -num-cores=<threads>``:

- ``tvm-fp32``: float NCHW conv, what edgeprune's TVM backend builds (MetaSchedule, weight
  layout rewrite on).
- ``tvm-int8-nchw``: ``relax.op.nn.conv2d(u8, s8, out_dtype="int32")`` in NCHW/OIHW, tuned the
  same way. MetaSchedule's VNNI rule does not match this layout (no ``vpdpbusd`` emitted).
- ``tvm-int8-vnni``: the same arithmetic with the data in NCHW16c and the weights pre-packed to
  OIHW4i16o4i (``topi.nn.conv2d_NCHWc_int8`` via ``emit_te``), the only form where MetaSchedule's
  VNNI tensorization applies, tuned WITHOUT weight layout rewrite (with it the search crashes:
  ``Check failed: (ind.as<PrimVar>())``). TVM's own ``dot_16x4_vnni`` does not compile with the
  wheel's LLVM (``vpdpbusd.512`` now takes ``<64 x i8>`` operands, TVM passes ``<16 x i32>``:
  "Call parameter type does not match function signature"), so :func:`register_vnni_intrinsic`
  registers a corrected one under that name before tuning.
- ``tvm-qdq``: float in, ``relax.op.quantize`` -> ``dequantize`` -> float conv on dequantized
  weights: the fake-quant graph TVM's ONNX importer makes of a QDQ file (arithmetic in fp32).

Reference: ONNX Runtime fp32 and the INT8 file ``edgeprune.quantize.ort_int8.quantize_int8`` writes
(QDQ, u8 activations, s8 per-channel weights; ORT fuses it into QLinearConv, counted).

Every integer result is checked for exact equality with an int64 reference; the TVM int8 forms take
u8 and return int32 (no quantize/requantize at the edges), ORT's int8 takes and returns float (its
time includes the edges), so the comparison favours TVM. Timing: all compiled forms are timed in
``--rounds`` interleaved rounds (TVM: ``time_evaluator``; ORT: ``perf_counter`` around
``session.run``) in this one process. Untuned builds are timed separately (a few calls: they are
10-100x slower). Also: whether TVM's ONNX frontend imports a QDQ 3-conv net as integer arithmetic.

    nice -n 19 .venv/bin/python bench/bench_tvm_int8.py --trials 64

writes ``bench/tvm_int8_results.json`` and prints a table.
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
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgeprune.backends.onnx_export import export_onnx
from edgeprune.backends.tvm.build import _apply_records, _lower
from edgeprune.backends.tvm.target import host_cpu_attrs
from edgeprune.backends.tvm.tuning import TuningConfig, tune
from edgeprune.quantize.ort_int8 import OrtInt8Config, ort_kernel_counts, quantize_int8

RESULTS = Path(__file__).with_name("tvm_int8_results.json")
X_SCALE = 1.0 / 255.0  # activations in [0, 1): u8 = round(x * 255), zero point 0


def register_vnni_intrinsic() -> None:
    """Register a 16x4 u8*s8->s32 VNNI dot product that this wheel's LLVM accepts, under
    TVM's name ``dot_16x4_vnni`` (so MetaSchedule's x86 VNNI rule picks it up).

    Why: TVM's registered implementation passes the broadcast activations and the weights to
    ``llvm.x86.avx512.vpdpbusd.512`` as ``int32x16``; LLVM now declares both as ``<64 x i8>``,
    so every tensorized candidate fails LLVM verification and tuning silently keeps scalar code.
    """
    from edgeprune.backends.tvm import metaschedule

    metaschedule.register_host_tensor_intrinsics()  # imports tvm.s_tir.tensor_intrin.x86 only
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(a: T.Buffer((4,), "uint8", offset_factor=1), b: T.Buffer((16, 4), "int8", offset_factor=1),
             c: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:16], a[0:4], b[0:16, 0:4])
            T.writes(c[0:16])
            for lane, k in T.grid(16, 4):
                with T.sblock("update"):
                    vl, vk = T.axis.remap("SR", [lane, k])
                    c[vl] = c[vl] + T.cast(a[vk], "int32") * T.cast(b[vl, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(a: T.Buffer((4,), "uint8", offset_factor=1), b: T.Buffer((16, 4), "int8", offset_factor=1),
             c: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:16], a[0:4], b[0:16, 0:4])
            T.writes(c[0:16])
            quad = T.reinterpret(a.vload([0], "uint8x4"), dtype="int32")
            c[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                c.vload([0], dtype="int32x16"),
                T.reinterpret(T.broadcast(quad, 16), dtype="int8x64"),
                b.vload([0, 0], dtype="int8x64"), dtype="int32x16")

    TensorIntrin.register("dot_16x4_vnni", desc, impl, override=True)


# ---- the layer in its forms -------------------------------------------------------------------

def layer_data(c: int, hw: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Float activations/weights and their u8/s8 quantized versions (per-output-channel weight
    scales), shared by every form so all compute the same layer."""
    rng = np.random.default_rng(seed)
    x = rng.random((1, c, hw, hw), dtype=np.float32)
    w = (rng.standard_normal((c, c, 3, 3)) * 0.1).astype(np.float32)
    w_scale = (np.abs(w).reshape(c, -1).max(axis=1) / 127.0).astype(np.float32)
    w_s8 = np.clip(np.round(w / w_scale[:, None, None, None]), -127, 127).astype(np.int8)
    x_u8 = np.clip(np.round(x / X_SCALE), 0, 255).astype(np.uint8)
    return {"x": x, "w": w, "w_scale": w_scale, "w_s8": w_s8, "x_u8": x_u8}


def _function(inp: Any, body: Callable[[Any, Any], Any]) -> Any:
    """A one-input Relax ``main`` whose dataflow block is ``body(builder, input)``."""
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(inp.shape, str(inp.dtype)))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(body(bb, x))
        bb.emit_func_output(out)
    return bb.get()


def pack_nchw16c(x_u8: np.ndarray) -> np.ndarray:
    """NCHW -> NCHW16c (16 channels innermost: the 4-byte groups VNNI reads are contiguous)."""
    n, c, h, w = x_u8.shape
    return np.ascontiguousarray(x_u8.reshape(n, c // 16, 16, h, w).transpose(0, 1, 3, 4, 2))


def pack_oihw4i16o4i(w_s8: np.ndarray) -> np.ndarray:
    """OIHW -> (O/16, I/16, H, W, 4, 16o, 4i): each 16x4 block VNNI multiplies is contiguous."""
    o, i, kh, kw = w_s8.shape
    blocks = w_s8.reshape(o // 16, 16, i // 16, 4, 4, kh, kw)
    return np.ascontiguousarray(blocks.transpose(0, 2, 5, 6, 3, 1, 4))


def build_forms(d: dict[str, np.ndarray]) -> dict[str, tuple[Any, np.ndarray, bool]]:
    """name -> (Relax module, its input, weight-layout rewrite on?)."""
    from tvm import relax, topi

    conv = relax.op.nn.conv2d
    fp32 = _function(d["x"], lambda bb, x: bb.emit(conv(x, relax.const(d["w"]), padding=1)))
    int8 = _function(d["x_u8"], lambda bb, x: bb.emit(
        conv(x, relax.const(d["w_s8"]), padding=1, out_dtype="int32")))
    x16 = pack_nchw16c(d["x_u8"])
    vnni = _function(x16, lambda bb, x: bb.emit_te(
        topi.nn.conv2d_NCHWc_int8, x, relax.const(pack_oihw4i16o4i(d["w_s8"])), (1, 1), (1, 1),
        (1, 1), "NCHW16c", "NCHW16c", "int32"))

    def qdq(bb: Any, x: Any) -> Any:
        q = bb.emit(relax.op.quantize(x, relax.const(X_SCALE, "float32"), relax.const(0, "uint8"),
                                      axis=1, out_dtype="uint8"))
        xf = bb.emit(relax.op.dequantize(q, relax.const(X_SCALE, "float32"), relax.const(0, "uint8"),
                                         axis=1))
        wf = bb.emit(relax.op.dequantize(relax.const(d["w_s8"]), relax.const(d["w_scale"]),
                                         relax.const(np.zeros(len(d["w_scale"]), np.int8)), axis=0))
        return bb.emit(conv(xf, wf, padding=1))

    return {"tvm-fp32": (fp32, d["x"], True), "tvm-int8-nchw": (int8, d["x_u8"], True),
            "tvm-int8-vnni": (vnni, x16, False), "tvm-qdq": (_function(d["x"], qdq), d["x"], True)}


def references(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """float64 / int64 results each form must reproduce (int forms: exactly)."""
    def conv(x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                                          padding=1).numpy()

    exact = conv(d["x_u8"].astype(np.float64), d["w_s8"].astype(np.float64)).astype(np.int64)
    fake = conv(d["x_u8"] * X_SCALE, d["w_s8"] * d["w_scale"][:, None, None, None].astype(np.float64))
    return {"tvm-fp32": conv(d["x"], d["w"]), "tvm-int8-nchw": exact, "tvm-int8-vnni": exact,
            "tvm-qdq": fake}


def check(name: str, out: np.ndarray, ref: np.ndarray) -> dict:
    """Exactness for int32 outputs, max relative error for float ones."""
    if name == "tvm-int8-vnni":  # NCHW16c -> NCHW
        n, cb, h, w, cc = out.shape
        out = out.transpose(0, 1, 4, 2, 3).reshape(n, cb * cc, h, w)
    if out.dtype == np.int32:
        return {"out_dtype": "int32", "exact": bool(np.array_equal(out.astype(np.int64), ref))}
    err = float(np.max(np.abs(out - ref)) / max(1e-12, float(np.max(np.abs(ref)))))
    return {"out_dtype": str(out.dtype), "max_rel_err": err, "ok": err < 1e-3}


# ---- compile and time ---------------------------------------------------------------------------

def compile_form(mod: Any, target_dict: dict, trials: int, db_dir: Path, layout: bool) -> tuple[Any, dict]:
    """Lower, tune (``trials`` > 0) into ``db_dir`` with edgeprune's tuner, build; return the VM
    and what the machine code holds (``vpdpbusd`` = VNNI used)."""
    import tvm
    from tvm import relax

    target = tvm.target.Target(dict(target_dict))
    start = time.perf_counter()
    lowered = _lower(mod, target, layout)
    info: dict[str, Any] = {"trials": trials}
    if trials > 0:
        report, best = tune(lowered, target, db_dir, trials, int(target_dict["num-cores"]),
                            TuningConfig(weight_layout_rewrite=layout))
        lowered = _apply_records(lowered, target, best, layout)
        info.update(tuned=report.tuned, unscheduled=report.tasks_without_schedule)
    executable = tvm.compile(lowered, target=target)
    info["compile_s"] = round(time.perf_counter() - start, 1)
    asm = "".join(m.inspect_source("asm") for m in executable.mod.imports)
    info["asm"] = {op: asm.count(op) for op in ("vpdpbusd", "vpmaddubsw", "vpmaddwd", "vfmadd")}
    return relax.VirtualMachine(executable, tvm.cpu()), info


def tvm_timer(vm: Any, inp: np.ndarray, target_ms: float) -> tuple[Callable[[], float], np.ndarray]:
    """A sampler returning ms per call (C++-timed, ~``target_ms`` per sample) and the output."""
    import tvm

    arg = tvm.runtime.tensor(inp)
    out = vm["main"](arg).numpy()
    once = vm.time_evaluator("main", tvm.cpu(), number=3, repeat=1)(arg).mean * 1e3
    number = max(1, int(target_ms / max(once, 1e-3)))
    evaluator = vm.time_evaluator("main", tvm.cpu(), number=number, repeat=1)
    return (lambda: evaluator(arg).mean * 1e3), out


def ort_timer(session: Any, inp: np.ndarray, target_ms: float) -> Callable[[], float]:
    """A sampler returning ms per ``session.run`` (perf_counter, ~``target_ms`` per sample)."""
    feed = {session.get_inputs()[0].name: inp}
    start = time.perf_counter()
    for _ in range(3):
        session.run(None, feed)
    number = max(1, int(target_ms / max((time.perf_counter() - start) * 1e3 / 3, 1e-3)))

    def sample() -> float:
        t0 = time.perf_counter()
        for _ in range(number):
            session.run(None, feed)
        return (time.perf_counter() - t0) * 1e3 / number

    return sample


def interleaved(samplers: dict[str, Callable[[], float]], rounds: int) -> dict[str, dict]:
    """Round-robin sampling (A, B, C, A, B, C, ...) so load bursts hit every form alike."""
    times: dict[str, list[float]] = {name: [] for name in samplers}
    for _ in range(rounds):
        for name, sample in samplers.items():
            times[name].append(sample())
    return {name: summary(values) for name, values in times.items()}


def summary(values: list[float]) -> dict:
    """Median, quartiles and minimum in ms."""
    q = np.percentile(values, [25, 50, 75])
    return {"median_ms": float(q[1]), "p25_ms": float(q[0]), "p75_ms": float(q[2]),
            "min_ms": float(min(values)), "samples": len(values)}


def ort_forms(d: dict[str, np.ndarray], tmp: Path, threads: int) -> dict[str, tuple[Any, dict]]:
    """ONNX Runtime sessions for the fp32 file and edgeprune's INT8 file of the same conv."""
    import onnxruntime as ort

    model = torch.nn.Conv2d(d["w"].shape[1], d["w"].shape[0], 3, padding=1, bias=False)
    model.weight.data = torch.from_numpy(d["w"])
    fp32_path, int8_path = tmp / "conv.onnx", tmp / "conv.int8.onnx"
    export_onnx(model, torch.from_numpy(d["x"]), fp32_path)
    rng = np.random.default_rng(1)
    quantize_int8(fp32_path, int8_path, [rng.random(d["x"].shape, dtype=np.float32) for _ in range(8)],
                  OrtInt8Config(activations="u8", per_channel=True))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    out = {}
    for name, path in (("ort-fp32", fp32_path), ("ort-int8", int8_path)):
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        out[name] = (session, {"kernels": ort_kernel_counts(path)})
    return out


def run_layer(c: int, hw: int, args: argparse.Namespace, target: dict, work: Path) -> dict:
    """Build every form of one layer (untuned and tuned), check it, time it interleaved."""
    import onnxruntime as ort  # noqa: F401 - fail early when missing

    d = layer_data(c, hw)
    refs, forms = references(d), build_forms(d)
    result: dict[str, Any] = {"layer": f"1x{c}x{hw}x{hw} conv3x3 {c}->{c}", "forms": {}}
    untuned: dict[str, Callable[[], float]] = {}
    tuned: dict[str, Callable[[], float]] = {}
    for name, (mod, inp, layout) in forms.items():
        entry = result["forms"].setdefault(name, {})
        for trials, bucket in ((0, untuned), (args.trials, tuned)):
            if trials == 0 and name == "tvm-int8-vnni":
                continue  # its untuned code is the same scalar loop nest as tvm-int8-nchw
            vm, info = compile_form(mod, target, trials, work / f"{name}-{hw}", layout)
            sampler, out = tvm_timer(vm, inp, 2.0 if trials == 0 else args.sample_ms)
            key = "tuned" if trials else "untuned"
            entry[key] = {**info, **check(name, out, refs[name])}
            bucket[name] = sampler
            print(f"  {hw}x{hw} {name} {key}: {entry[key]}", flush=True)
    for name, (session, info) in ort_forms(d, work, args.threads).items():
        result["forms"][name] = {"ort": info}
        tuned[name] = ort_timer(session, d["x"], args.sample_ms)
    for key, samplers, rounds in (("untuned", untuned, 3), ("tuned", tuned, args.rounds)):
        for name, stats in interleaved(samplers, rounds).items():
            result["forms"][name].setdefault(key, {})["latency"] = stats
    return result


def onnx_qdq_import(work: Path) -> dict:
    """Import a QDQ 3-conv net (edgeprune's u8/s8 per-channel INT8 file) with TVM's Relax ONNX
    frontend and report which ops it holds and the dtypes its convolutions compute in."""
    import onnx
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(32, 32, 3, padding=1)).eval()
    example = torch.rand(1, 3, 32, 32)
    src, dst = work / "net3.onnx", work / "net3.int8.onnx"
    export_onnx(net, example, src)
    rng = np.random.default_rng(2)
    quantize_int8(src, dst, [rng.random((1, 3, 32, 32), dtype=np.float32) for _ in range(8)],
                  OrtInt8Config(activations="u8", per_channel=True))
    onnx_ops: dict[str, int] = {}
    for node in onnx.load(str(dst)).graph.node:
        onnx_ops[node.op_type] = onnx_ops.get(node.op_type, 0) + 1
    mod = from_onnx(onnx.load(str(dst)), keep_params_in_input=False)
    ops: dict[str, int] = {}
    conv_dtypes: list[str] = []

    def visit(expr: Any) -> None:
        if isinstance(expr, relax.Call) and hasattr(expr.op, "name"):
            ops[expr.op.name] = ops.get(expr.op.name, 0) + 1
            if expr.op.name == "relax.nn.conv2d":
                conv_dtypes.append(f"{expr.args[0].ty.dtype} x {expr.args[1].ty.dtype} -> "
                                   f"{expr.ty.dtype}")

    relax.analysis.post_order_visit(mod["main"], visit)
    return {"onnx_ops": onnx_ops, "relax_ops": ops, "conv_dtypes": conv_dtypes,
            "integer_convs": sum("int" in t.split(" x ")[0] for t in conv_dtypes)}


def machine(threads: int) -> dict:
    """What the figures depend on: CPU, LLVM's name for it, VNNI, load, versions."""
    import onnxruntime
    import tvm

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "nproc": os.cpu_count(), "threads": threads, **host_cpu_attrs(),
            "avx512_vnni": "avx512_vnni" in cpuinfo, "tvm": tvm.__version__,
            "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
            "uptime_before": uptime()}


def uptime() -> str:
    """``uptime``'s load averages (the host is shared: every figure needs them)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "unknown"


def print_table(results: dict) -> None:
    """One row per layer and form: tuned median (IQR), ratio to tvm-fp32, checks, VNNI."""
    print(f"\n{'layer':<8} {'form':<14} {'untuned ms':>11} {'tuned ms (p25-p75)':>24} "
          f"{'x fp32':>7} {'x ort-int8':>10} {'check':>9} {'vpdpbusd':>8}")
    for layer in results["layers"]:
        forms = layer["forms"]
        base = forms["tvm-fp32"]["tuned"]["latency"]["median_ms"]
        ort8 = forms["ort-int8"]["tuned"]["latency"]["median_ms"]
        for name, entry in forms.items():
            t = entry["tuned"]["latency"]
            u = entry.get("untuned", {}).get("latency", {}).get("median_ms")
            checked = entry["tuned"].get("exact", entry["tuned"].get("ok", "-"))
            vnni = entry["tuned"].get("asm", {}).get("vpdpbusd", "-")
            print(f"{layer['layer'].split()[0].split('x', 2)[-1]:<8} {name:<14} "
                  f"{(f'{u:.3f}' if u else '-'):>11} "
                  f"{t['median_ms']:>8.3f} ({t['p25_ms']:.3f}-{t['p75_ms']:.3f}) "
                  f"{base / t['median_ms']:>7.2f} {ort8 / t['median_ms']:>10.2f} "
                  f"{checked!s:>9} {vnni!s:>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=64, help="MetaSchedule trials per form")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--sample-ms", type=float, default=20.0, help="time per timing sample")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 56])
    parser.add_argument("--work-dir", type=Path, default=None, help="tuning databases (default: temp)")
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # read when TVM's thread pool starts
    register_vnni_intrinsic()
    target = {"kind": "llvm", **host_cpu_attrs(), "num-cores": args.threads}
    results: dict[str, Any] = {"machine": machine(args.threads), "target": target,
                               "trials": args.trials, "rounds": args.rounds, "layers": []}
    with tempfile.TemporaryDirectory(prefix="edgeprune-tvm-int8-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for hw in args.sizes:
            results["layers"].append(run_layer(64, hw, args, target, work))
        results["onnx_qdq_import"] = onnx_qdq_import(work)
    results["machine"]["uptime_after"] = uptime()
    RESULTS.write_text(json.dumps(results, indent=1, default=str))
    print_table(results)
    print("\nONNX QDQ import:", json.dumps(results["onnx_qdq_import"]))
    print(results["machine"]["uptime_before"], "|", results["machine"]["uptime_after"])
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

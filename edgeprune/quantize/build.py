"""From an exported FP32 ONNX to the ONNX file a backend ships at a given precision.

Why here and not in a backend: the ONNX Runtime backend builds these files today, but the same
calls (INT8 QDQ with calibration, FP16 with the overflow check, per-layer float fallback) are what
any ONNX-consuming backend needs; keeping them in ``edgeprune.quantize`` leaves the backend module
a thin wrapper and keeps the backend registry's auto-import free of helpers.

Choices recorded in the artifact meta:
- INT8 for ONNX Runtime on a CPU uses **uint8 activations** (asymmetric). ORT's x86 optimiser fuses
  every DQ -> Conv -> Q into ``QLinearConv`` only then (resnet18 64x64: 4.7x faster than FP32 on an
  AVX-512 VNNI Xeon); with symmetric int8 activations it leaves the residual-feeding Convs in float
  and the file is no faster than FP32 (docs/quantization.md). ``ort_kernel_counts`` in the meta
  says how many Convs really run as integer kernels on the compile host.
- FP16 is built when asked (Jetson/TensorRT and ARM CPUs with FP16 arithmetic use it), after
  :func:`check_fp16_safety` proved no activation or weight leaves FP16's range. Where ONNX Runtime
  has no FP16 kernels for the graph's nodes (x86 CPUs) it inserts Casts and computes in FP32: the
  meta then says so, because such a file cannot be faster than FP32 there.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeprune.errors import ConfigError
from edgeprune.quantize.base import QuantResult, ort_placed_graph, require_ort
from edgeprune.quantize.fp16 import check_fp16_safety, convert_fp16
from edgeprune.quantize.ort_int8 import (
    OrtInt8Config,
    layer_precisions,
    ort_kernel_counts,
    quantize_int8,
)

if TYPE_CHECKING:
    import torch

# Narrower integer widths (weights x activations, 2..8 bits) built from a Brevitas model.
LOWBIT = tuple(f"w{w}a{a}" for w in range(2, 9) for a in range(2, 9) if (w, a) != (8, 8))
BUILT = ("fp32", "fp16", "int8", *LOWBIT)
ALIASES = {"w8a8": "int8", "float32": "fp32", "float16": "fp16"}
FLOAT_LAYER_VALUES = ("fp32", "fp16")  # per-layer values that keep a layer out of INT8
INT_CONVS = ("QLinearConv", "ConvInteger")
FLOAT_CONVS = ("Conv", "FusedConv", "NchwcConv")
INT_MATMULS = ("QGemm", "QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat")
FP16_SLOW_NOTE = "fp16 on this CPU runs no faster than fp32 in ONNX Runtime (measured)"


def resolve_precision(text: str, runtime: str, built: Sequence[str] = BUILT) -> str:
    """Canonical precision name this runtime builds, or a one-line ConfigError listing them."""
    key = str(text).strip().lower()
    key = ALIASES.get(key, key)
    if key not in built:
        shown = [p for p in built if p not in LOWBIT] + (["wXaY (2..8 bits)"] if set(LOWBIT) <= set(built) else [])
        raise ConfigError(f"{runtime} builds {', '.join(shown)}; not precision {text!r}")
    return key


def float_layers(precision: str, per_layer: Mapping[str, str]) -> list[str]:
    """The nodes a per-layer plan keeps in FP32 (INT8: fp32 or fp16 values; FP16: fp32 values);
    ConfigError for a value this precision cannot place on a layer."""
    allowed = {"fp32": ("fp32",), "fp16": ("fp16", "fp32"),
               "int8": ("int8", "w8a8", *FLOAT_LAYER_VALUES)}.get(precision, (precision,))
    keep = []
    for layer, value in sorted(per_layer.items()):
        v = str(value).strip().lower()
        if v not in allowed:
            raise ConfigError(f"layer {layer!r} asks for {value!r}; at {precision} a layer can be {', '.join(allowed)}")
        if precision != "fp32" and v in (("fp32",) if precision == "fp16" else FLOAT_LAYER_VALUES):
            keep.append(layer)
    return keep


def has_qdq(path: Path) -> bool:
    """True if the ONNX already holds QuantizeLinear/DequantizeLinear (a QAT export)."""
    require_ort()
    import onnx

    ops = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
    return {"QuantizeLinear", "DequantizeLinear"} <= ops


def kernel_summary(path: Path) -> dict:
    """How many Convs / matmuls ONNX Runtime's CPU optimiser runs as integer kernels on this host."""
    counts = ort_kernel_counts(path)
    total = lambda names: sum(counts.get(n, 0) for n in names)
    return {"integer_convs": total(INT_CONVS), "float_convs": total(FLOAT_CONVS),
            "integer_matmuls": total(INT_MATMULS), "ops": dict(sorted(counts.items()))}


def build_int8(src: Path, dst: Path, batches: Sequence[np.ndarray], method: str,
               keep_float: Sequence[str] = ()) -> QuantResult:
    """INT8 QDQ for ONNX Runtime on a CPU (u8 activations, per-channel s8 weights); a model that
    already holds Q/DQ (QAT) is shipped as exported, without re-quantizing it."""
    dst = Path(dst)
    if has_qdq(src):
        if keep_float:
            raise ConfigError("the model already holds Q/DQ (QAT): per-layer precisions cannot be applied to it")
        shutil.copyfile(src, dst)
        meta = {"quantizer": "none: the exported model already holds Q/DQ (quantization-aware training)",
                "format": "QDQ", "calibration": None, "calibration_samples": 0,
                "per_layer": layer_precisions(dst)}
    else:
        if not batches or sum(len(b) for b in batches) == 0:
            raise ConfigError("int8 needs calibration data")
        config = OrtInt8Config(calibration=method, activations="u8", per_channel=True)
        meta = dict(quantize_int8(src, dst, [np.asarray(b, np.float32) for b in batches], config, keep_float).meta)
        meta["activations_reason"] = ("uint8: ONNX Runtime's x86 CPU kernels fuse every Conv into QLinearConv "
                                      "only with uint8 activations (the int8-activation file is not faster)")
    meta["ort_kernel_counts"] = kernel_summary(dst)
    return QuantResult(dst, meta)


def fp16_fallback_casts(path: Path) -> int:
    """Casts ONNX Runtime's CPU provider inserts into an FP16 graph on this host: each marks nodes
    it has no FP16 kernel for and therefore computes in FP32."""
    import onnx

    placed = sum(n.op_type == "Cast" for n in ort_placed_graph(path, "none").node)
    written = sum(n.op_type == "Cast" for n in onnx.load(str(path)).graph.node)
    return max(0, placed - written)


def build_fp16(src: Path, dst: Path, batches: Sequence[np.ndarray], example: np.ndarray,
               keep_float: Sequence[str] = ()) -> QuantResult:
    """FP16 ONNX after the overflow check (ValidationError naming the first layer out of range)
    on the calibration batches, or on the compile example when none were given."""
    if has_qdq(src):
        raise ConfigError("the model already holds Q/DQ (QAT): compile it at int8, not fp16")
    given = [np.asarray(b, np.float32) for b in batches if len(b)]
    inputs = np.concatenate(given) if given else np.asarray(example, np.float32)
    report = check_fp16_safety(src, inputs)
    result = convert_fp16(src, dst, keep_float)
    peak = report.layers[0] if report.layers else None
    casts = fp16_fallback_casts(dst)
    meta = {**result.meta, "fp16_safety": {
        "inputs": "calibration batches" if given else "the compile example only (no calibration data given)",
        "samples": len(inputs), "headroom": report.headroom,
        "largest": None if peak is None else {"layer": peak.node, "kind": peak.kind, "max_abs": peak.max_abs}},
        "fp16_fallback_casts": casts}
    if casts:
        meta["note"] = (f"{FP16_SLOW_NOTE}: ONNX Runtime has no fp16 kernels for this graph on this host and "
                        f"inserted {casts} Casts to compute in fp32 (bench/bench_quantize.py)")
    return QuantResult(Path(dst), meta)


def build_lowbit(qmodel: "torch.nn.Module", example: "torch.Tensor", dst: Path) -> dict:
    """The QCDQ file of a Brevitas-quantized model (the evaluator quantizes candidates before
    compile: :meth:`edgeprune.candidate.evaluator.Evaluator.quantized`), with the integer kernels
    ONNX Runtime really runs it on here."""
    from edgeprune.quantize.aware import is_quantized, quiet_toolkits
    from edgeprune.quantize.lowbit import export_qcdq

    if not is_quantized(qmodel):
        raise ConfigError("a low-bit precision needs a Brevitas-quantized model (edgeprune.quantize.aware.calibrated)")
    with quiet_toolkits():
        meta = dict(export_qcdq(qmodel, example, dst).meta)
    meta["ort_kernel_counts"] = kernel_summary(dst)
    return meta

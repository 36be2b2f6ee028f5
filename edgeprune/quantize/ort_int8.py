"""ONNX Runtime static INT8 in QDQ format, for ONNX Runtime on the host and TensorRT on a Jetson.

Why these settings (REFERENCE §4, ONNX Runtime's quantization guide):
- QDQ, not QOperator: TensorRT (explicit quantization, the only INT8 path since TRT 10.1) and
  TVM's ONNX importer read QuantizeLinear/DequantizeLinear; QOperator ops are ORT-only.
- S8S8 with per-channel weights: ORT's first choice for CNNs; per-channel keeps a layer whose
  channels have very different ranges usable.
- Activations ``s8`` (default): int8, symmetric (zero-point 0), the only form TensorRT's explicit
  quantization accepts, so the same file builds on a Jetson. Measured trade-off (ORT 1.32, x86):
  with int8 activations, ONNX Runtime's CPU graph optimiser leaves every Conv whose input tensor
  also feeds a residual branch as DQ -> float Conv -> Q (11 of 20 Convs in resnet18), so that
  file can run slower than FP32 here. ``u8`` (uint8, asymmetric, ORT's x86 default) fuses all 20
  into QLinearConv and the Adds into QLinearAdd (bench/bench_quantize.py has the timings):
  pick it for an artifact that ships to ONNX Runtime on a CPU; TensorRT refuses it.
- ``quant_pre_process`` first (shape inference + graph optimisation) as ORT recommends, so
  Conv+BN are fused and every tensor has a shape before calibration.
- ``reduce_range`` (7-bit weights) only on x86 without VNNI, where the 8-bit multiply-add
  saturates; on VNNI or ARM it only costs accuracy.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeprune.errors import CompileError, ConfigError
from edgeprune.quantize import quantizers
from edgeprune.quantize.base import (
    QuantResult, calibration_reader, float_layers, host_cpu_flags, ort_placed_graph, ort_version, quantizable_nodes,
    require_ort,
)
from edgeprune.quantize.precision import PrecisionSpec

NAME = "ort-int8"
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
LAYER_PRECISIONS = ("int8", "fp32")
ACTIVATION_TYPES = ("s8", "u8")  # s8: symmetric int8 (TensorRT-compatible); u8: asymmetric uint8 (ORT CPU)


@dataclass(frozen=True)
class OrtInt8Config:
    """Knobs of the ORT INT8 quantizer; ``reduce_range=None`` decides from the host CPU."""

    calibration: str = "minmax"
    percentile: float = 99.999
    per_channel: bool = True
    activations: str = "s8"
    reduce_range: bool | None = None
    pre_process: bool = True

    def __post_init__(self) -> None:
        if self.calibration not in CALIBRATION_METHODS:
            raise ConfigError(f"unknown calibration {self.calibration!r}; use {', '.join(CALIBRATION_METHODS)}")
        if self.activations not in ACTIVATION_TYPES:
            raise ConfigError(f"unknown activation type {self.activations!r}; use {', '.join(ACTIVATION_TYPES)}")
        if not 50.0 < self.percentile <= 100.0:
            raise ConfigError(f"calibration percentile must be in (50, 100], got {self.percentile}")


def decide_reduce_range(flags: set[str]) -> tuple[bool, str]:
    """(reduce_range, why) for a CPU with these /proc/cpuinfo flags."""
    vnni = sorted(f for f in VNNI_FLAGS if f in flags)
    if vnni:
        return False, f"CPU has {'+'.join(vnni)}: full 8-bit range is exact and fast"
    if "avx2" in flags or "avx512f" in flags:
        return True, "x86 AVX2/AVX-512 without VNNI: 7-bit weights avoid VPMADDUBSW saturation"
    return False, "no x86 AVX2/AVX-512 (ARM or unknown CPU): reduce_range does not apply"


def pre_process(src: Path, dst: Path) -> Path:
    """ORT's recommended pre-processing (shape inference + optimisation); node names survive it."""
    require_ort()
    from onnxruntime.quantization import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst))
    except Exception as exc:  # noqa: BLE001 - re-raised typed
        raise CompileError(f"quant_pre_process failed on {Path(src).name}: {str(exc).strip()[:300]}") from None
    return Path(dst)


def layer_precisions(path: Path) -> dict[str, str]:
    """Read back from a written graph which Conv/Gemm/MatMul nodes really got integer weights."""
    import onnx

    graph = onnx.load(str(path)).graph
    producers = {out: node.op_type for node in graph.node for out in node.output}
    result = {}
    for node in graph.node:
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") and node.name:
            weight_ins = node.input[1:2] if node.op_type != "MatMul" else node.input[:2]
            quant = any(producers.get(name) == "DequantizeLinear" for name in weight_ins)
            result[node.name] = "int8" if quant else "fp32"
    return result


def _extra_options(config: OrtInt8Config) -> dict:
    options: dict = {"ActivationSymmetric": config.activations == "s8", "WeightSymmetric": True}
    if config.calibration == "percentile":
        options["CalibPercentile"] = config.percentile
    return options


def quantize_int8(src: Path, dst: Path, calibration: Sequence[np.ndarray], config: OrtInt8Config,
                  exclude: Sequence[str] = (), calibration_cache: Path | None = None) -> QuantResult:
    """Write a QDQ INT8 model of ``src`` to ``dst``; ``exclude`` nodes stay float.

    ``calibration_cache`` (a JSON path) lets repeated calls on the same model, as in the
    sensitivity search, calibrate once; it must belong to this exact model and method.
    """
    require_ort()
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgeprune-int8-") as tmp:
        model = pre_process(src, Path(tmp) / "pre.onnx") if config.pre_process else Path(src)
        unknown = sorted(set(exclude) - set(quantizable_nodes(model)))
        if unknown:
            raise ConfigError(f"nodes to keep in float not in the model: {', '.join(unknown[:5])}")
        reduce_range, why = _reduce_range(config)
        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[config.calibration]
        reader = None if calibration_cache and Path(calibration_cache).exists() else calibration_reader(model, calibration)
        try:
            quantize_static(
                str(model), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=config.per_channel,
                reduce_range=reduce_range, weight_type=QuantType.QInt8,
                activation_type=QuantType.QInt8 if config.activations == "s8" else QuantType.QUInt8,
                nodes_to_exclude=list(exclude), calibrate_method=method, extra_options=_extra_options(config),
                calibration_cache_path=str(calibration_cache) if calibration_cache else None,
            )
        except Exception as exc:  # noqa: BLE001 - re-raised typed
            raise CompileError(f"ONNX Runtime INT8 quantization failed: {str(exc).strip()[:300]}") from None
    samples = int(sum(len(b) for b in calibration))
    meta = {
        "quantizer": NAME, "onnxruntime": ort_version(), "format": "QDQ", "weights": "int8 symmetric",
        "activations": "int8 symmetric" if config.activations == "s8" else "uint8 asymmetric",
        "tensorrt_compatible": config.activations == "s8",
        "per_channel": config.per_channel, "calibration": config.calibration,
        "calibration_percentile": config.percentile if config.calibration == "percentile" else None,
        "calibration_samples": samples, "reduce_range": reduce_range, "reduce_range_reason": why,
        "pre_process": config.pre_process, "per_layer": layer_precisions(dst),
    }
    return QuantResult(dst, meta)


def _reduce_range(config: OrtInt8Config) -> tuple[bool, str]:
    if config.reduce_range is not None:
        return config.reduce_range, "set explicitly"
    return decide_reduce_range(host_cpu_flags())


@quantizers.register(NAME)
class OrtInt8Quantizer:
    """Registry entry: ``spec`` must be int8 (w8a8); per-layer overrides may be int8 or fp32."""

    name = NAME

    def __init__(self, config: OrtInt8Config | None = None) -> None:
        self.config = config or OrtInt8Config()

    def quantize(self, src: Path, dst: Path, spec: PrecisionSpec,
                 calibration: Sequence[np.ndarray]) -> QuantResult:
        if spec.name != "int8":
            raise ConfigError(f"{NAME} writes int8 (w8a8) only, not {spec.name!r}")
        return quantize_int8(src, dst, calibration, self.config, float_layers(spec, NAME, LAYER_PRECISIONS))



def ort_kernel_counts(path: Path) -> dict[str, int]:
    """Op types of the graph ONNX Runtime's CPU optimiser actually runs (after QDQ fusion).

    Why: a QDQ file only gets faster where ORT fuses DQ -> Conv -> Q into QLinearConv; a Conv left
    between DQ and Q runs in float plus conversion overhead. Counting ``Conv`` vs ``QLinearConv``
    here says which layers really run integer kernels on this host.
    """
    counts: dict[str, int] = {}
    for node in ort_placed_graph(path, "extended").node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts

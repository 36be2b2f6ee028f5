"""FP32 ONNX -> FP16 ONNX, and the FP16 safety check.

Why ONNX Runtime's converter (``onnxruntime.transformers.float16``): it ships inside the
onnxruntime wheel the project already needs (no extra dependency), keeps the graph's float32
inputs/outputs (``keep_io_types``: callers keep feeding float32) and blocks nodes by name, which is
what a per-layer plan needs.

Why a safety check: FP16's largest finite value is 65504. A network whose activations exceed it
in FP32 produces inf/NaN in FP16 (here and in TensorRT's ``--fp16`` build on a Jetson) while
looking fine in PyTorch. :func:`check_fp16_safety` runs the *FP32 ONNX* with ONNX Runtime, reads
every intermediate tensor, and names the first layer that leaves the range; with an FP16 file it
also compares outputs within the FP16 tolerance. It takes only ONNX paths and numpy inputs so the
TensorRT path can call it on the same file it hands to ``trtexec --fp16``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from edgeprune.errors import CompileError, ConfigError, ValidationError
from edgeprune.quantize import quantizers
from edgeprune.quantize.base import (
    QuantResult, chunks, fixed_batch, float_layers, open_session, ort_version, require_ort, run_onnx,
)
from edgeprune.quantize.precision import PrecisionSpec, Tolerance, ToleranceResult, check

if TYPE_CHECKING:
    import onnx

NAME = "fp16"
FP16_MAX = 65504.0
LAYER_PRECISIONS = ("fp16", "fp32")


def convert_fp16(src: Path, dst: Path, keep_float: Sequence[str] = ()) -> QuantResult:
    """Write an FP16 copy of ``src`` (float32 inputs/outputs kept); ``keep_float`` nodes stay FP32."""
    require_ort()
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    names = {n.name for n in model.graph.node}
    unknown = sorted(set(keep_float) - names)
    if unknown:
        raise ConfigError(f"nodes to keep in fp32 not in the model: {', '.join(unknown[:5])}")
    try:
        half = convert_float_to_float16(model, keep_io_types=True, node_block_list=list(keep_float) or None)
    except Exception as exc:  # noqa: BLE001 - re-raised typed
        raise CompileError(f"FP16 conversion failed: {str(exc).strip()[:300]}") from None
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(half, str(dst))
    per_layer = {n.name: ("fp32" if n.name in keep_float else "fp16")
                 for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul")}
    meta = {"quantizer": NAME, "onnxruntime": ort_version(), "format": "float16", "keep_io_types": True,
            "converter": "onnxruntime.transformers.float16", "per_layer": per_layer}
    return QuantResult(Path(dst), meta)


@dataclass(frozen=True)
class LayerRange:
    """Largest |value| one node wrote (activations) or holds (weights) on the given inputs."""

    node: str
    op_type: str
    tensor: str
    max_abs: float
    kind: str  # "activation" | "weight"


@dataclass(frozen=True)
class Fp16SafetyReport:
    """Per-layer ranges (largest first), the FP16 limit used, and the output comparison if run."""

    layers: tuple[LayerRange, ...]
    limit: float
    comparison: ToleranceResult | None

    @property
    def headroom(self) -> float:
        """limit / largest |value| seen: > 1 means FP16 holds every tensor."""
        peak = max((r.max_abs for r in self.layers), default=0.0)
        return float("inf") if peak == 0 else self.limit / peak


def _float_tensors(model: "onnx.ModelProto") -> list[str]:
    """Names of every float32 tensor a node writes (after shape inference)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in (*inferred.graph.value_info, *inferred.graph.output)}
    outs = [o for node in inferred.graph.node for o in node.output if o]
    return [o for o in outs if types.get(o) == onnx.TensorProto.FLOAT]


def activation_ranges(fp32_onnx: Path, inputs: np.ndarray) -> list[LayerRange]:
    """Run the FP32 model in ONNX Runtime (no graph fusion) and record each node's max |output|."""
    require_ort()
    import onnx

    model = onnx.load(str(fp32_onnx))
    producer = {o: n for n in model.graph.node for o in n.output}
    names = _float_tensors(model)
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    peak = dict.fromkeys(names, 0.0)
    with tempfile.TemporaryDirectory(prefix="edgeprune-fp16-") as tmp:
        probe = Path(tmp) / "probe.onnx"
        onnx.save(model, str(probe))
        session = open_session(probe, optimize=False)
        input_name = session.get_inputs()[0].name
        for chunk, n in chunks(np.asarray(inputs, np.float32), fixed_batch(session)):
            for name, value in zip(names, session.run(names, {input_name: chunk})):
                part = np.abs(value[:n]) if value.ndim and len(value) == len(chunk) else np.abs(value)
                peak[name] = max(peak[name], float(np.nan_to_num(part, nan=np.inf).max(initial=0.0)))
    return [LayerRange(producer[t].name or t, producer[t].op_type, t, v, "activation") for t, v in peak.items()]


def weight_ranges(fp32_onnx: Path) -> list[LayerRange]:
    """Max |value| of each float initializer, attributed to the first node that reads it."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(fp32_onnx))
    reader = {}
    for node in model.graph.node:
        for name in node.input:
            reader.setdefault(name, node)
    ranges = []
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and init.name in reader:
            arr = numpy_helper.to_array(init)
            node = reader[init.name]
            ranges.append(LayerRange(node.name, node.op_type, init.name,
                                     float(np.abs(arr).max(initial=0.0)), "weight"))
    return ranges


def check_fp16_safety(fp32_onnx: Path, inputs: np.ndarray, fp16_onnx: Path | None = None,
                      limit: float = FP16_MAX, tolerance: Tolerance | None = None) -> Fp16SafetyReport:
    """Raise ValidationError naming the first layer whose activations or weights exceed ``limit``
    (default FP16's 65504); if ``fp16_onnx`` is given, also compare its outputs with the FP32
    model's within ``tolerance`` (default: the fp16 tolerance). Returns the per-layer ranges."""
    if not 0 < limit <= FP16_MAX:
        raise ConfigError(f"fp16 safety limit must be in (0, {FP16_MAX:g}], got {limit}")
    acts = activation_ranges(fp32_onnx, inputs)
    layers = acts + weight_ranges(fp32_onnx)
    for item in layers:  # activations in graph order first: the first offender is the cause
        if not item.max_abs <= limit:
            raise ValidationError(
                f"FP16 overflow: {item.kind} of layer {item.node!r} ({item.op_type}, tensor {item.tensor!r}) "
                f"reaches |{item.max_abs:.4g}| > {limit:g}; keep it in fp32 or rescale it")
    comparison = None
    if fp16_onnx is not None:
        x = np.asarray(inputs, np.float32)
        comparison = _compare(run_onnx(Path(fp16_onnx), x), run_onnx(Path(fp32_onnx), x),
                              tolerance or Tolerance.for_precision(PrecisionSpec.parse("fp16")))
    ordered = tuple(sorted(layers, key=lambda r: r.max_abs, reverse=True))
    return Fp16SafetyReport(ordered, limit, comparison)


def _compare(half: np.ndarray, full: np.ndarray, tolerance: Tolerance) -> ToleranceResult:
    try:
        return check(tolerance, half, full)
    except ValidationError as exc:
        raise ValidationError(f"FP16 artifact vs FP32: {exc}") from None


@quantizers.register(NAME)
class Fp16Quantizer:
    """Registry entry: ``spec`` must be fp16; per-layer overrides may be fp16 or fp32."""

    name = NAME

    def quantize(self, src: Path, dst: Path, spec: PrecisionSpec,
                 calibration: Sequence[np.ndarray]) -> QuantResult:
        """``calibration`` is unused: FP16 needs no ranges (run :func:`check_fp16_safety` on it)."""
        if spec.name != "fp16":
            raise ConfigError(f"{NAME} writes fp16 only, not {spec.name!r}")
        return convert_fp16(src, dst, float_layers(spec, NAME, LAYER_PRECISIONS))

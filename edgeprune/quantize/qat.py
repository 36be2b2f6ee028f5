"""Quantization-aware training with NVIDIA ModelOpt, exported as explicit Q/DQ ONNX.

Why ModelOpt (``nvidia-modelopt``, ``modelopt.torch.quantization``): it is TensorRT's own
quantization toolkit, so the fake-quant it inserts (INT8, symmetric, per-channel weights,
per-tensor activations) exports through the plain ONNX exporter as QuantizeLinear/DequantizeLinear
pairs that TensorRT builds as INT8 and ONNX Runtime runs as is: one file for both, like the PTQ
path. torchao's QAT targets LLM linears and has no ONNX export. Brevitas (:mod:`lowbit`) is the
other toolkit: ONNX Runtime on x86 runs its export faster (the backend's ``qat_toolkit`` picks).

Order: prune -> fine-tune -> :func:`prepare_qat` (insert fake-quant, calibrate ranges) -> the
caller's fine-tune (it sees quantization noise and adapts) -> :func:`export_qdq`. ModelOpt rewrites
the model's modules in place, so :func:`prepare_qat` works on a deep copy.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from edgeprune.errors import CompileError, ConfigError, ToolchainMissingError

if TYPE_CHECKING:
    import torch

    from edgeprune.quantize.base import QuantResult

NAME = "modelopt-qat"
ALGORITHMS = ("max",)


@dataclass(frozen=True)
class QatConfig:
    """``algorithm`` is ModelOpt's range calibration before fine-tuning ("max" for CNNs)."""

    algorithm: str = "max"

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"unknown QAT calibration {self.algorithm!r}; use {', '.join(ALGORITHMS)}")


def _mtq():  # noqa: ANN202 - returns the module
    try:
        import modelopt.torch.quantization as mtq
    except ImportError as exc:
        raise ToolchainMissingError(
            f"QAT needs nvidia-modelopt (and requests, huggingface_hub, which it imports undeclared): {exc}"
        ) from None
    return mtq


def prepare_qat(model: "torch.nn.Module", calibration: Sequence["torch.Tensor"],
                config: QatConfig = QatConfig()) -> "torch.nn.Module":
    """A fake-quantized INT8 copy of ``model`` with ranges calibrated on ``calibration`` batches."""
    import torch

    if not calibration:
        raise ConfigError("QAT calibration needs at least one batch")
    mtq = _mtq()
    qmodel = copy.deepcopy(model).eval()
    cfg = copy.deepcopy(mtq.INT8_DEFAULT_CFG)
    cfg["algorithm"] = config.algorithm

    def forward_loop(m: torch.nn.Module) -> None:
        with torch.no_grad():
            for batch in calibration:
                m(batch)

    try:
        return mtq.quantize(qmodel, cfg, forward_loop)
    except Exception as exc:  # noqa: BLE001 - re-raised typed
        raise CompileError(f"ModelOpt could not insert fake-quant: {str(exc).strip()[:300]}") from None


def export_qdq(qmodel: "torch.nn.Module", example: "torch.Tensor", path: Path) -> "QuantResult":
    """Export the fake-quant model with the project's exporter; refuse a file without Q/DQ."""
    import modelopt
    import onnx

    from edgeprune.backends.onnx_export import export_onnx
    from edgeprune.quantize.base import QuantResult
    from edgeprune.quantize.ort_int8 import layer_precisions

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    export_onnx(qmodel.eval(), example, Path(path))
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    if "QuantizeLinear" not in ops or "DequantizeLinear" not in ops:
        raise CompileError("QAT export has no QuantizeLinear/DequantizeLinear: fake-quant was not exported")
    meta = {"quantizer": NAME, "modelopt": modelopt.__version__, "format": "QDQ",
            "weights": "int8 symmetric per-channel", "activations": "int8 symmetric per-tensor",
            "quantize_linear_nodes": ops.count("QuantizeLinear"), "per_layer": layer_precisions(Path(path))}
    return QuantResult(Path(path), meta)


def qat_int8(model: "torch.nn.Module", calibration: Sequence["torch.Tensor"],
             finetune: Callable[["torch.nn.Module"], None], example: "torch.Tensor", path: Path,
             config: QatConfig = QatConfig()) -> "QuantResult":
    """prepare -> ``finetune(qmodel)`` (the caller's training loop, in train mode) -> export Q/DQ."""
    qmodel = prepare_qat(model, calibration, config)
    qmodel.train()
    finetune(qmodel)
    return export_qdq(qmodel, example, path)

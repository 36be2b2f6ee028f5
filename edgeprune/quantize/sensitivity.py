"""Accuracy-aware INT8: keep the most quantization-sensitive layers in float until the INT8 model,
*run in ONNX Runtime*, is within ``max_accuracy_drop`` of the float model.

Sensitivity = quantize **one layer alone** (every other Conv/Gemm/MatMul excluded) and measure how
far the logits move from the float model's. Why this and not "all but one":
- it isolates the layer's own error; with all-but-one, a single catastrophic layer drowns every
  other measurement (each all-but-one model is equally broken except the one that removes it), so
  the ranking below the worst layer is noise;
- the ranking needs N quantizations either way, but one-alone graphs carry few Q/DQ pairs, and the
  calibration ranges are computed once (ORT's calibration cache) and reused by every call.
The score is the logit error relative to the float logits' spread (mean squared error / variance),
not accuracy: on a few hundred validation samples accuracy moves in coarse steps and ties.

The greedy loop then excludes layers in decreasing sensitivity, re-quantizing and re-evaluating the
whole model each time, because layer errors interact (one layer's float output changes the next
layer's quantization error). It ends at the first plan that meets the bound; in the worst case
every layer is float (accuracy drop 0), which the result reports rather than hides.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeprune.errors import ConfigError, DataError
from edgeprune.quantize.base import QuantResult, quantizable_nodes, run_onnx
from edgeprune.quantize.ort_int8 import OrtInt8Config, pre_process, quantize_int8
from edgeprune.quantize.precision import PrecisionSpec


@dataclass(frozen=True)
class FallbackConfig:
    """``max_accuracy_drop`` is a fraction (0.01 = 1 point of top-1 accuracy)."""

    max_accuracy_drop: float = 0.01
    int8: OrtInt8Config = OrtInt8Config()

    def __post_init__(self) -> None:
        if not 0 <= self.max_accuracy_drop < 1:
            raise ConfigError(f"max_accuracy_drop must be in [0, 1), got {self.max_accuracy_drop}")


@dataclass(frozen=True)
class LayerSensitivity:
    """Effect of quantizing ``node`` alone: relative logit error and top-1 accuracy."""

    node: str
    relative_error: float
    accuracy: float


@dataclass(frozen=True)
class FallbackStep:
    """One evaluated plan: which layers were float and the INT8 model's accuracy."""

    float_layers: tuple[str, ...]
    accuracy: float


@dataclass(frozen=True)
class FallbackResult:
    """The chosen quantized model, its plan, and the evidence for it."""

    result: QuantResult
    spec: PrecisionSpec
    float_accuracy: float
    accuracy: float
    sensitivities: tuple[LayerSensitivity, ...]
    steps: tuple[FallbackStep, ...]

    max_accuracy_drop: float

    @property
    def per_layer(self) -> dict[str, str]:
        return dict(self.spec.per_layer)

    @property
    def met(self) -> bool:
        """False only if even every Conv/Gemm/MatMul in float missed the bound (Q/DQ left on
        other ops such as Add or pooling): the caller should then ship fp32."""
        return self.float_accuracy - self.accuracy <= self.max_accuracy_drop


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


def _relative_error(logits: np.ndarray, reference: np.ndarray) -> float:
    return float(((logits - reference) ** 2).mean() / max(float(reference.var()), 1e-12))


def layer_sensitivity(prepared: Path, calibration: Sequence[np.ndarray], val_x: np.ndarray,
                      val_y: np.ndarray, config: OrtInt8Config, cache: Path, workdir: Path) -> list[LayerSensitivity]:
    """Quantize each layer alone (pre-processed model, shared calibration cache); most sensitive first."""
    nodes = quantizable_nodes(prepared)
    reference = run_onnx(prepared, val_x)
    scores = []
    for i, node in enumerate(nodes):
        others = [n for n in nodes if n != node]
        out = quantize_int8(prepared, workdir / f"alone_{i}.onnx", calibration, config, others, cache)
        logits = run_onnx(out.path, val_x)
        scores.append(LayerSensitivity(node, _relative_error(logits, reference), _accuracy(logits, val_y)))
    return sorted(scores, key=lambda s: s.relative_error, reverse=True)


def accuracy_aware_int8(src: Path, dst: Path, calibration: Sequence[np.ndarray], val_x: np.ndarray,
                        val_y: np.ndarray, config: FallbackConfig = FallbackConfig()) -> FallbackResult:
    """Quantize ``src`` to INT8 at ``dst``, keeping as few layers float as the accuracy bound allows."""
    val_x, val_y = np.asarray(val_x, np.float32), np.asarray(val_y).reshape(-1)
    if len(val_x) == 0 or len(val_x) != len(val_y):
        raise DataError(f"validation data needs matching samples and labels, got {len(val_x)} and {len(val_y)}")
    with tempfile.TemporaryDirectory(prefix="edgeprune-fallback-") as tmp:
        work = Path(tmp)
        prepared = pre_process(src, work / "pre.onnx") if config.int8.pre_process else Path(src)
        int8 = replace(config.int8, pre_process=False)
        cache = work / "calibration.json"
        float_acc = _accuracy(run_onnx(prepared, val_x), val_y)
        result = quantize_int8(prepared, dst, calibration, int8, (), cache)
        steps = [FallbackStep((), _accuracy(run_onnx(result.path, val_x), val_y))]
        sens: list[LayerSensitivity] = []
        if float_acc - steps[-1].accuracy > config.max_accuracy_drop:
            sens = layer_sensitivity(prepared, calibration, val_x, val_y, int8, cache, work)
        for k in range(1, len(sens) + 1):
            if float_acc - steps[-1].accuracy <= config.max_accuracy_drop:
                break
            excluded = tuple(s.node for s in sens[:k])
            result = quantize_int8(prepared, dst, calibration, int8, excluded, cache)
            steps.append(FallbackStep(excluded, _accuracy(run_onnx(result.path, val_x), val_y)))
    meta = {**result.meta, "pre_process": config.int8.pre_process, "fallback": {
        "max_accuracy_drop": config.max_accuracy_drop, "float_accuracy": float_acc,
        "accuracy": steps[-1].accuracy, "float_layers": list(steps[-1].float_layers),
        "evaluated_by": "onnxruntime", "validation_samples": int(len(val_x))}}
    final = QuantResult(result.path, meta)
    spec = PrecisionSpec.parse("int8", final.per_layer)
    return FallbackResult(final, spec, float_acc, steps[-1].accuracy, tuple(sens), tuple(steps),
                          config.max_accuracy_drop)

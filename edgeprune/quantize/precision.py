"""Precision strings (``--precision``), per-layer overrides, and the tolerance each precision is
validated against.

Why a tolerance per precision: a float artifact must reproduce the float model's logits (max
|error| against atol + rtol·|ref|), but an integer artifact legitimately moves every logit, so
judging INT8 by max |error| either rejects every good model or needs a bound so loose it means
nothing. Integer artifacts are judged by what the user sees instead: top-1 agreement with the
float model and the accuracy drop on labelled validation data.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from edgeprune.errors import ConfigError, ValidationError

_FLOAT_BITS = {"fp32": 32, "fp16": 16}
_WXAY = re.compile(r"^w(\d+)a(\d+)$")
MAX_INT_BITS = 8
AUTO = "auto"


def _parse_name(text: str) -> tuple[str, int | None, int | None, bool]:
    """Canonical (name, weight_bits, activation_bits, is_float) or ConfigError."""
    key = text.strip().lower()
    if key in _FLOAT_BITS:
        return key, _FLOAT_BITS[key], _FLOAT_BITS[key], True
    if key == AUTO:
        return key, None, None, False
    if key == "int8":
        return "int8", 8, 8, False
    if re.fullmatch(r"int\d+", key):  # FPGA targets' intN: N-bit weights and activations
        key = f"w{key[3:]}a{key[3:]}"
    match = _WXAY.match(key)
    if match:
        w, a = int(match.group(1)), int(match.group(2))
        if not (1 <= w <= MAX_INT_BITS and 1 <= a <= MAX_INT_BITS):
            raise ConfigError(f"precision {text!r}: bit widths must be 1..{MAX_INT_BITS}")
        return ("int8" if (w, a) == (8, 8) else key), w, a, False
    raise ConfigError(f"unknown precision {text!r}; use fp32, fp16, int8, intN, wXaY (e.g. w4a8) or auto")


@dataclass(frozen=True)
class PrecisionSpec:
    """A parsed precision plus per-layer overrides (ONNX node name -> precision string).

    ``w8a8`` is canonicalised to ``int8`` so plans compare equal however the user spelled it.
    ``per_layer`` is part of the replayable plan JSON, hence plain strings only.
    """

    name: str
    weight_bits: int | None
    activation_bits: int | None
    is_float: bool
    per_layer: Mapping[str, str] = field(default_factory=dict, hash=False)

    @classmethod
    def parse(cls, text: str, per_layer: Mapping[str, str] | None = None) -> "PrecisionSpec":
        """Parse ``--precision`` text; every per-layer value must itself be a concrete precision."""
        if not isinstance(text, str):
            raise ConfigError(f"precision must be a string, got {type(text).__name__}")
        name, w, a, is_float = _parse_name(text)
        layers: dict[str, str] = {}
        for layer, value in (per_layer or {}).items():
            if not isinstance(layer, str) or not layer or not isinstance(value, str):
                raise ConfigError(f"per-layer precision needs name -> string, got {layer!r}: {value!r}")
            layer_name = _parse_name(value)[0]
            if layer_name == AUTO:
                raise ConfigError(f"layer {layer!r}: per-layer precision cannot be 'auto'")
            layers[layer] = layer_name
        return cls(name, w, a, is_float, layers)

    def for_layer(self, layer: str) -> "PrecisionSpec":
        """The precision that applies to one layer (its override, else the model-wide one)."""
        return PrecisionSpec.parse(self.per_layer.get(layer, self.name))

    def with_layers(self, per_layer: Mapping[str, str]) -> "PrecisionSpec":
        """A copy with these overrides (validated like user input)."""
        return PrecisionSpec.parse(self.name, per_layer)

    def to_dict(self) -> dict:
        return {"precision": self.name, "per_layer": dict(sorted(self.per_layer.items()))}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping) -> "PrecisionSpec":
        if not isinstance(data, Mapping) or "precision" not in data:
            raise ConfigError("precision JSON needs a 'precision' key")
        per_layer = data.get("per_layer", {})
        if not isinstance(per_layer, Mapping):
            raise ConfigError("precision JSON: 'per_layer' must be an object")
        return cls.parse(data["precision"], per_layer)

    @classmethod
    def from_json(cls, text: str) -> "PrecisionSpec":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"precision JSON is malformed: {exc}") from None
        return cls.from_dict(data)


@dataclass(frozen=True)
class Tolerance:
    """How far a compiled artifact may stray from the float model.

    Float precisions set ``atol``/``rtol`` (elementwise, like ``numpy.allclose``); integer ones set
    ``min_top1_agreement`` and ``max_accuracy_drop`` (fraction, 0.01 = 1 point).
    """

    atol: float | None = None
    rtol: float | None = None
    min_top1_agreement: float | None = None
    max_accuracy_drop: float | None = None

    def __post_init__(self) -> None:
        for name in ("atol", "rtol", "max_accuracy_drop"):
            value = getattr(self, name)
            if value is not None and not (0 <= value < float("inf")):
                raise ConfigError(f"tolerance {name} must be >= 0, got {value}")
        agree = self.min_top1_agreement
        if agree is not None and not 0 <= agree <= 1:
            raise ConfigError(f"tolerance min_top1_agreement must be in [0, 1], got {agree}")
        if (self.atol is None) != (self.rtol is None):
            raise ConfigError("tolerance atol and rtol go together")
        if self.atol is None and agree is None and self.max_accuracy_drop is None:
            raise ConfigError("tolerance sets no bound at all")

    @classmethod
    def for_precision(cls, spec: PrecisionSpec) -> "Tolerance":
        """Default bounds: fp32 1e-3, fp16 1e-2, int8 >= 97 % top-1 agreement and <= 1 pt drop;
        narrower integer widths (w4a8, w2a2, ...) >= 90 % and <= 3 pt."""
        if spec.name == AUTO:
            raise ConfigError("precision 'auto' has no tolerance: resolve it to a concrete precision first")
        if spec.name == "fp32":
            return cls(atol=1e-3, rtol=1e-3)
        if spec.name == "fp16":
            return cls(atol=1e-2, rtol=1e-2)
        if spec.name == "int8":
            return cls(min_top1_agreement=0.97, max_accuracy_drop=0.01)
        return cls(min_top1_agreement=0.90, max_accuracy_drop=0.03)


@dataclass(frozen=True)
class ToleranceResult:
    """What :func:`check` measured (accuracies are None without labels)."""

    max_abs_error: float
    top1_agreement: float
    accuracy: float | None
    reference_accuracy: float | None

    @property
    def accuracy_drop(self) -> float | None:
        if self.accuracy is None or self.reference_accuracy is None:
            return None
        return self.reference_accuracy - self.accuracy


def check(tolerance: Tolerance, artifact_logits: np.ndarray, reference_logits: np.ndarray,
          labels: np.ndarray | None = None) -> ToleranceResult:
    """Compare artifact and reference logits; raise a one-line ValidationError when out of bounds."""
    art = np.asarray(artifact_logits, dtype=np.float64)
    ref = np.asarray(reference_logits, dtype=np.float64)
    if art.shape != ref.shape or art.ndim != 2 or len(art) == 0:
        raise ValidationError(f"logits shapes differ or are not (N, classes): {art.shape} vs {ref.shape}")
    if not np.isfinite(art).all():
        raise ValidationError(f"artifact produced {int((~np.isfinite(art)).sum())} non-finite logits")
    err = np.abs(art - ref)
    top_art, top_ref = art.argmax(1), ref.argmax(1)
    acc = ref_acc = None
    if labels is not None:
        y = np.asarray(labels).reshape(-1)
        if len(y) != len(art):
            raise ValidationError(f"{len(y)} labels for {len(art)} samples")
        acc, ref_acc = float((top_art == y).mean()), float((top_ref == y).mean())
    result = ToleranceResult(float(err.max()), float((top_art == top_ref).mean()), acc, ref_acc)
    _enforce(tolerance, result, err, ref)
    return result


def _enforce(tol: Tolerance, result: ToleranceResult, err: np.ndarray, ref: np.ndarray) -> None:
    if tol.atol is not None and tol.rtol is not None:
        excess = err - (tol.atol + tol.rtol * np.abs(ref))
        if (excess > 0).any():
            i = np.unravel_index(int(excess.argmax()), err.shape)
            raise ValidationError(
                f"max |error| {result.max_abs_error:.3g} exceeds atol {tol.atol:g} + rtol {tol.rtol:g}·|ref| "
                f"(worst at sample {i[0]}, class {i[1]}: {err[i]:.3g} vs reference {ref[i]:.3g})")
    if tol.min_top1_agreement is not None and result.top1_agreement < tol.min_top1_agreement:
        raise ValidationError(f"top-1 agreement with the float model {result.top1_agreement:.2%} "
                              f"< required {tol.min_top1_agreement:.2%}")
    drop = result.accuracy_drop
    if tol.max_accuracy_drop is not None and drop is not None and drop > tol.max_accuracy_drop + 1e-12:
        raise ValidationError(f"accuracy {result.accuracy:.2%} is {drop * 100:.2f} pt below the float "
                              f"model's {result.reference_accuracy:.2%} (max drop {tol.max_accuracy_drop * 100:.2f} pt)")

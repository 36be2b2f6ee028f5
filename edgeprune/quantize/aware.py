"""Quantization that happens in PyTorch, before export: low-bit widths and quantization-aware
training (QAT).

Why in PyTorch: ONNX Runtime's quantizer writes 8-bit files only, so a w4a8 or w2a2 network has to
be quantized where its weights can still be trained (Brevitas, :mod:`edgeprune.quantize.lowbit`);
and QAT for INT8 fine-tunes ModelOpt's fake-quant (:mod:`edgeprune.quantize.qat`). Both export
explicit Q/DQ ONNX that ONNX Runtime runs as is and TensorRT/FINN consume.

Where it sits in deploy (docs/quantization.md): prune -> fine-tune -> **calibrate, or QAT for
``--qat-epochs``** -> export -> compile -> validate -> measure. Search candidates are only
calibrated (their latency does not depend on fine-tuned weights); the shipped result gets the QAT.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from edgeprune.errors import ConfigError
from edgeprune.quantize.precision import PrecisionSpec

if TYPE_CHECKING:
    import torch

DEFAULT_LOWBIT_QAT_EPOCHS = 1.0  # calibrated-only w2a2 kept 56 % on digits, one QAT epoch 85 %
_QUANT_PACKAGES = ("brevitas.", "modelopt.")


def is_lowbit(precision: str) -> bool:
    """Integer widths below 8 bits (w4a8, w2a2, ...): built from a Brevitas-quantized model."""
    spec = PrecisionSpec.parse(precision)
    return not spec.is_float and spec.name != "int8" and spec.weight_bits is not None


def toolkit_of(model: "torch.nn.Module") -> str | None:
    """"brevitas" or "modelopt" when the model already holds that toolkit's quantizers, else None."""
    for module in model.modules():
        package = type(module).__module__
        for name in _QUANT_PACKAGES:
            if package.startswith(name):
                return name.rstrip(".")
    return None


def is_quantized(model: "torch.nn.Module") -> bool:
    """True when the model already holds quantizers (Brevitas layers or ModelOpt fake-quant)."""
    return toolkit_of(model) is not None


def qat_epochs(precision: str, requested: float | None) -> float:
    """The QAT epochs for this precision: the user's, else 1 for low-bit (calibration alone loses
    too much below 8 bits) and 0 for int8 (post-training calibration meets 1 pt on CNNs)."""
    if requested is not None:
        if requested < 0:
            raise ConfigError("--qat-epochs must be >= 0")
        if requested > 0 and PrecisionSpec.parse(precision).is_float:
            raise ConfigError(f"--qat-epochs needs an integer --precision (int8, w4a8, ...), not {precision}")
        return requested
    return DEFAULT_LOWBIT_QAT_EPOCHS if is_lowbit(precision) else 0.0


def _tensors(batches: Sequence[np.ndarray]) -> list["torch.Tensor"]:
    import torch

    if not batches:
        raise ConfigError("quantizing in PyTorch needs calibration batches")
    return [torch.from_numpy(np.asarray(b, np.float32)) for b in batches]


def calibrated(model: "torch.nn.Module", precision: str, batches: Sequence[np.ndarray]) -> "torch.nn.Module":
    """A low-bit copy of ``model`` with activation ranges calibrated (post-training); a model that
    already holds quantizers is returned as is."""
    if is_quantized(model):
        return model
    spec = PrecisionSpec.parse(precision)
    with quiet_toolkits():
        from edgeprune.quantize.lowbit import prepare_lowbit

        return prepare_lowbit(model, int(spec.weight_bits), int(spec.activation_bits), _tensors(batches))


@contextmanager
def quiet_toolkits() -> Iterator[None]:
    """Brevitas and ModelOpt warn about optional packages (fast_hadamard_transform, transformers,
    CUDA) on import and export; none of it concerns a CPU export, and a user reads it as an error."""
    torch_log = logging.getLogger("torch.utils.cpp_extension")
    level = torch_log.level
    torch_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch_log.setLevel(level)


def for_training(model: "torch.nn.Module", precision: str, batches: Sequence[np.ndarray],
                 int8_toolkit: str = "modelopt") -> tuple["torch.nn.Module", str]:
    """A quantized copy to fine-tune (QAT) and the toolkit that made it: Brevitas for widths
    below 8 bits; for int8 the runtime's choice (``int8_toolkit``, see
    :class:`edgeprune.backends.base.QatToolkit`). ``model`` is untouched."""
    name = PrecisionSpec.parse(precision).name
    if is_lowbit(precision):
        return calibrated(model, precision, batches), "brevitas"
    if name != "int8":
        raise ConfigError(f"quantization-aware training needs an integer precision, not {precision}")
    with quiet_toolkits():
        if int8_toolkit == "brevitas":
            from edgeprune.quantize.lowbit import prepare_lowbit

            return prepare_lowbit(model, 8, 8, _tensors(batches)), "brevitas"
        if int8_toolkit != "modelopt":
            raise ConfigError(f"unknown QAT toolkit {int8_toolkit!r}; use modelopt or brevitas")
        from edgeprune.quantize.qat import prepare_qat

        return prepare_qat(model, _tensors(batches)), "modelopt"

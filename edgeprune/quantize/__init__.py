"""Quantizers, by name: ONNX in, quantized ONNX out.

Why ONNX and not PyTorch: the same quantized file feeds ONNX Runtime on the host and TensorRT on a
Jetson (explicit Q/DQ), so what is validated here is what ships. Adding a quantizer is one module in
this package that registers itself with ``@quantizers.register``; :func:`load_builtin` imports
every module (pkgutil), so there is no list to edit. Toolchains (onnx, onnxruntime, torch) are
imported inside functions, so ``import edgeprune.quantize`` stays cheap.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points

from edgeprune.quantize.base import Quantizer, QuantResult
from edgeprune.quantize.precision import PrecisionSpec, Tolerance, ToleranceResult, check
from edgeprune.registry import Registry

quantizers: Registry = Registry("quantizer")

# Modules here that are helpers, not quantizers (QAT works on a torch model, not an ONNX file;
# build turns an exported ONNX into a backend's shipped file with the quantizers below; lowbit, like
# qat, quantizes a torch model with Brevitas).
_HELPERS = {"base", "precision", "sensitivity", "qat", "build", "lowbit", "aware"}


def load_builtin() -> Registry:
    """Import every quantizer module (registration is a side effect of the import), then any
    ``edgeprune.quantizers`` entry point of an installed plug-in; idempotent."""
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _HELPERS:
            importlib.import_module(f"{__name__}.{info.name}")
    for entry in entry_points(group="edgeprune.quantizers"):
        if entry.name not in quantizers:
            entry.load()
    return quantizers


def get_quantizer(name: str) -> Quantizer:
    """Instantiate the quantizer registered under ``name`` with its default config."""
    load_builtin()
    return quantizers.get(name)()


def quantizer_names() -> list[str]:
    """Every registered quantizer: what a CLI would offer."""
    return load_builtin().names()


__all__ = [
    "PrecisionSpec", "QuantResult", "Quantizer", "Tolerance", "ToleranceResult", "check",
    "get_quantizer", "load_builtin", "quantizer_names", "quantizers",
]

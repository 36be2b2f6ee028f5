"""Does unstructured sparsity make the compiled model faster? Measure it, do not assume it.

A masked model has the same shapes as the dense one, only with zeros in its weights. Dense
runtimes (ONNX Runtime's CPU provider, TVM, TensorRT without sparse kernels) execute a zero
weight like any other, so the expected ratio is ~1.0 and any difference is noise. This module
exports both models to ONNX, runs both through the existing ONNX Runtime backend with the same
:class:`~edgeprune.profilers.MeasureSettings` (warm-up, repeats, median), and reports both
medians and their ratio, labelled ``measured:onnxruntime-local``. It also counts the zeros that
actually reached the exported file, so a "sparse" figure cannot silently come from a dense graph.
It never claims a speed-up: the caller reads the ratio.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgeprune.artifact import Artifact
from edgeprune.backends.base import CompileOptions
from edgeprune.backends.ort import OnnxRuntimeBackend
from edgeprune.profilers.base import MeasureSettings
from edgeprune.profilers.stats import LatencyStats
from edgeprune.sparsity.masks import Masks

SOURCE = "measured:onnxruntime-local"


@dataclass(frozen=True)
class SparseDenseTiming:
    """Both measurements, on the same device, same settings; ``ratio`` = sparse / dense median."""

    dense: LatencyStats
    sparse: LatencyStats
    ratio: float
    sparsity: float  # fraction of masked weights (of the masked parameters)
    zero_fraction_dense: float  # zeros among all float initialisers of each exported file
    zero_fraction_sparse: float
    device: str
    source: str = SOURCE

    def to_json(self) -> dict:
        return {"dense_ms": self.dense.to_json(), "sparse_ms": self.sparse.to_json(), "ratio": self.ratio,
                "sparsity": self.sparsity, "zero_fraction_dense": self.zero_fraction_dense,
                "zero_fraction_sparse": self.zero_fraction_sparse, "device": self.device,
                "source": self.source}


def onnx_zero_fraction(path: Path) -> float:
    """Share of exactly-zero values among the float initialisers of an ONNX file."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    zeros = total = 0
    for init in onnx.load(str(path)).graph.initializer:
        arr = numpy_helper.to_array(init)
        if np.issubdtype(arr.dtype, np.floating):
            zeros += int((arr == 0).sum())
            total += arr.size
    return zeros / total if total else 0.0


def _compile(backend: OnnxRuntimeBackend, model: nn.Module, example: torch.Tensor, out_dir: Path) -> Artifact:
    return backend.compile(model, example, out_dir, CompileOptions("host", {}, out_dir / "cache"))


def measure_sparse_vs_dense(model: nn.Module, masks: Masks, example: torch.Tensor, work_dir: Path,
                            settings: MeasureSettings = MeasureSettings()) -> SparseDenseTiming:
    """Export ``model`` dense and a masked copy (same shapes, zeros) and time both with ONNX Runtime.

    ``model`` is not modified. The dense model is measured first, then the sparse one, in one
    process on the local CPU; ``settings.threads`` fixes the thread count for both.
    """
    backend = OnnxRuntimeBackend()
    reason = backend.unavailable_reason()
    if reason:
        from edgeprune.errors import ToolchainMissingError

        raise ToolchainMissingError(reason)
    sparse_model = copy.deepcopy(model).eval()
    masks.apply(sparse_model)
    dense_art = _compile(backend, copy.deepcopy(model).eval(), example, work_dir / "dense")
    sparse_art = _compile(backend, sparse_model, example, work_dir / "sparse")
    dense = backend.measure(dense_art, settings)
    sparse = backend.measure(sparse_art, settings)
    return SparseDenseTiming(
        dense=dense.latency, sparse=sparse.latency, ratio=sparse.latency.median / dense.latency.median,
        sparsity=masks.sparsity(), zero_fraction_dense=onnx_zero_fraction(dense_art.path),
        zero_fraction_sparse=onnx_zero_fraction(sparse_art.path), device=dense.device)

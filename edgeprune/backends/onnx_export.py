"""ONNX export shared by every backend that consumes ONNX (ONNX Runtime, TensorRT, quantizers).

One exporter, one input/output naming, so an ONNX file written for one runtime is what the next
stage (quantizer, TensorRT on the board) reads.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from edgeprune.errors import TraceError

OPSET = 17

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int = OPSET) -> None:
    """Export with the TorchScript exporter (fast, ~0.1 s); fall back to the dynamo exporter."""
    model = model.eval()
    errors: list[str] = []
    for dynamo in (False, True):
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model, (example,), str(path), dynamo=dynamo, verbose=False,
                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
                )
            return
        except Exception as exc:  # noqa: BLE001 - exporter raises many types; we re-raise typed
            errors.append(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    raise TraceError(f"ONNX export failed: {errors[-1]}")

"""After compile: run the artifact on the validation set and hold it to the PyTorch model.

Like optimum's exporters, a mismatch is a typed error, never a warning: an artifact that
disagrees with the model it claims to be is not shipped. Tolerances are per runtime (fp32
compilers reorder sums; quantised formats would get looser ones).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from edgeprune.backends.base import Session
from edgeprune.errors import ValidationError

FP32_TOLERANCE = {"atol": 1e-3, "rtol": 1e-3}


@dataclass(frozen=True)
class ValidationResult:
    accuracy: float  # top-1 of the compiled artifact on the validation set
    reference_accuracy: float  # top-1 of the PyTorch model on the same samples
    max_abs_error: float  # largest |artifact - pytorch| logit difference
    top1_agreement: float
    samples: int
    tolerance: dict
    accuracy_source: str = "compiled artifact"

    def to_json(self) -> dict:
        return dict(self.__dict__)


def validate_artifact(session: Session, model: nn.Module, dataset: Dataset, batch: int,
                      tolerance: dict = FP32_TOLERANCE, runtime: str = "artifact",
                      limit: int | None = None) -> ValidationResult:
    """Compare logits sample-batch by sample-batch; raise :class:`ValidationError` on mismatch.

    ``batch`` is the artifact's compiled batch size; a short last batch is padded and trimmed.
    ``limit`` checks only the first samples (emulated runs are slow); the accuracy is then the
    PyTorch model's on the whole set, and ``accuracy_source`` says so.
    """
    model.eval()
    n = len(dataset) if limit is None else min(limit, len(dataset))
    xs = torch.stack([dataset[i][0] for i in range(n)])
    ys = np.array([int(dataset[i][1]) for i in range(n)])
    got, want = [], []
    with torch.no_grad():
        for start in range(0, len(xs), batch):
            chunk = xs[start:start + batch]
            n = len(chunk)
            padded = torch.cat([chunk, chunk[-1:].expand(batch - n, *chunk.shape[1:])]) if n < batch else chunk
            got.append(np.asarray(session(padded.numpy()))[:n])
            want.append(model(chunk).numpy())
    out, ref = np.concatenate(got), np.concatenate(want)
    err = np.abs(out - ref)
    bound = tolerance["atol"] + tolerance["rtol"] * np.abs(ref)
    result = ValidationResult(
        accuracy=float((out.argmax(1) == ys).mean()),
        reference_accuracy=float((ref.argmax(1) == ys).mean()),
        max_abs_error=float(err.max()),
        top1_agreement=float((out.argmax(1) == ref.argmax(1)).mean()),
        samples=len(ys),
        tolerance=dict(tolerance),
    )
    if limit is not None:
        from edgeprune.training.finetune import pytorch_accuracy
        from edgeprune.data import make_loader

        result = replace(result, accuracy=pytorch_accuracy(model, make_loader(dataset, 256, shuffle=False)),
                         accuracy_source=f"PyTorch model; the artifact matched it on {n} samples ({runtime})")
    if not np.all(err <= bound):
        worst = float((err - bound).max())
        raise ValidationError(
            f"{runtime} artifact output differs from PyTorch: max |error| {result.max_abs_error:.2e} "
            f"exceeds atol {tolerance['atol']:g} + rtol {tolerance['rtol']:g} by {worst:.2e}"
        )
    return result

"""After compile: run the artifact on the validation set and hold it to the PyTorch model.

Like optimum's exporters, a mismatch is a typed error, never a warning: an artifact that
disagrees with the model it claims to be is not shipped. Tolerances are per *precision*
(:class:`edgeprune.quantize.precision.Tolerance`): float artifacts must match the logits closely
(compilers reorder sums; fp16 rounds), while quantised ones are held to what quantisation can
promise — the same top-1 answer on nearly every sample and at most a stated accuracy drop —
because their logits legitimately differ.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from edgeprune.backends.base import Session
from edgeprune.errors import ValidationError
from edgeprune.quantize.precision import PrecisionSpec, Tolerance, check


def tolerance_for(precision: str, max_accuracy_drop: float | None = None) -> Tolerance:
    """The precision's tolerance (one definition, in :mod:`edgeprune.quantize.precision`); a user's
    ``--max-accuracy-drop`` replaces the default bound for integer precisions."""
    tol = Tolerance.for_precision(PrecisionSpec.parse(precision))
    if max_accuracy_drop is not None and tol.max_accuracy_drop is not None:
        tol = replace(tol, max_accuracy_drop=max_accuracy_drop)
    return tol


@dataclass(frozen=True)
class ValidationResult:
    accuracy: float  # top-1 of the compiled artifact on the validation set
    reference_accuracy: float  # top-1 of the PyTorch model on the same samples
    max_abs_error: float | None  # largest |artifact - pytorch| logit difference (None: artifact not run)
    top1_agreement: float | None
    samples: int
    tolerance: dict
    precision: str = "fp32"
    accuracy_source: str = "compiled artifact"

    def to_json(self) -> dict:
        return dict(self.__dict__)


def _run_both(session: Session, model: nn.Module, xs: torch.Tensor, batch: int,
              reference_batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Artifact and PyTorch logits; a short last batch is padded to the compiled batch and trimmed.

    The artifact runs at its compiled batch size; the PyTorch reference in large batches, since a
    batch-1 eager forward per sample made validation the slowest part of a search step."""
    got = []
    for start in range(0, len(xs), batch):
        chunk = xs[start:start + batch]
        n = len(chunk)
        padded = torch.cat([chunk, chunk[-1:].expand(batch - n, *chunk.shape[1:])]) if n < batch else chunk
        got.append(np.asarray(session(padded.numpy()))[:n])
    with torch.no_grad():
        want = [model(xs[i:i + reference_batch]).numpy() for i in range(0, len(xs), reference_batch)]
    return np.concatenate(got), np.concatenate(want)


def validate_artifact(session: Session, model: nn.Module, dataset: Dataset, batch: int,
                      precision: str = "fp32", runtime: str = "artifact", limit: int | None = None,
                      tolerance: Tolerance | None = None) -> ValidationResult:
    """Compare logits on the validation set; raise :class:`ValidationError` on a mismatch.

    ``limit`` checks only the first samples (emulated runs are slow); the accuracy is then the
    PyTorch model's on the whole set, and ``accuracy_source`` says so.
    """
    tol = tolerance or tolerance_for(precision)
    model.eval()
    n = len(dataset) if limit is None else min(limit, len(dataset))
    xs = torch.stack([dataset[i][0] for i in range(n)])
    ys = np.array([int(dataset[i][1]) for i in range(n)])
    out, ref = _run_both(session, model, xs, batch)
    try:
        checked = check(tol, out, ref, ys)
    except ValidationError as exc:
        raise ValidationError(f"{runtime} ({precision}) fails validation against PyTorch: {exc}") from None
    result = ValidationResult(
        accuracy=float(checked.accuracy), reference_accuracy=float(checked.reference_accuracy),
        max_abs_error=checked.max_abs_error, top1_agreement=checked.top1_agreement,
        samples=len(ys), tolerance=asdict(tol), precision=precision,
    )
    if limit is not None:
        from edgeprune.data import make_loader
        from edgeprune.training.finetune import pytorch_accuracy

        result = replace(result, accuracy=pytorch_accuracy(model, make_loader(dataset, 256, shuffle=False)),
                         accuracy_source=f"PyTorch model; the artifact matched it on {n} samples ({runtime})")
    return result


def not_validated(model: nn.Module, dataset: Dataset, precision: str, reason: str) -> ValidationResult:
    """The artifact could not be run here: report the PyTorch model's accuracy, labelled so."""
    from edgeprune.data import make_loader
    from edgeprune.training.finetune import pytorch_accuracy

    accuracy = pytorch_accuracy(model, make_loader(dataset, 256, shuffle=False))
    return ValidationResult(accuracy=accuracy, reference_accuracy=accuracy, max_abs_error=None, top1_agreement=None,
                            samples=0, tolerance={}, precision=precision,
                            accuracy_source=f"PyTorch model; the artifact was NOT run here: {reason}")

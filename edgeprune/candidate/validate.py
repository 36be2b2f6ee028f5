"""After compile: run the artifact on the validation set and hold it to the PyTorch model.

Like optimum's exporters, a mismatch is a typed error, never a warning: an artifact that
disagrees with the model it claims to be is not shipped. Tolerances are per *precision*: float
artifacts must match the logits closely (compilers reorder sums; fp16 rounds), while quantised
ones are held to what quantisation can promise — the same top-1 answer on nearly every sample and
at most a stated accuracy drop — because their logits legitimately differ.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from edgeprune.backends.base import Session
from edgeprune.errors import ConfigError, ValidationError


@dataclass(frozen=True)
class Tolerance:
    """``atol``/``rtol`` bound every logit (``None``: not checked); ``min_agreement`` is the share
    of samples whose top-1 must equal PyTorch's; ``max_accuracy_drop`` bounds the top-1 loss."""

    atol: float | None
    rtol: float | None
    min_agreement: float | None = None
    max_accuracy_drop: float | None = None


TOLERANCES = {
    "fp32": Tolerance(atol=1e-3, rtol=1e-3),
    "fp16": Tolerance(atol=2e-2, rtol=2e-2, min_agreement=0.99),
    "int8": Tolerance(atol=None, rtol=None, min_agreement=0.95, max_accuracy_drop=0.02),
}


def tolerance_for(precision: str) -> Tolerance:
    """The tolerance of a precision; low-bit integer widths (``w4a8``...) share int8's rules."""
    if precision in TOLERANCES:
        return TOLERANCES[precision]
    if precision.startswith(("int", "w")):
        return TOLERANCES["int8"]
    raise ConfigError(f"no validation tolerance for precision {precision!r}; known: {', '.join(TOLERANCES)}")


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


def _run_both(session: Session, model: nn.Module, xs: torch.Tensor, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Artifact and PyTorch logits; a short last batch is padded to the compiled batch and trimmed."""
    got, want = [], []
    with torch.no_grad():
        for start in range(0, len(xs), batch):
            chunk = xs[start:start + batch]
            n = len(chunk)
            padded = torch.cat([chunk, chunk[-1:].expand(batch - n, *chunk.shape[1:])]) if n < batch else chunk
            got.append(np.asarray(session(padded.numpy()))[:n])
            want.append(model(chunk).numpy())
    return np.concatenate(got), np.concatenate(want)


def _check(result: ValidationResult, out: np.ndarray, ref: np.ndarray, tol: Tolerance, runtime: str) -> None:
    """Raise one line naming the rule the artifact broke."""
    if tol.atol is not None and tol.rtol is not None:
        excess = np.abs(out - ref) - (tol.atol + tol.rtol * np.abs(ref))
        if np.any(excess > 0):
            raise ValidationError(
                f"{runtime} artifact output differs from PyTorch: max |error| {result.max_abs_error:.2e} "
                f"exceeds atol {tol.atol:g} + rtol {tol.rtol:g} by {float(excess.max()):.2e}")
    if tol.min_agreement is not None and result.top1_agreement < tol.min_agreement:
        raise ValidationError(f"{runtime} artifact ({result.precision}) agrees with PyTorch's top-1 on "
                              f"{result.top1_agreement:.1%} of samples; needs {tol.min_agreement:.0%}")
    drop = result.reference_accuracy - result.accuracy
    if tol.max_accuracy_drop is not None and drop > tol.max_accuracy_drop:
        raise ValidationError(f"{runtime} artifact ({result.precision}) loses {drop:.1%} top-1 against the "
                              f"float model; at most {tol.max_accuracy_drop:.1%} allowed")


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
    result = ValidationResult(
        accuracy=float((out.argmax(1) == ys).mean()),
        reference_accuracy=float((ref.argmax(1) == ys).mean()),
        max_abs_error=float(np.abs(out - ref).max()),
        top1_agreement=float((out.argmax(1) == ref.argmax(1)).mean()),
        samples=len(ys), tolerance=asdict(tol), precision=precision,
    )
    _check(result, out, ref, tol, runtime)
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

"""The one thing that flows from pruning to the report: a candidate network and what became of it.

A :class:`Candidate` is a (pruned) model, the plan that made it from the original, and the
precision it will ship in; an :class:`Evaluated` is one compiled artifact of it with its
measurement and its validation against the PyTorch model. Search, deploy and the report all pass
these, never loose tuples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgeprune.artifact import Artifact
from edgeprune.candidate.validate import ValidationResult
from edgeprune.plan import PruningPlan
from edgeprune.profilers.base import Measurement


@dataclass(frozen=True)
class Candidate:
    """A network to compile and measure; ``tag`` names its work folder (``baseline``, ``step3``)."""

    model: nn.Module
    plan: PruningPlan
    example: torch.Tensor
    tag: str

    @property
    def precision(self) -> str:
        """The precision the artifact computes in (per-layer overrides live in ``plan.precision``)."""
        return str(self.plan.precision.get("default", "fp32"))


@dataclass(frozen=True)
class Evaluated:
    """One compiled artifact of a candidate, measured (or estimated, labelled so) and validated."""

    artifact: Artifact
    measurement: Measurement
    validation: ValidationResult | None = None

    @property
    def median_ms(self) -> float:
        return self.measurement.latency.median

    @property
    def estimated(self) -> bool:
        """True when the figure is an estimate (``estimate:...``), not a timing of the artifact."""
        return self.measurement.latency.source.startswith("estimate")

    def energy_note_missing(self) -> bool:
        """True when the device gave no energy figure (the note says why)."""
        return self.measurement.energy is None

    @property
    def accuracy(self) -> float | None:
        return None if self.validation is None else self.validation.accuracy

    def to_json(self) -> dict[str, Any]:
        out = {**self.measurement.to_json(), "precision": self.artifact.precision,
               "artifact_meta": self.artifact.meta}
        if self.validation is not None:
            out.update(accuracy=self.validation.accuracy, validation=self.validation.to_json())
        return out

"""The search trace: what was measured at each step (kept apart from the plan, which says only
what to prune). It is checkpointed with the plan and written beside it as ``search.json``.

The baseline is part of the trace on purpose: a resumed run must resolve a relative budget
against the *same* baseline figure, or ``--resume`` silently moves the goal.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgeprune.errors import ConfigError
from edgeprune.io import write_json_atomic


@dataclass(frozen=True)
class StepRecord:
    """One candidate, measured paired with the baseline artifact."""

    step: int
    latency_ms: dict[str, Any]  # LatencyStats JSON of the candidate (median of rounds)
    ratio_to_baseline: float
    ratio_spread: tuple[float, float]
    rounds: int
    macs: int
    params: int
    accuracy_pytorch: float
    kept_fraction: float
    baseline_variation: float  # how much the baseline moved between this step's rounds

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["ratio_spread"] = list(self.ratio_spread)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "StepRecord":
        return cls(**{**data, "ratio_spread": tuple(data["ratio_spread"])})


@dataclass(frozen=True)
class SearchTrace:
    runtime: str
    baseline_ms: float  # the baseline median the budget was resolved against
    budget_ms: float
    steps: tuple[StepRecord, ...] = field(default_factory=tuple)

    def add(self, record: StepRecord) -> "SearchTrace":
        return replace(self, steps=self.steps + (record,))

    def to_json(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "baseline_ms": self.baseline_ms, "budget_ms": self.budget_ms,
                "steps": [s.to_json() for s in self.steps]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SearchTrace":
        try:
            return cls(str(data["runtime"]), float(data["baseline_ms"]), float(data["budget_ms"]),
                       tuple(StepRecord.from_json(s) for s in data.get("steps", ())))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed search trace: {exc}") from None

    def save(self, path: Path) -> None:
        write_json_atomic(path, self.to_json())

    def stability(self) -> dict[str, Any]:
        """How steady the machine was while the search measured (for the report)."""
        variation = [s.baseline_variation for s in self.steps]
        if not variation:
            return {"rounds": 0, "note": "no search steps were measured"}
        worst = max(variation)
        verdict = "steady" if worst < 0.05 else "noisy" if worst < 0.25 else "very noisy"
        return {"baseline_variation_median": sorted(variation)[len(variation) // 2], "baseline_variation_max": worst,
                "rounds": sum(s.rounds for s in self.steps), "verdict": verdict}

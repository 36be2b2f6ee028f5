"""The search's own settings: the latency budget and the prune -> recover -> measure schedule."""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgeprune.errors import ConfigError


@dataclass(frozen=True)
class Budget:
    """A latency budget: ``ratio`` of the unpruned model's latency, or ``ms`` absolute."""

    ratio: float | None = None
    ms: float | None = None

    @classmethod
    def parse(cls, text: str) -> "Budget":
        """``0.5x`` (half the baseline measured the same way), ``3.2ms``, ``800us``."""
        s = text.strip().lower()
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(x|ms|us|µs)", s)
        if not match:
            raise ConfigError(f"latency budget {text!r} is not like 0.5x, 3.2ms or 800us")
        value, unit = float(match.group(1)), match.group(2)
        if value <= 0:
            raise ConfigError("latency budget must be > 0")
        if unit == "x":
            if value > 1:
                raise ConfigError(f"a relative budget above 1x ({text}) needs no pruning")
            return cls(ratio=value)
        return cls(ms=value / 1000 if unit in ("us", "µs") else value)

    def resolve(self, baseline_ms: float) -> float:
        return baseline_ms * self.ratio if self.ratio is not None else float(self.ms)

    def describe(self) -> str:
        return f"{self.ratio}x of the unpruned model" if self.ratio is not None else f"{self.ms} ms"

    def to_json(self) -> dict:
        return {"ratio": self.ratio, "ms": self.ms}


@dataclass(frozen=True)
class SearchConfig:
    """The iterative loop (Molchanov's schedule; the strategy decides each step's size)."""

    criterion: str = "taylor"
    strategy: str = "sqrt-step"  # edgeprune.search.strategies
    max_step: float = 0.25  # remove at most this share of the kept channels per step
    min_step: float = 0.05
    max_steps: int = 12  # pruning steps per run (a resumed run gets as many again)
    step_epochs: float = 0.5  # recovery fine-tune after each step
    score_batches: int = 8  # minibatches the criterion averages over
    min_keep: float = 0.1
    headroom: float = 0.03  # aim this far below the budget so timing noise cannot flip the verdict
    regularizer: str | None = None  # training-time regulariser for every fine-tune (edgeprune.training.regularizers)
    rounds: int = 5  # interleaved candidate/reference measurement rounds per step (more when undecided)

    def __post_init__(self) -> None:
        if not 0 <= self.headroom < 0.5:
            raise ConfigError("headroom must be in [0, 0.5)")
        if not 0 < self.min_step <= self.max_step < 1:
            raise ConfigError("need 0 < min_step <= max_step < 1")
        if self.max_steps < 1 or self.score_batches < 1 or self.step_epochs < 0 or self.rounds < 1:
            raise ConfigError("max_steps, score_batches and rounds must be >= 1, step_epochs >= 0")
        from edgeprune.search.strategies import strategies

        strategies.get(self.strategy)  # unknown name: UnknownNameError listing the known ones
        if self.regularizer is not None:
            from edgeprune.training.regularizers import regularizers  # lazy: imports torch-heavy modules

            regularizers.get(self.regularizer)

"""Typed, validated configuration for ``deploy`` (and the parsers for its string flags)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from edgeprune.data import Preprocessing
from edgeprune.errors import ConfigError
from edgeprune.devices.registry import DeviceOptions

RUNTIME_CHOICES = ("auto", "tvm", "onnxruntime")


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


def parse_shape(text: str) -> tuple[int, ...]:
    """``1x3x32x32`` -> (1, 3, 32, 32)."""
    try:
        shape = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"input shape {text!r} is not like 1x3x32x32") from None
    if len(shape) != 4 or min(shape) < 1:
        raise ConfigError(f"input shape {text!r} must be NxCxHxW with positive sizes")
    return shape


def parse_floats(text: str | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not a comma-separated list of numbers") from None


@dataclass(frozen=True)
class SearchConfig:
    """The iterative prune -> fine-tune -> measure loop (Molchanov's schedule)."""

    criterion: str = "taylor"
    max_step: float = 0.2  # remove at most this share of the kept channels per step
    min_step: float = 0.05
    max_steps: int = 12  # pruning steps per run (a resumed run gets as many again)
    step_epochs: float = 0.5  # recovery fine-tune after each step
    score_batches: int = 8  # minibatches the criterion averages over
    min_keep: float = 0.1
    headroom: float = 0.03  # aim this far below the budget so timing noise cannot flip the verdict
    regularizer: str | None = None  # training-time regulariser for every fine-tune (edgeprune.training.regularizers)

    def __post_init__(self) -> None:
        if not 0 <= self.headroom < 0.5:
            raise ConfigError("headroom must be in [0, 0.5)")
        if not 0 < self.min_step <= self.max_step < 1:
            raise ConfigError("need 0 < min_step <= max_step < 1")
        if self.max_steps < 1 or self.score_batches < 1 or self.step_epochs < 0:
            raise ConfigError("max_steps and score_batches must be >= 1, step_epochs >= 0")
        if self.regularizer is not None:
            from edgeprune.training.regularizers import regularizers  # lazy: the registry imports torch-heavy modules

            regularizers.get(self.regularizer)  # unknown name: UnknownNameError before any work


@dataclass(frozen=True)
class DeployConfig:
    target: str = "host"
    model: str = "demo"
    weights: Path | None = None
    trust_checkpoint: bool = False
    input_shape: tuple[int, ...] | None = None  # default: 1 x data sample shape
    data: str = "digits"
    val_data: str | None = None
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    budget: Budget = field(default_factory=lambda: Budget(ratio=0.5))
    search: SearchConfig = field(default_factory=SearchConfig)
    epochs: float = 2.0  # final fine-tune
    distill: bool = False
    lr: float = 0.01
    batch_size: int = 64
    runtime: str = "auto"
    tune_trials: int = 64
    threads: int | None = None
    device: str | None = None  # --device: local | rpc://HOST:PORT[/KEY] | ssh://USER@HOST[:PORT]
    device_options: DeviceOptions = field(default_factory=DeviceOptions)
    out: Path = Path("edgeprune-out")
    cache_dir: Path | None = None
    resume: bool = False
    seed: int = 0
    from_scratch: bool = False  # also train the pruned architecture from scratch (Scratch-E/B)

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIME_CHOICES:
            raise ConfigError(f"unknown runtime {self.runtime!r}; known: {', '.join(RUNTIME_CHOICES)}")
        if self.epochs < 0 or self.tune_trials < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("epochs and tune_trials must be >= 0, batch_size >= 1, lr > 0")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("threads must be >= 1")

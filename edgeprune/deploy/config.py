"""``deploy``'s configuration: a composition of each stage's own small config.

Each stage receives only its part (the loader the model/data options, the search its
``SearchConfig``, the evaluator its ``CompileConfig``...), so no stage depends on a bag of
unrelated fields. :meth:`DeployConfig.fingerprint_parts` is everything that changes the result:
the resume checkpoint refuses progress made with other settings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeprune.candidate.evaluator import CompileConfig
from edgeprune.deploy.precision import PrecisionConfig
from edgeprune.devices import DeviceOptions
from edgeprune.errors import ConfigError
from edgeprune.models.loading import DataOptions, ModelOptions
from edgeprune.search.config import Budget, SearchConfig


@dataclass(frozen=True)
class FineTuneConfig:
    """The final fine-tune after the search, and the Rethinking-the-value-of-pruning baselines."""

    epochs: float = 2.0
    lr: float = 0.01
    batch_size: int = 64
    distill: bool = False  # knowledge distillation from the unpruned model
    from_scratch: bool = False  # also train the pruned architecture from scratch (Scratch-E/B)

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("epochs must be >= 0, batch_size >= 1, lr > 0")


@dataclass(frozen=True)
class DeviceConfig:
    """Where candidates are measured: ``--device`` (``None``: the target's own reach) and how to
    talk to that board; ``runtime`` narrows the runtimes when the device runs several."""

    device: str | None = None
    options: DeviceOptions = field(default_factory=DeviceOptions)
    runtime: str | None = None  # None: the target's default, or all it lists on a local device


@dataclass(frozen=True)
class RunConfig:
    out: Path = Path("edgeprune-out")
    cache_dir: Path | None = None
    resume: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ConfigError("seed must be >= 0")


@dataclass(frozen=True)
class DeployConfig:
    target: str = "host"
    model: ModelOptions = field(default_factory=ModelOptions)
    data: DataOptions = field(default_factory=DataOptions)
    budget: Budget = field(default_factory=lambda: Budget(ratio=0.5))
    search: SearchConfig = field(default_factory=SearchConfig)
    finetune: FineTuneConfig = field(default_factory=FineTuneConfig)
    compile: CompileConfig = field(default_factory=CompileConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def fingerprint_parts(self) -> dict[str, Any]:
        """Every setting that changes the shipped result (not where it is written or resumed)."""
        parts = asdict(self)
        parts["run"] = {"seed": self.run.seed}
        parts["search"].pop("max_steps")  # a per-run cap: a resumed run gets as many steps again
        parts["precision"].pop("qat_epochs")  # applied after the search: --resume with more QAT keeps the search
        parts["device"] = {"device": self.device.device, "runtime": self.device.runtime}
        return parts

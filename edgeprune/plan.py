"""The pruning plan: per group, which of the *original* channels are kept — saved as JSON.

Indices always refer to the unpruned model, so a plan made by several iterative steps replays in
one go on the original (``edgeprune prune --plan``). The plan also records the criterion, the
predicted MACs/params and the precision of every layer: everything ``edgeprune prune --plan``
needs to rebuild the shipped network, and nothing about how the search found it (that is the
search trace, :mod:`edgeprune.search.trace`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from edgeprune.errors import ConfigError
from edgeprune.io import write_json_atomic

PLAN_VERSION = 2
READABLE_VERSIONS = (1, 2)  # v1 plans carried the search log in "steps"; it is ignored now
FP32 = {"default": "fp32", "layers": {}}


@dataclass(frozen=True)
class GroupPlan:
    channels: int  # in the original model
    kept: tuple[int, ...]  # sorted original indices

    def __post_init__(self) -> None:
        if not self.kept or len(set(self.kept)) != len(self.kept):
            raise ConfigError("a group must keep at least one distinct channel")
        if min(self.kept) < 0 or max(self.kept) >= self.channels:
            raise ConfigError(f"kept index out of range 0..{self.channels - 1}")


@dataclass(frozen=True)
class PruningPlan:
    model: str
    input_shape: tuple[int, ...]
    criterion: str
    groups: dict[str, GroupPlan]
    macs: dict[str, int] = field(default_factory=dict)  # {"original": .., "pruned": ..}
    params: dict[str, int] = field(default_factory=dict)
    precision: dict = field(default_factory=lambda: dict(FP32))  # {"default": "int8", "layers": {name: "fp32"}}

    @classmethod
    def identity(cls, model: str, input_shape: tuple[int, ...], criterion: str,
                 channels: dict[str, int]) -> "PruningPlan":
        groups = {name: GroupPlan(n, tuple(range(n))) for name, n in channels.items()}
        return cls(model, tuple(input_shape), criterion, groups)

    def kept_fraction(self) -> float:
        total = sum(g.channels for g in self.groups.values())
        return sum(len(g.kept) for g in self.groups.values()) / max(total, 1)

    def with_groups(self, groups: dict[str, GroupPlan]) -> "PruningPlan":
        return replace(self, groups=groups)

    def to_json(self) -> dict:
        data = asdict(self)
        data["version"] = PLAN_VERSION
        data["input_shape"] = list(self.input_shape)
        data["groups"] = {k: {"channels": g.channels, "kept": list(g.kept)} for k, g in self.groups.items()}
        return data

    @classmethod
    def from_json(cls, data: dict) -> "PruningPlan":
        if data.get("version") not in READABLE_VERSIONS:
            raise ConfigError(f"plan version {data.get('version')!r} is not one of {READABLE_VERSIONS}")
        try:
            groups = {k: GroupPlan(int(g["channels"]), tuple(int(i) for i in g["kept"]))
                      for k, g in data["groups"].items()}
            return cls(data["model"], tuple(data["input_shape"]), data["criterion"], groups,
                       dict(data.get("macs", {})), dict(data.get("params", {})),
                       dict(data.get("precision") or FP32))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed plan: {exc}") from None

    def save(self, path: Path) -> None:
        write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> "PruningPlan":
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read plan {path}: {exc}") from None

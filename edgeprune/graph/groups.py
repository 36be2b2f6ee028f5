"""The group types: which channels go together, and which module channels they are.

Slices: a member need not span the group. Through a concatenation each branch covers part of the
group (two 48-channel branches concatenated to 96 and added to a 96-channel residual), through a
flatten a Linear reads several features per channel. ``Member.channels[k]`` (an index along the
member's own axis) belongs to group channel ``Member.positions[k]``; criteria map per-channel
statistics into the group with :func:`edgeprune.criteria.common.to_group`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from edgeprune.graph.coupling import Coupling


@dataclass(frozen=True)
class Member:
    """A parameterised module touched by a group, on its output or input channel axis.

    ``channels``/``positions``: which of the module's own channels (along that axis) belong to
    which group channel; empty tuples mean "all of them, one to one".
    """

    module: str
    axis: Literal["out", "in"]
    channels: tuple[int, ...] = field(default=(), compare=False)
    positions: tuple[int, ...] = field(default=(), compare=False)

    def index_map(self, group_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(member channel indices, group positions)`` as long tensors."""
        if not self.channels:
            full = torch.arange(group_channels)
            return full, full
        return torch.tensor(self.channels, dtype=torch.long), torch.tensor(self.positions, dtype=torch.long)

    def is_full(self) -> bool:
        return not self.channels


@dataclass(frozen=True)
class ChannelGroup:
    name: str
    channels: int
    members: tuple[Member, ...]
    blocks: int = 1  # grouped convs: remove the same positions in each of `blocks` equal blocks
    coupling: Coupling | None = None  # several torch-pruning groups tied by a shuffle/chunk (graph.coupling)

    def out_members(self) -> tuple[str, ...]:
        return tuple(m.module for m in self.members if m.axis == "out")

    def member(self, module: str, axis: str = "out") -> Member:
        for m in self.members:
            if m.module == module and m.axis == axis:
                return m
        raise KeyError(f"{module} is not an {axis}-member of {self.name}")

"""From torch-pruning's groups to edgeprune's: members with slices, constraint sites, merging.

Each torch-pruning group is analysed once (:class:`Found`): which module channels it covers and
which constraint sites (:class:`edgeprune.graph.coupling.Site`) it reaches — a channel shuffle, a
chunk, a grouped conv. A group whose sites it covers whole keeps the simple ``blocks`` rule
(*plain*); the others are merged with every group that reaches one of their sites, and the merged
group carries a :class:`edgeprune.graph.coupling.Coupling`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from edgeprune.graph import coupling, rules
from edgeprune.graph.groups import ChannelGroup, Member


@dataclass
class Found:
    """One torch-pruning group as edgeprune reads it."""

    name: str
    channels: int
    reason: str | None
    members: dict[tuple[str, str], Member] = field(default_factory=dict)
    blocks: int = 1
    plain: bool = True
    sites: dict[Any, coupling.Site] = field(default_factory=dict)
    reach: dict[Any, dict[int, set[int]]] = field(default_factory=dict)  # site -> {site index: root positions}

    def _reach(self, key: Any, item) -> None:
        seen = self.reach.setdefault(key, {})
        for idx, root in zip(item.idxs, item.root_idxs):
            seen.setdefault(int(idx), set()).add(int(root))

    def _full(self, item, width: int) -> bool:
        every = list(range(self.channels))
        return [int(i) for i in item.idxs] == every == [int(i) for i in item.root_idxs] and width == self.channels

    def add_site(self, item, graph, channels: int) -> None:
        """Record a shuffle or chunk the group's channels pass through."""
        target = item.dep.target
        spec = getattr(target, "edgeprune_shuffle", None)
        if spec is not None:
            self.plain = False
            self.sites[target] = coupling.Site(target, "tie", tuple(spec.bundles()))
            self._reach(target, item)
            return
        chunks = graph.split_blocks.get(target)
        if chunks:
            total = sum(target.module.split_sizes)
            size = total // chunks
            pieces = tuple(tuple(range(p * size, (p + 1) * size)) for p in range(chunks))
            self.sites[target] = coupling.Site(target, "balance", pieces)
            self._reach(target, item)
            if self._full(item, total):
                self.blocks = math.lcm(self.blocks, chunks)
            else:
                self.plain = False

    def add_conv(self, item, module: nn.Module, axis: str, name: str) -> None:
        """Record a grouped (not depthwise) conv: the same positions in each of its g blocks."""
        g = rules.grouped_conv_blocks(module)
        if g <= 1:
            return
        width = module.out_channels if axis == "out" else module.in_channels
        m = width // g
        key = (name, axis)
        self.sites[key] = coupling.Site(key, "tie", tuple(tuple(b * m + i for b in range(g)) for i in range(m)))
        self._reach(key, item)
        if self._full(item, width):
            self.blocks = math.lcm(self.blocks, g)
        else:
            self.plain = False


def components(found: list[Found]) -> dict[int, list[Found]]:
    """``{id(group): the groups it is tied to (itself included), in discovery order}``."""
    owner: dict[Any, int] = {}
    parent = list(range(len(found)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, f in enumerate(found):
        for key in f.sites:
            if key in owner:
                parent[root(i)] = root(owner[key])
            else:
                owner[key] = i
    by_root: dict[int, list[Found]] = {}
    for i, f in enumerate(found):
        by_root.setdefault(root(i), []).append(f)
    return {id(f): by_root[root(i)] for i, f in enumerate(found)}


def merge(parts: list[Found]) -> ChannelGroup:
    """One coupled group from tied torch-pruning groups: positions concatenated in part order."""
    total = sum(p.channels for p in parts)
    members: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
    full: set[tuple[str, str]] = set()
    offset = 0
    for part in parts:
        for key, member in part.members.items():
            if len(parts) == 1 and member.is_full():
                full.add(key)
            local, positions = member.index_map(part.channels)
            entry = members.setdefault(key, ([], []))
            entry[0].extend(int(i) for i in local)
            entry[1].extend(offset + int(p) for p in positions)
        offset += part.channels
    merged = tuple(Member(k[0], k[1]) if k in full else Member(k[0], k[1], tuple(c), tuple(p))
                   for k, (c, p) in members.items())
    sites = {key: site for part in parts for key, site in part.sites.items()}
    reach = {key: [part.reach.get(key, {}) for part in parts] for key in sites}
    tied = coupling.build([(p.name, p.channels) for p in parts], list(sites.values()), reach)
    return ChannelGroup(parts[0].name, total, merged, 1, tied)

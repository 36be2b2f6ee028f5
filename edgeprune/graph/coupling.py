"""Constraints that tie channels of *different* torch-pruning groups: coupled groups.

A torch-pruning group is the set of layers one channel touches; its channels are independent of
each other. Some ops make channels depend on each other across groups, because the model's own
code re-splits the pruned tensor by count:

- a **channel shuffle** (:mod:`edgeprune.graph.shuffle`) is exact only when every block of the
  shuffle loses the same positions: a *tie* between one channel of each block (the blocks usually
  come from different branches of a concatenation, i.e. different groups);
- a **chunk** into k equal pieces (``x.chunk(2, 1)``) is exact only when every piece loses as
  many channels: a *balance* constraint (in ShuffleNetV2 the chunk reads a shuffled mix of groups);
- a **grouped convolution** reads/writes g blocks that must lose the same positions: ties again.

When such an op reads a whole group on its own, the group's ``blocks`` rule
(:meth:`edgeprune.graph.GroupedModel.blocks`) covers it. Otherwise the groups it touches are
merged into one *coupled group*: its positions are the parts' positions one after the other, and
its :class:`Coupling` lists the units removed together, the positions that can never go (tied to
a channel no prunable group owns) and the balance constraints. The planner chooses whole units
under the balance constraints (:mod:`edgeprune.graph.units`). Ties are exact; balance is the
weakest exact rule (forcing the same positions in each chunk would, through ShuffleNetV2's
alternating shuffles and chunks, tie every channel of a stage into one unit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from edgeprune.errors import ConfigError

FROZEN = -1


@dataclass(frozen=True)
class Coupling:
    """Removal rules of a coupled group (positions index the group's concatenated channels).

    ``parts``: ``(root module, channels)`` of the merged torch-pruning groups, in order.
    ``units``: positions removed together; every position not frozen is in exactly one unit.
    ``frozen``: positions that are always kept. ``balance``: pairs ``(a, b)`` of position sets
    that must lose as many channels each.
    """

    parts: tuple[tuple[str, int], ...]
    units: tuple[tuple[int, ...], ...]
    frozen: tuple[int, ...]
    balance: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]

    def split(self, positions: Iterable[int]) -> list[tuple[str, list[int]]]:
        """Positions of the coupled group as ``(root module, positions in that part)``."""
        out, start, chosen = [], 0, sorted(positions)
        for root, size in self.parts:
            local = [p - start for p in chosen if start <= p < start + size]
            if local:
                out.append((root, local))
            start += size
        return out

    def check(self, name: str, removed: Iterable[int]) -> None:
        """A plan must remove whole units, never a frozen position, and keep every balance."""
        gone = set(removed)
        if gone & set(self.frozen):
            raise ConfigError(f"{name}: the plan removes channels tied to a channel that cannot be pruned")
        for unit in self.units:
            if 0 < len(gone.intersection(unit)) < len(unit):
                raise ConfigError(f"{name}: channels {list(unit)} are tied by a channel shuffle or grouped conv: "
                                  f"remove all of them or none")
        for a, b in self.balance:
            if len(gone.intersection(a)) != len(gone.intersection(b)):
                raise ConfigError(f"{name}: a chunk needs as many channels removed from each piece")


class _Ties:
    """Union-find over positions, with ``FROZEN`` as a sink."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, a: int) -> int:
        root = a
        while self.parent.setdefault(root, root) != root:
            root = self.parent[root]
        while self.parent[a] != root:
            self.parent[a], a = root, self.parent[a]
        return root

    def union(self, items: list[int]) -> None:
        roots = {self.find(a) for a in items}
        target = min(roots)  # FROZEN (-1) wins: a tie with a kept channel keeps them all
        for r in roots:
            self.parent[r] = target
        self.parent.setdefault(FROZEN, FROZEN)


@dataclass(frozen=True)
class Site:
    """One op that constrains channels, as seen by the groups that touch it.

    ``kind``: "tie" (bundles of indices removed together) or "balance" (pieces that lose as many
    each). ``sets``: the bundles or pieces, as the op's own channel indices.
    """

    key: Any
    kind: str
    sets: tuple[tuple[int, ...], ...]


def build(parts: list[tuple[str, int]], sites: list[Site],
          reach: dict[Any, list[dict[int, set[int]]]]) -> Coupling:
    """The coupling of merged groups. ``reach[site key][part]``: ``{site index: [part positions]}``
    (what each part's channels reach at that op); a site index no part reaches is a channel no
    prunable group owns."""
    offsets = [sum(size for _, size in parts[:i]) for i in range(len(parts))]
    total = sum(size for _, size in parts)
    ties = _Ties()
    balance = []
    for site in sites:
        where: dict[int, set[int]] = {}
        for part, seen in enumerate(reach[site.key]):
            for idx, positions in seen.items():
                where.setdefault(idx, set()).update(offsets[part] + p for p in positions)
        for idx, positions in where.items():
            if len(positions) > 1:
                ties.union(sorted(positions))  # one op channel, several group channels: inseparable
        for bundle in site.sets:
            covered = [p for i in bundle for p in where.get(i, [])]
            if site.kind == "tie" and covered:
                ties.union(covered + ([FROZEN] if any(i not in where for i in bundle) else []))
        if site.kind == "balance":
            pieces = [tuple(sorted({p for i in piece for p in where.get(i, ())})) for piece in site.sets]
            balance.extend((pieces[0], other) for other in pieces[1:] if pieces[0] or other)
    classes: dict[int, list[int]] = {}
    for p in range(total):
        classes.setdefault(ties.find(p), []).append(p)
    frozen = tuple(classes.pop(FROZEN, []))
    units = tuple(tuple(c) for c in sorted(classes.values()))
    return Coupling(tuple(parts), units, frozen, tuple(balance))

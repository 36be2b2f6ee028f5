"""Channel shuffle as an exact channel permutation (ShuffleNet v1/v2, many user nets).

``x.view(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w)`` sends input channel
``k·m + i`` (block ``k`` of ``g`` blocks of ``m = c / g``) to output channel ``g·i + k``.
torch-pruning has no index mapping for it (it crashes with a division by zero, and its own
answer is to ignore the layers). edgeprune recognises the three ops from the shapes seen while
tracing and the autograd chain between them, makes the split and the transpose index-identities
and gives the final reshape this permutation as its index mapping, so a group flows through the
shuffle to the channels it really reaches.

Why that is not yet enough: after pruning, the model's own code shuffles the *smaller* tensor with
the same ``g``. The result equals the original with channels removed when every block loses the
same positions ``i`` (then the kept outputs are the bundles ``{g·i + k}``, in order); other
removals mostly make the shuffled pairs slide against the next layer's weights (a weaker
interleaving condition exists, but only the tie composes simply with chunks and grouped convs,
so edgeprune uses the tie). That tie
is a constraint between channels of different groups (the blocks of a shuffle usually come from
different branches of a concatenation); :mod:`edgeprune.graph.coupling` turns it into removal
units. The permutation depends on the current channel count, which :class:`ShuffleSpec` tracks
as channels are removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch_pruning as tp

ops = tp.ops
PASS_THROUGH = ("CloneBackward0", "ContiguousBackward0", "AliasBackward0")


@dataclass
class ShuffleSpec:
    """A recognised shuffle: ``groups`` blocks, ``channels`` the current width (mutable: the
    permutation follows the pruned model)."""

    groups: int
    channels: int

    def forward(self, idx: int) -> int:
        m = self.channels // self.groups
        return self.groups * (idx % m) + idx // m

    def backward(self, idx: int) -> int:
        m = self.channels // self.groups
        return (idx % self.groups) * m + idx // self.groups

    def bundles(self) -> list[tuple[int, ...]]:
        """Output positions that must be removed together (one position of every block)."""
        g = self.groups
        return [tuple(g * i + k for k in range(g)) for i in range(self.channels // g)]


class ShuffleMapping:
    """torch-pruning index mapping through a shuffle's last reshape (``reverse``: output -> input)."""

    def __init__(self, spec: ShuffleSpec, reverse: bool) -> None:
        self.spec = spec
        self.reverse = reverse

    def __call__(self, idxs):
        move = self.spec.backward if self.reverse else self.spec.forward
        return [tp._helpers._HybridIndex(idx=move(i.idx), root_idx=i.root_idx) for i in idxs]


def _split_dims(before: tuple[int, ...], after: tuple[int, ...]) -> int | None:
    """g when ``before -> after`` is (n, c, *s) -> (n, g, c/g, *s), else None."""
    if len(after) == len(before) + 1 and after[0] == before[0] and after[3:] == before[2:] \
            and after[1] * after[2] == before[1] and after[1] > 1 and after[2] > 1:
        return after[1]
    return None


def _merged(before: tuple[int, ...], after: tuple[int, ...]) -> bool:
    """(n, a, b, *s) -> (n, a·b, *s)."""
    return len(before) == len(after) + 1 and before[0] == after[0] and before[3:] == after[2:] \
        and before[1] * before[2] == after[1]


def _swaps_dims_1_2(fn: Any) -> bool:
    name = type(fn).__name__
    if name == "TransposeBackward0":
        return {getattr(fn, "_saved_dim0", None), getattr(fn, "_saved_dim1", None)} == {1, 2}
    if name == "PermuteBackward0":
        dims = tuple(getattr(fn, "_saved_dims", ()))
        return len(dims) >= 3 and dims[0] == 0 and dims[1:3] == (2, 1) and dims[3:] == tuple(range(3, len(dims)))
    return False


def _single_input(fn: Any) -> Any:
    inputs = [f for f, _ in getattr(fn, "next_functions", ()) or () if f is not None]
    return inputs[0] if len(inputs) == 1 else None


def find_shuffles(graph: tp.DependencyGraph, shapes: dict) -> dict[Any, tuple[Any, ShuffleSpec]]:
    """``{last reshape node: (first reshape node, spec)}`` for every view -> transpose(1, 2) ->
    view that permutes the channel axis; recognised from the autograd chain, not from names."""
    by_fn = {node.grad_fn: node for node in graph.module2node.values() if getattr(node, "grad_fn", None) is not None}
    found = {}
    for node in graph.module2node.values():
        seen = shapes.get(getattr(node, "grad_fn", None))
        if node.type != ops.OPTYPE.RESHAPE or seen is None or not _merged(*seen):
            continue
        fn, swapped = _single_input(node.grad_fn), False
        while fn is not None and (type(fn).__name__ in PASS_THROUGH or _swaps_dims_1_2(fn)):
            swapped = swapped != _swaps_dims_1_2(fn)
            fn = _single_input(fn)
        first = shapes.get(fn)
        g = _split_dims(*first) if first is not None else None
        if not swapped or g is None or fn not in by_fn or seen[0][1:3] != (first[1][2], g):
            continue
        found[node] = (by_fn[fn], ShuffleSpec(g, seen[1][1]))
    return found


def install(graph: tp.DependencyGraph, shuffles: dict[Any, tuple[Any, ShuffleSpec]]) -> None:
    """Give each shuffle's last reshape the permutation as its index mapping (both directions).

    Both reshapes become index-identities for torch-pruning (type ELEMENTWISE, which its own
    mapping update leaves alone); only the edge into the last one permutes."""
    for last, (first, spec) in shuffles.items():
        first.type = ops.OPTYPE.ELEMENTWISE
        last.type = ops.OPTYPE.ELEMENTWISE
        last.edgeprune_shuffle = spec
        for source in last.inputs:
            for dep in source.dependencies:
                if dep.target is last:
                    dep.index_mapping = [ShuffleMapping(spec, reverse=False), None]
            for dep in last.dependencies:
                if dep.target is source:
                    dep.index_mapping = [ShuffleMapping(spec, reverse=True), None]


def after_removal(pruning_items) -> None:
    """Shrink each shuffle passed by a removal (items of the merged torch-pruning group)."""
    removed: dict[int, tuple[ShuffleSpec, set[int]]] = {}
    for item in pruning_items:
        spec = getattr(item.dep.target, "edgeprune_shuffle", None)
        if spec is not None:
            removed.setdefault(id(spec), (spec, set()))[1].update(int(getattr(i, "idx", i)) for i in item.idxs)
    for spec, idxs in removed.values():
        spec.channels -= len(idxs)

"""One group's channel dependencies, found by a traversal that always ends.

torch-pruning walks the dependency graph from a root's channels and re-walks a node whenever it
arrives with a different list of ``(channel, root channel)`` pairs. Where its reshape mappings
model a layout imperfectly (MaxViT's window/grid partitions inside residual loops), every trip
pairs the same channels with other roots: the walk revisited each node ~450 times in 60 s and
never finished. Here a node is walked again only when *new channels* reach it; the same channels
with the same roots add nothing (torch-pruning's merge would drop them).

Two signs that a mapping does not model the layout stop the walk and mark the group
(``CONFLICT``), which edgeprune then keeps unpruned with the reason: a channel reaching a node
paired with a second root channel, and a node that keeps receiving new channels (more than
``MAX_EXTENSIONS`` times: indices that grow on every trip round a loop). On every torchvision
classifier the groups are the same as torch-pruning's walk gives where that walk ends.
"""

from __future__ import annotations

from numbers import Number

import torch_pruning as tp
from torch import nn

_Hybrid = tp._helpers._HybridIndex
CONFLICT = "edgeprune_conflict"  # attribute set on a group whose walk met a mapping that does not add up
MAX_EXTENSIONS = 16
INCONSISTENT = ("its channels reach a layer through a reshape/permute that maps them inconsistently "
                "(a window/grid partition torch-pruning's mappings do not model)")


def _mapped(dep, idxs: list) -> list:
    for mapping in dep.index_mapping:
        if mapping is not None:
            idxs = mapping(idxs)
    return idxs


def _walk(root_dep, root_idxs: list) -> tuple[tp.dependency.Group, bool]:
    """Depth-first from the root; ``roots[(node, handler)]`` maps the channels already handed on
    to their root channels. Returns the group and whether a mapping did not add up."""
    group = tp.dependency.Group()
    group.add_dep(root_dep, root_idxs)
    roots: dict[tuple, dict[int, int]] = {(root_dep.target, root_dep.handler): {i.idx: i.root_idx for i in root_idxs}}
    extensions: dict[tuple, int] = {}
    stack = [(root_dep, root_idxs)]
    while stack:
        dep, idxs = stack.pop()
        for new_dep in dep.target.dependencies:
            if not new_dep.is_triggered_by(dep.handler):
                continue
            new_idxs = _mapped(new_dep, idxs)
            if not new_idxs:
                continue
            key = (new_dep.target, new_dep.handler)
            known = roots.setdefault(key, {})
            if any(known.get(i.idx, i.root_idx) != i.root_idx for i in new_idxs):
                return group, True
            fresh = [i for i in new_idxs if i.idx not in known]
            if not fresh:
                continue
            extensions[key] = extensions.get(key, 0) + 1
            if extensions[key] > MAX_EXTENSIONS:
                return group, True
            known.update((i.idx, i.root_idx) for i in fresh)
            group.add_dep(new_dep, new_idxs)
            stack.append((new_dep, new_idxs))
    return group, False


def pruning_group(graph: tp.DependencyGraph, module: nn.Module, pruning_fn, idxs) -> tp.dependency.Group:
    """What torch-pruning's ``get_pruning_group`` returns (merged items with ``root_idxs``), from a
    walk that visits a node again only for channels that have not reached it yet."""
    if module not in graph.module2node:
        raise ValueError(f"module {module} is not in the dependency graph")
    if isinstance(module, nn.Conv2d) and module.groups == module.out_channels > 1:
        pruning_fn = tp.pruner.function.prune_depthwise_conv_out_channels
    plain = [idxs] if isinstance(idxs, Number) else list(idxs)
    tp.dependency.index_mapping.update_index_mapping(graph)  # concat/split sizes change as groups go
    root = graph.module2node[module]
    walked, conflict = _walk(tp.dependency.Dependency(pruning_fn, pruning_fn, source=root, target=root),
                             [_Hybrid(idx=i, root_idx=i) for i in plain])
    merged = tp.dependency.Group()
    ignored = graph.ignored_params
    for dep, dep_idxs in walked.items:
        if isinstance(dep.target.module, nn.Parameter) and any(dep.target.module is p for p in ignored):
            continue
        merged.add_and_merge(dep, dep_idxs)
    merged._DG = graph
    setattr(merged, CONFLICT, INCONSISTENT if conflict else None)
    for k, (dep, dep_idxs) in enumerate(merged.items):
        item = tp._helpers.GroupItem(dep, [i.idx for i in dep_idxs])
        item.root_idxs = [i.root_idx for i in dep_idxs]
        merged[k] = item
    return merged

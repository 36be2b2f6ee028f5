"""Rules edgeprune adds on top of torch-pruning's dependency graph.

torch-pruning follows convs, BNs, residual adds, concatenation/split and flatten exactly. Where
it does not know the channel semantics it *guesses* (an unknown reshape is treated as an
identity, an unwrapped ``nn.Parameter`` is pruned on its last non-singleton dimension) or
crashes (channel shuffle: ZeroDivisionError in its reshape mapping). These rules replace the
guesses by decisions that are either exact or conservative-and-logged:

- **Channel shuffles** (``view(n, g, c/g, h, w) -> transpose(1, 2) -> view(n, c, h, w)``) are an
  exact permutation with tied channels: :mod:`edgeprune.graph.shuffle`.
- **Other reshapes that split or merge the channel axis** (attention's head split
  ``(n, l, 3c) -> (n, l, 3, h, d)``) are recognised from the shapes seen in the tracing pass. torch-pruning gets no index mapping for them (so it cannot crash on them),
  and every group whose channels pass through one is kept unpruned, with the reason logged.
  Supported reshapes (identity, squeeze/unsqueeze, flattening the trailing dims) keep
  torch-pruning's own mapping.
- **Attention blocks** (``nn.MultiheadAttention``, torchvision's shifted-window and MaxViT
  attention, any module whose class name ends in ``Attention`` or ``AttentionV2`` with ``num_heads``/``n_heads``/``heads``/``head_dim``) are opaque: the embedding width
  they read and write is kept (head pruning would change ``head_dim`` inside code edgeprune does
  not own), the MLP widths around them are pruned normally.
- **Concatenations/splits torch-pruning could not map** (on a non-channel axis, or with unknown
  sizes) keep the groups through them unpruned.
- **Unwrapped parameters** (layer_scale, class tokens, position embeddings) are declared with an
  explicit channel axis when they have exactly one non-singleton dimension; a parameter with
  several candidate axes keeps every group that touches it unpruned.
- **Grouped convolutions**: a group through the input or output of a conv with ``groups = g > 1``
  (not depthwise) may only remove the same positions in each of the g blocks; the group records
  ``blocks = g`` and the planner keeps counts and patterns consistent (see ``search/planner.py``).
  A grouped conv or chunk that reads only part of a group ties that group to the others it reads:
  :mod:`edgeprune.graph.coupling`.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

import torch
import torch_pruning as tp
from torch import nn
from torch.overrides import TorchFunctionMode

ops = tp.ops


def attention_types(model: nn.Module) -> tuple[type, ...]:
    """Classes in ``model`` treated as opaque attention blocks."""
    found: set[type] = set()
    for module in model.modules():
        cls = type(module)
        if isinstance(module, nn.MultiheadAttention) or (re.search(r"Attention(V\d+)?$", cls.__name__) and any(
                hasattr(module, a) for a in ("num_heads", "n_heads", "heads", "head_dim"))):
            found.add(cls)
    return tuple(sorted(found, key=lambda c: c.__name__))


class FrozenPruner(tp.pruner.function.BasePruningFunc):
    """Customised pruner for opaque modules: couples input and output, refuses to prune."""

    TARGET_MODULES = None

    def prune_out_channels(self, layer: nn.Module, idxs):  # noqa: D401 - never reached: groups excluded
        raise RuntimeError(f"{type(layer).__name__} is kept unpruned by edgeprune")

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module):
        return getattr(layer, "embed_dim", None)

    def get_in_channels(self, layer: nn.Module):
        return getattr(layer, "embed_dim", None)


def _owned_by_prunable(model: nn.Module, extra_types: tuple[type, ...]) -> set[int]:
    owned: set[int] = set()
    for module in model.modules():
        if isinstance(module, extra_types):
            owned.update(id(p) for p in module.parameters())
            continue
        kind = ops.module2type(module)
        if kind in tp.pruner.function.PrunerBox and kind != ops.OPTYPE.ELEMENTWISE:
            owned.update(id(p) for p in module.parameters(recurse=False))
    return owned


def unwrapped_parameters(model: nn.Module, opaque: tuple[type, ...]) -> tuple[list, dict[str, str]]:
    """``([(param, channel dim)], {param name: why ambiguous})`` for parameters outside any
    prunable module (layer_scale, tokens, embeddings)."""
    owned = _owned_by_prunable(model, opaque)
    declared, ambiguous = [], {}
    for name, p in model.named_parameters():
        if id(p) in owned:
            continue
        dims = [i for i, s in enumerate(p.shape) if s > 1]
        if len(dims) == 1:
            declared.append((p, dims[0]))
        else:
            dim = dims[-1] if dims else 0
            declared.append((p, dim))
            ambiguous[name] = f"parameter {name} {tuple(p.shape)} has {len(dims)} candidate channel axes"
    return declared, ambiguous


class ShapeRecorder(TorchFunctionMode):
    """Records (input shape, output shape) of every view/reshape/flatten by its output's grad_fn."""

    NAMES = ("view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as")

    def __init__(self) -> None:
        super().__init__()
        self.shapes: dict[Any, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        self.cats: dict[Any, tuple[int, list[int], int]] = {}  # grad_fn: (dim, sizes, ndim)
        self._alive: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if name in ("cat", "concat", "concatenate") and args and isinstance(out, torch.Tensor) \
                and out.grad_fn is not None:
            dim = (kwargs or {}).get("dim", args[1] if len(args) > 1 else 0)
            parts = [t for t in args[0] if isinstance(t, torch.Tensor)]
            if parts and isinstance(dim, int):
                self.cats[out.grad_fn] = (dim % out.dim(), [t.shape[dim] for t in parts], out.dim())
                self._alive.append(out)
        if name in self.NAMES and args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor) \
                and out.grad_fn is not None:
            self.shapes[out.grad_fn] = (tuple(args[0].shape), tuple(out.shape))
            self._alive.append(out)
        return out


def _stripped(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(s for s in shape if s != 1)


def reshape_is_supported(before: tuple[int, ...], after: tuple[int, ...]) -> bool:
    """True for reshapes torch-pruning maps correctly: identity up to singleton dims, or merging
    a trailing run of dims into one (flatten of spatial dims / of channel and spatial dims)."""
    a, b = _stripped(before), _stripped(after)
    if a == b:
        return True
    if len(b) < len(a) and a[:len(b) - 1] == b[:-1] and math.prod(a[len(b) - 1:]) == b[-1]:
        return True
    return False


def flag_nodes(graph: tp.DependencyGraph, shapes: dict, opaque: tuple[type, ...]) -> dict[Any, str]:
    """``{node: reason}`` for nodes no group may pass through; neutralises their index mapping."""
    flagged: dict[Any, str] = {}
    for module, node in graph.module2node.items():
        if node.type == ops.OPTYPE.RESHAPE:
            seen = shapes.get(node.grad_fn)  # None: a reshape inside an op (linear on 3-D+ input)
            if seen is not None and not reshape_is_supported(*seen):
                flagged[node] = f"a reshape {seen[0]} -> {seen[1]} splits or merges the channel axis"
                node.type = ops.OPTYPE.ELEMENTWISE  # no index mapping is attempted for it
        elif opaque and isinstance(module, opaque):
            flagged[node] = f"attention block {graph._module2name.get(module, type(module).__name__)} " \
                            f"({type(module).__name__}) keeps its embedding width"
    return flagged


def flag_unmapped(graph: tp.DependencyGraph) -> dict[Any, str]:
    """Concats/splits torch-pruning left without offsets (non-channel axis or unknown sizes), or
    whose offsets do not match their inputs/outputs; their index mappings are removed so that
    grouping cannot crash on them (the groups through them are kept whole)."""
    flagged = {}
    for node in graph.module2node.values():
        if node.type not in (ops.OPTYPE.CONCAT, ops.OPTYPE.SPLIT, ops.OPTYPE.UNBIND):
            continue
        offsets = getattr(node.module, "offsets", None)
        ends = len(node.inputs if node.type == ops.OPTYPE.CONCAT else node.outputs) + 1
        if offsets is None or not node.enable_index_mapping or len(offsets) != ends:
            flagged[node] = "a concatenation/split on an axis torch-pruning cannot map"
            node.enable_index_mapping = False
            for dep in node.dependencies:
                dep.index_mapping = [None] * len(dep.index_mapping)
            for other in node.inputs + node.outputs:
                for dep in other.dependencies:
                    if dep.target == node:
                        dep.index_mapping = [None] * len(dep.index_mapping)
    return flagged


def grouped_conv_blocks(module: nn.Module) -> int:
    """g for a grouped, non-depthwise conv (identical patterns needed in its g blocks), else 1."""
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1 \
            and ops.module2type(module) != ops.OPTYPE.DEPTHWISE_CONV:
        return module.groups
    return 1


def recording_forward(recorder: ShapeRecorder) -> Callable:
    def forward(model: nn.Module, example):
        with recorder:
            if isinstance(example, dict):
                return model(**example)
            if isinstance(example, (tuple, list)):
                return model(*example)
            return model(example)
    return forward


def _output_index(split_node, consumer) -> set[int]:
    """Which outputs of ``split_node``'s autograd function the ``consumer`` node reads."""
    fn = getattr(consumer, "grad_fn", None)
    found = set()
    for nxt, index in getattr(fn, "next_functions", ()) or ():
        if nxt is split_node.grad_fn:
            found.add(index)
    return found


def concat_sizes_from_trace(graph: tp.DependencyGraph, cats: dict) -> None:
    """Give torch-pruning the sizes of every concatenation on a feature axis (dim 1, or the last
    dim of a channel-last tensor) as seen while tracing. It otherwise infers them by walking the
    graph, gives up at a recursion limit on deep nets, and then crashes adding ``None`` (swin_s,
    swin_b: "unsupported operand type(s) for +: 'int' and 'NoneType'")."""
    for node in graph.module2node.values():
        seen = cats.get(getattr(node, "grad_fn", None))
        if node.type == ops.OPTYPE.CONCAT and node.module.concat_sizes is None and seen is not None \
                and seen[0] in (1, seen[2] - 1) and len(seen[1]) == len(node.inputs):
            node.module.concat_sizes = list(seen[1])


def fix_splits_and_concats(graph: tp.DependencyGraph, cats: dict) -> dict[Any, str]:
    """Correct what torch-pruning 1.6 gets wrong on current PyTorch, then redo its index mapping.

    - ``chunk``/``split(int)`` (SplitBackward0): torch-pruning infers the sizes from downstream
      shapes (wrong when an output feeds a concat) and assumes its outputs were discovered in
      chunk order. Sizes come from the saved split size, the order from the autograd edges. The
      chunk count is returned as a block constraint (``{node: chunks}`` in ``graph.split_blocks``):
      ``chunk`` re-splits the pruned tensor evenly, so each chunk must lose as many channels.
    - ``split`` with explicit sizes (SplitWithSizesBackward0) has the sizes written in the
      model's code: its input channels cannot change, the groups through it are kept.
    - concatenations whose input sizes torch-pruning could not infer get them from the shapes
      seen while tracing (``torch.cat`` arguments are recorded); where torch-pruning then still
      refuses to map them (it checks the size against the first consumer it finds downstream,
      wrong behind a shuffle or a chunk), :class:`LiveConcatMapping` maps them.
    """
    flagged: dict[Any, str] = {}
    graph.split_blocks = {}
    for node in graph.module2node.values():
        fn = node.grad_fn
        if node.type == ops.OPTYPE.SPLIT:
            dim = getattr(fn, "_saved_dim", 1)
            sizes_in = getattr(fn, "_saved_self_sym_sizes", None)
            if dim != 1 and not (sizes_in is not None and dim - len(sizes_in) == -len(sizes_in) + 1):
                continue
            if hasattr(fn, "_saved_split_sizes"):
                flagged[node] = "torch.split with sizes fixed in the model's code"
                continue
            size = getattr(fn, "_saved_split_size", None)
            if size is None or sizes_in is None:
                flagged[node] = "a split of unknown sizes"
                continue
            total = int(sizes_in[1])
            sizes = [int(size)] * (total // int(size)) + ([total % int(size)] if total % int(size) else [])
            order = []
            for out in node.outputs:
                index = _output_index(node, out)
                if len(index) != 1:
                    break
                order.append((index.pop(), out))
            if len(order) != len(node.outputs) or sorted(i for i, _ in order) != list(range(len(sizes))):
                flagged[node] = "a chunk whose outputs are not each read once"
                continue
            node.outputs = [out for _, out in sorted(order, key=lambda p: p[0])]
            node.module.split_sizes = sizes
            node.module.offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
            if len(set(sizes)) == 1:
                graph.split_blocks[node] = len(sizes)
            else:
                flagged[node] = "an uneven chunk"
        elif node.type == ops.OPTYPE.CONCAT and getattr(node.module, "offsets", None) is None:
            seen = cats.get(fn)
            if seen is not None and seen[0] == 1 and len(seen[1]) == len(node.inputs):
                node.module.concat_sizes = list(seen[1])
    tp.dependency.index_mapping.update_index_mapping(graph)
    for node in graph.module2node.values():
        if node.type == ops.OPTYPE.CONCAT and node.module.offsets is None and node.module.concat_sizes \
                and None not in node.module.concat_sizes and node.enable_index_mapping:
            LiveConcatMapping.install(node)
    return flagged


class LiveConcatMapping:
    """Index mapping between a concatenation and its ``k``-th input, from the concat's *current*
    sizes (torch-pruning's concat pruner updates ``concat_sizes`` as channels go, so the mapping
    stays right while one graph prunes several groups)."""

    def __init__(self, module, k: int, reverse: bool) -> None:
        self.module, self.k, self.reverse = module, k, reverse

    def __call__(self, idxs):
        sizes = self.module.concat_sizes
        start = sum(sizes[:self.k])
        end = start + sizes[self.k]
        hybrid = tp._helpers._HybridIndex
        if self.reverse:
            return [hybrid(idx=i.idx - start, root_idx=i.root_idx) for i in idxs if start <= i.idx < end]
        return [hybrid(idx=i.idx + start, root_idx=i.root_idx) for i in idxs]

    @classmethod
    def install(cls, node) -> None:
        sizes = node.module.concat_sizes
        node.module.offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
        done: list = []
        for k, source in enumerate(node.inputs):
            for deps, target, reverse in ((node.dependencies, source, True), (source.dependencies, node, False)):
                dep = next((d for d in deps if d.target is target and not any(d is x for x in done)), None)
                if dep is not None:
                    dep.index_mapping[1] = cls(node.module, k, reverse)
                    done.append(dep)

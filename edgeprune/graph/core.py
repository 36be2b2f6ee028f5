"""Dependency groups: which channels must be removed together, keyed by module name.

Built on torch-pruning's DependencyGraph, which follows residual adds, concatenation and
depthwise convs; :mod:`edgeprune.graph.rules` adds what it guesses at or crashes on. A group is
named by its root module (the first conv/linear whose output channels it covers); names survive
pruning, so a plan made on one copy replays on another.

Slices: a member need not span the group. Through a concatenation each branch covers part of the
group (two 48-channel branches concatenated to 96 and added to a 96-channel residual), through a
flatten a Linear reads several features per channel. ``Member.channels[k]`` (an index along the
member's own axis) belongs to group channel ``Member.positions[k]``; criteria map per-channel
statistics into the group with :func:`edgeprune.criteria.common.to_group`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch_pruning as tp
from torch import nn

from edgeprune.errors import ConfigError, TraceError
from edgeprune.graph import rules
from edgeprune.graph.guard import GraphBudget, check_nodes, run_guarded

log = logging.getLogger("edgeprune.graph")


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

    def out_members(self) -> tuple[str, ...]:
        return tuple(m.module for m in self.members if m.axis == "out")

    def member(self, module: str, axis: str = "out") -> Member:
        for m in self.members:
            if m.module == module and m.axis == axis:
                return m
        raise KeyError(f"{module} is not an {axis}-member of {self.name}")


def output_layer_name(model: nn.Module) -> str | None:
    """The last Linear (else last Conv2d) in module order: the classifier, never pruned."""
    last_conv = None
    last_linear = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last_linear = name
        elif isinstance(module, nn.Conv2d):
            last_conv = name
    return last_linear or last_conv


class _Graph(tp.DependencyGraph):
    """torch-pruning's graph with edgeprune's rules applied right after tracing."""

    def __init__(self, opaque: tuple[type, ...], ambiguous: dict[int, str]) -> None:
        super().__init__()
        self.opaque = opaque
        self.ambiguous_params = ambiguous
        self.recorder = rules.ShapeRecorder()
        self.flagged: dict = {}

    def _trace(self, model, example_inputs, forward_fn, output_transform):
        module2node = super()._trace(model, example_inputs, rules.recording_forward(self.recorder), output_transform)
        self.module2node = module2node
        self.flagged = rules.flag_nodes(self, self.recorder.shapes, self.opaque)
        for param, node in module2node.items():
            if isinstance(param, nn.Parameter) and id(param) in self.ambiguous_params:
                self.flagged[node] = self.ambiguous_params[id(param)]
        return module2node


class GroupedModel:
    """A model with its dependency graph; the only place that talks to torch-pruning's graph.

    ``groups``: the prunable groups; ``excluded``: ``{root name: reason}`` for groups kept whole
    by a rule (logged once per reason on the ``edgeprune.graph`` logger).
    """

    def __init__(self, model: nn.Module, example: torch.Tensor, ignored: tuple[str, ...] | None = None,
                 budget: GraphBudget | None = None) -> None:
        self.model = model
        self.budget = budget or GraphBudget()
        modules = dict(model.named_modules())
        if ignored is None:
            out_name = output_layer_name(model)
            ignored = (out_name,) if out_name else ()
        self.ignored = ignored
        self._names = {m: n for n, m in modules.items()}
        self.excluded: dict[str, str] = {}
        opaque = rules.attention_types(model)
        unwrapped, ambiguous = rules.unwrapped_parameters(model, opaque)
        params = dict(model.named_parameters())
        ambiguous_ids = {id(params[n]): why for n, why in ambiguous.items()}
        self.graph = _Graph(opaque, ambiguous_ids)
        what = f"channel grouping of {type(model).__name__}"

        def build() -> None:
            self.graph.build_dependency(model, example_inputs=example, unwrapped_parameters=unwrapped,
                                        customized_pruners={t: rules.FrozenPruner() for t in opaque},
                                        verbose=False)
            check_nodes(len(self.graph.module2node), self.budget, what)
            self.graph.flagged.update(rules.fix_splits_and_concats(self.graph, self.graph.recorder.cats))
            self.graph.flagged.update(rules.flag_unmapped(self.graph))
            self.groups = self._collect([modules[n] for n in ignored if n in modules])

        was_training = model.training
        try:
            with torch.enable_grad():
                run_guarded(build, self.budget, what)
        except TraceError:
            raise
        except Exception as exc:  # noqa: BLE001 - tracing raises arbitrary errors
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TraceError(f"cannot trace the model's channel dependencies: {text}") from None
        finally:
            model.train(was_training)
        self._log_exclusions()
        if not self.groups:
            if self.excluded:
                raise TraceError(f"no prunable channels: every group is kept ({next(iter(self.excluded.values()))})")
            raise TraceError("the model has no prunable Conv2d/Linear channels (a torch.export archive is "
                             "a flat graph: pass the module:factory that builds it plus --weights)")

    # -- grouping ---------------------------------------------------------------------------

    def _collect(self, ignored: list[nn.Module]) -> dict[str, ChannelGroup]:
        groups: dict[str, ChannelGroup] = {}
        flagged = self.graph.flagged
        for group in self.graph.get_all_groups(ignored_layers=ignored, root_module_types=(nn.Conv2d, nn.Linear)):
            root = group[0].dep.target.module
            name = self._names[root]
            channels = len(group[0].idxs)
            reason = next((flagged[item.dep.target] for item in group if item.dep.target in flagged), None)
            if reason is None:
                reason = self._member_problem(group)
            if reason is not None:
                self.excluded[name] = reason
                continue
            members: dict[tuple[str, str], Member] = {}
            blocks = 1
            for item in group:  # a chunk re-splits evenly: each chunk loses as many channels
                chunks = self.graph.split_blocks.get(item.dep.target)
                if chunks and reason is None:
                    if list(item.idxs) != list(range(channels)) or list(item.root_idxs) != list(range(channels)):
                        reason = "a chunk that reads only part of the group"
                    else:
                        blocks = blocks * chunks // math.gcd(blocks, chunks)
            if reason is not None:
                self.excluded[name] = reason
                continue
            for item in group:
                dep, module = item.dep, item.dep.target.module
                if module not in self._names or not any(True for _ in module.parameters(recurse=False)):
                    continue
                axis = "out" if self.graph.is_out_channel_pruning_fn(dep.handler) else "in"
                local = tuple(int(i) for i in item.idxs)
                positions = tuple(int(i) for i in item.root_idxs)
                width = self._width(module, axis)
                full = local == positions == tuple(range(channels)) and width in (None, channels)
                key = (self._names[module], axis)
                if key in members:  # the same module reached twice: merge the slices
                    old = members[key]
                    oc, op = old.index_map(channels)
                    local = tuple(oc.tolist()) + local
                    positions = tuple(op.tolist()) + positions
                    full = False
                members[key] = Member(key[0], axis, () if full else local, () if full else positions)
                g = rules.grouped_conv_blocks(module)
                if g > 1:
                    if not full:
                        reason = f"grouped conv {key[0]} reads only part of the group"
                        break
                    blocks = blocks * g // math.gcd(blocks, g)
            if reason is None and channels % blocks:
                reason = f"{channels} channels do not split into {blocks} conv groups"
            if reason is not None:
                self.excluded[name] = reason
                continue
            groups[name] = ChannelGroup(name, channels, tuple(members.values()), blocks)
        return groups

    @staticmethod
    def _width(module: nn.Module, axis: str) -> int | None:
        if isinstance(module, nn.modules.conv._ConvNd):
            return module.out_channels if axis == "out" else module.in_channels
        if isinstance(module, nn.Linear):
            return module.out_features if axis == "out" else module.in_features
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return module.num_features
        if isinstance(module, nn.LayerNorm):
            return module.normalized_shape[-1]
        return None

    @staticmethod
    def _member_problem(group) -> str | None:
        for item in group:
            if item.root_idxs is None or any(i is None for i in item.root_idxs):
                return "an index mapping without root channels (grouped-query attention)"
        return None

    def _log_exclusions(self) -> None:
        by_reason: dict[str, list[str]] = {}
        for name, reason in self.excluded.items():
            by_reason.setdefault(reason, []).append(name)
        for reason, names in by_reason.items():
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            log.info("kept %d group(s) unpruned (%s): %s", len(names), shown, reason)

    # -- access and removal -------------------------------------------------------------------

    def module(self, name: str) -> nn.Module:
        return self.model.get_submodule(name)

    def blocks(self) -> dict[str, int]:
        """``{group: blocks}`` for the planner (1 for unconstrained groups)."""
        return {name: g.blocks for name, g in self.groups.items()}

    def remove(self, group_name: str, positions: list[int]) -> None:
        """Physically remove channels at ``positions`` (indices in the model's current layout)."""
        if not positions:
            return
        group = self.groups[group_name]
        if group.blocks > 1:
            check_block_pattern(group_name, group.channels, group.blocks, positions)
        root = self.module(group_name)
        handler = tp.prune_linear_out_channels if isinstance(root, nn.Linear) else tp.prune_conv_out_channels
        pruning = self.graph.get_pruning_group(root, handler, idxs=sorted(positions))
        if not self.graph.check_pruning_group(pruning):
            raise TraceError(f"removing {len(positions)} channels from {group_name} would empty a layer")
        run_guarded(pruning.prune, self.budget, f"pruning {group_name}")


def check_block_pattern(name: str, channels: int, blocks: int, positions: list[int]) -> None:
    """Grouped convs: the removed positions must be the same in each of the equal blocks."""
    size = channels // blocks
    pattern = {p % size for p in positions}
    if len(positions) != len(pattern) * blocks or any(p % size not in pattern for p in positions):
        raise ConfigError(f"{name} feeds a conv with {blocks} groups: remove the same positions in each "
                          f"block of {size} (plan it with next_plan(..., blocks=grouped.blocks()))")


def count_macs(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(MACs, parameters) by tracing one forward pass; the planner's size figure, not a latency."""
    macs, params = tp.utils.count_ops_and_params(model, example)
    return int(macs), int(params)

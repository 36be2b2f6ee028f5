"""Dependency groups: which channels must be removed together, keyed by module name.

Built on torch-pruning's DependencyGraph, which follows residual adds, concatenation and
depthwise convs; :mod:`edgeprune.graph.rules` adds what it guesses at or crashes on. A group is
named by its root module (the first conv/linear whose output channels it covers); names survive
pruning, so a plan made on one copy replays on another.

Where the pieces live: the group and member types in :mod:`edgeprune.graph.groups` (members may
cover slices of a group), the rules replacing torch-pruning's guesses in :mod:`edgeprune.graph.rules`,
channel shuffles as exact permutations in :mod:`edgeprune.graph.shuffle`, groups tied to each other
by a shuffle or chunk (coupled groups) in :mod:`edgeprune.graph.coupling` and
:mod:`edgeprune.graph.collect`, choosing their removable units in :mod:`edgeprune.graph.units`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from edgeprune.errors import ConfigError, TraceError
from edgeprune.graph import collect, rules, shuffle, traverse
from edgeprune.graph.coupling import Coupling
from edgeprune.graph.groups import ChannelGroup, Member
from edgeprune.graph.guard import GraphBudget, check_nodes, run_guarded
from edgeprune.graph.units import removable

log = logging.getLogger("edgeprune.graph")


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
        self.shuffles: dict = {}

    def get_pruning_group(self, module, pruning_fn, idxs):
        """torch-pruning's group, from a walk that always ends (:mod:`edgeprune.graph.traverse`)."""
        return traverse.pruning_group(self, module, pruning_fn, idxs)

    def _trace(self, model, example_inputs, forward_fn, output_transform):
        module2node = super()._trace(model, example_inputs, rules.recording_forward(self.recorder), output_transform)
        self.module2node = module2node
        self.shuffles = shuffle.find_shuffles(self, self.recorder.shapes)
        for last, (first, _) in self.shuffles.items():  # exact permutations, not channel-axis reshapes
            first.type = last.type = tp.ops.OPTYPE.ELEMENTWISE
        self.flagged = rules.flag_nodes(self, self.recorder.shapes, self.opaque)
        rules.concat_sizes_from_trace(self, self.recorder.cats)
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
            shuffle.install(self.graph, self.graph.shuffles)
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
        """Groups in discovery order: plain ones as torch-pruning found them (with ``blocks``),
        those tied together by a shuffle/chunk/grouped conv merged into coupled groups."""
        found = [self._analyse(g) for g in
                 self.graph.get_all_groups(ignored_layers=ignored, root_module_types=(nn.Conv2d, nn.Linear))]
        coupled = [f for f in found if f.reason is None and not f.plain]
        components = collect.components(coupled)
        groups: dict[str, ChannelGroup] = {}
        for f in found:
            if f.reason is not None:
                self.excluded[f.name] = f.reason
            elif f.plain:
                groups[f.name] = ChannelGroup(f.name, f.channels, tuple(f.members.values()), f.blocks)
            elif f is components[id(f)][0]:
                group = collect.merge(components[id(f)])
                if group.coupling is not None and not removable(group.coupling):
                    for part in components[id(f)]:
                        self.excluded[part.name] = ("no exact removal: a channel shuffle/chunk/grouped conv ties every "
                                                    "channel to a whole layer or to an unbalanced chunk")
                else:
                    groups[group.name] = group
        return groups

    def _analyse(self, group) -> collect.Found:
        """One torch-pruning group: its members (with slices), the constraint sites it reaches,
        and whether its own ``blocks`` rule covers them all (``plain``)."""
        name = self._names[group[0].dep.target.module]
        channels = len(group[0].idxs)
        flagged = self.graph.flagged
        reason = next((flagged[item.dep.target] for item in group if item.dep.target in flagged), None)
        found = collect.Found(name, channels, reason or getattr(group, traverse.CONFLICT, None)
                              or self._member_problem(group))
        if found.reason is not None:
            return found
        for item in group:
            found.add_site(item, self.graph, channels)
            dep, module = item.dep, item.dep.target.module
            if module not in self._names or not any(True for _ in module.parameters(recurse=False)):
                continue
            axis = "out" if self.graph.is_out_channel_pruning_fn(dep.handler) else "in"
            local = tuple(int(i) for i in item.idxs)
            positions = tuple(int(i) for i in item.root_idxs)
            width = self._width(module, axis)
            full = local == positions == tuple(range(channels)) and width in (None, channels)
            key = (self._names[module], axis)
            if key in found.members:  # the same module reached twice: merge the slices
                oc, op = found.members[key].index_map(channels)
                local, positions, full = tuple(oc.tolist()) + local, tuple(op.tolist()) + positions, False
            found.members[key] = Member(key[0], axis, () if full else local, () if full else positions)
            found.add_conv(item, module, axis, key[0])
        if found.plain and channels % found.blocks:
            found.reason = f"{channels} channels do not split into {found.blocks} conv groups"
        return found

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

    def couplings(self) -> dict[str, Coupling]:
        """``{group: coupling}`` for the coupled groups (see :mod:`edgeprune.graph.coupling`)."""
        return {name: g.coupling for name, g in self.groups.items() if g.coupling is not None}

    def remove(self, group_name: str, positions: list[int]) -> None:
        """Physically remove channels at ``positions`` (indices in the model's current layout).

        A coupled group removes all its parts in one torch-pruning operation: every module is
        cut once, with indices of one consistent layout (a shuffle between two parts would see a
        width no longer divisible by its groups if the parts went one after the other)."""
        if not positions:
            return
        group = self.groups[group_name]
        if group.blocks > 1:
            check_block_pattern(group_name, group.channels, group.blocks, positions)
        parts = [(group_name, sorted(positions))]
        if group.coupling is not None:
            group.coupling.check(group_name, positions)
            parts = group.coupling.split(positions)
        merged: dict[tuple[int, Any], tuple[Any, set[int]]] = {}
        for name, idxs in parts:
            root = self.module(name)
            handler = tp.prune_linear_out_channels if isinstance(root, nn.Linear) else tp.prune_conv_out_channels
            for item in self.graph.get_pruning_group(root, handler, idxs=idxs):
                entry = merged.setdefault((id(item.dep.target), item.dep.handler), (item.dep, set()))
                entry[1].update(int(i) for i in item.idxs)
        pruning = tp.dependency.group.Group()
        pruning._DG = self.graph
        for dep, idxs in merged.values():
            pruning.add_dep(dep, sorted(idxs))
        if not self.graph.check_pruning_group(pruning):
            raise TraceError(f"removing {len(positions)} channels from {group_name} would empty a layer")
        run_guarded(lambda: pruning.prune(record_history=False), self.budget, f"pruning {group_name}")
        shuffle.after_removal(pruning)


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

"""Dependency groups: which channels must be removed together, keyed by module name.

Built on torch-pruning's DependencyGraph, which follows residual adds, concatenation and
depthwise convs. A group is named by its root module (the first conv/linear whose output
channels it covers); names survive pruning, so a plan made on one copy replays on another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch_pruning as tp
from torch import nn

from edgeprune.errors import TraceError


@dataclass(frozen=True)
class Member:
    """A parameterised module touched by a group, on its output or input channel axis."""

    module: str
    axis: Literal["out", "in"]


@dataclass(frozen=True)
class ChannelGroup:
    name: str
    channels: int
    members: tuple[Member, ...]

    def out_members(self) -> tuple[str, ...]:
        return tuple(m.module for m in self.members if m.axis == "out")


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


class GroupedModel:
    """A model with its dependency graph; the only place that talks to torch-pruning's graph."""

    def __init__(self, model: nn.Module, example: torch.Tensor, ignored: tuple[str, ...] | None = None) -> None:
        self.model = model
        modules = dict(model.named_modules())
        if ignored is None:
            out_name = output_layer_name(model)
            ignored = (out_name,) if out_name else ()
        self.ignored = ignored
        try:
            self.graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
        except Exception as exc:  # noqa: BLE001 - tracing raises arbitrary errors
            raise TraceError(f"cannot trace the model's channel dependencies: {str(exc).splitlines()[0]}") from None
        self._names = {m: n for n, m in modules.items()}
        self.groups = self._collect([modules[n] for n in ignored if n in modules])
        if not self.groups:
            raise TraceError("the model has no prunable Conv2d/Linear channels (a torch.export archive is "
                             "a flat graph: pass the module:factory that builds it plus --weights)")

    def _collect(self, ignored: list[nn.Module]) -> dict[str, ChannelGroup]:
        groups: dict[str, ChannelGroup] = {}
        for group in self.graph.get_all_groups(ignored_layers=ignored, root_module_types=(nn.Conv2d, nn.Linear)):
            root = group[0].dep.target.module
            name = self._names[root]
            members = []
            for dep, _ in group:
                module = dep.target.module
                if module in self._names and any(True for _ in module.parameters(recurse=False)):
                    axis = "out" if self.graph.is_out_channel_pruning_fn(dep.handler) else "in"
                    members.append(Member(self._names[module], axis))
            groups[name] = ChannelGroup(name, len(group[0].idxs), tuple(dict.fromkeys(members)))
        return groups

    def module(self, name: str) -> nn.Module:
        return self.model.get_submodule(name)

    def remove(self, group_name: str, positions: list[int]) -> None:
        """Physically remove channels at ``positions`` (indices in the model's current layout)."""
        if not positions:
            return
        root = self.module(group_name)
        handler = tp.prune_linear_out_channels if isinstance(root, nn.Linear) else tp.prune_conv_out_channels
        group = self.graph.get_pruning_group(root, handler, idxs=sorted(positions))
        if not self.graph.check_pruning_group(group):
            raise TraceError(f"removing {len(positions)} channels from {group_name} would empty a layer")
        group.prune()


def count_macs(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(MACs, parameters) by tracing one forward pass; the planner's size figure, not a latency."""
    macs, params = tp.utils.count_ops_and_params(model, example)
    return int(macs), int(params)

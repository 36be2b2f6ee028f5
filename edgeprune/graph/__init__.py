"""Dependency groups (torch-pruning's DependencyGraph plus edgeprune's rules), keyed by module name."""

from edgeprune.graph.core import ChannelGroup, GroupedModel, Member, check_block_pattern, count_macs, output_layer_name
from edgeprune.graph.guard import GraphBudget

__all__ = ["ChannelGroup", "GraphBudget", "GroupedModel", "Member", "check_block_pattern", "count_macs",
           "output_layer_name"]

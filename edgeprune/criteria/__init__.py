"""Channel-importance criteria, selectable by name (``@criteria.register("taylor")``)."""

from __future__ import annotations

from edgeprune.criteria.base import Criterion, ScoreContext
from edgeprune.registry import Registry

criteria: Registry = Registry("criterion")

BUILTIN_MODULES = (
    "edgeprune.criteria.l1",
    "edgeprune.criteria.taylor",
    "edgeprune.criteria.taylor_act",
    "edgeprune.criteria.taylor_so",
    "edgeprune.criteria.thinet",
    "edgeprune.criteria.nisp",
    "edgeprune.criteria.sosp",
    "edgeprune.criteria.slimming",
    "edgeprune.criteria.bn_datafree",
    "edgeprune.criteria.chip",
    "edgeprune.criteria.grad_redundancy",
    "edgeprune.criteria.random_baseline",
)


def get_criterion(name: str) -> Criterion:
    """An instance of the criterion registered under ``name``, with its paper's defaults."""
    load_builtin()
    return criteria.get(name)()


def load_builtin() -> None:
    import importlib

    for module in BUILTIN_MODULES:
        importlib.import_module(module)


__all__ = ["Criterion", "ScoreContext", "criteria", "get_criterion", "load_builtin"]

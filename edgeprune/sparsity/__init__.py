"""Weight-level (unstructured and semi-structured) sparsity methods, selectable by name.

Channel pruning (``edgeprune.criteria``) removes whole filters and makes the compiled model
smaller; the methods here zero individual weights. A dense compiler runs a zeroed weight exactly
as fast as any other weight, so these methods buy model-size reduction (after compression) and
a starting point for structured N:M / block kernels (:func:`~edgeprune.sparsity.structured.
to_structured`), not latency: :mod:`edgeprune.sparsity.measure` measures that honestly.

Each registry entry is a :class:`SparsityMethod`: the paper, when the method acts, and its entry
point, which is a mask function for one-shot/iterative methods and a ``TrainCallback`` class for
training-time methods. Built-in methods register on :func:`load_builtin` (lazy, like criteria),
so ``import edgeprune.sparsity`` stays light.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Literal

from edgeprune.registry import Registry
from edgeprune.sparsity.masks import MaskedTraining, Masks, prunable_weights


@dataclass(frozen=True)
class SparsityMethod:
    """What a registered method is: where it comes from, when it acts, and what to call.

    ``kind`` is ``"one-shot"`` (a function returning :class:`Masks`), ``"iterative"`` (prune
    → retrain rounds) or ``"training"`` (a TrainCallback class used inside ``finetune.train``).
    """

    name: str
    paper: str
    kind: Literal["one-shot", "iterative", "training"]
    entry: Callable[..., Any]


sparsity_methods: Registry[SparsityMethod] = Registry("sparsity method")

BUILTIN_MODULES = (
    "edgeprune.sparsity.magnitude",
    "edgeprune.sparsity.snip",
    "edgeprune.sparsity.scl",
    "edgeprune.sparsity.rigl",
    "edgeprune.sparsity.relief",
    "edgeprune.sparsity.spectral",
)


def load_builtin() -> None:
    """Import the built-in method modules (each registers itself once)."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def get_sparsity_method(name: str) -> SparsityMethod:
    """The method registered under ``name`` (``UnknownNameError`` lists the known ones)."""
    load_builtin()
    return sparsity_methods.get(name)


def register_method(method: SparsityMethod) -> SparsityMethod:
    """Register ``method`` under its own name (refuses duplicates, like every registry)."""
    return sparsity_methods.register(method.name)(method)


__all__ = [
    "MaskedTraining",
    "Masks",
    "SparsityMethod",
    "get_sparsity_method",
    "load_builtin",
    "prunable_weights",
    "register_method",
    "sparsity_methods",
]

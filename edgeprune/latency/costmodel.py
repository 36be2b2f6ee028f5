"""The whole-model cost model a latency profile predicts with, fitted on its measurements.

Every conv/linear layer costs, per kept fraction ``a`` of its input group and ``b`` of its output
group, ``macs * a * b`` multiply-accumulates, ``params * a * b`` weights and ``in_act * a +
out_act * b`` activation values (a depthwise conv: ``b`` alone). Summed over the model and divided
by the unpruned sums these give the features; latency relative to the unpruned model is modelled
as their non-negative combination plus a constant (framework overhead) and the squared weight
share (weights that stop fitting in cache cost more per byte: resnet18 at 64x64 on the dev host
streams 45 MB of weights per inference and got faster than linear when pruned below a third).

Why this rather than adding up the per-group deltas: pruning two groups that meet in a layer
saves ``1 - a*b`` of it, not ``(1 - a) + (1 - b)``; the features carry that product exactly, and
the coefficients are what the device says a MAC, a weight and an activation cost, fitted by
least squares on every in-context measurement (hundreds of single-group points plus the random
whole models). Non-negative coefficients and features that grow with every kept count make the
prediction monotone: removing a channel never predicts a slower model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import nnls
from torch import nn

from edgeprune.graph import GroupedModel
from edgeprune.profilers.roofline import layer_costs

FEATURES = ("macs", "params", "activations", "constant", "params_squared")


@dataclass(frozen=True)
class LayerTerm:
    """One conv/linear layer: the groups on its channel axes and its unpruned sizes."""

    name: str
    in_group: str | None
    out_group: str | None
    depthwise: bool
    macs: int
    params: int
    in_act: int
    out_act: int

    def sizes(self, fractions: Mapping[str, float]) -> tuple[float, float, float]:
        """(MACs, weights, activation values) with the groups kept at ``fractions``."""
        b = fractions.get(self.out_group, 1.0) if self.out_group else 1.0
        a = b if self.depthwise else (fractions.get(self.in_group, 1.0) if self.in_group else 1.0)
        product = b if self.depthwise else a * b
        return self.macs * product, self.params * product, self.in_act * a + self.out_act * b


def layer_terms(grouped: GroupedModel, example: torch.Tensor) -> tuple[LayerTerm, ...]:
    """Every executed conv/linear of the grouped model with its groups and sizes.

    The dependency graph lists a depthwise conv on its output axis only; its input channels are
    the same group, so it is marked ``depthwise`` and scales with that one fraction.
    """
    model = grouped.model
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    macs = {c.name: c.macs for c in layer_costs(model, example)}
    acts: dict[str, tuple[int, int]] = {}

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            acts[name] = (int(inputs[0].numel()), int(output.numel()))
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in handles:
            h.remove()
    in_group: dict[str, str] = {}
    out_group: dict[str, str] = {}
    for gname, group in grouped.groups.items():
        for member in group.members:
            if member.module in layers:
                (out_group if member.axis == "out" else in_group)[member.module] = gname
    terms = []
    for name, module in layers.items():
        if name not in acts:
            continue
        depthwise = isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels
        params = sum(p.numel() for p in module.parameters())
        terms.append(LayerTerm(name, in_group.get(name), out_group.get(name), depthwise, macs.get(name, 0),
                               params, *acts[name]))
    return tuple(terms)


def features(terms: Sequence[LayerTerm], fractions: Mapping[str, float]) -> np.ndarray:
    """The model's features (see :data:`FEATURES`), each 1.0 for the unpruned model."""
    full = np.sum([t.sizes({}) for t in terms], axis=0)
    now = np.sum([t.sizes(fractions) for t in terms], axis=0)
    rel = now / np.where(full > 0, full, 1.0)
    return np.array([rel[0], rel[1], rel[2], 1.0, rel[1] ** 2])


@dataclass(frozen=True)
class CostModel:
    """Non-negative coefficients over :data:`FEATURES`, as shares of the unpruned latency."""

    coefficients: tuple[float, ...]

    def ratio(self, terms: Sequence[LayerTerm], fractions: Mapping[str, float]) -> float:
        """Predicted latency relative to the unpruned model (exactly 1.0 for it)."""
        theta = np.asarray(self.coefficients)
        total = float(theta.sum())
        return float(features(terms, fractions) @ theta) / total if total > 0 else 1.0


def fit_cost_model(terms: Sequence[LayerTerm], samples: Sequence[tuple[Mapping[str, float], float]]) -> CostModel:
    """Non-negative least squares on relative error over measured (fractions, latency ratio).

    The unpruned model (all features 1, ratio 1) is added as a sample so a table with few points
    still predicts its base; coefficients are rescaled to sum to 1 (shares of the base latency).
    """
    rows = [features(terms, f) for f, _ in samples] + [features(terms, {})]
    y = np.array([r for _, r in samples] + [1.0])
    a = np.array(rows) / y[:, None]
    theta, _ = nnls(a, np.ones_like(y))
    total = theta.sum()
    return CostModel(tuple(float(v) for v in (theta / total if total > 0 else np.eye(len(FEATURES))[3])))

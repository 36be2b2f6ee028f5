"""Data-free BN score — Oh, Kim, Baik, Hong, Lee, "Batch Normalization Tells You Which Filter is
Important", WACV 2022.

No data: each channel's BN output is modelled as X ~ N(β, γ²) (BN normalises its input to zero
mean and unit variance, then scales by γ and shifts by β), and a channel is scored by the
activation it passes on after the ReLU, E[max(0, X)].

Derivation, with σ = |γ| > 0 and x = β + σz, z ~ N(0, 1):
    E[max(0, X)] = ∫_{z > −β/σ} (β + σz) φ(z) dz
                 = β (1 − Φ(−β/σ)) + σ ∫_{−β/σ}^{∞} z φ(z) dz
                 = β Φ(β/σ) + σ φ(β/σ),
using ∫_a^∞ z φ(z) dz = φ(a) and the symmetry of φ; for γ = 0 it is max(0, β).

Unverified: that this expectation is exactly the paper's score (the paper's formula has not been
checked against its text; it may weigh the distribution differently). Choices: a group with
several BNs (a residual add) sums their expectations; a group without BN falls back to its
filters' L1 norm. Scope "layer": the expectation depends on how the next layer scales its inputs,
so values of different layers are not comparable.
"""

from __future__ import annotations

import math

import torch

from edgeprune.criteria import criteria
from edgeprune.criteria.base import ScoreContext
from edgeprune.criteria.common import bn_sum, filter_l1, finish


def expected_relu(mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """E[max(0, X)] for X ~ N(mean, scale²), elementwise: μΦ(μ/σ) + σφ(μ/σ); max(0, μ) at σ = 0."""
    mean = mean.double()
    sigma = scale.double().abs()
    safe = torch.where(sigma > 0, sigma, torch.ones_like(sigma))
    t = mean / safe
    value = mean * torch.special.ndtr(t) + sigma * torch.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)
    return torch.where(sigma > 0, value, mean.clamp(min=0))


@criteria.register("bn-datafree")
class BNDataFree:
    name = "bn-datafree"
    paper = ("Oh, Kim, Baik, Hong, Lee, Batch Normalization Tells You Which Filter is Important, "
             "WACV 2022")
    scope = "layer"

    @torch.no_grad()
    def __call__(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        scores = {}
        for name in ctx.grouped.groups:
            summed = bn_sum(ctx, name, lambda bn: expected_relu(bn.bias.detach(), bn.weight.detach()))
            scores[name] = summed if summed is not None else filter_l1(ctx, name)
        return finish(ctx, scores)

"""SNIP (Lee et al. 2019): normalised |w·∂L/∂w| on one batch, global top-κ kept exactly."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call
from torch.nn import functional as F

from edgeprune.sparsity.masks import prunable_weights
from edgeprune.sparsity.snip import connection_sensitivity, snip_masks
from tests.sparsity.toys import SmallConvNet, batch


def gate_sensitivity(model, data) -> dict[str, torch.Tensor]:
    """|∂L/∂c| at c = 1 for gates c on every connection: SNIP's definition, computed independently."""
    x, y = data
    weights = prunable_weights(model)
    gates = {n: torch.ones_like(w, requires_grad=True) for n, w in weights.items()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    gated = {n: weights[n].detach() * gates[n] for n in weights}
    model.train()
    loss = F.cross_entropy(functional_call(model, {**dict(model.named_parameters()), **gated, **buffers}, (x,)), y)
    grads = torch.autograd.grad(loss, list(gates.values()))
    model.eval()
    return {n: g.abs() for n, g in zip(gates, grads)}


@pytest.mark.parametrize("keep", [1, 37, 250])
def test_keeps_exactly_kappa_connections_with_the_top_gate_sensitivities(keep):
    torch.manual_seed(0)
    model = SmallConvNet().eval()
    data = batch(8, (1, 6, 6))
    masks = snip_masks(model, data, keep=keep)
    assert masks.kept() == keep
    gates = gate_sensitivity(model, data)
    kept = torch.cat([gates[n][masks[n]] for n in masks])
    dropped = torch.cat([gates[n][~masks[n]] for n in masks])
    assert float(kept.min()) >= float(dropped.max()) - 1e-9


def test_scores_are_the_normalised_gate_gradients_and_scoring_leaves_no_trace():
    torch.manual_seed(0)
    model = SmallConvNet().eval()
    data = batch(8, (1, 6, 6))
    stats = model.bn1.running_mean.clone()
    scores = connection_sensitivity(model, data)
    gates = gate_sensitivity(model, data)
    total = sum(float(g.sum()) for g in gates.values())
    for name in scores:
        assert torch.allclose(scores[name], gates[name] / total, atol=1e-9, rtol=1e-4)
    assert sum(float(s.sum()) for s in scores.values()) == pytest.approx(1.0)
    assert torch.equal(model.bn1.running_mean, stats) and not model.training
    assert all(p.grad is None for p in model.parameters())


def test_density_rounds_to_a_count():
    model = SmallConvNet()
    total = sum(w.numel() for w in prunable_weights(model).values())
    assert snip_masks(model, batch(4, (1, 6, 6)), density=0.1).kept() == round(0.1 * total)
    with pytest.raises(ValueError):
        snip_masks(model, batch(4, (1, 6, 6)), density=0.1, keep=3)

"""RigL (Evci et al. 2020): ERK densities, cosine drop schedule, drop |w| / grow |grad|, fixed density."""

from __future__ import annotations

import math

import pytest
import torch

from edgeprune.training.finetune import TrainConfig, train
from edgeprune.sparsity.masks import prunable_weights
from edgeprune.sparsity.rigl import RigL, drop_fraction, erk_densities, rewire
from tests.sparsity.toys import SmallConvNet, loader


def test_erk_densities_meet_the_budget_and_follow_the_erk_ratio():
    shapes = {n: p.shape for n, p in prunable_weights(SmallConvNet()).items()}
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    dens = erk_densities(shapes, 0.3)
    assert sum(dens[n] * sizes[n] for n in shapes) == pytest.approx(0.3 * sum(sizes.values()))
    assert all(0 < d <= 1 for d in dens.values())
    sparse = [n for n in shapes if dens[n] < 1]
    raw = {n: sum(shapes[n]) / sizes[n] for n in shapes}
    ratios = [dens[n] / raw[n] for n in sparse]
    assert len(sparse) >= 2 and max(ratios) == pytest.approx(min(ratios))  # one ε for all sparse layers
    assert dens["fc.weight"] == 1.0  # its ERK share would exceed 1 at this budget: made dense


def test_rewire_drops_smallest_weights_grows_largest_gradients_at_zero_and_keeps_the_count():
    weight = torch.tensor([0.9, -0.1, 0.5, 0.05, 0.0, 0.0, 0.0, 0.0])
    grad = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.3, -2.0, 0.1, 1.0])
    mask = torch.tensor([True, True, True, True, False, False, False, False])
    new, k = rewire(weight, grad, mask, 0.5)
    assert k == 2
    assert new.tolist() == [True, False, True, False, False, True, False, True]
    assert int(new.sum()) == int(mask.sum())


def test_density_stays_constant_and_updates_follow_the_cosine_schedule():
    torch.manual_seed(0)
    model = SmallConvNet()
    total = 16
    rigl = RigL.with_erk(model, 0.3, total_steps=total, delta_t=3, seed=0)
    start = {n: int(m.sum()) for n, m in rigl.masks.items()}
    seen: list[dict[str, int]] = []

    class Probe:
        def extra_loss(self, model):
            return None

        def after_backward(self, model, step):
            seen.append({n: int(m.sum()) for n, m in rigl.masks.items()})

    before = rigl.masks.copy()
    with rigl.hold(model):
        train(model, loader(32, (1, 6, 6), 2), TrainConfig(epochs=1, lr=0.1), callbacks=(rigl, Probe()))
    assert rigl.t_end == 12 and [u.step for u in rigl.history] == [3, 6, 9]  # ΔT until 75% of training
    for update in rigl.history:
        assert update.fraction == pytest.approx(0.3 / 2 * (1 + math.cos(math.pi * update.step / 12)))
        assert update.fraction == pytest.approx(drop_fraction(update.step, 12, 0.3))
        for name, k in update.swapped.items():
            assert k == int(update.fraction * start[name])
    assert len(seen) == total and all(s == start for s in seen)  # every layer's density, every step
    assert any(not torch.equal(before[n], rigl.masks[n]) for n in start)  # connectivity did change
    for name, mask in rigl.masks.items():
        assert int(torch.count_nonzero(model.get_parameter(name).detach()[~mask])) == 0


def test_newly_grown_connections_start_at_zero():
    torch.manual_seed(0)
    model = SmallConvNet()
    rigl = RigL.with_erk(model, 0.3, total_steps=400, delta_t=100)
    old = rigl.masks.copy()
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    rigl.steps_done = 100
    rigl.after_backward(model, 100)
    grown_any = False
    for name, mask in rigl.masks.items():
        grown = mask & ~old[name]
        grown_any |= bool(grown.any())
        assert int(torch.count_nonzero(model.get_parameter(name).detach()[grown])) == 0
        assert int(torch.count_nonzero(model.get_parameter(name).grad[~mask])) == 0
    assert grown_any

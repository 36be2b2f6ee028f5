"""Taylor FO on activations (Molchanov 2017): |mean(dC/dz · z)| per map, L2-normalised per layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgeprune.criteria import get_criterion
from edgeprune.criteria.taylor_act import TaylorActivation
from tests.criteria.toys import TwoConv, context, image_batches, randomise_bn


def by_hand(model: TwoConv, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(z·dC/dz) of bn1's and bn2's outputs, computed with retained activations."""
    z1 = model.bn1(model.conv1(x))
    z1.retain_grad()
    z2 = model.bn2(model.conv2(F.relu(z1)))
    z2.retain_grad()
    loss = F.cross_entropy(model.fc(F.relu(z2).mean((2, 3))), y)
    loss.backward()
    return z1.grad * z1, z2.grad * z2


def test_matches_hand_computation_on_toy_net():
    torch.manual_seed(0)
    model = randomise_bn(TwoConv())
    batches = image_batches(1, 6, (1, 8, 8), 3)
    ctx = context(model, batches)
    p1, p2 = by_hand(model, *batches[0])
    model.zero_grad(set_to_none=True)
    theta1, theta2 = p1.mean((0, 2, 3)).abs(), p2.mean((0, 2, 3)).abs()
    scores = get_criterion("taylor-act")(ctx)
    assert torch.allclose(scores["conv1"], theta1 / theta1.norm(), atol=1e-6)
    assert torch.allclose(scores["conv2"], theta2 / theta2.norm(), atol=1e-6)
    raw = TaylorActivation(normalise=False)(ctx)
    assert torch.allclose(raw["conv2"], theta2, rtol=1e-5, atol=1e-9)
    per_example = TaylorActivation(reduction="example", normalise=False)(ctx)
    assert torch.allclose(per_example["conv1"], p1.mean((2, 3)).abs().mean(0), rtol=1e-5, atol=1e-9)


def test_model_left_untouched():
    torch.manual_seed(0)
    model = randomise_bn(TwoConv())
    ctx = context(model, image_batches(1, 4, (1, 8, 8), 3))  # tracing runs the model: before train()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    get_criterion("taylor-act")(ctx)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())

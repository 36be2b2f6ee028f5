"""Network Slimming (Liu et al. 2017): |γ| scores and the λ·sign(γ) sparsity regulariser."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from edgeprune.criteria import get_criterion
from edgeprune.criteria.slimming import SlimmingRegularizer
from edgeprune.training.finetune import TrainConfig, train
from edgeprune.models.demo_net import build_demo_net
from tests.criteria.toys import TwoConv, context, image_batches, randomise_bn


def bn_l1(model) -> float:
    return float(sum(m.weight.detach().abs().sum() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)))


def test_regulariser_adds_lambda_sign_gamma():
    model = randomise_bn(TwoConv())
    with torch.no_grad():
        model.bn1.weight[1] = -0.5
        model.bn1.weight[2] = 0.0
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    SlimmingRegularizer(0.1).after_backward(model, 0)
    assert torch.allclose(model.bn1.weight.grad, 0.1 * torch.sign(model.bn1.weight.detach()))
    assert float(model.bn1.weight.grad[2]) == 0.0 and float(model.bn1.weight.grad[1]) == pytest.approx(-0.1)
    assert torch.count_nonzero(model.conv1.weight.grad) == 0  # only BN scales are touched


def test_sparsity_training_drives_gamma_toward_zero():
    torch.manual_seed(0)
    start = TwoConv(c1=4, c2=4)
    x, y = image_batches(1, 32, (1, 8, 8), 3)[0]
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False)
    config = TrainConfig(epochs=10, lr=0.1, momentum=0.0, weight_decay=0.0)
    plain, sparse = copy.deepcopy(start), copy.deepcopy(start)
    train(plain, loader, config)
    train(sparse, loader, config, callbacks=(SlimmingRegularizer(0.5),))
    assert bn_l1(plain) > 0.9 * bn_l1(start)  # the task alone keeps the scales
    assert bn_l1(sparse) < 0.1 * bn_l1(start)  # the penalty drives them to ~0


def test_scores_are_summed_abs_gamma_of_the_group():
    torch.manual_seed(0)
    net = randomise_bn(build_demo_net(width=4))
    with torch.no_grad():
        net.stage1[0][1].weight[2] = -3.0
    scores = get_criterion("slimming")(context(net, image_batches(1, 2, (1, 32, 32), 10)))
    assert torch.allclose(scores["stem.0"], net.stem[1].weight.abs())
    coupled = net.stage1[0][1].weight.abs() + net.stage1[1].bn2.weight.abs()
    assert torch.allclose(scores["stage1.0.0"], coupled)

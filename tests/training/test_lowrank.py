"""LRPET (Guo et al., TNNLS 2024): BN-rectified SVD projection with energy transfer; factorisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.training.finetune import TrainConfig
from edgeprune.training.lowrank import (bn_scale, conv_bn_pairs, energy_transfer, factorize, lrpet_project,
                               project_weight, ranks_by_ratio, train_lrpet)
from tests.sparsity.toys import SmallConvNet, loader


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN scales and statistics, so the rectification matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.2 + 2 * torch.rand(n, generator=g))
                m.bias.copy_(0.3 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.2 + torch.rand(n, generator=g))
    return model.eval()


def test_energy_transfer_keeps_the_total_squared_singular_value_energy():
    s = torch.tensor([5.0, 3.0, 2.0, 1.0], dtype=torch.float64)
    new, alpha = energy_transfer(s, 2)
    assert alpha == pytest.approx(39.0 / 34.0)
    assert torch.allclose(new, torch.tensor([5.0, 3.0, 0.0, 0.0], dtype=torch.float64) * np.sqrt(alpha))
    assert float(new.pow(2).sum()) == pytest.approx(float(s.pow(2).sum()))


def test_bn_rectified_projection_has_rank_r_and_the_rectified_energy_of_the_original():
    torch.manual_seed(0)
    weight = torch.randn(8, 4, 3, 3, dtype=torch.float64)
    scale = 0.1 + torch.rand(8, dtype=torch.float64) * 3
    projected, stats = project_weight(weight, 3, scale, eps=0.0)  # eps 0: exact inverse of the rectification
    rect_before = scale.unsqueeze(1) * weight.reshape(8, -1)
    rect_after = scale.unsqueeze(1) * projected.reshape(8, -1)
    s_before = torch.linalg.svdvals(rect_before)
    s_after = torch.linalg.svdvals(rect_after)
    assert torch.allclose(s_after[:3], s_before[:3] * np.sqrt(stats.alpha))  # top r scaled by √α
    assert torch.all(s_after[3:] < 1e-10)  # rank r
    assert float(rect_after.pow(2).sum()) == pytest.approx(float(rect_before.pow(2).sum()), rel=1e-10)
    assert stats.energy_after == pytest.approx(stats.energy_before)
    regularised, _ = project_weight(weight, 3, scale)  # the reference code's a/(a²+1e-5) inverse
    assert torch.allclose(regularised, projected, rtol=1e-3)


def test_without_bn_the_projection_preserves_the_weight_frobenius_norm():
    weight = torch.randn(6, 2, 3, 3, dtype=torch.float64)
    projected, _ = project_weight(weight, 2)
    assert float(projected.pow(2).sum()) == pytest.approx(float(weight.pow(2).sum()), rel=1e-10)
    assert int(torch.linalg.matrix_rank(projected.reshape(6, -1))) == 2


def test_model_projection_uses_each_convs_own_bn():
    torch.manual_seed(0)
    model = randomised(SmallConvNet())
    assert conv_bn_pairs(model) == {"conv1": "bn1", "conv2": "bn2"}
    original = model.conv2.weight.detach().double().clone()
    stats = lrpet_project(model, {"conv2": 3})
    a = bn_scale(model.bn2).double().unsqueeze(1)
    after = a * model.conv2.weight.detach().double().reshape(8, -1)
    assert float(after.pow(2).sum()) == pytest.approx(float((a * original.reshape(8, -1)).pow(2).sum()), rel=1e-4)
    assert int(torch.linalg.matrix_rank(after, rtol=1e-5)) == 3 and stats["conv2"].alpha > 1


def test_factorised_convs_reproduce_the_projected_model_and_export(tmp_path):
    torch.manual_seed(0)
    model = randomised(SmallConvNet())
    ranks = {"conv1": 2, "conv2": 3}
    lrpet_project(model, ranks)
    x = torch.rand(4, 1, 6, 6)
    projected_weight = model.conv2.weight.detach().clone()
    expected = model(x).detach()
    factorize(model, ranks)
    assert isinstance(model.conv2, nn.Sequential) and model.conv2.spatial.out_channels == 3
    composed = torch.einsum("or,rikl->oikl", model.conv2.pointwise.weight.detach()[:, :, 0, 0],
                            model.conv2.spatial.weight.detach())
    assert torch.allclose(composed, projected_weight, atol=1e-6)
    assert torch.allclose(model(x), expected, atol=1e-5)
    exported = torch.export.export(model, (x[:1],))
    assert torch.allclose(exported.module()(x[:1]), expected[:1], atol=1e-5)
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    from edgeprune.backends.onnx_export import export_onnx

    export_onnx(model, x[:1], tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x[:1].numpy()})[0]
    np.testing.assert_allclose(got, expected[:1].numpy(), rtol=1e-4, atol=1e-5)


def test_training_loop_projects_after_every_epoch():
    torch.manual_seed(0)
    model = randomised(SmallConvNet()).train()
    ranks = ranks_by_ratio(model, 0.5)
    assert ranks == {"conv1": 2, "conv2": 4}  # ceil(0.5 · min(out, in·k·k)): min(4, 9), min(8, 36)
    history = train_lrpet(model, loader(8, (1, 6, 6), 4), TrainConfig(lr=0.05), ranks, epochs=2)
    assert len(history) == 2 and set(history[-1]) == set(ranks)
    a = bn_scale(model.bn2).unsqueeze(1)
    assert int(torch.linalg.matrix_rank(a * model.conv2.weight.detach().reshape(8, -1), rtol=1e-5)) <= 4

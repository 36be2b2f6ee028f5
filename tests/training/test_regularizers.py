"""Training-time regularisers: each factory's callback changes training the way its paper says,
leaves a plain model behind, and ``deploy`` passes ``SearchConfig.regularizer`` into its fine-tunes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from edgeprune.candidate.evaluator import CompileConfig
from edgeprune.deploy import DeployConfig, DeviceConfig, FineTuneConfig, RunConfig
from edgeprune.models.loading import DataOptions, ModelOptions
from edgeprune.search.config import Budget, SearchConfig
from edgeprune.errors import ConfigError, UnknownNameError
from edgeprune.training.finetune import TrainConfig, train
from edgeprune.training.regularizers import (
    HessianSpectralOptions,
    LRPETOptions,
    RigLOptions,
    SCLOptions,
    SlimmingOptions,
    regularized,
    regularizers,
)
from tests.sparsity.toys import SmallConvNet, batch, loader

CFG = TrainConfig(epochs=2.0, lr=0.1, weight_decay=0.0)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return SmallConvNet()


def _data():
    return loader(32, (1, 8, 8), 8)  # 4 steps per epoch


def _train_with(name: str, options, model: nn.Module, config: TrainConfig = CFG):
    data = _data()
    regularizer = regularizers.get(name)(model, options, len(data))
    try:
        losses = train(model, data, config, callbacks=(regularizer,))
    finally:
        regularizer.close()
    return regularizer, losses


def _bn_l1(model: nn.Module) -> float:
    return float(sum(m.weight.detach().abs().sum() for m in model.modules() if isinstance(m, nn.BatchNorm2d)))


def test_registry_names_the_five_methods():
    assert set(regularizers.names()) == {"slimming", "scl", "rigl", "hessian-spectral", "lrpet"}


def test_slimming_shrinks_the_bn_scales():
    plain = _net()
    train(plain, _data(), CFG)
    slimmed = _net()
    _train_with("slimming", SlimmingOptions(lam=0.05), slimmed)
    assert _bn_l1(slimmed) < _bn_l1(plain) - 0.05  # 8 steps x lr 0.1 x λ 0.05 per γ, 12 γs


def test_scl_learns_zeros_and_leaves_plain_weights():
    model = _net()
    data = _data()
    regularizer = regularizers.get("scl")(model, SCLOptions(lam=10.0), len(data))
    assert parametrize.is_parametrized(model.conv1, "weight")  # attached before train builds its optimiser
    train(model, data, CFG, callbacks=(regularizer,))
    regularizer.close()
    assert not parametrize.is_parametrized(model.conv1, "weight")
    assert set(dict(model.named_parameters())) == set(dict(_net().named_parameters()))
    zeros = float((model.conv2.weight == 0).float().mean())
    assert zeros > 0.5, "a strong λ·#active pull must switch connections off"


def test_rigl_rewires_at_fixed_density_and_holds_zeros():
    model = _net()
    regularizer, _ = _train_with("rigl", RigLOptions(density=0.5, epochs=CFG.epochs, delta_t=2, init="random"), model)
    rigl = regularizer.callback
    assert rigl.history and any(sum(u.swapped.values()) > 0 for u in rigl.history)
    for name, mask in rigl.masks.items():
        weight = model.get_parameter(name)
        assert torch.all(weight[~mask] == 0), name
    kept = sum(int(m.sum()) for _, m in rigl.masks.items())
    total = sum(m.numel() for _, m in rigl.masks.items())
    assert kept / total == pytest.approx(0.5, abs=0.02)
    assert all(not m._forward_pre_hooks for m in model.modules())  # hooks removed on close


def test_rigl_magnitude_init_keeps_the_largest_weights():
    model = _net()
    big = model.fc.weight.detach().abs().flatten().topk(3).indices
    regularizer = regularizers.get("rigl")(model, RigLOptions(density=0.5), 4)
    regularizer.close()
    assert bool(regularizer.callback.masks["fc.weight"].flatten()[big].all())


def test_hessian_spectral_adds_mu_rho_to_the_loss_every_k_steps():
    probe = batch(8, (1, 8, 8))
    plain_losses = train(_net(), _data(), CFG)
    options = HessianSpectralOptions(probe=probe, mu=0.5, every=3, iters=5)
    regularizer, losses = _train_with("hessian-spectral", options, _net())
    history = regularizer.callback.history
    assert [step for step, _ in history] == [0, 3, 6]
    rho0 = history[0][1]
    assert rho0 > 0
    assert losses[0] - plain_losses[0] == pytest.approx(0.5 * rho0, rel=1e-4)


def test_lrpet_projects_once_per_epoch_and_leaves_low_rank_convs():
    model = _net()
    regularizer, _ = _train_with("lrpet", LRPETOptions(rank_ratio=0.25), model)
    callback = regularizer.callback
    assert callback.projections == 2  # start of epoch 2 (forward pre-hook) + end of training
    for name, rank in callback.ranks.items():
        weight = model.get_submodule(name).weight.detach()
        matrix = weight.reshape(weight.shape[0], -1).double()
        assert int(torch.linalg.matrix_rank(matrix, rtol=1e-5)) <= rank, name  # float32 rounding above 1e-5
    assert not model._forward_pre_hooks


def test_lrpet_fractional_epoch_projects_once_at_the_end():
    model = _net()
    regularizer, _ = _train_with("lrpet", LRPETOptions(), model, TrainConfig(epochs=0.5))
    assert regularizer.callback.projections == 1


def test_wiring_helpers_and_errors():
    with regularized(None, _net(), _data(), 1.0) as callbacks:
        assert callbacks == ()
    model = _net()
    with regularized("scl", model, _data(), 0.0) as callbacks:  # no step: nothing built, model untouched
        assert callbacks == () and not parametrize.is_parametrized(model.conv1, "weight")
    with regularized("hessian-spectral", model, _data(), 1.0) as callbacks:
        assert len(callbacks) == 1  # its probe batch came from the loader
    with pytest.raises(TypeError):
        regularizers.get("slimming")(model, SCLOptions(), 4)
    with pytest.raises(UnknownNameError, match="known: hessian-spectral, lrpet, rigl, scl, slimming"):
        SearchConfig(regularizer="l0")
    with pytest.raises(ConfigError):
        RigLOptions(density=0.0)


def image_folder(root: Path) -> Path:
    """20 tiny grayscale PNGs in 2 classes: deploy's per-sample validation and eager timing stay cheap."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(10):
            pixels = (torch.rand(8, 8, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels, mode="L").save(root / label / f"{i}.png")
    return root


def test_deploy_records_the_regularizer_and_the_scratch_baselines(tmp_path, cache_dir):
    """RigL at density 0.5 in the final fine-tune leaves half the conv/linear weights at exactly 0
    (so ``SearchConfig.regularizer`` reached ``train``); ``--from-scratch`` adds Scratch-E/B."""
    from edgeprune.data import Preprocessing
    from edgeprune.deploy import deploy

    out = tmp_path / "out"
    data = image_folder(tmp_path / "images")
    manifest = deploy(DeployConfig(
        model=ModelOptions("tests.nets:tiny_demo"),
        data=DataOptions(f"imagefolder:{data}", preprocessing=Preprocessing(grayscale=True)),
        device=DeviceConfig(runtime="onnxruntime"), compile=CompileConfig(tune_trials=0, threads=1),
        finetune=FineTuneConfig(epochs=2.0, batch_size=8, from_scratch=True), budget=Budget(ms=1000.0),
        search=SearchConfig(regularizer="rigl", max_steps=1, rounds=3), run=RunConfig(out=out, cache_dir=cache_dir)))
    written = json.loads((out / "manifest.json").read_text())
    assert manifest["search"]["regularizer"] == written["search"]["regularizer"] == "rigl"
    state = torch.load(str(out / "pruned_state_dict.pt"), weights_only=True)
    weights = [v for k, v in state.items() if k.endswith("weight") and v.dim() > 1]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.5, abs=0.02)

    scratch = written["from_scratch"]
    assert scratch["E"]["mode"] == "E" and scratch["B"]["mode"] == "B"
    assert scratch["E"]["epochs_trained"] == pytest.approx(2.0)  # no pruning step: final fine-tune only
    assert scratch["B"]["epochs_trained"] == pytest.approx(2.0 * scratch["macs_ratio"])
    assert all(0.0 <= scratch[k]["accuracy"] <= 1.0 for k in ("E", "B"))
    assert 0.0 <= scratch["fine_tuned_accuracy"] <= 1.0
    report = (out / "report.md").read_text()
    assert "Scratch-E (same epochs)" in report and "Scratch-B (same compute)" in report

"""The Rethinking protocol: Scratch-E trains the same epochs, Scratch-B the same compute; every
parameter starts afresh. (deploy's ``--from-scratch`` manifest and report table are checked in
tests/training/test_regularizers.py, in the one deploy run those tests make.)"""

from __future__ import annotations

import pytest
import torch

from edgeprune.training.finetune import TrainConfig
from edgeprune.graph import count_macs
from edgeprune.models.demo_net import build_demo_net
from edgeprune.training.scratch import fine_tune_epochs, from_scratch, reinitialise, scratch_epochs
from tests.sparsity.toys import loader


def test_scratch_epochs_scale_by_the_macs_ratio():
    assert scratch_epochs(3.0, 400, 100, "E") == 3.0
    assert scratch_epochs(3.0, 400, 100, "B") == pytest.approx(12.0)
    with pytest.raises(ValueError):
        scratch_epochs(3.0, 400, 100, "C")  # type: ignore[arg-type]
    assert fine_tune_epochs(2.0, 0.5, [{"step": 0}, {"step": 1}, {"step": 2}]) == pytest.approx(3.0)


def test_reinitialisation_changes_every_parameter_and_buffer_but_not_the_input():
    torch.manual_seed(0)
    model = build_demo_net(width=4)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) + 0.5)  # BN γ=1, β=0 would survive a reset unchanged
        for name, b in model.named_buffers():
            if b.is_floating_point():
                b.add_(0.25)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fresh = reinitialise(model, seed=1)
    for name, p in fresh.named_parameters():
        assert not torch.equal(p, before[name]), f"{name} was not re-initialised"
    assert torch.equal(fresh.stem[1].running_mean, torch.zeros(4))  # BN statistics reset too
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])  # the pruned model itself is untouched


def test_scratch_b_trains_macs_ratio_times_the_epochs_of_scratch_e():
    original, pruned = build_demo_net(width=8), build_demo_net(width=4)
    example = torch.rand(1, 1, 8, 8)
    original_macs, pruned_macs = count_macs(original, example)[0], count_macs(pruned, example)[0]
    ratio = original_macs / pruned_macs
    assert ratio > 2
    train_loader = loader(16, (1, 8, 8), 8, classes=10)  # 2 steps per epoch
    val_loader = loader(8, (1, 8, 8), 8, classes=10, seed=1)
    config = TrainConfig(lr=0.05)
    e = from_scratch(pruned, original_macs, pruned_macs, train_loader, val_loader, 1.0, "E", 0, config)
    b = from_scratch(pruned, original_macs, pruned_macs, train_loader, val_loader, 1.0, "B", 0, config)
    assert (e.mode, b.mode) == ("E", "B")
    assert e.epochs_trained == 1.0 and e.steps == 2
    assert b.epochs_trained == pytest.approx(ratio)
    assert b.steps == round(ratio * len(train_loader))
    assert 0.0 <= e.accuracy <= 1.0 and 0.0 <= b.accuracy <= 1.0
    assert set(b.to_json()) == {"accuracy", "epochs_trained", "mode", "steps"}

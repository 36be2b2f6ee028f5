"""N:M and block masks from an unstructured mask, chosen by magnitude."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeprune.sparsity.masks import Masks, prunable_weights
from edgeprune.sparsity.structured import as_matrix, block_mask, parse_kind, to_structured


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3)  # reduction 9: cannot tile into groups of 4
        self.conv = nn.Conv2d(8, 6, 3)  # reduction 72
        self.fc = nn.Linear(12, 5)


def random_masks(model, density=0.6, seed=0) -> Masks:
    g = torch.Generator().manual_seed(seed)
    return Masks({n: torch.rand(p.shape, generator=g) < density for n, p in prunable_weights(model).items()})


def test_two_four_keeps_exactly_the_two_largest_of_every_group_of_four():
    torch.manual_seed(0)
    net = Net()
    masks = random_masks(net)
    out = to_structured(masks, "2:4", net)
    for name in ("conv.weight", "fc.weight"):
        keep = as_matrix(out[name]).reshape(-1, 4)
        assert torch.all(keep.sum(1) == 2)
        score = as_matrix(net.get_parameter(name).detach().abs() * masks[name]).reshape(-1, 4)
        assert torch.all(score[keep].view(-1, 2).min(1).values >= score[~keep].view(-1, 2).max(1).values)
    out.apply(net)
    weights = as_matrix(net.conv.weight.detach()).reshape(-1, 4)
    assert torch.all(torch.count_nonzero(weights, dim=1) == 2)  # random weights: no accidental zeros
    assert torch.equal(out["stem.weight"], masks["stem.weight"])  # untileable layer passes through


def test_groups_run_along_input_channels_at_one_kernel_position():
    conv = nn.Conv2d(4, 1, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([4.0, 3.0, 2.0, 1.0]).view(1, 4, 1, 1))
    out = to_structured(Masks({"weight": torch.ones(1, 4, 1, 1, dtype=torch.bool)}), "2:4", conv)
    assert out["weight"].flatten().tolist() == [True, True, False, False]


@pytest.mark.parametrize("kind,bh,bw", [("1x4", 1, 4), ("block:4x4", 4, 4)])
def test_block_masks_are_whole_blocks_chosen_by_l1_at_the_layer_density(kind, bh, bw):
    torch.manual_seed(1)
    weight = torch.randn(8, 16)
    mask = torch.rand(8, 16) < 0.4
    keep = block_mask(weight.abs() * mask, float(mask.float().mean()), bh, bw)
    blocks = keep.reshape(8 // bh, bh, 16 // bw, bw)
    per_block = blocks.sum(dim=(1, 3))
    assert torch.all((per_block == 0) | (per_block == bh * bw))  # all-or-nothing
    n_blocks = per_block.numel()
    assert int((per_block > 0).sum()) == round(float(mask.float().mean()) * n_blocks)
    l1 = (weight.abs() * mask).reshape(8 // bh, bh, 16 // bw, bw).sum(dim=(1, 3))
    assert l1[per_block > 0].min() >= l1[per_block == 0].max()
    net = nn.Linear(16, 8)
    with torch.no_grad():
        net.weight.copy_(weight)
    assert torch.equal(to_structured(Masks({"weight": mask}), kind, net)["weight"], keep)


def test_unknown_structure_is_refused():
    for bad in ("2-4", "0x4", "block"):
        with pytest.raises(ValueError):
            parse_kind(bad)
    assert parse_kind("2:4") == ("nm", 2, 4) and parse_kind("4x4") == ("block", 4, 4)

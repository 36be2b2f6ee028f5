"""NN Relief (Dekhovich et al.): per-neuron minimal cover of α of the activity score; dead neurons."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from edgeprune.sparsity.masks import Masks
from edgeprune.sparsity.relief import drop_dead_neurons, minimal_cover, relief_masks, relief_scores
from tests.sparsity.toys import MLP, SmallConvNet, batch


def fc_scores_by_hand(model, x):
    """s_ij = mean_n |w_ij x_nj| and |b_i|, per neuron, for both layers of the MLP (inputs recomputed)."""
    out = {}
    h = x
    for name, layer in (("fc1", model.fc1), ("fc2", model.fc2)):
        a = (h.abs().unsqueeze(1) * layer.weight.detach().abs().unsqueeze(0)).mean(0)
        b = layer.bias.detach().abs()
        total = a.sum(1) + b
        out[name] = (a / total.unsqueeze(1), b / total)
        h = torch.relu(layer(h)).detach()
    return out


@pytest.mark.parametrize("alpha", [0.5, 0.95])
def test_kept_connections_cover_alpha_of_each_neuron_and_are_the_fewest(alpha):
    torch.manual_seed(0)
    model = MLP().eval()
    x, y = batch(20, (6,))
    masks = relief_masks(model, [(x, y)], alpha_fc=alpha, drop_dead=False)
    for name, (conn, bias) in fc_scores_by_hand(model, x).items():
        scores = torch.cat([conn, bias.unsqueeze(1)], 1).double()
        keep = torch.cat([masks[f"{name}.weight"], masks[f"{name}.bias"].unsqueeze(1)], 1)
        for row, kept in zip(scores, keep):
            covered = float(row[kept].sum())
            assert covered >= alpha - 1e-9
            smallest_kept = float(row[kept].min())
            assert covered - smallest_kept < alpha  # dropping any kept connection falls short
            assert int(kept.sum()) == int((torch.sort(row, descending=True).values.cumsum(0) < alpha - 1e-12).sum()) + 1


def test_conv_scores_are_kernel_signal_norms_normalised_per_filter():
    torch.manual_seed(0)
    model = SmallConvNet().eval()
    x, y = batch(3, (1, 6, 6))
    got = relief_scores(model, [(x, y)])["conv2"]
    h = torch.relu(model.bn1(model.conv1(x))).detach()
    w = model.conv2.weight.detach()
    raw = torch.zeros(8, 4)
    for j in range(8):
        for i in range(4):
            maps = F.conv2d(h[:, i:i + 1].abs(), w[j:j + 1, i:i + 1].abs(), padding=1)
            raw[j, i] = maps.flatten(1).norm(dim=1).mean()
    assert torch.allclose(got.connections, raw / raw.sum(1, keepdim=True), rtol=1e-4, atol=1e-7)
    assert torch.equal(got.bias, torch.zeros(8))  # no bias: its share is 0
    masks = relief_masks(model, [(x, y)], alpha_conv=0.9, drop_dead=False)
    kernels = masks["conv2.weight"].flatten(2)
    assert torch.all(kernels.all(2) | ~kernels.any(2))  # a kernel is kept or pruned as a whole


def test_channels_nothing_reads_lose_their_inputs_and_silent_channels_lose_their_readers():
    model = MLP().eval()
    masks = Masks({n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()})
    masks["fc2.weight"][:, 1] = False  # hidden neuron 1: no outgoing connection
    masks["fc1.weight"][3] = False  # hidden neuron 3: no incoming connection...
    masks["fc1.bias"][3] = False  # ...and no bias: it outputs exactly 0
    out = drop_dead_neurons(model, masks, torch.rand(1, 6))
    assert not out["fc1.weight"][1].any() and not out["fc1.bias"][1]
    assert not out["fc2.weight"][:, 3].any()
    alive = [0, 2, 4]
    assert out["fc1.weight"][alive].all() and out["fc2.weight"][:, alive].all()


def test_a_round_stays_within_the_previous_masks_and_drops_unread_conv_channels():
    torch.manual_seed(0)
    model = SmallConvNet().eval()
    x, y = batch(3, (1, 6, 6))
    previous = Masks({n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()
                      if n.endswith("weight") and p.dim() > 1})
    previous["conv2.weight"][:, 1] = False  # conv1's channel 1 is read by nothing any more
    masks = relief_masks(model, [(x, y)], masks=previous)
    assert not masks["conv1.weight"][1].any()  # so its filter goes too (a dead neuron)
    for name, mask in previous.items():
        assert torch.all(mask | ~masks[name])  # never revives a pruned connection
    assert masks.sparsity() > previous.sparsity()


def test_minimal_cover_edge_cases():
    assert minimal_cover(torch.tensor([[0.6, 0.3, 0.1]]), 0.9).tolist() == [[True, True, False]]
    assert minimal_cover(torch.tensor([[0.0, 0.0]]), 0.9).tolist() == [[False, False]]
    assert minimal_cover(torch.tensor([[0.5, 0.5]]), 1.0).tolist() == [[True, True]]

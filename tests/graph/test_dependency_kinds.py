"""Every dependency kind on a tiny net x every registered criterion: score, plan ~30 %, prune,
export to ONNX, and check ONNX Runtime against PyTorch (atol 1e-4)."""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgeprune.backends.onnx_export import export_onnx
from edgeprune.criteria import criteria, get_criterion, load_builtin
from edgeprune.criteria.base import ScoreContext
from edgeprune.graph import GroupedModel, count_macs
from edgeprune.plan import PruningPlan
from edgeprune.prune import apply_plan
from edgeprune.search.planner import StepPolicy, next_plan
from tests.graph.nets import NETS

load_builtin()
CRITERIA = sorted(criteria.names())
SHAPE = (1, 3, 16, 16)

#: groups each net must keep whole, and why (the rule that decided it)
KEPT = {"attention": "attention", "split": "torch.split", "maxvit_layer": "splits or merges the channel axis"}


def batches():
    g = torch.Generator().manual_seed(0)
    return ((torch.rand(6, *SHAPE[1:], generator=g), torch.randint(0, 5, (6,), generator=g)),)


def randomise(model: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.num_features, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def data():
    return batches()


@pytest.mark.parametrize("net", sorted(NETS))
def test_every_criterion_prunes_exports_and_matches(net, data, tmp_path, caplog):
    torch.manual_seed(0)
    model = randomise(NETS[net]())
    example = data[0][0][:1]
    with caplog.at_level(logging.INFO, logger="edgeprune.graph"):
        grouped = GroupedModel(model, example)
    if net in KEPT:  # the rule kept some channels and said so in one line
        assert any(KEPT[net] in reason for reason in grouped.excluded.values()), grouped.excluded
        assert any(KEPT[net] in r.getMessage() for r in caplog.records)
    macs = count_macs(model, example)[0]
    channels = {n: g.channels for n, g in grouped.groups.items()}
    for name in CRITERIA:
        criterion = get_criterion(name)
        scores = criterion(ScoreContext(model, grouped, data))
        for group_name, group in grouped.groups.items():
            s = scores[group_name]
            assert s.shape == (group.channels,) and torch.isfinite(s).all(), (name, group_name)
        plan = next_plan(PruningPlan.identity(net, SHAPE, name, channels), scores, StepPolicy(0.3, "layer"))
        assert plan.kept_fraction() < 0.85, name
        pruned = apply_plan(model, plan, example)
        assert count_macs(pruned, example)[0] < macs, name
        path = tmp_path / f"{name}.onnx"
        export_onnx(pruned, example, path)
        x = data[0][0]
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for row in x[:2]:
            got = session.run(None, {session.get_inputs()[0].name: row[None].numpy()})[0]
            with torch.no_grad():
                want = pruned(row[None]).numpy()
            np.testing.assert_allclose(got, want, atol=1e-4, err_msg=f"{net}/{name}")

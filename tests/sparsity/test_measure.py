"""Sparse vs dense under ONNX Runtime: both measured, ratio reported, no speed-up asserted."""

from __future__ import annotations

import pytest
import torch

from edgeprune.models.demo_net import build_demo_net
from edgeprune.profilers import MeasureSettings
from edgeprune.sparsity.magnitude import magnitude_masks
from edgeprune.sparsity.measure import measure_sparse_vs_dense


def test_measures_both_models_and_reports_the_ratio_without_claiming_a_speed_up(tmp_path):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = build_demo_net(width=8).eval()
    masks = magnitude_masks(model, 1.5)
    before = model.stem[0].weight.detach().clone()
    timing = measure_sparse_vs_dense(model, masks, torch.rand(1, 1, 32, 32), tmp_path,
                                     MeasureSettings(warmup=2, repeats=5, min_repeat_ms=1, threads=1))
    assert timing.source == timing.dense.source == timing.sparse.source == "measured:onnxruntime-local"
    assert timing.dense.median > 0 and timing.sparse.median > 0
    assert timing.ratio == pytest.approx(timing.sparse.median / timing.dense.median)
    assert timing.sparsity == pytest.approx(masks.sparsity()) and timing.sparsity > 0.5
    assert timing.zero_fraction_sparse > timing.zero_fraction_dense  # the zeros reached the file
    assert torch.equal(model.stem[0].weight.detach(), before)  # the caller's model is untouched
    assert set(timing.to_json()) >= {"dense_ms", "sparse_ms", "ratio", "source"}

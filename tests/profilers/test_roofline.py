"""Roofline estimates: per-layer MAC/byte counts and the two roofs of a target."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgeprune.artifact import Artifact
from edgeprune.errors import ConfigError
from edgeprune.profilers.base_settings import MeasureSettings
from edgeprune.profilers.roofline import (
    LayerCost,
    RooflineProfiler,
    bytes_per_element,
    layer_costs,
    roofline_ms,
)
from edgeprune.targets import get_target


def test_roofline_picks_the_binding_roof() -> None:
    # 1 GMAC at 100 GFLOP/s = 20 ms; 1 MB at 10 GB/s = 0.1 ms -> compute-bound
    assert roofline_ms(10**9, 10**6, 100.0, 10.0) == pytest.approx(20.0)
    # 1 kMAC, 100 MB at 10 GB/s = 10 ms -> memory-bound
    assert roofline_ms(1000, 10**8, 100.0, 10.0) == pytest.approx(10.0)


def test_layer_costs_count_conv_and_linear() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                                torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 10))
    costs = layer_costs(model, torch.randn(1, 3, 4, 4), "fp32")
    assert [c.name for c in costs] == ["0", "3", "4"]  # BN and ReLU are fused away
    conv, flatten, fc = costs
    assert conv.macs == 8 * 4 * 4 * 3 * 9
    assert conv.bytes_moved == 4 * (3 * 16 + 8 * 16 + 8 * 3 * 9 + 8)
    assert flatten.macs == 0 and flatten.bytes_moved == 4 * (128 + 128)
    assert fc.macs == 10 * 128
    assert layer_costs(model, torch.randn(1, 3, 4, 4), "int8")[0].bytes_moved == conv.bytes_moved // 4
    assert bytes_per_element("int4") == 0.5


def test_estimate_is_labelled_and_scales_with_efficiency() -> None:
    pi = get_target("raspberry-pi-4")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU())
    example = torch.randn(1, 3, 32, 32)
    m = RooflineProfiler(pi).estimate_model(model, example)
    assert m.latency.source == "estimate:roofline"
    assert m.latency.repeats == 1 and m.latency.median > 0
    assert m.details["estimate"] is True and "not measured" in m.device
    assert m.energy is None
    half = RooflineProfiler(pi, efficiency=0.5).estimate_model(model, example)
    assert half.latency.median == pytest.approx(2 * m.latency.median)


def test_measure_uses_artifact_meta(tmp_path: Path) -> None:
    profiler = RooflineProfiler(get_target("jetson-nano"), precision="fp16")
    path = tmp_path / "model.onnx"
    artifact = Artifact("onnxruntime", "jetson-nano", (path,), (1, 3, 8, 8),
                        meta={"macs": 471_900_000, "bytes": 1000})
    m = profiler.measure(artifact, MeasureSettings())
    assert m.latency.median == pytest.approx(2.0, rel=1e-3)  # 0.94 GFLOP at 471.9 GFLOP/s
    with pytest.raises(ConfigError, match="needs 'macs' and 'bytes'"):
        profiler.measure(Artifact("onnxruntime", "jetson-nano", (path,), (1,)), MeasureSettings())


def test_missing_facts_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="no memory bandwidth"):
        RooflineProfiler(get_target("host"))  # host.yaml states compute only
    with pytest.raises(ConfigError, match="no peak compute for int8"):
        RooflineProfiler(get_target("jetson-nano"), precision="int8")
    with pytest.raises(ConfigError, match="at least one layer"):
        RooflineProfiler(get_target("raspberry-pi-4")).estimate([])
    assert RooflineProfiler(get_target("pynq-z2"), "int8").estimate([LayerCost("x", 1, 1)]).latency.median > 0

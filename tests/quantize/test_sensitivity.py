"""Accuracy-aware fallback: a deliberately fragile layer is moved to fp32, accuracy recovers."""

from __future__ import annotations

import copy

import pytest
import torch

from edgeprune.backends.onnx_export import export_onnx
from edgeprune.errors import ConfigError
from edgeprune.quantize.base import run_onnx
from edgeprune.quantize.ort_int8 import OrtInt8Config, quantize_int8
from edgeprune.quantize.precision import PrecisionSpec
from edgeprune.quantize.sensitivity import FallbackConfig, accuracy_aware_int8
from tests.quantize.conftest import SIZE, accuracy

SCALE = 1000.0


@pytest.fixture(scope="module")
def fragile_onnx(trained_net, tmp_path_factory):
    """Same function in float, hostile to per-tensor activation quantization: channel 0 after the
    first BN is scaled by 1000 (and the next conv's matching input weights divided by 1000), so
    that one channel sets the whole tensor's INT8 scale and the other channels round to zero."""
    net = copy.deepcopy(trained_net)
    with torch.no_grad():
        net[1].weight[0] *= SCALE
        net[1].bias[0] *= SCALE
        net[4].weight[:, 0] /= SCALE
    path = tmp_path_factory.mktemp("fragile") / "fragile.onnx"
    export_onnx(net, torch.zeros(8, 1, SIZE, SIZE), path)
    return path


def test_fallback_moves_fragile_layers_to_fp32_and_recovers(fragile_onnx, calibration, digits16, tmp_path):
    x, y = digits16.x_val, digits16.y_val
    float_acc = accuracy(run_onnx(fragile_onnx, x), y)
    naive = quantize_int8(fragile_onnx, tmp_path / "naive.onnx", calibration, OrtInt8Config())
    naive_acc = accuracy(run_onnx(naive.path, x), y)
    assert float_acc - naive_acc > 0.2  # the fragile layer really breaks plain INT8

    result = accuracy_aware_int8(fragile_onnx, tmp_path / "safe.onnx", calibration, x, y, FallbackConfig(0.01))
    assert result.met and result.float_accuracy == pytest.approx(float_acc)
    measured = accuracy(run_onnx(result.result.path, x), y)  # re-run the shipped file independently
    assert measured == pytest.approx(result.accuracy) and float_acc - measured <= 0.01
    per_layer = result.per_layer
    float_layers = {k for k, v in per_layer.items() if v == "fp32"}
    assert float_layers and float_layers <= {"/0/Conv", "/4/Conv"}  # the writer/reader of the huge tensor
    assert per_layer["/9/Gemm"] == "int8"  # the robust classifier stays quantized
    assert result.sensitivities[0].node in {"/0/Conv", "/4/Conv"}
    assert result.sensitivities[-1].node == "/9/Gemm"
    assert PrecisionSpec.from_json(result.spec.to_json()) == result.spec
    assert result.result.meta["fallback"]["evaluated_by"] == "onnxruntime"


def test_fallback_keeps_a_robust_net_fully_int8(fp32_onnx, calibration, digits16, tmp_path):
    result = accuracy_aware_int8(fp32_onnx, tmp_path / "q.onnx", calibration, digits16.x_val, digits16.y_val,
                                 FallbackConfig(0.02))
    assert set(result.per_layer.values()) == {"int8"} and result.sensitivities == () and len(result.steps) == 1


def test_fallback_config_validated():
    with pytest.raises(ConfigError):
        FallbackConfig(max_accuracy_drop=-0.1)

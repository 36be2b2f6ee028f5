"""ORT static QDQ INT8 on a trained digits net: real quantization, run in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from edgeprune.backends.onnx_export import export_onnx
from edgeprune.errors import ConfigError
from edgeprune.quantize import get_quantizer
from edgeprune.quantize.base import quantizable_nodes, run_onnx
from edgeprune.quantize.ort_int8 import OrtInt8Config, decide_reduce_range, ort_kernel_counts, quantize_int8
from edgeprune.quantize.precision import PrecisionSpec, Tolerance, check
from tests.quantize.conftest import SIZE, accuracy


@pytest.fixture(scope="module")
def int8(fp32_onnx, calibration, tmp_path_factory):
    return quantize_int8(fp32_onnx, tmp_path_factory.mktemp("int8") / "int8.onnx", calibration, OrtInt8Config())


def test_int8_runs_in_ort_within_one_point_of_fp32(fp32_onnx, int8, digits16):
    ref = run_onnx(fp32_onnx, digits16.x_val)
    art = run_onnx(int8.path, digits16.x_val)
    assert accuracy(ref, digits16.y_val) > 0.9  # the net learnt something, so the bound means something
    result = check(Tolerance.for_precision(PrecisionSpec.parse("int8")), art, ref, digits16.y_val)
    assert result.accuracy_drop <= 0.01 and result.top1_agreement >= 0.97
    assert result.max_abs_error > 1e-4  # it really is quantized: logits moved


def test_graph_has_qdq_and_per_channel_symmetric_weight_scales(int8):
    graph = onnx.load(str(int8.path)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") >= 3 and ops.count("DequantizeLinear") >= 6
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    for conv in convs:
        dq = producer[conv.input[1]]
        assert dq.op_type == "DequantizeLinear"
        weight, scale, zero = (inits[name] for name in dq.input[:3])
        assert weight.dtype == np.int8 and scale.shape == (weight.shape[0],)  # one scale per out channel
        assert len(np.unique(scale)) > 1 and not zero.any()  # per-channel, symmetric (TensorRT)
    for node in graph.node:
        if node.op_type == "QuantizeLinear":  # activations: symmetric too, or TensorRT refuses them
            assert not inits[node.input[2]].any()


def test_meta_records_how_it_was_made(int8, calibration):
    meta = int8.meta
    assert meta["quantizer"] == "ort-int8" and meta["format"] == "QDQ" and meta["calibration"] == "minmax"
    assert meta["tensorrt_compatible"] is True and meta["activations"] == "int8 symmetric"
    assert meta["calibration_samples"] == sum(len(b) for b in calibration)
    assert set(meta["per_layer"].values()) == {"int8"} and len(meta["per_layer"]) == 3
    flags = set(open("/proc/cpuinfo").read().split())
    assert meta["reduce_range"] == decide_reduce_range(flags)[0]


def test_reduce_range_only_on_x86_without_vnni():
    assert decide_reduce_range({"avx2", "avx512f", "avx512_vnni"})[0] is False
    assert decide_reduce_range({"avx2", "avx_vnni"})[0] is False
    assert decide_reduce_range({"avx2", "fma"})[0] is True
    assert decide_reduce_range({"asimd", "asimddp"})[0] is False


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_other_calibration_methods_keep_accuracy(method, fp32_onnx, calibration, digits16, tmp_path):
    out = quantize_int8(fp32_onnx, tmp_path / "q.onnx", calibration, OrtInt8Config(calibration=method))
    drop = accuracy(run_onnx(fp32_onnx, digits16.x_val), digits16.y_val) - accuracy(run_onnx(out.path, digits16.x_val), digits16.y_val)
    assert out.meta["calibration"] == method and drop <= 0.02


def test_per_layer_fp32_override_keeps_that_layer_float(fp32_onnx, calibration, tmp_path):
    first = quantizable_nodes(fp32_onnx)[0]
    spec = PrecisionSpec.parse("int8", {first: "fp32"})
    out = get_quantizer("ort-int8").quantize(fp32_onnx, tmp_path / "q.onnx", spec, calibration)
    assert out.per_layer[first] == "fp32" and list(out.per_layer.values()).count("int8") == 2
    with pytest.raises(ConfigError, match="not in the model"):
        quantize_int8(fp32_onnx, tmp_path / "r.onnx", calibration, OrtInt8Config(), ["/nope/Conv"])


def test_config_is_validated():
    with pytest.raises(ConfigError, match="minmax"):
        OrtInt8Config(calibration="kl")
    with pytest.raises(ConfigError):
        OrtInt8Config(percentile=10.0)
    with pytest.raises(ConfigError, match="s8, u8"):
        OrtInt8Config(activations="int4")


class _Residual(torch.nn.Module):
    """conv -> relu -> block(conv, relu, conv) + skip -> relu -> pool -> linear: the pattern
    (a tensor feeding both a Conv and a residual Add) that decides ORT's CPU fusion."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.a = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.b = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(x + self.b(torch.relu(self.a(x))))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_u8_activations_run_every_conv_as_an_integer_kernel_in_ort(digits16, calibration, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "res.onnx"
    export_onnx(_Residual().eval(), torch.zeros(8, 1, SIZE, SIZE), path)
    u8 = quantize_int8(path, tmp_path / "u8.onnx", calibration, OrtInt8Config(activations="u8"))
    assert u8.meta["tensorrt_compatible"] is False and u8.meta["activations"] == "uint8 asymmetric"
    counts = ort_kernel_counts(u8.path)
    assert counts.get("QLinearConv", 0) == 3 and counts.get("Conv", 0) == 0 and counts.get("QLinearAdd", 0) == 1
    s8 = quantize_int8(path, tmp_path / "s8.onnx", calibration, OrtInt8Config())
    assert s8.meta["tensorrt_compatible"] is True
    ref = run_onnx(path, digits16.x_val[:64])
    for out in (u8, s8):  # both stay faithful; only their speed on ORT's CPU kernels differs
        assert (run_onnx(out.path, digits16.x_val[:64]).argmax(1) == ref.argmax(1)).mean() >= 0.9

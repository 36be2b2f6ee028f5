"""Parsers for trtexec's --exportTimes / --exportProfile / --exportLayerInfo on real-format JSON."""

from __future__ import annotations

import json

import pytest

from edgeprune.backends.tensorrt import trtexec
from edgeprune.errors import DeviceError

# First three records of NVIDIA/TensorRT tag v10.3.0 (c5b9de37),
# tools/experimental/trt-engine-explorer/examples/pytorch/resnet/A100/fp16/resnet.onnx.engine.timing.json
TIMES_10 = """[
  { "startEnqMs" : 2.67333, "endEnqMs" : 2.70722, "startH2dMs" : 2.57741, "endH2dMs" : 2.57741, "startComputeMs" : 2.57741, "endComputeMs" : 3.45088, "startD2hMs" : 3.45088, "endD2hMs" : 3.45088, "h2dMs" : 0, "computeMs" : 0.873472, "d2hMs" : 0, "latencyMs" : 0.873472 }
, { "startEnqMs" : 2.71417, "endEnqMs" : 2.72443, "startH2dMs" : 3.45702, "endH2dMs" : 3.45702, "startComputeMs" : 3.45702, "endComputeMs" : 4.30182, "startD2hMs" : 4.30182, "endD2hMs" : 4.30182, "h2dMs" : 0, "computeMs" : 0.8448, "d2hMs" : 0, "latencyMs" : 0.8448 }
, { "startEnqMs" : 3.58635, "endEnqMs" : 3.59504, "startH2dMs" : 4.30387, "endH2dMs" : 4.30387, "startComputeMs" : 4.30387, "endComputeMs" : 5.14765, "startD2hMs" : 5.14765, "endD2hMs" : 5.14765, "h2dMs" : 0, "computeMs" : 0.843776, "d2hMs" : 0, "latencyMs" : 0.843776 }
]
"""

# Constructed from the format in NVIDIA/TensorRT tag 8.2.1 samples/common/sampleReporting.cpp
# (exportJSONTrace: adds "endToEndMs" and writes the warm-up iterations too); the numbers are made up.
TIMES_82 = """[
  { "startEnqMs" : 0.5, "endEnqMs" : 0.6, "startH2dMs" : 0.6, "endH2dMs" : 0.7, "startComputeMs" : 0.7, "endComputeMs" : 9.7, "startD2hMs" : 9.7, "endD2hMs" : 9.8, "h2dMs" : 0.1, "computeMs" : 9.0, "d2hMs" : 0.1, "latencyMs" : 9.2, "endToEndMs" : 9.3 }
, { "startEnqMs" : 200.1, "endEnqMs" : 200.2, "startH2dMs" : 200.2, "endH2dMs" : 200.3, "startComputeMs" : 200.3, "endComputeMs" : 204.3, "startD2hMs" : 204.3, "endD2hMs" : 204.4, "h2dMs" : 0.1, "computeMs" : 4.0, "d2hMs" : 0.1, "latencyMs" : 4.2, "endToEndMs" : 4.3 }
, { "startEnqMs" : 204.5, "endEnqMs" : 204.6, "startH2dMs" : 204.6, "endH2dMs" : 204.7, "startComputeMs" : 204.7, "endComputeMs" : 208.9, "startD2hMs" : 208.9, "endD2hMs" : 209.0, "h2dMs" : 0.1, "computeMs" : 4.2, "d2hMs" : 0.1, "latencyMs" : 4.4, "endToEndMs" : 4.5 }
]
"""

# First three rows of v10.3.0 .../examples/pytorch/resnet/A100/fp16/resnet.onnx.engine.profile.json
PROFILE_10 = """[
  { "count" : 1 }
, { "name" : "Reformatting CopyNode for Input Tensor 0 to Conv_0 + Relu_1", "timeMs" : 0.080896, "averageMs" : 0.080896, "medianMs" : 0.080896, "percentage" : 7.95569 }
, { "name" : "Conv_0 + Relu_1", "timeMs" : 0.111616, "averageMs" : 0.111616, "medianMs" : 0.111616, "percentage" : 10.9768 }
, { "name" : "MaxPool_2", "timeMs" : 0.062464, "averageMs" : 0.062464, "medianMs" : 0.062464, "percentage" : 6.143 }
]
"""

# Layers (Inputs and other keys trimmed) of v10.3.0
# .../examples/pytorch/resnet/A100/fp16/resnet.onnx.engine.graph.json (an --exportLayerInfo file)
LAYERS_FP16 = {"Layers": [
    {"Name": "Reformatting CopyNode for Input Tensor 0 to Conv_0 + Relu_1", "LayerType": "Reformat",
     "Outputs": [{"Name": "Reformatted Input Tensor 0 to Conv_0 + Relu_1", "Location": "Device",
                  "Dimensions": [32, 3, 224, 224], "Format/Datatype": "Channel major FP16 format where channel % 4 == 0"}]},
    {"Name": "Conv_0 + Relu_1", "LayerType": "CaskConvolution",
     "Outputs": [{"Name": "onnx::MaxPool_125", "Location": "Device", "Dimensions": [32, 64, 112, 112],
                  "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}]},
    {"Name": "Reformatting CopyNode for Input Tensor 0 to Conv_5 + Add_6 + Relu_7", "LayerType": "NoOp",
     "Outputs": [{"Name": "Reformatted Input Tensor 0 to Conv_5 + Add_6 + Relu_7", "Location": "Device",
                  "Dimensions": [32, 64, 56, 56], "Format/Datatype": "Channel major FP16 format where channel % 16 == 0"}]},
    {"Name": "Reformatting CopyNode for Output Tensor 0 to reshape_after_Gemm_48", "LayerType": "Reformat",
     "Outputs": [{"Name": "191", "Location": "Device", "Dimensions": [32, 1000], "Format/Datatype": "Row major linear FP32"}]},
], "Bindings": ["input.1", "191"]}

# Two layers (trimmed) of v10.3.0 .../examples/pytorch/resnet/A100/qat/resnet-qat.onnx.engine.graph.json
LAYERS_QAT = {"Layers": [
    {"Name": "layer1.0.conv1.weight + QuantizeLinear_20 + Conv_22", "LayerType": "CaskConvolution",
     "Outputs": [{"Name": "onnx::DequantizeLinear_154", "Dimensions": [32, 64, 56, 56],
                  "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}]},
    {"Name": "MaxPool_12", "LayerType": "TiledPooling",
     "Outputs": [{"Name": "Reformatted Output Tensor 0 to MaxPool_12", "Dimensions": [32, 64, 56, 56],
                  "Format/Datatype": "Row major linear FP32"}]},
]}


def test_times_10x() -> None:
    stats = trtexec.parse_times(TIMES_10, "orin")
    assert stats.source == "measured:trtexec:orin" and stats.repeats == 3
    assert stats.median == pytest.approx(0.8448) and stats.min == pytest.approx(0.843776)
    _, compute = trtexec.latency_samples(TIMES_10)
    assert trtexec.compute_stats(compute)["n"] == 3


def test_times_82_drop_warmups_like_trtexec() -> None:
    latency, _ = trtexec.latency_samples(TIMES_82, warmup_ms=200)
    assert latency == [4.2, 4.4]
    assert len(trtexec.latency_samples(TIMES_82)[0]) == 3


def test_times_bad_input_is_a_device_error() -> None:
    with pytest.raises(DeviceError, match="not JSON"):
        trtexec.latency_samples("&&&& FAILED")
    with pytest.raises(DeviceError, match="lacks latencyMs"):
        trtexec.latency_samples('[{"startComputeMs": 1}]')
    with pytest.raises(DeviceError, match="no positive"):
        trtexec.latency_samples("[]")


def test_profile() -> None:
    count, layers = trtexec.parse_profile(PROFILE_10)
    assert count == 1 and [lt.name for lt in layers][1:] == ["Conv_0 + Relu_1", "MaxPool_2"]
    assert layers[1].average_ms == pytest.approx(0.111616) and layers[1].percentage == pytest.approx(10.9768)
    _, old = trtexec.parse_profile('[{"count": 4}, {"name": "c", "timeMs": 2, "averageMs": 0.5, "percentage": 100}]')
    assert old[0].median_ms is None  # 8.2 writes no medianMs
    with pytest.raises(DeviceError, match="count"):
        trtexec.parse_profile('[{"name": "x"}]')


def test_format_channel_multiples() -> None:
    assert trtexec.format_channel_multiple("Channel major FP16 format where channel % 8 == 0") == 8
    assert trtexec.format_channel_multiple("Thirty-two wide channel vectorized row major Int8 format") == 32
    assert trtexec.format_channel_multiple("Two wide channel vectorized row major FP16 format") == 2
    assert trtexec.format_channel_multiple("Row major linear FP32") == 1
    assert trtexec.format_channel_multiple("Channel major FP32 format") == 1


def test_layer_info_gives_the_engine_channel_multiple() -> None:
    formats = trtexec.parse_layer_info(json.dumps(LAYERS_FP16))
    assert [f.channel_multiple for f in formats] == [8, 16]  # reformat layers are not choices
    assert trtexec.engine_channel_multiple(formats) == 16
    assert trtexec.reformat_layer_count(json.dumps(LAYERS_FP16)) == 2
    assert trtexec.engine_channel_multiple(trtexec.parse_layer_info(json.dumps(LAYERS_QAT))) == 32
    with pytest.raises(DeviceError, match="profilingVerbosity=detailed"):
        trtexec.parse_layer_info('{"Layers": ["Conv_0 + Relu_1"]}')  # what layer_names_only writes

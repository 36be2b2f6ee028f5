"""tensorrt at int8 (calibrated Q/DQ ONNX, validated in ONNX Runtime) and fp16 (range check), and
the channel multiples the engine's formats want. No GPU: everything up to the trtexec line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_trt_reports import LAYERS_FP16, LAYERS_QAT

from edgeprune.backends.base import Calibration, CompileOptions
from edgeprune.backends.tensorrt import TensorRtBackend
from edgeprune.backends.tensorrt.engine import local_tensorrt
from edgeprune.backends.tensorrt.formats import (
    channel_multiple_for,
    expected_channel_multiple,
    measured_channel_multiple,
)
from edgeprune.backends.tensorrt.qdq import prepare_for_tensorrt
from edgeprune.errors import ConfigError, ValidationError

NANO = {"kind": "tensorrt", "sm": "53", "jetpack": "4.6", "tensorrt": "8.2"}
XAVIER = {"kind": "tensorrt", "sm": "72", "jetpack": "5", "tensorrt": "8.5"}
ORIN = {"kind": "tensorrt", "sm": "87", "jetpack": "6.2", "tensorrt": "10.3"}

pytestmark = pytest.mark.skipif(local_tensorrt()[0] is not None, reason="TensorRT + GPU here: see hw_tests")


def _tiny(bn: bool = True) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    layers = [torch.nn.Conv2d(3, 8, 3, padding=1), *([torch.nn.BatchNorm2d(8)] if bn else []), torch.nn.ReLU(),
              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)]
    return torch.nn.Sequential(*layers).eval(), torch.randn(1, 3, 16, 16)


def _calibration(n: int = 4, method: str = "minmax", scale: float = 1.0) -> Calibration:
    rng = np.random.default_rng(1)
    return Calibration(tuple(scale * rng.standard_normal((1, 3, 16, 16), np.float32) for _ in range(n)), method)


def _options(tmp_path: Path, target: dict, name: str, precision: str, calibration: Calibration | None = None,
             layers: dict[str, str] | None = None) -> CompileOptions:
    return CompileOptions(name, target, tmp_path / "cache", precision=precision, calibration=calibration or Calibration(),
                          layer_precisions=dict(layers or {}))


def _dq_input_types(path: Path) -> set[str]:
    import onnx

    model = onnx.load(str(path))
    inits = {i.name: onnx.TensorProto.DataType.Name(i.data_type) for i in model.graph.initializer}
    return {inits.get(n.input[0], "activation") for n in model.graph.node if n.op_type == "DequantizeLinear"}


def test_int8_compile_writes_a_tensorrt_qdq_onnx_validated_in_onnxruntime(tmp_path: Path) -> None:
    model, example = _tiny()
    art = TensorRtBackend().compile(model, example, tmp_path / "out",
                                    _options(tmp_path, XAVIER, "jetson-xavier-nx", "int8", _calibration(16)))
    assert art.precision == "int8" and art.path.name == "model.onnx" and art.meta["qdq"] is True
    assert " --int8 --fp16 " in art.meta["build_command"]
    assert art.meta["validated_with"] == "onnxruntime (the engine itself is built on the board)"
    check = art.meta["int8_validation"]
    assert check["samples"] == 16 and 0 <= check["top1_agreement_vs_fp32"] <= 1
    assert art.meta["validated"].startswith("Q/DQ ONNX in onnxruntime vs pytorch fp32 on 16 calibration samples")
    q = art.meta["quantization"]
    assert q["activations"] == "int8 symmetric" and q["tensorrt_compatible"] and q["calibration_samples"] == 16
    assert q["per_layer"] == {"/0/Conv": "int8", "/5/Gemm": "int8"} and art.meta["float_layers"] == []
    # what the board parses: int8 Q/DQ only (ORT's INT32 bias DequantizeLinear folded to float)
    assert _dq_input_types(art.path) <= {"INT8", "activation"}
    assert len(art.meta["qdq_fixes"]["folded_int32_bias_dequantize"]) == 2
    assert art.meta["opset"] == 17 and art.meta["channel_rule"]["channel_multiple"] == 32
    sidecar = json.loads(art.files[-1].read_text())
    assert sidecar["validated_with"] == art.meta["validated_with"] and sidecar["precision"] == "int8"
    assert [f.name for f in art.files] == ["model.onnx", "model.onnx.json"]
    logits = TensorRtBackend().load(art)(example.numpy())  # ONNX Runtime on the Q/DQ file
    assert logits.shape == (1, 4) and np.isfinite(logits).all()


def test_int8_on_orin_and_calibration_method_and_float_layers(tmp_path: Path) -> None:
    model, example = _tiny()
    options = _options(tmp_path, ORIN, "jetson-orin-nano", "int8", _calibration(4, "percentile"), {"/5/Gemm": "fp32"})
    art = TensorRtBackend().compile(model, example, tmp_path / "out", options)
    assert art.meta["quantization"]["calibration"] == "percentile"
    assert art.meta["quantization"]["per_layer"] == {"/0/Conv": "int8", "/5/Gemm": "fp32"}
    assert art.meta["float_layers"] == ["/5/Gemm"] and "fp16 or fp32" in art.meta["float_layers_note"]
    assert " --int8 --fp16 " in art.meta["build_command"] and art.meta["tensorrt"] == "10.3"
    with pytest.raises(ConfigError, match="not in the model: /9/Conv"):
        TensorRtBackend().compile(model, example, tmp_path / "bad",
                                  _options(tmp_path, ORIN, "jetson-orin-nano", "int8", _calibration(2), {"/9/Conv": "fp32"}))


def test_folding_int32_bias_keeps_onnxruntime_outputs(tmp_path: Path) -> None:
    from edgeprune.backends.onnx_export import export_onnx
    from edgeprune.quantize.base import run_onnx
    from edgeprune.quantize.ort_int8 import OrtInt8Config, quantize_int8

    model, example = _tiny()
    export_onnx(model, example, tmp_path / "fp32.onnx", 13)
    raw = quantize_int8(tmp_path / "fp32.onnx", tmp_path / "raw.onnx", list(_calibration(4).batches),
                        OrtInt8Config(activations="s8")).path
    assert "INT32" in _dq_input_types(raw)  # what ORT writes and TensorRT cannot parse
    fixed = tmp_path / "fixed.onnx"
    shutil.copyfile(raw, fixed)
    fixes = prepare_for_tensorrt(fixed)
    assert fixes.folded_int32_bias and _dq_input_types(fixed) <= {"INT8", "activation"}
    x = np.random.default_rng(2).standard_normal((8, 3, 16, 16), np.float32)
    np.testing.assert_allclose(run_onnx(fixed, x), run_onnx(raw, x), rtol=0, atol=1e-6)
    assert prepare_for_tensorrt(fixed).folded_int32_bias == ()  # idempotent


def test_fp16_records_ranges_and_says_what_it_checked_on(tmp_path: Path) -> None:
    model, example = _tiny()
    art = TensorRtBackend().compile(model, example, tmp_path / "a", _options(tmp_path, XAVIER, "jetson-xavier-nx", "fp16"))
    check = art.meta["fp16_check"]
    assert "random inputs" in check["checked_on"] and check["limit"] == 65504.0 and check["headroom"] > 1
    assert set(check["max_activation_by_layer"]) >= {"/0/Conv", "/5/Gemm"}
    assert " --fp16 " in art.meta["build_command"] and art.meta["channel_rule"]["channel_multiple"] == 8
    nano = TensorRtBackend().compile(model, example, tmp_path / "b",
                                     _options(tmp_path, NANO, "jetson-nano", "fp16", _calibration(6)))
    assert nano.meta["fp16_check"]["checked_on"] == "6 calibration samples"
    assert nano.meta["channel_rule"]["channel_multiple"] == 2


def test_fp16_overflow_is_a_validation_error_naming_the_layer(tmp_path: Path) -> None:
    model, example = _tiny(bn=False)
    with torch.no_grad():
        model[0].weight.fill_(5000.0)  # |activation| = 27 taps x 5000 x 10 = 1.35e6 > 65504
        model[0].bias.zero_()
    ones = Calibration((10 * np.ones((1, 3, 16, 16), np.float32),))
    with pytest.raises(ValidationError, match=r"tensorrt --fp16 for jetson-nano: FP16 overflow: activation of "
                                              r"layer '/0/Conv'.*checked on 1 calibration samples") as info:
        TensorRtBackend().compile(model, example, tmp_path / "o", _options(tmp_path, NANO, "jetson-nano", "fp16", ones))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "o" / "model.onnx.json").exists()  # no build command for an overflowing model


def test_per_layer_overrides_only_where_they_can_be_honoured(tmp_path: Path) -> None:
    model, example = _tiny()
    with pytest.raises(ConfigError, match="per-layer overrides are supported for int8 artifacts only"):
        TensorRtBackend().compile(model, example, tmp_path / "x",
                                  _options(tmp_path, XAVIER, "jetson-xavier-nx", "fp16", layers={"/0/Conv": "fp32"}))
    with pytest.raises(ConfigError, match="fp32, fp16 or int8, not 'w4a8'"):
        TensorRtBackend().compile(model, example, tmp_path / "y",
                                  _options(tmp_path, XAVIER, "jetson-xavier-nx", "int8", _calibration(1), {"/0/Conv": "w4a8"}))


def test_channel_multiples_from_the_formats() -> None:
    from edgeprune.targets import get_target

    assert expected_channel_multiple(XAVIER, "fp32").multiple == 1
    assert expected_channel_multiple(NANO, "fp16").multiple == 2  # no Tensor Cores: half2
    assert expected_channel_multiple(XAVIER, "fp16").format == "Channel major FP16 format where channel % 8 == 0"
    assert expected_channel_multiple(ORIN, "fp16").multiple == 8
    assert expected_channel_multiple(XAVIER, "int8").multiple == 32 and expected_channel_multiple(ORIN, "int8").multiple == 32
    assert expected_channel_multiple({"sm": "70"}, "int8").multiple == 4  # V100: dp4a, no INT8 Tensor Cores
    assert "no compiler_target.sm" in expected_channel_multiple({}, "int8", "x").note
    with pytest.raises(ConfigError, match="sm_53.*no int8"):
        expected_channel_multiple(NANO, "int8", "jetson-nano")
    assert channel_multiple_for(get_target("jetson-xavier-nx"), "int8") == 32
    assert channel_multiple_for(get_target("jetson-nano"), "fp16") == 2
    measured = measured_channel_multiple(json.dumps(LAYERS_FP16))
    assert (measured.multiple, measured.source) == (16, "measured:exportLayerInfo")
    assert measured.format.endswith("channel % 16 == 0") and "2 reformat layers" in measured.note
    assert measured_channel_multiple(json.dumps(LAYERS_QAT)).multiple == 32

"""The tensorrt backend on a machine without TensorRT: validated ONNX + the board's build command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeprune.backends import get_backend
from edgeprune.backends.base import CompileOptions
from edgeprune.backends.tensorrt.engine import local_tensorrt
from edgeprune.errors import ConfigError, DeviceError
from edgeprune.profilers.base_settings import MeasureSettings

NANO = {"kind": "tensorrt", "sm": "53", "jetpack": "4.6", "tensorrt": "8.2"}
XAVIER = {"kind": "tensorrt", "sm": "72", "jetpack": "5", "tensorrt": "8.5"}

pytestmark = pytest.mark.skipif(local_tensorrt()[0] is not None, reason="TensorRT + GPU here: see hw_tests")


def _tiny() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4))
    return model.eval(), torch.randn(1, 3, 16, 16)


def _options(tmp_path: Path, target: dict, name: str, precision: str = "fp16") -> CompileOptions:
    return CompileOptions(target_name=name, compiler_target=target, cache_dir=tmp_path / "cache", precision=precision)


def test_compile_writes_validated_onnx_and_build_command(tmp_path: Path) -> None:
    import onnx

    backend = get_backend("tensorrt")
    assert backend.unavailable_reason() is None
    model, example = _tiny()
    art = backend.compile(model, example, tmp_path / "out", _options(tmp_path, NANO, "jetson-nano"))
    assert art.runtime == "tensorrt" and art.path.name == "model.onnx" and art.precision == "fp16"
    assert onnx.load(str(art.path)).opset_import[0].version == 13  # what TensorRT 8.2 parses
    assert art.meta["engine"] == "not built here: no local TensorRT (engines are built on the board over SSH)"
    assert art.meta["build_command"].startswith("/usr/src/tensorrt/bin/trtexec --onnx=./model.onnx ")
    assert " --fp16 " in art.meta["build_command"] and art.meta["validated"].startswith("onnxruntime vs pytorch")
    assert json.loads(art.files[-1].read_text())["build_command"] == art.meta["build_command"]
    run = backend.load(art)  # ONNX Runtime here, and the meta says so
    assert "ONNX Runtime" in art.meta["load"]
    with torch.no_grad():
        np.testing.assert_allclose(run(example.numpy()), model(example).numpy(), atol=1e-4, rtol=1e-4)
    with pytest.raises(DeviceError, match=r"--device ssh://USER@JETSON \(not built here"):
        backend.measure(art, MeasureSettings())


def test_int8_rules(tmp_path: Path) -> None:
    backend = get_backend("tensorrt")
    model, example = _tiny()
    with pytest.raises(ConfigError, match="int8 is not possible on jetson-nano.*fp16"):
        backend.compile(model, example, tmp_path, _options(tmp_path, NANO, "jetson-nano", "int8"))
    with pytest.raises(ConfigError, match="needs calibration batches"):
        backend.compile(model, example, tmp_path, _options(tmp_path, XAVIER, "jetson-xavier-nx", "int8"))


def test_compile_onnx_accepts_a_symmetric_qdq_model_and_refuses_uint8(tmp_path: Path) -> None:
    """ORT's static QDQ with symmetric int8 activations becomes an int8 artifact built with
    --int8 --fp16; ORT's default (uint8, non-zero zero-points) is refused before any board."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    model, example = _tiny()
    fp32 = get_backend("tensorrt").compile(model, example, tmp_path / "fp32",
                                           _options(tmp_path, XAVIER, "jetson-xavier-nx", "fp32"))
    assert " --noTF32 " in fp32.meta["build_command"]

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": torch.randn(1, 3, 16, 16).numpy()} for _ in range(4)])

        def get_next(self) -> dict | None:
            return next(self.items, None)

    options = _options(tmp_path, XAVIER, "jetson-xavier-nx", "int8")
    s8 = tmp_path / "s8.onnx"
    quantize_static(str(fp32.path), str(s8), Batches(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    art = get_backend("tensorrt").compile_onnx(s8, tuple(example.shape), tmp_path / "int8", options)
    assert art.meta["qdq"] is True and " --int8 --fp16 " in art.meta["build_command"]
    u8 = tmp_path / "u8.onnx"
    quantize_static(str(fp32.path), str(u8), Batches(), quant_format=QuantFormat.QDQ)
    with pytest.raises(ConfigError, match="non-zero zero-point|writes UINT8"):
        get_backend("tensorrt").compile_onnx(u8, tuple(example.shape), tmp_path / "u8", options)
    with pytest.raises(ConfigError, match="not a Q/DQ ONNX"):
        get_backend("tensorrt").compile_onnx(fp32.path, tuple(example.shape), tmp_path / "x", options)

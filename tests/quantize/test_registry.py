"""The quantizer registry: discovery, unknown names, and a cheap package import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgeprune.errors import ConfigError, UnknownNameError
from edgeprune.quantize import get_quantizer, quantizer_names
from edgeprune.quantize.precision import PrecisionSpec


def test_builtin_quantizers_are_discovered():
    assert {"ort-int8", "fp16"} <= set(quantizer_names())
    assert get_quantizer("ort-int8").name == "ort-int8"


def test_unknown_quantizer_lists_known_ones():
    with pytest.raises(UnknownNameError, match="ort-int8"):
        get_quantizer("tflite")


def test_quantizers_refuse_precisions_they_cannot_write(tmp_path):
    with pytest.raises(ConfigError, match="int8"):
        get_quantizer("ort-int8").quantize(tmp_path / "a.onnx", tmp_path / "b.onnx", PrecisionSpec.parse("w4a8"), [])
    with pytest.raises(ConfigError, match="fp16 or fp32"):
        get_quantizer("fp16").quantize(tmp_path / "a.onnx", tmp_path / "b.onnx",
                                       PrecisionSpec.parse("fp16", {"/0/Conv": "int8"}), [])


def test_package_import_does_not_load_toolchains():
    code = ("import sys, edgeprune.quantize as q; heavy = [m for m in ('onnx', 'onnxruntime', 'torch') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

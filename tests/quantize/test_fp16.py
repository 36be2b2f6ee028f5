"""FP16 conversion and the FP16 safety check."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from edgeprune.backends.onnx_export import export_onnx
from edgeprune.errors import ValidationError
from edgeprune.quantize import get_quantizer
from edgeprune.quantize.base import run_onnx
from edgeprune.quantize.fp16 import FP16_MAX, check_fp16_safety, convert_fp16
from edgeprune.quantize.precision import PrecisionSpec, Tolerance, check
from tests.quantize.conftest import SIZE


def test_fp16_matches_fp32_within_fp16_tolerance(fp32_onnx, digits16, tmp_path):
    out = get_quantizer("fp16").quantize(fp32_onnx, tmp_path / "h.onnx", PrecisionSpec.parse("fp16"), [])
    x = digits16.x_val[:64]
    half, full = run_onnx(out.path, x), run_onnx(fp32_onnx, x)
    assert half.dtype == np.float32  # keep_io_types: callers still feed and read float32
    result = check(Tolerance.for_precision(PrecisionSpec.parse("fp16")), half, full)
    assert 0 < result.max_abs_error and result.top1_agreement == 1.0  # really fp16: not bit-identical
    assert set(out.per_layer.values()) == {"fp16"}


def test_safety_check_passes_a_normal_net_and_reports_ranges(fp32_onnx, digits16, tmp_path):
    half = convert_fp16(fp32_onnx, tmp_path / "h.onnx").path
    report = check_fp16_safety(fp32_onnx, digits16.x_val[:64], half)
    assert report.headroom > 1 and report.comparison.top1_agreement == 1.0
    kinds = {r.kind for r in report.layers}
    assert kinds == {"activation", "weight"} and any(r.op_type == "Conv" for r in report.layers)


def test_safety_check_names_the_overflowing_layer(trained_net, digits16, tmp_path):
    net = copy.deepcopy(trained_net)
    with torch.no_grad():  # scale the second conv by 1e5 and undo it in the classifier:
        net[4].weight *= 1e5  # float32 output unchanged, but the activations leave fp16's range
        net[4].bias *= 1e5
        net[9].weight /= 1e5
    path = tmp_path / "big.onnx"
    export_onnx(net, torch.zeros(8, 1, SIZE, SIZE), path)
    assert np.allclose(run_onnx(path, digits16.x_val[:16]), net(torch.from_numpy(digits16.x_val[:16])).detach().numpy(),
                       atol=1e-3, rtol=1e-3)
    with pytest.raises(ValidationError, match=r"FP16 overflow: activation of layer '/4/Conv'") as info:
        check_fp16_safety(path, digits16.x_val[:64])
    assert "\n" not in str(info.value) and f"{FP16_MAX:g}" in str(info.value)
    half = convert_fp16(path, tmp_path / "big16.onnx").path  # and its fp16 file is indeed broken
    with pytest.raises(ValidationError):
        check(Tolerance.for_precision(PrecisionSpec.parse("fp16")),
              run_onnx(half, digits16.x_val[:64]), run_onnx(path, digits16.x_val[:64]))

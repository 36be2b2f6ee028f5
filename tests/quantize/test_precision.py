"""Precision strings, per-layer JSON and the tolerance check (pure Python + numpy)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeprune.errors import ConfigError, ValidationError
from edgeprune.quantize.precision import PrecisionSpec, Tolerance, check


@pytest.mark.parametrize("text, name, w, a, is_float", [
    ("fp32", "fp32", 32, 32, True), ("FP16", "fp16", 16, 16, True), ("int8", "int8", 8, 8, False),
    ("w8a8", "int8", 8, 8, False), ("w4a8", "w4a8", 4, 8, False), ("w2a2", "w2a2", 2, 2, False),
    (" auto ", "auto", None, None, False),
])
def test_parse_accepts(text, name, w, a, is_float):
    spec = PrecisionSpec.parse(text)
    assert (spec.name, spec.weight_bits, spec.activation_bits, spec.is_float) == (name, w, a, is_float)


@pytest.mark.parametrize("text", ["", "int4x", "fp8", "w0a8", "w9a8", "w4", "a8w4", "w4a8a8", "int 8"])
def test_parse_rejects_with_config_error(text):
    with pytest.raises(ConfigError, match="precision"):
        PrecisionSpec.parse(text)


def test_per_layer_rejects_auto_and_garbage():
    with pytest.raises(ConfigError, match="auto"):
        PrecisionSpec.parse("int8", {"/0/Conv": "auto"})
    with pytest.raises(ConfigError):
        PrecisionSpec.parse("int8", {"/0/Conv": "half"})
    with pytest.raises(ConfigError):
        PrecisionSpec.parse("int8", {"": "fp32"})


def test_per_layer_json_roundtrip_and_canonical_names():
    spec = PrecisionSpec.parse("w8a8", {"/4/Conv": "fp32", "/0/Conv": "W4A8", "/9/Gemm": "int8"})
    text = spec.to_json()
    assert json.loads(text) == {"precision": "int8",
                                "per_layer": {"/0/Conv": "w4a8", "/4/Conv": "fp32", "/9/Gemm": "int8"}}
    back = PrecisionSpec.from_json(text)
    assert back == spec
    assert back.for_layer("/4/Conv").is_float and back.for_layer("/other").name == "int8"


def test_from_json_rejects_malformed():
    for bad in ("{", "[]", '{"per_layer": {}}', '{"precision": "int8", "per_layer": []}'):
        with pytest.raises(ConfigError):
            PrecisionSpec.from_json(bad)


def test_tolerance_defaults_per_precision():
    assert Tolerance.for_precision(PrecisionSpec.parse("fp32")).atol == 1e-3
    assert Tolerance.for_precision(PrecisionSpec.parse("fp16")).rtol == 1e-2
    int8 = Tolerance.for_precision(PrecisionSpec.parse("int8"))
    assert int8.atol is None and int8.min_top1_agreement >= 0.97 and int8.max_accuracy_drop == 0.01
    with pytest.raises(ConfigError, match="auto"):
        Tolerance.for_precision(PrecisionSpec.parse("auto"))
    with pytest.raises(ConfigError):
        Tolerance(atol=1e-3)


def test_check_float_bounds_and_reports():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(50, 10))
    tol = Tolerance.for_precision(PrecisionSpec.parse("fp32"))
    ok = check(tol, ref + 5e-4, ref, ref.argmax(1))
    assert ok.max_abs_error == pytest.approx(5e-4) and ok.top1_agreement == 1.0 and ok.accuracy == 1.0
    bad = ref.copy()
    bad[3, 2] += 0.5
    with pytest.raises(ValidationError, match="sample 3, class 2") as info:
        check(tol, bad, ref)
    assert "\n" not in str(info.value)


def test_check_int8_uses_agreement_and_accuracy_drop_not_max_error():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(100, 10))
    labels = ref.argmax(1)
    tol = Tolerance.for_precision(PrecisionSpec.parse("int8"))
    noisy = 1.2 * ref + 0.3  # every logit moves by a lot, no top-1 changes
    res = check(tol, noisy, ref, labels)
    assert res.max_abs_error > 0.3 and res.top1_agreement == 1.0 and res.accuracy_drop == 0
    flipped = ref.copy()
    flipped[:5] = -flipped[:5]  # 5 % of samples change class
    with pytest.raises(ValidationError, match="agreement"):
        check(tol, flipped, ref, labels)
    with pytest.raises(ValidationError, match="non-finite"):
        check(tol, np.full_like(ref, np.nan), ref)

"""ONNX Runtime backend at fp32 / int8 / fp16: the shipped file, validated like deploy validates it.

The tiny demo net (width 8, ``tests/nets.py``) is trained briefly on digits once per module so that
accuracy claims mean something; calibration uses training images only, validation the held-out
split (``digits.val``), run through the compiled artifact.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgeprune.backends import CompileOptions, get_backend
from edgeprune.backends.base import Calibration
from edgeprune.candidate.validate import validate_artifact
from edgeprune.data import make_loader
from edgeprune.errors import ConfigError, ValidationError
from edgeprune.quantize.ort_int8 import layer_precisions
from edgeprune.training.finetune import TrainConfig, pytorch_accuracy, train
from tests.nets import tiny_demo

BATCH = 8
STEM = "/stem/stem.0/Conv"


@pytest.fixture(scope="module")
def trained(digits) -> torch.nn.Module:
    net = tiny_demo()
    torch.manual_seed(0)
    train(net, make_loader(digits.train, 64, shuffle=True), TrainConfig(epochs=3, lr=0.05))
    return net.eval()


@pytest.fixture(scope="module")
def calibration(digits) -> Calibration:
    """64 training images in batches of 16 (never validation images)."""
    x = torch.stack([digits.train[i][0] for i in range(64)]).numpy()
    return Calibration(tuple(x[i:i + 16] for i in range(0, 64, 16)), "minmax")


NO_CALIBRATION = Calibration()


def _compile(model, tmp_path: Path, name: str, precision: str = "fp32", calibration=NO_CALIBRATION, layers=None):
    backend = get_backend("onnxruntime")
    options = CompileOptions("host", {}, tmp_path / "cache", precision=precision,
                             layer_precisions=dict(layers or {}), calibration=calibration)
    return backend, backend.compile(model, torch.zeros(BATCH, 1, 32, 32), tmp_path / name, options)


def _validate(model, digits, tmp_path, name, precision, **kw):
    backend, artifact = _compile(model, tmp_path, name, precision, **kw)
    return artifact, validate_artifact(backend.load(artifact), model, digits.val, BATCH, precision=precision,
                                       runtime="onnxruntime")


def test_int8_artifact_validates_within_a_point_and_runs_integer_convs(trained, digits, calibration, tmp_path):
    _, fp32 = _validate(trained, digits, tmp_path, "fp32", "fp32")
    artifact, result = _validate(trained, digits, tmp_path, "int8", "int8", calibration=calibration)
    assert artifact.precision == "int8" and artifact.path.name == "model.int8.onnx"
    assert fp32.accuracy > 0.9
    assert fp32.accuracy - result.accuracy <= 0.01
    ops = [n.op_type for n in onnx.load(str(artifact.path)).graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    meta = artifact.meta
    assert meta["quantizer"] == "ort-int8" and meta["activations"] == "uint8 asymmetric"
    assert meta["calibration"] == "minmax" and meta["calibration_samples"] == 64
    assert "reduce_range" in meta and meta["reduce_range_reason"]
    assert set(meta["per_layer"].values()) == {"int8"}
    kernels = meta["ort_kernel_counts"]
    assert kernels["integer_convs"] == 7 and kernels["float_convs"] == 0  # all 7 Convs are QLinearConv


def test_layer_precisions_keep_a_named_conv_in_float(trained, digits, calibration, tmp_path):
    artifact, result = _validate(trained, digits, tmp_path, "w8a8", "w8a8", calibration=calibration,
                                 layers={STEM: "fp32"})
    assert artifact.precision == "int8"
    written = layer_precisions(artifact.path)  # read back from the shipped graph
    assert written[STEM] == "fp32" and list(written.values()).count("int8") == 7
    graph = onnx.load(str(artifact.path)).graph
    stem = next(n for n in graph.node if n.name == STEM)
    assert stem.input[1] in {i.name for i in graph.initializer}  # float weight, no DequantizeLinear
    assert artifact.meta["ort_kernel_counts"]["float_convs"] == 1
    assert result.top1_agreement >= 0.95


def test_fp16_artifact_validates_and_records_its_safety_check(trained, digits, calibration, tmp_path):
    artifact, result = _validate(trained, digits, tmp_path, "fp16", "fp16", calibration=calibration)
    assert artifact.precision == "fp16" and artifact.path.name == "model.fp16.onnx"
    assert result.top1_agreement >= 0.99
    safety = artifact.meta["fp16_safety"]
    assert safety["samples"] == 64 and safety["headroom"] > 1
    if artifact.meta["fp16_fallback_casts"]:  # x86: no fp16 kernels in ORT's CPU provider
        assert artifact.meta["note"].startswith("fp16 on this CPU runs no faster than fp32")


def test_fp16_overflow_is_refused_naming_the_layer(trained, calibration, tmp_path):
    hot = copy.deepcopy(trained)
    with torch.no_grad():
        hot.stem[0].weight.mul_(1e5)
    with pytest.raises(ValidationError, match=r"FP16 overflow: .*'/stem/stem.0/Conv'"):
        _compile(hot, tmp_path, "hot", "fp16", calibration=calibration)


def test_int8_without_calibration_is_a_config_error(trained, tmp_path):
    with pytest.raises(ConfigError, match="^int8 needs calibration data$"):
        _compile(trained, tmp_path, "nocal", "int8")


@pytest.mark.parametrize("precision", ["w1a1", "bf16", "auto"])
def test_unknown_precision_lists_what_is_built(trained, tmp_path, precision):
    with pytest.raises(ConfigError, match=r"onnxruntime builds fp32, fp16, int8, wXaY \(2\.\.8 bits\)"):
        _compile(trained, tmp_path, "bad", precision)


def test_low_bit_needs_the_quantized_model_not_the_float_one(trained, tmp_path):
    """The evaluator hands the backend a Brevitas copy; a float model at w4a8 is refused."""
    with pytest.raises(ConfigError, match="needs a Brevitas-quantized model"):
        _compile(trained, tmp_path, "float", "w4a8")


def test_bad_per_layer_requests_are_config_errors(trained, calibration, tmp_path):
    with pytest.raises(ConfigError, match="at int8 a layer can be"):
        _compile(trained, tmp_path, "l1", "int8", calibration, {STEM: "w4a8"})
    with pytest.raises(ConfigError, match="not in the model"):
        _compile(trained, tmp_path, "l2", "int8", calibration, {"/no/such/Conv": "fp32"})
    with pytest.raises(ConfigError, match="at fp32 a layer can be fp32"):
        _compile(trained, tmp_path, "l3", "fp32", layers={STEM: "int8"})


@pytest.fixture(scope="module")
def pruned_from_plan(trained, digits):
    return _pruned_from_plan(trained, digits)


def _pruned_from_plan(trained, digits):
    """l1, 50 % per layer, replayed from the plan's JSON on the original model, then 1 epoch
    (batch 16: at width 4-16 the net needs the steps; it recovers to ~84 % from 8 % unrecovered)."""
    from edgeprune.criteria import ScoreContext, get_criterion
    from edgeprune.graph import GroupedModel
    from edgeprune.plan import PruningPlan
    from edgeprune.prune import apply_plan, group_channels
    from edgeprune.search.planner import StepPolicy, next_plan

    example = torch.zeros(1, 1, 32, 32)
    batches = tuple(next(iter(make_loader(digits.train, 32, shuffle=False))) for _ in range(1))
    crit = get_criterion("l1")
    scores = crit(ScoreContext(trained, GroupedModel(trained, example), batches))
    start = PruningPlan.identity("tiny", tuple(example.shape), "l1", group_channels(trained, example))
    plan = next_plan(start, scores, StepPolicy(0.5, "layer"))
    plan = replace(plan, precision={"default": "int8", "layers": {}})
    replayed_plan = PruningPlan.from_json(plan.to_json())
    pruned = apply_plan(trained, replayed_plan, example)
    torch.manual_seed(0)
    train(pruned, make_loader(digits.train, 16, shuffle=True), TrainConfig(epochs=1, lr=0.02))
    return pruned.eval(), replayed_plan


def test_pruned_model_replays_from_its_plan_and_quantizes(pruned_from_plan, digits, calibration, tmp_path):
    pruned, plan = pruned_from_plan
    assert plan.kept_fraction() == pytest.approx(0.5, abs=0.05) and pruned.fc.in_features == 16
    _, fp32 = _validate(pruned, digits, tmp_path, "pfp32", "fp32")
    artifact, int8 = _validate(pruned, digits, tmp_path, "pint8", plan.precision["default"],
                               calibration=calibration, layers=plan.precision["layers"])
    assert fp32.accuracy > 0.75  # a width-4..16 net: the point is the int8 drop below, not this
    assert fp32.accuracy - int8.accuracy <= 0.01  # PTQ after pruning + fine-tune costs <= 1 pt
    assert artifact.meta["ort_kernel_counts"]["float_convs"] == 0


def test_pruned_model_qat_export_runs_in_ort_like_the_fake_quant_model(pruned_from_plan, digits, calibration,
                                                                       tmp_path):
    """QAT on the pruned net, shipped through the backend as exported (no re-quantization).

    The exported Q/DQ graph, run unoptimised, reproduces the fake-quant model: nearly every sample
    to < 1e-3 of the logit range, same top-1 everywhere. Not all: a value that float accumulation
    order puts on a rounding boundary flips one int8 step (seen: 1 % of the logit range on a few
    samples of this residual net); ORT's optimised session (QLinearConv/QLinearAdd) has more such
    flips. Neither moves the top-1 answer.
    """
    pytest.importorskip("modelopt.torch.quantization", reason="QAT needs nvidia-modelopt")
    from edgeprune.quantize.base import open_session, run_all
    from edgeprune.quantize.qat import prepare_qat

    pruned, _ = pruned_from_plan
    qmodel = prepare_qat(pruned, [torch.from_numpy(b) for b in calibration.batches])
    torch.manual_seed(0)
    train(qmodel, make_loader(digits.train, 64, shuffle=True), TrainConfig(epochs=0.5, lr=1e-3))
    backend, artifact = _compile(qmodel.eval(), tmp_path, "qat", "int8")  # Q/DQ already there: no calibration
    assert artifact.meta["quantizer"].startswith("none: the exported model already holds Q/DQ")
    xs = torch.stack([digits.val[i][0] for i in range(len(digits.val))])
    with torch.no_grad():
        fake = qmodel(xs).numpy()
    scale = max(1.0, float(np.abs(fake).max()))
    exact = run_all(open_session(artifact.path, optimize=False), xs.numpy())[0]
    per_sample = np.abs(exact - fake).max(1)
    assert (per_sample < 1e-3 * scale).mean() >= 0.95 and per_sample.max() < 0.02 * scale
    assert (exact.argmax(1) == fake.argmax(1)).all()
    result = validate_artifact(backend.load(artifact), qmodel, digits.val, BATCH, precision="int8")
    assert result.top1_agreement >= 0.99 and result.max_abs_error < 0.02 * scale
    float_acc = pytorch_accuracy(pruned, make_loader(digits.val, 256, shuffle=False))
    assert float_acc - result.accuracy <= 0.01


def test_channel_multiple_follows_this_cpus_kernel_blocks():
    """16 on AVX-512, 8 on AVX2 (ORT pads channels to its block: docs/channel_rounding.md);
    no opinion for an ONNX Runtime on an ARM board or for fp16."""
    from edgeprune.backends import get_backend
    from edgeprune.profilers.host import cpu_flags

    backend = get_backend("onnxruntime")
    flags = cpu_flags()
    expected = 16 if "avx512f" in flags else 8 if "avx2" in flags else 1
    assert backend.channel_multiple({"kind": "llvm", "mcpu": "auto"}, "fp32") == expected
    assert backend.channel_multiple({"kind": "llvm", "mcpu": "auto"}, "int8") == expected
    assert backend.channel_multiple({"kind": "llvm", "mtriple": "aarch64-linux-gnu"}, "int8") == 1
    assert backend.channel_multiple({"kind": "llvm"}, "fp16") == 1

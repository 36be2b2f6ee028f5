"""Deploy at integer precisions through the CLI, on a small trained net: post-training INT8, QAT
INT8 (the toolkit the runtime runs fast), low-bit w4a8 via Brevitas, and their user errors."""

from __future__ import annotations

import json

import pytest
import torch

from edgeprune.data import Preprocessing, load_data, make_loader
from edgeprune.training.finetune import TrainConfig, pytorch_accuracy, train
from tests.nets import tiny_demo
from tests.test_cli import assert_clean_error, run_cli

pytest.importorskip("brevitas", reason="low-bit deploys need edgeprune[lowbit]")
pytestmark = pytest.mark.slow

QUICK = ("--model", "tests.nets:tiny_demo", "--runtime", "onnxruntime", "--epochs", "0.5", "--step-epochs", "0.25",
         "--max-steps", "2", "--latency-budget", "50ms", "--calibration-samples", "64")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """tiny_demo trained on digits, so integer precisions have accuracy to keep."""
    torch.manual_seed(0)
    data = load_data("digits", Preprocessing())
    model = tiny_demo()
    train(model, make_loader(data.train, 64, shuffle=True), TrainConfig(epochs=4, lr=0.05))
    assert pytorch_accuracy(model, make_loader(data.val, 256, shuffle=False)) > 0.8
    path = tmp_path_factory.mktemp("w") / "tiny.pt"
    torch.save(model.state_dict(), path)
    return path


def _deploy(weights, cache_dir, out, *extra: str) -> dict:
    proc = run_cli("deploy", *QUICK, "--weights", str(weights), "--out", str(out), *extra, cache=cache_dir, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "manifest.json").read_text())


def test_qat_int8_ships_integer_kernels_within_a_point_of_float(weights, cache_dir, tmp_path):
    m = _deploy(weights, cache_dir, tmp_path / "o", "--precision", "int8", "--qat-epochs", "0.5")
    record = m["precision"]["choice"]["quantized_result"]
    assert m["precision"]["default"] == "int8" and record["toolkit"] == "brevitas"  # ORT x86 runs its export fast
    assert record["epochs"] == 0.5
    meta = m["runtimes"]["onnxruntime"]["result"]["artifact_meta"]
    assert meta["ort_kernel_counts"]["integer_convs"] > 0 and meta["ort_kernel_counts"]["float_convs"] == 0
    assert record["float_accuracy"] - m["result"]["accuracy"] <= 0.01 + 1e-9  # the gate the deploy enforced


def test_w4a8_ships_a_four_bit_file_judged_against_the_float_model(weights, cache_dir, tmp_path):
    from edgeprune.quantize.lowbit import weight_levels

    out = tmp_path / "o"
    m = _deploy(weights, cache_dir, out, "--precision", "w4a8")
    assert m["precision"]["default"] == "w4a8" and m["artifact"].endswith("model.w4a8.onnx")
    record = m["precision"]["choice"]["quantized_result"]
    assert record["toolkit"] == "brevitas" and record["epochs"] == 1.0  # low-bit default: one QAT epoch
    assert record["float_accuracy"] - m["result"]["accuracy"] <= 0.03 + 1e-9
    levels = weight_levels(out / m["artifact"])
    assert levels and max(levels.values()) <= 16
    assert "int8 kernels" in m["runtimes"]["onnxruntime"]["result"]["artifact_meta"]["note"]


def test_a_width_too_narrow_for_the_bound_is_refused_and_the_search_is_kept(weights, cache_dir, tmp_path):
    out = tmp_path / "o"
    args = ("deploy", *QUICK, "--weights", str(weights), "--precision", "w2a2", "--max-accuracy-drop", "0.001",
            "--out", str(out))
    proc = run_cli(*args, "--qat-epochs", "0", cache=cache_dir, timeout=900)
    assert_clean_error(proc, 7, "below the float model's")
    assert not (out / "manifest.json").exists() and (out / ".edgeprune-state" / "state.json").is_file()
    again = run_cli(*args, "--qat-epochs", "0.25", "--resume", cache=cache_dir, timeout=900)  # more QAT: same run
    assert_clean_error(again, 7, "after 0.25 QAT epochs")
    assert "resuming" in again.stdout + again.stderr


@pytest.mark.parametrize("args, fragment", [
    (("--precision", "fp32", "--qat-epochs", "1"), "--qat-epochs needs an integer --precision"),
    (("--precision", "w3a3"), "has no precision 'w3a3'; it has fp32, int8, fp16, w4a8, w2a2"),
])
def test_precision_user_errors(args, fragment, tmp_path):
    proc = run_cli("deploy", *QUICK, *args, "--out", str(tmp_path / "o"), cache=tmp_path)
    assert_clean_error(proc, 2, fragment)

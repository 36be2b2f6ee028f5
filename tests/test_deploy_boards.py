"""Board targets without a board, as a new user runs them: every figure is an estimate and says
so; what could not be done here is listed; nothing pretends to be measured."""

from __future__ import annotations

import json

import pytest

from tests.test_cli import run_cli

pytestmark = pytest.mark.slow


def test_jetson_nano_without_a_board_writes_the_onnx_build_command_and_labelled_estimates(cache_dir, tmp_path):
    out = tmp_path / "o"
    proc = run_cli("deploy", "--target", "jetson-nano", "--model", "tests.nets:tiny_demo", "--precision", "fp16",
                   "--epochs", "0.1", "--step-epochs", "0.1", "--max-steps", "3", "--latency-budget", "0.9x",
                   "--out", str(out), cache=cache_dir, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "manifest.json").read_text())
    assert m["runtime"] == "tensorrt" and m["precision"]["default"] == "fp16"
    for stage in ("baseline", "result"):
        assert m[stage]["latency_ms"]["source"] == "estimate:roofline"
    for step in m["search"]["steps"]:
        assert step["latency_ms"]["source"] == "estimate:roofline"
    assert m["budget"]["verdict"] == "estimated" and m["budget"]["measured_on"] is None
    meta = m["runtimes"]["tensorrt"]["result"]["artifact_meta"]
    assert "trtexec" in meta["build_command"] and "--fp16" in meta["build_command"]
    assert (out / "artifact" / "model.onnx").is_file()
    assert any("trtexec" in note for note in m["not_done_here"])
    assert "What could not be done here" in (out / "report.md").read_text()
    assert "ESTIMATED" in proc.stdout

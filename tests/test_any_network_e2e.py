"""A user's own network with a concat feeding a residual add, through the CLI: deploy prunes,
compiles and validates it, and the criteria oracle study runs on it (both died with a tensor-size
mismatch in the criteria before)."""

from __future__ import annotations

import json

import pytest

from tests.test_cli import run_cli

pytestmark = pytest.mark.slow


def test_deploy_prunes_a_concat_residual_net(cache_dir, tmp_path):
    out = tmp_path / "o"
    proc = run_cli("deploy", "--model", "tests.nets:concat_residual", "--runtime", "onnxruntime", "--epochs", "0.3",
                   "--step-epochs", "0.3", "--max-steps", "4", "--latency-budget", "0.8x", "--criterion", "taylor",
                   "--out", str(out), cache=cache_dir, timeout=900)
    assert proc.returncode in (0, 6), proc.stderr[-3000:]  # 6: the budget, never an internal error
    assert "internal error" not in proc.stderr
    if proc.returncode == 0:
        m = json.loads((out / "manifest.json").read_text())
        assert m["result"]["macs"] < m["baseline"]["macs"]
        assert m["runtimes"]["onnxruntime"]["result"]["validation"]["max_abs_error"] < 1e-3
        plan = json.loads((out / "plan.json").read_text())
        concat_groups = [g for g in plan["groups"].values() if g["channels"] == 96]
        assert concat_groups and len(concat_groups[0]["kept"]) < 96  # the concatenated width was pruned


def test_the_oracle_study_runs_on_a_concat_residual_net(cache_dir, tmp_path):
    out = tmp_path / "study"
    proc = run_cli("criteria", "compare", "--model", "tests.nets:concat_residual", "--criteria", "l1,taylor,nisp,chip",
                   "--ratios", "0.3", "--finetune-epochs", "0", "--score-batches", "1", "--heldout-batches", "1",
                   "--eval-batches", "1", "--out", str(out), cache=cache_dir, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "criteria.json").read_text())
    assert set(report["criteria"]) == {"l1", "taylor", "nisp", "chip"}


def test_deploy_prunes_a_shufflenet_stage_through_its_shuffles(cache_dir, tmp_path):
    """torchvision's ShuffleNetV2 block: the trunk (tied by shuffles and chunks) is one coupled
    group that the search prunes in whole, balanced units; the artifact matches PyTorch."""
    out = tmp_path / "o"
    proc = run_cli("deploy", "--model", "tests.nets:shuffle_stage", "--runtime", "onnxruntime", "--epochs", "0.3",
                   "--step-epochs", "0.3", "--max-steps", "3", "--latency-budget", "0.85x", "--criterion", "l1",
                   "--out", str(out), cache=cache_dir, timeout=900)
    assert proc.returncode in (0, 6), proc.stderr[-3000:]
    assert "internal error" not in proc.stderr
    if proc.returncode == 0:
        m = json.loads((out / "manifest.json").read_text())
        assert m["runtimes"]["onnxruntime"]["result"]["validation"]["max_abs_error"] < 1e-3
        trunk = json.loads((out / "plan.json").read_text())["groups"]["stage.2.branch2.5"]
        assert len(trunk["kept"]) < trunk["channels"] == 128  # the shuffled trunk itself was pruned

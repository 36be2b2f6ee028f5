"""End to end through the CLI: the real demo on host, plan replay, Ctrl-C and --resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgeprune.io import sha256
from tests.test_cli import ROOT, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    proc = run_cli("deploy", "--target", "host", "--epochs", "0.25", "--step-epochs", "0.25",
                   "--tune-trials", "8", "--latency-budget", "0.7x", "--out", str(out), cache=cache_dir, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "manifest.json").read_text()), proc


def test_manifest_lists_every_file_with_its_hash(demo_run):
    out, manifest, _ = demo_run
    assert manifest["files"], "no files listed"
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()
               and not any(part.startswith(".") for part in p.relative_to(out).parts)}
    assert on_disk - {"manifest.json"} == set(manifest["files"])
    for rel, entry in manifest["files"].items():
        assert sha256(out / rel) == entry["sha256"], rel
    assert not (out / ".edgeprune-work").exists() and not (out / ".edgeprune-state").exists()


def test_manifest_contract_and_measured_sources(demo_run):
    _, m, _ = demo_run
    assert m["target"] == "host" and m["runtime"] in ("tvm", "onnxruntime")
    assert set(m["runtimes"]) == {"tvm", "onnxruntime", "pytorch-eager"}
    assert m["runtimes"][m["runtime"]]["result"] is not None
    for name, entry in m["runtimes"].items():
        built = ("baseline", "result") if entry["result"] is not None else ("baseline",)
        for stage in built:
            assert entry[stage]["latency_ms"]["source"].startswith("measured:")
            assert entry[stage]["latency_ms"]["median"] > 0
        if entry["result"] is None:  # a runtime that lost the baseline by > 1.5x is not rebuilt, and says so
            searched = m["budget"]["resolved_on"]
            assert name != searched and "result not built" in entry["note"]
            assert entry["baseline"]["latency_ms"]["median"] > 2 * m["runtimes"][searched]["baseline"]["latency_ms"]["median"]
    assert m["result"]["macs"] < m["baseline"]["macs"]
    assert m["budget"]["latency_ms"] == pytest.approx(0.7 * m["budget"]["baseline_ms"])
    assert m["budget"]["verdict"] == "measured" and m["budget"]["measured_on"] == m["runtime"]
    shipped = m["runtimes"][m["runtime"]]["paired"]
    assert shipped["rounds"] >= 5 and m["speedup"] == pytest.approx(1 / shipped["ratio_to_reference"])
    for step in m["search"]["steps"]:  # every candidate timed against the baseline, interleaved
        lo, hi = step["ratio_spread"]
        assert lo <= step["ratio_to_baseline"] <= hi and step["rounds"] >= 5
    assert m["machine_stability"]["verdict"] in ("steady", "noisy", "very noisy")
    assert 0.5 < m["baseline"]["accuracy"] <= 1.0
    assert m["versions"]["torch"].startswith("2.") and m["versions"]["tvm"].startswith("0.27")
    assert m["energy"].startswith("not measurable")
    tvm = m["runtimes"]["tvm"]
    assert (tvm["result"] or tvm["baseline"])["artifact_meta"]["tuned"] is True


def test_plan_replay_reproduces_the_shipped_model(demo_run, cache_dir, tmp_path):
    out, m, _ = demo_run
    pt2 = tmp_path / "replayed.pt2"
    proc = run_cli("prune", "--plan", str(out / "plan.json"), "--model", "demo",
                   "--pruned-weights", str(out / "pruned_state_dict.pt"), "--out", str(pt2), cache=cache_dir)
    assert proc.returncode == 0, proc.stderr
    replayed = torch.export.load(str(pt2)).module()
    onnx_path = out / ("artifact" if m["runtime"] == "onnxruntime" else "other/onnxruntime") / "model.onnx"
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = torch.rand(1, 1, 32, 32)
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], replayed(x).detach().numpy(),
                               rtol=1e-3, atol=1e-4)


def test_report_shows_both_runtimes_side_by_side(demo_run):
    out, _, _ = demo_run
    report = (out / "report.md").read_text()
    for needle in ("| tvm |", "| onnxruntime |", "| pytorch-eager |", "measured:"):
        assert needle in report


def test_ctrl_c_keeps_progress_and_resume_finishes(cache_dir, tmp_path):
    out = tmp_path / "o"
    args = ["deploy", "--model", "tests.nets:tiny_demo", "--runtime", "onnxruntime", "--step-epochs", "1",
            "--epochs", "0.2", "--latency-budget", "1us", "--max-steps", "30", "--out", str(out)]
    env_cmd = [sys.executable, "-m", "edgeprune", *args]
    import os

    env = dict(os.environ, EDGEPRUNE_CACHE=str(cache_dir), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(env_cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = out / ".edgeprune-state" / "state.json"
    deadline = time.time() + 300
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert state.exists(), "search never checkpointed"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    saved = json.loads((out / ".edgeprune-state" / "search.json").read_text())
    steps_done, baseline_ms = len(saved["steps"]), saved["baseline_ms"]
    assert steps_done >= 1
    assert "steps" not in json.loads((out / ".edgeprune-state" / "plan.json").read_text())  # the plan is what to prune

    again = run_cli("deploy", *args[1:-2], "--out", str(out), cache=cache_dir)  # same run without --resume
    assert again.returncode == 2 and "--resume" in again.stderr

    changed = [a if a != "1us" else "50ms" for a in args[1:]]
    refused = run_cli("deploy", *changed, "--resume", cache=cache_dir)  # another budget: another run
    assert refused.returncode == 2 and "different run" in refused.stderr

    more = [a if a != "30" else "1" for a in args[1:]]  # --max-steps is a per-run cap, not a setting of the result
    done = run_cli("deploy", *more, "--resume", cache=cache_dir)
    assert done.returncode == 6, done.stderr[-2000:]  # 1 us stays out of reach; progress is kept again
    resumed = json.loads((out / ".edgeprune-state" / "search.json").read_text())
    assert resumed["steps"][0]["step"] == 0
    assert len(resumed["steps"]) > steps_done  # continued, did not start over
    assert resumed["baseline_ms"] == baseline_ms  # the budget was not re-resolved on a re-measured baseline

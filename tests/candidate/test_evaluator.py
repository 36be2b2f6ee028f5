"""The evaluator on a tiny net with ONNX Runtime: compile, validate on the data, measure locally,
and time a candidate against its reference."""

from __future__ import annotations

import pytest
import torch

from edgeprune.candidate.candidate import Candidate
from edgeprune.candidate.evaluator import CompileConfig, Evaluator
from edgeprune.devices import DeviceOptions, Reach, parse_device, profiler_for
from edgeprune.errors import ToolchainMissingError
from edgeprune.plan import PruningPlan
from edgeprune.profilers.base import MeasureSettings
from edgeprune.targets import get_target

FAST = MeasureSettings(warmup=2, repeats=10, min_repeat_ms=1.0, threads=1)


def _evaluator(tmp_path, device: str = "local", target: str = "host") -> Evaluator:
    spec = get_target(target)
    reach = parse_device(device) if device != "none" else Reach(mode="none")
    profilers = {"onnxruntime": profiler_for(reach, "onnxruntime", spec, DeviceOptions())}
    return Evaluator(spec, tmp_path / "work", tmp_path / "cache", CompileConfig(tune_trials=0, threads=1), FAST, profilers)


def _candidate(model: torch.nn.Module, tag: str) -> Candidate:
    plan = PruningPlan.identity("test", (1, 1, 32, 32), "l1", {})
    return Candidate(model.eval(), plan, torch.rand(1, 1, 32, 32), tag)


def test_evaluate_compiles_validates_and_measures(tmp_path, tiny_net, digits):
    evaluated = _evaluator(tmp_path).evaluate(_candidate(tiny_net, "baseline"), "onnxruntime", digits.val)
    assert evaluated.artifact.path.is_file() and evaluated.artifact.precision == "fp32"
    assert evaluated.measurement.latency.source == "measured:onnxruntime-local" and not evaluated.estimated
    assert evaluated.validation.samples == len(digits.val)
    assert evaluated.validation.max_abs_error < 1e-3 and evaluated.validation.top1_agreement == 1.0
    assert (tmp_path / "work" / "baseline" / "onnxruntime-fp32").is_dir()  # one folder per tag/runtime/precision


def test_no_board_estimates_and_says_so(tmp_path, tiny_net, digits):
    evaluator = _evaluator(tmp_path, device="none", target="raspberry-pi-4")
    evaluated = evaluator.evaluate(_candidate(tiny_net, "baseline"), "onnxruntime", digits.val)
    assert evaluated.estimated and evaluated.measurement.latency.source == "estimate:roofline"
    assert "not measured" in evaluated.measurement.latency.short()


def test_a_smaller_candidate_measures_faster_than_its_reference_interleaved(tmp_path):
    """Width 64 vs width 8 of the same net: ~60x fewer MACs, so the ratio is far below 1 however
    busy the machine is, because both are timed in alternating rounds."""
    from edgeprune.models.demo_net import build_demo_net

    evaluator = _evaluator(tmp_path)
    big, small = _candidate(build_demo_net(width=64), "ref"), _candidate(build_demo_net(width=8), "cand")
    ref_art, cand_art = evaluator.compile(big, "onnxruntime"), evaluator.compile(small, "onnxruntime")
    paired = evaluator.measure_against(cand_art, small, ref_art, big, goal_ratio=0.5, rounds=3)
    assert paired.ratio < 0.7 and len(paired.ratios) >= 3  # ~0.05 on a quiet machine
    assert paired.candidate.latency.median < paired.reference.latency.median


def test_missing_runtime_toolchain_is_reported_before_work(tmp_path, monkeypatch):
    """A backend whose toolchain depends on the options (TVM for an aarch64 board needs the cross
    compiler) fails the check with exit code 9 and the install command."""
    pytest.importorskip("tvm")
    monkeypatch.setenv("PATH", str(tmp_path))  # a real PATH without the cross compiler
    spec = get_target("raspberry-pi-4")
    evaluator = Evaluator(spec, tmp_path / "w", tmp_path / "c", CompileConfig(0, 1), FAST, {})
    with pytest.raises(ToolchainMissingError, match="apt-get install g\\+\\+-aarch64-linux-gnu") as info:
        evaluator.check("tvm", "fp32")
    assert info.value.exit_code == 9

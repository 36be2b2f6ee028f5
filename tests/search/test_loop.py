"""The search loop on a tiny net with ONNX Runtime (fast: no fine-tuning, few steps): it stops at
the first candidate within the budget, keeps a trace apart from the plan, refuses an impossible
budget with the best figure reached, and a checkpoint resumes with the same baseline."""

from __future__ import annotations

import json

import pytest
import torch

from edgeprune.candidate.candidate import Candidate
from edgeprune.candidate.evaluator import CompileConfig, Evaluator
from edgeprune.data import make_loader
from edgeprune.devices import DeviceOptions, Reach, profiler_for
from edgeprune.errors import BudgetError
from edgeprune.plan import FP32
from edgeprune.profilers.base import MeasureSettings
from edgeprune.search.checkpoint import Checkpoint
from edgeprune.search.config import SearchConfig
from edgeprune.search.loop import Reference, SearchInputs, initial_plan, run_search
from edgeprune.search.trace import SearchTrace
from edgeprune.targets import get_target
from edgeprune.training.finetune import TrainConfig

FAST = MeasureSettings(warmup=2, repeats=10, min_repeat_ms=1.0, threads=1)


@pytest.fixture()
def setup(tmp_path, digits):
    from edgeprune.models.demo_net import build_demo_net

    torch.manual_seed(0)
    model = build_demo_net(width=32).eval()
    example = torch.rand(1, 1, 32, 32)
    inputs = SearchInputs(model, example, make_loader(digits.train, 32, True), make_loader(digits.val, 256, False),
                          TrainConfig(epochs=0.0), None)
    spec = get_target("host")
    evaluator = Evaluator(spec, tmp_path / "work", tmp_path / "cache", CompileConfig(0, 1), FAST,
                          {"onnxruntime": profiler_for(Reach(mode="local"), "onnxruntime", spec, DeviceOptions())})
    plan = initial_plan(inputs, "l1", FP32)
    baseline = Candidate(model, plan, example, "baseline")
    ref = Reference("onnxruntime", evaluator.compile(baseline, "onnxruntime"), baseline)
    return inputs, evaluator, ref, plan, tmp_path


def _trace(budget_ratio: float) -> SearchTrace:
    return SearchTrace("onnxruntime", 1.0, budget_ratio)  # baseline_ms 1.0: the budget is a ratio


def test_a_budget_the_unpruned_model_meets_stops_at_step_0(setup):
    inputs, evaluator, ref, plan, tmp = setup
    checkpoint = Checkpoint(tmp / "state", "fp")
    out = run_search(inputs, SearchConfig(criterion="l1", max_steps=3, rounds=3), ref, evaluator, 1, checkpoint,
                     (plan, inputs.original, _trace(5.0)))
    assert len(out.trace.steps) == 1 and out.plan.groups == plan.groups
    assert 0.5 < out.trace.steps[0].ratio_to_baseline < 2.0  # the same model timed against itself


def test_search_prunes_until_the_interleaved_ratio_meets_the_goal(setup):
    inputs, evaluator, ref, plan, tmp = setup
    checkpoint = Checkpoint(tmp / "state", "fp")
    out = run_search(inputs, SearchConfig(criterion="l1", max_steps=8, max_step=0.5, rounds=3, headroom=0.0),
                     ref, evaluator, 4, checkpoint, (plan, inputs.original, _trace(0.6)))
    last = out.trace.steps[-1]
    assert last.ratio_to_baseline <= 0.6 and len(out.trace.steps) >= 2
    assert out.plan.kept_fraction() < 1.0 and last.macs < out.trace.steps[0].macs
    assert not hasattr(out.plan, "steps")  # the trace is its own record
    saved = SearchTrace.from_json(json.loads((tmp / "state" / "search.json").read_text()))
    assert len(saved.steps) == len(out.trace.steps)


def test_an_impossible_budget_names_the_best_reached_and_keeps_progress(setup):
    inputs, evaluator, ref, plan, tmp = setup
    checkpoint = Checkpoint(tmp / "state", "fp")
    with pytest.raises(BudgetError, match="best reached .* at .* MMACs"):
        run_search(inputs, SearchConfig(criterion="l1", max_steps=2, max_step=0.3, rounds=3), ref, evaluator, 1,
                   checkpoint, (plan, inputs.original, _trace(0.001)))
    resumed = checkpoint.load(inputs.original, inputs.example)
    assert resumed is not None and len(resumed.trace.steps) == 3 and resumed.trace.baseline_ms == 1.0
    assert resumed.plan.kept_fraction() < 1.0
    with pytest.raises(BudgetError):  # a resumed search continues the numbering
        run_search(inputs, SearchConfig(criterion="l1", max_steps=1, max_step=0.3, rounds=3), ref, evaluator, 1,
                   checkpoint, (resumed.plan, resumed.model, resumed.trace))
    again = checkpoint.load(inputs.original, inputs.example)
    assert [s.step for s in again.trace.steps] == [0, 1, 2, 3, 4]


def test_a_checkpoint_of_other_settings_is_refused(setup):
    inputs, evaluator, ref, plan, tmp = setup
    Checkpoint(tmp / "state", "aaa").save(plan, inputs.original, _trace(0.5), "search")
    from edgeprune.errors import ConfigError

    with pytest.raises(ConfigError, match="different run"):
        Checkpoint(tmp / "state", "bbb").load(inputs.original, inputs.example)

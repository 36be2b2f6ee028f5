"""``deploy``: the stages in order — load, baseline, search, final fine-tune, result, report.

Each stage is a call into its own package; this file only wires them and times them. Data flows
one way: options -> Loaded -> Candidate -> Evaluated -> manifest.
"""

from __future__ import annotations

import copy
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Iterator

import torch

from edgeprune.candidate.candidate import Candidate, Evaluated
from edgeprune.candidate.evaluator import Evaluator
from edgeprune.candidate.paired import Paired
from edgeprune.data import make_loader
from edgeprune.deploy.config import DeployConfig
from edgeprune.deploy.precision import FLOAT, builds, calibration_for, channel_multiple, check_against_float, quantize_result
from edgeprune.deploy.runtimes import choose_runtimes, result_runtimes
from edgeprune.deploy.stages import Setup, baseline_stage, evaluate_all
from edgeprune.devices import profiler_for, resolve_reach
from edgeprune.errors import ConfigError
from edgeprune.graph import count_macs
from edgeprune.io import default_cache_dir, fingerprint
from edgeprune.models.loading import Loaded, load_inputs
from edgeprune.plan import FP32, PruningPlan
from edgeprune.profilers.base import MeasureSettings
from edgeprune.profilers.eager import measure_eager
from edgeprune.progress import ProgressSink, null_progress
from edgeprune.report.manifest import DeployRecord, build_manifest, write_deploy_outputs
from edgeprune.search.checkpoint import Checkpoint, Resumed
from edgeprune.search.loop import Reference, SearchInputs, initial_plan, run_search
from edgeprune.search.trace import SearchTrace
from edgeprune.targets import get_target
from edgeprune.training.finetune import TrainConfig, train
from edgeprune.training.regularizers import regularized
from edgeprune.training.scratch import fine_tune_epochs, scratch_comparison

STATE_DIR = ".edgeprune-state"
WORK_DIR = ".edgeprune-work"


@dataclass
class StageClock:
    """Wall time per stage, reported in the manifest (the demo's 60 s goal is checked there)."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str, progress: ProgressSink) -> Iterator[None]:
        progress.log(f"[bold]{name}[/bold]")
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def _setup(cfg: DeployConfig, progress: ProgressSink) -> Setup:
    """Resolve target, device, runtimes and precision; fail on any of them before long work."""
    from edgeprune.report.publish import ensure_writable

    target = get_target(cfg.target)
    precisions = cfg.precision.candidates(list(target.precisions))
    reach = resolve_reach(target, cfg.device.device, offline_ok=True)
    runtimes = [rt for rt in choose_runtimes(target, reach, cfg.device.runtime) if any(builds(rt, p) for p in precisions)]
    if not runtimes:
        raise ConfigError(f"no runtime of target {target.name} builds {' or '.join(precisions)} here; "
                          f"runtimes: {', '.join(choose_runtimes(target, reach, cfg.device.runtime))}")
    ensure_writable(cfg.run.out)
    if not cfg.run.resume and (cfg.run.out / STATE_DIR / "state.json").is_file():
        raise ConfigError(f"{cfg.run.out} holds an unfinished search; rerun with --resume to continue it, "
                          f"or delete {cfg.run.out / STATE_DIR} to start over")
    if reach.mode == "none":
        progress.log(f"no board for {target.name}: latencies are roofline ESTIMATES (pass --device to measure)")
    cache_dir = cfg.run.cache_dir or default_cache_dir()
    settings = MeasureSettings(threads=cfg.compile.threads)
    profilers = {rt: profiler_for(reach, rt, target, cfg.device.options) for rt in runtimes}
    evaluator = Evaluator(target, cfg.run.out / WORK_DIR, cache_dir, cfg.compile, settings, profilers)
    for rt in runtimes:
        evaluator.check(rt, next(p for p in precisions if builds(rt, p)))
    return Setup(target, runtimes, precisions, evaluator, cache_dir, settings, reach.mode == "none")


def _search_inputs(cfg: DeployConfig, loaded: Loaded) -> SearchInputs:
    teacher = copy.deepcopy(loaded.model).eval() if cfg.finetune.distill else None
    recovery = TrainConfig(epochs=cfg.search.step_epochs, lr=cfg.finetune.lr,
                           kd_alpha=0.5 if cfg.finetune.distill else 0.0)
    return SearchInputs(loaded.model, loaded.example,
                        make_loader(loaded.data.train, cfg.finetune.batch_size, shuffle=True, seed=cfg.run.seed),
                        make_loader(loaded.data.val, 256, shuffle=False), recovery, teacher)


def _start(cfg: DeployConfig, inputs: SearchInputs, before: dict[str, Evaluated], baseline: Candidate,
           resumed: Resumed | None, progress: ProgressSink) -> tuple[PruningPlan, torch.nn.Module, SearchTrace]:
    """A fresh start resolves the budget against the fastest baseline; a resumed one keeps the
    baseline figure it was resolved against (a relative budget must not move on --resume)."""
    if resumed is not None:
        if resumed.trace.runtime not in before:
            raise ConfigError(f"the saved search measured on {resumed.trace.runtime}, which this run does not build; "
                              "resume with the same --runtime/--precision, or start over")
        progress.log(f"resuming after step {len(resumed.trace.steps) - 1}: baseline {resumed.trace.baseline_ms:.3f} ms "
                     f"on {resumed.trace.runtime} (kept from the first run)")
        return resumed.plan, resumed.model, resumed.trace
    runtime = min(before, key=lambda rt: before[rt].median_ms)
    baseline_ms = before[runtime].median_ms
    trace = SearchTrace(runtime, baseline_ms, cfg.budget.resolve(baseline_ms))
    return baseline.plan, inputs.original, trace


def _final_tune(cfg: DeployConfig, inputs: SearchInputs, state: tuple[PruningPlan, torch.nn.Module, SearchTrace],
                checkpoint: Checkpoint, progress: ProgressSink) -> None:
    plan, pruned, trace = state
    train_cfg = replace(inputs.recovery, epochs=cfg.finetune.epochs)
    try:
        with regularized(cfg.search.regularizer, pruned, inputs.train_loader, cfg.finetune.epochs) as callbacks:
            train(pruned, inputs.train_loader, train_cfg, inputs.teacher, callbacks, progress=progress,
                  description="final fine-tune")
    except KeyboardInterrupt:
        checkpoint.save(plan, pruned, trace, "search")
        raise
    checkpoint.save(plan, pruned, trace, "final")


def _pair_results(setup: Setup, after: dict[str, Evaluated], result: Candidate, before: dict[str, Evaluated],
                  baseline: Candidate, rounds: int, goal_ratio: float) -> dict[str, Paired]:
    """Result and baseline artifacts timed in alternating rounds: the reported speed-up is a
    ratio from one run, robust to how busy the machine was; more rounds while the verdict
    against the budget is undecided."""
    return {rt: setup.evaluator.measure_against(after[rt].artifact, result, before[rt].artifact, baseline,
                                                goal_ratio, rounds) for rt in after}


def _search_and_tune(cfg: DeployConfig, setup: Setup, inputs: SearchInputs, before: dict[str, Evaluated],
                     baseline: Candidate, clock: StageClock, progress: ProgressSink) -> tuple[PruningPlan, torch.nn.Module, SearchTrace]:
    checkpoint = Checkpoint(cfg.run.out / STATE_DIR, fingerprint(cfg.fingerprint_parts()))
    resumed = checkpoint.load(inputs.original, inputs.example) if cfg.run.resume else None
    state = _start(cfg, inputs, before, baseline, resumed, progress)
    trace = state[2]
    progress.log(f"budget {cfg.budget.describe()} = {trace.budget_ms:.3f} ms on {trace.runtime}"
                 + (" (ESTIMATED: no board)" if setup.estimated else ""))
    if resumed is None or resumed.phase != "final":
        with clock.stage("search: prune + fine-tune + measure", progress):
            ref = Reference(trace.runtime, before[trace.runtime].artifact, baseline)
            multiple = channel_multiple(setup.target.channel_multiple, setup.target.compiler_target, trace.runtime,
                                        baseline.precision, before[trace.runtime].measurement.details)
            progress.log(f"kept channel counts are rounded to multiples of {multiple}")
            outcome = run_search(inputs, cfg.search, ref, setup.evaluator, multiple, checkpoint, state, progress)
            state = (outcome.plan, outcome.model, outcome.trace)
        with clock.stage("final fine-tune", progress):
            _final_tune(cfg, inputs, state, checkpoint, progress)
    return state


def deploy(cfg: DeployConfig, progress: ProgressSink = null_progress) -> dict:
    """Run the whole pipeline; returns the manifest that was written to ``cfg.run.out``."""
    clock = StageClock()
    setup = _setup(cfg, progress)
    torch.manual_seed(cfg.run.seed)
    with clock.stage("load", progress):
        loaded = load_inputs(cfg.model, cfg.data, setup.cache_dir, progress)
    inputs = _search_inputs(cfg, loaded)
    setup = replace(setup, evaluator=replace(setup.evaluator, max_accuracy_drop=cfg.precision.max_accuracy_drop,
                                             calibration=calibration_for(cfg.precision, loaded, setup.precisions)))
    with clock.stage("baseline: compile + validate + measure", progress):
        baseline, before, choice = baseline_stage(cfg, setup, loaded, initial_plan(inputs, cfg.search.criterion, FP32),
                                                  progress)
        setup = replace(setup, runtimes=list(before))
        eager_before = measure_eager(loaded.model, loaded.example, setup.settings)
    plan, pruned, trace = _search_and_tune(cfg, setup, inputs, before, baseline, clock, progress)
    result = Candidate(pruned, _finish_plan(plan, cfg.model.model, loaded, pruned), loaded.example, "result")
    shipped, qat = result, None
    if result.precision not in FLOAT:
        with clock.stage("quantize: calibrate, or quantization-aware fine-tune", progress):
            shipped, qat = quantize_result(cfg.precision, result, setup.evaluator.calibration, trace.runtime,
                                           (inputs.train_loader, inputs.val_loader), cfg.finetune.lr, progress)
    rebuilt, not_rebuilt = result_runtimes({rt: e.median_ms for rt, e in before.items()}, trace.runtime)
    for runtime, reason in not_rebuilt.items():
        progress.log(f"{runtime}: {reason}")
    with clock.stage("result: compile + validate + measure", progress):
        after = evaluate_all(setup, shipped, loaded, progress, rebuilt)
        if qat is not None:
            check_against_float(qat, after, cfg.precision.max_accuracy_drop)
            choice = {**choice, "quantized_result": qat}
        paired = _pair_results(setup, after, shipped, before, baseline, cfg.search.rounds,
                               trace.budget_ms / trace.baseline_ms)
        eager_after = measure_eager(pruned, loaded.example, setup.settings)
    scratch = None
    if cfg.finetune.from_scratch:
        with clock.stage("from scratch: Scratch-E + Scratch-B", progress):
            scratch = scratch_comparison(pruned, result.plan.macs, inputs.train_loader, inputs.val_loader,
                                         fine_tune_epochs(cfg.finetune.epochs, cfg.search.step_epochs, trace.steps),
                                         cfg.run.seed, inputs.recovery, progress)
    with clock.stage("report", progress):
        record = DeployRecord(cfg, setup.target, loaded, baseline, result, before, after, paired,
                              (eager_before, eager_after), trace, dict(clock.seconds), scratch, choice,
                              not_rebuilt)
        manifest = build_manifest(record)
        write_deploy_outputs(cfg.run.out, record, manifest)
        shutil.rmtree(cfg.run.out / WORK_DIR, ignore_errors=True)
        shutil.rmtree(cfg.run.out / STATE_DIR, ignore_errors=True)
    return manifest


def _finish_plan(plan: PruningPlan, spec: str, loaded: Loaded, pruned: torch.nn.Module) -> PruningPlan:
    """Stamp the plan with the model spec and its size (MACs are sizes, not latency)."""
    (m0, p0), (m1, p1) = count_macs(loaded.model, loaded.example), count_macs(pruned, loaded.example)
    return replace(plan, model=spec, macs={"original": m0, "pruned": m1}, params={"original": p0, "pruned": p1})

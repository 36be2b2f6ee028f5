"""``deploy``: the stages in order — load, measure the baseline, search, fine-tune, compile,
validate, measure, report. Each stage is a call into its own module; this file only wires them.
"""

from __future__ import annotations

import copy
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from edgeprune import __version__
from edgeprune.config import DeployConfig
from edgeprune.data import DataBundle, load_data, make_loader
from edgeprune.errors import ConfigError, TraceError
from edgeprune.candidate.evaluator import Evaluator, RuntimeResult
from edgeprune.training.finetune import TrainConfig, pytorch_accuracy, train
from edgeprune.graph import count_macs
from edgeprune.models.demo import default_cache_dir, load_demo
from edgeprune.models.sources import load_model
from edgeprune.profilers.base import MeasureSettings
from edgeprune.profilers.eager import measure_eager
from edgeprune.progress import ProgressSink, null_progress
from edgeprune.training.regularizers import regularized
from edgeprune.report.publish import ensure_writable, publish, render_markdown, versions
from edgeprune.training.scratch import fine_tune_epochs, scratch_comparison
from edgeprune.search.loop import Checkpoint, SearchInputs, fingerprint, run_search
from edgeprune.devices.registry import profiler_for
from edgeprune.targets import TargetSpec, get_target, resolve_reach
from edgeprune.candidate.validate import ValidationResult, validate_artifact


@dataclass
class StageClock:
    """Wall time per stage, reported in the manifest (the demo's 60 s goal is checked there)."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str, progress: ProgressSink):
        progress.log(f"[bold]{name}[/bold]")
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


@dataclass(frozen=True)
class Measured:
    """A compiled, validated and measured model on one runtime."""

    result: RuntimeResult
    validation: ValidationResult

    def to_json(self) -> dict:
        return {**self.result.measurement.to_json(), "accuracy": self.validation.accuracy,
                "validation": self.validation.to_json(), "artifact_meta": self.result.artifact.meta}


def _input_shape(cfg: DeployConfig, data: DataBundle) -> tuple[int, ...]:
    shape = cfg.input_shape or (1, *data.sample_shape)
    if tuple(shape[1:]) != tuple(data.sample_shape):
        raise ConfigError(f"--input-shape {'x'.join(map(str, shape))} does not match the data's "
                          f"samples ({'x'.join(map(str, data.sample_shape))}); use --resize")
    return tuple(shape)


def check_traceable(model: nn.Module, example: torch.Tensor) -> None:
    """Fail early, naming the op, if torch.export cannot follow the model."""
    try:
        torch.export.export(model.eval(), (example,))
    except Exception as exc:  # noqa: BLE001 - export raises many error types
        text = str(exc).strip().splitlines()
        raise TraceError(f"torch.export cannot trace the model: {text[0] if text else type(exc).__name__}") from None


def _load_model(cfg: DeployConfig, data: DataBundle, cache_dir: Path, progress: ProgressSink) -> nn.Module:
    if cfg.model == "demo":
        if cfg.weights is not None:
            raise ConfigError("--weights is for your own model; the demo brings its own")
        return load_demo(data, cache_dir, progress)
    return load_model(cfg.model, cfg.weights, cfg.trust_checkpoint)


def _runtimes(cfg: DeployConfig, target: TargetSpec) -> list[str]:
    if cfg.runtime == "auto":
        if (cfg.device and cfg.device != "local") or target.reach.mode != "local":
            raise ConfigError(f"target {target.name} runs on a board: name its runtime, --runtime tvm "
                              "(TVM RPC) or --runtime onnxruntime (SSH)")
        return list(target.runtimes)
    if cfg.runtime not in target.runtimes:
        raise ConfigError(f"target {target.name} has no runtime {cfg.runtime!r}; it has {', '.join(target.runtimes)}")
    return [cfg.runtime]


def _compile_all(evaluator: Evaluator, model: nn.Module, example: torch.Tensor, runtimes: list[str],
                 tag: str, data: DataBundle, progress: ProgressSink) -> dict[str, Measured]:
    measured = {}
    for runtime in runtimes:
        result = evaluator.run(model, example, runtime, tag)
        session, where = evaluator.session(result.artifact)
        limit = EMULATED_VALIDATION_SAMPLES if where == "qemu" else None
        validation = validate_artifact(session, model, data.val, example.shape[0], runtime=f"{runtime} ({where})",
                                       limit=limit)
        measured[runtime] = Measured(result, validation)
        progress.log(f"  {tag} {runtime}: {result.measurement.latency.short()}, "
                     f"top-1 {validation.accuracy:.4f} (max |err| {validation.max_abs_error:.1e})"
                     + ("" if result.artifact.meta.get("tuned", True) or runtime != "tvm" else " [untuned]"))
    return measured


def _choose_shipped(after: dict[str, Measured], budget_ms: float) -> str:
    """The fastest measured runtime that meets the budget; if none does, the fastest.

    The budget is one figure in ms for every runtime (a ratio is resolved once, against the
    search runtime's baseline), so a slower runtime never wins just because its own baseline
    was slower too.
    """
    meeting = [rt for rt in after if after[rt].result.median_ms <= budget_ms]
    return min(meeting or list(after), key=lambda rt: after[rt].result.median_ms)


STATE_DIR = ".edgeprune-state"
EMULATED_VALIDATION_SAMPLES = 8  # qemu runs ~1 s per inference: check correctness on a few
WORK_DIR = ".edgeprune-work"


def _check_state(cfg: DeployConfig, folder: Path) -> None:
    """Never overwrite unfinished search progress by accident."""
    if not cfg.resume and (folder / "state.json").is_file():
        raise ConfigError(f"{cfg.out} holds an unfinished search; rerun with --resume to continue it, "
                          f"or delete {folder} to start over")


def _load(cfg: DeployConfig, cache_dir: Path, progress: ProgressSink) -> tuple[DataBundle, nn.Module, torch.Tensor]:
    data = load_data(cfg.data, cfg.preprocessing, cfg.val_data)
    model = _load_model(cfg, data, cache_dir, progress)
    example = torch.rand(_input_shape(cfg, data))
    check_traceable(model, example)
    return data, model, example


def _search(cfg: DeployConfig, target: TargetSpec, inputs: SearchInputs, evaluator: Evaluator,
            checkpoint: Checkpoint, progress: ProgressSink) -> tuple:
    """Run (or resume) the search; returns (plan, pruned model, phase reached)."""
    resumed = checkpoint.load(inputs.original, inputs.example) if cfg.resume else None
    if resumed and resumed[2] == "final":
        return resumed
    if resumed:
        progress.log(f"resuming after step {len(resumed[0].steps) - 1} from {checkpoint.folder}")
    outcome = run_search(inputs, cfg.search, evaluator, target.channel_multiple, checkpoint,
                         resumed[:2] if resumed else None, progress)
    return outcome.plan, outcome.model, "search"


def _final_tune(cfg: DeployConfig, inputs: SearchInputs, plan, pruned: nn.Module, checkpoint: Checkpoint,
                progress: ProgressSink) -> None:
    try:
        with regularized(cfg.search.regularizer, pruned, inputs.train_loader, cfg.epochs) as callbacks:
            train(pruned, inputs.train_loader, replace(inputs.recovery, epochs=cfg.epochs), inputs.teacher,
                  callbacks, progress=progress, description="final fine-tune")
    except KeyboardInterrupt:
        checkpoint.save(plan, pruned, "search")
        raise
    checkpoint.save(plan, pruned, "final")


def deploy(cfg: DeployConfig, progress: ProgressSink = null_progress) -> dict:
    """Run the whole pipeline; returns the manifest that was written to ``cfg.out``."""
    clock = StageClock()
    target = get_target(cfg.target)
    runtimes = _runtimes(cfg, target)
    ensure_writable(cfg.out)
    _check_state(cfg, cfg.out / STATE_DIR)
    cache_dir = cfg.cache_dir or default_cache_dir()
    torch.manual_seed(cfg.seed)
    settings = MeasureSettings(threads=cfg.threads)
    reach = resolve_reach(target, cfg.device, offline_ok=True)
    if reach.mode == "none":
        progress.log(f"no board for {target.name}: latencies are roofline ESTIMATES (pass --device to measure)")
    profilers = {rt: p for rt in runtimes if (p := profiler_for(reach, rt, target, cfg.device_options))}
    evaluator = Evaluator(target, cfg.out / WORK_DIR, cache_dir, cfg.tune_trials, settings, profilers)
    for rt in runtimes:
        evaluator.check(rt)
    with clock.stage("load", progress):
        data, model, example = _load(cfg, cache_dir, progress)
    with clock.stage("baseline: compile + validate + measure", progress):
        before = _compile_all(evaluator, model, example, runtimes, "baseline", data, progress)
        eager_before = measure_eager(model, example, settings)
    search_rt = cfg.runtime if cfg.runtime != "auto" else min(before, key=lambda rt: before[rt].result.median_ms)
    budget_ms = cfg.budget.resolve(before[search_rt].result.median_ms)
    progress.log(f"budget {cfg.budget.describe()} = {budget_ms:.3f} ms on {search_rt}")
    teacher = copy.deepcopy(model).eval() if cfg.distill else None
    inputs = SearchInputs(model, example, make_loader(data.train, cfg.batch_size, shuffle=True, seed=cfg.seed),
                          make_loader(data.val, 256, shuffle=False), search_rt, budget_ms,
                          TrainConfig(epochs=cfg.search.step_epochs, lr=cfg.lr, kd_alpha=0.5 if cfg.distill else 0.0),
                          teacher)
    checkpoint = Checkpoint(cfg.out / STATE_DIR, fingerprint(
        {"model": cfg.model, "weights": cfg.weights, "data": cfg.data, "target": target.name,
         "criterion": cfg.search.criterion, "shape": example.shape}))
    with clock.stage("search: prune + fine-tune + measure", progress):
        plan, pruned, phase = _search(cfg, target, inputs, evaluator, checkpoint, progress)
    with clock.stage("final fine-tune", progress):
        if phase != "final":
            _final_tune(cfg, inputs, plan, pruned, checkpoint, progress)
    with clock.stage("result: compile + validate + measure", progress):
        after = _compile_all(evaluator, pruned, example, runtimes, "result", data, progress)
        eager_after = measure_eager(pruned, example, settings)
    shipped = _choose_shipped(after, budget_ms)
    plan = _finish_plan(plan, cfg.model, model, pruned, example)
    scratch = None
    if cfg.from_scratch:
        with clock.stage("from scratch: Scratch-E + Scratch-B", progress):
            scratch = scratch_comparison(pruned, plan.macs, inputs.train_loader, inputs.val_loader,
                                         fine_tune_epochs(cfg.epochs, cfg.search.step_epochs, plan.steps),
                                         cfg.seed, inputs.recovery, progress)
    with clock.stage("report", progress):
        manifest = _manifest(cfg, target, data, model, pruned, example, plan, before, after, shipped,
                             (eager_before, eager_after), budget_ms, clock, search_rt)
        if scratch is not None:
            manifest["from_scratch"] = scratch
        _write_outputs(cfg.out, pruned, plan, after[shipped], after, manifest)
        shutil.rmtree(cfg.out / WORK_DIR, ignore_errors=True)
        shutil.rmtree(checkpoint.folder, ignore_errors=True)
    return manifest


def _finish_plan(plan, spec: str, model: nn.Module, pruned: nn.Module, example: torch.Tensor):
    """Stamp the plan with the model spec and its predicted size (MACs are sizes, not latency)."""
    (m0, p0), (m1, p1) = count_macs(model, example), count_macs(pruned, example)
    return replace(plan, model=spec, macs={"original": m0, "pruned": m1}, params={"original": p0, "pruned": p1})


def _size(model: nn.Module, example: torch.Tensor, accuracy: float, latency: dict) -> dict:
    macs, params = count_macs(model, example)
    return {"latency_ms": latency, "accuracy": accuracy, "macs": macs, "params": params}


def _manifest(cfg: DeployConfig, target: TargetSpec, data: DataBundle, model: nn.Module, pruned: nn.Module,
              example: torch.Tensor, plan, before: dict[str, Measured], after: dict[str, Measured],
              shipped: str, eager: tuple, budget_ms: float, clock: StageClock, search_rt: str) -> dict:
    """The public contract (README documents its keys); every latency carries its source."""
    eager_before, eager_after = eager
    chosen_before, chosen_after = before[shipped], after[shipped]
    runtimes = {rt: {"baseline": before[rt].to_json(), "result": after[rt].to_json()} for rt in after}
    runtimes["pytorch-eager"] = {"baseline": eager_before.to_json(), "result": eager_after.to_json(),
                                 "note": "reference only: not an artifact"}
    if "tvm" in runtimes and not after["tvm"].result.artifact.meta.get("tuned", False):
        runtimes["tvm"]["note"] = "UNTUNED (--tune-trials 0): slow code, not TVM's best"
    met = chosen_after.result.median_ms <= budget_ms
    return {
        "manifest_version": 1,
        "target": target.name,
        "runtime": shipped,
        "artifact": f"artifact/{chosen_after.result.artifact.path.name}",
        "model": cfg.model,
        "input": {"shape": list(example.shape), "dtype": "float32", "layout": "NCHW"},
        "preprocessing": data.preprocessing.describe(),
        "data": {"spec": cfg.data, "val_spec": cfg.val_data, "train_samples": len(data.train),
                 "val_samples": len(data.val), "classes": data.num_classes},
        "criterion": cfg.search.criterion,
        "baseline": _size(model, example, chosen_before.validation.accuracy,
                          chosen_before.result.measurement.latency.to_json()),
        "result": _size(pruned, example, chosen_after.validation.accuracy,
                        chosen_after.result.measurement.latency.to_json()),
        "budget": {"requested": cfg.budget.describe(), "latency_ms": budget_ms, "met": met,
                   "measured_on": shipped},
        "runtimes": runtimes,
        "search": {"runtime": search_rt, "criterion": cfg.search.criterion, "steps": list(plan.steps),
                   "regularizer": cfg.search.regularizer},
        "device": chosen_after.result.measurement.device,
        "energy": chosen_after.result.measurement.to_json()["energy"].get("status", "measured"),
        "plan": "plan.json",
        "weights": "pruned_state_dict.pt",
        "timing_s": dict(clock.seconds),
        "versions": versions(),
        "edgeprune": __version__,
    }


def _write_outputs(out: Path, pruned: nn.Module, plan, shipped: Measured, after: dict[str, Measured],
                   manifest: dict) -> None:
    staging = out / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "artifact").mkdir(parents=True)
    for f in shipped.result.artifact.files:
        shutil.copy2(f, staging / "artifact" / f.name)
    for rt, measured in after.items():
        if measured is not shipped:
            for f in measured.result.artifact.files:
                (staging / "other" / rt).mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, staging / "other" / rt / f.name)
    plan.save(staging / "plan.json")
    torch.save(pruned.state_dict(), str(staging / "pruned_state_dict.pt"))
    publish(staging, out, manifest, render_markdown(manifest))

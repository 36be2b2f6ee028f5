"""``edgeprune deploy``: prune (+ fine-tune) until the compiled model meets the budget on the target."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeprune.backends import runtime_names
from edgeprune.cli.guard import guarded
from edgeprune.cli.options import Lr, ModelDataOptions, Seed, Target, Threads, choices, model_data_options
from edgeprune.devices import device_forms
from edgeprune.search.strategies import strategies


def _deploy_config(inputs: ModelDataOptions, target: str, latency_budget: str, criterion: str, strategy: str,
                   regularizer: Optional[str], search: tuple[float, int], finetune: tuple[float, float, bool, bool],
                   compile_: tuple[Optional[str], int, Optional[int]], precision,
                   device: tuple[Optional[str], Optional[Path], Optional[Path]], run: tuple[Path, bool, int]):
    """Assemble the composed config; every part validates itself (ConfigError, exit 2)."""
    from edgeprune.candidate.evaluator import CompileConfig
    from edgeprune.deploy import DeployConfig, DeviceConfig, FineTuneConfig, RunConfig
    from edgeprune.devices import DeviceOptions
    from edgeprune.search.config import Budget, SearchConfig

    runtime, tune_trials, threads = compile_
    return DeployConfig(
        target=target, model=inputs.model, data=inputs.data, budget=Budget.parse(latency_budget),
        search=SearchConfig(criterion=criterion, strategy=strategy, step_epochs=search[0], max_steps=search[1],
                            regularizer=regularizer),
        finetune=FineTuneConfig(epochs=finetune[0], lr=finetune[1], distill=finetune[2], from_scratch=finetune[3]),
        compile=CompileConfig(tune_trials=tune_trials, threads=threads),
        device=DeviceConfig(device=device[0], options=DeviceOptions(known_hosts=device[1], identity_file=device[2]),
                            runtime=runtime),
        precision=precision, run=RunConfig(out=run[0], resume=run[1], seed=run[2]))


def _check_runtime(value: Optional[str]) -> Optional[str]:
    if value is not None and value not in runtime_names():
        raise typer.BadParameter(f"unknown runtime {value!r}; known: {', '.join(runtime_names())}")
    return value


@guarded
@model_data_options
def deploy(
    inputs: ModelDataOptions,
    target: Target = "host",
    latency_budget: str = typer.Option("0.5x", help="0.5x (of the unpruned model's latency) | 3.2ms | 800us"),
    criterion: str = typer.Option("taylor", help="Channel criterion (see `edgeprune criteria list`)."),
    strategy: str = typer.Option("sqrt-step", help=f"Search strategy: {choices(strategies.names())}."),
    regularizer: Optional[str] = typer.Option(
        None, help="Training-time regulariser in every fine-tune: slimming | scl | rigl | hessian-spectral | lrpet."),
    from_scratch: bool = typer.Option(False, help="Also train the pruned architecture from scratch (Scratch-E and Scratch-B)."),
    epochs: float = typer.Option(2.0, help="Final fine-tune epochs."),
    step_epochs: float = typer.Option(0.5, help="Recovery fine-tune epochs after each pruning step."),
    max_steps: int = typer.Option(12, help="Most pruning steps before giving up on the budget."),
    distill: bool = typer.Option(False, help="Knowledge distillation from the unpruned model."),
    lr: Lr = 0.01,
    runtime: Optional[str] = typer.Option(
        None, callback=_check_runtime,
        help=f"{choices(runtime_names())} (default: the target's runtime; on this machine every runtime it lists, "
             "and the faster measured ships)."),
    precision: str = typer.Option("fp32", help="Precision of the shipped artifact: one the target lists "
                                                 "(`edgeprune targets`), or auto (the fastest within --max-accuracy-drop)."),
    max_accuracy_drop: Optional[float] = typer.Option(
        None, help="Largest top-1 loss a quantized artifact may cost (0.01 = 1 pt); int8 keeps the most sensitive "
                   "layers in fp32 until it fits. auto defaults to 0.01."),
    calibration_samples: int = typer.Option(256, help="Training inputs integer precisions calibrate on."),
    calibration: str = typer.Option("minmax", help="Calibration method: minmax | entropy | percentile."),
    qat_epochs: Optional[float] = typer.Option(
        None, help="Quantization-aware fine-tune of the result, in epochs (ModelOpt for int8, Brevitas for w4a8, "
                   "w2a2, ...). Default: 1 for widths below 8 bits, 0 (calibration only) for int8."),
    tune_trials: int = typer.Option(64, help="Auto-tuning trial budget per model, for runtimes that tune (0 = untuned)."),
    threads: Threads = None,
    device: Optional[str] = typer.Option(None, help=f"Measure on a board: {device_forms()}."),
    ssh_known_hosts: Optional[Path] = typer.Option(None, help="known_hosts file pinning the board's SSH host key."),
    ssh_identity: Optional[Path] = typer.Option(None, help="SSH private key for the board."),
    out: Path = typer.Option(Path("edgeprune-out"), help="Output directory."),
    resume: bool = typer.Option(False, help="Continue from OUT/.edgeprune-state."),
    seed: Seed = 0,
) -> None:
    """Prune + fine-tune until the compiled model meets the latency budget; write artifact + report."""
    from edgeprune.criteria import criteria, load_builtin
    from edgeprune.deploy import deploy as run_deploy
    from edgeprune.deploy.precision import PrecisionConfig
    from edgeprune.progress import RichProgress

    cfg = _deploy_config(inputs, target, latency_budget, criterion, strategy, regularizer, (step_epochs, max_steps),
                         (epochs, lr, distill, from_scratch), (runtime, tune_trials, threads),
                         PrecisionConfig(precision, max_accuracy_drop, calibration_samples, calibration, qat_epochs),
                         (device, ssh_known_hosts, ssh_identity), (out, resume, seed))
    load_builtin()
    criteria.get(criterion)  # unknown criterion: fail before any work
    with RichProgress() as progress:
        manifest = run_deploy(cfg, progress)
    print(_summary(manifest, out))


def _summary(manifest: dict, out: Path) -> str:
    """The one line a deploy ends with: runtime, precision, latencies and how the budget was judged."""
    b, r, budget = manifest["baseline"], manifest["result"], manifest["budget"]
    kind = "ESTIMATED (no board)" if budget["verdict"] == "estimated" else "measured"
    verdict = "met" if budget["met"] else "NOT met"
    if budget["requested_ratio"] is not None:  # judged on the interleaved ratio: robust to load drift
        beside = "both estimated" if budget["verdict"] == "estimated" else "timed beside it"
        judged = f"budget {budget['requested_ratio']}x {verdict} at {budget['ratio']:.2f}x the baseline, {beside}"
    else:
        judged = f"budget {budget['latency_ms']:.3f} ms {verdict}"
    return (f"{manifest['runtime']} {manifest['precision']['default']}: {b['latency_ms']['median']:.3f} ms -> "
            f"{r['latency_ms']['median']:.3f} ms {kind} ({judged}), top-1 {b['accuracy']:.4f} -> {r['accuracy']:.4f}; "
            f"wrote {out}/manifest.json")

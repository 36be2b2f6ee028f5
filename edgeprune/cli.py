"""The command line: a thin typer layer over the Python API.

Every user-facing failure is an :class:`EdgepruneError`: printed as one line on stderr with its
exit code, no traceback (set ``EDGEPRUNE_DEBUG=1`` to see one).
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Callable, Optional

import typer

from edgeprune.errors import EdgepruneError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Prune, compile and measure PyTorch models on the device they ship to.")

INTERRUPTED_EXIT = 130
INTERNAL_EXIT = 70


def _fail(message: str, code: int) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def guarded(fn: Callable) -> Callable:
    """Turn typed errors into one-line messages and exit codes."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EdgepruneError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted; progress so far is saved (rerun with --resume)", INTERRUPTED_EXIT)
        except typer.Exit:
            raise
        except Exception as exc:  # noqa: BLE001 - last line of defence for the CLI only
            if os.environ.get("EDGEPRUNE_DEBUG"):
                raise
            first = str(exc).strip().splitlines()
            _fail(f"internal error ({type(exc).__name__}: {first[0] if first else ''}); "
                  "set EDGEPRUNE_DEBUG=1 for a traceback", INTERNAL_EXIT)

    return wrapper


@app.command()
@guarded
def deploy(
    target: str = typer.Option("host", help="Target name (see `edgeprune targets`) or a YAML file."),
    model: str = typer.Option("demo", help="demo | torchvision:NAME?k=v | FILE.pt2 | module:factory"),
    weights: Optional[Path] = typer.Option(None, help="State dict for the model (weights_only load)."),
    trust_checkpoint: bool = typer.Option(False, help="Allow a pickled checkpoint (runs its code!)."),
    input_shape: Optional[str] = typer.Option(None, help="NxCxHxW, e.g. 1x3x32x32 (default: from data)."),
    data: str = typer.Option("digits", help="digits | imagefolder:PATH"),
    val_data: Optional[str] = typer.Option(None, help="imagefolder:PATH for validation (else 80/20 split)."),
    mean: Optional[str] = typer.Option(None, help="Normalisation mean, comma-separated."),
    std: Optional[str] = typer.Option(None, help="Normalisation std, comma-separated."),
    resize: Optional[str] = typer.Option(None, help="HxW to resize images to."),
    latency_budget: str = typer.Option("0.5x", help="0.5x (of the unpruned model's latency) | 3.2ms | 800us"),
    criterion: str = typer.Option("taylor", help="Channel criterion (see `edgeprune criteria list`)."),
    regularizer: Optional[str] = typer.Option(
        None, help="Training-time regulariser in every fine-tune: slimming | scl | rigl | hessian-spectral | lrpet."),
    from_scratch: bool = typer.Option(
        False, help="Also train the pruned architecture from scratch (Scratch-E and Scratch-B) and report both."),
    epochs: float = typer.Option(2.0, help="Final fine-tune epochs."),
    step_epochs: float = typer.Option(0.5, help="Recovery fine-tune epochs after each pruning step."),
    max_steps: int = typer.Option(12, help="Most pruning steps before giving up on the budget."),
    distill: bool = typer.Option(False, help="Knowledge distillation from the unpruned model."),
    lr: float = typer.Option(0.01, help="Fine-tune learning rate (SGD, cosine)."),
    runtime: str = typer.Option("auto", help="auto (ship the faster measured) | tvm | onnxruntime"),
    tune_trials: int = typer.Option(64, help="TVM MetaSchedule trial budget per model (0 = untuned)."),
    threads: Optional[int] = typer.Option(None, help="Threads for every runtime (default: all cores)."),
    device: Optional[str] = typer.Option(None, help="Measure on a board: local, rpc://HOST:PORT, rpc://TRACKER:PORT/KEY or ssh://USER@HOST:PORT."),
    ssh_known_hosts: Optional[Path] = typer.Option(None, help="known_hosts file pinning the board's SSH host key."),
    ssh_identity: Optional[Path] = typer.Option(None, help="SSH private key for the board."),
    out: Path = typer.Option(Path("edgeprune-out"), help="Output directory."),
    resume: bool = typer.Option(False, help="Continue from OUT/.edgeprune-state."),
    seed: int = typer.Option(0),
) -> None:
    """Prune + fine-tune until the compiled model meets the latency budget; write artifact + report."""
    from edgeprune.config import Budget, DeployConfig, SearchConfig, parse_floats, parse_shape
    from edgeprune.data import Preprocessing
    from edgeprune.deploy import deploy as run_deploy
    from edgeprune.devices.registry import DeviceOptions
    from edgeprune.progress import RichProgress

    size = None
    if resize:
        h, _, w = resize.lower().partition("x")
        try:
            size = (int(h), int(w or h))
        except ValueError:
            _fail(f"--resize {resize!r} is not like 224x224", 2)
    cfg = DeployConfig(
        target=target, model=model, weights=weights, trust_checkpoint=trust_checkpoint,
        input_shape=parse_shape(input_shape) if input_shape else None, data=data, val_data=val_data,
        preprocessing=Preprocessing(resize=size, mean=parse_floats(mean, "--mean"), std=parse_floats(std, "--std")),
        budget=Budget.parse(latency_budget),
        search=SearchConfig(criterion=criterion, step_epochs=step_epochs, max_steps=max_steps,
                            regularizer=regularizer),
        epochs=epochs, distill=distill, lr=lr, runtime=runtime, tune_trials=tune_trials,
        threads=threads, device=device,
        device_options=DeviceOptions(known_hosts=ssh_known_hosts, identity_file=ssh_identity),
        out=out, resume=resume, seed=seed, from_scratch=from_scratch,
    )
    from edgeprune.criteria import criteria, load_builtin

    load_builtin()
    criteria.get(criterion)  # unknown criterion: fail before any work
    with RichProgress() as progress:
        manifest = run_deploy(cfg, progress)
    b, r = manifest["baseline"], manifest["result"]
    print(f"{manifest['runtime']}: {b['latency_ms']['median']:.3f} ms -> {r['latency_ms']['median']:.3f} ms "
          f"(budget {manifest['budget']['latency_ms']:.3f} ms {'met' if manifest['budget']['met'] else 'NOT met'}), "
          f"top-1 {b['accuracy']:.4f} -> {r['accuracy']:.4f}; wrote {out}/manifest.json")


@app.command()
@guarded
def prune(
    plan: Path = typer.Option(..., help="plan.json written by deploy."),
    model: str = typer.Option(..., help="The same model spec the plan was made for."),
    weights: Optional[Path] = typer.Option(None, help="State dict of the *unpruned* model."),
    pruned_weights: Optional[Path] = typer.Option(None, help="State dict of the pruned model (deploy's pruned_state_dict.pt)."),
    trust_checkpoint: bool = typer.Option(False),
    out: Path = typer.Option(Path("pruned.pt2"), help="Where to write the pruned model (torch.export archive)."),
) -> None:
    """Replay a saved plan on the original model: same architecture and kept weights."""
    import torch

    from edgeprune.models.sources import apply_weights, load_state_dict
    from edgeprune.plan import PruningPlan
    from edgeprune.prune import apply_plan

    loaded = PruningPlan.load(plan)
    original = _original_model(model, weights, trust_checkpoint)
    example = torch.rand(loaded.input_shape)
    pruned = apply_plan(original, loaded, example)
    if pruned_weights is not None:
        apply_weights(pruned, load_state_dict(pruned_weights, trust_checkpoint), pruned_weights)
    tmp = out.with_name(f".{out.name}.tmp")
    torch.export.save(torch.export.export(pruned.eval(), (example,)), str(tmp))
    os.replace(tmp, out)
    print(f"wrote {out}")


def _original_model(spec: str, weights: Optional[Path], trust: bool):
    if spec == "demo":
        from edgeprune.data import Preprocessing, load_digits_data
        from edgeprune.models.demo import default_cache_dir, load_demo

        return load_demo(load_digits_data(Preprocessing()), default_cache_dir())
    from edgeprune.models.sources import load_model

    return load_model(spec, weights, trust)


def _runtime_state(runtime: str) -> str | None:
    """``None`` if the runtime can compile here, else why not (missing toolchain / no backend)."""
    from edgeprune.backends import get_backend
    from edgeprune.errors import UnknownNameError

    try:
        return get_backend(runtime).unavailable_reason()
    except UnknownNameError:
        return f"{runtime}: no edgeprune backend yet"


def _board_state(reach) -> str:
    """Where the board is and whether its port answers now (a 1 s TCP probe, nothing more)."""
    import socket

    if reach.mode == "local":
        return "board: this machine"
    if not reach.host:
        return f"board: not configured (--device {reach.mode}://...)"
    port = reach.port or (22 if reach.mode == "ssh" else 9190)
    try:
        with socket.create_connection((reach.host, port), timeout=1.0):
            return f"board: {reach.host}:{port} reachable"
    except OSError:
        return f"board: {reach.host}:{port} unreachable"


@app.command()
@guarded
def targets() -> None:
    """List the known targets and what is usable right now (toolchains, how the board is reached)."""
    from edgeprune.targets import available_targets, load_target_file

    for name, path in available_targets().items():
        spec = load_target_file(path)
        usable = [rt for rt in spec.runtimes if _runtime_state(rt) is None]
        missing = [rt for rt in spec.runtimes if rt not in usable]
        state = f"runtimes ready: {', '.join(usable) or 'none'}"
        if missing:
            state += f"; missing: {', '.join(missing)}"
        print(f"{name:18s} {spec.kind:4s} {state}; {_board_state(spec.reach)} — {spec.description}")


criteria_app = typer.Typer(help="Channel-importance criteria.", no_args_is_help=True)
app.add_typer(criteria_app, name="criteria")


@criteria_app.command("list")
@guarded
def criteria_list() -> None:
    """Every registered criterion: its name, then its paper."""
    from edgeprune.criteria import criteria, get_criterion, load_builtin

    load_builtin()
    for name in criteria.names():
        print(f"{name}\t{get_criterion(name).paper}")


@criteria_app.command("compare")
@guarded
def criteria_compare(
    out: Path = typer.Option(..., help="Output directory: criteria.json, report.md, PNG plots."),
    model: str = typer.Option("demo", help="demo | torchvision:NAME?k=v | module:factory"),
    data: str = typer.Option("digits", help="digits | imagefolder:PATH"),
    weights: Optional[Path] = typer.Option(None, help="State dict for the model (weights_only load)."),
    trust_checkpoint: bool = typer.Option(False, help="Allow a pickled checkpoint (runs its code!)."),
    criteria_names: Optional[str] = typer.Option(
        None, "--criteria", help="Comma-separated criteria (default: all); options as NAME?key=value, "
                                 "e.g. 'taylor-so?hessian=fisher' (quote it)."),
    ratios: str = typer.Option("0.1,0.3,0.5,0.7", help="Pruning ratios (share of channels removed)."),
    finetune_epochs: float = typer.Option(0.5, help="Fine-tune after each pruning (0: skip)."),
    train_epochs: float = typer.Option(0.0, help="Train the model first (for an untrained factory); 0: as is."),
    score_batches: int = typer.Option(2, help="Training minibatches the criteria score."),
    score_on: str = typer.Option("train", help="train | heldout (criteria score the oracle's own batches: "
                                               "approximation error without sampling noise)."),
    heldout_batches: int = typer.Option(2, help="Validation minibatches the oracle uses (one pass per channel)."),
    eval_batches: int = typer.Option(0, help="Validation minibatches for accuracy, after the oracle's (0: all)."),
    batch_size: int = typer.Option(64),
    lr: float = typer.Option(0.01, help="Fine-tune learning rate (SGD, cosine)."),
    seed: int = typer.Option(0),
) -> None:
    """Correlate every criterion with the oracle (measured loss change per removed channel) and
    measure accuracy after pruning to each ratio, with and without fine-tuning."""
    import shlex

    from rich.console import Console

    from edgeprune.config import parse_floats
    from edgeprune.progress import RichProgress
    from edgeprune.studies.study import StudyConfig, run_study, rich_table

    cfg = StudyConfig(
        out=out, model=model, data=data, weights=weights, trust_checkpoint=trust_checkpoint,
        criteria=tuple(c.strip() for c in criteria_names.split(",") if c.strip()) if criteria_names else (),
        ratios=parse_floats(ratios, "--ratios") or (), finetune_epochs=finetune_epochs, train_epochs=train_epochs,
        score_batches=score_batches, score_on=score_on, heldout_batches=heldout_batches, eval_batches=eval_batches,
        batch_size=batch_size, lr=lr, seed=seed, command=shlex.join(["edgeprune", *sys.argv[1:]]),
    )
    with RichProgress() as progress:
        report = run_study(cfg, progress)
    Console(width=max(Console().width, 140)).print(rich_table(report))
    print(f"model: {report['model']['training']}; wrote {out}/criteria.json, {out}/report.md")


@app.command()
@guarded
def sparsify(
    model: str = typer.Option(..., help="demo | torchvision:NAME?k=v | FILE.pt2 | module:factory"),
    weights: Optional[Path] = typer.Option(None, help="State dict for the model (weights_only load)."),
    trust_checkpoint: bool = typer.Option(False, help="Allow a pickled checkpoint (runs its code!)."),
    data: str = typer.Option("digits", help="digits | imagefolder:PATH"),
    grayscale: bool = typer.Option(False, help="Convert imagefolder images to one channel."),
    method: str = typer.Option(..., help="magnitude | snip | scl | rigl | relief"),
    density: float = typer.Option(..., help="Fraction of conv/linear weights kept, e.g. 0.2 (= 80% sparse)."),
    structured: Optional[str] = typer.Option(None, help="Also build and measure a structured mask: 2:4 | block:4x4."),
    epochs: float = typer.Option(1.0, help="Training with the mask held (training-time methods train this long)."),
    lr: float = typer.Option(0.01, help="Learning rate (SGD, cosine)."),
    threads: Optional[int] = typer.Option(None, help="ONNX Runtime threads for the measurement (default: all cores)."),
    repeats: int = typer.Option(50, help="Timed repeats per model (median and p90 reported)."),
    out: Path = typer.Option(..., help="Output directory: model.onnx, manifest.json, report.md."),
    seed: int = typer.Option(0),
) -> None:
    """Zero individual weights with a sparsity method, then MEASURE dense vs sparse with ONNX Runtime."""
    from edgeprune.progress import RichProgress
    from edgeprune.sparsity.run import SparsifyConfig
    from edgeprune.sparsity.run import sparsify as run_sparsify

    cfg = SparsifyConfig(model=model, out=out, method=method, density=density, data=data, grayscale=grayscale,
                         weights=weights, trust_checkpoint=trust_checkpoint, structured=structured, epochs=epochs,
                         lr=lr, threads=threads, repeats=repeats, seed=seed)
    with RichProgress() as progress:
        manifest = run_sparsify(cfg, progress)
    lat = manifest["latency"]
    print(f"{method}: {manifest['sparsity']:.1%} sparse, top-1 {manifest['accuracy']['dense_pytorch']:.4f} -> "
          f"{manifest['accuracy']['sparse_pytorch']:.4f}; onnxruntime dense {lat['dense_ms']['median']:.3f} ms, "
          f"sparse {lat['sparse_ms']['median']:.3f} ms (ratio {lat['ratio']:.2f}); wrote {out}/manifest.json")


@app.command()
@guarded
def profile(
    target: str = typer.Option("host", help="Target name (see `edgeprune targets`) or a YAML file."),
    model: str = typer.Option(..., help="demo | torchvision:NAME?k=v | module:factory"),
    weights: Optional[Path] = typer.Option(None, help="State dict for the model (weights_only load)."),
    trust_checkpoint: bool = typer.Option(False, help="Allow a pickled checkpoint (runs its code!)."),
    input_shape: str = typer.Option(..., help="NxCxHxW, e.g. 1x3x64x64: the table holds for this shape only."),
    runtime: Optional[str] = typer.Option(None, help="onnxruntime | tvm (default: the target's first runtime)."),
    grid: int = typer.Option(8, help="Kept-fraction grid points per dependency group."),
    calibration: int = typer.Option(16, help="Random whole models measured for the cost-model fit."),
    rounds: int = typer.Option(3, help="Interleaved measuring rounds per block."),
    threads: Optional[int] = typer.Option(None, help="Runtime threads (default: all cores)."),
    statistic: str = typer.Option("min", help="min (steadiest on a shared CPU) | median"),
    out: Optional[Path] = typer.Option(None, help="Profile JSON (default: profiles/<target>/<model>_<shape>.json)."),
    resume: bool = typer.Option(True, "--resume/--restart", help="Reuse the partial measurements of an interrupted run."),
    seed: int = typer.Option(0, help="Seed of the calibration models."),
) -> None:
    """Measure a latency lookup table: each group's latency against kept channels, on the target."""
    import dataclasses
    import time

    import torch

    from edgeprune.config import parse_shape
    from edgeprune.latency.table import ProfileConfig, local_runtime, profile_to_file
    from edgeprune.latency.measure import PROFILE_SETTINGS
    from edgeprune.progress import RichProgress
    from edgeprune.targets import get_target

    if statistic not in ("min", "median"):
        _fail(f"--statistic {statistic!r} is not min or median", 2)
    spec = get_target(target)
    chosen = local_runtime(spec, runtime)
    shape = parse_shape(input_shape)
    config = ProfileConfig(grid=grid, calibration=calibration, rounds=rounds, statistic=statistic, seed=seed)
    settings = dataclasses.replace(PROFILE_SETTINGS, threads=threads)
    original = _original_model(model, weights, trust_checkpoint)
    start = time.perf_counter()
    with RichProgress() as progress:
        table = profile_to_file(original, torch.rand(shape), spec, chosen, model_name=model, out=out, config=config,
                                settings=settings, resume=resume, progress=progress)
    fit = table.fit
    print(f"{table.source}: base {table.base_ms:.3f} ms, {len(table.groups)} groups, staircase period {table.period}, "
          f"fit error {fit.singles_median_abs_rel_error:.1%} on single groups, {fit.whole_median_abs_rel_error:.1%} on "
          f"{len(fit.whole_counts)} whole models; wrote {table.path} in {time.perf_counter() - start:.0f} s")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

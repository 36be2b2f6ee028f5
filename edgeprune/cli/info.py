"""``targets`` and ``criteria``: what edgeprune knows (targets, criteria) and the criteria study."""

from __future__ import annotations

import shlex
import socket
import sys
from pathlib import Path
from typing import Optional

import typer

from edgeprune.cli.guard import guarded
from edgeprune.cli.options import Lr, ModelDataOptions, Seed, model_data_options

criteria_app = typer.Typer(help="Channel-importance criteria.", no_args_is_help=True)


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
    from edgeprune.devices import get_scheme

    scheme = get_scheme(reach.mode)
    if not scheme.remote:
        return "board: this machine" if reach.mode == "local" else "board: none"
    if not reach.host:
        return f"board: not configured (--device {scheme.forms})"
    port = scheme.probe_port(reach)
    try:
        with socket.create_connection((reach.host, port), timeout=1.0):
            return f"board: {reach.host}:{port} reachable"
    except OSError:
        return f"board: {reach.host}:{port} unreachable"


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
        print(f"{name:18s} {spec.kind:4s} {state}; precisions {','.join(spec.precisions)}; "
              f"{_board_state(spec.reach)} — {spec.description}")


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
@model_data_options
def criteria_compare(
    inputs: ModelDataOptions,
    out: Path = typer.Option(..., help="Output directory: criteria.json, report.md, PNG plots."),
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
    lr: Lr = 0.01,
    seed: Seed = 0,
) -> None:
    """Correlate every criterion with the oracle (measured loss change per removed channel) and
    measure accuracy after pruning to each ratio, with and without fine-tuning."""
    from rich.console import Console

    from edgeprune.models.loading import parse_floats
    from edgeprune.progress import RichProgress
    from edgeprune.studies.study import StudyBatches, StudyConfig, StudyTraining, run_study
    from edgeprune.studies.tables import rich_table

    cfg = StudyConfig(
        out=out, model=inputs.model, data=inputs.data,
        criteria=tuple(c.strip() for c in criteria_names.split(",") if c.strip()) if criteria_names else (),
        ratios=parse_floats(ratios, "--ratios") or (),
        batches=StudyBatches(size=batch_size, score=score_batches, score_on=score_on, heldout=heldout_batches,
                             evaluation=eval_batches),
        training=StudyTraining(finetune_epochs=finetune_epochs, train_epochs=train_epochs, lr=lr),
        seed=seed, command=shlex.join(["edgeprune", *sys.argv[1:]]),
    )
    with RichProgress() as progress:
        report = run_study(cfg, progress)
    Console(width=max(Console().width, 140)).print(rich_table(report))
    print(f"model: {report['model']['training']}; wrote {out}/criteria.json, {out}/report.md")

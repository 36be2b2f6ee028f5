"""The command line: a thin typer layer over the Python API, one module per group of commands.

Choices the CLI offers (runtimes, strategies, device forms, criteria) are read from the
registries, so a newly registered backend or strategy is usable from the CLI without edits here.
"""

from __future__ import annotations

import typer

from edgeprune.cli import deploy as _deploy
from edgeprune.cli import info as _info
from edgeprune.cli import models as _models

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Prune, quantize, compile and measure PyTorch models on the device they ship to.")
app.command("deploy")(_deploy.deploy)
app.command("prune")(_models.prune)
app.command("targets")(_info.targets)
app.command("sparsify")(_models.sparsify)
app.command("profile")(_models.profile)
app.add_typer(_info.criteria_app, name="criteria")


def main() -> None:  # pragma: no cover - console entry point
    app()


__all__ = ["app", "main"]

"""``python -m edgeprune`` runs the CLI (same as the ``edgeprune`` console script)."""

from edgeprune.cli import app

app()

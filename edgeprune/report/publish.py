"""The measured report: ``manifest.json`` (a public contract) and ``report.md`` (for people).

Both are written after every artifact file is in place, through a staging folder and renames,
so a reader never finds a manifest that points at missing or half-written files.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from edgeprune.errors import OutputError
from edgeprune.io import sha256, write_json_atomic

MANIFEST_VERSION = 1

def ensure_writable(out: Path) -> None:
    """Fail before any long work if ``out`` cannot be created or written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"output directory {out} is not writable: {exc.strerror or exc}") from None


def file_table(root: Path) -> dict[str, dict]:
    """Every shipped file under ``root`` (hidden state folders excluded) with its sha256."""
    table = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            if rel.as_posix() != "manifest.json":
                table[rel.as_posix()] = {"sha256": sha256(path), "bytes": path.stat().st_size}
    return table


def publish(staging: Path, out: Path, manifest: dict, report_md: str) -> None:
    """Move staged files into ``out``, then write report.md and, last, manifest.json."""
    (staging / "report.md").write_text(report_md)
    for path in sorted(staging.rglob("*")):
        if path.is_file():
            dest = out / path.relative_to(staging)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)
    shutil.rmtree(staging, ignore_errors=True)
    manifest = dict(manifest, files=file_table(out))
    write_json_atomic(out / "manifest.json", manifest)

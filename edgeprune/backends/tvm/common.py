"""What every TVM module here shares: importing TVM lazily and turning its failures into one line.

``import tvm`` costs ~1.3 s, so it happens inside functions only (listing backends stays cheap),
and TVM/torch messages run to pages while the CLI prints one ``error:`` line, so every failure is
clipped to its first line and re-raised as a typed :mod:`edgeprune.errors` exception.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from edgeprune.errors import CompileError, EdgepruneError, ToolchainMissingError

MISSING_REASON = "apache-tvm is not installed (pip install 'edgeprune[tvm]')"


def import_tvm() -> Any:
    """The ``tvm`` module, or :class:`ToolchainMissingError` (exit 9) saying how to install it."""
    try:
        import tvm
    except ImportError:
        raise ToolchainMissingError(MISSING_REASON) from None
    return tvm


@contextmanager
def tvm_step(what: str) -> Iterator[None]:
    """Turn a TVM failure in ``what`` into a one-line CompileError (the CLI prints no traceback)."""
    try:
        yield
    except EdgepruneError:
        raise
    except Exception as exc:  # noqa: BLE001 - TVM raises many types; we re-raise typed
        raise CompileError(f"TVM {what} failed: {one_line(exc)}") from exc


def one_line(exc: BaseException) -> str:
    """The first non-empty line of the message, clipped: TVM/torch messages run to pages."""
    for line in str(exc).splitlines():
        if line.strip():
            text = line.strip()
            return text if len(text) <= 300 else text[:297] + "..."
    return type(exc).__name__

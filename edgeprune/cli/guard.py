"""Every user-facing failure is an :class:`EdgepruneError`: printed as one line on stderr with its
exit code, no traceback (``EDGEPRUNE_DEBUG=1`` shows one)."""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable, NoReturn

import typer

from edgeprune.errors import EdgepruneError

INTERRUPTED_EXIT = 130
INTERNAL_EXIT = 70


def fail(message: str, code: int) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def guarded(fn: Callable) -> Callable:
    """Turn typed errors into one-line messages and exit codes."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return fn(*args, **kwargs)
        except EdgepruneError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted; progress so far is saved (rerun with --resume)", INTERRUPTED_EXIT)
        except typer.Exit:
            raise
        except Exception as exc:  # noqa: BLE001 - last line of defence for the CLI only
            if os.environ.get("EDGEPRUNE_DEBUG"):
                raise
            first = str(exc).strip().splitlines()
            fail(f"internal error ({type(exc).__name__}: {first[0] if first else ''}); "
                 "set EDGEPRUNE_DEBUG=1 for a traceback", INTERNAL_EXIT)

    return wrapper

"""A wall-clock and memory budget for dependency-graph building.

Why a watchdog thread that raises *inside* the building thread: torch-pruning's graph code is
pure Python (the hang seen on maxvit_t is millions of small Python calls, not one long C call), so
an exception delivered with ``PyThreadState_SetAsyncExc`` lands within microseconds and unwinds
the builder cleanly; the model is left as it was (building never changes weights). The
alternatives were worse here: ``signal.alarm`` works only in the main thread and steals the
user's SIGALRM handler; tracing in a subprocess cannot hand the graph back (it holds the live
modules) and would double the memory of big models; a node-count precheck alone cannot predict
the grouping cost (swin_t has only ~840 traced nodes yet grouping ran for minutes). So the guard
watches both wall clock and resident-memory growth, and :func:`check_nodes` adds a cheap cap on
the traced graph's size right after tracing.

Limits come from :class:`GraphBudget` (defaults overridable by ``EDGEPRUNE_GRAPH_TIMEOUT`` seconds,
``EDGEPRUNE_GRAPH_MAX_MEMORY_MB`` and ``EDGEPRUNE_GRAPH_MAX_NODES``). Memory is read from
``/proc/self/statm`` (Linux); where that file does not exist only the clock is enforced.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from edgeprune.errors import TraceError

T = TypeVar("T")


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass(frozen=True)
class GraphBudget:
    seconds: float = field(default_factory=lambda: _env_float("EDGEPRUNE_GRAPH_TIMEOUT", 300.0))
    max_memory_mb: float = field(default_factory=lambda: _env_float("EDGEPRUNE_GRAPH_MAX_MEMORY_MB", 8192.0))
    max_nodes: int = field(default_factory=lambda: int(_env_float("EDGEPRUNE_GRAPH_MAX_NODES", 20000)))


class _BudgetExceeded(BaseException):
    """Raised asynchronously in the building thread (BaseException: no ``except Exception`` in
    torch-pruning can swallow it)."""


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None)


def run_guarded(fn: Callable[[], T], budget: GraphBudget, what: str) -> T:
    """``fn()`` in this thread; a :class:`TraceError` if it outlasts the budget's clock or grows
    resident memory by more than ``max_memory_mb``."""
    target = threading.get_ident()
    start, base = time.monotonic(), _rss_mb()
    lock = threading.Lock()
    state = {"done": False, "reason": None}
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.05):
            elapsed = time.monotonic() - start
            rss = _rss_mb()
            reason = None
            if elapsed > budget.seconds:
                reason = f"took more than {budget.seconds:.0f} s"
            elif base is not None and rss is not None and rss - base > budget.max_memory_mb:
                reason = f"grew memory by more than {budget.max_memory_mb:.0f} MB"
            if reason:
                with lock:
                    if not state["done"]:
                        state["reason"] = reason
                        _raise_in(target, _BudgetExceeded)
                return

    watcher = threading.Thread(target=watch, name="edgeprune-graph-guard", daemon=True)
    watcher.start()
    try:
        try:
            return fn()
        finally:
            with lock:
                state["done"] = True
            stop.set()
            watcher.join()
    except _BudgetExceeded:
        raise TraceError(f"{what} {state['reason']} and was stopped (raise EDGEPRUNE_GRAPH_TIMEOUT / "
                         f"EDGEPRUNE_GRAPH_MAX_MEMORY_MB to allow more)") from None


def check_nodes(count: int, budget: GraphBudget, what: str) -> None:
    if count > budget.max_nodes:
        raise TraceError(f"{what}: the traced graph has {count} nodes, above the cap of {budget.max_nodes} "
                         f"(EDGEPRUNE_GRAPH_MAX_NODES)")

"""MetaSchedule plumbing that TVM 0.27's defaults get wrong here: builder, runner, logs, intrinsics.

Each function works around a measured failure of the stock component (see the docstrings), so
:mod:`edgeprune.backends.tvm.tuning` can stay about *what* to tune.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune.backends.tvm.common import one_line

if TYPE_CHECKING:
    import tvm
    from tvm.s_tir.meta_schedule import ExtractedTask

THREADS_ENV = "TVM_NUM_THREADS"
MS_LOGGER = "tvm.s_tir.meta_schedule"
# Host architecture -> the tvm.s_tir.tensor_intrin submodule its MetaSchedule rules need.
_INTRINSICS_BY_ARCH = {"x86_64": "x86", "amd64": "x86", "aarch64": "arm_cpu", "arm64": "arm_cpu",
                       "riscv64": "riscv_cpu"}


def tune_context(task: ExtractedTask, index: int, target: tvm.target.Target, strategy: Any,
                 threads: int, seed: int) -> Any:
    """What ``extracted_tasks_to_tune_contexts`` builds, minus its logging setup: that one
    re-configures Python logging globally (dictConfig, a console handler) and crashes when the
    logger has an unnamed handler, as under pytest."""
    from tvm.s_tir import meta_schedule as ms

    return ms.TuneContext(
        mod=task.dispatched[0], target=task.target, space_generator="post-order-apply",
        search_strategy=strategy, task_name=task.task_name, rand_state=seed + index,
        num_threads=threads, logger=logging.getLogger(f"{MS_LOGGER}.edgeprune.task_{index}"),
    ).clone()  # clone: each task needs its own search-strategy state


@contextmanager
def meta_schedule_logs(path: Path) -> Iterator[None]:
    """Route MetaSchedule's logs (a table per trial batch) to ``path`` and nowhere else while
    tuning; the logger's previous handlers and settings come back afterwards. TVM's C++ side
    writes warnings straight to stderr (e.g. "Unknown schedule rule meta_schedule.pool_max"
    once per tuning run), so file descriptor 2 goes to the same file meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(MS_LOGGER)
    saved = (logger.handlers[:], logger.level, logger.propagate)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(name)s %(message)s"))
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        with _stderr_to(path):
            yield
    finally:
        handler.close()
        logger.handlers = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]


@contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Point file descriptor 2 (what C++ ``LOG(WARNING)`` writes to) at ``path``."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "a") as log:
            os.dup2(log.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def register_host_tensor_intrinsics() -> None:
    """Register only this CPU's tensor intrinsics before MetaSchedule imports all of them.

    ``TuneContext`` imports the package ``tvm.s_tir.tensor_intrin``, which parses ~250 TVMScript
    kernels for CUDA, ROCm, Hexagon, ARM and x86. Each parse calls ``inspect.stack()``, which
    rescans ``sys.modules`` for every frame, so with torch loaded the import takes 30-150 s
    (measured here: 43 s, against 0.4 s for the x86 file alone). The CPU
    schedule rules only need the host's intrinsics (x86: ``dot_16x4_vnni``/``_avx512``), so the
    package is registered un-executed and only the host's submodule is imported. Later imports
    of the package in this process get it without the GPU intrinsics (import a submodule such
    as ``tvm.s_tir.tensor_intrin.cuda`` explicitly if needed). Unknown architectures get the
    full import.
    """
    import importlib
    import importlib.util

    package = "tvm.s_tir.tensor_intrin"
    submodule = _INTRINSICS_BY_ARCH.get(platform.machine().lower())
    if package in sys.modules:
        return
    if submodule is None:
        importlib.import_module(package)
        return
    spec = importlib.util.find_spec(package)
    sys.modules[package] = importlib.util.module_from_spec(spec)
    importlib.import_module(f"{package}.{submodule}")


def in_process_builder() -> Any:
    """A MetaSchedule builder that compiles candidates in this process, one after another.

    Why not ``LocalBuilder``: it starts fresh Python workers for every batch (~2.6 s each to
    import TVM, against 0.05-0.25 s to build one candidate), and its default build function
    imports ``tvm.s_tir.tensor_intrin`` (26-45 s here), which makes every build time out.
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import PyBuilder

    @derived_object
    class InProcessBuilder(PyBuilder):
        def build(self, build_inputs: list) -> list:
            return [_build_candidate(item.mod, item.target) for item in build_inputs]

    return InProcessBuilder()


def _build_candidate(mod: tvm.IRModule, target: tvm.target.Target) -> Any:
    """Build one candidate into the tar file the runner loads (what LocalBuilder's worker does,
    minus the tensor-intrinsic import)."""
    from tvm import tirx
    from tvm.s_tir.meta_schedule.builder import BuilderResult
    from tvm.s_tir.meta_schedule.builder.local_builder import default_export
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    try:
        mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
        return BuilderResult(default_export(tirx.build(mod, target=target)), None)
    except Exception as exc:  # noqa: BLE001 - a failed candidate is a result, not an error
        return BuilderResult(None, f"in-process build failed: {one_line(exc)}")


def local_runner(threads: int, number: int, min_repeat_ms: int) -> Any:
    """Measures candidates in a worker process that runs them on ``threads`` TVM threads.

    The worker reads TVM_NUM_THREADS when it starts; without it TVM assumes SMT and uses half
    the cores, so candidates would be ranked for the wrong thread count.
    """
    from tvm.s_tir import meta_schedule as ms

    def set_threads() -> None:  # runs in the worker; a closure so cloudpickle ships it by value
        os.environ[THREADS_ENV] = str(threads)

    evaluator = ms.runner.EvaluatorConfig(number=number, repeat=1, min_repeat_ms=min_repeat_ms)
    return ms.runner.LocalRunner(evaluator_config=evaluator, initializer=set_threads)

"""Running a TVM artifact on this CPU: load it into the Relax VM, control threads, time it.

Thread control is the subtle part: TVM sizes each calling thread's worker pool once and pins
CPU affinity when it is resized, so measuring at N threads without disturbing later PyTorch
code needs the dance in :func:`runtime_threads`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from edgeprune.artifact import Artifact
from edgeprune.backends.base import Session
from edgeprune.backends.tvm.common import import_tvm, tvm_step
from edgeprune.backends.tvm.metaschedule import THREADS_ENV
from edgeprune.backends.tvm.target import is_host_target, usable_cores
from edgeprune.errors import CompileError
from edgeprune.profilers.base import MeasureSettings, Measurement
from edgeprune.profilers.host import cpu_description, rapl_unavailable_reason
from edgeprune.profilers.stats import LatencyStats

SOURCE = "measured:tvm-local"
_BIG_CORES = 1  # tvm::runtime::threading::ThreadGroup::kBig


def artifact_target(artifact: Artifact) -> dict:
    """The resolved TVM target the artifact was built for (``{}`` when it does not say)."""
    return json.loads(artifact.meta.get("tvm_target") or "{}")


def runs_here(artifact: Artifact) -> bool:
    """Whether this machine can load and run the artifact's ``.so`` (its CPU architecture)."""
    return is_host_target(artifact_target(artifact))


def load_vm(artifact: Artifact) -> Any:
    """The Relax VM over the artifact's library; a foreign-architecture library is refused with
    a one-line error instead of dlopen's "wrong ELF class"."""
    tvm = import_tvm()
    from tvm import relax

    if not runs_here(artifact):
        raise CompileError(f"{artifact.path.name} is built for "
                           f"{artifact_target(artifact).get('mtriple')}; run it on that device")
    with tvm_step("loading the artifact"):
        return relax.VirtualMachine(tvm.runtime.load_module(str(artifact.path)), tvm.cpu())


def session(artifact: Artifact, threads: int | None = None) -> Session:
    """A callable running the artifact on ``threads`` TVM workers (default: every usable core);
    the input must have the compiled shape (TVM builds for one static shape)."""
    tvm = import_tvm()
    vm = load_vm(artifact)
    expected = tuple(artifact.input_shape)
    n = threads or usable_cores()

    def run(batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if x.shape != expected:
            raise ValueError(f"TVM artifact is compiled for input {expected}, got {x.shape}")
        with runtime_threads(n):
            out = vm["main"](tvm.runtime.tensor(x, tvm.cpu()))
        return _first_output(out).numpy()

    return run


def measure(artifact: Artifact, settings: MeasureSettings) -> Measurement:
    """Median of ``settings.repeats`` samples of the VM's ``time_evaluator`` after warm-up;
    each sample averages enough calls to last ``min_repeat_ms``."""
    tvm = import_tvm()
    vm = load_vm(artifact)
    rng = np.random.default_rng(0)
    x = tvm.runtime.tensor(rng.random(artifact.input_shape, dtype=np.float32), tvm.cpu())
    with runtime_threads(settings.threads or usable_cores()) as used:
        for _ in range(settings.warmup):
            vm["main"](x)
        timer = vm.time_evaluator("main", tvm.cpu(), number=1, repeat=settings.repeats,
                                  min_repeat_ms=max(1, round(settings.min_repeat_ms)))
        samples_ms = [s * 1e3 for s in timer(x).results]
    cpu = artifact_target(artifact).get("mcpu", "generic")
    return Measurement(
        latency=LatencyStats.from_samples(samples_ms, settings.warmup, SOURCE),
        device=f"{cpu_description(used)}, llvm -mcpu={cpu}",
        energy_note=rapl_unavailable_reason() or "measurable but not sampled",
        details={"tvm_threads": used, "tuned": bool(artifact.meta.get("tuned", False))},
    )


@contextmanager
def runtime_threads(threads: int) -> Iterator[int]:
    """Run TVM kernels called from this thread on ``threads`` workers; yields the count in use.

    How TVM threads work (0.27): each calling thread gets a worker pool sized once, from
    TVM_NUM_THREADS, the first time it runs parallel code; unset, TVM takes half the logical
    CPUs (it assumes SMT), i.e. one thread on a 2-core VM. ``runtime.config_threadpool`` can
    only shrink an existing pool, and it pins this thread's CPU affinity. So the pool is first
    created at full size, then shrunk to ``threads``; on exit TVM_NUM_THREADS and this thread's
    affinity are restored, so code that runs later (PyTorch) is not left pinned to fewer cores.
    """
    tvm = import_tvm()
    configure = tvm.get_global_func("runtime.config_threadpool")
    full = usable_cores()
    threads = max(1, min(threads, full))
    saved_env = os.environ.get(THREADS_ENV)
    saved_affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        os.environ[THREADS_ENV] = str(full)
        configure(_BIG_CORES, full)  # creates this thread's pool at full size if it is new
        os.environ[THREADS_ENV] = str(threads)
        configure(_BIG_CORES, threads)
        yield int(tvm.runtime.num_threads())
    finally:
        if saved_env is None:
            os.environ.pop(THREADS_ENV, None)
        else:
            os.environ[THREADS_ENV] = saved_env
        if saved_affinity is not None:
            os.sched_setaffinity(0, saved_affinity)


def _first_output(out: Any) -> Any:
    """Single-output models return a tensor (``unwrap_unit_return_tuple``); others, a tuple."""
    return out if hasattr(out, "numpy") else out[0]

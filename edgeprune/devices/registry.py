"""Choose how an artifact is measured: on this machine, or on a board reached by ``--device``.

A registry keyed by the reach's mode (``rpc``, ``ssh``), so adding a way to reach boards is one
registered factory, not another ``if`` in deploy. ``local`` returns ``None``: the backend's own
local profiler measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgeprune.errors import ConfigError
from edgeprune.profilers.base import Profiler
from edgeprune.registry import Registry
from edgeprune.targets import Reach, TargetSpec


@dataclass(frozen=True)
class DeviceOptions:
    """How to talk to a board: SSH identity and pinned host keys, the board's Python."""

    known_hosts: Path | None = None
    identity_file: Path | None = None
    python: str = "python3"


ProfilerFactory = Callable[[Reach, str, TargetSpec, DeviceOptions], Profiler]
remote_profilers: Registry = Registry("device mode")


@remote_profilers.register("rpc")
def _tvm_rpc(reach: Reach, runtime: str, target: TargetSpec, options: DeviceOptions) -> Profiler:
    from edgeprune.profilers.tvm_rpc import TvmRpcProfiler

    if runtime != "tvm":
        raise ConfigError(f"a TVM RPC device runs TVM artifacts, not {runtime}; use --runtime tvm")
    return TvmRpcProfiler(reach)


@remote_profilers.register("ssh")
def _ssh(reach: Reach, runtime: str, target: TargetSpec, options: DeviceOptions) -> Profiler:
    from edgeprune.profilers.ssh import SshRunner

    if runtime != "onnxruntime":
        raise ConfigError(f"the SSH runner benchmarks ONNX models with ONNX Runtime, not {runtime}; "
                          "use --runtime onnxruntime")
    return SshRunner(reach, known_hosts=options.known_hosts, identity_file=options.identity_file,
                     python=options.python, power=target.power_measurement)


@remote_profilers.register("none")
def _estimate(reach: Reach, runtime: str, target: TargetSpec, options: DeviceOptions) -> Profiler:
    """No board reachable: a roofline estimate from the target's peak compute and bandwidth,
    labelled ``estimate:roofline`` everywhere it appears."""
    from edgeprune.profilers.roofline import RooflineProfiler

    return RooflineProfiler(target)


def profiler_for(reach: Reach, runtime: str, target: TargetSpec, options: DeviceOptions) -> Profiler | None:
    """``None`` for a local reach (the backend measures), else the registered remote profiler."""
    if reach.mode == "local":
        return None
    return remote_profilers.get(reach.mode)(reach, runtime, target, options)


def estimates_from_model(profiler: Profiler | None) -> bool:
    """True for profilers that compute a figure from the model instead of timing the artifact."""
    return callable(getattr(profiler, "estimate_model", None))


def remote_session(profiler: Profiler | None, artifact) -> Callable[[np.ndarray], np.ndarray] | None:
    """A callable running the artifact on the board, when the profiler can do that (TVM RPC)."""
    opener = getattr(profiler, "session", None)
    return opener(artifact) if callable(opener) else None

"""Which runtimes a deploy compiles and measures: the target's, narrowed to what the device can
run (read off the device registry: ``rpc://`` runs TVM, ``ssh://`` ONNX models), then to the
target's default runtime, then to the user's ``--runtime``. The user names a runtime only where
a real choice exists."""

from __future__ import annotations

from edgeprune.backends import runtime_names
from edgeprune.devices import Reach, runtimes_on
from edgeprune.errors import ConfigError, ToolchainMissingError
from edgeprune.targets import TargetSpec


def choose_runtimes(target: TargetSpec, reach: Reach, requested: str | None) -> list[str]:
    """The runtimes to compile for, most preferred first; several only when the device can run
    several and the target names no default (deploy then ships the fastest measured)."""
    able = runtimes_on(reach, list(target.runtimes))
    where = "this machine" if reach.mode == "local" else f"a {reach.mode} device"
    if requested is not None:
        if requested not in target.runtimes:
            raise ConfigError(f"target {target.name} has no runtime {requested!r}; it has {', '.join(target.runtimes)}")
        if requested not in able:
            raise ConfigError(f"{where} cannot run {requested} artifacts; it runs: {', '.join(able) or 'none'}")
        chosen = [requested]
    elif not able:
        raise ConfigError(f"none of target {target.name}'s runtimes ({', '.join(target.runtimes)}) runs on {where}")
    elif target.default_runtime in able:
        chosen = [target.default_runtime]
    else:
        chosen = able
    known = runtime_names()
    for runtime in chosen:
        if runtime not in known:
            raise ToolchainMissingError(f"target {target.name} needs the {runtime} backend, which edgeprune does "
                                        f"not have yet; backends: {', '.join(known)}")
    return chosen


# A runtime whose unpruned artifact took more than this multiple of the search runtime's is not
# compiled again for the result: pruning narrows such a gap but does not reverse it, and tuning
# the pruned shapes costs minutes. Measured on the demo (2 cores): TVM's baseline ran 1.95x and
# 2.2x ONNX Runtime's in two runs, its tuned pruned result still 1.64x ONNX Runtime's, after 30 s
# of tuning that took the warm demo from ~45 s to 80 s. Earlier machines: 2.4-3.5x.
CLEARLY_SLOWER = 1.5


def result_runtimes(baseline_ms: dict[str, float], searched: str,
                    factor: float = CLEARLY_SLOWER) -> tuple[list[str], dict[str, str]]:
    """The runtimes to build the result on (the search runtime, and every other runtime whose
    baseline was within ``factor`` of it), and why each other one is left out."""
    best = baseline_ms[searched]
    keep, skipped = [], {}
    for runtime, ms in baseline_ms.items():
        if runtime == searched or ms <= factor * best:
            keep.append(runtime)
        else:
            skipped[runtime] = (f"result not built: its baseline took {ms:.3f} ms, {ms / best:.1f}x {searched}'s "
                                f"{best:.3f} ms (> {factor:g}x); pass --runtime {runtime} to build and measure it")
    return keep, skipped

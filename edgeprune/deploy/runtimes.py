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

"""How boards are reached (``--device``) and what measures a runtime's artifact there.

Two registries, both open:

* ``schemes``: one per ``--device`` form (``local``, ``rpc://``, ``ssh://``, and ``none`` for "no
  board: estimate"). A scheme module in this package registers itself; :func:`load_builtin`
  imports every module here, so a new scheme is one module.
* ``measurers``: profiler factories keyed ``"<scheme>/<runtime>"`` (``"rpc/tvm"``,
  ``"ssh/onnxruntime"``) or ``"<scheme>/*"`` for any runtime. A backend registers what its
  artifacts can be measured with, in its own module. Which runtimes a device can run is read off
  this registry, so ``--device rpc://...`` implies TVM without anyone saying so.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import Callable

from edgeprune.devices.base import DeviceOptions, DeviceScheme, Estimator, ProfilerFactory, RemoteSession
from edgeprune.devices.reach import Reach
from edgeprune.errors import ConfigError, UnknownNameError
from edgeprune.registry import Registry

schemes: Registry = Registry("device scheme")
measurers: Registry = Registry("device measurer")

_HELPERS = {"base", "reach"}
ANY = "*"


@functools.cache  # imports and entry points are scanned once per process, not on every lookup
def load_builtin() -> None:
    """Import every scheme module here and every backend (backends register measurers)."""
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _HELPERS:
            importlib.import_module(f"{__name__}.{info.name}")
    from edgeprune.backends import load_builtin as load_backends

    load_backends()


def get_scheme(mode: str, error: type[Exception] = UnknownNameError) -> DeviceScheme:
    """The scheme registered as ``mode``; ``error`` lets pydantic validators raise ValueError."""
    load_builtin()
    try:
        return schemes.get(mode)()
    except UnknownNameError as exc:
        raise error(str(exc)) from None


def device_forms() -> str:
    """Every user-facing ``--device`` spelling, for help texts and errors."""
    load_builtin()
    return ", ".join(schemes.get(n).forms for n in schemes.names() if schemes.get(n).user_facing)


def parse_device(text: str) -> Reach:
    """Parse ``--device``: the text before ``://`` names the scheme (``local`` has none)."""
    load_builtin()
    text = text.strip()
    name = text.split("://", 1)[0] if "://" in text else text
    if name not in schemes or not schemes.get(name).user_facing:
        raise ConfigError(f"--device {text!r} not understood; use {device_forms()}")
    return get_scheme(name).parse(text)


def resolve_reach(target, device: str | None, offline_ok: bool = False) -> Reach:
    """``--device`` if given, else the target's; a remote reach must name a host.

    With ``offline_ok`` and no ``--device``, a board target whose YAML names no host resolves to
    mode ``none`` (no board: figures are estimates, labelled so).
    """
    reach = parse_device(device) if device else target.reach
    scheme = get_scheme(reach.mode)
    if scheme.remote and not reach.host:
        if offline_ok and device is None:
            return Reach(mode="none")
        raise ConfigError(f"target {target.name} is reached over {reach.mode}; pass --device {scheme.forms}")
    return reach


def register_measurer(scheme: str, runtime: str = ANY) -> Callable[[ProfilerFactory], ProfilerFactory]:
    """Decorator: ``@register_measurer("ssh", "tensorrt")`` in the backend's own module."""
    return measurers.register(f"{scheme}/{runtime}")


def runtimes_on(reach: Reach, candidates: list[str]) -> list[str]:
    """The subset of ``candidates`` this device can measure (all of them for ``*`` schemes)."""
    load_builtin()
    if f"{reach.mode}/{ANY}" in measurers:
        return list(candidates)
    return [rt for rt in candidates if f"{reach.mode}/{rt}" in measurers]


def profiler_for(reach: Reach, runtime: str, target, options: DeviceOptions):
    """The profiler that measures ``runtime``'s artifacts on this device, or a one-line error
    naming the runtimes the device can run."""
    load_builtin()
    for key in (f"{reach.mode}/{runtime}", f"{reach.mode}/{ANY}"):
        if key in measurers:
            return measurers.get(key)(reach, runtime, target, options)
    able = [k.split("/", 1)[1] for k in measurers.names() if k.startswith(f"{reach.mode}/")]
    raise ConfigError(f"a {reach.mode} device cannot run {runtime} artifacts; it runs: {', '.join(able) or 'none'}")


__all__ = ["ANY", "DeviceOptions", "DeviceScheme", "Estimator", "ProfilerFactory", "Reach", "RemoteSession",
           "device_forms", "get_scheme", "load_builtin", "measurers", "parse_device", "profiler_for",
           "register_measurer", "resolve_reach", "runtimes_on", "schemes"]

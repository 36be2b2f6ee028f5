"""Compile backends, by runtime name.

Adding a runtime is one module in this package that registers itself with ``@backends.register``:
:func:`load_builtin` imports every module here (and any ``edgeprune.backends`` entry point of an
installed plug-in), so there is no list to edit. Toolchains are imported inside each backend's
methods, so importing a backend module is cheap.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from importlib.metadata import entry_points

from edgeprune.backends.base import Backend, CompileOptions, Session
from edgeprune.registry import Registry

backends: Registry = Registry("runtime")

_HELPERS = {"base", "onnx_export"}  # modules here that are not backends


@functools.cache  # imports and entry points are scanned once per process, not on every lookup
def load_builtin() -> Registry:
    """Import every backend module (registration is a side effect of the import); idempotent."""
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _HELPERS:
            importlib.import_module(f"{__name__}.{info.name}")
    for entry in entry_points(group="edgeprune.backends"):
        if entry.name not in backends:
            entry.load()
    return backends


def get_backend(name: str) -> Backend:
    """Instantiate the backend registered under ``name`` (``tvm``, ``onnxruntime``, ...)."""
    load_builtin()
    return backends.get(name)()


def runtime_names() -> list[str]:
    """Every registered runtime: what the CLI offers for ``--runtime``."""
    return load_builtin().names()


__all__ = ["Backend", "CompileOptions", "Session", "backends", "get_backend", "load_builtin", "runtime_names"]

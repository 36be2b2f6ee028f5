"""Compile backends, by runtime name. Each module registers itself; importing it is cheap."""

from __future__ import annotations

from edgeprune.backends.base import Backend, CompileOptions, Session
from edgeprune.registry import Registry

backends: Registry = Registry("runtime")


def get_backend(name: str) -> Backend:
    """Instantiate the backend registered under ``name`` (``tvm``, ``onnxruntime``, ...)."""
    _load_builtin()
    return backends.get(name)()


BUILTIN_MODULES = ("edgeprune.backends.onnxruntime_backend", "edgeprune.backends.tvm_backend")


def _load_builtin() -> None:
    """Importing a backend module registers it; toolchains are imported lazily inside methods."""
    import importlib

    for module in BUILTIN_MODULES:
        importlib.import_module(module)


__all__ = ["Backend", "CompileOptions", "Session", "backends", "get_backend"]

"""Compiled-artifact cache: a model compiled once for a target is not compiled again.

The newcomer's demo compiles the same baseline on every run (~50 s of its ~60 s budget, mostly
TVM lowering and code generation), though nothing that decides the ``.so`` changed. The key
covers everything that does: the exported graph and its weights, the resolved target (CPU and
core count), the trial budget and search settings, the precision, and the versions of the
tools that generate code. An entry is ``<cache>/tvm-compiled/<key>/`` holding ``model.so``,
``model.json`` (the sidecar) and ``meta.json``, published with one rename so a reader never
sees half of it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from edgeprune.backends.tvm.tuning import TuningConfig
from edgeprune.io import publish_dir, write_json_atomic

COMPILED_SUBDIR = "tvm-compiled"
SO_NAME, SIDECAR_NAME, META_NAME = "model.so", "model.json", "meta.json"
_TOOL_PACKAGES = ("edgeprune", "apache-tvm", "apache-tvm-ffi", "torch")


def compiled_cache_key(exported: torch.export.ExportedProgram, target: Mapping[str, Any],
                       trials: int, config: TuningConfig, precision: str = "fp32") -> str:
    """sha256 over what decides the compiled library (see the module docstring)."""
    digest = hashlib.sha256()
    settings = {"target": dict(target), "trials": trials, "precision": precision,
                "tuning": dataclasses.asdict(config) if trials > 0 else None,
                "versions": _tool_versions()}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    digest.update(str(exported.graph).encode())
    digest.update(str(exported.graph_signature).encode())
    tensors = {**exported.state_dict, **exported.constants}
    for name in sorted(tensors):
        _update_with_tensor(digest, name, tensors[name])
    return digest.hexdigest()


def _update_with_tensor(digest: Any, name: str, value: Any) -> None:
    """Feed a weight's name, dtype, shape and raw bytes (any dtype, without a numpy copy)."""
    if not isinstance(value, torch.Tensor):  # a lifted constant may be a script object
        digest.update(f"{name}={value!r}".encode())
        return
    tensor = value.detach().cpu().contiguous()
    digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
    if tensor.numel():
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def _tool_versions() -> dict[str, str]:
    """Versions of the packages whose code lands in the ``.so`` (read from metadata: no
    ``import tvm`` just to build a key)."""
    found = {}
    for name in _TOOL_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def entry_dir(cache_dir: Path, key: str) -> Path:
    """``<cache>/tvm-compiled/<key>``: where the entry for ``key`` is (or would be) published."""
    return Path(cache_dir) / COMPILED_SUBDIR / key


def lookup(cache_dir: Path, key: str) -> Path | None:
    """The published entry for ``key``, or None. Entries appear only complete (one rename),
    so the presence of ``meta.json`` is enough."""
    entry = entry_dir(cache_dir, key)
    return entry if (entry / META_NAME).is_file() and (entry / SO_NAME).is_file() else None


def store(cache_dir: Path, key: str, fill: Callable[[Path], tuple[dict, dict]]) -> Path:
    """Build an entry in a private staging folder and publish it.

    ``fill(staging)`` writes ``staging/model.so`` and returns ``(meta, sidecar)``. A failed
    build leaves nothing behind; of two processes building the same key the first to finish
    publishes, the other discards its identical copy (so no reader's entry is swapped away).
    """
    root = Path(cache_dir) / COMPILED_SUBDIR
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{key}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        meta, side = fill(staging)
        write_json_atomic(staging / SIDECAR_NAME, side)
        write_json_atomic(staging / META_NAME, meta)
        if lookup(cache_dir, key) is None:  # else another process published the same files
            publish_dir(staging, root / key)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root / key


def install(entry: Path, out_dir: Path, status: str) -> tuple[Path, Path, dict]:
    """Copy an entry's library into ``out_dir`` and write its sidecar there, marked with
    ``compile_cache: status``; returns (library, sidecar, meta). A hit did no tuning now, so
    its ``new_trials``/``tuning_seconds`` are 0: they describe this compile, not the first."""
    meta = json.loads((entry / META_NAME).read_text())
    side = json.loads((entry / SIDECAR_NAME).read_text())
    now = {"compile_cache": status}
    if status == "hit":
        now.update(new_trials=0, tuning_seconds=0.0)
    meta.update(now)
    side.update(now)
    out_dir.mkdir(parents=True, exist_ok=True)
    so_path, side_path = out_dir / SO_NAME, out_dir / SIDECAR_NAME
    tmp = out_dir / f".{SO_NAME}.{os.getpid()}.tmp"
    shutil.copyfile(entry / SO_NAME, tmp)
    os.replace(tmp, so_path)  # a new inode: a process that has the old library loaded keeps it
    write_json_atomic(side_path, side)
    return so_path, side_path, meta

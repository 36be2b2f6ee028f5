"""The one home for writing files safely and naming what produced them.

Every file edgeprune writes that a later run reads (plans, checkpoints, profiles, manifests,
caches) goes through here, so "a reader never sees half a file" holds everywhere and the same
settings always hash to the same fingerprint.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
from pathlib import Path
from typing import Any

VERSIONED_PACKAGES = ("edgeprune", "torch", "torchvision", "torch-pruning", "apache-tvm",
                      "onnxruntime", "onnx", "numpy")
_SCALAR_LIST = re.compile(r"\[\s*((?:[-\w.\"|:?=+]+,\s*)*[-\w.\"|:?=+]+)\s*\]")


def default_cache_dir() -> Path:
    """``$EDGEPRUNE_CACHE`` or ``~/.cache/edgeprune``: demo weights, tuning databases, compiled baselines."""
    return Path(os.environ.get("EDGEPRUNE_CACHE", Path.home() / ".cache" / "edgeprune")).expanduser()


def _tmp_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a file."""
    tmp = _tmp_for(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any, compact_lists: bool = False) -> None:
    """JSON, atomically. ``compact_lists`` keeps each list of scalars on one line (lookup tables
    ship in the wheel and are read in reviews: one value per line made them ten times longer)."""
    if not compact_lists:
        write_text_atomic(path, json.dumps(data, indent=2) + "\n")
        return
    text = json.dumps(data, indent=1)
    text = _SCALAR_LIST.sub(lambda m: "[" + re.sub(r"\s*\n\s*", " ", m.group(1)) + "]", text)
    write_text_atomic(path, text + "\n")


def torch_save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` through a temp file and a rename (a crash mid-save leaves the old file)."""
    import torch

    tmp = _tmp_for(path)
    torch.save(obj, str(tmp))
    os.replace(tmp, path)


def publish_dir(staging: Path, dest: Path) -> None:
    """Move a finished folder into place in one rename, so a reader never sees half of it (a
    concurrent process that won the race has published the same files)."""
    if dest.exists():
        shutil.rmtree(dest)
    try:
        os.replace(staging, dest)
    except OSError:
        if not dest.is_dir():
            raise


def fingerprint(parts: Any, length: int = 16) -> str:
    """Stable hash of the settings that decide a result (JSON with sorted keys; paths and other
    objects by their ``str``)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:length]


def sha256(path: Path) -> str:
    """Content hash of a file, streamed (artifacts can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of the packages that decide a figure (``not installed`` when absent)."""
    found = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES + extra:
        try:
            found[name.replace("apache-", "")] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name.replace("apache-", "")] = "not installed"
    return found

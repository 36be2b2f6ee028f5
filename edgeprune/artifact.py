"""The compiled artifact: what a backend writes and a profiler measures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Artifact:
    """A compiled model on disk.

    ``files`` lists every file the runtime needs (the first is the primary one); ``meta`` holds
    compiler facts the report must show (tuned or not, trials, tuning seconds, compiler target).
    """

    runtime: str
    target: str
    files: tuple[Path, ...]
    input_shape: tuple[int, ...]
    input_dtype: str = "float32"
    precision: str = "fp32"  # what the compiled model computes in (validation tolerances follow it)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.files[0]

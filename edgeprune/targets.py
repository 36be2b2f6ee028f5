"""Target descriptions: ``targets/*.yaml`` validated into :class:`TargetSpec`.

A target is data (what the device is and can do); how to compile for it is a backend in
:mod:`edgeprune.backends`. The YAML files ship inside the wheel (``edgeprune/_data/targets``) and
are read from the checkout's ``targets/`` during development.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeprune.errors import ConfigError, UnknownNameError


class Reach(BaseModel):
    """How the board is reached: locally, through a TVM RPC tracker/server, or over SSH."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["local", "rpc", "ssh", "none"] = "local"
    host: str | None = None
    port: int | None = None
    key: str | None = None
    user: str | None = None


class TargetSpec(BaseModel):
    """One device. Unknown keys are rejected so a typo in a user's YAML is reported, not ignored."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str
    kind: Literal["cpu", "gpu", "fpga"]
    compiler: str
    runtimes: list[str] = Field(min_length=1)
    compiler_target: dict = Field(default_factory=dict)
    precisions: list[str] = Field(default_factory=lambda: ["fp32"])
    channel_multiple: int = Field(default=1, ge=1)
    reach: Reach = Field(default_factory=Reach)
    sources: list[str] = Field(default_factory=list)


def data_dir(kind: str) -> Path:
    """Where ``targets``/``profiles`` live: inside the installed wheel, else the checkout."""
    packaged = Path(__file__).resolve().parent / "_data" / kind
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / kind


def load_target_file(path: Path) -> TargetSpec:
    """Parse and validate one YAML file; a bad file is a one-line :class:`ConfigError`."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read target file {path}: {exc}".splitlines()[0]) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"target file {path} is not a YAML mapping")
    try:
        return TargetSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ConfigError(f"target file {path}: {where}: {first['msg']}") from None


def available_targets() -> dict[str, Path]:
    return {p.stem: p for p in sorted(data_dir("targets").glob("*.yaml"))}


def get_target(name_or_path: str) -> TargetSpec:
    """Resolve a built-in target name or a path to a user's YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return load_target_file(candidate)
    known = available_targets()
    if name_or_path not in known:
        raise UnknownNameError(
            f"unknown target {name_or_path!r}; known: {', '.join(known) or '(none)'}"
        )
    return load_target_file(known[name_or_path])

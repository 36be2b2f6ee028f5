"""Target descriptions: ``targets/*.yaml`` validated into :class:`TargetSpec`.

A target is data (what the device is and can do); how to compile for it is a backend in
:mod:`edgeprune.backends`. The YAML files ship inside the wheel (``edgeprune/_data/targets``) and
are read from the checkout's ``targets/`` during development.

Device facts (peak compute, bandwidth, power, FPGA resources) feed estimates only, such as the
roofline in :mod:`edgeprune.profilers.roofline`; edgeprune's reported latencies are measured.
Each YAML cites its sources and marks figures nobody has checked as ``(unverified)``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgeprune.errors import ConfigError, UnknownNameError

PRECISION_PATTERN = r"^(fp32|tf32|fp16|bf16|int([1-9]|1[0-6]))$"
"""fp32/tf32/fp16/bf16, or intN for N-bit integer weights+activations (FPGAs go down to int1)."""


class Reach(BaseModel):
    """How the board is reached: locally, through a TVM RPC tracker/server, or over SSH.

    ``rpc`` with a ``key`` goes through a tracker at ``host:port``; without one, ``host:port`` is
    the RPC server itself. A shipped board YAML may leave ``host`` empty: the user's ``--device``
    supplies it (see :func:`resolve_reach`).
    """

    model_config = ConfigDict(extra="forbid")
    mode: Literal["local", "rpc", "ssh", "none"] = "local"
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    key: str | None = None
    user: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "Reach":
        """Reject combinations that cannot mean anything, so a YAML typo is caught at load time."""
        if self.mode in ("local", "none") and (self.host or self.port or self.key or self.user):
            raise ValueError(f"reach mode {self.mode!r} takes no host/port/key/user")
        if self.mode == "rpc" and self.user:
            raise ValueError("reach mode 'rpc' takes no user")
        if self.mode == "rpc" and self.host and self.port is None:
            raise ValueError("reach mode 'rpc' with a host needs a port")
        if self.mode == "ssh" and self.key:
            raise ValueError("reach mode 'ssh' takes no key")
        return self

    @property
    def is_tracker(self) -> bool:
        """RPC through a tracker (a key names the device class) rather than one server."""
        return self.mode == "rpc" and bool(self.key)

    def describe(self) -> str:
        """The ``--device`` spelling of this reach, for logs and device labels (``HOST``/``PORT``/
        ``USER`` stand in for what a shipped YAML leaves to ``--device``)."""
        host, port, user = self.host or "HOST", self.port or "PORT", self.user or "USER"
        host = f"[{host}]" if ":" in host else host  # IPv6 literal
        if self.mode == "rpc":
            return f"rpc://{host}:{port}" + (f"/{self.key}" if self.key else "")
        if self.mode == "ssh":
            return f"ssh://{user}@{host}" + (f":{self.port}" if self.port else "")
        return self.mode


class Compute(BaseModel):
    """Peak arithmetic per precision and peak DRAM bandwidth: the two roofs of a roofline.

    Figures are datasheet/derived peaks (cores x FLOP/cycle x clock), never reached in practice:
    estimates built on them are lower bounds on latency.
    """

    model_config = ConfigDict(extra="forbid")
    peak_gflops: dict[str, float] = Field(min_length=1)
    memory_bandwidth_gbs: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _positive(self) -> "Compute":
        for precision, value in self.peak_gflops.items():
            if not re.match(PRECISION_PATTERN, precision):
                raise ValueError(f"unknown precision {precision!r} in peak_gflops")
            if value <= 0:
                raise ValueError(f"peak_gflops[{precision}] must be > 0")
        return self


class PowerEnvelope(BaseModel):
    """Board power in watts: idle, the most it draws under load, and named power modes."""

    model_config = ConfigDict(extra="forbid")
    idle_w: float | None = Field(default=None, gt=0)
    max_w: float = Field(gt=0)
    modes_w: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _ordered(self) -> "PowerEnvelope":
        if self.idle_w is not None and self.idle_w > self.max_w:
            raise ValueError("idle_w must not exceed max_w")
        return self


class FpgaResources(BaseModel):
    """The FPGA part and its fabric: what FINN/hls4ml estimates are checked against."""

    model_config = ConfigDict(extra="forbid")
    part: str = Field(min_length=1)
    lut: int = Field(gt=0)
    ff: int = Field(gt=0)
    bram18: int = Field(ge=0)
    dsp: int = Field(ge=0)
    uram: int = Field(default=0, ge=0)
    clock_mhz: float = Field(gt=0)


class PowerMeasurement(BaseModel):
    """How this board's power can be sampled while a model runs.

    ``tegrastats`` and ``pynq-rails`` need the ``rail`` that carries the whole board's input power
    (e.g. ``POM_5V_IN`` on a Jetson Nano); ``rapl`` reads the CPU package counter; ``none`` means
    energy is reported as not measurable.
    """

    model_config = ConfigDict(extra="forbid")
    method: Literal["none", "rapl", "tegrastats", "pynq-rails"] = "none"
    rail: str | None = None
    note: str = ""

    @model_validator(mode="after")
    def _rail(self) -> "PowerMeasurement":
        if self.method in ("tegrastats", "pynq-rails") and not self.rail:
            raise ValueError(f"power method {self.method!r} needs a rail name")
        if self.method in ("none", "rapl") and self.rail:
            raise ValueError(f"power method {self.method!r} takes no rail")
        return self


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
    compute: Compute | None = None
    power: PowerEnvelope | None = None
    fpga: FpgaResources | None = None
    power_measurement: PowerMeasurement = Field(default_factory=PowerMeasurement)
    sources: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> "TargetSpec":
        """Cross-field rules: FPGA facts only (and always) for FPGA kinds; peaks only for
        precisions the device runs."""
        for precision in self.precisions:
            if not re.match(PRECISION_PATTERN, precision):
                raise ValueError(f"unknown precision {precision!r} (fp32, fp16, bf16, tf32, int1..int16)")
        if self.kind == "fpga" and self.fpga is None:
            raise ValueError("kind 'fpga' needs an 'fpga' section (part and resources)")
        if self.kind != "fpga" and self.fpga is not None:
            raise ValueError(f"kind {self.kind!r} takes no 'fpga' section")
        if self.compute is not None:
            extra = sorted(set(self.compute.peak_gflops) - set(self.precisions))
            if extra:
                raise ValueError(f"compute.peak_gflops lists {', '.join(extra)} not in precisions")
        return self

    def peak_gflops(self, precision: str) -> float:
        """Peak GFLOP/s (GOP/s for integers) at ``precision``; a clear error when not known."""
        if self.compute is None or precision not in self.compute.peak_gflops:
            raise ConfigError(f"target {self.name} states no peak compute for {precision}")
        return self.compute.peak_gflops[precision]

    def memory_bandwidth_gbs(self) -> float:
        """Peak DRAM bandwidth in GB/s; a clear error when the YAML does not state it."""
        if self.compute is None or self.compute.memory_bandwidth_gbs is None:
            raise ConfigError(f"target {self.name} states no memory bandwidth")
        return self.compute.memory_bandwidth_gbs


def data_dir(kind: str) -> Path:
    """Where ``targets``/``profiles`` live: inside the installed wheel, else the checkout."""
    packaged = Path(__file__).resolve().parent / "_data" / kind
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / kind


def _one_line(exc: ValidationError) -> str:
    """First pydantic error as ``where: message`` (pydantic's own text spans several lines)."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    return f"{where}: {message}".splitlines()[0]


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
        raise ConfigError(f"target file {path}: {_one_line(exc)}") from None


def available_targets() -> dict[str, Path]:
    """Built-in target names mapped to their YAML files."""
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


DEVICE_FORMS = "local, rpc://HOST:PORT, rpc://TRACKER_HOST:PORT/KEY or ssh://USER@HOST[:PORT]"


def _host_port(text: str, default_port: int | None) -> tuple[str, int | None]:
    """Host and port of a ``scheme://`` string; a bad port is a ConfigError, not a ValueError."""
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"--device {text!r}: the port must be a number in 1..65535") from None
    if not parts.hostname:
        raise ConfigError(f"--device {text!r} names no host; use {DEVICE_FORMS}")
    return parts.hostname, port if port is not None else default_port


def parse_device(text: str) -> Reach:
    """Parse a ``--device`` override into a :class:`Reach`.

    Accepted: ``local``; ``rpc://HOST:PORT`` (one RPC server); ``rpc://TRACKER_HOST:PORT/KEY``
    (a tracker and the device key); ``ssh://USER@HOST[:PORT]`` (port 22 by default). Anything else
    is a one-line :class:`ConfigError` listing these forms.
    """
    text = text.strip()
    if text == "local":
        return Reach(mode="local")
    scheme = text.split("://", 1)[0] if "://" in text else ""
    if scheme == "rpc":
        return _parse_rpc(text)
    if scheme == "ssh":
        return _parse_ssh(text)
    raise ConfigError(f"--device {text!r} not understood; use {DEVICE_FORMS}")


def _parse_rpc(text: str) -> Reach:
    """``rpc://HOST:PORT[/KEY]``: the port is required (trackers and servers have no default)."""
    parts = urlsplit(text)
    if parts.username or parts.query or parts.fragment:
        raise ConfigError(f"--device {text!r}: rpc takes no user, query or fragment; use {DEVICE_FORMS}")
    host, port = _host_port(text, None)
    if port is None:
        raise ConfigError(f"--device {text!r} needs a port, e.g. rpc://{host}:9190/KEY")
    key = parts.path.strip("/")
    if "/" in key:
        raise ConfigError(f"--device {text!r}: the tracker key must be one path segment")
    return Reach(mode="rpc", host=host, port=port, key=key or None)


def _parse_ssh(text: str) -> Reach:
    """``ssh://USER@HOST[:PORT]``: the user is required so no one logs in by accident as root."""
    parts = urlsplit(text)
    if not parts.username:
        raise ConfigError(f"--device {text!r} needs a user: ssh://USER@HOST[:PORT]")
    if parts.password is not None:
        raise ConfigError(f"--device {text!r}: put no password in the URL; edgeprune uses SSH keys")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise ConfigError(f"--device {text!r}: ssh takes no path; use ssh://USER@HOST[:PORT]")
    host, port = _host_port(text, 22)
    return Reach(mode="ssh", host=host, port=port, user=parts.username)


def resolve_reach(target: TargetSpec, device: str | None, offline_ok: bool = False) -> Reach:
    """The reach to use: ``--device`` if given, else the target's; a remote reach must name a host.

    With ``offline_ok`` and no ``--device``, a board target whose YAML names no host resolves to
    ``mode: none`` (no board: figures are estimates, labelled so).
    """
    reach = parse_device(device) if device else target.reach
    if offline_ok and device is None and reach.mode in ("rpc", "ssh") and not reach.host:
        return Reach(mode="none")
    if reach.mode in ("rpc", "ssh") and not reach.host:
        example = "rpc://HOST:9190/" + (reach.key or "KEY") if reach.mode == "rpc" else "ssh://USER@HOST"
        raise ConfigError(f"target {target.name} is reached over {reach.mode}; pass --device {example}")
    return reach

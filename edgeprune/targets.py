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

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgeprune.devices.reach import Reach
from edgeprune.errors import ConfigError, UnknownNameError

PRECISION_PATTERN = r"^(fp32|tf32|fp16|bf16|int([1-9]|1[0-6])|w[1-8]a[1-8])$"
"""fp32/tf32/fp16/bf16, or intN for N-bit integer weights+activations (FPGAs go down to int1)."""


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
    method: str = "none"  # a registered power method (edgeprune.profilers.energy.power_methods)
    rail: str | None = None
    note: str = ""

    @model_validator(mode="after")
    def _rail(self) -> "PowerMeasurement":
        from edgeprune.errors import UnknownNameError
        from edgeprune.profilers.energy import power_methods

        try:
            method = power_methods.get(self.method)
        except UnknownNameError as exc:
            raise ValueError(str(exc)) from None
        if method.needs_rail and not self.rail:
            raise ValueError(f"power method {self.method!r} needs a rail name")
        if not method.needs_rail and self.rail:
            raise ValueError(f"power method {self.method!r} takes no rail")
        return self


class TargetSpec(BaseModel):
    """One device. Unknown keys are rejected so a typo in a user's YAML is reported, not ignored."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str
    kind: Literal["cpu", "gpu", "fpga"]
    runtimes: list[str] = Field(min_length=1)
    default_runtime: str | None = None  # used when the device runs several and the user names none
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
                raise ValueError(f"unknown precision {precision!r} (fp32, fp16, bf16, tf32, int1..int16, wXaY)")
        if self.default_runtime is not None and self.default_runtime not in self.runtimes:
            raise ValueError(f"default_runtime {self.default_runtime!r} is not in runtimes {self.runtimes}")
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

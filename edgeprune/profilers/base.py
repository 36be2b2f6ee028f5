"""The profiler protocol: measure a compiled artifact and say where the figures came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from edgeprune.artifact import Artifact
from edgeprune.profilers.base_settings import MeasureSettings
from edgeprune.profilers.stats import LatencyStats


@dataclass(frozen=True)
class EnergyStats:
    """Energy per inference in millijoules, when the device can measure it."""

    median_mj: float
    mean_power_w: float
    source: str


@dataclass(frozen=True)
class Measurement:
    """One artifact measured on one device.

    ``energy`` is ``None`` when the device cannot measure power; ``energy_note`` then says why,
    and the report prints "not measurable" rather than any number.
    """

    latency: LatencyStats
    device: str
    energy: EnergyStats | None = None
    energy_note: str = "not measurable"
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        out: dict[str, Any] = {"latency_ms": self.latency.to_json(), "device": self.device}
        if self.energy is None:
            out["energy"] = {"status": self.energy_note}
        else:
            out["energy"] = {
                "median_mj": self.energy.median_mj,
                "mean_power_w": self.energy.mean_power_w,
                "source": self.energy.source,
            }
        out.update(self.details)
        return out


class Profiler(Protocol):
    """Measures an artifact: local backends (``Backend.measure``), TVM RPC, SSH, roofline estimate."""

    name: str

    def measure(self, artifact: Artifact, settings: MeasureSettings) -> Measurement: ...

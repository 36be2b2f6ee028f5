"""Profilers: measure a compiled artifact on a device and label every figure with its source."""

from edgeprune.profilers.base import EnergyStats, Measurement, MeasureSettings, Profiler
from edgeprune.profilers.stats import LatencyStats, time_callable

__all__ = ["EnergyStats", "LatencyStats", "MeasureSettings", "Measurement", "Profiler", "time_callable"]

"""Eager PyTorch timing: the reference column users compare compiled runtimes against."""

from __future__ import annotations

import torch

from edgeprune.profilers.base import Measurement, MeasureSettings
from edgeprune.profilers.host import cpu_description, rapl_unavailable_reason
from edgeprune.profilers.stats import LatencyStats, time_callable


def measure_eager(model: torch.nn.Module, example: torch.Tensor, settings: MeasureSettings) -> Measurement:
    """Time ``model(example)`` under ``inference_mode`` with the given thread count."""
    model = model.eval()
    previous = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        with torch.inference_mode():
            samples = time_callable(lambda: model(example), settings)
    finally:
        torch.set_num_threads(previous)
    return Measurement(
        latency=LatencyStats.from_samples(samples, settings.warmup, "measured:pytorch-eager"),
        device=cpu_description(settings.threads),
        energy_note=rapl_unavailable_reason() or "measurable but not sampled",
    )

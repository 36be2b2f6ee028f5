"""Roofline latency *estimate* from MACs and bytes against a target's peak compute and bandwidth.

This is not a measurement. Each layer takes ``max(2*MACs / peak, bytes / bandwidth)``: the time
it would take if the device ran at its datasheet peak, which real code never does. The sum is a
lower bound on latency, useful to rank pruned variants for a board nobody has plugged in yet, and
always labelled ``estimate:roofline`` so no report mistakes it for a number from the device.
"""

from __future__ import annotations

import re

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from edgeprune.artifact import Artifact
from edgeprune.errors import ConfigError
from edgeprune.profilers.base import Measurement
from edgeprune.profilers.base_settings import MeasureSettings
from edgeprune.profilers.stats import LatencyStats
from edgeprune.targets import TargetSpec

SOURCE = "estimate:roofline"

FUSED = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
         nn.LeakyReLU, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.Dropout, nn.Identity)
"""Elementwise layers compilers fold into the preceding conv/linear: they move no extra bytes."""


@dataclass(frozen=True)
class LayerCost:
    """One executed layer: multiply-accumulates and the bytes it reads (inputs, weights) and writes."""

    name: str
    macs: int
    bytes_moved: int


def bytes_per_element(precision: str) -> float:
    """Storage size of one value at ``precision`` (``int4`` packs two values per byte)."""
    if precision in ("fp32", "tf32"):
        return 4.0
    if precision in ("fp16", "bf16"):
        return 2.0
    if precision.startswith("int") and precision[3:].isdigit():
        return int(precision[3:]) / 8
    widths = re.fullmatch(r"w(\d+)a(\d+)", precision)
    if widths:  # weights and activations both move: the wider one bounds the traffic
        return max(int(widths.group(1)), int(widths.group(2))) / 8
    raise ConfigError(f"unknown precision {precision!r}")


def _macs(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    """MACs of the layers that dominate CNN compute; other layers count as memory traffic only."""
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = 1
        for k in module.kernel_size:
            kernel *= k
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            return inputs[0].numel() * (module.out_channels // module.groups) * kernel
        return output.numel() * (module.in_channels // module.groups) * kernel
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def layer_costs(model: nn.Module, example: torch.Tensor, precision: str = "fp32") -> list[LayerCost]:
    """Run ``model`` once and record every leaf layer's MACs and bytes at ``precision``.

    Each executed leaf module reads its tensor inputs and own parameters and writes its output
    once; elementwise layers in :data:`FUSED` are assumed folded. Functional ops (``x + y`` in a
    residual, ``torch.flatten``) are not modules and are not counted, another reason this is a
    lower bound.
    """
    size = bytes_per_element(precision)
    costs: list[LayerCost] = []

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, output: object) -> None:
            if isinstance(module, FUSED) or not isinstance(output, torch.Tensor):
                return
            values = output.numel() + sum(t.numel() for t in inputs if isinstance(t, torch.Tensor))
            values += sum(p.numel() for p in module.parameters(recurse=False))
            costs.append(LayerCost(name, _macs(module, inputs, output), int(values * size)))

        return record

    leaves = [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook(n)) for n, m in leaves]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in handles:
            h.remove()
    return costs


def roofline_ms(macs: int, bytes_moved: int, peak_gflops: float, bandwidth_gbs: float) -> float:
    """Milliseconds for one layer at the roofline: bound by compute (2 FLOP per MAC) or memory."""
    if peak_gflops <= 0 or bandwidth_gbs <= 0:
        raise ValueError("peak compute and bandwidth must be positive")
    return max(2.0 * macs / (peak_gflops * 1e9), bytes_moved / (bandwidth_gbs * 1e9)) * 1e3


class RooflineProfiler:
    """Estimates latency on ``target`` at ``precision`` from per-layer costs.

    ``efficiency`` (0..1] scales both peaks down for a less optimistic figure; 1.0 gives the pure
    roofline bound. The returned :class:`Measurement` holds a single-sample
    :class:`LatencyStats` labelled ``estimate:roofline``: it was computed, not timed.
    """

    name = "roofline"

    def __init__(self, target: TargetSpec, precision: str = "fp32", efficiency: float = 1.0) -> None:
        if not 0 < efficiency <= 1:
            raise ConfigError("roofline efficiency must be in (0, 1]")
        self.target = target
        self.precision = precision
        self.efficiency = efficiency
        self.peak = target.peak_gflops(precision) * efficiency
        self.bandwidth = target.memory_bandwidth_gbs() * efficiency

    def estimate(self, costs: Sequence[LayerCost]) -> Measurement:
        """Sum the per-layer roofline times; details say how many layers each roof bounds."""
        if not costs:
            raise ConfigError("roofline estimate needs at least one layer cost")
        total = 0.0
        memory_bound = 0
        for c in costs:
            total += roofline_ms(c.macs, c.bytes_moved, self.peak, self.bandwidth)
            memory_bound += c.bytes_moved / self.bandwidth > 2.0 * c.macs / self.peak
        return Measurement(
            latency=LatencyStats.from_samples([total], warmup=0, source=SOURCE),
            device=f"{self.target.name} (roofline estimate at {self.precision}, not measured)",
            energy_note="not measured: roofline is an estimate",
            details={"estimate": True, "precision": self.precision, "efficiency": self.efficiency,
                     "macs": sum(c.macs for c in costs), "bytes": sum(c.bytes_moved for c in costs),
                     "layers": len(costs), "memory_bound_layers": memory_bound,
                     "peak_gflops": self.peak, "bandwidth_gbs": self.bandwidth},
        )

    def estimate_model(self, model: nn.Module, example: torch.Tensor, precision: str | None = None) -> Measurement:
        """Estimate straight from a PyTorch model (runs it once on ``example``) at ``precision``
        (default: this profiler's). A precision the YAML states no peak for is estimated at the
        fp32 peak and says so in the device label (a slower, labelled bound, never an invention)."""
        wanted = precision or self.precision
        if wanted == self.precision:
            return self.estimate(layer_costs(model, example, self.precision))
        has_peak = self.target.compute is not None and wanted in self.target.compute.peak_gflops
        other = RooflineProfiler(self.target, wanted if has_peak else "fp32", self.efficiency)
        estimate = other.estimate(layer_costs(model, example, wanted))
        if not has_peak:
            estimate = replace(estimate, device=f"{self.target.name} (roofline at the fp32 peak: the target "
                                                f"states none for {wanted}; not measured)")
        return estimate

    def measure(self, artifact: Artifact, settings: MeasureSettings) -> Measurement:
        """Profiler-protocol entry: needs ``macs`` and ``bytes`` in the artifact's meta.

        Whole-model totals are one layer to the roofline, so this is coarser than
        :meth:`estimate_model`; ``settings`` is unused because nothing is timed.
        """
        try:
            cost = LayerCost("model", int(artifact.meta["macs"]), int(artifact.meta["bytes"]))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(
                f"roofline needs 'macs' and 'bytes' in the meta of {artifact.path.name}; "
                "use RooflineProfiler.estimate_model with the PyTorch model instead"
            ) from None
        return self.estimate([cost])

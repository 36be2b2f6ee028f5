"""The backend protocol: export + compile a PyTorch model for one runtime on one target.

A backend turns an ``nn.Module`` into an :class:`~edgeprune.artifact.Artifact` and can load that
artifact back as a callable session (for validation and accuracy). Heavy toolchains are imported
inside each backend's methods only, so listing backends costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import numpy as np
import torch

from edgeprune.artifact import Artifact
from edgeprune.profilers.base import MeasureSettings, Measurement

Session = Callable[[np.ndarray], np.ndarray]
"""A loaded artifact: float32 NCHW batch in, logits out (numpy)."""


@dataclass(frozen=True)
class Calibration:
    """What a quantizing backend calibrates activation ranges on: input batches at the compiled
    batch size (drawn from the training data) and the method (``minmax``, ``entropy``,
    ``percentile``). Empty for float precisions."""

    batches: tuple[np.ndarray, ...] = ()
    method: str = "minmax"

    @property
    def samples(self) -> int:
        return sum(len(b) for b in self.batches)


@dataclass(frozen=True)
class CompileOptions:
    """What a backend needs besides the model.

    ``compiler_target`` is the target YAML's compiler target (for TVM a JSON target dict);
    ``tune_trials`` bounds auto-tuning (0 = untuned, said so in the artifact meta);
    ``cache_dir`` holds reusable state such as TVM's tuning database; ``precision`` is the
    candidate's precision spec name (``fp32``, ``fp16``, ``int8``, ...).
    """

    target_name: str
    compiler_target: dict
    cache_dir: Path
    tune_trials: int = 0
    threads: int | None = None
    precision: str = "fp32"  # what the artifact computes in; backends refuse what they cannot build
    layer_precisions: dict[str, str] = field(default_factory=dict)  # per-layer overrides (accuracy fallback)
    calibration: Calibration = field(default_factory=Calibration)


class Backend(Protocol):
    name: str

    def unavailable_reason(self) -> str | None:
        """``None`` when the toolchain is importable, else a one-line reason."""

    def compile(
        self, model: torch.nn.Module, example: torch.Tensor, out_dir: Path, options: CompileOptions
    ) -> Artifact: ...

    def load(self, artifact: Artifact) -> Session: ...

    def measure(self, artifact: Artifact, settings: MeasureSettings) -> Measurement:
        """Measure on the local device (remote devices go through ``edgeprune.profilers``)."""


@runtime_checkable
class ForeignArtifacts(Protocol):
    """A backend that can build for another CPU architecture says whether an artifact runs on
    this machine; one that cannot, need not implement this (its artifacts always run here)."""

    def runs_here(self, artifact: Artifact) -> bool: ...


@runtime_checkable
class OptionsCheck(Protocol):
    """A backend whose toolchain needs depend on the compile options (a cross compiler for a
    foreign target, say) reports a missing one before any long work starts."""

    def unavailable_reason_for(self, options: CompileOptions) -> str | None: ...


@runtime_checkable
class PrecisionAware(Protocol):
    """A backend that builds more than fp32 lists what it builds; one that does not, builds fp32 only."""

    precisions: tuple[str, ...]


@runtime_checkable
class QatToolkit(Protocol):
    """A backend that runs one fake-quant toolkit's export fast says which, for
    ``--qat-epochs`` at int8: ModelOpt's symmetric int8 Q/DQ is what TensorRT builds, while ONNX
    Runtime on x86 fuses integer kernels only for Brevitas' export (BatchNorm folded, uint8
    after ReLU). Backends that say nothing get ModelOpt."""

    def qat_toolkit(self, precision: str) -> str: ...


@runtime_checkable
class ChannelRounding(Protocol):
    """A backend whose fast kernels want channel counts in multiples (TensorRT's vectorised
    formats: FP16 "channel % 8 == 0", INT8 32-wide) says so per target and precision; the search
    rounds kept channel counts to the larger of this and the target YAML's ``channel_multiple``."""

    def channel_multiple(self, compiler_target: dict, precision: str) -> int: ...


@runtime_checkable
class CallTimer(Protocol):
    """A local backend that can hand out a ready-to-call inference (session loaded, input bound),
    so two artifacts can be timed call by call in alternation — the steadiest comparison on a busy
    machine. Returns the callable, the source label and the device description."""

    def timer(self, artifact: Artifact, settings: MeasureSettings) -> tuple[Callable[[], object], str, str]: ...

"""What each TensorRT release on the Jetsons accepts, as data: ONNX opset, trtexec flags, INT8.

Engines are built on the board by that board's TensorRT, so the ONNX we export and the trtexec
line we send must suit *that* release, not the newest one. Every row cites where it was read.
A target names its release in the YAML's ``compiler_target`` (``tensorrt: "8.2"``, ``sm: "53"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from edgeprune.backends.onnx_export import OPSET
from edgeprune.errors import ConfigError


@dataclass(frozen=True)
class TrtRelease:
    """One TensorRT major.minor as trtexec and the ONNX parser see it.

    ``skip_inference_flag``: build-only switch (``--buildOnly`` until 8.x, ``--skipInference`` in
    10.x, where ``--buildOnly`` is an unknown option and trtexec refuses to start);
    ``percentile_list``: ``--percentile`` takes ``P1,P2,...`` (8.5+) instead of one number (8.2);
    ``times_include_warmup``: ``--exportTimes`` also writes the warm-up iterations (8.2 only), which
    the parser must drop as trtexec's own report does (``computeStart < warmUp``).
    """

    version: str
    jetpack: str
    max_opset: int
    skip_inference_flag: str
    percentile_list: bool
    times_include_warmup: bool
    source: str


RELEASES: Mapping[str, TrtRelease] = MappingProxyType({
    "8.2": TrtRelease(
        "8.2", "4.6", 13, "--buildOnly", False, True,
        "onnx-tensorrt docs/operators.md for 8.2 ('up to Opset 13'); TensorRT 8.2.1 "
        "samples/common/sampleOptions.cpp (--buildOnly, --percentile=P, --explicitBatch 'deprecated and has "
        "no effect' for ONNX) and sampleReporting.cpp (exportJSONTrace writes warm-ups)"),
    "8.5": TrtRelease(
        "8.5", "5", 17, "--buildOnly", True, False,
        "onnx-tensorrt docs/operators.md for 8.5 ('up to Opset 17'); TensorRT 8.5.3 sampleOptions.cpp "
        "(--buildOnly, --percentile=P1,P2,...) and sampleReporting.cpp (warm-ups skipped in exportJSONTrace)"),
    "10.3": TrtRelease(
        "10.3", "6", 20, "--skipInference", True, False,
        "onnx-tensorrt docs/operators.md for 10.0 ('opset 9 to opset 20', assumed for 10.3: unverified); "
        "TensorRT v10.3.0 sampleOptions.cpp (--skipInference; no --buildOnly/--explicitBatch)"),
})

NO_INT8_SM: Mapping[str, str] = MappingProxyType({
    "53": "Maxwell sm_53 (Jetson Nano) has no INT8 in TensorRT: Q/DQ networks do not build",
})
"""GPUs whose TensorRT cannot run INT8 (REFERENCE.md section 3)."""


def release_for(compiler_target: Mapping[str, object], target_name: str) -> TrtRelease:
    """The release the target's YAML names; a clear ConfigError when missing or unknown."""
    version = str(compiler_target.get("tensorrt", "")).strip()
    if not version:
        raise ConfigError(f"target {target_name} names no TensorRT release (compiler_target.tensorrt, e.g. \"8.5\")")
    major_minor = ".".join(version.split(".")[:2])
    if major_minor not in RELEASES:
        raise ConfigError(f"target {target_name}: TensorRT {version} is not known; known: {', '.join(RELEASES)}")
    return RELEASES[major_minor]


def export_opset(release: TrtRelease) -> int:
    """Opset to export for this release: the project's opset, lowered to what the parser accepts."""
    return min(OPSET, release.max_opset)


def check_precision(compiler_target: Mapping[str, object], precision: str, target_name: str) -> None:
    """Refuse precisions this GPU/TensorRT cannot build, before anything is exported."""
    if precision not in ("fp32", "fp16", "int8"):
        raise ConfigError(f"TensorRT on {target_name} builds fp32, fp16 or int8, not {precision}")
    sm = str(compiler_target.get("sm", ""))
    if precision == "int8" and sm in NO_INT8_SM:
        raise ConfigError(f"int8 is not possible on {target_name}: {NO_INT8_SM[sm]}; use --precision fp16")

"""Channel counts TensorRT's chosen tensor formats want, per GPU and precision.

A pruned layer whose channel count is not a multiple of its format's vector width gets padded
(wasted MACs) or a reformat layer. The engine says which format it chose for each layer in
``trtexec --exportLayerInfo`` (``--profilingVerbosity=detailed``), e.g. ``"Channel major FP16 format
where channel % 8 == 0"`` or ``"Thirty-two wide channel vectorized row major Int8 format"``;
:func:`edgeprune.backends.tensorrt.trtexec.engine_channel_multiple` reads that off a board's file.

Without a board, :func:`expected_channel_multiple` gives the width of the format the GPU's fast
kernels use (the prior). Sources:

* the formats, TensorRT Python API ``tensorrt.TensorFormat`` (8.5.3 docs, LayerBase.html):
  ``CHW2`` "Two wide channel vectorized ... bound to FP16", ``HWC8`` "Eight channel format where C is
  padded to a multiple of 8 ... bound to FP16", ``CHW4`` "Four wide ... bound to INT8", ``CHW32``
  "Thirty-two wide channel vectorized ... bound to INT8";
* which of them the engine picks: trt-engine-explorer's example layer files in NVIDIA/TensorRT
  v10.3.0 (A100): FP16 convolutions write ``channel % 8 == 0`` (some ``% 16``), the explicitly
  quantized (Q/DQ) ResNet writes ``Thirty-two wide ... Int8`` (tests/backends/tensorrt/test_trt_reports.py);
* GPU generations: Tensor Cores from sm_70 (Volta; Xavier's sm_72 adds INT8 Tensor Cores, as do
  Turing and Ampere incl. Orin's sm_87); Maxwell sm_53 (Nano) has none, its FP16 kernels are
  ``half2`` (pairs of channels -> ``CHW2``) and it has no INT8 at all.

The Maxwell figure (2) and Xavier's INT8 figure (32) are the format widths, not read off a board
yet: refine them with :func:`measured_channel_multiple` on a board's ``layers.json`` (the SSH
measurer already puts it in ``Measurement.details["engine_channel_multiple"]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgeprune.backends.tensorrt import trtexec
from edgeprune.errors import ConfigError

if TYPE_CHECKING:
    from edgeprune.targets import TargetSpec

TENSOR_CORE_SM = 70  # Volta and newer: FP16 Tensor Cores
INT8_TENSOR_CORE_SM = 72  # Xavier (sm_72), Turing (75), Ampere (80/86/87): INT8 Tensor Cores (IMMA)


@dataclass(frozen=True)
class ChannelRule:
    """``multiple``: round kept channel counts to it; ``format``: the TensorRT format behind it;
    ``source``: ``prior:tensorrt-formats`` (no engine seen) or ``measured:exportLayerInfo``."""

    multiple: int
    format: str
    source: str
    note: str = ""

    def to_json(self) -> dict:
        return {"channel_multiple": self.multiple, "format": self.format, "source": self.source, "note": self.note}


def _sm(compiler_target: Mapping[str, object]) -> int | None:
    text = str(compiler_target.get("sm", "")).strip()
    return int(text) if text.isdigit() else None


def expected_channel_multiple(compiler_target: Mapping[str, object], precision: str,
                              target_name: str = "target") -> ChannelRule:
    """The channel multiple the formats of this GPU's fast kernels want at ``precision`` (no board)."""
    sm = _sm(compiler_target)
    if precision == "fp32":
        # trtexec gets --noTF32 for fp32 (see trtexec.precision_flags): plain FP32 kernels, linear format
        return ChannelRule(1, "Row major linear FP32", "prior:tensorrt-formats",
                           "fp32 is built with --noTF32: no Tensor Core format to align to")
    if precision == "fp16":
        if sm is None or sm >= TENSOR_CORE_SM:
            note = "" if sm is not None else f"{target_name} names no compiler_target.sm: Tensor Cores assumed"
            return ChannelRule(8, "Channel major FP16 format where channel % 8 == 0", "prior:tensorrt-formats", note)
        return ChannelRule(2, "Two wide channel vectorized row major FP16 format", "prior:tensorrt-formats",
                           f"sm_{sm} has no Tensor Cores: half2 kernels pair channels (unverified on a board)")
    if precision == "int8":
        if sm is not None and sm < TENSOR_CORE_SM:
            raise ConfigError(f"{target_name} (sm_{sm}) has no int8 TensorRT kernels; no int8 channel multiple")
        if sm is None or sm >= INT8_TENSOR_CORE_SM:
            note = "" if sm is not None else f"{target_name} names no compiler_target.sm: INT8 Tensor Cores assumed"
            return ChannelRule(32, "Thirty-two wide channel vectorized row major Int8 format", "prior:tensorrt-formats",
                               note or "INT8 Tensor Core (IMMA) kernels; layers TensorRT runs with dp4a use % 4")
        return ChannelRule(4, "Four wide channel vectorized row major Int8 format", "prior:tensorrt-formats",
                           f"sm_{sm} has no INT8 Tensor Cores: dp4a kernels on groups of 4 channels")
    raise ConfigError(f"TensorRT builds fp32, fp16 or int8, not {precision}")


def channel_multiple_for(target: TargetSpec, precision: str) -> int:
    """What the search rounds kept channel counts to for this target and precision (no board)."""
    return expected_channel_multiple(target.compiler_target, precision, target.name).multiple


def measured_channel_multiple(layer_info_json: str) -> ChannelRule:
    """The multiple every format a built engine chose divides (its LCM), from a board's
    ``--exportLayerInfo`` file; ``format`` names the widest of them."""
    formats = trtexec.parse_layer_info(layer_info_json)
    multiple = trtexec.engine_channel_multiple(formats)
    widest = max(formats, key=lambda f: f.channel_multiple, default=None)
    return ChannelRule(multiple, widest.format if widest else "", "measured:exportLayerInfo",
                       f"{len(formats)} layer outputs, {trtexec.reformat_layer_count(layer_info_json)} reformat layers")

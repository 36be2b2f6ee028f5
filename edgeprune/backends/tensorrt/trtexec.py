"""trtexec command lines per TensorRT release, and parsers for the JSON files trtexec writes.

trtexec ships with every JetPack (``/usr/src/tensorrt/bin/trtexec``), so the board needs nothing
of ours: we send a command line and read back ``--exportTimes`` / ``--exportProfile`` /
``--exportLayerInfo``. Formats (read in TensorRT's ``samples/common/sampleReporting.cpp`` at
8.2.1, 8.5.3 and v10.3.0, and in trt-engine-explorer's example files):

* times: ``[{"startEnqMs", "endEnqMs", "startH2dMs", "endH2dMs", "startComputeMs", "endComputeMs",
  "startD2hMs", "endD2hMs", "h2dMs", "computeMs", "d2hMs", "latencyMs"[, "endToEndMs"]}, ...]`` -
  ``endToEndMs`` only in 8.2; ``samples/trtexec/tracer.py`` still names the older keys
  ``startInMs``/``inMs``/``outMs``, which are read too;
* profile: ``[{"count": N}, {"name", "timeMs", "averageMs"[, "medianMs"], "percentage"}, ...]``;
* layer info: ``{"Layers": [{"Name", "LayerType", "Inputs": [{"Format/Datatype": ...}], ...}]}``.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeprune.backends.tensorrt.versions import TrtRelease
from edgeprune.errors import ConfigError, DeviceError
from edgeprune.profilers.stats import LatencyStats

JETPACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
"""Where JetPack installs trtexec (it is not on PATH there)."""


@dataclass(frozen=True)
class RunSettings:
    """trtexec's timing knobs. ``duration_s`` also sets how many power samples the run gets."""

    warmup_ms: int = 200
    iterations: int = 50
    duration_s: int = 3
    avg_runs: int = 10
    percentiles: tuple[float, ...] = (50.0, 90.0, 99.0)


@dataclass(frozen=True)
class EngineFiles:
    """Paths (on the machine that runs trtexec) of the files one measurement reads and writes."""

    onnx: str
    engine: str
    times: str
    profile: str
    layers: str

    @classmethod
    def in_dir(cls, folder: str, onnx_name: str = "model.onnx") -> "EngineFiles":
        return cls(f"{folder}/{onnx_name}", f"{folder}/model.engine", f"{folder}/times.json",
                   f"{folder}/profile.json", f"{folder}/layers.json")


def precision_flags(precision: str, qdq: bool) -> list[str]:
    """fp32 turns TF32 off (Ampere would otherwise use it silently); int8 needs a Q/DQ ONNX, because
    calibrators are deprecated since TensorRT 10.1 and ``--int8`` alone would time random scales.

    int8 sends ``--int8 --fp16``: trtexec's help (sampleOptions.cpp, 8.2-10.x) reads "--int8 Enable
    int8 precision, in addition to fp32" and "--fp16 Enable fp16 precision, in addition to fp32";
    the developer guide's "Working with INT8" says the INT8 flag must be set for any quantized
    operation, and in an explicitly quantized (Q/DQ) network only the Q/DQ-wrapped layers are int8,
    so without ``--fp16`` every layer outside a Q/DQ pair (excluded layers, the head, element-wise
    glue) runs in fp32. ``--stronglyTyped`` (10.x only, and it forbids these flags) is not used:
    8.2/8.5 boards do not have it and the ONNX's float tensors would pin those layers to fp32."""
    if precision == "fp32":
        return ["--noTF32"]
    if precision == "fp16":
        return ["--fp16"]
    if precision == "int8":
        if not qdq:
            raise ConfigError("int8 engines are built from an explicit Q/DQ ONNX; quantize the model first")
        return ["--int8", "--fp16"]
    raise ConfigError(f"trtexec builds fp32, fp16 or int8, not {precision}")


def _percentile_flag(release: TrtRelease, settings: RunSettings) -> str:
    if release.percentile_list:
        return "--percentile=" + ",".join(f"{p:g}" for p in settings.percentiles)
    return f"--percentile={max(settings.percentiles):g}"  # 8.2 takes one value


def build_args(release: TrtRelease, files: EngineFiles, precision: str, qdq: bool) -> list[str]:
    """Build only: parse the ONNX, save the engine and its layer formats; no timing (so no power)."""
    return [f"--onnx={files.onnx}", f"--saveEngine={files.engine}", *precision_flags(precision, qdq),
            "--profilingVerbosity=detailed", f"--exportLayerInfo={files.layers}", release.skip_inference_flag]


def timing_args(release: TrtRelease, files: EngineFiles, settings: RunSettings) -> list[str]:
    """The timed run: no profiler attached (it adds synchronisations), per-inference times exported."""
    return [f"--loadEngine={files.engine}", "--useCudaGraph", f"--warmUp={settings.warmup_ms}",
            f"--iterations={settings.iterations}", f"--duration={settings.duration_s}",
            f"--avgRuns={settings.avg_runs}", _percentile_flag(release, settings), f"--exportTimes={files.times}"]


def profile_args(files: EngineFiles) -> list[str]:
    """A separate per-layer profiling run, after the timed one, so neither disturbs the other."""
    return [f"--loadEngine={files.engine}", "--iterations=20", "--duration=0", "--warmUp=100",
            f"--exportProfile={files.profile}"]


def one_shot_args(release: TrtRelease, files: EngineFiles, precision: str, qdq: bool,
                  settings: RunSettings) -> list[str]:
    """Build + time + profile in one call, for a user who runs trtexec by hand on the board."""
    return [f"--onnx={files.onnx}", f"--saveEngine={files.engine}", *precision_flags(precision, qdq),
            "--useCudaGraph", "--separateProfileRun", f"--warmUp={settings.warmup_ms}",
            f"--iterations={settings.iterations}", f"--duration={settings.duration_s}",
            f"--avgRuns={settings.avg_runs}", _percentile_flag(release, settings),
            f"--exportTimes={files.times}", f"--exportProfile={files.profile}",
            f"--exportLayerInfo={files.layers}", "--profilingVerbosity=detailed"]


def command_line(program: str, args: list[str]) -> str:
    """``program`` is a shell prefix (``/usr/src/tensorrt/bin/trtexec`` or a stand-in); args are quoted."""
    return f"{program} {' '.join(shlex.quote(a) for a in args)}"


# --------------------------------------------------------------------------------------- parsers

def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise DeviceError(f"trtexec {what} is not JSON: {text[:80]!r}") from None


def latency_samples(text: str, warmup_ms: float = 0.0) -> tuple[list[float], list[float]]:
    """``(latencyMs, computeMs)`` per timed inference from ``--exportTimes``.

    ``warmup_ms`` > 0 drops records with ``startComputeMs < warmup_ms``: the rule trtexec 8.2
    applies in ``printPerformanceReport``, needed because 8.2 also exports the warm-ups.
    """
    records = _json(text, "--exportTimes file")
    if not isinstance(records, list):
        raise DeviceError("trtexec --exportTimes file is not a list of records")
    latency, compute = [], []
    for r in records:
        try:
            if float(r["startComputeMs"]) < warmup_ms:
                continue
            latency.append(float(r["latencyMs"]))
            compute.append(float(r["computeMs"]))
        except (KeyError, TypeError, ValueError):
            raise DeviceError(f"trtexec times record lacks latencyMs/computeMs: {str(r)[:80]}") from None
    if not latency or min(latency) <= 0:
        raise DeviceError("trtexec exported no positive timed inferences")
    return latency, compute


def parse_times(text: str, host: str, warmup_ms: float = 0.0) -> LatencyStats:
    """``--exportTimes`` -> LatencyStats labelled ``measured:trtexec:<host>`` (H2D + compute + D2H)."""
    latency, _ = latency_samples(text, warmup_ms)
    return LatencyStats.from_samples(latency, 0, f"measured:trtexec:{host}")


@dataclass(frozen=True)
class LayerTime:
    """One row of ``--exportProfile``: a fused engine layer and its share of the run."""

    name: str
    total_ms: float
    average_ms: float
    percentage: float
    median_ms: float | None = None  # written by 8.5+


def parse_profile(text: str) -> tuple[int, list[LayerTime]]:
    """``--exportProfile`` -> (profiled run count, per-layer rows in engine order)."""
    rows = _json(text, "--exportProfile file")
    if not isinstance(rows, list) or not rows or "count" not in rows[0]:
        raise DeviceError("trtexec --exportProfile file does not start with {\"count\": N}")
    layers = []
    for r in rows[1:]:
        try:
            layers.append(LayerTime(str(r["name"]), float(r["timeMs"]), float(r["averageMs"]),
                                    float(r["percentage"]),
                                    float(r["medianMs"]) if "medianMs" in r else None))
        except (KeyError, TypeError, ValueError):
            raise DeviceError(f"trtexec profile row lacks name/timeMs/averageMs/percentage: {str(r)[:80]}") from None
    return int(rows[0]["count"]), layers


_WIDE = {"Two": 2, "Four": 4, "Eight": 8, "Sixteen": 16, "Thirty-two": 32}
_MODULO = re.compile(r"channel % (\d+) == 0")
_VECTORIZED = re.compile(r"^(Two|Four|Eight|Sixteen|Thirty-two) wide channel vectorized")


def format_channel_multiple(fmt: str) -> int:
    """Channel multiple a tensor format implies: ``Channel major FP16 format where channel % 8 ==
    0`` -> 8; ``Thirty-two wide channel vectorized row major Int8 format`` -> 32; linear -> 1."""
    if m := _MODULO.search(fmt):
        return int(m.group(1))
    if m := _VECTORIZED.match(fmt):
        return _WIDE[m.group(1)]
    return 1


@dataclass(frozen=True)
class LayerFormat:
    """A compute layer's output format and the channel multiple it pads to."""

    name: str
    layer_type: str
    format: str
    channel_multiple: int


def parse_layer_info(text: str) -> list[LayerFormat]:
    """Output formats of every non-reformat layer in ``--exportLayerInfo`` (needs
    ``--profilingVerbosity=detailed``; without it layers are bare names and this raises)."""
    info = _json(text, "--exportLayerInfo file")
    layers = info.get("Layers") if isinstance(info, dict) else None
    if not isinstance(layers, list) or (layers and not isinstance(layers[0], dict)):
        raise DeviceError("trtexec layer info has no detailed Layers (build with --profilingVerbosity=detailed)")
    out = []
    for layer in layers:
        if layer.get("LayerType") == "Reformat":
            continue
        for tensor in layer.get("Outputs", []):
            fmt = str(tensor.get("Format/Datatype", ""))
            out.append(LayerFormat(str(layer.get("Name")), str(layer.get("LayerType")), fmt,
                                   format_channel_multiple(fmt)))
    return out


def reformat_layer_count(text: str) -> int:
    """Reformat layers TensorRT inserted: copies that channel counts off the multiple cost."""
    layers = _json(text, "--exportLayerInfo file").get("Layers", [])
    return sum(1 for layer in layers if isinstance(layer, dict) and layer.get("LayerType") == "Reformat")


def engine_channel_multiple(formats: list[LayerFormat]) -> int:
    """The channel multiple that suits every format the engine chose (their LCM): pruning to
    multiples of it keeps TensorRT from padding channels or inserting reformat layers."""
    return math.lcm(1, *(f.channel_multiple for f in formats))


def compute_stats(compute_ms: list[float]) -> dict[str, float]:
    """GPU compute time alone (no copies), kept in the details beside the latency."""
    arr = np.asarray(compute_ms, dtype=np.float64)
    return {"median": float(np.median(arr)), "p90": float(np.percentile(arr, 90)), "n": int(arr.size)}

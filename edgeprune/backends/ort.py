"""ONNX export + ONNX Runtime (CPU execution provider): the second runtime for CPU targets.

ONNX Runtime needs no tuning and is often the faster runtime on x86 and ARM CPUs, so deploy
measures it beside TVM and ships whichever is faster on the device.

Precisions: ``fp32`` (the exported ONNX), ``int8`` (= ``w8a8``: static QDQ calibrated on
``options.calibration``, uint8 activations because only those run as integer kernels on ORT's x86
CPU provider; ``options.layer_precisions`` keeps named nodes in float) and ``fp16`` (after the
FP16 overflow check). The file building lives in :mod:`edgeprune.quantize.build`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from edgeprune.artifact import Artifact
from edgeprune.backends import backends
from edgeprune.backends.base import CompileOptions, Session
from edgeprune.backends.onnx_export import OPSET, export_onnx
from edgeprune.errors import CompileError, ToolchainMissingError
from edgeprune.profilers.base import Measurement, MeasureSettings
from edgeprune.profilers.host import cpu_description, rapl_unavailable_reason
from edgeprune.profilers.stats import LatencyStats, time_callable
from edgeprune.quantize import build
from edgeprune.quantize.aware import toolkit_of


def _quantized(model: torch.nn.Module, example: torch.Tensor, path: Path, precision: str,
               keep_float: list[str], options: CompileOptions) -> dict:
    """Export FP32 to a scratch folder, write the ``precision`` file at ``path``; its meta."""
    batches = options.calibration.batches  # int8 refuses none unless the model holds Q/DQ (QAT)
    with tempfile.TemporaryDirectory(prefix="edgeprune-ort-") as tmp:
        src = Path(tmp) / "model.fp32.onnx"
        export_onnx(model, example, src)
        if precision == "int8":
            result = build.build_int8(src, path, batches, options.calibration.method, keep_float)
        else:
            result = build.build_fp16(src, path, batches, example.detach().numpy(), keep_float)
    return result.meta


def _session(path: Path, threads: int | None):
    try:
        import onnxruntime as ort
    except ImportError:
        raise ToolchainMissingError(
            "onnxruntime is not installed (pip install 'edgeprune[onnx]')"
        ) from None
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads block instead of spin-waiting: edgeprune keeps a candidate and its
    # reference loaded side by side, and two pools spinning on a shared 2-core machine stole each
    # other's cores (measured: docs/measurement.md).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        raise CompileError(f"ONNX Runtime cannot load {path.name}: {str(exc).splitlines()[0]}") from None


@backends.register("onnxruntime")
class OnnxRuntimeBackend:
    """Exports ``model.onnx`` (or ``model.int8.onnx`` / ``model.fp16.onnx``); the session is ONNX
    Runtime's CPU provider with full graph opts."""

    name = "onnxruntime"
    # fp16 builds, but runs no faster on x86 CPUs (measured); low-bit widths run on int8 kernels
    precisions = ("fp32", "fp16", "int8", *build.LOWBIT)

    def channel_multiple(self, compiler_target: dict, precision: str) -> int:
        """16 on an AVX-512 host, 8 on AVX2, else no opinion (1): ONNX Runtime's CPU kernels pad
        channels to their block width (MLAS NCHWc blocks for fp32, QLinearConv's for int8), so a
        count between two multiples of 16 costs what the next multiple costs on an AVX-512 Xeon
        (measured: bench/bench_channel_rounding.py, docs/channel_rounding.md; fp32 C = 52..64 within
        1 %, int8 +42 % time for +13 % MACs at 64 -> 68). Rounding the search to it keeps only
        counts that change the latency. AVX2's 8 is MLAS's block width, not measured here; an
        ONNX Runtime on a board (``mtriple`` not x86) is left to the target YAML. Low-bit files
        run on the int8 kernels, so they round like int8."""
        from edgeprune.profilers.host import cpu_flags

        triple = str(compiler_target.get("mtriple") or "")
        if (triple and not triple.startswith("x86_64")) or precision not in ("fp32", "int8", *build.LOWBIT):
            return 1
        flags = cpu_flags()
        return 16 if "avx512f" in flags else 8 if "avx2" in flags else 1

    def qat_toolkit(self, precision: str) -> str:
        """Brevitas: its int8 export (BatchNorm folded, uint8 activations after ReLU) runs as
        QLinearConv here at 1.02x the post-training file's latency, while ModelOpt's (symmetric
        int8, BatchNorm unfolded) left the demo's Convs in float, 3.75x slower (docs/quantization.md)."""
        return "brevitas"

    def unavailable_reason(self) -> str | None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "onnxruntime is not installed (pip install 'edgeprune[onnx]')"
        return None

    def compile(
        self, model: torch.nn.Module, example: torch.Tensor, out_dir: Path, options: CompileOptions
    ) -> Artifact:
        """fp32: the exported ONNX as is; int8 (= w8a8) / fp16: that ONNX quantized by
        :mod:`edgeprune.quantize.build` (``files[0]`` is the shipped ``model.<precision>.onnx``)."""
        import onnxruntime as ort

        precision = build.resolve_precision(options.precision, self.name)
        keep_float = build.float_layers(precision, options.layer_precisions)  # refuses bad values early
        out_dir.mkdir(parents=True, exist_ok=True)
        meta = {"opset": OPSET, "onnxruntime": ort.__version__, "provider": "CPUExecutionProvider",
                "tuned": False, "note": "ONNX Runtime needs no tuning"}
        if precision == "fp32":
            path = out_dir / "model.onnx"
            export_onnx(model, example, path)
        elif precision in build.LOWBIT or toolkit_of(model) == "brevitas":
            path = out_dir / f"model.{precision}.onnx"
            meta.update(build.build_lowbit(model, example, path))
        else:
            path = out_dir / f"model.{precision}.onnx"
            meta.update(_quantized(model, example, path, precision, keep_float, options))
        sidecar = path.with_name(path.name + ".json")
        sidecar.write_text(json.dumps({"input_shape": list(example.shape), "precision": precision, **meta},
                                      indent=2, default=str))
        return Artifact(
            runtime=self.name, target=options.target_name, files=(path, sidecar),
            input_shape=tuple(example.shape), precision=precision, meta=meta,
        )

    def load(self, artifact: Artifact, threads: int | None = None) -> Session:
        sess = _session(artifact.path, threads)
        name = sess.get_inputs()[0].name

        def run(batch: np.ndarray) -> np.ndarray:
            return sess.run(None, {name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

        return run

    def timer(self, artifact: Artifact, settings: MeasureSettings) -> tuple[Callable[[], object], str, str]:
        """One inference on a fixed random input, the session loaded once (see CallTimer)."""
        run = self.load(artifact, settings.threads)
        x = np.random.default_rng(0).random(artifact.input_shape, dtype=np.float32)
        return (lambda: run(x)), "measured:onnxruntime-local", cpu_description(settings.threads)

    def measure(self, artifact: Artifact, settings: MeasureSettings) -> Measurement:
        call, _, _ = self.timer(artifact, settings)
        samples = time_callable(call, settings)
        return Measurement(
            latency=LatencyStats.from_samples(samples, settings.warmup, "measured:onnxruntime-local"),
            device=cpu_description(settings.threads),
            energy_note=rapl_unavailable_reason() or "measurable but not sampled",
        )


"""The ``tensorrt`` runtime: a validated ONNX for the target's TensorRT, built into an engine.

``compile`` exports the ONNX at the opset the target's TensorRT parses, checks it with ONNX
Runtime against PyTorch before anything else, and builds an engine only where that is possible
(``tensorrt`` importable and a CUDA GPU). Otherwise the artifact is the validated ONNX plus the
exact trtexec line; the board builds the engine itself (see :mod:`.board`), because engines are
not portable across GPUs or TensorRT releases.

INT8: TensorRT builds INT8 from an explicit Q/DQ ONNX (calibrators are deprecated since 10.1).
``compile`` refuses ``int8``; quantize first (e.g. ORT static QDQ) and pass the file to
:meth:`TensorRtBackend.compile_onnx`, which records ``meta["qdq"] = True`` so ``--int8`` is sent.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeprune.artifact import Artifact
from edgeprune.backends import backends
from edgeprune.backends.base import CompileOptions, Session
from edgeprune.backends.onnx_export import export_onnx
from edgeprune.backends.tensorrt import engine, trtexec, versions
from edgeprune.errors import CompileError, ConfigError, DeviceError, ToolchainMissingError, ValidationError
from edgeprune.profilers.base import MeasureSettings, Measurement
from edgeprune.profilers.stats import LatencyStats, time_callable

FP32_TOLERANCE = {"fp32": 1e-3}
"""ONNX Runtime vs PyTorch, both fp32 on this CPU: they must agree to 1e-3 (abs and rel)."""

ONNX_LOAD_NOTE = "ONNX Runtime session of model.onnx (validation only: the engine runs on the board)"


def _ort_session(path: Path):
    try:
        import onnxruntime as ort
    except ImportError:
        raise ToolchainMissingError("onnxruntime is needed to validate the ONNX (pip install 'edgeprune[onnx]')") from None
    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises several types; re-raised typed
        raise CompileError(f"ONNX Runtime cannot load {path.name}: {str(exc).splitlines()[0]}") from None


def _onnx_ops(path: Path) -> tuple[int, set[str]]:
    """(default-domain opset, op types) of an ONNX file: what the board's parser will see."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return opset, {n.op_type for n in model.graph.node}


def validate_onnx(path: Path, model: torch.nn.Module, example: torch.Tensor) -> float:
    """Max abs difference ONNX Runtime vs PyTorch; ValidationError beyond the fp32 tolerance."""
    sess = _ort_session(path)
    got = sess.run(None, {sess.get_inputs()[0].name: example.numpy().astype(np.float32)})[0]
    with torch.no_grad():
        want = model.eval()(example).numpy()
    if got.shape != want.shape:
        raise ValidationError(f"{path.name}: ONNX Runtime output shape {got.shape} != PyTorch {want.shape}")
    tol = FP32_TOLERANCE["fp32"]
    diff = float(np.max(np.abs(got - want))) if want.size else 0.0
    if not np.allclose(got, want, atol=tol, rtol=tol):
        raise ValidationError(f"{path.name} disagrees with PyTorch: max |diff| {diff:.3g} > {tol:g}")
    return diff


@backends.register("tensorrt")
class TensorRtBackend:
    """ONNX for the target's TensorRT; engine built here only with TensorRT + a CUDA GPU."""

    name = "tensorrt"

    def unavailable_reason(self) -> str | None:
        """None when usable. Without local TensorRT the backend is still usable (the board builds
        the engine); it is unusable only without onnx/onnxruntime to export and validate."""
        for module in ("onnx", "onnxruntime"):
            try:
                __import__(module)
            except ImportError:
                return f"{module} is not installed (pip install 'edgeprune[onnx]'): cannot export/validate for TensorRT"
        return None

    def local_engine_note(self) -> str:
        """Why engines are (not) built on this machine; shown beside the runtime list."""
        trt, reason = engine.local_tensorrt()
        return reason if trt is None else f"engines are built locally with TensorRT {trt.__version__}"

    def compile(self, model: torch.nn.Module, example: torch.Tensor, out_dir: Path,
                options: CompileOptions) -> Artifact:
        release = versions.release_for(options.compiler_target, options.target_name)
        versions.check_precision(options.compiler_target, options.precision, options.target_name)
        if options.precision == "int8":
            raise ConfigError("tensorrt int8 needs an explicit Q/DQ ONNX: quantize the model first and pass "
                              "the file to TensorRtBackend.compile_onnx (or use --precision fp16)")
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "model.onnx"
        opset = versions.export_opset(release)
        export_onnx(model, example, path, opset)
        diff = validate_onnx(path, model, example)
        return self._finish(path, tuple(example.shape), options, release, qdq=False,
                            meta={"opset": opset, "validated": f"onnxruntime vs pytorch, max |diff| {diff:.3g}"})

    def compile_onnx(self, onnx_path: Path, input_shape: tuple[int, ...], out_dir: Path,
                     options: CompileOptions) -> Artifact:
        """Wrap an existing ONNX (for int8: a Q/DQ ONNX from a quantizer, already validated there)."""
        release = versions.release_for(options.compiler_target, options.target_name)
        versions.check_precision(options.compiler_target, options.precision, options.target_name)
        opset, ops = _onnx_ops(onnx_path)
        qdq = {"QuantizeLinear", "DequantizeLinear"} <= ops
        if options.precision == "int8" and not qdq:
            raise ConfigError(f"{onnx_path.name} has no QuantizeLinear/DequantizeLinear nodes: not a Q/DQ ONNX for int8")
        if opset > release.max_opset:
            raise ConfigError(f"{onnx_path.name} uses opset {opset}; TensorRT {release.version} parses up to "
                              f"{release.max_opset}: export/quantize at opset {release.max_opset}")
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "model.onnx"
        if onnx_path.resolve() != path.resolve():
            shutil.copyfile(onnx_path, path)
        _ort_session(path)  # loads and type-checks here before a board ever sees it
        return self._finish(path, tuple(input_shape), options, release, qdq=qdq,
                            meta={"opset": opset, "validated": "loaded by onnxruntime (outputs checked by the quantizer)"})

    def _finish(self, path: Path, shape: tuple[int, ...], options: CompileOptions, release: versions.TrtRelease,
                qdq: bool, meta: dict[str, Any]) -> Artifact:
        """Build here when possible; always record the board's trtexec line and a sidecar."""
        files = trtexec.EngineFiles.in_dir(".", path.name)
        line = trtexec.command_line(trtexec.JETPACK_TRTEXEC, trtexec.one_shot_args(
            release, files, options.precision, qdq, trtexec.RunSettings()))
        meta = {**meta, "tensorrt": release.version, "jetpack": release.jetpack, "qdq": qdq,
                "build_command": line, "load": ONNX_LOAD_NOTE, "tuned": False,
                "note": "TensorRT picks kernels itself when it builds the engine"}
        out = [path]
        trt, reason = engine.local_tensorrt()
        if trt is None:
            meta["engine"] = f"not built here: {reason}"
        else:
            engine_path = path.with_name("model.engine")
            facts = engine.build_engine(trt, path, engine_path, options.precision)
            meta.update(engine=engine_path.name, engine_built_with=facts,
                        load="TensorRT engine on this GPU (valid only for this GPU and TensorRT release)")
            out.append(engine_path)
        sidecar = path.with_name("model.onnx.json")
        sidecar.write_text(json.dumps({"input_shape": list(shape), "precision": options.precision, **meta}, indent=2))
        return Artifact(runtime=self.name, target=options.target_name, files=(*out, sidecar),
                        input_shape=shape, precision=options.precision, meta=meta)

    def _local_engine(self, artifact: Artifact) -> Path | None:
        found = [f for f in artifact.files if f.suffix == ".engine"]
        return found[0] if found and engine.local_tensorrt()[0] is not None else None

    def load(self, artifact: Artifact) -> Session:
        """The local engine when there is one, else ONNX Runtime on the ONNX (``meta["load"]``)."""
        engine_path = self._local_engine(artifact)
        if engine_path is not None:
            return engine.EngineSession(engine.local_tensorrt()[0], engine_path)
        onnx = next(f for f in artifact.files if f.suffix == ".onnx")
        sess = _ort_session(onnx)
        name = sess.get_inputs()[0].name

        def run(batch: np.ndarray) -> np.ndarray:
            return sess.run(None, {name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

        return run

    def measure(self, artifact: Artifact, settings: MeasureSettings) -> Measurement:
        """Time the local engine (GPU hosts); without one the figure must come from the board."""
        engine_path = self._local_engine(artifact)
        if engine_path is None:
            raise DeviceError("TensorRT engines are timed on the Jetson: pass --device ssh://USER@JETSON "
                              f"({artifact.meta.get('engine', 'no engine here')})")
        import torch

        session = engine.EngineSession(engine.local_tensorrt()[0], engine_path)
        samples = time_callable(session.run_on_device, settings)
        return Measurement(latency=LatencyStats.from_samples(samples, settings.warmup, "measured:tensorrt-local"),
                           device=f"{torch.cuda.get_device_name(0)} (TensorRT {artifact.meta.get('tensorrt')})",
                           energy_note="not measurable: no power counter sampled on this host")

"""The ``tensorrt`` runtime: a validated ONNX for the target's TensorRT, built into an engine.

``compile`` exports the ONNX at the opset the target's TensorRT parses, checks it with ONNX
Runtime against PyTorch before anything else, and builds an engine only where that is possible
(``tensorrt`` importable and a CUDA GPU). Otherwise the artifact is the validated ONNX plus the
exact trtexec line; the board builds the engine itself (see :mod:`.board`), because engines are
not portable across GPUs or TensorRT releases.

INT8: TensorRT builds INT8 from an explicit Q/DQ ONNX (calibrators are deprecated since 10.1).
``compile`` at ``int8`` exports the FP32 ONNX, quantizes it with ONNX Runtime's static QDQ
quantizer (symmetric int8, ``edgeprune.quantize.ort_int8``) on ``options.calibration``, keeps the
layers ``options.layer_precisions`` puts in float out of the quantization, makes the file
parseable by TensorRT (:mod:`.qdq`) and goes through :meth:`TensorRtBackend.compile_onnx`
(``meta["qdq"] = True`` -> ``--int8 --fp16``). The Q/DQ ONNX is validated in ONNX Runtime here;
the engine itself is built on the board.

FP16: before the ``--fp16`` line is written, the FP32 ONNX is run in ONNX Runtime with every
intermediate tensor exposed (``edgeprune.quantize.fp16.check_fp16_safety``) on the calibration
batches (or, without any, a few random inputs - said so in the meta); a tensor beyond 65504 is a
ValidationError naming the layer, and the per-layer maxima go into the meta.
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
from edgeprune.backends.tensorrt import qdq as qdq_rules
from edgeprune.backends.tensorrt.formats import expected_channel_multiple
from edgeprune.errors import (
    CompileError,
    ConfigError,
    DeviceError,
    ToolchainMissingError,
    ValidationError,
)
from edgeprune.profilers.base import Measurement, MeasureSettings
from edgeprune.profilers.stats import LatencyStats, time_callable

FP32_TOLERANCE = {"fp32": 1e-3}
"""ONNX Runtime vs PyTorch, both fp32 on this CPU: they must agree to 1e-3 (abs and rel)."""

ONNX_LOAD_NOTE = "ONNX Runtime session of model.onnx (validation only: the engine runs on the board)"
INT8_VALIDATED_WITH = "onnxruntime (the engine itself is built on the board)"
FP16_RANDOM_INPUTS = 8
"""Random inputs the FP16 range check runs on when no calibration batches were given."""
INT8_VALIDATION_SAMPLES = 256
"""Calibration samples the Q/DQ ONNX is run on in ONNX Runtime (against PyTorch) after quantizing."""


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
    precisions = ("fp32", "fp16", "int8")  # per GPU: versions.check_precision (no int8 on the Nano's sm_53)

    def channel_multiple(self, compiler_target: dict, precision: str) -> int:
        """The multiple the engine's formats want at ``precision`` on this GPU (see formats.py)."""
        from edgeprune.backends.tensorrt.formats import expected_channel_multiple

        return expected_channel_multiple(compiler_target, precision).multiple

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
        float_layers = _float_layers(options)
        if options.precision == "int8" and not options.calibration.batches:
            raise ConfigError(f"tensorrt int8 for {options.target_name} needs calibration batches "
                              "(CompileOptions.calibration): the Q/DQ scales come from them")
        out_dir.mkdir(parents=True, exist_ok=True)
        opset = versions.export_opset(release)
        fp32_path = out_dir / ("model.fp32.onnx" if options.precision == "int8" else "model.onnx")
        export_onnx(model, example, fp32_path, opset)
        diff = validate_onnx(fp32_path, model, example)
        meta: dict[str, Any] = {"opset": opset, "validated": f"onnxruntime vs pytorch, max |diff| {diff:.3g}",
                                "channel_rule": expected_channel_multiple(
                                    options.compiler_target, options.precision, options.target_name).to_json()}
        if options.precision == "fp16":
            meta["fp16_check"] = _fp16_check(fp32_path, example, options)
        if options.precision != "int8":
            return self._finish(fp32_path, tuple(example.shape), options, release, qdq=False, meta=meta)
        return self._compile_int8(model, example, fp32_path, out_dir, options, float_layers, meta)

    def _compile_int8(self, model: torch.nn.Module, example: torch.Tensor, fp32_path: Path, out_dir: Path,
                      options: CompileOptions, float_layers: list[str], meta: dict[str, Any]) -> Artifact:
        """FP32 ONNX -> symmetric int8 Q/DQ (ORT static, calibrated) -> TensorRT-parseable -> compile_onnx."""
        from edgeprune.quantize.ort_int8 import OrtInt8Config, quantize_int8

        method = options.calibration.method
        qdq_path = out_dir / "model.qdq.onnx"
        result = quantize_int8(fp32_path, qdq_path, list(options.calibration.batches),
                               OrtInt8Config(activations="s8", calibration=method), exclude=float_layers)
        fp32_note = meta.pop("validated")
        art = self.compile_onnx(qdq_path, tuple(example.shape), out_dir, options, meta={
            **meta, "fp32_onnx": fp32_path.name, "fp32_validated": fp32_note,
            "quantization": result.meta, "float_layers": float_layers,
            "float_layers_note": "layers outside Q/DQ pairs may run in fp16 or fp32 (--int8 --fp16: TensorRT picks)"})
        qdq_path.unlink(missing_ok=True)  # compile_onnx copied it to model.onnx (what the board gets)
        validation = _validate_int8(art.path, model, example, options)
        art.meta.update(validated=validation["summary"], validated_with=INT8_VALIDATED_WITH, int8_validation=validation)
        sidecar = art.path.with_name("model.onnx.json")
        sidecar.write_text(json.dumps({"input_shape": list(art.input_shape), "precision": art.precision,
                                       **art.meta}, indent=2, default=str))
        return art

    def compile_onnx(self, onnx_path: Path, input_shape: tuple[int, ...], out_dir: Path,
                     options: CompileOptions, meta: dict[str, Any] | None = None) -> Artifact:
        """Wrap an existing ONNX (for int8: a symmetric int8 Q/DQ ONNX; INT32 bias DequantizeLinear
        nodes, which TensorRT cannot parse, are folded to float biases - see :mod:`.qdq`)."""
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
        extra: dict[str, Any] = {"opset": opset,
                                 "validated": "loaded by onnxruntime (outputs checked by the quantizer)"}
        if qdq:
            extra["qdq_fixes"] = qdq_rules.prepare_for_tensorrt(path).to_json()
        _ort_session(path)  # loads and type-checks here before a board ever sees it
        return self._finish(path, tuple(input_shape), options, release, qdq=qdq, meta={**extra, **(meta or {})})

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
        sidecar.write_text(json.dumps({"input_shape": list(shape), "precision": options.precision, **meta}, indent=2,
                                      default=str))
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


def _float_layers(options: CompileOptions) -> list[str]:
    """Layers ``options.layer_precisions`` keeps out of int8 (sorted); refuses overrides this
    backend cannot honour at the artifact's precision."""
    layers = dict(options.layer_precisions or {})
    bad = {k: v for k, v in layers.items() if v not in ("fp32", "fp16", "int8")}
    if bad:
        name, value = next(iter(bad.items()))
        raise ConfigError(f"layer {name!r}: TensorRT per-layer precision is fp32, fp16 or int8, not {value!r}")
    if options.precision == "int8":
        return sorted(k for k, v in layers.items() if v != "int8")
    off = {k: v for k, v in layers.items() if v != options.precision}
    if off:
        name, value = next(iter(off.items()))
        raise ConfigError(f"layer {name!r} asks for {value} inside a {options.precision} TensorRT engine: per-layer "
                          "overrides are supported for int8 artifacts only (layers kept out of the Q/DQ graph)")
    return []


def _fp16_check(fp32_path: Path, example: torch.Tensor, options: CompileOptions) -> dict[str, Any]:
    """FP16 range check of the FP32 ONNX (ValidationError naming the first layer past 65504);
    returns the per-layer maxima for the meta."""
    from edgeprune.quantize.fp16 import check_fp16_safety

    batches = options.calibration.batches
    if batches:
        inputs = np.concatenate([np.asarray(b, np.float32) for b in batches])
        source = f"{len(inputs)} calibration samples"
    else:
        rng = np.random.default_rng(0)
        shape = (FP16_RANDOM_INPUTS - 1, *example.shape[1:])
        inputs = np.concatenate([example.numpy().astype(np.float32)[:1], rng.standard_normal(shape, np.float32)])
        source = (f"the example + {FP16_RANDOM_INPUTS - 1} standard-normal random inputs (no calibration batches "
                  "given: real data may reach larger activations)")
    try:
        report = check_fp16_safety(fp32_path, inputs)
    except ValidationError as exc:
        raise ValidationError(f"tensorrt --fp16 for {options.target_name}: {exc} (checked on {source})") from None
    acts = [r for r in report.layers if r.kind == "activation"]
    peak = max(report.layers, key=lambda r: r.max_abs, default=None)
    per_layer: dict[str, float] = {}
    for r in acts:
        per_layer[r.node] = max(per_layer.get(r.node, 0.0), float(f"{r.max_abs:.4g}"))
    return {
        "checked_on": source, "limit": report.limit,
        "headroom": None if report.headroom == float("inf") else round(report.headroom, 2),
        "largest": None if peak is None else {"layer": peak.node, "op": peak.op_type, "kind": peak.kind,
                                              "max_abs": float(f"{peak.max_abs:.4g}")},
        "max_activation_by_layer": dict(sorted(per_layer.items(), key=lambda kv: -kv[1])),
    }


def _validate_int8(path: Path, model: torch.nn.Module, example: torch.Tensor, options: CompileOptions) -> dict[str, Any]:
    """Run the Q/DQ ONNX in ONNX Runtime on calibration samples against PyTorch FP32: shapes must
    match and every logit be finite (ValidationError otherwise); the agreement is recorded - the
    int8 accuracy bound is judged on labelled data by the candidate's validation."""
    from edgeprune.quantize.base import open_session, run_all

    x = np.concatenate([np.asarray(b, np.float32) for b in options.calibration.batches])[:INT8_VALIDATION_SAMPLES]
    got = run_all(open_session(path), x)[0]
    batch = example.shape[0]
    with torch.no_grad():
        model = model.eval()
        want = np.concatenate([model(torch.from_numpy(x[i:i + batch])).numpy() for i in range(0, len(x), batch)])
    if got.shape != want.shape:
        raise ValidationError(f"{path.name}: ONNX Runtime int8 output shape {got.shape} != PyTorch {want.shape}")
    if not np.isfinite(got).all():
        raise ValidationError(f"{path.name}: ONNX Runtime int8 run gave {int((~np.isfinite(got)).sum())} non-finite logits")
    flat_got, flat_want = got.reshape(len(got), -1), want.reshape(len(want), -1)
    agree = float((flat_got.argmax(1) == flat_want.argmax(1)).mean())
    err = float(np.abs(got - want).max()) if want.size else 0.0
    return {"samples": len(x), "top1_agreement_vs_fp32": round(agree, 4), "max_abs_error_vs_fp32": float(f"{err:.4g}"),
            "summary": f"Q/DQ ONNX in onnxruntime vs pytorch fp32 on {len(x)} calibration samples: "
                       f"top-1 agreement {agree:.1%}, max |diff| {err:.3g}"}

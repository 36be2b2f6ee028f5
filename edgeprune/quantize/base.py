"""What every quantizer returns, and the ONNX Runtime plumbing they share.

Why the helpers live here: the quantizers, the FP16 safety check and the accuracy-aware fallback
all judge a model by *running the ONNX file in ONNX Runtime* (never PyTorch), and they must feed it
identically: the project's exporter fixes the batch dimension to the example's, so inputs are cut
into chunks of that size (the last one padded) instead of assuming a dynamic batch.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Protocol, Sequence

import numpy as np

from edgeprune.errors import CompileError, ConfigError, DataError, ToolchainMissingError
from edgeprune.profilers.host import cpu_flags

if TYPE_CHECKING:
    import onnxruntime

    from edgeprune.quantize.precision import PrecisionSpec

# Op types whose weights the INT8 quantizers turn into integers: the "layers" of a per-layer plan.
QUANTIZABLE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class QuantResult:
    """A written quantized ONNX file and how it was made (goes into the manifest as is)."""

    path: Path
    meta: dict[str, Any] = field(hash=False)

    @property
    def per_layer(self) -> dict[str, str]:
        """ONNX node name -> precision actually used (e.g. ``int8`` / ``fp32``)."""
        return dict(self.meta.get("per_layer", {}))


class Quantizer(Protocol):
    """One quantization method over ONNX files.

    ``calibration`` is a sequence of float32 input batches (NCHW) taken from the training data; a
    quantizer that needs none (FP16) ignores it. ``spec.per_layer`` names the ONNX nodes to keep
    at another precision (typically ``fp32``).
    """

    name: str

    def quantize(self, src: Path, dst: Path, spec: PrecisionSpec,
                 calibration: Sequence[np.ndarray]) -> QuantResult: ...


def require_ort() -> None:
    """Fail with the toolchain error (exit 9) rather than an ImportError traceback."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ToolchainMissingError(f"quantization needs onnx + onnxruntime (pip install 'edgeprune[onnx]'): {exc}") from None


def ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def open_session(path: Path, optimize: bool = True, threads: int = 0) -> "onnxruntime.InferenceSession":
    """A CPU session; ``optimize=False`` keeps every node (needed to read intermediate tensors)."""
    require_ort()
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own untyped errors; re-raise typed
        raise CompileError(f"ONNX Runtime cannot load {Path(path).name}: {_first_line(exc)}") from None


def fixed_batch(session: "onnxruntime.InferenceSession") -> int | None:
    """The input's batch size if the graph fixes it (the project's exporter does), else None."""
    dim = session.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) and dim > 0 else None


def chunks(x: np.ndarray, batch: int | None) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (chunk, n_valid): fixed-size chunks, the last one zero-padded up to ``batch``."""
    if len(x) == 0:
        raise DataError("no samples to run")
    step = batch or len(x)
    for start in range(0, len(x), step):
        part = x[start:start + step]
        n = len(part)
        if batch and n < batch:
            part = np.concatenate([part, np.zeros((batch - n, *part.shape[1:]), part.dtype)])
        yield np.ascontiguousarray(part, dtype=np.float32), n


def run_all(session: "onnxruntime.InferenceSession", x: np.ndarray,
            outputs: list[str] | None = None) -> list[np.ndarray]:
    """Run every sample of ``x`` through the session; returns each requested output, concatenated."""
    name = session.get_inputs()[0].name
    parts: list[list[np.ndarray]] = []
    for chunk, n in chunks(x, fixed_batch(session)):
        parts.append([o[:n] for o in session.run(outputs, {name: chunk})])
    return [np.concatenate(col) for col in zip(*parts)]


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    """Logits of the ONNX model at ``path`` for every sample in ``x`` (first output)."""
    return run_all(open_session(path), x)[0]


def calibration_reader(path: Path, batches: Sequence[np.ndarray]) -> Any:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over numpy batches, re-chunked to the
    model's fixed batch size (built here so the ORT import stays inside a function)."""
    from onnxruntime.quantization import CalibrationDataReader

    if not batches:
        raise DataError("calibration needs at least one batch of samples")
    session = open_session(path, optimize=False)
    name, batch = session.get_inputs()[0].name, fixed_batch(session)
    data = np.concatenate([np.asarray(b, dtype=np.float32) for b in batches])

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(chunks(data, batch))

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self._it, None)
            return None if item is None else {name: item[0]}

        def rewind(self) -> None:
            self._it = iter(chunks(data, batch))

    return _Reader()


def quantizable_nodes(path: Path) -> list[str]:
    """Names of the nodes a per-layer plan can place (Conv/Gemm/MatMul), in graph order."""
    require_ort()
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    nodes = [n for n in graph.node if n.op_type in QUANTIZABLE_OPS]
    unnamed = [n.op_type for n in nodes if not n.name]
    if unnamed:
        raise CompileError(f"{len(unnamed)} {unnamed[0]} node(s) have no name: per-layer precision needs names")
    return [n.name for n in nodes]


host_cpu_flags = cpu_flags  # one definition: edgeprune.profilers.host


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def float_layers(spec: "PrecisionSpec", quantizer: str, allowed: Sequence[str]) -> list[str]:
    """The layers a quantizer's per-layer overrides keep in fp32 (sorted); an override it cannot
    honour is a one-line ConfigError naming the layer."""
    for layer, value in spec.per_layer.items():
        if value not in allowed:
            raise ConfigError(f"{quantizer}: layer {layer!r} asks for {value!r}; per-layer precision here is "
                              f"{' or '.join(allowed)}")
    return sorted(k for k, v in spec.per_layer.items() if v == "fp32")


def ort_placed_graph(path: Path, level: str) -> Any:
    """The graph ONNX Runtime's CPU provider actually runs, after its optimiser at ``level``
    (``"extended"``: with QDQ fusion; ``"none"``: only the provider's own Cast insertion)."""
    require_ort()
    import onnx
    import onnxruntime as ort

    levels = {"extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
    with tempfile.TemporaryDirectory(prefix="edgeprune-ortgraph-") as tmp:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = levels[level]
        opts.optimized_model_filepath = str(Path(tmp) / "placed.onnx")
        ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        return onnx.load(opts.optimized_model_filepath).graph

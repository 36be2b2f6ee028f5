"""Local engine build and timing with the TensorRT Python API, for hosts with a CUDA GPU.

Only used when ``import tensorrt`` works and torch sees a CUDA device; the Jetson flow never needs
it. An engine built here is valid only on this GPU with this TensorRT, which the artifact meta
says. Device buffers are torch CUDA tensors, so no pycuda/cuda-python is required.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import numpy as np

from edgeprune.errors import CompileError


def local_tensorrt() -> tuple[ModuleType | None, str]:
    """``(tensorrt module, "")`` when an engine can be built here, else ``(None, reason)``.

    ``hasattr(trt, "Builder")`` matters: a folder named ``tensorrt`` on ``sys.path`` (this
    project's ``tests/backends/tensorrt``) imports as an empty namespace package.
    """
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError:
        return None, "no local TensorRT (engines are built on the board over SSH)"
    if not hasattr(trt, "Builder"):
        return None, "no local TensorRT (engines are built on the board over SSH)"
    try:
        import torch
    except ImportError:
        return None, "TensorRT is installed but torch is missing for CUDA buffers"
    if not torch.cuda.is_available():
        return None, f"TensorRT {trt.__version__} is installed but no CUDA GPU is visible"
    return trt, ""


def build_engine(trt: ModuleType, onnx_path: Path, engine_path: Path, precision: str) -> dict[str, str]:
    """Parse the ONNX and serialise an engine; parser errors become one-line CompileErrors."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    major = int(trt.__version__.split(".")[0])
    network = builder.create_network(1 << int(explicit) if explicit is not None and major < 10 else 0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise CompileError(f"TensorRT cannot parse {onnx_path.name}: {(errors or ['unknown error'])[0].splitlines()[0]}")
    config = builder.create_builder_config()
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "int8":  # Q/DQ network: int8 where the file says, fp16 allowed elsewhere (as trtexec --int8 --fp16)
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise CompileError(f"TensorRT could not build an engine from {onnx_path.name} at {precision}")
    engine_path.write_bytes(bytes(blob))
    import torch

    return {"tensorrt": trt.__version__, "gpu": torch.cuda.get_device_name(0)}


class EngineSession:
    """A deserialised engine with torch CUDA buffers: numpy in, numpy out (single input/output)."""

    def __init__(self, trt: ModuleType, engine_path: Path) -> None:
        import torch

        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise CompileError(f"TensorRT cannot load {engine_path.name} (built by another GPU or release?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inp, self.out = names[0], names[-1]
        shape_in = tuple(self.engine.get_tensor_shape(self.inp))
        shape_out = tuple(self.engine.get_tensor_shape(self.out))
        self.x = torch.empty(shape_in, dtype=torch.float32, device="cuda")
        self.y = torch.empty(shape_out, dtype=torch.float32, device="cuda")
        self.context.set_tensor_address(self.inp, self.x.data_ptr())
        self.context.set_tensor_address(self.out, self.y.data_ptr())
        self.stream = torch.cuda.Stream()

    def run_on_device(self) -> None:
        """One inference on the current device buffers (what the timing loop repeats)."""
        self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        self.x.copy_(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
        self.run_on_device()
        return self.y.cpu().numpy()

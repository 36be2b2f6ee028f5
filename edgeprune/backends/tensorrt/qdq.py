"""Make a Q/DQ ONNX parseable by TensorRT's ONNX parser, or say exactly why it is not.

What the parser accepts (onnx-tensorrt ``docs/operators.md``, TensorRT 8.x-10.x):
``QuantizeLinear`` "``y_zero_point`` must be 0"; ``DequantizeLinear`` input types INT8 (FP8 from
8.6) with "``x_zero_point`` must be zero". So a file from ONNX Runtime's ``quantize_static`` needs
two things checked or changed before it travels to a board:

* activations must be symmetric int8 (``OrtInt8Config(activations="s8")``): a uint8 or non-zero
  zero-point is refused here with a ConfigError rather than on the board;
* ORT quantizes each Conv/Gemm **bias** to an INT32 initializer behind a ``DequantizeLinear``
  (scale = input scale x weight scale). TensorRT has no INT32 DequantizeLinear, so those nodes are
  folded back into a float32 bias initializer holding exactly the dequantized values ORT computes
  (``(b - zp) * scale``): same numbers in ONNX Runtime, parseable by TensorRT, which quantizes the
  bias itself when it fuses the convolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeprune.errors import ConfigError

_INT8_TYPES = {"INT8"}


@dataclass(frozen=True)
class QdqFixes:
    """What :func:`prepare_for_tensorrt` changed: folded bias DQ nodes, Q/DQ pairs counted."""

    folded_int32_bias: tuple[str, ...]
    quantize_nodes: int
    dequantize_nodes: int

    def to_json(self) -> dict:
        return {"folded_int32_bias_dequantize": list(self.folded_int32_bias),
                "quantize_linear": self.quantize_nodes, "dequantize_linear": self.dequantize_nodes}


def _dequantized(x: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int) -> np.ndarray:
    """ONNX DequantizeLinear on constants: per-tensor or per-axis ``(x - zp) * scale`` in float32."""
    x = x.astype(np.int64)
    zp = np.zeros_like(scale, dtype=np.int64) if zero is None else zero.astype(np.int64)
    if scale.size == 1:  # per-tensor (a scalar or a 1-element tensor)
        return (x - zp.reshape(())).astype(np.float32) * scale.astype(np.float32).reshape(())
    shape = [1] * x.ndim
    shape[axis] = -1
    return (x - zp.reshape(shape)).astype(np.float32) * scale.astype(np.float32).reshape(shape)


def prepare_for_tensorrt(path: Path) -> QdqFixes:
    """Check every Q/DQ node against the parser's rules and fold INT32 bias DequantizeLinear into
    float initializers, rewriting ``path`` in place when anything changed."""
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    type_name = TensorProto.DataType.Name
    folded, keep = [], []
    quant = dequant = 0
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            keep.append(node)
            continue
        zero = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zero is not None and np.any(numpy_helper.to_array(zero) != 0):
            raise ConfigError(f"{path.name}: {node.op_type} {node.name!r} has a non-zero zero-point; TensorRT takes "
                              "only symmetric int8 Q/DQ (quantize with OrtInt8Config(activations='s8'))")
        if node.op_type == "QuantizeLinear":
            quant += 1
            if zero is not None and type_name(zero.data_type) not in _INT8_TYPES:
                raise ConfigError(f"{path.name}: QuantizeLinear {node.name!r} writes {type_name(zero.data_type)}; "
                                  "TensorRT takes int8 Q/DQ only (quantize with activations='s8')")
            keep.append(node)
            continue
        dequant += 1
        x = inits.get(node.input[0])
        x_type = type_name(x.data_type) if x is not None else (type_name(zero.data_type) if zero is not None else "INT8")
        if x_type in _INT8_TYPES:
            keep.append(node)
            continue
        if x_type != "INT32" or x is None or node.input[1] not in inits:
            raise ConfigError(f"{path.name}: DequantizeLinear {node.name!r} reads {x_type}; TensorRT's parser "
                              "dequantizes int8 only")
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        value = _dequantized(numpy_helper.to_array(x), numpy_helper.to_array(inits[node.input[1]]),
                             numpy_helper.to_array(zero) if zero is not None else None, axis)
        graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        folded.append(node.name or node.output[0])
    if folded:
        del graph.node[:]
        graph.node.extend(keep)
        used = {name for n in graph.node for name in n.input}
        stale = [i for i in graph.initializer if i.name not in used and i.name not in {o.name for o in graph.output}]
        for init in stale:
            graph.initializer.remove(init)
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
    return QdqFixes(tuple(folded), quant, dequant)

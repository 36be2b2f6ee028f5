"""Low-bit precisions (``w4a8``, ``w2a2``, any ``wXaY``) by quantization-aware training with Brevitas.

Why Brevitas (``brevitas``, AMD/Xilinx): it is the QAT library FINN and hls4ml are built around,
it quantizes weights and activations to any bit width, and it exports the same trained model two
ways: **QCDQ** ONNX (QuantizeLinear -> Clip -> DequantizeLinear, standard ops that ONNX Runtime
runs; a w-bit weight is an int8 tensor clipped to the w-bit range) and **QONNX** (``Quant`` nodes
carrying the bit width, what FINN/hls4ml consume). ONNX Runtime has no sub-8-bit kernels on CPUs,
so the QCDQ file runs on int8 kernels there: it validates accuracy, it does not make a CPU faster.
Low bit widths pay off on FPGAs (FINN), where a 2-bit multiplier is a few LUTs.

How: :func:`prepare_lowbit` traces the model with Brevitas' graph mode
(``preprocess_for_quantize``: torch.fx trace, functional ops to modules, BatchNorm folded into the
preceding conv), replaces Conv/Linear by Brevitas layers with per-channel weight quantizers and
every ReLU / residual add / concat input by activation quantizers (Brevitas' own graph handlers,
the steps of ``brevitas.graph.quantize.quantize``), then calibrates the activation ranges on the
caller's batches (``calibration_mode``). The caller fine-tunes the result in train mode (the scales
are learnable parameters, gradients pass straight-through estimators), then exports.

Bit-width policy (FINN's convention, as in its TFC/CNV reference nets): the network input is
quantized at 8 bits (``input_bits``: data is 8-bit anyway, and a coarser input costs the most
accuracy for the least hardware), every Conv/Linear has ``weight_bits`` weights (including the
first and the last: ``edge_weight_bits`` can raise them, e.g. 8, the other common choice), every
hidden activation has ``act_bits``, and the classifier's output (the logits) is not re-quantized.
Weights are symmetric and narrow-range, so 2-bit weights are ternary (-1, 0, 1): at most 2^w levels.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeprune.errors import CompileError, ConfigError, ToolchainMissingError

if TYPE_CHECKING:
    import torch

    from edgeprune.quantize.base import QuantResult

NAME = "brevitas"
PIP = "pip install 'edgeprune[lowbit]'  (brevitas==0.13.4 qonnx==1.0.0 onnxoptimizer==0.4.2)"
CPU_NOTE = ("ONNX Runtime runs this QCDQ file on int8 kernels (QLinearConv/QGemm where its optimiser "
            "fuses the Q/DQ; a Conv between a sub-8-bit Clip and an add may stay float): CPUs have no "
            "sub-8-bit kernels, so it validates the low-bit model's accuracy but is no faster than int8; "
            "low bit widths pay off on FPGAs (FINN/hls4ml via the QONNX export)")
# Brevitas retries scale alignment across adds/concats up to 9999 times, rebuilding modules each
# time (minutes); a graph that has not converged after this many never does in practice.
MAX_ALIGN_ITERS = 200
_COMPUTE = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Ops that move integer values without changing them: the bits of their input are those of their output.
_PASS = ("MaxPool", "Flatten", "Reshape", "Relu", "Identity", "Transpose", "Squeeze", "Unsqueeze", "Pad")


def _brevitas() -> Any:
    """Import brevitas or fail with the pip command (exit 9), never an ImportError traceback."""
    try:
        import brevitas
        import brevitas.graph.quantize
        import onnxoptimizer  # noqa: F401 - Brevitas' export needs it; fail here, not mid-export
    except ImportError as exc:
        raise ToolchainMissingError(f"low-bit quantization needs Brevitas: {PIP} ({exc})") from None
    return brevitas


def _check_bits(**bits: int | None) -> None:
    for name, value in bits.items():
        if value is not None and not (isinstance(value, int) and 1 < value <= 8):
            raise ConfigError(f"{name} must be an integer in 2..8, not {value!r} (1-bit needs Brevitas' "
                              f"binary quantizers, not wired here)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0][:300] if text else type(exc).__name__)


def _maps(weight_bits: int, act_bits: int, layer_bits: dict[str, int]) -> tuple[dict, dict, dict]:
    """Brevitas' three substitution tables (identity requantizers, activations, compute layers)
    at our bit widths; a layer's weight bits come from ``layer_bits`` by its graph name."""
    import brevitas.nn as qnn
    from brevitas.quant import (
        Int8ActPerTensorFloat,
        Int8WeightPerChannelFloat,
        Int32Bias,
        Uint8ActPerTensorFloat,
    )
    from torch import nn

    def act(quant: Any) -> dict:
        return {"act_quant": quant, "bit_width": act_bits, "return_quant_tensor": True}

    identity = {"signed": (qnn.QuantIdentity, act(Int8ActPerTensorFloat)),
                "unsigned": (qnn.QuantIdentity, act(Uint8ActPerTensorFloat))}
    acts = {nn.ReLU: (qnn.QuantReLU, act(Uint8ActPerTensorFloat))}
    weights = {"weight_quant": Int8WeightPerChannelFloat, "bias_quant": Int32Bias,
               "weight_bit_width": lambda module, name: layer_bits.get(name, weight_bits),
               "return_quant_tensor": True}
    layers = {nn.Conv2d: (qnn.QuantConv2d, dict(weights)), nn.Conv1d: (qnn.QuantConv1d, dict(weights)),
              nn.Linear: (qnn.QuantLinear, dict(weights))}
    return identity, acts, layers


def _trace(model: "torch.nn.Module") -> Any:
    """Brevitas' fx trace + standardisation (BatchNorm folded); CompileError if it cannot follow."""
    from brevitas.graph.quantize import preprocess_for_quantize

    try:
        return preprocess_for_quantize(copy.deepcopy(model).eval(), trace_model=True, merge_bn=True)
    except Exception as exc:
        raise CompileError(f"Brevitas cannot trace the model (torch.fx): {_first_line(exc)}") from None


def _edge_layers(graph: Any, edge_weight_bits: int | None) -> dict[str, int]:
    """Graph names of the first and last Conv/Linear -> ``edge_weight_bits`` (empty if None)."""
    from torch import nn

    if edge_weight_bits is None:
        return {}
    modules = dict(graph.named_modules())
    names = [str(n.target) for n in graph.graph.nodes
             if n.op == "call_module" and isinstance(modules.get(str(n.target)), (nn.Conv1d, nn.Conv2d, nn.Linear))]
    return {names[0]: edge_weight_bits, names[-1]: edge_weight_bits} if names else {}


def _quantize_graph(graph: Any, maps: tuple[dict, dict, dict], input_bits: int) -> Any:
    """The steps of ``brevitas.graph.quantize.quantize``, with the input quantizer at
    ``input_bits`` (quantize() would use the hidden activation width there) and no output
    requantizer on the logits (FINN's convention; a 2-bit logit could not rank 10 classes)."""
    import brevitas.nn as qnn
    from brevitas import config
    from brevitas.graph import quantize_impl as impl
    from brevitas.graph.quantize import UNSIGNED_ACT_TUPLE, align_input_quant
    from brevitas.graph.standardize import DisableLastReturnQuantTensor
    from brevitas.quant import Int8ActPerTensorFloat

    identity, acts, layers = maps
    inp = (qnn.QuantIdentity, {"act_quant": Int8ActPerTensorFloat, "bit_width": input_bits,
                               "return_quant_tensor": True})
    saved = config.IGNORE_MISSING_KEYS, impl.MAX_RESIDUAL_ITERS
    config.IGNORE_MISSING_KEYS, impl.MAX_RESIDUAL_ITERS = True, MAX_ALIGN_ITERS
    try:
        graph = impl.inp_placeholder_handler(graph, input_quantizer=inp)
        graph = impl.act_handler(graph, layer_map=acts)
        graph = _split_concat_edges(graph, identity, acts)
        graph = impl.add_output_quant_handler(graph, identity, acts, UNSIGNED_ACT_TUPLE)
        graph = impl.residual_handler(graph, identity, acts, UNSIGNED_ACT_TUPLE, align_input_quant)
        graph = impl.layer_handler(graph, layer_map=layers, quant_identity_map=identity, quant_act_map=acts,
                                   unsigned_act_tuple=UNSIGNED_ACT_TUPLE, requantize_output=True)
        graph = _drop_output_requant(graph)
        return DisableLastReturnQuantTensor().apply(graph)
    except Exception as exc:
        raise CompileError(f"Brevitas cannot quantize the model: {_first_line(exc)}") from None
    finally:
        config.IGNORE_MISSING_KEYS, impl.MAX_RESIDUAL_ITERS = saved


def _split_concat_edges(graph: Any, identity: dict, acts: dict) -> Any:
    """Give each concat input that also feeds another node its own requantizer on the concat edge.

    Why: Brevitas aligns a concat's inputs by making them share one quantizer, and an add's by
    sharing a scale; a tensor feeding both (a block output that is added *and* concatenated, as in
    YOLO's C2f or this project's tests) would have to follow both groups, and Brevitas' alignment
    loop then never converges. A separate quantizer on the concat edge costs one requantization.
    """
    import torch
    from brevitas.graph.base import InsertModuleCallAfter
    from brevitas.graph.quantize import UNSIGNED_ACT_TUPLE
    from brevitas.graph.quantize_impl import are_inputs_unsigned

    rewriters = []
    for node in graph.graph.nodes:
        if not (node.op == "call_function" and node.target is torch.cat):
            continue
        sign = "unsigned" if are_inputs_unsigned(graph, node, [], acts, UNSIGNED_ACT_TUPLE) else "signed"
        for i, inp in enumerate(node.all_input_nodes):
            if len(inp.users) > 1:
                cls, kwargs = identity[sign]
                name = f"{node.name}_in{i}_quant"
                graph.add_module(name, cls(**kwargs))
                others = tuple(u for u in inp.users if u is not node)
                rewriters.append(InsertModuleCallAfter(name, inp, others))
    for rewriter in rewriters:
        graph = rewriter.apply(graph)
    return graph


def _drop_output_requant(graph: Any) -> Any:
    """Remove the requantizer Brevitas puts on the graph's output (the logits stay the last
    layer's accumulator, dequantized): only identity requantizers, never a QuantReLU."""
    import brevitas.nn as qnn

    modules = dict(graph.named_modules())
    output = next(n for n in graph.graph.nodes if n.op == "output")
    for node in list(output.all_input_nodes):
        if node.op == "call_module" and type(modules.get(str(node.target))) is qnn.QuantIdentity:
            node.replace_all_uses_with(node.args[0])
            graph.graph.erase_node(node)
            delattr(graph, str(node.target))
    graph.recompile()
    return graph


def _calibrate(qmodel: "torch.nn.Module", calibration: Sequence["torch.Tensor"]) -> None:
    """Activation ranges from the calibration batches (Brevitas collects statistics with
    quantization off, then fixes the scales it will learn from during the fine-tune)."""
    import torch
    from brevitas.graph.calibrate import calibration_mode

    qmodel.eval()
    try:
        with torch.no_grad(), calibration_mode(qmodel):
            for batch in calibration:
                qmodel(torch.as_tensor(batch, dtype=torch.float32))
    except Exception as exc:
        raise CompileError(f"Brevitas calibration failed: {_first_line(exc)}") from None


def prepare_lowbit(model: "torch.nn.Module", weight_bits: int, act_bits: int,
                   calibration: Sequence["torch.Tensor"], *, input_bits: int = 8,
                   edge_weight_bits: int | None = None) -> "torch.nn.Module":
    """A Brevitas-quantized deep copy of ``model`` (``model`` is untouched), activation ranges
    calibrated on ``calibration`` batches, in eval mode: call ``.train()`` and fine-tune it (QAT),
    then :func:`export_qcdq` / :func:`export_qonnx`. CompileError if Brevitas cannot trace it."""
    _check_bits(weight_bits=weight_bits, act_bits=act_bits, input_bits=input_bits,
                edge_weight_bits=edge_weight_bits)
    if not calibration:
        raise ConfigError("low-bit calibration needs at least one batch")
    _brevitas()
    graph = _trace(model)
    maps = _maps(weight_bits, act_bits, _edge_layers(graph, edge_weight_bits))
    qmodel = _quantize_graph(graph, maps, input_bits)
    _calibrate(qmodel, calibration)
    qmodel.lowbit_bits = {"weight_bits": weight_bits, "act_bits": act_bits, "input_bits": input_bits,
                          "edge_weight_bits": edge_weight_bits}
    return qmodel.eval()


def layer_bits(qmodel: "torch.nn.Module") -> dict[str, dict[str, int]]:
    """Module name -> weight bits of every quantized Conv/Linear, as Brevitas holds them."""
    from brevitas.nn.quant_layer import QuantWeightBiasInputOutputLayer

    return {name: {"weight": int(m.weight_quant.bit_width())} for name, m in qmodel.named_modules()
            if isinstance(m, QuantWeightBiasInputOutputLayer)}


def _export(fn: Any, qmodel: "torch.nn.Module", example: "torch.Tensor", path: Path, what: str) -> None:
    """Run a Brevitas exporter (TorchScript path: Brevitas' dynamo QCDQ export refuses int32
    biases) with the project's tensor names; the model's train/eval state is restored."""
    path.parent.mkdir(parents=True, exist_ok=True)
    training = qmodel.training
    try:
        fn(qmodel.eval(), example, str(path), dynamo=False, input_names=["input"], output_names=["logits"],
           keep_initializers_as_inputs=False)
    except Exception as exc:
        raise CompileError(f"Brevitas {what} export failed: {_first_line(exc)}") from None
    finally:
        qmodel.train(training)


def _meta(qmodel: "torch.nn.Module", fmt: str, path: Path) -> dict[str, Any]:
    brevitas = _brevitas()
    bits = dict(getattr(qmodel, "lowbit_bits", {}))
    return {"quantizer": NAME, "brevitas": brevitas.__version__, "format": fmt, **bits,
            "weights": "symmetric narrow-range per-channel", "activations": "per-tensor, unsigned after ReLU",
            "layer_bits": layer_bits(qmodel), "per_layer": graph_bits(path)}


def export_qcdq(qmodel: "torch.nn.Module", example: "torch.Tensor", path: Path) -> "QuantResult":
    """Brevitas' QCDQ export: standard ONNX (Q -> Clip -> DQ) that ONNX Runtime runs as is.
    The batch size is fixed to ``example``'s, like the project's exporter."""
    from brevitas.export import export_onnx_qcdq

    from edgeprune.quantize.base import QuantResult

    _brevitas()
    path = Path(path)
    _export(export_onnx_qcdq, qmodel, example, path, "QCDQ")
    meta = _meta(qmodel, "QCDQ", path)
    unquantized = [k for k, v in meta["per_layer"].items() if not v.startswith("w")]
    if unquantized or not meta["per_layer"]:
        raise CompileError(f"QCDQ export left layers without quantized weights (Brevitas maps Conv1d/2d and "
                           f"Linear only): {', '.join(unquantized[:5]) or 'no Conv/Gemm at all'}")
    meta["note"] = CPU_NOTE
    return QuantResult(path, meta)


def export_qonnx(qmodel: "torch.nn.Module", example: "torch.Tensor", path: Path) -> "QuantResult":
    """Brevitas' QONNX export (``Quant`` nodes with their bit widths: FINN/hls4ml's input),
    run through qonnx's standard ``cleanup`` (shape inference, constant folding, unique names)."""
    from brevitas.export import export_qonnx as brevitas_export_qonnx

    from edgeprune.quantize.base import QuantResult

    _brevitas()
    cleanup = _qonnx().util.cleanup.cleanup
    path = Path(path)
    _export(brevitas_export_qonnx, qmodel, example, path, "QONNX")
    try:
        cleanup(str(path), out_file=str(path))
    except Exception as exc:
        raise CompileError(f"qonnx cleanup failed: {_first_line(exc)}") from None
    meta = _meta(qmodel, "QONNX", path)
    meta["qonnx"] = _qonnx_version()
    meta["quant_nodes"] = [n.op_type for n in _onnx_nodes(path)].count("Quant")
    return QuantResult(path, meta)


def _qonnx() -> Any:
    try:
        import qonnx
        import qonnx.core.onnx_exec
        import qonnx.util.cleanup
    except ImportError as exc:
        raise ToolchainMissingError(f"QONNX export/execution needs qonnx: {PIP} ({exc})") from None
    return qonnx


def _qonnx_version() -> str:
    from importlib.metadata import version

    return version("qonnx")


def _onnx_nodes(path: Path) -> list[Any]:
    import onnx

    return list(onnx.load(str(path)).graph.node)


def run_qonnx(path: Path, x: np.ndarray) -> np.ndarray:
    """Logits of a QONNX file by qonnx's reference executor (``execute_onnx``, node by node, the
    Quant op simulated exactly): the validation FINN's own flow uses. Fixed batch: chunked."""
    _qonnx()
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    from edgeprune.quantize.base import chunks

    model = ModelWrapper(str(path))
    name, out = model.graph.input[0].name, model.graph.output[0].name
    dim = model.get_tensor_shape(name)[0]
    batch = dim if isinstance(dim, int) and dim > 0 else None
    parts = [execute_onnx(model, {name: chunk})[out][:n] for chunk, n in chunks(np.asarray(x), batch)]
    return np.concatenate(parts)


def _const(graph: Any, name: str) -> np.ndarray | None:
    """Value of an initializer or Constant-node output, else None."""
    from onnx import numpy_helper

    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and name in node.output:
            return numpy_helper.to_array(node.attribute[0].t)
    return None


def _bits_of(graph: Any, producers: dict[str, Any], name: str) -> int | None:
    """Bits of the integer tensor behind ``name``: a DequantizeLinear's Clip range if clipped
    (sub-8-bit), else its 8-bit container; through value-preserving ops, and the widest input of a
    Concat. None if no DequantizeLinear feeds it (a float tensor)."""
    node = producers.get(name)
    while node is not None and node.op_type in _PASS:
        node = producers.get(node.input[0])
    if node is not None and node.op_type == "Concat":
        bits = [_bits_of(graph, producers, i) for i in node.input]
        return None if None in bits else max(bits)
    if node is not None and node.op_type in ("Quant", "BipolarQuant"):  # QONNX: the bit width is an input
        return 1 if node.op_type == "BipolarQuant" else int(_const(graph, node.input[3]))
    if node is None or node.op_type != "DequantizeLinear":
        return None
    clip = producers.get(node.input[0])
    if clip is None or clip.op_type != "Clip":
        return 8
    lo, hi = (_const(graph, n) for n in clip.input[1:3])
    if lo is None or hi is None:
        return 8
    return int(np.ceil(np.log2(float(hi) - float(lo) + 1)))


def graph_bits(path: Path) -> dict[str, str]:
    """Read back from a written graph each Conv/Gemm/MatMul node's ``wXaY`` (QCDQ: the Clip range
    on its weight and on its input; QONNX: the Quant nodes' bit widths), ``fp32`` if not quantized."""
    import onnx

    graph = onnx.load(str(path)).graph
    producers = {out: node for node in graph.node for out in node.output}
    result = {}
    for node in graph.node:
        if node.op_type in _COMPUTE and node.name:
            w, a = _bits_of(graph, producers, node.input[1]), _bits_of(graph, producers, node.input[0])
            result[node.name] = f"w{w}a{a}" if w and a else ("fp32" if not w else f"w{w}")
    return result


def weight_levels(path: Path) -> dict[str, int]:
    """Compute node -> the most distinct integer weight values any of its output channels uses
    (after the Clip): what a "w-bit" claim must satisfy (<= 2^w)."""
    import onnx

    graph = onnx.load(str(path)).graph
    producers = {out: node for node in graph.node for out in node.output}
    result = {}
    for node in graph.node:
        dq = producers.get(node.input[1]) if node.op_type in _COMPUTE and len(node.input) > 1 else None
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        clip = producers.get(dq.input[0])
        src = clip.input[0] if clip is not None and clip.op_type == "Clip" else dq.input[0]
        w = _const(graph, src)
        if w is None:
            continue
        if clip is not None and clip.op_type == "Clip":
            w = np.clip(w, _const(graph, clip.input[1]), _const(graph, clip.input[2]))
        rows = w.reshape(w.shape[0], -1)
        result[node.name] = max(len(np.unique(r)) for r in rows)
    return result

"""Low-bit QAT with Brevitas (w4a8, w2a2): QCDQ that ONNX Runtime runs like the Brevitas model,
QONNX that qonnx executes identically, bit widths that hold in the written file, and accuracy on
digits after a one-epoch fine-tune (measured: float 98.1 %, w4a8 97.8 %, w2a2 85 %)."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.errors import CompileError, ConfigError, ToolchainMissingError
from edgeprune.quantize.base import run_onnx
from edgeprune.quantize.build import kernel_summary
from tests.quantize.conftest import SEED, SIZE, Digits, accuracy, train

pytest.importorskip("brevitas", reason="low-bit quantization needs brevitas (pip install 'edgeprune[lowbit]')")
pytest.importorskip("qonnx", reason="low-bit quantization needs qonnx")

from edgeprune.quantize.lowbit import (
    export_qcdq,
    export_qonnx,
    graph_bits,
    prepare_lowbit,
    run_qonnx,
    weight_levels,
)

EXAMPLE = torch.zeros(8, 1, SIZE, SIZE)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny nets on 2 shared cores: a second intra-op thread only spins while the other core is
    busy (measured: the file takes 9 s with one thread, up to 110 s CPU with two under load)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _batches(data: Digits) -> list[torch.Tensor]:
    return [torch.from_numpy(data.x_train[i:i + 32]) for i in range(0, 128, 32)]


def _finetune(model: nn.Module, data: Digits, epochs: int = 1, lr: float = 1e-3) -> nn.Module:
    """The caller's QAT loop: Adam in train mode (Brevitas' scales are learnt too), then eval."""
    torch.manual_seed(SEED)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 64):
            idx = order[start:start + 64]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def _logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _agree(art: np.ndarray, ref: np.ndarray) -> None:
    """The file computes what the Brevitas model computes: same top-1, errors far below the logit
    scale (exact integer arithmetic in both; float rounding of the scales differs at most)."""
    assert (art.argmax(1) == ref.argmax(1)).mean() >= 0.99
    assert np.abs(art - ref).max() <= 1e-3 * max(1.0, float(np.abs(ref).max()))


@pytest.fixture(scope="module")
def w4a8(trained_net: nn.Module, digits16: Digits) -> nn.Module:
    return _finetune(prepare_lowbit(trained_net, 4, 8, _batches(digits16)), digits16)


def test_w4a8_qcdq_runs_in_ort_like_brevitas_with_4_bit_weights(w4a8, trained_net, tmp_path, digits16):
    assert not any("Quant" in type(m).__name__ for m in trained_net.modules())  # original untouched
    result = export_qcdq(w4a8, EXAMPLE, tmp_path / "w4a8.onnx")
    meta = result.meta
    assert (meta["quantizer"], meta["format"], meta["weight_bits"], meta["act_bits"]) == ("brevitas", "QCDQ", 4, 8)
    assert meta["brevitas"] and "int8 kernels" in meta["note"]
    assert set(meta["per_layer"].values()) == {"w4a8"} and len(meta["per_layer"]) == 3
    assert {v["weight"] for v in meta["layer_bits"].values()} == {4}
    levels = weight_levels(result.path)
    assert len(levels) == 3 and max(levels.values()) <= 2 ** 4
    assert max(levels.values()) > 8  # really 4 bits, not fewer

    assert kernel_summary(result.path)["integer_convs"] == 2  # ORT fuses the Q/DQ: int8 kernels
    x = digits16.x_val
    _agree(run_onnx(result.path, x), _logits(w4a8, x))


def test_w4a8_after_one_qat_epoch_stays_within_3_points_of_float(w4a8, trained_net, digits16):
    x, y = digits16.x_val, digits16.y_val
    float_acc = accuracy(_logits(trained_net, x), y)
    assert float_acc - accuracy(_logits(w4a8, x), y) <= 0.03  # measured: 98.1 % -> 97.8 %


def test_qonnx_export_executes_in_qonnx_like_brevitas(w4a8, tmp_path, digits16):
    import onnx

    result = export_qonnx(w4a8, EXAMPLE, tmp_path / "w4a8.qonnx.onnx")
    nodes = onnx.load(str(result.path)).graph.node
    bits = {int(onnx.numpy_helper.to_array(_init(result.path, n.input[3]))) for n in nodes if n.op_type == "Quant"}
    assert set(result.per_layer.values()) == {"w4a8"} and len(result.per_layer) == 3
    assert bits == {4, 8, 32} and result.meta  # weights 4, activations 8, biases int32["format"] == "QONNX" and result.meta["quant_nodes"] >= 5
    x = digits16.x_val[:64]
    _agree(run_qonnx(result.path, x), _logits(w4a8, x))


def _init(path, name):
    import onnx

    graph = onnx.load(str(path)).graph
    return next(i for i in graph.initializer if i.name == name)


def test_w2a2_builds_exports_and_learns(trained_net, digits16, tmp_path):
    """Ternary weights, 2-bit activations: the calibrated model is poor, one QAT epoch recovers
    most of it (measured: 56 % -> 85 %), and the file holds <= 4 levels per channel."""
    qmodel = prepare_lowbit(trained_net, 2, 2, _batches(digits16))
    x, y = digits16.x_val, digits16.y_val
    before = accuracy(_logits(qmodel, x), y)
    _finetune(qmodel, digits16)
    result = export_qcdq(qmodel, EXAMPLE, tmp_path / "w2a2.onnx")
    assert max(weight_levels(result.path).values()) <= 4
    # the input stays 8 bit (FINN's convention); every other layer input is 2 bit
    assert list(result.per_layer.values()) == ["w2a8", "w2a2", "w2a2"]
    art = run_onnx(result.path, x)
    _agree(art, _logits(qmodel, x))
    after = accuracy(art, y)
    assert after >= 0.6 and after > before  # chance is 0.1


class _Mixed(nn.Module):
    """Residual add, concat of a tensor that also feeds the add, depthwise + grouped convs, BN,
    AdaptiveAvgPool, flatten: the shapes real nets (MobileNet, ResNet, YOLO's C2f) are made of."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.pw = nn.Sequential(nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = torch.relu(self.pw(self.dw(x)) + x)
        z = torch.relu(self.grouped(torch.cat([x, y], dim=1)))
        return self.fc(torch.flatten(self.pool(z), 1))


def test_residual_concat_depthwise_net_quantizes_and_exports(digits16, tmp_path):
    torch.manual_seed(SEED)
    net = _Mixed().eval()
    qmodel = prepare_lowbit(net, 4, 4, _batches(digits16))
    result = export_qcdq(qmodel, EXAMPLE, tmp_path / "mixed.onnx")
    assert len(result.per_layer) == 5 and set(result.per_layer.values()) == {"w4a8", "w4a4"}
    assert max(weight_levels(result.path).values()) <= 16
    x = digits16.x_val[:64]
    ref = _logits(qmodel, x)
    _agree(run_onnx(result.path, x), ref)
    _agree(run_qonnx(export_qonnx(qmodel, EXAMPLE, tmp_path / "mixed.qonnx").path, x), ref)


class _Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            return self.conv(x)
        return -self.conv(x)


def test_untraceable_net_and_bad_bits_fail_with_one_line_errors(digits16):
    batches = _batches(digits16)
    with pytest.raises(CompileError, match="Brevitas cannot trace") as info:
        prepare_lowbit(_Untraceable(), 4, 8, batches)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="weight_bits"):
        prepare_lowbit(_Untraceable(), 1, 8, batches)
    with pytest.raises(ConfigError, match="calibration"):
        prepare_lowbit(_Untraceable(), 4, 8, [])


def test_edge_layers_can_keep_8_bit_weights(trained_net, digits16, tmp_path):
    """The other common policy (first and last layer at 8 bits) is one argument, and the file says so."""
    qmodel = prepare_lowbit(trained_net, 2, 2, _batches(digits16), edge_weight_bits=8)
    result = export_qcdq(qmodel, EXAMPLE, tmp_path / "edges.onnx")
    assert list(result.per_layer.values()) == ["w8a8", "w2a2", "w8a2"]
    assert list(weight_levels(result.path).values())[1] <= 4


def test_missing_brevitas_is_a_toolchain_error_and_import_stays_light(monkeypatch):
    code = ("import sys, edgeprune.quantize.lowbit; "
            "heavy = [m for m in ('torch', 'brevitas', 'qonnx', 'onnx') if m in sys.modules]; assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    monkeypatch.setitem(sys.modules, "brevitas", None)
    with pytest.raises(ToolchainMissingError, match="pip install"):
        prepare_lowbit(_Untraceable(), 4, 8, [torch.zeros(1, 1, 4, 4)])


def test_pruned_residual_net_quantizes_after_pruning(digits16, tmp_path):
    """Pruning + QAT does not break (Torch-Pruning #291): a residual net pruned to half its
    channels by a plan, fine-tuned, quantized to w4a8 and fine-tuned again, exports a file that
    ONNX Runtime runs like the Brevitas model, within 3 points of the pruned float net."""
    from edgeprune.models.demo_net import build_demo_net
    from edgeprune.plan import GroupPlan, PruningPlan
    from edgeprune.prune import apply_plan, group_channels

    torch.manual_seed(SEED)
    example = torch.rand(1, 1, SIZE, SIZE)
    net = train(build_demo_net(width=8), digits16, epochs=4)
    channels = group_channels(net, example)
    plan = PruningPlan("demo", tuple(example.shape), "manual",
                       {n: GroupPlan(c, tuple(range(0, c, 2))) for n, c in channels.items()})
    pruned = train(apply_plan(copy.deepcopy(net), plan, example), digits16, epochs=2)
    assert pruned.fc.in_features == 16 and net.fc.in_features == 32

    qmodel = _finetune(prepare_lowbit(pruned, 4, 8, _batches(digits16)), digits16)
    result = export_qcdq(qmodel, EXAMPLE, tmp_path / "pruned.onnx")
    assert set(result.per_layer.values()) == {"w4a8"} and max(weight_levels(result.path).values()) <= 16
    x, y = digits16.x_val, digits16.y_val
    art = run_onnx(result.path, x)
    _agree(art, _logits(qmodel, x))
    assert accuracy(_logits(pruned, x), y) - accuracy(art, y) <= 0.03  # measured: 97.5 % -> 98.6 %


def test_graph_bits_reads_float_layers_as_fp32(fp32_onnx):
    """The read-back must not invent bits: the project's float export has none."""
    assert set(graph_bits(fp32_onnx).values()) == {"fp32"}

"""QAT with NVIDIA ModelOpt -> explicit Q/DQ ONNX that ONNX Runtime reproduces exactly."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from edgeprune.quantize.base import run_onnx
from tests.quantize.conftest import SIZE, accuracy

pytest.importorskip("modelopt.torch.quantization", reason="QAT needs nvidia-modelopt")

from edgeprune.quantize.qat import export_qdq, prepare_qat  # noqa: E402


def _finetune(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> None:
    """One short epoch with fake-quant in the graph (gradients pass the straight-through estimator)."""
    torch.manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for start in range(0, len(xs), 64):
        loss = torch.nn.functional.cross_entropy(model(xs[start:start + 64]), ys[start:start + 64])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def test_qat_exports_qdq_that_ort_runs_like_the_fake_quant_model(trained_net, digits16, calibration, tmp_path):
    batches = [torch.from_numpy(b) for b in calibration]
    qmodel = prepare_qat(trained_net, batches)
    assert any(type(m).__name__ == "QuantConv2d" for m in qmodel.modules())
    assert not any(type(m).__name__ == "QuantConv2d" for m in trained_net.modules())  # original untouched
    _finetune(qmodel, digits16.x_train, digits16.y_train)
    result = export_qdq(qmodel, torch.zeros(8, 1, SIZE, SIZE), tmp_path / "qat.onnx")

    ops = [n.op_type for n in onnx.load(str(result.path)).graph.node]
    assert ops.count("QuantizeLinear") >= 3 and "DequantizeLinear" in ops
    assert set(result.per_layer.values()) == {"int8"}
    x = digits16.x_val
    with torch.no_grad():
        fake = qmodel(torch.from_numpy(x)).numpy()
    art = run_onnx(result.path, x)
    assert np.abs(art - fake).max() < 1e-3 * max(1.0, float(np.abs(fake).max()))
    assert (art.argmax(1) == fake.argmax(1)).mean() == 1.0
    with torch.no_grad():
        float_acc = accuracy(trained_net(torch.from_numpy(x)).numpy(), digits16.y_val)
    assert float_acc - accuracy(art, digits16.y_val) <= 0.01

import numpy as np
import pytest
import torch

from edgeprune.backends import CompileOptions, get_backend
from edgeprune.errors import ValidationError
from edgeprune.profilers import MeasureSettings
from edgeprune.candidate.validate import validate_artifact


def _compile(model, example, tmp_path, name="a"):
    backend = get_backend("onnxruntime")
    options = CompileOptions("host", {}, tmp_path / "cache")
    return backend, backend.compile(model, example, tmp_path / name, options)


def test_artifact_matches_pytorch_and_is_measured(tiny_net, example, tmp_path):
    backend, artifact = _compile(tiny_net, example, tmp_path)
    assert artifact.precision == "fp32" and artifact.path.name == "model.onnx"  # the default precision
    x = torch.rand(1, 1, 32, 32)
    got = backend.load(artifact)(x.numpy())
    np.testing.assert_allclose(got, tiny_net(x).detach().numpy(), rtol=1e-4, atol=1e-5)
    m = backend.measure(artifact, MeasureSettings(warmup=2, repeats=5, min_repeat_ms=1))
    assert m.latency.source == "measured:onnxruntime-local"
    assert 0 < m.latency.min <= m.latency.median <= m.latency.max
    assert m.energy is None and m.energy_note.startswith("not measurable")


def test_validation_reports_accuracy_and_catches_a_different_model(tiny_net, example, digits, tmp_path):
    backend, artifact = _compile(tiny_net, example, tmp_path)
    result = validate_artifact(backend.load(artifact), tiny_net, digits.val, 1)
    assert result.samples == len(digits.val)
    assert result.accuracy == pytest.approx(result.reference_accuracy)
    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 10)).eval()
    _, wrong = _compile(other, example, tmp_path, "b")
    with pytest.raises(ValidationError, match=r"fails validation against PyTorch: max \|error\|"):
        validate_artifact(backend.load(wrong), tiny_net, digits.val, 1)


import pytest
import torch

from edgeprune.errors import ModelLoadError, TraceError, UntrustedCheckpointError
from edgeprune.graph import GroupedModel
from edgeprune.models.sources import load_model, load_state_dict, resolve_model


def test_torchvision_spec_with_kwargs():
    model = resolve_model("torchvision:resnet18?num_classes=10")
    assert model.fc.out_features == 10


def test_factory_spec_and_unknown_specs():
    assert isinstance(resolve_model("tests.nets:tiny_demo"), torch.nn.Module)
    for bad in ("torchvision:nonet", "no_such_pkg.mod:f", "tests.nets:missing", "model.bin"):
        with pytest.raises(ModelLoadError):
            resolve_model(bad)


def test_state_dict_round_trip_with_weights_only(tmp_path):
    src = resolve_model("tests.nets:tiny_demo")
    path = tmp_path / "w.pt"
    torch.save(src.state_dict(), path)
    loaded = load_model("tests.nets:tiny_demo", path)
    for a, b in zip(src.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)


class _Evil:
    def __reduce__(self):
        return (print, ("pickle code ran",))


def test_pickled_checkpoint_is_refused_unless_trusted(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": _Evil()}, path)
    with pytest.raises(UntrustedCheckpointError, match="--trust-checkpoint"):
        load_state_dict(path, trust=False)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"\x80\x04not really a checkpoint")
    with pytest.raises(ModelLoadError, match="corrupt"):
        load_state_dict(path, trust=False)


def test_checkpoint_that_does_not_fit(tmp_path):
    path = tmp_path / "other.pt"
    torch.save(resolve_model("torchvision:resnet18?num_classes=10").state_dict(), path)
    with pytest.raises(ModelLoadError, match="does not fit"):
        load_model("tests.nets:tiny_demo", path)


def test_pt2_archive_round_trip(tmp_path):
    src = resolve_model("tests.nets:tiny_demo").eval()
    x = torch.rand(1, 1, 32, 32)
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(src, (x,)), str(path))
    loaded = load_model(str(path))
    assert torch.allclose(loaded(x), src(x))
    with pytest.raises(TraceError, match="no prunable"):
        GroupedModel(loaded, x)

"""``edgeprune sparsify`` end to end: method run, files hashed, dense vs sparse measured and labelled."""

from __future__ import annotations

import json

import pytest

from edgeprune.errors import ConfigError
from edgeprune.io import sha256
from edgeprune.models.loading import ModelOptions
from edgeprune.sparsity.run import SparsifyConfig, bisect, round_targets
from tests.test_cli import assert_clean_error, run_cli
from tests.training.test_regularizers import image_folder

FAST = ("--model", "tests.nets:tiny_demo", "--method", "snip", "--density", "0.2", "--epochs", "0.5",
        "--repeats", "5", "--threads", "1", "--grayscale")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One run without and one with ``--structured 2:4``, on 20 tiny images (cheap per-sample validation)."""
    root = tmp_path_factory.mktemp("sparsify")
    data = ("--data", f"imagefolder:{image_folder(root / 'images')}")
    out = {}
    for name, extra in (("plain", ()), ("structured", ("--structured", "2:4"))):
        proc = run_cli("sparsify", *FAST, *data, *extra, "--out", str(root / name), cache=root / "cache")
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[name] = (root / name, json.loads((root / name / "manifest.json").read_text()))
    return out


def test_manifest_hashes_match_the_files(runs):
    folder, manifest = runs["plain"]
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()
               and not any(part.startswith(".") for part in p.relative_to(folder).parts)}
    assert on_disk - {"manifest.json"} == set(manifest["files"])
    assert {"model.onnx", "sparse_state_dict.pt", "masks.pt", "report.md"} <= set(manifest["files"])
    for rel, entry in manifest["files"].items():
        assert sha256(folder / rel) == entry["sha256"], rel


def test_sparsity_accuracy_and_measured_latencies(runs):
    _, m = runs["plain"]
    assert m["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert m["zero_fraction_in_artifact"] == pytest.approx(0.8, abs=0.02)  # the zeros reached the file
    assert all(0.0 <= d <= 1.0 for d in m["densities"].values()) and len(m["densities"]) == 8
    assert 0.0 <= m["accuracy"]["sparse_onnxruntime"] <= 1.0
    lat = m["latency"]
    for key in ("dense_ms", "sparse_ms"):
        assert lat[key]["median"] > 0 and lat[key]["source"] == "measured:onnxruntime-local"
    assert lat["ratio"] == pytest.approx(lat["sparse_ms"]["median"] / lat["dense_ms"]["median"])
    assert "structured" not in m


def test_report_says_zeros_do_not_speed_up_dense_compilers(runs):
    folder, m = runs["plain"]
    report = (folder / "report.md").read_text()
    assert "Dense compilers do not get faster from unstructured zeros" in report
    assert f"{m['latency']['ratio']:.2f}×" in report
    assert "not measured here" in report and "edgeprune deploy" in report


def test_structured_flag_adds_a_measured_structured_entry(runs):
    folder, m = runs["structured"]
    s = m["structured"]
    assert s["kind"] == "2:4" and s["sparsity"] == pytest.approx(0.5, abs=0.05)
    assert s["latency"]["sparse_ms"]["source"] == "measured:onnxruntime-local"
    assert sha256(folder / s["artifact"]) == m["files"][s["artifact"]]["sha256"]
    assert "2:4 structured" in (folder / "report.md").read_text()


def test_bad_method_is_a_one_line_error(tmp_path):
    proc = run_cli("sparsify", "--model", "tests.nets:tiny_demo", "--method", "lottery", "--density", "0.2",
                   "--out", str(tmp_path / "o"), cache=tmp_path)
    assert_clean_error(proc, 2, "unknown sparsity method 'lottery'")


def test_config_validation_and_helpers(tmp_path):
    with pytest.raises(ConfigError, match="density"):
        SparsifyConfig(model=ModelOptions(), out=tmp_path, method="snip", density=1.0)
    with pytest.raises(ConfigError, match="--structured"):
        SparsifyConfig(model=ModelOptions(), out=tmp_path, method="snip", density=0.5, structured="3-of-4")
    with pytest.raises(ConfigError, match="during training only: use deploy --regularizer hessian-spectral"):
        SparsifyConfig(model=ModelOptions(), out=tmp_path, method="hessian-spectral", density=0.5)
    assert round_targets(0.125, 3) == pytest.approx([0.5, 0.25, 0.125])
    # kept(q) = 1 - q is decreasing: the answer keeps at most the target
    q = bisect(lambda v: 1 - v, 0.3, 0.0, 1.0, increasing=False)
    assert q == pytest.approx(0.7, abs=1e-6) and 1 - q <= 0.3

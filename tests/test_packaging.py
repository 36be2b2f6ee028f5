"""The wheel carries targets/ and profiles/, and edgeprune finds them when installed."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return next(out.glob("edgeprune-*.whl"))


def test_wheel_contains_every_target_and_the_profiles(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for yaml_file in (ROOT / "targets").glob("*.yaml"):
        assert f"edgeprune/_data/targets/{yaml_file.name}" in names
    assert "edgeprune/_data/profiles/README.md" in names


def test_installed_wheel_resolves_targets_without_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, timeout=300)
    code = ("import edgeprune.targets as t; p = t.data_dir('targets'); "
            "assert '_data' in str(p), p; print(t.get_target('host').name)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "host"


def test_import_edgeprune_stays_light():
    """Heavy toolchains load inside their backend only: importing the package and its registries'
    homes pulls in no torch, TVM, ONNX Runtime or TensorRT."""
    code = ("import sys, edgeprune, edgeprune.devices, edgeprune.quantize, edgeprune.registry, edgeprune.errors; "
            "heavy = [m for m in ('torch', 'tvm', 'onnxruntime', 'onnx', 'tensorrt') if m in sys.modules]; "
            "assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr

"""The ARM artifact, checked for real: compiled for raspberry-pi-4, run as aarch64 code under
qemu-user with TVM's own aarch64 runtime from PyPI, compared with PyTorch.

Needs Debian's gcc-aarch64-linux-gnu, g++-aarch64-linux-gnu and qemu-user (.ci/run installs
them) and PyPI (the aarch64 TVM wheels, downloaded once into the cache).
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeprune.emulation import qemu as crosscheck
from edgeprune.artifact import Artifact
from edgeprune.backends import get_backend
from edgeprune.backends.base import CompileOptions
from edgeprune.errors import ConfigError, ToolchainMissingError
from edgeprune.targets import get_target

ARCH = crosscheck.ARCHES["aarch64"]
INPUT_SHAPE = (1, 1, 16, 16)
_MISSING = [tool for tool in (ARCH.qemu, ARCH.compiler) if shutil.which(tool) is None]
needs_cross_tools = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"{', '.join(_MISSING)} not installed (apt-get install gcc-aarch64-linux-gnu "
           "g++-aarch64-linux-gnu qemu-user)")


class TinyConvNet(torch.nn.Module):
    """Convolutions, ReLU, pooling and a linear layer: the ops a pruned CNN is made of."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(4, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@pytest.fixture(scope="module")
def cross_cache(tmp_path_factory) -> Path:
    """CI's $EDGEPRUNE_CACHE when set (the ~100 MB wheel download happens once per clone),
    else a folder for this test module."""
    env = os.environ.get("EDGEPRUNE_CACHE")
    return Path(env) if env else tmp_path_factory.mktemp("crosscheck-cache")


@pytest.fixture(scope="module")
def arm_build(tmp_path_factory, cross_cache) -> tuple[torch.nn.Module, Artifact]:
    """The tiny net compiled by the TVM backend for the raspberry-pi-4 target, untuned."""
    if _MISSING:
        pytest.skip(f"{', '.join(_MISSING)} not installed")
    torch.manual_seed(0)
    model = TinyConvNet().eval()
    spec = get_target("raspberry-pi-4")
    options = CompileOptions(target_name=spec.name, compiler_target=spec.compiler_target,
                             cache_dir=cross_cache, tune_trials=0)
    out = tmp_path_factory.mktemp("arm-artifact")
    artifact = get_backend("tvm").compile(model, torch.rand(INPUT_SHAPE), out, options)
    return model, artifact


def _path_without(tools: list[str], tmp_path: Path) -> str:
    """A PATH folder holding the cross-compiler and qemu, minus ``tools``: real binaries,
    only the lookup differs."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in (ARCH.compiler, ARCH.qemu):
        found = shutil.which(tool)
        if tool not in tools and found:
            (folder / tool).symlink_to(found)
    return str(folder)


@pytest.mark.slow
@needs_cross_tools
def test_arm_artifact_is_aarch64_and_matches_pytorch_under_qemu(arm_build, cross_cache):
    model, artifact = arm_build
    assert crosscheck.elf_machine(artifact.path) == crosscheck.ELF_MACHINE_AARCH64
    torch.manual_seed(1)
    inputs = [torch.rand(INPUT_SHAPE), torch.randn(INPUT_SHAPE)]
    result = crosscheck.check_arm_artifact(model, artifact, inputs, tolerance=1e-4,
                                           cache_dir=cross_cache, timeout_s=120)
    assert result.matches, result
    assert result.max_abs_error < 1e-4
    assert result.inputs_checked == 2
    assert result.emulated_seconds_not_latency > 0
    assert {"latency", "seconds", "latency_ms"}.isdisjoint(result.to_json())

    other = TinyConvNet().eval()  # different weights: the comparison must notice
    mismatch = crosscheck.check_arm_artifact(other, artifact, inputs[0], cache_dir=cross_cache)
    assert not mismatch.matches and mismatch.max_abs_error > 1e-3

    x = inputs[0].numpy()
    out = crosscheck.run_under_qemu(artifact, x, cross_cache, timeout_s=120)
    with torch.no_grad():
        expected = model(inputs[0]).numpy()
    assert out.shape == expected.shape == (1, 3)
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=0)


@pytest.mark.slow
@needs_cross_tools
def test_runtime_libraries_are_aarch64_and_cached(arm_build, cross_cache, monkeypatch):
    first = crosscheck.fetch_runtime("aarch64", cross_cache)
    for lib in ARCH.runtime_libs:
        assert crosscheck.elf_machine(first / lib) == crosscheck.ELF_MACHINE_AARCH64
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # a second download would now fail
    assert crosscheck.fetch_runtime("aarch64", cross_cache) == first


@pytest.mark.slow
@needs_cross_tools
def test_wrong_input_shape_is_refused_before_emulating(arm_build, cross_cache):
    _, artifact = arm_build
    with pytest.raises(ConfigError, match="compiled for input"):
        crosscheck.run_under_qemu(artifact, np.zeros((1, 1, 8, 8), np.float32), cross_cache)


@pytest.mark.slow
@needs_cross_tools
def test_missing_qemu_names_the_debian_package(arm_build, cross_cache, tmp_path, monkeypatch):
    _, artifact = arm_build
    monkeypatch.setenv("PATH", _path_without([ARCH.qemu], tmp_path))
    with pytest.raises(ToolchainMissingError, match="qemu-aarch64 not found.*qemu-user"):
        crosscheck.run_under_qemu(artifact, np.zeros(INPUT_SHAPE, np.float32), cross_cache)


@pytest.mark.slow
@needs_cross_tools
def test_missing_cross_compiler_names_the_debian_packages(arm_build, cross_cache, tmp_path, monkeypatch):
    runtime = crosscheck.fetch_runtime("aarch64", cross_cache)
    fresh = tmp_path / "cache"
    (fresh / crosscheck.CACHE_SUBDIR).mkdir(parents=True)
    (fresh / crosscheck.CACHE_SUBDIR / runtime.name).symlink_to(runtime)  # no runner built yet
    monkeypatch.setenv("PATH", _path_without([ARCH.compiler], tmp_path))
    with pytest.raises(ToolchainMissingError, match=r"aarch64-linux-gnu-g\+\+ not found.*g\+\+-aarch64-linux-gnu"):
        crosscheck.build_runner(fresh)


@pytest.mark.skipif(platform.machine() == "aarch64", reason="this host's own binaries are aarch64")
def test_host_binary_is_not_a_foreign_artifact():
    assert crosscheck.elf_machine(Path(sys.executable).resolve()) != crosscheck.ELF_MACHINE_AARCH64
    with pytest.raises(ConfigError, match="only foreign"):
        crosscheck.artifact_arch(Path(sys.executable).resolve())


def test_runtime_that_pip_cannot_get_is_a_clear_toolchain_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip may only look in local find-links: no aarch64 TVM there
    with pytest.raises(ToolchainMissingError, match=r"cannot get the aarch64 TVM runtime \(apache-tvm=="):
        crosscheck.fetch_runtime("aarch64", tmp_path)
    assert list((tmp_path / crosscheck.CACHE_SUBDIR).iterdir()) == []  # no half-made cache entry

"""Board-in-the-loop checks: a tiny model measured on a real board over TVM RPC and over SSH.

Each test skips with the environment variable it lacks (see ``conftest.py``), so the file is safe
to collect anywhere; with the variables set it talks to the board for real.
"""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeprune.artifact import Artifact
from edgeprune.profilers.base_settings import MeasureSettings
from edgeprune.devices import Reach
from edgeprune.targets import TargetSpec

pytestmark = pytest.mark.hardware

SETTINGS = MeasureSettings(warmup=5, repeats=20, min_repeat_ms=10.0)


def _tiny_model() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10))
    return model.eval(), torch.randn(1, 3, 32, 32)


def _tvm_target(spec: TargetSpec) -> dict:
    """The target's TVM dict; ``mcpu: auto`` (host.yaml) means "let LLVM pick"."""
    target = dict(spec.compiler_target)
    if target.get("mcpu") == "auto":
        target.pop("mcpu")
    if target.get("kind") != "llvm":
        pytest.skip(f"target {spec.name} is not an LLVM CPU target for TVM")
    return target


def _compile_for(spec: TargetSpec, out: Path) -> tuple[Artifact, torch.nn.Module, torch.Tensor]:
    """torch.export -> Relax -> tvm.compile for the board, cross-compiled when the triple differs."""
    tvm = pytest.importorskip("tvm")
    from tvm.relax.frontend.torch import from_exported_program

    target = _tvm_target(spec)
    model, example = _tiny_model()
    mod = from_exported_program(torch.export.export(model, (example,)), keep_params_as_input=False)
    ex = tvm.compile(mod, target=tvm.target.Target(target))
    path = out / "model.so"
    triple = target.get("mtriple", "")
    if triple and not triple.startswith(platform.machine()):
        cxx = f"{triple}-g++"
        if shutil.which(cxx) is None:
            pytest.skip(f"cross compiler {cxx} not found (apt-get install g++-{triple.replace('_', '-')})")
        ex.export_library(str(path), fcompile=tvm.support.cc.cross_compiler(cxx))
    else:
        ex.export_library(str(path))
    return Artifact("tvm", spec.name, (path,), tuple(example.shape)), model, example


def test_tvm_rpc_board(rpc_reach: Reach, board_target: TargetSpec, tmp_path: Path) -> None:
    from edgeprune.profilers.tvm_rpc import TvmRpcProfiler

    artifact, model, example = _compile_for(board_target, tmp_path)
    profiler = TvmRpcProfiler(rpc_reach, session_timeout_s=300)
    outputs = profiler.run(artifact, example.numpy())
    with torch.no_grad():
        np.testing.assert_allclose(outputs[0], model(example).numpy(), rtol=1e-4, atol=1e-4)
    m = profiler.measure(artifact, SETTINGS)
    assert m.latency.source == "measured:tvm-rpc" and m.latency.median > 0
    print(f"\n{board_target.name} via {rpc_reach.describe()}: {m.latency.short()}")


def test_ssh_board(ssh_reach: Reach, ssh_known_hosts: Path, board_target: TargetSpec, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from edgeprune.backends.base import CompileOptions
    from edgeprune.backends.ort import OnnxRuntimeBackend
    from edgeprune.profilers.ssh import SshRunner

    model, example = _tiny_model()
    options = CompileOptions(target_name=board_target.name, compiler_target={}, cache_dir=tmp_path / "cache")
    artifact = OnnxRuntimeBackend().compile(model, example, tmp_path, options)
    identity = os.environ.get("EDGEPRUNE_SSH_IDENTITY")
    runner = SshRunner(ssh_reach, known_hosts=ssh_known_hosts, identity_file=Path(identity) if identity else None,
                       python=os.environ.get("EDGEPRUNE_SSH_PYTHON", "python3"),
                       power=board_target.power_measurement)
    m = runner.measure(artifact, SETTINGS)
    assert m.latency.source == f"measured:ssh:{ssh_reach.host}" and m.latency.median > 0
    if board_target.power_measurement.method != "none":
        assert m.energy is not None, m.energy_note
    print(f"\n{board_target.name} via {ssh_reach.describe()}: {m.latency.short()}; energy: "
          f"{m.energy or m.energy_note}")

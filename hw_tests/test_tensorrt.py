"""TensorRT for real: a local engine on a CUDA GPU, and the SSH flow against a real Jetson.

EDGEPRUNE_JETSON              ssh://USER@HOST[:PORT] of a Jetson with JetPack (trtexec, tegrastats)
EDGEPRUNE_JETSON_KNOWN_HOSTS  known_hosts file holding the Jetson's host key (checking stays on)
EDGEPRUNE_JETSON_IDENTITY     optional private key for the Jetson
EDGEPRUNE_JETSON_TARGET       jetson-nano | jetson-xavier-nx | jetson-orin-nano (default jetson-orin-nano)
EDGEPRUNE_JETSON_PRECISION    fp16 (default) or fp32

Each test skips naming what it lacks. Run: ``pytest hw_tests/test_tensorrt.py -m hardware -s``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeprune.backends.base import CompileOptions
from edgeprune.backends.tensorrt import JetsonTrtRunner, TensorRtBackend, release_for
from edgeprune.backends.tensorrt.engine import local_tensorrt
from edgeprune.profilers.base_settings import MeasureSettings

pytestmark = pytest.mark.hardware

SETTINGS = MeasureSettings(warmup=5, repeats=50, min_repeat_ms=10.0)


def _env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        pytest.skip(f"{name} is not set (see hw_tests/test_tensorrt.py)")
    return value


def _tiny() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
                                torch.nn.Conv2d(32, 64, 3, padding=1, stride=2), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 10))
    return model.eval(), torch.randn(1, 3, 64, 64)


def test_local_engine_builds_runs_and_times(tmp_path: Path) -> None:
    trt, reason = local_tensorrt()
    if trt is None:
        pytest.skip(reason)
    model, example = _tiny()
    target = {"kind": "tensorrt", "tensorrt": ".".join(trt.__version__.split(".")[:2])}
    if target["tensorrt"] not in ("8.2", "8.5", "10.3"):
        target["tensorrt"] = "10.3"  # nearest known row: opset/flags only matter for trtexec lines
    options = CompileOptions(target_name="gpu-host", compiler_target=target, cache_dir=tmp_path, precision="fp32")
    backend = TensorRtBackend()
    art = backend.compile(model, example, tmp_path / "out", options)
    assert art.meta["engine"] == "model.engine"
    with torch.no_grad():
        np.testing.assert_allclose(backend.load(art)(example.numpy()), model(example).numpy(), atol=1e-2, rtol=1e-2)
    m = backend.measure(art, SETTINGS)
    assert m.latency.source == "measured:tensorrt-local" and m.latency.median > 0
    print(f"\nlocal TensorRT {trt.__version__} on {m.device}: {m.latency.short()}")


def test_jetson_over_ssh(tmp_path: Path) -> None:
    from edgeprune.devices import parse_device
    from edgeprune.profilers.ssh import SshRunner
    from edgeprune.targets import get_target

    reach = parse_device(_env("EDGEPRUNE_JETSON"))
    known = Path(_env("EDGEPRUNE_JETSON_KNOWN_HOSTS"))
    if not known.is_file():
        pytest.skip(f"EDGEPRUNE_JETSON_KNOWN_HOSTS={known} does not exist")
    identity = os.environ.get("EDGEPRUNE_JETSON_IDENTITY")
    target = get_target(os.environ.get("EDGEPRUNE_JETSON_TARGET", "jetson-orin-nano"))
    precision = os.environ.get("EDGEPRUNE_JETSON_PRECISION", "fp16")
    model, example = _tiny()
    options = CompileOptions(target_name=target.name, compiler_target=dict(target.compiler_target),
                             cache_dir=tmp_path, precision=precision)
    art = TensorRtBackend().compile(model, example, tmp_path / "out", options)
    ssh = SshRunner(reach, known_hosts=known, identity_file=Path(identity) if identity else None,
                    power=target.power_measurement, run_timeout_s=1200)
    m = JetsonTrtRunner(ssh, release_for(target.compiler_target, target.name)).measure(art, SETTINGS)
    assert m.latency.source == f"measured:trtexec:{reach.host}" and m.latency.median > 0
    assert m.details["layer_profile"]["layers"], "trtexec exported no per-layer profile"
    if target.power_measurement.method == "tegrastats":
        assert m.energy is not None, m.energy_note
    print(f"\n{m.device}: {m.latency.short()}; energy {m.energy or m.energy_note}; board {m.details['board']}; "
          f"engine channel multiple {m.details['engine_channel_multiple']}")

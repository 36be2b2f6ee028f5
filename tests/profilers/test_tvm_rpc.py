"""TVM RPC profiler against a real tracker and real RPC servers on loopback.

One module fixture starts a tracker and three servers at once (each takes ~7.5 s to listen, so
they start in parallel): two registered with the tracker under keys ``test`` and ``doomed`` (a
fault test kills the latter) and one direct server, killed at the end of the direct test. Every
process runs in its own session and its whole process group is killed at teardown, because
killing ``rpc_server`` alone orphans its ``tvm.exec.popen_worker``.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

tvm = pytest.importorskip("tvm", reason="apache-tvm is not installed (pip install 'edgeprune[tvm]')")
pytest.importorskip("cloudpickle", reason="the TVM RPC server needs cloudpickle")
pytest.importorskip("tornado", reason="the TVM RPC tracker needs tornado")

import torch  # noqa: E402

from edgeprune.artifact import Artifact  # noqa: E402
from edgeprune.errors import ConfigError, DeviceError  # noqa: E402
from edgeprune.profilers.base_settings import MeasureSettings  # noqa: E402
from edgeprune.profilers.tvm_rpc import RetryPolicy, TvmRpcProfiler  # noqa: E402
from edgeprune.devices import Reach, parse_device  # noqa: E402
from tests.services import _free_port, _kill, _start, _wait_port, _wait_registered  # noqa: E402

SETTINGS = MeasureSettings(warmup=2, repeats=5, min_repeat_ms=1.0)
FAST_RETRY = RetryPolicy(attempts=3, backoff_s=0.2, max_backoff_s=0.5)


class TinyNet(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, width, 3, padding=1)
        self.fc = torch.nn.Linear(width, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


@dataclass(frozen=True)
class Compiled:
    artifact: Artifact
    model: torch.nn.Module


def _compile(width: int, out: Path) -> Compiled:
    """torch.export -> Relax -> tvm.compile -> export_library, weights embedded as constants."""
    from tvm import relax  # noqa: F401 - registers the relax frontend's dependencies
    from tvm.relax.frontend.torch import from_exported_program

    torch.manual_seed(width)
    model = TinyNet(width).eval()
    example = torch.randn(1, 3, 8, 8)
    mod = from_exported_program(torch.export.export(model, (example,)), keep_params_as_input=False)
    ex = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
    path = out / f"tiny{width}" / "model.so"
    path.parent.mkdir(parents=True)
    ex.export_library(str(path))
    return Compiled(Artifact("tvm", "host", (path,), tuple(example.shape)), model)


@dataclass
class Farm:
    tracker_port: int
    direct_port: int
    procs: dict[str, subprocess.Popen]
    compiled: list[Compiled]


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    """Start everything first, compile the artifacts while the servers boot, then wait for them."""
    logs = tmp_path_factory.mktemp("rpc-logs")
    ports = {name: _free_port() for name in ("tracker", "test", "doomed", "direct")}
    procs: dict[str, subprocess.Popen] = {}

    def server(name: str, *extra: str) -> None:
        p = ports[name]
        procs[name] = _start(["tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(p),
                              "--port-end", str(p + 1), *extra], logs / f"{name}.log")

    try:
        tp = ports["tracker"]
        procs["tracker"] = _start(["tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(tp),
                                   "--port-end", str(tp + 1)], logs / "tracker.log")
        server("direct")
        for key in ("test", "doomed"):  # a server that finds no tracker yet retries every 5 s
            server(key, "--tracker", f"127.0.0.1:{tp}", "--key", key)
        compiled = [_compile(w, tmp_path_factory.mktemp("rpc-artifacts")) for w in (4, 6, 8)]
        _wait_port(tp, procs["tracker"], logs / "tracker.log")
        for name in ("direct", "test", "doomed"):
            _wait_port(ports[name], procs[name], logs / f"{name}.log")
        for key in ("test", "doomed"):
            _wait_registered(tp, key)
        yield Farm(tp, ports["direct"], procs, compiled)
    finally:
        for proc in procs.values():
            _kill(proc)


@pytest.fixture(scope="module")
def compiled(farm: Farm) -> list[Compiled]:
    return farm.compiled


def _check_outputs(profiler: TvmRpcProfiler, item: Compiled) -> None:
    x = np.random.default_rng(1).standard_normal(item.artifact.input_shape).astype(np.float32)
    outputs = profiler.run(item.artifact, x)
    with torch.no_grad():
        expected = item.model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(outputs[0], expected, rtol=1e-5, atol=1e-5)


def _check_latency(measurement, label: str) -> None:
    stats = measurement.latency
    assert stats.source == "measured:tvm-rpc"
    assert stats.repeats == SETTINGS.repeats
    assert 0 < stats.min <= stats.median <= stats.max
    assert label in measurement.device


def test_measure_through_tracker(farm: Farm, compiled: list[Compiled]) -> None:
    reach = parse_device(f"rpc://127.0.0.1:{farm.tracker_port}/test")
    profiler = TvmRpcProfiler(reach, session_timeout_s=60, retry=FAST_RETRY)
    _check_outputs(profiler, compiled[0])
    _check_latency(profiler.measure(compiled[0].artifact, SETTINGS), "/test")


def test_measure_direct_then_board_killed_mid_measurement(farm: Farm, compiled: list[Compiled]) -> None:
    """Straight to the server: outputs and timings of three artifacts; then the server is killed
    while time_evaluator runs on it, which ends in a one-line DeviceError after the retries."""
    profiler = TvmRpcProfiler(parse_device(f"rpc://127.0.0.1:{farm.direct_port}"), retry=FAST_RETRY)
    _check_outputs(profiler, compiled[1])
    result = profiler.measure_many([c.artifact for c in compiled], SETTINGS)
    assert result.complete and len(result.measurements) == 3
    for m in result.measurements:
        _check_latency(m, f"127.0.0.1:{farm.direct_port}")

    long_run = MeasureSettings(warmup=0, repeats=20000, min_repeat_ms=1.0)  # ~20 s if not killed
    killer = threading.Timer(1.5, _kill, args=(farm.procs["direct"],))
    killer.start()
    start = time.monotonic()
    try:
        with pytest.raises(DeviceError, match="after 3 attempts") as info:
            profiler.measure(compiled[0].artifact, long_run)
    finally:
        killer.cancel()
    assert "\n" not in str(info.value)
    assert time.monotonic() - start < 15


def test_board_lost_between_artifacts_keeps_earlier_results(farm: Farm, compiled: list[Compiled]) -> None:
    """The tracker's server dies after the first artifact: retried, then a one-line DeviceError,
    with the first measurement kept."""
    def kill_after_first(index: int, _measurement) -> None:
        if index == 0:
            _kill(farm.procs["doomed"])

    reach = Reach(mode="rpc", host="127.0.0.1", port=farm.tracker_port, key="doomed")
    profiler = TvmRpcProfiler(reach, retry=FAST_RETRY, request_wait_s=2, on_measured=kill_after_first)
    start = time.monotonic()
    result = profiler.measure_many([c.artifact for c in compiled], SETTINGS)
    assert len(result.measurements) == 1
    _check_latency(result.measurements[0], "/doomed")
    assert result.error is not None
    message = str(result.error)
    assert "\n" not in message and "after 3 attempts" in message and "doomed" in message
    assert time.monotonic() - start < 30


def test_unreachable_tracker_fails_fast_with_device_error(tmp_path: Path) -> None:
    """Nothing listens on the port: bounded retries, a one-line DeviceError, in seconds."""
    library = tmp_path / "model.so"
    library.write_bytes(b"never loaded: the connection fails first")
    reach = Reach(mode="rpc", host="127.0.0.1", port=_free_port(), key="nobody")
    profiler = TvmRpcProfiler(reach, retry=RetryPolicy(attempts=2, backoff_s=0.1))
    start = time.monotonic()
    with pytest.raises(DeviceError, match="unreachable") as info:
        profiler.run(Artifact("tvm", "host", (library,), (1,)), np.zeros(1, dtype=np.float32))
    assert "after 2 attempts" in str(info.value) and "\n" not in str(info.value)
    assert time.monotonic() - start < 5


def test_non_tvm_artifact_and_non_rpc_reach_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rpc://"):
        TvmRpcProfiler(Reach(mode="local"))
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"x")
    profiler = TvmRpcProfiler(Reach(mode="rpc", host="127.0.0.1", port=1))
    with pytest.raises(ConfigError, match=r"\.so"):
        profiler.measure(Artifact("onnxruntime", "host", (onnx,), (1,)), SETTINGS)

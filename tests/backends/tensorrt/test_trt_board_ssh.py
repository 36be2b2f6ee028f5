"""The Jetson TensorRT flow end to end over a real sshd on 127.0.0.1.

This machine has no GPU, TensorRT or tegrastats, so two programs are STAND-INS (data/README.md):
``data/trtexec_standin.py`` accepts trtexec's flags and writes trtexec's JSON formats from real
ONNX Runtime runs, and ``data/tegrastats_replay.py`` replays recorded tegrastats lines. Everything
else is the production path: SSH with host-key checking, scp, the shell steps, the background
sampler, reading the files back and parsing them with the same code a Jetson's output goes through.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from edgeprune.backends.base import CompileOptions
from edgeprune.backends.tensorrt import BoardTools, JetsonTrtRunner, RunSettings, TensorRtBackend
from edgeprune.backends.tensorrt.versions import RELEASES
from edgeprune.errors import CompileError
from edgeprune.profilers.base_settings import MeasureSettings
from edgeprune.profilers.ssh import SshRunner
from edgeprune.targets import PowerMeasurement
from tests.sshd import SSHD, SshHost, loopback_sshd

DATA = Path(__file__).with_name("data")
PY = shlex.quote(sys.executable)
XAVIER = {"kind": "tensorrt", "sm": "72", "jetpack": "5", "tensorrt": "8.5"}
RUN = RunSettings(warmup_ms=50, iterations=20, duration_s=1)
TOOLS = BoardTools(trtexec=f"{PY} {DATA / 'trtexec_standin.py'}",
                   tegrastats=f"{PY} {DATA / 'tegrastats_replay.py'} --interval {{interval_ms}} "
                              f"{DATA / 'tegrastats_xavier_nx.txt'}",
                   interval_ms=50)

pytestmark = [
    pytest.mark.skipif(not SSHD.exists(), reason="/usr/sbin/sshd is absent (apt-get install -y openssh-server)"),
    pytest.mark.skipif(shutil.which("ssh") is None or shutil.which("ssh-keygen") is None,
                       reason="the OpenSSH client is absent (apt-get install -y openssh-client)"),
]


@pytest.fixture(scope="module")
def ssh_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshHost]:
    with loopback_sshd(tmp_path_factory.mktemp("sshd")) as host:
        yield host


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    out = tmp_path_factory.mktemp("trt")
    options = CompileOptions(target_name="jetson-xavier-nx", compiler_target=XAVIER, cache_dir=out / "cache",
                             precision="fp16")
    return TensorRtBackend().compile(model, torch.randn(1, 3, 16, 16), out / "artifact", options)


def _ssh(host: SshHost, remote: Path, method: str = "tegrastats") -> SshRunner:
    from edgeprune.devices import parse_device

    power = PowerMeasurement(method="tegrastats", rail="VDD_IN") if method == "tegrastats" else PowerMeasurement()
    return SshRunner(parse_device(f"ssh://{host.user}@127.0.0.1:{host.port}"), known_hosts=host.known_hosts,
                     identity_file=host.client_key, remote_root=str(remote), power=power, run_timeout_s=120)


def test_build_time_profile_and_energy_over_ssh(ssh_host: SshHost, artifact, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    runner = JetsonTrtRunner(_ssh(ssh_host, remote), RELEASES["8.5"], tools=TOOLS, run=RUN)
    m = runner.measure(artifact, MeasureSettings(warmup=2, repeats=20))
    assert m.latency.source == "measured:trtexec:127.0.0.1" and m.latency.repeats >= 20
    assert 0 < m.latency.min <= m.latency.median <= m.latency.max
    # energy: the replayed VDD_IN readings (4.100-4.410 W) times the measured median latency
    assert m.energy is not None and m.energy.source == "measured:tegrastats:VDD_IN"
    assert 4.1 <= m.energy.mean_power_w <= 4.41
    assert 4.1 * m.latency.median <= m.energy.median_mj <= 4.41 * m.latency.median
    board = m.details["board"]  # no nvpmodel/jetson_clocks here: recorded as unknown, not fatal
    assert board["power_mode"] == "unknown" and board["jetson_clocks"].startswith("unknown: ")
    assert m.details["tensorrt"] == "8.5" and m.details["gpu_compute_ms"]["n"] == m.latency.repeats
    rows = m.details["layer_profile"]["layers"]  # ONNX Runtime's per-node profile, in trtexec's format
    assert rows and sum(row["percentage"] for row in rows) == pytest.approx(100.0)
    assert m.details["engine_channel_multiple"] == 1  # the stand-in chose no vectorised format
    assert "TensorRT 8.5" in m.device and "via ssh://" in m.device
    assert list(remote.iterdir()) == []  # the work folder was removed


def test_failed_build_is_a_compile_error_with_trtexecs_reason(ssh_host: SshHost, artifact, tmp_path: Path) -> None:
    failing = BoardTools(trtexec=f"{PY} -c 'import sys; print(\"[E] stand-in: unsupported operator\"); sys.exit(1)'")
    runner = JetsonTrtRunner(_ssh(ssh_host, tmp_path / "remote", "none"), RELEASES["8.5"], tools=failing)
    with pytest.raises(CompileError, match="could not build the engine.*unsupported operator") as info:
        runner.measure(artifact, MeasureSettings(warmup=1, repeats=5))
    assert "\n" not in str(info.value)

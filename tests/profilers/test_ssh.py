"""SSH runner against a private sshd on 127.0.0.1, with throwaway keys and host-key checking on.

The sshd runs in the foreground (``-D``) in its own session on a free port, with its own host
key, an authorized_keys file holding a throwaway client key, no passwords and no PAM. The
"board" is this machine, so the benchmark runs with this virtualenv's Python (it has numpy and
onnxruntime, as a board must).
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from edgeprune.artifact import Artifact
from edgeprune.errors import ConfigError, DeviceError
from edgeprune.profilers.base_settings import MeasureSettings
from edgeprune.profilers.ssh import SshRunner
from edgeprune.devices import Reach, parse_device
from edgeprune.targets import PowerMeasurement
from tests.services import _free_port
from tests.sshd import SSHD, SshHost, loopback_sshd

SETTINGS = MeasureSettings(warmup=2, repeats=7, min_repeat_ms=2.0)

pytestmark = [
    pytest.mark.skipif(not SSHD.exists(), reason="/usr/sbin/sshd is absent (apt-get install -y openssh-server)"),
    pytest.mark.skipif(shutil.which("ssh") is None or shutil.which("ssh-keygen") is None,
                       reason="the OpenSSH client is absent (apt-get install -y openssh-client)"),
]


@pytest.fixture(scope="session")
def ssh_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshHost]:
    """A private sshd: host key checked by the client, key-only login as the current user."""
    with loopback_sshd(tmp_path_factory.mktemp("sshd")) as host:
        yield host


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    """A tiny CNN compiled by the project's own ONNX Runtime backend."""
    from edgeprune.backends.base import CompileOptions
    from edgeprune.backends.ort import OnnxRuntimeBackend

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4))
    out = tmp_path_factory.mktemp("onnx")
    options = CompileOptions(target_name="host", compiler_target={}, cache_dir=out / "cache")
    return OnnxRuntimeBackend().compile(model, torch.randn(1, 3, 16, 16), out, options)


def _runner(host: SshHost, port: int | None = None, known: Path | None = None, **kw) -> SshRunner:
    reach = parse_device(f"ssh://{host.user}@127.0.0.1:{port or host.port}")
    return SshRunner(reach, known_hosts=known or host.known_hosts, identity_file=host.client_key,
                     python=sys.executable, **kw)


def test_measures_onnx_model_over_ssh(ssh_host: SshHost, onnx_artifact: Artifact, tmp_path: Path) -> None:
    remote_root = tmp_path / "remote"
    runner = _runner(ssh_host, remote_root=str(remote_root))
    m = runner.measure(onnx_artifact, SETTINGS)
    assert m.latency.source == "measured:ssh:127.0.0.1"
    assert m.latency.repeats == SETTINGS.repeats and m.latency.warmup == SETTINGS.warmup
    assert 0 < m.latency.min <= m.latency.median <= m.latency.max
    assert "via ssh://" in m.device and m.details["onnxruntime"]
    assert m.energy is None and m.energy_note.startswith("not measurable")
    assert list(remote_root.iterdir()) == []  # the per-artifact folder was cleaned up


def test_missing_power_counter_costs_only_the_energy(ssh_host: SshHost, onnx_artifact: Artifact) -> None:
    """The target asks for RAPL but the board has no counter: latency is kept, energy says why."""
    if Path("/sys/class/powercap/intel-rapl:0/energy_uj").exists():
        pytest.skip("this host has a RAPL counter")
    m = _runner(ssh_host, power=PowerMeasurement(method="rapl")).measure(onnx_artifact, SETTINGS)
    assert m.latency.median > 0 and m.energy is None
    assert m.energy_note.startswith("not measurable: rapl sampling failed on the board")


def test_custom_command_json_is_parsed(ssh_host: SshHost, onnx_artifact: Artifact) -> None:
    """Any command printing the JSON record works; the model really was copied to {model}."""
    command = ("test -s {model} && echo noise before && "
               "echo '{{\"samples_ms\": [2.0, 1.0, 3.0], \"warmup\": 0, \"machine\": \"fake board\"}}'")
    m = _runner(ssh_host, command=command).measure(onnx_artifact, SETTINGS)
    assert m.latency.median == 2.0 and m.latency.repeats == 3 and m.device.startswith("fake board")


def test_bad_output_and_failing_command_are_device_errors(ssh_host: SshHost, onnx_artifact: Artifact) -> None:
    with pytest.raises(DeviceError, match="printed no JSON samples"):
        _runner(ssh_host, command="echo hello").measure(onnx_artifact, SETTINGS)
    with pytest.raises(DeviceError, match=r"failed \(exit 3\): boom"):
        _runner(ssh_host, command="echo boom >&2; exit 3").measure(onnx_artifact, SETTINGS)


def test_wrong_port_is_a_quick_device_error(ssh_host: SshHost, onnx_artifact: Artifact) -> None:
    start = time.monotonic()
    with pytest.raises(DeviceError, match="cannot reach") as info:
        _runner(ssh_host, port=_free_port(), connect_timeout_s=3).measure(onnx_artifact, SETTINGS)
    assert "\n" not in str(info.value)
    assert time.monotonic() - start < 10


def test_unknown_host_key_is_refused(ssh_host: SshHost, onnx_artifact: Artifact) -> None:
    """StrictHostKeyChecking is on: a host presenting another key gets nothing."""
    with pytest.raises(DeviceError, match="[Hh]ost key"):
        _runner(ssh_host, known=ssh_host.other_known_hosts).measure(onnx_artifact, SETTINGS)


def test_runner_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ssh://"):
        SshRunner(Reach(mode="local"))
    with pytest.raises(ConfigError, match="known_hosts"):
        SshRunner(parse_device("ssh://pi@board"), known_hosts=tmp_path / "missing")

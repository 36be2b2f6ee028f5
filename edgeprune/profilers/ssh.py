"""Measure an artifact on a board over SSH: copy it there, run a benchmark there, parse its JSON.

Uses the system ``ssh``/``scp`` so the user's keys, agent and ``~/.ssh/config`` work as they do
in a terminal, but always with ``BatchMode=yes`` (never hang on a password prompt) and
``StrictHostKeyChecking=yes`` (never trust an unknown host key: a spoofed board would otherwise
receive the model and report made-up figures). Pass ``known_hosts`` to pin the board's key in a
file of your own.

The default command runs :mod:`edgeprune.profilers.ssh_bench` (copied along) with ONNX Runtime;
a custom ``command`` template may run anything that prints the same JSON on its last line.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

from edgeprune.artifact import Artifact
from edgeprune.errors import ConfigError, DeviceError, UnknownNameError
from edgeprune.profilers import energy
from edgeprune.profilers.base import EnergyStats, Measurement
from edgeprune.profilers.base_settings import MeasureSettings
from edgeprune.profilers.stats import LatencyStats
from edgeprune.devices.reach import Reach
from edgeprune.targets import PowerMeasurement

BENCH_SCRIPT = Path(__file__).with_name("ssh_bench.py")
DEFAULT_COMMAND = ("{python} {script} {model} --shape {shape} --dtype {dtype} --warmup {warmup} "
                   "--repeats {repeats} --min-repeat-ms {min_repeat_ms} --threads {threads} --power {power}")
"""Placeholders are filled with shell-quoted values; ``{dir}`` is the remote work folder."""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


class SshRunner:
    """Runs a benchmark of an artifact on ``reach`` (an ``ssh`` reach) and returns a Measurement
    labelled ``measured:ssh:<host>``.

    ``python`` is the board's interpreter (it needs numpy and onnxruntime); ``power`` says how to
    sample power there (from the target YAML); ``remote_root`` holds one folder per artifact,
    removed after the run unless ``keep_remote``.
    """

    name = "ssh"

    def __init__(self, reach: Reach, *, known_hosts: Path | None = None, identity_file: Path | None = None,
                 python: str = "python3", command: str = DEFAULT_COMMAND, remote_root: str = "/tmp/edgeprune",
                 power: PowerMeasurement | None = None, connect_timeout_s: float = 10.0,
                 run_timeout_s: float = 600.0, keep_remote: bool = False) -> None:
        if reach.mode != "ssh" or not reach.host or not reach.user:
            raise ConfigError(f"the SSH runner needs --device ssh://USER@HOST[:PORT], got {reach.describe()}")
        if known_hosts is not None and not Path(known_hosts).is_file():
            raise ConfigError(f"known_hosts file {known_hosts} does not exist")
        self.reach = reach
        self.known_hosts = known_hosts
        self.identity_file = identity_file
        self.python = python
        self.command = command
        self.remote_root = remote_root
        self.power = power or PowerMeasurement()
        self.connect_timeout_s = connect_timeout_s
        self.run_timeout_s = run_timeout_s
        self.keep_remote = keep_remote

    @property
    def destination(self) -> str:
        return f"{self.reach.user}@{self.reach.host}"

    def _options(self) -> list[str]:
        """Options shared by ssh and scp: non-interactive, host key checked, bounded waits."""
        opts = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"ConnectTimeout={max(1, int(self.connect_timeout_s))}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR"]
        if self.known_hosts is not None:
            opts += ["-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
        if self.identity_file is not None:
            opts += ["-i", str(self.identity_file), "-o", "IdentitiesOnly=yes"]
        return opts

    def _call(self, argv: list[str], what: str, timeout_s: float) -> subprocess.CompletedProcess:
        """Run ssh/scp; every failure becomes a one-line DeviceError saying what and why."""
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{what} on {self.reach.describe()} timed out after {timeout_s:g} s") from None
        except FileNotFoundError:
            raise DeviceError(f"{argv[0]} is not installed (apt-get install openssh-client)") from None
        if done.returncode == 255:  # ssh's own failure: connect, auth or host key
            reason = _last_line(done.stderr) or "exit 255"
            if argv[0] == "scp" and reason.endswith("Connection closed"):
                reason += " (scp >= 9 copies over SFTP: enable the board's sftp subsystem)"
            raise DeviceError(f"{what}: cannot reach {self.reach.describe()}: {reason}")
        if done.returncode != 0:
            reason = _last_line(done.stderr) or _last_line(done.stdout) or "no output"
            raise DeviceError(f"{what} on {self.reach.describe()} failed (exit {done.returncode}): {reason}")
        return done

    def run_remote(self, command: str, timeout_s: float | None = None, what: str = "remote command") -> str:
        """Run a shell command on the board and return its stdout."""
        argv = ["ssh", *self._options(), "-p", str(self.reach.port or 22), self.destination, "--", command]
        return self._call(argv, what, timeout_s or self.run_timeout_s).stdout

    def copy_to(self, files: list[Path], remote_dir: str) -> None:
        """scp ``files`` into ``remote_dir`` (which must exist)."""
        host = f"[{self.reach.host}]" if ":" in str(self.reach.host) else self.reach.host
        argv = ["scp", "-q", *self._options(), "-P", str(self.reach.port or 22),
                *[str(f) for f in files], f"{self.reach.user}@{host}:{remote_dir}/"]
        self._call(argv, "copying the artifact", self.run_timeout_s)

    def _power_flag(self) -> str:
        return f"{self.power.method}:{self.power.rail}" if self.power.rail else self.power.method

    def _bench_command(self, artifact: Artifact, settings: MeasureSettings, remote_dir: str) -> str:
        values = {"python": self.python, "script": f"{remote_dir}/{BENCH_SCRIPT.name}",
                  "model": f"{remote_dir}/{artifact.path.name}", "dir": remote_dir,
                  "shape": ",".join(str(d) for d in artifact.input_shape), "dtype": artifact.input_dtype,
                  "warmup": settings.warmup, "repeats": settings.repeats,
                  "min_repeat_ms": settings.min_repeat_ms, "threads": settings.threads or 0,
                  "power": self._power_flag()}
        try:
            return self.command.format(**{k: shlex.quote(str(v)) for k, v in values.items()})
        except (KeyError, IndexError) as exc:
            raise ConfigError(f"SSH command template has an unknown placeholder {exc}") from None

    def measure(self, artifact: Artifact, settings: MeasureSettings) -> Measurement:
        """Copy, run, parse; the remote folder is removed afterwards unless ``keep_remote``."""
        if not artifact.path.is_file():
            raise ConfigError(f"artifact {artifact.path} does not exist")
        digest = hashlib.sha256(artifact.path.read_bytes()).hexdigest()[:16]
        remote_dir = f"{self.remote_root}/{digest}"
        self.run_remote(f"mkdir -p {shlex.quote(remote_dir)}", self.connect_timeout_s + 20, "creating the work folder")
        try:
            self.copy_to([*artifact.files, BENCH_SCRIPT], remote_dir)
            out = self.run_remote(self._bench_command(artifact, settings, remote_dir), what="the benchmark")
        finally:
            if not self.keep_remote:
                try:
                    self.run_remote(f"rm -rf {shlex.quote(remote_dir)}", self.connect_timeout_s + 20, "cleaning up")
                except DeviceError:
                    pass  # the board went away; the measurement error (if any) is the one to report
        return self._parse(out, settings)

    def _parse(self, stdout: str, settings: MeasureSettings) -> Measurement:
        """The benchmark's last stdout line as JSON -> Measurement (energy when power was sampled)."""
        line = _last_line(stdout)
        try:
            record = json.loads(line)
            samples = [float(s) for s in record["samples_ms"]]
        except (ValueError, KeyError, TypeError):
            raise DeviceError(f"the benchmark on {self.reach.host} printed no JSON samples: {line[:120]!r}") from None
        if not samples or min(samples) <= 0:
            raise DeviceError(f"the benchmark on {self.reach.host} returned no positive samples")
        latency = LatencyStats.from_samples(samples, int(record.get("warmup", settings.warmup)),
                                            f"measured:ssh:{self.reach.host}")
        stats, note = self._energy(record.get("power"), latency.median)
        details = {k: record[k] for k in ("onnxruntime", "number", "threads") if k in record}
        return Measurement(latency=latency, device=f"{record.get('machine', 'unknown')} via {self.reach.describe()}",
                           energy=stats, energy_note=note, details={"reach": self.reach.describe(), **details})

    def _energy(self, power: Any, median_ms: float) -> tuple[EnergyStats | None, str]:
        """Turn the raw power record into EnergyStats; parsing problems become a note, not a crash,
        because the latency is still a valid measurement."""
        if not power:
            return None, f"not measurable: power method {self.power.method!r} on this target"
        if power.get("error"):
            return None, f"not measurable: {power['method']} sampling failed on the board ({power['error']})"
        try:
            method = energy.power_methods.get(str(power["method"]))
            if method.to_energy is None:
                return None, f"not measurable: power method {method.name!r}"
            return method.to_energy(power, median_ms), ""
        except (DeviceError, KeyError, ValueError, TypeError, UnknownNameError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return None, f"not measurable: power record unusable ({reason})"


"""Build, time and profile a TensorRT engine on a Jetson over SSH, with power sampled meanwhile.

Engines are not portable across GPUs or TensorRT releases, so the validated ONNX travels to the
board and the board's own trtexec builds the engine there. The board needs nothing of ours
(JetPack ships trtexec, tegrastats and nvpmodel; the Nano's Python 3.6 is never used). Steps, each
one SSH command: build (layer formats exported, no timing) -> board state -> timed run with
``tegrastats`` sampling in the background, killed right after -> separate per-layer profile run
-> read the JSON back -> remove the work folder. Every program is a template in
:class:`BoardTools`, so a test can substitute stand-ins while the parsing stays this code.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from edgeprune.artifact import Artifact
from edgeprune.backends.tensorrt import tegra, trtexec
from edgeprune.backends.tensorrt.versions import TrtRelease, release_for
from edgeprune.errors import CompileError, ConfigError, DeviceError
from edgeprune.profilers import energy
from edgeprune.profilers.base import EnergyStats, Measurement
from edgeprune.profilers.base_settings import MeasureSettings
from edgeprune.profilers.ssh import SshRunner
from edgeprune.profilers.stats import LatencyStats

if TYPE_CHECKING:
    from edgeprune.devices.base import DeviceOptions
    from edgeprune.devices.reach import Reach
    from edgeprune.targets import TargetSpec

BUILD_FAILED_EXIT = 97
"""Exit status the build step uses when trtexec fails, so a bad network is a CompileError and an
unreachable board a DeviceError."""


@dataclass(frozen=True)
class BoardTools:
    """Shell prefixes of the board programs; ``{interval_ms}`` is filled into ``tegrastats``."""

    trtexec: str = trtexec.JETPACK_TRTEXEC
    tegrastats: str = "tegrastats --interval {interval_ms}"
    nvpmodel: str = "nvpmodel -q"
    jetson_clocks: str = "sudo -n jetson_clocks --show"
    interval_ms: int = 100


@dataclass(frozen=True)
class RemoteOutput:
    """Raw text read back from the board, parsed only after the folder is cleaned up."""

    times: str
    profile: str
    layers: str
    tegrastats: str
    state: str


def onnx_file(artifact: Artifact) -> Path:
    """The ONNX the board builds from (the artifact may also carry a locally built engine)."""
    for f in artifact.files:
        if f.suffix == ".onnx":
            if not f.is_file():
                raise ConfigError(f"artifact file {f} does not exist")
            return f
    raise ConfigError(f"artifact {artifact.path.name} has no .onnx file for the board to build from")


def _logged(command: str, log: str, fail_exit: int = 1) -> str:
    """Run ``command`` with its output in ``log``; on failure print the log's tail to stderr so the
    one-line error names trtexec's own complaint."""
    q = shlex.quote(log)
    return f"{command} > {q} 2>&1 || {{ tail -n 3 {q} >&2; exit {fail_exit}; }}"


class JetsonTrtRunner:
    """Measures a TensorRT artifact on a Jetson reached by ``ssh`` (host key checked by SshRunner).

    The latency is trtexec's per-inference ``latencyMs`` (``measured:trtexec:<host>``); energy is
    the input rail's sampled power (``ssh.power``) times the median latency, in mJ/inference.
    """

    name = "tensorrt-ssh"

    def __init__(self, ssh: SshRunner, release: TrtRelease, *, tools: BoardTools = BoardTools(),
                 run: trtexec.RunSettings = trtexec.RunSettings()) -> None:
        self.ssh = ssh
        self.release = release
        self.tools = tools
        self.run = run

    @property
    def samples_power(self) -> bool:
        return self.ssh.power.method == "tegrastats"

    def measure(self, artifact: Artifact, settings: MeasureSettings) -> Measurement:
        """Copy, build, time, profile, read back; the remote folder is removed unless keep_remote."""
        onnx = onnx_file(artifact)
        qdq = bool(artifact.meta.get("qdq", False))
        trtexec.precision_flags(artifact.precision, qdq)  # refuse int8 without Q/DQ before touching the board
        digest = hashlib.sha256(onnx.read_bytes()).hexdigest()[:16]
        folder = f"{self.ssh.remote_root}/trt-{digest}-{artifact.precision}"
        files = trtexec.EngineFiles.in_dir(folder, onnx.name)
        run = replace(self.run, iterations=settings.repeats)
        self.ssh.run_remote(f"mkdir -p {shlex.quote(folder)}", what="creating the work folder")
        try:
            self.ssh.copy_to([onnx], folder)
            self._build(files, folder, artifact.precision, qdq)
            out = self._time_and_read(files, folder, run)
        finally:
            if not self.ssh.keep_remote:
                try:
                    self.ssh.run_remote(f"rm -rf {shlex.quote(folder)}", what="cleaning up")
                except DeviceError:
                    pass  # the board went away; the measurement error (if any) is the one to report
        return self._parse(out, run, artifact.precision)

    def _build(self, files: trtexec.EngineFiles, folder: str, precision: str, qdq: bool) -> None:
        args = trtexec.build_args(self.release, files, precision, qdq)
        command = _logged(trtexec.command_line(self.tools.trtexec, args), f"{folder}/build.log", BUILD_FAILED_EXIT)
        try:
            self.ssh.run_remote(command, what="building the TensorRT engine")
        except DeviceError as exc:
            if f"(exit {BUILD_FAILED_EXIT})" in str(exc):
                raise CompileError(f"trtexec could not build the engine on the board: {exc}") from None
            raise

    def _timed_command(self, files: trtexec.EngineFiles, folder: str, run: trtexec.RunSettings) -> str:
        """trtexec's timed run, with tegrastats in the background for exactly that run."""
        timed = _logged(trtexec.command_line(self.tools.trtexec, trtexec.timing_args(self.release, files, run)),
                        f"{folder}/timing.log")
        if not self.samples_power:
            return timed
        sampler = self.tools.tegrastats.format(interval_ms=self.tools.interval_ms)
        log = shlex.quote(f"{folder}/tegrastats.log")
        return (f"{sampler} > {log} 2>&1 & TP=$!; ({timed}); RC=$?; "
                f"kill $TP 2>/dev/null; wait $TP 2>/dev/null; exit $RC")

    def _state_command(self) -> str:
        """Board model, power mode and clocks in one call; missing tools are recorded, not fatal."""
        return (f"echo '== model'; (tr -d '\\0' < /proc/device-tree/model || uname -nm) 2>/dev/null; echo; "
                f"echo '== nvpmodel'; {self.tools.nvpmodel} 2>&1 || true; "
                f"echo '== clocks'; {self.tools.jetson_clocks} 2>&1 || true")

    def _time_and_read(self, files: trtexec.EngineFiles, folder: str, run: trtexec.RunSettings) -> RemoteOutput:
        state = self.ssh.run_remote(self._state_command(), what="reading the power mode")
        self.ssh.run_remote(self._timed_command(files, folder, run), what="the trtexec timed run")
        profile_cmd = trtexec.command_line(self.tools.trtexec, trtexec.profile_args(files))
        self.ssh.run_remote(_logged(profile_cmd, f"{folder}/profile.log"), what="the trtexec profile run")

        def cat(path: str, what: str) -> str:
            return self.ssh.run_remote(f"cat {shlex.quote(path)}", what=f"reading {what}")

        power = cat(f"{folder}/tegrastats.log", "the tegrastats log") if self.samples_power else ""
        return RemoteOutput(cat(files.times, "--exportTimes"), cat(files.profile, "--exportProfile"),
                            cat(files.layers, "--exportLayerInfo"), power, state)

    def _parse(self, out: RemoteOutput, run: trtexec.RunSettings, precision: str) -> Measurement:
        host = str(self.ssh.reach.host)
        warmup_ms = float(run.warmup_ms) if self.release.times_include_warmup else 0.0
        latency_ms, compute_ms = trtexec.latency_samples(out.times, warmup_ms)
        latency = LatencyStats.from_samples(latency_ms, 0, f"measured:trtexec:{host}")
        count, layers = trtexec.parse_profile(out.profile)
        formats = trtexec.parse_layer_info(out.layers)
        state = _board_state(out.state)
        stats, note = self._energy(out.tegrastats, latency.median)
        details = {
            "reach": self.ssh.reach.describe(), "tensorrt": self.release.version, "precision": precision,
            "board": state.to_json(), "gpu_compute_ms": trtexec.compute_stats(compute_ms),
            "engine_channel_multiple": trtexec.engine_channel_multiple(formats),
            "reformat_layers": trtexec.reformat_layer_count(out.layers),
            "layer_profile": {"runs": count, "layers": [
                {"name": lt.name, "average_ms": lt.average_ms, "percentage": lt.percentage} for lt in layers]},
        }
        model = _section(out.state, "model").strip() or "Jetson"
        device = f"{model} (TensorRT {self.release.version}, {state.power_mode}) via {self.ssh.reach.describe()}"
        return Measurement(latency=latency, device=device, energy=stats, energy_note=note, details=details)

    def _energy(self, lines: str, median_ms: float) -> tuple[EnergyStats | None, str]:
        """Input-rail energy; a power problem costs only the energy figure, never the latency."""
        if not self.samples_power:
            return None, f"not measurable: power method {self.ssh.power.method!r} on this target"
        rail = str(self.ssh.power.rail)
        try:
            watts = tegra.input_power_w(lines.splitlines(), rail)
        except DeviceError as exc:
            return None, f"not measurable: {exc}"
        return energy.energy_from_power(watts, median_ms, f"measured:tegrastats:{rail}"), ""


def _section(text: str, name: str) -> str:
    """The lines after ``== name`` up to the next ``== `` marker in the board-state output."""
    part = text.split(f"== {name}\n", 1)
    return part[1].split("\n== ", 1)[0] if len(part) == 2 else ""


def _board_state(text: str) -> tegra.BoardState:
    nvp, clocks = _section(text, "nvpmodel"), _section(text, "clocks")
    return tegra.BoardState(tegra.power_mode(nvp), tegra.clocks_state(clocks), nvp, clocks)


def jetson_measurer(reach: Reach, runtime: str, target: TargetSpec, options: DeviceOptions) -> JetsonTrtRunner:
    """Profiler factory in the shape ``edgeprune.devices.register_measurer("ssh", "tensorrt")``
    expects: the target's TensorRT release and power rail, the user's SSH identity and host keys."""
    release = release_for(target.compiler_target, target.name)
    ssh = SshRunner(reach, known_hosts=options.known_hosts, identity_file=options.identity_file,
                    power=target.power_measurement)
    return JetsonTrtRunner(ssh, release)

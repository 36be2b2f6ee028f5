"""Measure TVM artifacts on a board through TVM RPC, directly or through a tracker.

The board runs ``python -m tvm.exec.rpc_server`` (registered with a tracker under a key, or
listening on its own); this profiler uploads the artifact's ``.so``, loads it remotely, builds a
Relax VirtualMachine on the board and times it with ``time_evaluator`` on the board itself, so
the network is not in the figure. Over RPC ``vm["main"](x)[0]`` fails (the result is an
``RPCObjectRef``), hence the stateful API: ``set_input`` / ``invoke_stateful`` / ``get_outputs``.

Boards drop off (reboots, Wi-Fi, a tuning job that crashed the server), so every remote step is
retried on a fresh connection a bounded number of times with exponential backoff; an error that
leaves the connection healthy (a broken artifact) is not retried. :meth:`TvmRpcProfiler.measure_many`
keeps what it measured before a board was lost and returns it with the error.

Two waits in TVM's client are unbounded and are bounded here: a tracker request for a key whose
boards are all busy, and a direct connect to a server busy with another client. Both go through
the RPC wire protocol of ``tvm.rpc.base`` with socket timeouts (see :func:`_request_via_tracker`,
:func:`_server_accepts`).
"""

from __future__ import annotations

import hashlib
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from edgeprune.artifact import Artifact
from edgeprune.errors import ConfigError, DeviceError
from edgeprune.profilers.base import Measurement
from edgeprune.profilers.base_settings import MeasureSettings
from edgeprune.profilers.stats import LatencyStats
from edgeprune.devices.reach import Reach

SOURCE = "measured:tvm-rpc"
T = TypeVar("T")


class _ConnectionLost(Exception):
    """Internal: the board could not be reached or dropped; worth reconnecting and retrying."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries: ``attempts`` tries in all, sleeping ``backoff_s`` then doubling (capped)."""

    attempts: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 15.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("attempts >= 1 and non-negative backoff required")

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failed attempt."""
        return min(self.backoff_s * 2 ** (failures - 1), self.max_backoff_s)


@dataclass(frozen=True)
class BatchResult:
    """What :meth:`TvmRpcProfiler.measure_many` got: ``measurements[i]`` is for artifact ``i``;
    when the board was lost, ``error`` says why and the remaining artifacts are unmeasured."""

    measurements: list[Measurement]
    error: DeviceError | None = None

    @property
    def complete(self) -> bool:
        return self.error is None


def _one_line(exc: BaseException) -> str:
    """First non-empty line of an exception, with its type when the text is empty."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


def _recv_exact(sock: socket.socket, nbytes: int) -> bytes:
    """Read exactly ``nbytes`` or raise ConnectionError (the peer closed)."""
    data = b""
    while len(data) < nbytes:
        chunk = sock.recv(nbytes - len(data))
        if not chunk:
            raise ConnectionError("connection closed by peer")
        data += chunk
    return data


def _server_accepts(host: str, port: int, timeout_s: float) -> None:
    """Check that an RPC server answers a handshake, without starting a session.

    TVM's ``rpc.connect`` blocks forever while the server serves another client. Sending a key
    no server expects makes a free server answer ``RPC_CODE_MISMATCH`` at once and go back to
    listening; a busy one stays silent until the timeout.
    """
    from tvm.rpc import base

    key = b"client:__edgeprune_availability_probe__"
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(struct.pack("<ii", base.RPC_MAGIC, len(key)) + key)
            code = struct.unpack("<i", _recv_exact(sock, 4))[0]
    except TimeoutError:
        raise _ConnectionLost(f"RPC server {host}:{port} accepted no session within {timeout_s:g} s "
                              "(busy with another client?)") from None
    except OSError as exc:
        raise _ConnectionLost(f"RPC server {host}:{port} unreachable: {_one_line(exc)}") from None
    if code not in (base.RPC_CODE_MISMATCH, base.RPC_CODE_SUCCESS):
        raise _ConnectionLost(f"{host}:{port} is not a TVM RPC server (handshake code {code})")


def _tracker_call(sock: socket.socket, message: list) -> Any:
    """One JSON request/answer with the tracker (TVM's framing: little-endian length + JSON)."""
    from tvm.rpc import base

    base.sendjson(sock, message)
    return base.recvjson(sock)


def _open_tracker(host: str, port: int, timeout_s: float) -> socket.socket:
    """Connect and do the tracker handshake; fails fast instead of TVM's 60 s retry loop."""
    from tvm.rpc import base

    sock = socket.create_connection((host, port), timeout=timeout_s)
    sock.settimeout(timeout_s)
    sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
    if struct.unpack("<i", _recv_exact(sock, 4))[0] != base.RPC_TRACKER_MAGIC:
        sock.close()
        raise _ConnectionLost(f"{host}:{port} is not a TVM RPC tracker")
    return sock


def _registered(summary: dict, key: str) -> bool:
    """Whether any server registered under ``key`` (the tracker stores ``server:KEY``)."""
    return any(item.get("key") == f"server:{key}" for item in summary.get("server_info", []))


def _request_via_tracker(host: str, port: int, key: str, session_timeout_s: float,
                         wait_s: float, connect_timeout_s: float):
    """Ask the tracker for a board with ``key`` and connect to it, waiting at most ``wait_s``.

    Same protocol as ``rpc.connect_tracker(host, port).request(key, session_timeout=...)``, which
    waits forever while every board of that key is busy or when none is registered. Here an
    unregistered key fails at once, a busy one after ``wait_s``.
    """
    from tvm import rpc
    from tvm.rpc import base

    try:
        sock = _open_tracker(host, port, connect_timeout_s)
    except OSError as exc:
        raise _ConnectionLost(f"tracker {host}:{port} unreachable: {_one_line(exc)}") from None
    try:
        summary = _tracker_call(sock, [base.TrackerCode.SUMMARY])
        if summary[0] != base.TrackerCode.SUCCESS or not _registered(summary[1], key):
            raise _ConnectionLost(f"tracker {host}:{port} has no server registered under key {key!r}")
        sock.settimeout(wait_s)
        try:
            answer = _tracker_call(sock, [base.TrackerCode.REQUEST, key, "", 1])
        except TimeoutError:
            raise _ConnectionLost(f"no free {key!r} board on tracker {host}:{port} within {wait_s:g} s") from None
    except OSError as exc:
        raise _ConnectionLost(f"tracker {host}:{port} dropped the request: {_one_line(exc)}") from None
    finally:
        sock.close()
    if answer[0] != base.TrackerCode.SUCCESS:
        raise _ConnectionLost(f"tracker {host}:{port} refused the request: {answer!r}")
    board_host, board_port, matchkey = answer[1]
    try:
        return rpc.connect(board_host, board_port, matchkey, session_timeout=session_timeout_s)
    except (RuntimeError, OSError) as exc:
        raise _ConnectionLost(f"board {board_host}:{board_port} (key {key!r}): {_one_line(exc)}") from None


def _alive(session: Any) -> bool:
    """A cheap remote call; False when the connection is gone (used to classify an error).

    Not ``session.cpu(0).exist``: that answers True on a dead session.
    """
    if session is None:
        return False
    try:
        session.get_function("runtime.NumThreads")()
        return True
    except Exception:  # noqa: BLE001 - any failure of a trivial remote call means the link is down
        return False


def _remote_name(artifact: Artifact) -> str:
    """Content-addressed file name, so artifacts that are all ``model.so`` do not collide."""
    digest = hashlib.sha256(artifact.path.read_bytes()).hexdigest()[:16]
    return f"edgeprune-{digest}{artifact.path.suffix}"


def _outputs(vm: Any, *index: int) -> list[np.ndarray]:
    """Outputs of the last ``invoke_stateful("main")`` as local numpy arrays, tuples flattened.

    Not ``vm.get_outputs``: its recursive inner function forms a reference cycle that keeps the
    RPC session (and so the single-client server) open until the garbage collector runs.
    """
    arity = vm["get_output_arity"]("main", *index)
    if arity == -1:
        return [vm["get_output"]("main", *index).numpy()]
    return [a for i in range(arity) for a in _outputs(vm, *index, i)]


class _Link:
    """The current RPC session of one profiler call; reopened after a loss, closed at the end."""

    def __init__(self, profiler: "TvmRpcProfiler") -> None:
        self.profiler = profiler
        self.session: Any = None

    def run(self, what: str, step: Callable[[Any], T]) -> T:
        """Run ``step(session)``, reconnecting and retrying when the connection is lost.

        An error after which the session still answers is the artifact's or the board's
        software's fault, not the link's: it becomes a :class:`DeviceError` at once.
        """
        policy = self.profiler.retry
        last = ""
        for attempt in range(1, policy.attempts + 1):
            try:
                if self.session is None:
                    self.session = self.profiler._connect()
                return step(self.session)
            except _ConnectionLost as exc:
                last = str(exc)
            except (RuntimeError, OSError, ValueError) as exc:  # TVM's errors subclass these
                if _alive(self.session):
                    raise DeviceError(f"{what} failed on {self.profiler.label}: {_one_line(exc)}") from None
                last = f"connection lost: {_one_line(exc)}"
            self.session = None
            if attempt < policy.attempts:
                time.sleep(policy.delay(attempt))
        raise DeviceError(f"{what} on {self.profiler.label} failed after {policy.attempts} attempts: {last}")


class TvmRpcProfiler:
    """Times TVM ``.so`` artifacts on a remote board; source label ``measured:tvm-rpc``.

    ``reach`` is an ``rpc`` :class:`~edgeprune.targets.Reach` (from ``--device``): with a key it
    goes through a tracker, without one straight to a server. ``device`` is the TVM device kind
    on the board (``cpu``, ``cuda``, ...). ``on_measured(i, measurement)`` is called after each
    artifact of :meth:`measure_many`, for progress output.
    """

    name = "tvm-rpc"

    def __init__(self, reach: Reach, *, device: str = "cpu", session_timeout_s: float = 600.0,
                 connect_timeout_s: float = 10.0, request_wait_s: float = 60.0,
                 retry: RetryPolicy = RetryPolicy(),
                 on_measured: Callable[[int, Measurement], None] | None = None) -> None:
        if reach.mode != "rpc" or not reach.host or reach.port is None:
            raise ConfigError(f"the TVM RPC profiler needs --device rpc://HOST:PORT[/KEY], got {reach.describe()}")
        self.reach = reach
        self.device = device
        self.session_timeout_s = session_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.request_wait_s = request_wait_s
        self.retry = retry
        self.on_measured = on_measured

    @property
    def label(self) -> str:
        return self.reach.describe()

    def _connect(self) -> Any:
        """A fresh RPC session, through the tracker or straight to the server."""
        from tvm import rpc

        host, port = self.reach.host, int(self.reach.port)  # validated in __init__
        if self.reach.is_tracker:
            return _request_via_tracker(host, port, str(self.reach.key), self.session_timeout_s,
                                        self.request_wait_s, self.connect_timeout_s)
        _server_accepts(host, port, self.connect_timeout_s)
        try:
            return rpc.connect(host, port, session_timeout=self.session_timeout_s)
        except (RuntimeError, OSError) as exc:
            raise _ConnectionLost(f"RPC server {host}:{port}: {_one_line(exc)}") from None

    def _load(self, session: Any, artifact: Artifact) -> tuple[Any, Any]:
        """Upload the ``.so`` (content-addressed), load it, and build a VM on the board."""
        from tvm import relax

        name = _remote_name(artifact)
        session.upload(str(artifact.path), target=name)
        dev = session.device(self.device, 0)
        return relax.VirtualMachine(session.load_module(name), dev), dev

    def _time(self, session: Any, artifact: Artifact, settings: MeasureSettings, x: np.ndarray) -> Measurement:
        """One artifact, timed on the board by ``time_evaluator`` over ``invoke_stateful``."""
        import tvm

        vm, dev = self._load(session, artifact)
        if settings.threads:
            session.get_function("runtime.config_threadpool")(1, settings.threads)
        vm.set_input("main", tvm.runtime.tensor(x, dev))
        if settings.warmup:
            vm.time_evaluator("invoke_stateful", dev, number=1, repeat=settings.warmup)("main")
        timer = vm.time_evaluator("invoke_stateful", dev, number=1, repeat=settings.repeats,
                                  min_repeat_ms=max(0, int(round(settings.min_repeat_ms))))
        samples_ms = [float(s) * 1e3 for s in timer("main").results]
        board_threads = int(session.get_function("runtime.NumThreads")())
        return Measurement(
            latency=LatencyStats.from_samples(samples_ms, settings.warmup, SOURCE),
            device=f"{artifact.target} via {self.label} ({self.device})",
            energy_note="not measured: the TVM RPC path samples no power rails",
            details={"reach": self.label, "remote_device": self.device,
                     "threads": board_threads},
        )

    def _check(self, artifact: Artifact) -> None:
        if artifact.path.suffix not in (".so", ".tar") or not artifact.path.is_file():
            raise ConfigError(f"the TVM RPC profiler needs a TVM library (.so/.tar), got {artifact.path}")

    def measure_many(self, artifacts: Sequence[Artifact], settings: MeasureSettings) -> BatchResult:
        """Measure several artifacts over one connection; on a lost board, keep what was done.

        Returns every measurement taken before the failure plus the one-line :class:`DeviceError`;
        configuration mistakes (a non-TVM artifact) still raise, before anything is sent.
        """
        for artifact in artifacts:
            self._check(artifact)
        link = _Link(self)
        done: list[Measurement] = []
        try:
            for i, artifact in enumerate(artifacts):
                x = np.random.default_rng(0).random(artifact.input_shape).astype(artifact.input_dtype)
                measurement = link.run(f"measuring {artifact.path.name}",
                                       lambda s, a=artifact, x=x: self._time(s, a, settings, x))
                done.append(measurement)
                if self.on_measured is not None:
                    self.on_measured(i, measurement)
        except DeviceError as exc:
            return BatchResult(done, exc)
        finally:
            link.session = None
        return BatchResult(done)

    def measure(self, artifact: Artifact, settings: MeasureSettings) -> Measurement:
        """Profiler protocol: one artifact; a lost board is a :class:`DeviceError`."""
        result = self.measure_many([artifact], settings)
        if result.error is not None:
            raise result.error
        return result.measurements[0]

    def session(self, artifact: Artifact) -> Callable[[np.ndarray], np.ndarray]:
        """Load the artifact on the board once and return a callable for many inputs (validation
        of a whole data set); a lost link is retried like :meth:`measure`."""
        import tvm

        self._check(artifact)
        link = _Link(self)
        loaded: dict[str, Any] = {}

        def call(session: Any, x: np.ndarray) -> np.ndarray:
            if loaded.get("session") is not session:
                loaded["session"] = session
                loaded["vm"], loaded["dev"] = self._load(session, artifact)
            vm, dev = loaded["vm"], loaded["dev"]
            vm.set_input("main", tvm.runtime.tensor(np.ascontiguousarray(x, dtype=np.float32), dev))
            vm.invoke_stateful("main")
            return _outputs(vm)[0]

        return lambda x: link.run(f"running {artifact.path.name}", lambda session: call(session, x))

    def run(self, artifact: Artifact, inputs: np.ndarray) -> list[np.ndarray]:
        """Run the artifact once on the board and return its outputs (to validate them)."""
        import tvm

        self._check(artifact)

        def step(session: Any) -> list[np.ndarray]:
            vm, dev = self._load(session, artifact)
            vm.set_input("main", tvm.runtime.tensor(np.ascontiguousarray(inputs), dev))
            vm.invoke_stateful("main")
            return _outputs(vm)

        return _Link(self).run(f"running {artifact.path.name}", step)

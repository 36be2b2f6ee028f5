"""Real services on loopback for tests: TVM RPC tracker/servers (each in its own session, so the
whole process group, workers included, can be killed)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    """A TVM exec module in a new session, so its process group (workers included) can be killed."""
    with log.open("w") as sink:
        return subprocess.Popen([sys.executable, "-m", *args], stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early: {log.read_text()[-500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} not listening after {timeout_s} s: {log.read_text()[-500:]}")


def _wait_registered(tracker_port: int, key: str, timeout_s: float = 30.0) -> None:
    """The server listens before it registers with the tracker; wait for the registration."""
    from tvm import rpc

    tracker = rpc.connect_tracker("127.0.0.1", tracker_port)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(s["key"] == f"server:{key}" for s in tracker.summary()["server_info"]):
            return
        time.sleep(0.2)
    raise RuntimeError(f"no server registered under {key!r}")

"""A private sshd on 127.0.0.1 for the SSH tests (ONNX Runtime runner, TensorRT board flow): its
own host key, key-only login as the current user, host key checked by the client; a second
known_hosts file pins an impostor key (for the "wrong host key is refused" test)."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.services import _free_port

SSHD = Path("/usr/sbin/sshd")


@dataclass(frozen=True)
class SshHost:
    port: int
    user: str
    client_key: Path
    known_hosts: Path
    other_known_hosts: Path  # pins a different key: the client must refuse the real host


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True,
                   stdin=subprocess.DEVNULL)
    return path.with_suffix(".pub").read_text().strip()


def _config(root: Path, port: int) -> Path:
    config = root / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {root / 'host_key'}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PubkeyAuthentication yes", "UsePAM no", "StrictModes no",
        "PermitRootLogin prohibit-password", "Subsystem sftp internal-sftp",
        f"PidFile {root / 'sshd.pid'}", "LogLevel INFO", "",
    ]))
    return config


def _wait_listening(proc: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {log.read_text()[-400:] if log.exists() else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("sshd did not listen within 15 s") from None
            time.sleep(0.05)


@contextmanager
def loopback_sshd(root: Path) -> Iterator[SshHost]:
    """Start sshd in its own session; stop it (by its own pid) on exit."""
    host_pub = _keygen(root / "host_key")
    (root / "authorized_keys").write_text(_keygen(root / "client_key") + "\n")
    port = _free_port()
    config = _config(root, port)
    known = root / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {' '.join(host_pub.split()[:2])}\n")
    other = root / "other_known_hosts"
    other.write_text(f"[127.0.0.1]:{port} {' '.join(_keygen(root / 'impostor_key').split()[:2])}\n")
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation folder
    log = root / "sshd.log"
    proc = subprocess.Popen([str(SSHD), "-D", "-f", str(config), "-E", str(log)], start_new_session=True,
                            stdin=subprocess.DEVNULL)
    try:
        _wait_listening(proc, port, log)
        yield SshHost(port, pwd.getpwuid(os.getuid()).pw_name, root / "client_key", known, other)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)

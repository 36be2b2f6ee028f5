"""What a device scheme is, and the optional capabilities a profiler may have.

Capabilities are explicit protocols (checked with ``isinstance``), not attribute probing: a
profiler that *estimates* from the model instead of timing the artifact says so by implementing
:class:`Estimator`; one that can *run* the artifact on the board (for validation there)
implements :class:`RemoteSession`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable
from urllib.parse import urlsplit

import numpy as np

from edgeprune.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgeprune.artifact import Artifact
    from edgeprune.devices.reach import Reach
    from edgeprune.profilers.base import Measurement, Profiler
    from edgeprune.targets import TargetSpec


@dataclass(frozen=True)
class DeviceOptions:
    """How to talk to a board: SSH identity and pinned host keys, the board's Python."""

    known_hosts: Path | None = None
    identity_file: Path | None = None
    python: str = "python3"


class DeviceScheme(Protocol):
    """One way to reach a board. ``forms`` documents the ``--device`` spelling; ``user_facing``
    is False for internal modes (``none``: no board, estimates)."""

    name: str
    forms: str
    user_facing: bool
    remote: bool  # reached over the network: needs a host

    def parse(self, text: str) -> "Reach": ...

    def check(self, reach: "Reach") -> None:
        """Raise ``ValueError`` for a combination of fields this scheme cannot mean."""

    def describe(self, reach: "Reach") -> str: ...

    def probe_port(self, reach: "Reach") -> int | None:
        """The TCP port ``edgeprune targets`` probes for reachability (``None``: nothing to probe)."""


ProfilerFactory = Callable[["Reach", str, "TargetSpec", DeviceOptions], "Profiler"]


@runtime_checkable
class Estimator(Protocol):
    """A profiler that computes a figure from the model (labelled ``estimate:...``) instead of
    timing the compiled artifact."""

    def estimate_model(self, model: "nn.Module", example: "torch.Tensor", precision: str | None = None) -> "Measurement": ...


@runtime_checkable
class RemoteSession(Protocol):
    """A profiler that can run the artifact on the board, so validation happens there."""

    def session(self, artifact: "Artifact") -> Callable[[np.ndarray], np.ndarray]: ...


def host_port(text: str, default_port: int | None, forms: str) -> tuple[str, int | None]:
    """Host and port of a ``scheme://`` string; a bad port is a ConfigError, not a ValueError."""
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"--device {text!r}: the port must be a number in 1..65535") from None
    if not parts.hostname:
        raise ConfigError(f"--device {text!r} names no host; use {forms}")
    return parts.hostname, port if port is not None else default_port


def bracket(host: str) -> str:
    """IPv6 literals need brackets in a URL."""
    return f"[{host}]" if ":" in host else host

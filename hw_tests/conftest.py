"""Real boards, configured by environment variables; every test skips with the variable it needs.

EDGEPRUNE_RPC_TRACKER   host:port of a TVM RPC tracker          (e.g. 192.168.1.10:9190)
EDGEPRUNE_RPC_KEY       device key the board's rpc_server registered (e.g. rasp4b)
EDGEPRUNE_SSH           user@host[:port] of a board with python3, numpy and onnxruntime
EDGEPRUNE_SSH_KNOWN_HOSTS  known_hosts file holding the board's host key (checking stays on)
EDGEPRUNE_SSH_IDENTITY  optional private key for the board
EDGEPRUNE_SSH_PYTHON    optional interpreter on the board (default python3)
EDGEPRUNE_TARGET        target name for compiler flags and power sampling (default raspberry-pi-4)

Run: ``pytest hw_tests -m hardware`` (not part of the default ``tests/`` run).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgeprune.devices import Reach, parse_device
from edgeprune.targets import TargetSpec, get_target


def _env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        pytest.skip(f"{name} is not set (see hw_tests/conftest.py)")
    return value


@pytest.fixture(scope="session")
def board_target() -> TargetSpec:
    return get_target(os.environ.get("EDGEPRUNE_TARGET", "raspberry-pi-4"))


@pytest.fixture(scope="session")
def rpc_reach() -> Reach:
    return parse_device(f"rpc://{_env('EDGEPRUNE_RPC_TRACKER')}/{_env('EDGEPRUNE_RPC_KEY')}")


@pytest.fixture(scope="session")
def ssh_reach() -> Reach:
    return parse_device(f"ssh://{_env('EDGEPRUNE_SSH')}")


@pytest.fixture(scope="session")
def ssh_known_hosts() -> Path:
    path = Path(_env("EDGEPRUNE_SSH_KNOWN_HOSTS"))
    if not path.is_file():
        pytest.skip(f"EDGEPRUNE_SSH_KNOWN_HOSTS={path} does not exist")
    return path

"""The ``--device`` schemes: parsing, one-line errors, resolving a target's reach."""

from __future__ import annotations

import pytest

from edgeprune.devices import Reach, parse_device, resolve_reach, runtimes_on
from edgeprune.errors import ConfigError
from edgeprune.targets import get_target


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("local", Reach(mode="local")),
        ("rpc://10.0.0.5:9090", Reach(mode="rpc", host="10.0.0.5", port=9090)),
        ("rpc://tracker.lab:9190/rasp4b", Reach(mode="rpc", host="tracker.lab", port=9190, key="rasp4b")),
        ("rpc://[::1]:9190/k", Reach(mode="rpc", host="::1", port=9190, key="k")),
        ("ssh://pi@raspberrypi.local", Reach(mode="ssh", host="raspberrypi.local", port=22, user="pi")),
        ("ssh://ubuntu@10.0.0.7:2222", Reach(mode="ssh", host="10.0.0.7", port=2222, user="ubuntu")),
    ],
)
def test_parse_device(text: str, expected: Reach) -> None:
    reach = parse_device(text)
    assert reach == expected
    assert parse_device(reach.describe()) == reach  # describe() is the --device spelling


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "not understood"),
        ("board", "not understood"),
        ("tcp://h:1", "not understood"),
        ("rpc://h", "needs a port"),
        ("rpc://h:99999/k", "port must be a number"),
        ("rpc://h:abc", "port must be a number"),
        ("rpc://h:9190/a/b", "one path segment"),
        ("rpc://:9190/k", "names no host"),
        ("ssh://board", "needs a user"),
        ("ssh://pi:secret@board", "no password"),
        ("ssh://pi@board/path", "takes no path"),
    ],
)
def test_parse_device_errors_are_one_line(text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        parse_device(text)
    assert "\n" not in str(info.value)


def test_resolve_reach() -> None:
    pi = get_target("raspberry-pi-4")
    with pytest.raises(ConfigError, match="pass --device rpc://"):
        resolve_reach(pi, None)
    assert resolve_reach(pi, "rpc://t:9190/rasp4b").key == "rasp4b"
    assert resolve_reach(get_target("host"), None).mode == "local"


def test_no_board_resolves_to_estimates() -> None:
    assert resolve_reach(get_target("jetson-nano"), None, offline_ok=True).mode == "none"


def test_device_scheme_decides_runtimes() -> None:
    """rpc:// can only mean TVM and ssh:// runs ONNX models: read off the measurer registry."""
    both = ["onnxruntime", "tvm"]
    assert runtimes_on(parse_device("rpc://h:9190/k"), both) == ["tvm"]
    assert runtimes_on(parse_device("ssh://pi@h"), both) == ["onnxruntime"]
    assert runtimes_on(parse_device("local"), both) == both

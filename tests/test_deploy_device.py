"""Board-in-the-loop through ``deploy``: a real TVM RPC server on 127.0.0.1 stands in for a board.

The artifact is uploaded to the server, validated there (outputs and top-1 computed on the
"board") and timed there; the manifest says ``measured:tvm-rpc``.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.services import _free_port, _kill, _start, _wait_port
from tests.test_cli import run_cli

pytest.importorskip("cloudpickle", reason="the TVM RPC server needs cloudpickle")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rpc_server(tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("rpc") / "server.log"
    proc = _start(["tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port), "--port-end",
                   str(port + 1)], log)
    try:
        _wait_port(port, proc, log)
        yield port
    finally:
        _kill(proc)


def test_deploy_measures_and_validates_on_the_rpc_device(rpc_server, cache_dir, tmp_path):
    out = tmp_path / "o"
    proc = run_cli("deploy", "--model", "tests.nets:tiny_demo", "--tune-trials", "0",
                   "--device", f"rpc://127.0.0.1:{rpc_server}", "--epochs", "0.1", "--step-epochs", "0.1",
                   "--latency-budget", "0.95x", "--max-steps", "4", "--out", str(out), cache=cache_dir, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "manifest.json").read_text())
    assert m["runtime"] == "tvm"
    assert m["baseline"]["latency_ms"]["source"] == "measured:tvm-rpc"
    assert m["result"]["latency_ms"]["source"] == "measured:tvm-rpc"
    assert f"127.0.0.1:{rpc_server}" in m["device"]
    assert m["runtimes"]["tvm"]["result"]["validation"]["samples"] == m["data"]["val_samples"]


def test_a_device_decides_what_it_can_run(tmp_path, cache_dir):
    """rpc:// can only mean TVM (no --runtime needed above); asking it for ONNX Runtime is a clear error."""
    proc = run_cli("deploy", "--model", "tests.nets:tiny_demo", "--runtime", "onnxruntime",
                   "--device", "rpc://127.0.0.1:9", "--out", str(tmp_path / "o"), cache=cache_dir)
    assert proc.returncode == 2 and "cannot run onnxruntime artifacts; it runs: tvm" in proc.stderr


def test_unreachable_board_is_a_device_error(tmp_path, cache_dir):
    port = _free_port()
    proc = run_cli("deploy", "--model", "tests.nets:tiny_demo", "--runtime", "tvm", "--tune-trials", "0",
                   "--device", f"rpc://127.0.0.1:{port}", "--out", str(tmp_path / "o"), cache=cache_dir, timeout=600)
    assert proc.returncode == 10, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "o" / "manifest.json").exists()


@pytest.mark.skipif(not (shutil.which("qemu-aarch64") and shutil.which("aarch64-linux-gnu-g++")),
                    reason="needs qemu-user and g++-aarch64-linux-gnu (Debian); .ci/run installs them")
def test_board_target_without_a_board_estimates_and_cross_checks_under_qemu(cache_dir, tmp_path):
    out = tmp_path / "o"
    proc = run_cli("deploy", "--target", "raspberry-pi-4", "--model", "tests.nets:tiny_demo",
                   "--epochs", "0.1", "--step-epochs", "0.1", "--latency-budget", "0.8x",
                   "--out", str(out), cache=cache_dir, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "manifest.json").read_text())
    assert m["baseline"]["latency_ms"]["source"] == "estimate:roofline"
    assert m["result"]["latency_ms"]["source"] == "estimate:roofline"
    assert m["budget"]["verdict"] == "estimated" and m["budget"]["measured_on"] is None
    assert m["runtimes"]["tvm"]["result"]["artifact_meta"]["tuning_skipped"]  # foreign arch: not tuned, said why
    assert "ESTIMATED (no board)" in proc.stdout and "(n=" not in proc.stderr  # never printed as if measured
    validation = m["runtimes"]["tvm"]["result"]["validation"]
    assert validation["samples"] == 8 and "qemu" in validation["accuracy_source"]
    assert (out / "artifact" / "model.so").read_bytes()[18] == 183  # e_machine: aarch64
    assert "not measured" in (out / "report.md").read_text()

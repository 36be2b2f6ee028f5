"""Every user error: one line on stderr, its own exit code, no traceback, nothing half-written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cache: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, EDGEPRUNE_CACHE=str(cache), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "edgeprune", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=timeout)


def assert_clean_error(proc: subprocess.CompletedProcess, code: int, fragment: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and fragment in lines[0], proc.stderr


FAST = ("--runtime", "onnxruntime", "--epochs", "0", "--step-epochs", "0", "--max-steps", "2")


def test_unknown_target(tmp_path):
    proc = run_cli("deploy", "--target", "toaster", "--out", str(tmp_path / "o"), cache=tmp_path)
    assert_clean_error(proc, 2, "unknown target 'toaster'; known: ")


def test_model_spec_that_does_not_resolve(tmp_path):
    proc = run_cli("deploy", "--model", "torchvision:no_such_net", "--out", str(tmp_path / "o"), cache=tmp_path)
    assert_clean_error(proc, 3, "no_such_net")


def test_corrupt_and_pickled_checkpoints(tmp_path):
    corrupt = tmp_path / "c.pt"
    corrupt.write_bytes(b"garbage")
    proc = run_cli("deploy", "--model", "tests.nets:tiny_demo", "--weights", str(corrupt), *FAST,
                   "--out", str(tmp_path / "o"), cache=tmp_path)
    assert_clean_error(proc, 3, "corrupt")
    pickled = tmp_path / "p.pt"
    torch.save({"state_dict": {}, "opt": torch.optim.SGD}, pickled)
    proc = run_cli("deploy", "--model", "tests.nets:tiny_demo", "--weights", str(pickled), *FAST,
                   "--out", str(tmp_path / "o"), cache=tmp_path)
    assert_clean_error(proc, 3, "--trust-checkpoint")


def test_untraceable_model_names_the_reason(tmp_path):
    proc = run_cli("deploy", "--model", "tests.nets:untraceable", *FAST, "--out", str(tmp_path / "o"), cache=tmp_path)
    assert_clean_error(proc, 4, "torch.export cannot trace")


def test_missing_data(tmp_path):
    proc = run_cli("deploy", "--model", "tests.nets:tiny_demo", "--data", f"imagefolder:{tmp_path / 'none'}",
                   *FAST, "--out", str(tmp_path / "o"), cache=tmp_path)
    assert_clean_error(proc, 5, "does not exist")


def test_output_dir_not_writable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli("deploy", "--model", "tests.nets:tiny_demo", *FAST, "--out", str(blocker / "o"), cache=tmp_path)
    assert_clean_error(proc, 8, "not writable")


def test_impossible_budget_states_best_figure_and_writes_no_artifact(tmp_path):
    out = tmp_path / "o"
    proc = run_cli("deploy", "--model", "tests.nets:tiny_demo", *FAST, "--latency-budget", "1us",
                   "--out", str(out), cache=tmp_path)
    assert_clean_error(proc, 6, "cannot be met")
    assert "best reached" in proc.stderr and "MMACs" in proc.stderr
    assert not (out / "manifest.json").exists() and not (out / "artifact").exists()
    assert (out / ".edgeprune-state" / "plan.json").is_file()  # search progress is kept


@pytest.mark.parametrize("args,fragment", [(("--latency-budget", "soon"), "latency budget"),
                                           (("--criterion", "astrology"), "unknown criterion")])
def test_bad_flags(tmp_path, args, fragment):
    proc = run_cli("deploy", *args, "--out", str(tmp_path / "o"), cache=tmp_path)
    assert_clean_error(proc, 2, fragment)


def test_criteria_list_names_each_paper(tmp_path):
    proc = run_cli("criteria", "list", cache=tmp_path)
    assert proc.returncode == 0
    rows = dict(line.split("\t", 1) for line in proc.stdout.splitlines())
    assert "Li et al." in rows["l1"] and "Molchanov" in rows["taylor"]


def test_targets_lists_every_board_with_its_state(tmp_path):
    proc = run_cli("targets", cache=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()}
    assert {"host", "raspberry-pi-4", "jetson-nano", "pynq-z2"} <= set(rows)
    assert "runtimes ready: onnxruntime, tvm" in rows["host"] and "board: this machine" in rows["host"]
    assert "tensorrt" in rows["jetson-nano"] and "missing: finn" in rows["pynq-z2"]
    assert "not configured" in rows["raspberry-pi-4"]


@pytest.mark.parametrize("command", [["--help"], ["deploy", "--help"], ["prune", "--help"], ["targets", "--help"],
                                     ["criteria", "list", "--help"], ["criteria", "compare", "--help"],
                                     ["profile", "--help"], ["sparsify", "--help"]])
def test_help_renders(command, tmp_path):
    proc = run_cli(*command, cache=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout


def _invoke(*args: str):
    """In-process CLI call (typer's runner): fast enough to try every registered name."""
    from typer.testing import CliRunner

    from edgeprune.cli import app

    return CliRunner().invoke(app, list(args))


def _accepted(*args: str) -> bool:
    """The options parsed and validated: the run got as far as resolving the (unknown) target."""
    result = _invoke("deploy", *args, "--target", "no-such-board")
    return result.exit_code == 2 and "unknown target 'no-such-board'" in result.output


def test_every_registered_runtime_strategy_criterion_and_device_is_reachable_from_the_cli():
    """Registries are open all the way to the CLI: nothing registered is refused by a hard-coded list."""
    from edgeprune.backends import runtime_names
    from edgeprune.criteria import criteria, load_builtin
    from edgeprune.devices import get_scheme, schemes
    from edgeprune.search.strategies import strategies

    load_builtin()
    for runtime in runtime_names():
        assert _accepted("--runtime", runtime), runtime
    for strategy in strategies.names():
        assert _accepted("--strategy", strategy), strategy
    for criterion in criteria.names():
        assert _accepted("--criterion", criterion), criterion
    examples = {"local": "local", "rpc": "rpc://127.0.0.1:9190/key", "ssh": "ssh://pi@127.0.0.1"}
    for name in schemes.names():
        if get_scheme(name).user_facing:
            assert _accepted("--device", examples[name]), name
    refused = _invoke("deploy", "--runtime", "tensorflow")
    assert refused.exit_code == 2 and "known: " in refused.output


@pytest.mark.parametrize("command", [["deploy"], ["prune", "--plan", "p.json"], ["profile"],
                                     ["criteria", "compare", "--out", "o"], ["sparsify", "--method", "snip",
                                                                             "--density", "0.5", "--out", "o"]])
def test_every_model_command_takes_the_same_model_and_data_options(command):
    """One definition: --input-shape, --val-data, --resize, --mean, --std everywhere a model is taken."""
    result = _invoke(*command, "--model", "demo", "--input-shape", "1x3x28", "--data", "digits")
    assert result.exit_code == 2 and "input shape '1x3x28'" in result.output, result.output


def test_a_precision_the_target_lacks_names_those_it_has(tmp_path):
    """Jetson Nano has no INT8 (Maxwell): the error lists the precisions its YAML declares."""
    result = _invoke("deploy", "--target", "jetson-nano", "--precision", "int8", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert "has no precision 'int8'; it has fp32, fp16" in result.output
    assert not (tmp_path / "o" / "manifest.json").exists()

"""``edgeprune profile`` through the CLI: writes a table for the shape it was given, refuses a bad shape."""

from __future__ import annotations

from typer.testing import CliRunner

from edgeprune.cli import app
from edgeprune.latency.table import load_profile


def test_cli_profile_writes_the_table(tmp_path) -> None:
    out = tmp_path / "tiny.json"
    args = ["profile", "--model", "tests.nets:tiny_demo", "--input-shape", "1x1x32x32", "--grid", "2",
            "--calibration", "0", "--rounds", "1", "--threads", "1", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "estimate:profile:" in result.output and out.is_file()
    assert load_profile(out).input_shape == (1, 1, 32, 32)
    bad = CliRunner().invoke(app, ["profile", "--model", "tests.nets:tiny_demo", "--input-shape", "1x1x32",
                                   "--out", str(out)])
    assert bad.exit_code == 2 and "input shape" in bad.output


def test_cli_profile_takes_the_input_shape_from_the_data(tmp_path) -> None:
    """No --input-shape: one sample of the data decides it (digits: 1x1x32x32), as in deploy."""
    out = tmp_path / "auto.json"
    args = ["profile", "--model", "tests.nets:tiny_demo", "--grid", "2", "--calibration", "0", "--rounds", "1",
            "--threads", "1", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert load_profile(out).input_shape == (1, 1, 32, 32)

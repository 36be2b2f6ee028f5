"""Target YAMLs, their schema's one-line errors, and the ``--device`` parser."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from edgeprune.errors import ConfigError, UnknownNameError
from edgeprune.targets import available_targets, get_target, load_target_file

BOARDS = ["raspberry-pi-4", "raspberry-pi-5", "jetson-nano", "jetson-xavier-nx", "jetson-orin-nano",
          "pynq-z2", "zcu104", "ultra96", "kv260"]


@pytest.mark.parametrize("name", sorted(available_targets()))
def test_every_shipped_yaml_loads_and_cites_sources(name: str) -> None:
    spec = get_target(name)
    assert spec.name == name
    assert spec.sources, "every target cites where its facts come from"
    assert (spec.fpga is not None) == (spec.kind == "fpga")


def test_all_boards_ship() -> None:
    assert set(BOARDS) <= set(available_targets())


def test_board_facts() -> None:
    assert get_target("jetson-nano").precisions == ["fp32", "fp16"]
    assert get_target("jetson-nano").power_measurement.rail == "POM_5V_IN"
    assert get_target("jetson-xavier-nx").power_measurement.rail == "VDD_IN"
    z2 = get_target("pynq-z2").fpga
    assert (z2.part, z2.lut, z2.ff, z2.bram18, z2.dsp) == ("xc7z020clg400-1", 53200, 106400, 280, 220)
    zcu = get_target("zcu104").fpga
    assert (zcu.bram18, zcu.uram, zcu.dsp) == (624, 96, 1728)
    pi4 = get_target("raspberry-pi-4")
    assert pi4.compiler_target == {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72",
                                   "mattr": ["+neon"], "num-cores": 4}
    assert pi4.peak_gflops("fp32") > 0 and pi4.memory_bandwidth_gbs() > 0
    with pytest.raises(ConfigError, match="no peak compute for fp16"):
        pi4.peak_gflops("fp16")


@pytest.mark.skipif(importlib.util.find_spec("tvm") is None, reason="apache-tvm is not installed")
@pytest.mark.parametrize("name", ["raspberry-pi-4", "raspberry-pi-5"])
def test_arm_compiler_targets_are_valid_tvm_targets(name: str) -> None:
    import tvm

    exported = tvm.target.Target(get_target(name).compiler_target).export()
    assert exported["feature.is_aarch64"] and exported["feature.has_asimd"]
    assert exported["feature.has_dotprod"] == (name == "raspberry-pi-5")


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _base() -> dict:
    return yaml.safe_load(available_targets()["raspberry-pi-4"].read_text())


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda r: r.update(precisons=["fp32"]), "precisons: Extra inputs are not permitted"),
        (lambda r: r["compute"].update(peak_gflop={"fp32": 1.0}), "compute.peak_gflop: Extra inputs"),
        (lambda r: r["reach"].update(prot=22), "reach.prot: Extra inputs"),
        (lambda r: r["compute"]["peak_gflops"].update(fp16=10.0), "fp16 not in precisions"),
        (lambda r: r.update(kind="fpga"), "needs an 'fpga' section"),
        (lambda r: r.update(power_measurement={"method": "tegrastats"}), "needs a rail name"),
        (lambda r: r.update(power_measurement={"method": "wattmeter"}), "unknown power method 'wattmeter'; known: none"),
        (lambda r: r.update(precisions=["fp64"]), "unknown precision 'fp64'"),
        (lambda r: r["compute"].update(memory_bandwidth_gbs=-1), "compute.memory_bandwidth_gbs"),
    ],
)
def test_bad_yaml_is_a_one_line_config_error(tmp_path: Path, edit, expected: str) -> None:
    raw = _base()
    edit(raw)
    with pytest.raises(ConfigError) as info:
        load_target_file(_write(tmp_path, raw))
    message = str(info.value)
    assert "\n" not in message
    assert expected in message and "board.yaml" in message


def test_user_yaml_by_path_and_unknown_name(tmp_path: Path) -> None:
    raw = _base()
    raw["name"] = "my-pi"
    assert get_target(str(_write(tmp_path, raw))).name == "my-pi"
    with pytest.raises(UnknownNameError, match="raspberry-pi-4"):
        get_target("raspbery-pi-4")

"""Power-sample parsers on lines in the formats the devices really print."""

from __future__ import annotations

import pytest

from edgeprune.errors import DeviceError
from edgeprune.profilers import energy

# Jetson Nano, JetPack 4.6: bare milliwatt numbers.
NANO = ("RAM 2037/3956MB (lfb 55x4MB) SWAP 0/1978MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
        "CPU [12%@1479,4%@1479,6%@1479,3%@1479] EMC_FREQ 3%@1600 GR3D_FREQ 0%@921 APE 25 "
        "PLL@25.5C CPU@27.5C PMIC@100C GPU@25C AO@33C thermal@26.5C "
        "POM_5V_IN 2345/2400 POM_5V_GPU 79/79 POM_5V_CPU 474/520")
# Xavier NX, JetPack 5: timestamp prefix, mW units.
XAVIER = ("08-23-2022 10:18:51 RAM 2347/6854MB (lfb 785x4MB) SWAP 0/3427MB (cached 0MB) "
          "CPU [2%@1190,1%@1190,0%@1190,2%@1190,off,off] EMC_FREQ 0%@1600 GR3D_FREQ 0%@114 "
          "VIC_FREQ 0%@115 APE 150 AUX@32C CPU@33.5C thermal@32.75C AO@33C GPU@32C PMIC@50C "
          "VDD_IN 3669mW/3669mW VDD_CPU_GPU_CV 530mW/530mW VDD_SOC 1141mW/1141mW")
# Orin Nano, JetPack 6.
ORIN = ("11-27-2026 10:00:00 RAM 2080/7620MB (lfb 1x4MB) SWAP 0/3810MB (cached 0MB) "
        "CPU [1%@729,0%@729,0%@729,0%@729,0%@729,0%@729] GR3D_FREQ 0% cpu@47.5C soc2@46.531C "
        "soc0@47.437C gpu@47.156C tj@47.5C soc1@46.625C VDD_IN 5000mW/4800mW "
        "VDD_CPU_GPU_CV 554mW/554mW VDD_SOC 1425mW/1425mW")


def test_tegrastats_old_format() -> None:
    rails = energy.parse_tegrastats_line(NANO)
    assert rails == {"POM_5V_IN": (2345.0, 2400.0), "POM_5V_GPU": (79.0, 79.0), "POM_5V_CPU": (474.0, 520.0)}


def test_tegrastats_new_format_ignores_memory_fields() -> None:
    assert energy.parse_tegrastats_line(XAVIER) == {
        "VDD_IN": (3669.0, 3669.0), "VDD_CPU_GPU_CV": (530.0, 530.0), "VDD_SOC": (1141.0, 1141.0)}
    assert energy.parse_tegrastats_line(ORIN)["VDD_IN"] == (5000.0, 4800.0)
    assert energy.parse_tegrastats_line("RAM 1465/3964MB SWAP 0/1982MB") == {}


def test_tegrastats_power_uses_current_readings_in_watts() -> None:
    lines = [NANO, NANO.replace("POM_5V_IN 2345/2400", "POM_5V_IN 4345/3000"), "", "garbage"]
    assert energy.tegrastats_power_w(lines, "POM_5V_IN") == [2.345, 4.345]
    with pytest.raises(DeviceError, match="no rail 'VDD_IN'; rails seen: POM_5V_CPU, POM_5V_GPU, POM_5V_IN"):
        energy.tegrastats_power_w([NANO], "VDD_IN")


def test_energy_from_power_is_watts_times_milliseconds() -> None:
    stats = energy.energy_from_power([2.0, 4.0, 3.0], latency_ms=10.0, source="measured:tegrastats:VDD_IN")
    assert stats.median_mj == pytest.approx(30.0)
    assert stats.mean_power_w == pytest.approx(3.0)
    assert stats.source == "measured:tegrastats:VDD_IN"


PYNQ_CSV = """,Mark,12V_power,1V2_power,INT_voltage,INT_current
2026-11-27 10:00:00.000000,0,9.5,0.50,0.85,2.0
2026-11-27 10:00:00.050000,1,12.0,0.75,0.85,4.0
2026-11-27 10:00:00.100000,1,14.0,0.80,0.85,6.0
"""


def test_pynq_rails() -> None:
    assert energy.pynq_power_w(PYNQ_CSV, "12V") == [9.5, 12.0, 14.0]
    assert energy.pynq_power_w(PYNQ_CSV, "12V", mark=1) == [12.0, 14.0]
    assert energy.pynq_power_w(PYNQ_CSV, "INT", mark=1) == pytest.approx([3.4, 5.1])
    with pytest.raises(DeviceError, match="no rail 'VCCAUX'"):
        energy.pynq_power_w(PYNQ_CSV, "VCCAUX")
    with pytest.raises(DeviceError, match="no samples under mark 7"):
        energy.pynq_power_w(PYNQ_CSV, "12V", mark=7)


MAX_RANGE = 262143328850  # max_energy_range_uj of a typical intel-rapl:0 domain


def test_rapl_delta_and_wraparound() -> None:
    assert energy.rapl_delta_uj(1_000, 5_000, MAX_RANGE) == 4_000
    assert energy.rapl_delta_uj(MAX_RANGE - 1_000, 2_000, MAX_RANGE) == 3_000
    with pytest.raises(ValueError):
        energy.rapl_delta_uj(-1, 5, MAX_RANGE)


def test_rapl_power_and_energy_per_inference() -> None:
    samples = [(0.0, MAX_RANGE - 5_000_000), (0.5, 5_000_000), (1.0, 15_000_000)]
    assert energy.rapl_power_w(samples, MAX_RANGE) == pytest.approx([20.0, 20.0])
    stats = energy.energy_from_rapl(MAX_RANGE - 5_000_000, 15_000_000, MAX_RANGE, elapsed_s=1.0, inferences=100)
    assert stats.median_mj == pytest.approx(200.0)  # 20 J over 100 inferences
    assert stats.mean_power_w == pytest.approx(20.0)
    assert stats.source == "measured:rapl"


def test_read_rapl_absent_counter_is_device_error(tmp_path) -> None:
    with pytest.raises(DeviceError, match="unreadable"):
        energy.read_rapl(tmp_path / "no-such-domain")
    (tmp_path / "energy_uj").write_text("123\n")
    (tmp_path / "max_energy_range_uj").write_text(f"{MAX_RANGE}\n")
    assert energy.read_rapl(tmp_path) == (123, MAX_RANGE)

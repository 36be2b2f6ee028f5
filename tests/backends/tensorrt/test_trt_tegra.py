"""Input-rail power and board state from the text Jetsons print."""

from __future__ import annotations

import pytest

from edgeprune.backends.tensorrt import tegra
from edgeprune.errors import DeviceError
from edgeprune.profilers import energy

# Nano / Xavier NX / Orin Nano lines: the real-format strings of tests/profilers/test_energy.py.
NANO = ("RAM 2037/3956MB (lfb 55x4MB) SWAP 0/1978MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
        "CPU [12%@1479,4%@1479,6%@1479,3%@1479] EMC_FREQ 3%@1600 GR3D_FREQ 0%@921 APE 25 "
        "PLL@25.5C CPU@27.5C PMIC@100C GPU@25C AO@33C thermal@26.5C "
        "POM_5V_IN 2345/2400 POM_5V_GPU 79/79 POM_5V_CPU 474/520")
XAVIER = ("08-23-2022 10:18:51 RAM 2347/6854MB (lfb 785x4MB) SWAP 0/3427MB (cached 0MB) "
          "CPU [2%@1190,1%@1190,0%@1190,2%@1190,off,off] EMC_FREQ 0%@1600 GR3D_FREQ 0%@114 "
          "VIC_FREQ 0%@115 APE 150 AUX@32C CPU@33.5C thermal@32.75C AO@33C GPU@32C PMIC@50C "
          "VDD_IN 3669mW/3669mW VDD_CPU_GPU_CV 530mW/530mW VDD_SOC 1141mW/1141mW")
# AGX Orin: constructed from the rail names in REFERENCE.md section 3 (no VDD_IN); values made up.
AGX_ORIN = ("RAM 5000/30536MB CPU [5%@2201,off,off,off,3%@2201,2%@2201,off,off] GR3D_FREQ 95% "
            "VDD_GPU_SOC 6000mW/5000mW VDD_CPU_CV 1200mW/1100mW VIN_SYS_5V0 3800mW/3700mW VDDQ_VDD2_1V8AO 800mW/800mW")


def test_single_rail_both_unit_forms() -> None:
    assert tegra.input_power_w([NANO, "", NANO.replace("2345/2400", "4000/2400")], "POM_5V_IN") == [2.345, 4.0]
    assert tegra.input_power_w([XAVIER], "VDD_IN") == [3.669]


def test_agx_orin_sums_its_input_rails() -> None:
    assert tegra.input_power_w([AGX_ORIN], tegra.AGX_ORIN_INPUT) == pytest.approx([11.0])
    with pytest.raises(DeviceError, match="no rail 'VDD_IN'; rails seen: VDDQ_VDD2_1V8AO, VDD_CPU_CV"):
        tegra.input_power_w([AGX_ORIN], "VDD_IN")


def test_energy_per_inference_in_mj() -> None:
    watts = tegra.input_power_w([XAVIER, XAVIER.replace("VDD_IN 3669mW", "VDD_IN 4331mW")], "VDD_IN")
    stats = energy.energy_from_power(watts, latency_ms=2.0, source="measured:tegrastats:VDD_IN")
    assert stats.median_mj == pytest.approx(4.0 * 2.0)  # median 4.0 W x 2 ms


def test_power_mode_and_clocks() -> None:
    # nvpmodel -q prints the mode name then its id; jetson_clocks --show prints "GPU MinFreq=.. MaxFreq=.."
    # (format of L4T's jetson_clocks script: echo "GPU MinFreq=$(cat ..) MaxFreq=$(cat ..) CurrentFreq=..").
    assert tegra.power_mode("NV Power Mode: MAXN\n0\n") == "MAXN"
    assert tegra.power_mode("sh: 1: nvpmodel: not found") == "unknown"
    on = "SOC family:tegra210  Machine:NVIDIA Jetson Nano Developer Kit\nGPU MinFreq=921600000 MaxFreq=921600000 CurrentFreq=921600000\n"
    assert tegra.clocks_state(on) == "on"
    assert tegra.clocks_state(on.replace("MinFreq=921600000", "MinFreq=76800000")) == "off"
    assert tegra.clocks_state("sudo: a password is required\n") == "unknown: sudo: a password is required"

"""trtexec command lines per TensorRT release and precision, and the per-target precision rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgeprune.backends.tensorrt import trtexec
from edgeprune.backends.tensorrt.versions import RELEASES, check_precision, export_opset, release_for
from edgeprune.errors import ConfigError

TARGETS = Path(__file__).resolve().parents[3] / "targets"


def compiler_target(name: str) -> dict:
    """The shipped YAML's compiler_target, read directly (the target schema is not this package's)."""
    return yaml.safe_load((TARGETS / f"{name}.yaml").read_text())["compiler_target"]

FILES = trtexec.EngineFiles.in_dir("/tmp/w")
RUN = trtexec.RunSettings(warmup_ms=200, iterations=50, duration_s=3, avg_runs=10, percentiles=(50, 90, 99))


def test_each_jetson_target_maps_to_its_release_and_opset() -> None:
    expected = {"jetson-nano": ("8.2", 13), "jetson-xavier-nx": ("8.5", 17), "jetson-orin-nano": ("10.3", 17)}
    for name, (version, opset) in expected.items():
        release = release_for(compiler_target(name), name)
        assert (release.version, export_opset(release)) == (version, opset)


def test_build_line_per_release() -> None:
    """8.x build-only is --buildOnly; 10.x only knows --skipInference (unknown options abort trtexec)."""
    nano = trtexec.build_args(RELEASES["8.2"], FILES, "fp16", qdq=False)
    assert nano == ["--onnx=/tmp/w/model.onnx", "--saveEngine=/tmp/w/model.engine", "--fp16",
                    "--profilingVerbosity=detailed", "--exportLayerInfo=/tmp/w/layers.json", "--buildOnly"]
    orin = trtexec.build_args(RELEASES["10.3"], FILES, "int8", qdq=True)
    assert orin[2] == "--int8" and orin[-1] == "--skipInference" and "--buildOnly" not in orin
    assert not any("explicitBatch" in a for r in RELEASES.values() for a in trtexec.build_args(r, FILES, "fp32", False))


def test_timing_line_and_percentile_syntax() -> None:
    args = trtexec.timing_args(RELEASES["8.5"], FILES, RUN)
    assert args == ["--loadEngine=/tmp/w/model.engine", "--useCudaGraph", "--warmUp=200", "--iterations=50",
                    "--duration=3", "--avgRuns=10", "--percentile=50,90,99", "--exportTimes=/tmp/w/times.json"]
    assert "--percentile=99" in trtexec.timing_args(RELEASES["8.2"], FILES, RUN)  # 8.2: one value only
    assert "--exportProfile=/tmp/w/profile.json" in trtexec.profile_args(FILES)


def test_precision_flags() -> None:
    assert trtexec.precision_flags("fp32", False) == ["--noTF32"]
    assert trtexec.precision_flags("fp16", False) == ["--fp16"]
    assert trtexec.precision_flags("int8", qdq=True) == ["--int8", "--fp16"]  # layers outside Q/DQ may use fp16
    with pytest.raises(ConfigError, match="Q/DQ"):
        trtexec.precision_flags("int8", qdq=False)


def test_one_shot_line_is_a_quoted_shell_command() -> None:
    args = trtexec.one_shot_args(RELEASES["10.3"], trtexec.EngineFiles.in_dir("/tmp/a b"), "fp16", False, RUN)
    line = trtexec.command_line(trtexec.JETPACK_TRTEXEC, args)
    assert line.startswith("/usr/src/tensorrt/bin/trtexec '--onnx=/tmp/a b/model.onnx' ")
    for flag in ("--fp16", "--useCudaGraph", "--separateProfileRun", "--profilingVerbosity=detailed"):
        assert f" {flag}" in line


def test_int8_on_nano_is_a_config_error_suggesting_fp16() -> None:
    nano = compiler_target("jetson-nano")
    with pytest.raises(ConfigError, match="int8 is not possible on jetson-nano.*use --precision fp16") as info:
        check_precision(nano, "int8", "jetson-nano")
    assert "\n" not in str(info.value)
    check_precision(nano, "fp16", "jetson-nano")
    check_precision(compiler_target("jetson-xavier-nx"), "int8", "jetson-xavier-nx")


def test_unknown_or_missing_release() -> None:
    with pytest.raises(ConfigError, match="names no TensorRT release"):
        release_for({"kind": "tensorrt"}, "my-board")
    with pytest.raises(ConfigError, match="TensorRT 7.1 is not known"):
        release_for({"tensorrt": "7.1"}, "tx2")
    assert release_for({"tensorrt": "8.5.2.2"}, "x").version == "8.5"

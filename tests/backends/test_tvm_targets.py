"""Board targets on a machine without the board, as a new user hits them: ``edgeprune deploy
--target raspberry-pi-4 --runtime tvm`` on an x86-64 laptop. Real TVM and real PATH lookups."""

from __future__ import annotations

import platform
import shutil

import pytest

from edgeprune.backends import CompileOptions, get_backend
from edgeprune.backends.tvm import TUNING_SUBDIR
from edgeprune.errors import CompileError, ToolchainMissingError

pytest.importorskip("tvm")

# targets/raspberry-pi-4.yaml's compiler_target
RASPBERRY_PI_4 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72",
                  "mattr": ["+neon"], "num-cores": 4}
CROSS = "aarch64-linux-gnu-g++"
_ELF_MACHINE_AARCH64 = 183  # e_machine, little-endian u16 at byte 18 of an ELF header

pytestmark = pytest.mark.skipif(platform.machine() == "aarch64",
                                reason="aarch64 is this host's own architecture here")


def _pi_options(tmp_path, trials: int) -> CompileOptions:
    return CompileOptions("raspberry-pi-4", dict(RASPBERRY_PI_4), tmp_path / "cache",
                          tune_trials=trials)


def test_missing_cross_compiler_is_toolchain_missing_before_building(tiny_net, example,
                                                                     tmp_path, monkeypatch):
    """PATH holds a host compiler but not aarch64-linux-gnu-g++: the user learns the install
    command at once (exit 9), instead of "No such file" after the whole build (exit 7)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    host_cxx = shutil.which("g++") or shutil.which("c++")
    if host_cxx:
        (bin_dir / "g++").symlink_to(host_cxx)
    monkeypatch.setenv("PATH", str(bin_dir))
    backend = get_backend("tvm")
    options = _pi_options(tmp_path, trials=64)

    reason = backend.unavailable_reason_for(options)
    assert reason and "\n" not in reason and CROSS in reason
    assert "apt-get install g++-aarch64-linux-gnu" in reason
    with pytest.raises(ToolchainMissingError) as caught:
        backend.compile(tiny_net, example, tmp_path / "out", options)
    assert caught.value.exit_code == 9 and str(caught.value) == reason
    assert not (tmp_path / "out").exists() and not options.cache_dir.exists()  # nothing built


def test_host_target_needs_no_cross_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    options = CompileOptions("host", {"kind": "llvm", "mcpu": "auto"}, tmp_path / "cache")
    assert get_backend("tvm").unavailable_reason_for(options) is None


@pytest.mark.skipif(shutil.which(CROSS) is None,
                    reason=f"{CROSS} not installed (apt-get install g++-aarch64-linux-gnu)")
def test_foreign_target_builds_untuned_and_says_why(tiny_net, example, tmp_path):
    """Tuning measures candidates, which this machine cannot run for aarch64: the backend
    builds untuned (no error), says so in the meta, and does not pretend it can run it."""
    backend = get_backend("tvm")
    options = _pi_options(tmp_path, trials=64)
    artifact = backend.compile(tiny_net, example, tmp_path / "out", options)

    meta = artifact.meta
    assert meta["tuned"] is False and meta["tune_trials"] == 0 and meta["new_trials"] == 0
    skipped = meta["tuning_skipped"]
    assert platform.machine() in skipped and "aarch64" in skipped and "\n" not in skipped
    assert meta["note"].startswith("UNTUNED")
    assert not (options.cache_dir / TUNING_SUBDIR).exists()  # MetaSchedule never started
    header = artifact.path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF"
    assert int.from_bytes(header[18:20], "little") == _ELF_MACHINE_AARCH64
    assert backend.runs_here(artifact) is False
    with pytest.raises(CompileError, match="aarch64"):
        backend.load(artifact)

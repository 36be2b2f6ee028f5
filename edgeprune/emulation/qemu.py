"""Check an ARM (aarch64) TVM artifact's outputs on this x86 host, under qemu-user emulation.

Why: a ``model.so`` cross-compiled for a Raspberry Pi cannot be loaded by the host's TVM, so
without a board nothing would show that the shipped artifact computes what the PyTorch model
computes. Here the artifact runs for real, as aarch64 code, inside ``qemu-aarch64``:

1. :func:`fetch_runtime` takes TVM's own aarch64 runtime libraries (``libtvm_runtime.so``,
   ``libtvm_ffi.so``) from PyPI's aarch64 wheels of exactly the installed TVM versions, so the
   runtime matches the compiler that built the artifact.
2. :func:`build_runner` cross-compiles ``edgeprune/board/runner.cc`` (our small C++ program:
   load ``model.so``, build the Relax VM, run once on a raw float32 file) against the tvm_ffi
   headers shipped in the installed x86 wheel.
3. :func:`run_under_qemu` runs it with ``qemu-aarch64 -L /usr/aarch64-linux-gnu``.
4. :func:`check_arm_artifact` compares with PyTorch.

Emulation says nothing about speed (a few seconds per inference, unrelated to a board's
milliseconds), so the elapsed time is reported as ``emulated_seconds_not_latency`` and must never
be shown as latency. ``tvm`` is imported inside functions only.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from edgeprune.artifact import Artifact
from edgeprune.io import default_cache_dir, publish_dir
from edgeprune.errors import CompileError, ConfigError, DeviceError, ToolchainMissingError, ValidationError

CACHE_SUBDIR = "crosscheck"
RUNNER_SOURCE = Path(__file__).resolve().parent.parent / "board" / "runner.cc"
RUNNER_FLAGS = ("-std=c++17", "-O2", "-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_ffi",
                "-Wl,-rpath,$ORIGIN")
TVM_DISTRIBUTIONS = ("apache-tvm", "apache-tvm-ffi")
DEFAULT_TIMEOUT_S = 300.0
ELF_MACHINE_AARCH64 = 183
_PIP_TIMEOUT_S = 900.0
_COMPILE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class ForeignArch:
    """What emulating one foreign architecture takes, and which Debian package supplies each."""

    name: str
    elf_machine: int
    triple: str
    qemu: str
    sysroot: Path
    pip_platforms: tuple[str, ...]
    runtime_libs: tuple[str, ...] = ("libtvm_runtime.so", "libtvm_ffi.so")
    qemu_package: str = "qemu-user"

    @property
    def compiler(self) -> str:
        return f"{self.triple}-g++"

    @property
    def compiler_packages(self) -> str:
        return f"gcc-{self.triple} g++-{self.triple}"


ARCHES = {
    "aarch64": ForeignArch(
        name="aarch64", elf_machine=ELF_MACHINE_AARCH64, triple="aarch64-linux-gnu",
        qemu="qemu-aarch64", sysroot=Path("/usr/aarch64-linux-gnu"),
        # PyPI's TVM wheels are tagged manylinux_2_27/2_28 (tvm) and 2_24/2_28 (tvm-ffi).
        pip_platforms=("manylinux2014_aarch64", "manylinux_2_24_aarch64",
                       "manylinux_2_27_aarch64", "manylinux_2_28_aarch64"),
    ),
}


@dataclass(frozen=True)
class CrossCheckResult:
    """How the emulated ARM artifact compared with PyTorch.

    ``emulated_seconds_not_latency`` is the wall time of the qemu runs (start-up included); it
    exists so nobody mistakes it for the board's latency, which only a board can measure.
    """

    max_abs_error: float
    matches: bool
    tolerance: float
    inputs_checked: int
    emulated_seconds_not_latency: float

    def to_json(self) -> dict:
        return asdict(self)


# --- tools --------------------------------------------------------------------------------------


def foreign_arch(name: str) -> ForeignArch:
    """The emulation recipe for ``name``; a ConfigError for architectures not supported yet."""
    if name not in ARCHES:
        raise ConfigError(f"cannot cross-check {name!r} artifacts; supported: {', '.join(ARCHES)}")
    return ARCHES[name]


def require_qemu(arch: ForeignArch) -> str:
    """Path of the qemu-user binary, after checking the target's sysroot (its libc) is there.

    A missing tool is a one-line ToolchainMissingError naming the Debian package, because the
    fix is always an ``apt-get install``.
    """
    qemu = shutil.which(arch.qemu)
    if qemu is None:
        raise ToolchainMissingError(
            f"{arch.qemu} not found on PATH: install Debian's {arch.qemu_package} "
            f"(apt-get install {arch.qemu_package})")
    if not (arch.sysroot / "lib").is_dir():
        raise ToolchainMissingError(
            f"{arch.sysroot} (the {arch.name} libc qemu needs) is missing: install Debian's "
            f"{arch.compiler_packages} (apt-get install {arch.compiler_packages})")
    return qemu


def require_compiler(arch: ForeignArch) -> str:
    """Path of ``<triple>-g++``; a one-line ToolchainMissingError naming the Debian packages."""
    compiler = shutil.which(arch.compiler)
    if compiler is None:
        raise ToolchainMissingError(
            f"{arch.compiler} not found on PATH: install Debian's {arch.compiler_packages} "
            f"(apt-get install {arch.compiler_packages})")
    return compiler


def elf_machine(path: Path) -> int:
    """The ELF header's ``e_machine`` (62 x86-64, 183 aarch64): what the file really runs on,
    whatever its name or sidecar says. A non-ELF file is a ConfigError."""
    with open(path, "rb") as f:
        header = f.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise ConfigError(f"{path} is not an ELF shared library")
    return int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")


def artifact_arch(path: Path) -> ForeignArch:
    """The supported foreign architecture ``path`` was built for, read from its ELF header."""
    machine = elf_machine(path)
    for arch in ARCHES.values():
        if arch.elf_machine == machine:
            return arch
    raise ConfigError(f"{path} is built for ELF machine {machine}, not one of "
                      f"{', '.join(ARCHES)}: only foreign (ARM) artifacts need a cross-check")


# --- runtime libraries ----------------------------------------------------------------------------


def tvm_versions() -> dict[str, str]:
    """Installed versions of apache-tvm and apache-tvm-ffi: the board runtime must match them,
    since a model.so links against the runtime ABI of the TVM that compiled it."""
    try:
        return {dist: importlib.metadata.version(dist) for dist in TVM_DISTRIBUTIONS}
    except importlib.metadata.PackageNotFoundError as exc:
        raise ToolchainMissingError(
            f"{exc.name} is not installed (pip install 'edgeprune[tvm]')") from None


def _cache_root(cache_dir: Path) -> Path:
    root = Path(cache_dir) / CACHE_SUBDIR
    root.mkdir(parents=True, exist_ok=True)
    return root


def fetch_runtime(arch: str = "aarch64", cache_dir: Path | None = None) -> Path:
    """Folder holding ``arch``'s ``libtvm_runtime.so`` and ``libtvm_ffi.so``, downloaded once.

    The libraries come from PyPI's ``arch`` wheels of the installed TVM versions (pip download,
    no install); only the two ``.so`` files are kept (the wheels are ~100 MB, the libraries
    ~5 MB). A second call finds them in ``cache_dir`` and downloads nothing.
    """
    spec = foreign_arch(arch)
    versions = tvm_versions()
    tag = "-".join(f"{dist}{version}" for dist, version in versions.items())
    dest = _cache_root(cache_dir or default_cache_dir()) / f"runtime-{spec.name}-{tag}"
    if all((dest / lib).is_file() for lib in spec.runtime_libs):
        return dest
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".download-") as tmp:
        wheels = _pip_download(spec, versions, Path(tmp) / "wheels")
        staging = Path(tmp) / "libs"
        _extract_libs(wheels, spec.runtime_libs, staging)
        publish_dir(staging, dest)
    return dest


def _pip_download(spec: ForeignArch, versions: dict[str, str], into: Path) -> list[Path]:
    """``pip download`` the binary wheels for ``spec``; a failure names what could not be had."""
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    platforms = [arg for tag in spec.pip_platforms for arg in ("--platform", tag)]
    pins = [f"{dist}=={version}" for dist, version in versions.items()]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", *platforms, "--python-version", python,
           "-d", str(into), *pins]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ToolchainMissingError(
            f"pip download of the {spec.name} TVM runtime ({' '.join(pins)}) timed out") from None
    wheels = sorted(into.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) < len(pins):
        raise ToolchainMissingError(
            f"cannot get the {spec.name} TVM runtime ({' '.join(pins)}) with pip download: "
            f"{_last_line(proc.stderr) or 'no wheel for ' + spec.name}")
    return wheels


def _extract_libs(wheels: Iterable[Path], names: Sequence[str], into: Path) -> None:
    """Copy out of the wheels only the shared libraries named in ``names`` (any folder)."""
    into.mkdir(parents=True)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if Path(member).name in names:
                    with archive.open(member) as src, open(into / Path(member).name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
    missing = [name for name in names if not (into / name).is_file()]
    if missing:
        raise ToolchainMissingError(f"the downloaded TVM wheels hold no {', '.join(missing)}")


# --- runner ---------------------------------------------------------------------------------------


def ffi_include_dirs() -> list[Path]:
    """tvm_ffi's C++ header folders (incl. dlpack) from the installed x86 wheel: headers are
    architecture-neutral, so the same ones serve the aarch64 build."""
    try:
        from tvm_ffi import libinfo
    except ImportError:
        raise ToolchainMissingError(
            "apache-tvm-ffi is not installed (pip install 'edgeprune[tvm]')") from None
    dirs = [Path(p) for p in libinfo.include_paths()]
    if not any((d / "tvm" / "ffi" / "extra" / "module.h").is_file() for d in dirs):
        raise ToolchainMissingError("the installed apache-tvm-ffi ships no C++ headers "
                                    "(tvm/ffi/extra/module.h)")
    return dirs


def build_runner(cache_dir: Path | None = None, arch: str = "aarch64") -> Path:
    """The cross-compiled ``edgeprune-runner`` for ``arch``, built once per source version.

    The cache key hashes the runner source, the flags, the compiler name and the TVM versions
    (the runner links against that runtime), so editing ``runner.cc`` or upgrading TVM rebuilds.
    """
    spec = foreign_arch(arch)
    lib_dir = fetch_runtime(arch, cache_dir)
    source = RUNNER_SOURCE.read_bytes()
    key_blob = json.dumps({"flags": RUNNER_FLAGS, "compiler": spec.compiler,
                           "tvm": tvm_versions()}, sort_keys=True).encode() + source
    key = hashlib.sha256(key_blob).hexdigest()[:16]
    runner = _cache_root(cache_dir or default_cache_dir()) / f"runner-{spec.name}-{key}" / "edgeprune-runner"
    if runner.is_file():
        return runner
    compiler = require_compiler(spec)
    runner.parent.mkdir(parents=True, exist_ok=True)
    partial = runner.with_name(f".{runner.name}.{os.getpid()}")
    includes = [f"-I{d}" for d in ffi_include_dirs()]
    cmd = [compiler, *RUNNER_FLAGS[:2], *includes, str(RUNNER_SOURCE), "-o", str(partial),
           f"-L{lib_dir}", *RUNNER_FLAGS[2:]]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=_COMPILE_TIMEOUT_S)
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise CompileError(f"{spec.compiler} cannot build the runner: {_first_error(proc.stderr)}")
    os.replace(partial, runner)
    return runner


# --- running ----------------------------------------------------------------------------------------


def run_under_qemu(artifact: Artifact | Path, x: np.ndarray, cache_dir: Path | None = None,
                   timeout_s: float = DEFAULT_TIMEOUT_S) -> np.ndarray:
    """Run the foreign artifact once on ``x`` under qemu-user; its first output.

    The architecture comes from the ``.so``'s ELF header. Raises ToolchainMissingError when qemu,
    the target's libc or the cross compiler is missing, ValidationError when the runner fails,
    DeviceError when emulation outlives ``timeout_s``.
    """
    return run_under_qemu_all(artifact, x, cache_dir, timeout_s)[0][0]


def run_under_qemu_all(artifact: Artifact | Path, x: np.ndarray, cache_dir: Path | None = None,
                       timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[list[np.ndarray], float]:
    """Every output of one emulated run, and the run's wall seconds (emulated, not latency)."""
    so_path = artifact.path if isinstance(artifact, Artifact) else Path(artifact)
    spec = artifact_arch(so_path)
    qemu = require_qemu(spec)
    batch = np.ascontiguousarray(x, dtype=np.float32)
    if isinstance(artifact, Artifact) and tuple(batch.shape) != tuple(artifact.input_shape):
        raise ConfigError(f"{so_path.name} is compiled for input {tuple(artifact.input_shape)}, "
                          f"got {tuple(batch.shape)}")
    runner = build_runner(cache_dir, spec.name)
    lib_dir = fetch_runtime(spec.name, cache_dir)
    with tempfile.TemporaryDirectory(prefix="edgeprune-qemu-") as tmp:
        inp, out = Path(tmp) / "input.bin", Path(tmp) / "output.bin"
        batch.tofile(inp)
        shape = ",".join(str(d) for d in batch.shape)
        # -E sets LD_LIBRARY_PATH for the emulated program only, not for the host's qemu.
        cmd = [qemu, "-L", str(spec.sysroot), "-E", f"LD_LIBRARY_PATH={lib_dir}",
               str(runner), str(so_path.resolve()), str(inp), shape, str(out)]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{so_path.name} did not finish under {spec.qemu} within "
                              f"{timeout_s:g} s (emulation is slow: raise timeout_s)") from None
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise ValidationError(f"{so_path.name} failed under {spec.qemu} (exit {proc.returncode}): "
                                  f"{_last_line(proc.stderr) or 'no message'}")
        return _read_outputs(proc.stdout, out), seconds


def _read_outputs(listing: str, path: Path) -> list[np.ndarray]:
    """Split the runner's output file using its stdout lines ``output <i> <dtype> <shape>``."""
    raw = path.read_bytes()
    outputs, offset = [], 0
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) != 4 or parts[0] != "output":
            continue
        dtype = np.dtype(parts[2])
        shape = tuple(int(d) for d in parts[3].split(",") if d)
        count = int(np.prod(shape, dtype=np.int64))
        outputs.append(np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(shape))
        offset += count * dtype.itemsize
    if not outputs or offset != len(raw):
        raise ValidationError(f"the runner's outputs ({len(raw)} bytes) do not match its listing "
                              f"{listing.strip()!r}")
    return outputs


# --- comparison -----------------------------------------------------------------------------------


def check_arm_artifact(model: torch.nn.Module, artifact: Artifact,
                       inputs: torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray],
                       tolerance: float = 1e-4, cache_dir: Path | None = None,
                       timeout_s: float = DEFAULT_TIMEOUT_S) -> CrossCheckResult:
    """Run ``artifact`` under emulation on each input batch and compare with ``model`` in PyTorch.

    ``matches`` is True when every output element is within ``tolerance`` (absolute) of
    PyTorch's. A shape mismatch is a ValidationError (no tolerance can make that right).
    """
    batches = _as_batches(inputs)
    model.eval()
    worst, seconds = 0.0, 0.0
    for batch in batches:
        outputs, elapsed = run_under_qemu_all(artifact, batch, cache_dir, timeout_s)
        seconds += elapsed
        with torch.no_grad():
            reference = _first(model(torch.from_numpy(batch))).detach().cpu().numpy()
        got = outputs[0]
        if got.shape != reference.shape:
            raise ValidationError(f"{artifact.path.name} gives shape {got.shape} under emulation; "
                                  f"PyTorch gives {reference.shape}")
        worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - reference), initial=0.0)))
    return CrossCheckResult(max_abs_error=worst, matches=bool(worst <= tolerance),
                            tolerance=tolerance, inputs_checked=len(batches),
                            emulated_seconds_not_latency=round(seconds, 3))


def _as_batches(inputs: torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray]) -> list[np.ndarray]:
    """One batch or a sequence of batches, as contiguous float32 numpy arrays."""
    items = [inputs] if isinstance(inputs, (torch.Tensor, np.ndarray)) else list(inputs)
    if not items:
        raise ConfigError("check_arm_artifact needs at least one input batch")
    return [np.ascontiguousarray(item.detach().cpu().numpy() if isinstance(item, torch.Tensor)
                                 else item, dtype=np.float32) for item in items]


def _first(out: object) -> torch.Tensor:
    """A model may return a tensor or a tuple/list whose first item is the logits."""
    return out[0] if isinstance(out, (tuple, list)) else out  # type: ignore[return-value]


# --- helpers ----------------------------------------------------------------------------------------


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _first_error(text: str) -> str:
    """The compiler's first ``error:`` line (later ones are usually consequences)."""
    for line in text.splitlines():
        if "error:" in line:
            return line.strip()
    return _last_line(text) or "no message"

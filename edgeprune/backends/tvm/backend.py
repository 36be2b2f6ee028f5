"""Apache TVM (Relax) backend: torch.export -> Relax -> optional MetaSchedule tuning -> one ``.so``.

Why it is shaped like this:

* TVM 0.27 emits no fast CPU code without tuning: the default pipeline adds no schedules, so
  an untuned model runs as scalar, single-threaded loops (50-80x slower than ONNX Runtime
  here). Whether the artifact was tuned is therefore part of its identity (``meta["tuned"]``).
* Tuning records live in a persistent JSON database keyed by the resolved target and the TVM
  version, so a rerun, or a pruned variant that keeps some layer shapes, reuses them instead of
  measuring again. A small ledger beside the database remembers how many trials each task got.
* Weights are bound as constants, so ``model.so`` is self-contained.
* ``import tvm`` (~1.3 s) happens inside functions only, so listing backends stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from edgeprune.artifact import Artifact
from edgeprune.backends import backends
from edgeprune.backends.base import CompileOptions, Session
from edgeprune.errors import CompileError, EdgepruneError, ToolchainMissingError, TraceError
from edgeprune.profilers.base import MeasureSettings, Measurement
from edgeprune.profilers.host import cpu_description, rapl_unavailable_reason
from edgeprune.profilers.stats import LatencyStats

if TYPE_CHECKING:
    import tvm
    from tvm.s_tir.meta_schedule import Database, ExtractedTask

MISSING_REASON = "apache-tvm is not installed (pip install 'edgeprune[tvm]')"
SOURCE = "measured:tvm-local"
TUNING_SUBDIR = "tvm-tuning"
LEDGER_FILE = "edgeprune-ledger.json"
BEST_SUBDIR = "best"
THREADS_ENV = "TVM_NUM_THREADS"
_MS_LOGGER = "tvm.s_tir.meta_schedule"
_BIG_CORES = 1  # tvm::runtime::threading::ThreadGroup::kBig
_UNSUPPORTED = "Unsupported function types"
# Host architecture -> the tvm.s_tir.tensor_intrin submodule its MetaSchedule rules need.
_INTRINSICS_BY_ARCH = {"x86_64": "x86", "amd64": "x86", "aarch64": "arm_cpu", "arm64": "arm_cpu",
                       "riscv64": "riscv_cpu"}
# /proc/cpuinfo flag -> LLVM feature, for hosts whose CPU LLVM cannot name (mcpu: auto fallback).
_CPUINFO_FEATURES = {
    "sse4_2": "+sse4.2", "avx": "+avx", "avx2": "+avx2", "fma": "+fma", "f16c": "+f16c",
    "avx512f": "+avx512f", "avx512cd": "+avx512cd", "avx512bw": "+avx512bw",
    "avx512dq": "+avx512dq", "avx512vl": "+avx512vl", "avx512_vnni": "+avx512vnni",
    "avx_vnni": "+avxvnni", "asimd": "+neon",
}


@dataclass(frozen=True)
class TuningConfig:
    """MetaSchedule search knobs. Defaults were measured on a 2-core Zen 5 host (see bench/).

    ``strategy``: "replay-trace" samples schedules at random from the design space;
    "evolutionary" evolves a population ranked by an XGBoost cost model. Below ~1000 trials the
    cost model has barely been trained (it predicts at random until it has seen 100 samples),
    and evolving and retraining at every round dominated tuning time on 2 cores: on resnet18,
    256 trials, random sampling reached 81 ms in 157 s of tuning, the evolutionary search 198 ms
    in 476 s. ``population_size``/``genetic_iters`` (TVM: 512/4) apply to "evolutionary" only.
    ``weight_layout_rewrite`` lets schedules pre-pack constant weights into a tiled layout at
    compile time (TVM's ``cpu_weight_prepack``), which speeds up convolutions on x86.
    """

    strategy: str = "replay-trace"
    population_size: int = 128
    genetic_iters: int = 2
    max_trials_per_iter: int = 16
    runner_number: int = 3
    runner_min_repeat_ms: int = 40
    weight_layout_rewrite: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in ("replay-trace", "evolutionary"):
            raise ValueError(f"unknown MetaSchedule strategy {self.strategy!r}")


@dataclass(frozen=True)
class TuningReport:
    """What one compile's tuning step did; it becomes the artifact's ``meta``."""

    tuned: bool
    seconds: float = 0.0
    tasks: int = 0
    new_trials: int = 0
    tasks_without_schedule: int = 0
    database: Path | None = None


@backends.register("tvm")
class TVMBackend:
    """Compiles with TVM Relax for an LLVM (CPU) target and runs the ``.so`` with the Relax VM."""

    name = "tvm"

    def __init__(self, tuning: TuningConfig | None = None) -> None:
        self.tuning = tuning or TuningConfig()

    def unavailable_reason(self) -> str | None:
        try:
            import tvm  # noqa: F401
        except ImportError:
            return MISSING_REASON
        return None

    def compile(
        self, model: torch.nn.Module, example: torch.Tensor, out_dir: Path, options: CompileOptions
    ) -> Artifact:
        """Export, import, optionally tune (``options.tune_trials``), build ``model.so``."""
        tvm = _import_tvm()
        model.eval()
        target_dict = resolve_target(options.compiler_target, options.threads)
        if options.tune_trials > 0 and not is_host_target(target_dict):
            raise CompileError("TVM tuning measures candidates on this machine, which cannot run "
                               f"{target_dict['mtriple']} code; use --tune-trials 0")
        mod = to_relax(export_program(model, example))
        with _tvm_step("target setup"):
            target = tvm.target.Target(target_dict)
        mod, report = self._optimize(mod, target, target_dict, options)
        out_dir.mkdir(parents=True, exist_ok=True)
        so_path = out_dir / "model.so"
        with _tvm_step("build"):
            _build_library(tvm.compile(mod, target=target), so_path, target_dict)
        meta = _artifact_meta(report, options.tune_trials, target_dict)
        sidecar = out_dir / "model.json"
        sidecar.write_text(json.dumps(
            {"input_shape": list(example.shape), "input_dtype": "float32",
             "tvm_version": tvm.__version__, **meta, "tvm_target": target_dict}, indent=2))
        return Artifact(runtime=self.name, target=options.target_name, files=(so_path, sidecar),
                        input_shape=tuple(example.shape), meta=meta)

    def _optimize(self, mod: tvm.IRModule, target: tvm.target.Target, target_dict: dict,
                  options: CompileOptions) -> tuple[tvm.IRModule, TuningReport]:
        """Lower to TIR kernels and, with a trial budget, tune them and apply the records."""
        layout = self.tuning.weight_layout_rewrite and options.tune_trials > 0
        with _tvm_step("lowering"):
            mod = _lower(mod, target, layout)
        if options.tune_trials <= 0:
            return mod, TuningReport(tuned=False)
        db_dir = tuning_db_dir(options.cache_dir, target_dict)
        with _tvm_step("MetaSchedule tuning"):
            report, best = tune(mod, target, db_dir, options.tune_trials,
                                int(target_dict.get("num-cores", usable_cores())), self.tuning)
        with _tvm_step("applying tuning records"):
            return _apply_records(mod, target, best, layout), report

    def load(self, artifact: Artifact, threads: int | None = None) -> Session:
        """A callable running the artifact on this CPU with ``threads`` TVM workers (default:
        every core this process may use). Input must have the compiled shape."""
        tvm = _import_tvm()
        vm = _load_vm(artifact)
        expected = tuple(artifact.input_shape)
        n = threads or usable_cores()

        def run(batch: np.ndarray) -> np.ndarray:
            x = np.ascontiguousarray(batch, dtype=np.float32)
            if x.shape != expected:
                raise ValueError(f"TVM artifact is compiled for input {expected}, got {x.shape}")
            with runtime_threads(n):
                out = vm["main"](tvm.runtime.tensor(x, tvm.cpu()))
            return _first_output(out).numpy()

        return run

    def measure(self, artifact: Artifact, settings: MeasureSettings) -> Measurement:
        """Median of ``settings.repeats`` samples of the VM's ``time_evaluator`` after warm-up;
        each sample averages enough calls to last ``min_repeat_ms``."""
        tvm = _import_tvm()
        vm = _load_vm(artifact)
        rng = np.random.default_rng(0)
        x = tvm.runtime.tensor(rng.random(artifact.input_shape, dtype=np.float32), tvm.cpu())
        with runtime_threads(settings.threads or usable_cores()) as used:
            for _ in range(settings.warmup):
                vm["main"](x)
            timer = vm.time_evaluator("main", tvm.cpu(), number=1, repeat=settings.repeats,
                                      min_repeat_ms=max(1, round(settings.min_repeat_ms)))
            samples_ms = [s * 1e3 for s in timer(x).results]
        cpu = json.loads(artifact.meta.get("tvm_target") or "{}").get("mcpu", "generic")
        return Measurement(
            latency=LatencyStats.from_samples(samples_ms, settings.warmup, SOURCE),
            device=f"{cpu_description(used)}, llvm -mcpu={cpu}",
            energy_note=rapl_unavailable_reason() or "measurable but not sampled",
            details={"tvm_threads": used, "tuned": bool(artifact.meta.get("tuned", False))},
        )


# --- export and import ----------------------------------------------------------------------


def export_program(model: torch.nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` the model, or raise :class:`TraceError` naming where tracing stopped."""
    try:
        with torch.no_grad():
            return torch.export.export(model, (example,))
    except Exception as exc:  # noqa: BLE001 - torch.export raises many types; we re-raise typed
        where = _user_frame(exc)
        at = f" at {where}" if where else ""
        raise TraceError(
            f"torch.export cannot trace {type(model).__name__}{at}: {_one_line(exc)}"
        ) from exc


def to_relax(exported: torch.export.ExportedProgram) -> tvm.IRModule:
    """Import into Relax with weights as constants; an op without a converter is a CompileError."""
    from tvm.relax.frontend.torch import from_exported_program

    try:
        return from_exported_program(exported, unwrap_unit_return_tuple=True)
    except AssertionError as exc:  # the frontend reports missing converters with an assert
        message = str(exc)
        if message.startswith(_UNSUPPORTED):
            ops = message[len(_UNSUPPORTED):].strip()
            raise CompileError(f"TVM's PyTorch frontend does not support op(s) {ops}") from exc
        raise CompileError(f"TVM's PyTorch frontend failed: {_one_line(exc)}") from exc
    except Exception as exc:  # noqa: BLE001
        raise CompileError(f"TVM's PyTorch frontend failed: {_one_line(exc)}") from exc


def _lower(mod: tvm.IRModule, target: tvm.target.Target, layout_rewrite: bool) -> tvm.IRModule:
    """Decompose inference ops (batch norm), legalize and fuse into TIR kernels: the form both
    MetaSchedule's task extraction and ``tvm.compile`` take."""
    from tvm import relax, transform

    with target:  # some passes read the current target when they are constructed
        passes = [relax.transform.DecomposeOpsForInference(),
                  relax.transform.CanonicalizeBindings(),
                  relax.get_pipeline("zero")]
        if layout_rewrite:
            passes.append(relax.transform.AttachAttrLayoutFreeBuffers())
        return transform.Sequential(passes)(mod)


def _apply_records(mod: tvm.IRModule, target: tvm.target.Target, database: Database,
                   layout_rewrite: bool) -> tvm.IRModule:
    """Replace each kernel by its best tuned schedule; with layout rewrite, fold the weight
    re-packing into the constants so it costs nothing at run time."""
    from tvm import relax, transform

    with target, database:  # the pass reads both from the current scope
        passes = [relax.transform.MetaScheduleApplyDatabase()]
        if layout_rewrite:
            passes += [relax.transform.SplitLayoutRewritePreproc(), relax.transform.FoldConstant()]
        return transform.Sequential(passes)(mod)


def _build_library(executable: Any, so_path: Path, target: Mapping[str, Any]) -> None:
    """Link the executable into one ``.so``; a foreign ``mtriple`` needs ``<triple>-g++``."""
    if is_host_target(target):
        executable.export_library(str(so_path))
        return
    from tvm.support import cc

    compiler = f"{target['mtriple']}-g++"
    executable.export_library(str(so_path), fcompile=cc.cross_compiler(compiler))


# --- target ---------------------------------------------------------------------------------


def resolve_target(compiler_target: Mapping[str, Any], threads: int | None = None) -> dict:
    """The TVM target dict with ``mcpu: auto`` replaced by this host's CPU.

    For the host CPU ``num-cores`` is set (``threads``, else the YAML's value, else every usable
    core): MetaSchedule sizes parallel loops by it, and it is part of the tuning-database key.
    """
    target = {"kind": "llvm", **compiler_target}
    if target.get("mcpu") == "auto":
        del target["mcpu"]
        target.update(host_cpu_attrs())
    if target["kind"] == "llvm" and is_host_target(target):
        target["num-cores"] = int(threads or target.get("num-cores") or usable_cores())
    return target


def host_cpu_attrs() -> dict:
    """``{"mcpu": <LLVM's name for this CPU>}`` (e.g. ``znver5``), or, when LLVM cannot name
    it, the SIMD features from ``/proc/cpuinfo`` as ``mattr``."""
    try:
        from tvm.target import codegen

        cpu = str(codegen.llvm_get_system_cpu())
    except Exception:  # noqa: BLE001 - an LLVM-less build or a missing API: use cpuinfo
        cpu = ""
    if cpu and cpu != "generic":
        return {"mcpu": cpu}
    features = sorted({_CPUINFO_FEATURES[f] for f in _cpuinfo_flags() if f in _CPUINFO_FEATURES})
    return {"mattr": features} if features else {}


def _cpuinfo_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def is_host_target(target: Mapping[str, Any]) -> bool:
    """True when the target's code runs on this machine (no ``mtriple`` for another arch)."""
    triple = target.get("mtriple")
    return not triple or str(triple).split("-")[0] == platform.machine()


def usable_cores() -> int:
    """CPUs this process may run on (the affinity mask, which ``os.cpu_count`` ignores)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def tuning_db_dir(cache_dir: Path, target: Mapping[str, Any]) -> Path:
    """``<cache>/tvm-tuning/<key>``: one database per resolved target and TVM version, since
    records are only valid for the target (incl. ``num-cores``) and IR they were measured on."""
    import tvm

    blob = json.dumps({"target": target, "tvm": tvm.__version__}, sort_keys=True, default=str)
    return Path(cache_dir) / TUNING_SUBDIR / hashlib.sha256(blob.encode()).hexdigest()[:16]


# --- tuning ---------------------------------------------------------------------------------


def tune(mod: tvm.IRModule, target: tvm.target.Target, db_dir: Path, trials: int, threads: int,
         config: TuningConfig) -> tuple[TuningReport, Database]:
    """Tune the kernels that the database has not covered at this budget yet; return what was
    done and the database of best schedules to compile with.

    ``trials`` is the budget for the whole model, split evenly over its kernels (heaviest first,
    so a budget smaller than the kernel count goes where the FLOPs are). The ledger counts the
    trials each kernel had in earlier runs: a kernel that already had its share is skipped (a
    rerun measures nothing), one that had less is topped up to it.
    """
    from tvm.s_tir import meta_schedule as ms

    start = time.perf_counter()
    db_dir.mkdir(parents=True, exist_ok=True)
    tasks = _heaviest_first(ms.relax_integration.extract_tasks(mod, target))
    per_task = max(1, trials // max(1, len(tasks)))
    with _exclusive(db_dir):
        ledger = _read_ledger(db_dir)
        todo = _uncovered(tasks, ledger, per_task)[:trials]  # >= 1 trial per task started
        new_trials = 0
        if todo or not (db_dir / BEST_SUBDIR).is_dir():  # a cache from before best/ existed
            history = ms.database.JSONDatabase(work_dir=str(db_dir))
            before = len(history)
            for missing, group in _by_missing_trials(todo, ledger, per_task):
                _search(group, target, history, db_dir, missing, threads, config)
                ledger.update({_task_key(t): per_task for t in group})
                _write_ledger(db_dir, ledger)
            new_trials = len(history) - before
            _write_best(history, db_dir)
        best = ms.database.JSONDatabase(work_dir=str(db_dir / BEST_SUBDIR))
    unscheduled = sum(not _has_valid_record(best, t) for t in tasks)
    report = TuningReport(tuned=unscheduled < len(tasks), seconds=time.perf_counter() - start,
                          tasks=len(tasks), new_trials=new_trials,
                          tasks_without_schedule=unscheduled, database=db_dir)
    return report, best


def _uncovered(tasks: list[ExtractedTask], ledger: Mapping[str, int],
               per_task: int) -> list[ExtractedTask]:
    """Tasks that got fewer than ``per_task`` trials so far."""
    return [t for t in tasks if ledger.get(_task_key(t), 0) < per_task]


def _by_missing_trials(tasks: list[ExtractedTask], ledger: Mapping[str, int],
                       per_task: int) -> list[tuple[int, list[ExtractedTask]]]:
    """Group tasks by the trials each still lacks, so raising the budget from 64 to 256 tops
    every task up to its share instead of adding a full share again (MetaSchedule takes one
    per-task cap per run). Usually one group: the tasks of a model share their history."""
    groups: dict[int, list[ExtractedTask]] = {}
    for task in tasks:
        groups.setdefault(per_task - ledger.get(_task_key(task), 0), []).append(task)
    return sorted(groups.items(), reverse=True)


def _write_best(history: Database, db_dir: Path) -> None:
    """Keep each kernel's fastest record in ``best/``, the only part a compile loads.

    The full history stays in ``db_dir`` (MetaSchedule's JSON files), but loading it costs
    ~7 ms per record (8.6 s for resnet18's 1254 trials), the best records ~1 per kernel.
    """
    from tvm.s_tir import meta_schedule as ms

    fresh = db_dir / f".{BEST_SUBDIR}-{os.getpid()}"
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir()
    history.dump_pruned(ms.database.JSONDatabase(work_dir=str(fresh)))
    final, stale = db_dir / BEST_SUBDIR, db_dir / f".{BEST_SUBDIR}-stale-{os.getpid()}"
    if final.exists():
        final.rename(stale)
    fresh.rename(final)
    shutil.rmtree(stale, ignore_errors=True)


def _search(tasks: list[ExtractedTask], target: tvm.target.Target, db: Database, log_dir: Path,
            per_task: int, threads: int, config: TuningConfig) -> None:
    """One MetaSchedule run over ``tasks``, logging to ``log_dir/logs/tuning.log`` only."""
    from tvm.s_tir import meta_schedule as ms

    register_host_tensor_intrinsics()
    guided = config.strategy == "evolutionary"
    strategy = (ms.search_strategy.EvolutionarySearch(
        population_size=config.population_size, genetic_num_iters=config.genetic_iters)
        if guided else ms.search_strategy.ReplayTrace())
    contexts = [_tune_context(task, i, target, strategy, threads, config.seed)
                for i, task in enumerate(tasks)]
    with _meta_schedule_logs(log_dir / "logs" / "tuning.log"):
        ms.tune_tasks(
            tasks=contexts, task_weights=[float(t.weight) for t in tasks],
            work_dir=str(log_dir), max_trials_global=per_task * len(contexts),
            max_trials_per_task=per_task,
            num_trials_per_iter=max(1, min(per_task, config.max_trials_per_iter)),
            builder=in_process_builder(), runner=_local_runner(threads, config), database=db,
            cost_model="xgb" if guided else "random",
        )


def _tune_context(task: ExtractedTask, index: int, target: tvm.target.Target, strategy: Any,
                  threads: int, seed: int) -> Any:
    """What ``extracted_tasks_to_tune_contexts`` builds, minus its logging setup: that one
    re-configures Python logging globally (dictConfig, a console handler) and crashes when the
    logger has an unnamed handler, as under pytest."""
    from tvm.s_tir import meta_schedule as ms

    return ms.TuneContext(
        mod=_task_mod(task), target=task.target, space_generator="post-order-apply",
        search_strategy=strategy, task_name=task.task_name, rand_state=seed + index,
        num_threads=threads, logger=logging.getLogger(f"{_MS_LOGGER}.edgeprune.task_{index}"),
    ).clone()  # clone: each task needs its own search-strategy state


@contextmanager
def _meta_schedule_logs(path: Path) -> Iterator[None]:
    """Route MetaSchedule's logs (a table per trial batch) to ``path`` and nowhere else while
    tuning; the logger's previous handlers and settings come back afterwards. TVM's C++ side
    writes warnings straight to stderr (e.g. "Unknown schedule rule meta_schedule.pool_max"
    once per tuning run), so file descriptor 2 goes to the same file meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(_MS_LOGGER)
    saved = (logger.handlers[:], logger.level, logger.propagate)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(name)s %(message)s"))
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        with _stderr_to(path):
            yield
    finally:
        handler.close()
        logger.handlers = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]


@contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Point file descriptor 2 (what C++ ``LOG(WARNING)`` writes to) at ``path``."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "a") as log:
            os.dup2(log.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def register_host_tensor_intrinsics() -> None:
    """Register only this CPU's tensor intrinsics before MetaSchedule imports all of them.

    ``TuneContext`` imports the package ``tvm.s_tir.tensor_intrin``, which parses ~250 TVMScript
    kernels for CUDA, ROCm, Hexagon, ARM and x86. Each parse calls ``inspect.stack()``, which
    rescans ``sys.modules`` for every frame, so with torch loaded the import takes 30-150 s
    (measured here: 43 s, against 0.4 s for the x86 file alone). The CPU
    schedule rules only need the host's intrinsics (x86: ``dot_16x4_vnni``/``_avx512``), so the
    package is registered un-executed and only the host's submodule is imported. Later imports
    of the package in this process get it without the GPU intrinsics (import a submodule such
    as ``tvm.s_tir.tensor_intrin.cuda`` explicitly if needed). Unknown architectures get the
    full import.
    """
    import importlib
    import importlib.util

    package = "tvm.s_tir.tensor_intrin"
    submodule = _INTRINSICS_BY_ARCH.get(platform.machine().lower())
    if package in sys.modules:
        return
    if submodule is None:
        importlib.import_module(package)
        return
    spec = importlib.util.find_spec(package)
    sys.modules[package] = importlib.util.module_from_spec(spec)
    importlib.import_module(f"{package}.{submodule}")


def in_process_builder() -> Any:
    """A MetaSchedule builder that compiles candidates in this process, one after another.

    Why not ``LocalBuilder``: it starts fresh Python workers for every batch (~2.6 s each to
    import TVM, against 0.05-0.25 s to build one candidate), and its default build function
    imports ``tvm.s_tir.tensor_intrin`` (26-45 s here), which makes every build time out.
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import PyBuilder

    @derived_object
    class InProcessBuilder(PyBuilder):
        def build(self, build_inputs: list) -> list:
            return [_build_candidate(item.mod, item.target) for item in build_inputs]

    return InProcessBuilder()


def _build_candidate(mod: tvm.IRModule, target: tvm.target.Target) -> Any:
    """Build one candidate into the tar file the runner loads (what LocalBuilder's worker does,
    minus the tensor-intrinsic import)."""
    from tvm import tirx
    from tvm.s_tir.meta_schedule.builder import BuilderResult
    from tvm.s_tir.meta_schedule.builder.local_builder import default_export
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    try:
        mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
        return BuilderResult(default_export(tirx.build(mod, target=target)), None)
    except Exception as exc:  # noqa: BLE001 - a failed candidate is a result, not an error
        return BuilderResult(None, f"in-process build failed: {_one_line(exc)}")


def _local_runner(threads: int, config: TuningConfig) -> Any:
    """Measures candidates in a worker process that runs them on ``threads`` TVM threads.

    The worker reads TVM_NUM_THREADS when it starts; without it TVM assumes SMT and uses half
    the cores, so candidates would be ranked for the wrong thread count.
    """
    from tvm.s_tir import meta_schedule as ms

    def set_threads() -> None:  # runs in the worker; a closure so cloudpickle ships it by value
        os.environ[THREADS_ENV] = str(threads)

    evaluator = ms.runner.EvaluatorConfig(
        number=config.runner_number, repeat=1, min_repeat_ms=config.runner_min_repeat_ms)
    return ms.runner.LocalRunner(evaluator_config=evaluator, initializer=set_threads)


def _heaviest_first(tasks: list[ExtractedTask]) -> list[ExtractedTask]:
    """Tasks by estimated FLOPs (times how often each occurs), largest first; kernels that are
    already scheduled cannot be tuned and are dropped."""
    from tvm.s_tir.analysis import estimate_tir_flops

    def cost(task: ExtractedTask) -> float:
        try:
            return float(estimate_tir_flops(_task_mod(task))) * task.weight
        except Exception:  # noqa: BLE001 - an estimate; unknown costs sort last
            return 0.0

    open_tasks = [t for t in tasks if not t.mod.attrs or not t.mod.attrs.get("tirx.is_scheduled")]
    return sorted(open_tasks, key=cost, reverse=True)


def _task_mod(task: ExtractedTask) -> tvm.IRModule:
    return task.dispatched[0]


def _task_key(task: ExtractedTask) -> str:
    """The task's structural hash: the same kernel shape in another model has the same key."""
    import tvm_ffi

    return str(tvm_ffi.structural_hash(_task_mod(task)))


def _has_valid_record(db: Database, task: ExtractedTask) -> bool:
    mod = _task_mod(task)
    return bool(db.has_workload(mod) and db.get_top_k(db.commit_workload(mod), 1))


def _read_ledger(db_dir: Path) -> dict[str, int]:
    path = db_dir / LEDGER_FILE
    try:
        return {str(k): int(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def _write_ledger(db_dir: Path, ledger: Mapping[str, int]) -> None:
    """Write atomically: a half-written ledger would make every task look untuned."""
    tmp = db_dir / f".{LEDGER_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(dict(sorted(ledger.items())), indent=0))
    tmp.replace(db_dir / LEDGER_FILE)


@contextmanager
def _exclusive(db_dir: Path) -> Iterator[None]:
    """Serialise tuning into one database across processes (two runs would both re-measure and
    interleave their records); a no-op where ``fcntl`` does not exist."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(db_dir / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _artifact_meta(report: TuningReport, trials: int, target: Mapping[str, Any]) -> dict:
    return {
        "tuned": report.tuned,
        "tune_trials": trials,
        "tuning_seconds": round(report.seconds, 3),
        "tuning_tasks": report.tasks,
        "new_trials": report.new_trials,
        "tasks_without_schedule": report.tasks_without_schedule,
        "tvm_target": json.dumps(dict(target), sort_keys=True),
        "database": str(report.database) if report.database else "",
    }


# --- running --------------------------------------------------------------------------------


def _load_vm(artifact: Artifact) -> Any:
    tvm = _import_tvm()
    from tvm import relax

    target = json.loads(artifact.meta.get("tvm_target") or "{}")
    if not is_host_target(target):
        raise CompileError(f"{artifact.path.name} is built for {target.get('mtriple')}; "
                           "run it on that device")
    with _tvm_step("loading the artifact"):
        return relax.VirtualMachine(tvm.runtime.load_module(str(artifact.path)), tvm.cpu())


@contextmanager
def runtime_threads(threads: int) -> Iterator[int]:
    """Run TVM kernels called from this thread on ``threads`` workers; yields the count in use.

    How TVM threads work (0.27): each calling thread gets a worker pool sized once, from
    TVM_NUM_THREADS, the first time it runs parallel code; unset, TVM takes half the logical
    CPUs (it assumes SMT), i.e. one thread on a 2-core VM. ``runtime.config_threadpool`` can
    only shrink an existing pool, and it pins this thread's CPU affinity. So the pool is first
    created at full size, then shrunk to ``threads``; on exit TVM_NUM_THREADS and this thread's
    affinity are restored, so code that runs later (PyTorch) is not left pinned to fewer cores.
    """
    import tvm

    configure = tvm.get_global_func("runtime.config_threadpool")
    full = usable_cores()
    threads = max(1, min(threads, full))
    saved_env = os.environ.get(THREADS_ENV)
    saved_affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        os.environ[THREADS_ENV] = str(full)
        configure(_BIG_CORES, full)  # creates this thread's pool at full size if it is new
        os.environ[THREADS_ENV] = str(threads)
        configure(_BIG_CORES, threads)
        yield int(tvm.runtime.num_threads())
    finally:
        if saved_env is None:
            os.environ.pop(THREADS_ENV, None)
        else:
            os.environ[THREADS_ENV] = saved_env
        if saved_affinity is not None:
            os.sched_setaffinity(0, saved_affinity)


def _first_output(out: Any) -> Any:
    """Single-output models return a tensor (``unwrap_unit_return_tuple``); others, a tuple."""
    return out if hasattr(out, "numpy") else out[0]


# --- errors ---------------------------------------------------------------------------------


def _import_tvm() -> Any:
    try:
        import tvm
    except ImportError:
        raise ToolchainMissingError(MISSING_REASON) from None
    return tvm


@contextmanager
def _tvm_step(what: str) -> Iterator[None]:
    """Turn a TVM failure in ``what`` into a one-line CompileError (the CLI prints no traceback)."""
    try:
        yield
    except EdgepruneError:
        raise
    except Exception as exc:  # noqa: BLE001 - TVM raises many types; we re-raise typed
        raise CompileError(f"TVM {what} failed: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    """The first non-empty line of the message, clipped: TVM/torch messages run to pages."""
    for line in str(exc).splitlines():
        if line.strip():
            text = line.strip()
            return text if len(text) <= 300 else text[:297] + "..."
    return type(exc).__name__


def _user_frame(exc: BaseException) -> str:
    """``file.py:27 (if y.sum() > 0:)``: the deepest traceback frame outside torch, i.e. the
    model code torch.export stopped in, or "" when there is none."""
    torch_dir = str(Path(torch.__file__).parent)
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(torch_dir) and f.filename != __file__]
    if not frames:
        return ""
    frame = frames[-1]
    code = f" ({frame.line.strip()})" if frame.line else ""
    return f"{Path(frame.filename).name}:{frame.lineno}{code}"

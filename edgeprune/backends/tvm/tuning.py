"""MetaSchedule tuning into a persistent, shared database.

TVM 0.27 emits no fast CPU code without tuning, and tuning costs minutes, so nothing is measured
twice: records live in one JSON database per resolved target and TVM version, and a ledger beside
it counts the trials each kernel (by structural hash) has had. A rerun, or a pruned variant that
keeps some layer shapes, skips the kernels already covered at this budget.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune.backends.tvm import metaschedule
from edgeprune.io import write_json_atomic

if TYPE_CHECKING:
    import tvm
    from tvm.s_tir.meta_schedule import Database, ExtractedTask

TUNING_SUBDIR = "tvm-tuning"
LEDGER_FILE = "edgeprune-ledger.json"
BEST_SUBDIR = "best"


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


def tuning_db_dir(cache_dir: Path, target: Mapping[str, Any]) -> Path:
    """``<cache>/tvm-tuning/<key>``: one database per resolved target and TVM version, since
    records are only valid for the target (incl. ``num-cores``) and IR they were measured on."""
    import tvm

    blob = json.dumps({"target": target, "tvm": tvm.__version__}, sort_keys=True, default=str)
    return Path(cache_dir) / TUNING_SUBDIR / hashlib.sha256(blob.encode()).hexdigest()[:16]


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
                write_json_atomic(db_dir / LEDGER_FILE, dict(sorted(ledger.items())))
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
    return sorted(groups.items(), key=lambda item: item[0], reverse=True)


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

    metaschedule.register_host_tensor_intrinsics()
    guided = config.strategy == "evolutionary"
    strategy = (ms.search_strategy.EvolutionarySearch(
        population_size=config.population_size, genetic_num_iters=config.genetic_iters)
        if guided else ms.search_strategy.ReplayTrace())
    contexts = [metaschedule.tune_context(task, i, target, strategy, threads, config.seed)
                for i, task in enumerate(tasks)]
    runner = metaschedule.local_runner(threads, config.runner_number, config.runner_min_repeat_ms)
    with metaschedule.meta_schedule_logs(log_dir / "logs" / "tuning.log"):
        ms.tune_tasks(
            tasks=contexts, task_weights=[float(t.weight) for t in tasks],
            work_dir=str(log_dir), max_trials_global=per_task * len(contexts),
            max_trials_per_task=per_task,
            num_trials_per_iter=max(1, min(per_task, config.max_trials_per_iter)),
            builder=metaschedule.in_process_builder(), runner=runner, database=db,
            cost_model="xgb" if guided else "random",
        )


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
    """The kernel MetaSchedule tunes for ``task`` (its first dispatched module)."""
    return task.dispatched[0]


def _task_key(task: ExtractedTask) -> str:
    """The task's structural hash: the same kernel shape in another model has the same key."""
    import tvm_ffi

    return str(tvm_ffi.structural_hash(_task_mod(task)))


def _has_valid_record(db: Database, task: ExtractedTask) -> bool:
    """Whether ``db`` holds a measured schedule for the task (else it compiles untuned)."""
    mod = _task_mod(task)
    return bool(db.has_workload(mod) and db.get_top_k(db.commit_workload(mod), 1))


def _read_ledger(db_dir: Path) -> dict[str, int]:
    """Trials per task key from earlier runs; unreadable means none (the tasks are re-tuned)."""
    path = db_dir / LEDGER_FILE
    try:
        return {str(k): int(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


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

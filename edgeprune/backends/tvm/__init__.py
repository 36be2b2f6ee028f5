"""Apache TVM backend, split by concern: target resolution, tuning, build, cache, run.

Importing this package registers the ``tvm`` runtime (:mod:`.backend`); the backend registry
finds the package by ``pkgutil``. TVM itself is imported only inside functions, so this stays
cheap. The names below are the package's public API (tests, bench/ and the evaluator use them).
"""

from edgeprune.backends.tvm.backend import TVMBackend
from edgeprune.backends.tvm.build import UNTUNED_NOTE, export_program, to_relax
from edgeprune.backends.tvm.cache import COMPILED_SUBDIR, compiled_cache_key
from edgeprune.backends.tvm.common import MISSING_REASON
from edgeprune.backends.tvm.metaschedule import (
    THREADS_ENV,
    in_process_builder,
    register_host_tensor_intrinsics,
)
from edgeprune.backends.tvm.run import SOURCE, runs_here, runtime_threads
from edgeprune.backends.tvm.target import (
    cross_compiler,
    foreign_tuning_reason,
    host_cpu_attrs,
    is_host_target,
    missing_cross_compiler_reason,
    resolve_target,
    usable_cores,
)
from edgeprune.backends.tvm.tuning import (
    BEST_SUBDIR,
    LEDGER_FILE,
    TUNING_SUBDIR,
    TuningConfig,
    TuningReport,
    tune,
    tuning_db_dir,
)

__all__ = [
    "BEST_SUBDIR", "COMPILED_SUBDIR", "LEDGER_FILE", "MISSING_REASON", "SOURCE", "THREADS_ENV",
    "TUNING_SUBDIR", "UNTUNED_NOTE", "TVMBackend", "TuningConfig", "TuningReport",
    "compiled_cache_key", "cross_compiler", "export_program", "foreign_tuning_reason",
    "host_cpu_attrs", "in_process_builder", "is_host_target", "missing_cross_compiler_reason",
    "register_host_tensor_intrinsics", "resolve_target", "runs_here", "runtime_threads",
    "to_relax", "tune", "tuning_db_dir", "usable_cores",
]

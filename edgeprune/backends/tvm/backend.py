"""Apache TVM (Relax) backend: torch.export -> Relax -> optional MetaSchedule tuning -> one ``.so``.

This class only decides; the work is in the sibling modules: :mod:`.target` (which CPU, can this
machine build and run it), :mod:`.tuning` (MetaSchedule into a shared database), :mod:`.build`
(export, lower, link), :mod:`.cache` (compiled libraries reused across runs), :mod:`.run` (load,
threads, timing). TVM 0.27 emits no fast CPU code without tuning, so whether an artifact is tuned
is part of its identity (``meta["tuned"]``, and ``meta["note"]`` when it is not).
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgeprune.artifact import Artifact
from edgeprune.backends import backends
from edgeprune.backends.base import CompileOptions, Session
from edgeprune.backends.tvm import cache, run
from edgeprune.backends.tvm.build import artifact_meta, build_library, export_program, sidecar
from edgeprune.backends.tvm.common import MISSING_REASON, import_tvm
from edgeprune.backends.tvm.target import (
    foreign_tuning_reason,
    missing_cross_compiler_reason,
    resolve_target,
)
from edgeprune.backends.tvm.tuning import TuningConfig
from edgeprune.errors import ToolchainMissingError
from edgeprune.profilers.base import MeasureSettings, Measurement


@backends.register("tvm")
class TVMBackend:
    """Compiles with TVM Relax for an LLVM (CPU) target and runs the ``.so`` with the Relax VM."""

    name = "tvm"

    def __init__(self, tuning: TuningConfig | None = None) -> None:
        self.tuning = tuning or TuningConfig()

    def unavailable_reason(self) -> str | None:
        """``None`` when TVM is importable, else how to install it."""
        try:
            import tvm  # noqa: F401
        except ImportError:
            return MISSING_REASON
        return None

    def unavailable_reason_for(self, options: CompileOptions) -> str | None:
        """Like :meth:`unavailable_reason`, for these options: also names a missing cross
        compiler for a board target, with the command that installs it. ``compile`` raises
        :class:`ToolchainMissingError` with the same line before it builds anything."""
        reason = self.unavailable_reason()
        if reason:
            return reason
        return missing_cross_compiler_reason({"kind": "llvm", **options.compiler_target})

    def runs_here(self, artifact: Artifact) -> bool:
        """Whether this machine can load the artifact (False for, e.g., an aarch64 ``.so`` on
        x86-64: validate it under emulation or on the board instead)."""
        return run.runs_here(artifact)

    def compile(
        self, model: torch.nn.Module, example: torch.Tensor, out_dir: Path, options: CompileOptions
    ) -> Artifact:
        """Export, then reuse the cached library for this exact graph, weights, target and
        budget, or import, tune (``options.tune_trials``; skipped with the reason in
        ``meta["tuning_skipped"]`` when this machine cannot run the target's code) and build
        ``model.so`` into the cache. ``meta["compile_cache"]`` says which happened."""
        reason = self.unavailable_reason_for(options)
        if reason:
            raise ToolchainMissingError(reason)
        import_tvm()
        model.eval()
        target = resolve_target(options.compiler_target, options.threads)
        skipped = foreign_tuning_reason(target) if options.tune_trials > 0 else None
        trials = 0 if skipped else options.tune_trials
        exported = export_program(model, example)
        key = cache.compiled_cache_key(exported, target, trials, self.tuning, options.precision)
        entry = cache.lookup(options.cache_dir, key)
        status = "hit" if entry else "miss"
        if entry is None:
            def fill(staging: Path) -> tuple[dict, dict]:
                report = build_library(exported, target, trials, options.cache_dir, self.tuning,
                                       staging / cache.SO_NAME)
                meta = artifact_meta(report, trials, target, skipped)
                return meta, sidecar(meta, target, tuple(example.shape))

            entry = cache.store(options.cache_dir, key, fill)
        so_path, side_path, meta = cache.install(entry, out_dir, status)
        return Artifact(runtime=self.name, target=options.target_name, files=(so_path, side_path),
                        input_shape=tuple(example.shape), meta=meta)

    def load(self, artifact: Artifact, threads: int | None = None) -> Session:
        """A callable running the artifact on this CPU with ``threads`` TVM workers (default:
        every core this process may use). Input must have the compiled shape."""
        return run.session(artifact, threads)

    def measure(self, artifact: Artifact, settings: MeasureSettings) -> Measurement:
        """Median of ``settings.repeats`` timed samples on this CPU (see :func:`run.measure`)."""
        return run.measure(artifact, settings)

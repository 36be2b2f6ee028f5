"""From a PyTorch model to one self-contained ``model.so``: torch.export -> Relax -> TIR -> .so.

Weights are bound as constants, so the library needs no parameter file. Kernels are lowered
first because both MetaSchedule's task extraction and ``tvm.compile`` take the fused TIR form;
tuning records, when there are any, replace those kernels before code generation.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from edgeprune.backends.tvm.common import import_tvm, one_line, tvm_step
from edgeprune.backends.tvm.target import cross_compiler, usable_cores
from edgeprune.backends.tvm.tuning import TuningConfig, TuningReport, tune, tuning_db_dir
from edgeprune.errors import CompileError, TraceError

if TYPE_CHECKING:
    import tvm
    from tvm.s_tir.meta_schedule import Database

_UNSUPPORTED = "Unsupported function types"
UNTUNED_NOTE = "UNTUNED (--tune-trials 0): slow code, not TVM's best"


def export_program(model: torch.nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` the model, or raise :class:`TraceError` naming where tracing stopped."""
    try:
        with torch.no_grad():
            return torch.export.export(model, (example,))
    except Exception as exc:  # noqa: BLE001 - torch.export raises many types; we re-raise typed
        where = _user_frame(exc)
        at = f" at {where}" if where else ""
        raise TraceError(
            f"torch.export cannot trace {type(model).__name__}{at}: {one_line(exc)}"
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
        raise CompileError(f"TVM's PyTorch frontend failed: {one_line(exc)}") from exc
    except Exception as exc:  # noqa: BLE001
        raise CompileError(f"TVM's PyTorch frontend failed: {one_line(exc)}") from exc


def build_library(exported: torch.export.ExportedProgram, target_dict: Mapping[str, Any],
                  trials: int, cache_dir: Path, config: TuningConfig, so_path: Path) -> TuningReport:
    """Import, lower, tune with ``trials`` (0: untuned) and link ``so_path``; return what
    tuning did. ``trials`` must already be 0 for a target this machine cannot run."""
    tvm = import_tvm()
    mod = to_relax(exported)
    with tvm_step("target setup"):
        target = tvm.target.Target(dict(target_dict))
    layout = config.weight_layout_rewrite and trials > 0
    with tvm_step("lowering"):
        mod = _lower(mod, target, layout)
    report = TuningReport(tuned=False)
    if trials > 0:
        db_dir = tuning_db_dir(cache_dir, target_dict)
        threads = int(target_dict.get("num-cores", usable_cores()))
        with tvm_step("MetaSchedule tuning"):
            report, best = tune(mod, target, db_dir, trials, threads, config)
        with tvm_step("applying tuning records"):
            mod = _apply_records(mod, target, best, layout)
    with tvm_step("build"):
        _export_library(tvm.compile(mod, target=target), so_path, target_dict)
    return report


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


def _export_library(executable: Any, so_path: Path, target: Mapping[str, Any]) -> None:
    """Link the executable into one ``.so``; a foreign ``mtriple`` needs ``<triple>-g++``."""
    compiler = cross_compiler(target)
    if compiler is None:
        executable.export_library(str(so_path))
        return
    from tvm.support import cc

    executable.export_library(str(so_path), fcompile=cc.cross_compiler(compiler))


def artifact_meta(report: TuningReport, trials: int, target: Mapping[str, Any],
                  tuning_skipped: str | None = None) -> dict:
    """The compile facts a report must show; ``note`` (any backend may set one) warns when the
    code is untuned: untuned TVM ran 6-16x slower than tuned here (mobilenet_v2, resnet18), so
    its figure must not pass for TVM's."""
    meta: dict[str, Any] = {
        "tuned": report.tuned,
        "tune_trials": trials,
        "tuning_seconds": round(report.seconds, 3),
        "tuning_tasks": report.tasks,
        "new_trials": report.new_trials,
        "tasks_without_schedule": report.tasks_without_schedule,
        "tvm_target": json.dumps(dict(target), sort_keys=True),
        "database": str(report.database) if report.database else "",
    }
    if tuning_skipped:
        meta["tuning_skipped"] = tuning_skipped
    note = _untuned_note(report, trials, tuning_skipped)
    if note:
        meta["note"] = note
    return meta


def _untuned_note(report: TuningReport, trials: int, tuning_skipped: str | None) -> str | None:
    """One line saying why (part of) the code is untuned, or None when every kernel is tuned."""
    if tuning_skipped:
        return "UNTUNED (tuning skipped: this machine cannot run the target's code): slow code, " \
               "not TVM's best"
    if trials <= 0:
        return UNTUNED_NOTE
    if not report.tuned:
        return f"UNTUNED (no kernel got a valid schedule in {trials} trials): slow code, not TVM's best"
    if report.tasks_without_schedule:
        return (f"partly tuned: {report.tasks_without_schedule} of {report.tasks} kernels have "
                "no valid schedule and run untuned")
    return None


def sidecar(meta: Mapping[str, Any], target: Mapping[str, Any],
            input_shape: tuple[int, ...]) -> dict:
    """``model.json`` beside ``model.so``: what a runner on the board needs to feed it."""
    import tvm

    return {"input_shape": list(input_shape), "input_dtype": "float32",
            "tvm_version": tvm.__version__, **meta, "tvm_target": dict(target)}


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

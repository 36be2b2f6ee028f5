"""Precision: calibration data, which layers stay in float, and — for ``--precision auto`` — which
precision ships.

Order of the stages (docs/quantization.md): the baseline is compiled at the shipping precision,
the search measures every candidate at that precision (a latency budget is met by the quantized
artifact, not by an FP32 stand-in), and the final artifact is calibrated again on the pruned,
fine-tuned network. The per-layer fallback is decided once, on the unpruned network, and replayed
from the plan: ONNX node names follow module paths, so they survive channel pruning.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeprune.backends import get_backend
from edgeprune.backends.base import Calibration, PrecisionAware, QatToolkit
from edgeprune.candidate.candidate import Candidate, Evaluated
from edgeprune.errors import ConfigError
from edgeprune.models.loading import Loaded
from edgeprune.progress import ProgressSink

FLOAT = ("fp32", "fp16", "bf16", "tf32")
AUTO = "auto"
from edgeprune.quantize.ort_int8 import CALIBRATION_METHODS  # one definition, beside the quantizer


@dataclass(frozen=True)
class PrecisionConfig:
    """``precision`` is one the target lists, or ``auto`` (the fastest artifact within
    ``max_accuracy_drop`` of the float model ships); integer precisions calibrate on
    ``calibration_samples`` training inputs with ``calibration_method``."""

    precision: str = "fp32"
    max_accuracy_drop: float | None = None  # fraction: 0.01 = one point of top-1
    calibration_samples: int = 256
    calibration_method: str = "minmax"
    qat_epochs: float | None = None  # None: 1 for low-bit widths, 0 (calibration only) for int8

    def __post_init__(self) -> None:
        if self.calibration_method not in CALIBRATION_METHODS:
            raise ConfigError(f"unknown calibration {self.calibration_method!r}; known: {', '.join(CALIBRATION_METHODS)}")
        if self.calibration_samples < 1:
            raise ConfigError("--calibration-samples must be >= 1")
        if self.max_accuracy_drop is not None and not 0 <= self.max_accuracy_drop < 1:
            raise ConfigError("--max-accuracy-drop is a fraction in [0, 1), e.g. 0.01 for one point")
        if self.qat_epochs is not None:  # one definition of what --qat-epochs accepts
            from edgeprune.quantize.aware import qat_epochs

            qat_epochs(self.precision, self.qat_epochs)

    def candidates(self, target_precisions: list[str]) -> list[str]:
        """The precisions to try, by canonical name (``int4`` is ``w4a4``, ``w8a8`` is ``int8``); a
        precision the target lacks is a clear error naming its own."""
        names = [canonical(p) for p in target_precisions]
        if self.precision == AUTO:
            return list(dict.fromkeys(names))
        if canonical(self.precision) not in names:
            raise ConfigError(f"the target has no precision {self.precision!r}; it has {', '.join(target_precisions)}")
        return [canonical(self.precision)]


def canonical(precision: str) -> str:
    """One spelling per precision (PrecisionSpec's); names it does not parse (bf16) stay as written."""
    from edgeprune.quantize.precision import PrecisionSpec

    try:
        return PrecisionSpec.parse(precision).name
    except ConfigError:
        return precision


def builds(runtime: str, precision: str) -> bool:
    """Whether a runtime's backend builds ``precision`` (backends that say nothing build fp32)."""
    backend = get_backend(runtime)
    return precision in (backend.precisions if isinstance(backend, PrecisionAware) else ("fp32",))


def calibration_for(config: PrecisionConfig, loaded: Loaded, precisions: list[str]) -> Calibration:
    """Training inputs at the compiled batch size: integer precisions calibrate on them and fp16
    checks its activation range on them; nothing when every precision is fp32-like."""
    if all(p in FLOAT and p != "fp16" for p in precisions):
        return Calibration()
    batch = loaded.example.shape[0]
    n = min(config.calibration_samples, len(loaded.data.train))
    xs = torch.stack([loaded.data.train[i][0] for i in range(n)])
    usable = (len(xs) // batch) * batch or batch
    xs = xs[:usable] if len(xs) >= batch else xs[:1].expand(batch, *xs.shape[1:])
    batches = tuple(b.numpy().astype(np.float32) for b in xs.split(batch))
    return Calibration(batches, config.calibration_method)


def _val_arrays(loaded: Loaded, limit: int = 512) -> tuple[np.ndarray, np.ndarray]:
    n = min(limit, len(loaded.data.val))
    xs = torch.stack([loaded.data.val[i][0] for i in range(n)]).numpy().astype(np.float32)
    ys = np.array([int(loaded.data.val[i][1]) for i in range(n)])
    return xs, ys


def float_layers(config: PrecisionConfig, loaded: Loaded, calibration: Calibration,
                 progress: ProgressSink) -> tuple[dict[str, str], dict[str, Any]]:
    """Accuracy-aware INT8: the layers to keep in fp32 so the INT8 model, run in ONNX Runtime, stays
    within ``max_accuracy_drop`` of the float model (measured per-layer sensitivity, most
    sensitive first). Returns the per-layer overrides and the evidence for the manifest."""
    from edgeprune.backends.onnx_export import export_onnx
    from edgeprune.quantize.ort_int8 import OrtInt8Config
    from edgeprune.quantize.sensitivity import FallbackConfig, accuracy_aware_int8

    val_x, val_y = _val_arrays(loaded)
    with tempfile.TemporaryDirectory(prefix="edgeprune-precision-") as tmp:
        src = Path(tmp) / "float.onnx"
        export_onnx(loaded.model, loaded.example, src)
        fallback = FallbackConfig(max_accuracy_drop=float(config.max_accuracy_drop or 0.0),
                                  int8=OrtInt8Config(calibration=config.calibration_method, activations="u8"))
        result = accuracy_aware_int8(src, Path(tmp) / "int8.onnx", calibration.batches, val_x, val_y, fallback)
    kept = {layer: "fp32" for layer in result.steps[-1].float_layers}
    progress.log(f"int8 accuracy fallback: {len(kept)} layer(s) kept in fp32, top-1 {result.accuracy:.4f} "
                 f"vs float {result.float_accuracy:.4f} (bound {fallback.max_accuracy_drop:.1%}, ONNX Runtime)")
    evidence = {"float_accuracy": result.float_accuracy, "int8_accuracy": result.accuracy, "met": result.met,
                "float_layers": sorted(kept), "sensitivity": [s.__dict__ for s in result.sensitivities[:10]],
                "validation_samples": int(len(val_x))}
    return kept, evidence


def pick_auto(options: dict[tuple[str, str], Evaluated], float_accuracy: float,
              max_drop: float) -> tuple[tuple[str, str], list[dict[str, Any]]]:
    """The fastest (runtime, precision) whose compiled artifact stays within ``max_drop`` of the
    float model's accuracy; returns the choice and the table of what was tried."""
    table = [{"runtime": rt, "precision": p, "latency_ms": e.median_ms, "accuracy": e.accuracy,
              "source": e.measurement.latency.source,
              "within_drop": (e.accuracy is not None and float_accuracy - e.accuracy <= max_drop)}
             for (rt, p), e in options.items()]
    fine = [(rt, p) for (rt, p), e in options.items()
            if e.accuracy is not None and float_accuracy - e.accuracy <= max_drop]
    if not fine:
        raise ConfigError(f"no precision keeps accuracy within {max_drop:.1%} of the float model; "
                          "raise --max-accuracy-drop or use --precision fp32")
    return min(fine, key=lambda key: options[key].median_ms), table


def with_precision(candidate: Candidate, precision: str, layers: dict[str, str]) -> Candidate:
    """The same network, to be compiled at ``precision`` with per-layer overrides (recorded in its plan)."""
    plan = replace(candidate.plan, precision={"default": precision, "layers": dict(layers)})
    return replace(candidate, plan=plan)


def channel_multiple(target_multiple: int, compiler_target: dict, runtime: str, precision: str,
                     measured: dict[str, Any] | None = None) -> int:
    """What the search rounds kept channel counts to: the target YAML's multiple, raised to what the
    runtime's kernels want at this precision when the backend says (TensorRT's formats), and to
    what a board reported for the baseline engine (``engine_channel_multiple`` from trtexec's
    layer info) when a board measured it."""
    from math import lcm

    from edgeprune.backends.base import ChannelRounding

    backend = get_backend(runtime)
    wanted = backend.channel_multiple(compiler_target, precision) if isinstance(backend, ChannelRounding) else 1
    on_board = int((measured or {}).get("engine_channel_multiple") or 1)
    return lcm(target_multiple, wanted, on_board)


def quantize_result(config: PrecisionConfig, result: Candidate, calibration: Calibration, runtime: str,
                    loaders: tuple[Any, Any], lr: float, progress: ProgressSink) -> tuple[Candidate, dict[str, Any] | None]:
    """The candidate to ship: the pruned float network itself (post-training calibration happens
    in the backend), or — for ``--qat-epochs`` and low-bit widths — a quantized copy, calibrated
    and fine-tuned with its quantizers in place (QAT) by the toolkit the runtime runs fast. The
    record holds the float model's accuracy that the shipped artifact is judged against."""
    from edgeprune.quantize.aware import for_training, is_lowbit, qat_epochs
    from edgeprune.training.finetune import pytorch_accuracy

    precision = result.precision
    if precision in FLOAT or precision == AUTO:
        return result, None
    epochs = qat_epochs(precision, config.qat_epochs)
    if epochs == 0 and not is_lowbit(precision):
        return result, None
    backend = get_backend(runtime)
    qmodel, toolkit = for_training(result.model, precision, calibration.batches,
                                   backend.qat_toolkit(precision) if isinstance(backend, QatToolkit) else "modelopt")
    record = {"precision": precision, "epochs": epochs, "toolkit": toolkit,
              "float_accuracy": pytorch_accuracy(result.model, loaders[1])}
    qmodel = _qat(qmodel, epochs, loaders, lr, record, progress)
    progress.log(f"{precision} ({toolkit}, {epochs:g} QAT epochs): PyTorch top-1 {record['quantized_pytorch_accuracy']:.4f} "
                 f"vs float {record['float_accuracy']:.4f}" + ("; QAT did not help, calibrated copy kept"
                                                               if record["kept_calibrated"] else ""))
    return replace(result, model=qmodel), record


def _qat(qmodel: torch.nn.Module, epochs: float, loaders: tuple[Any, Any], lr: float, record: dict[str, Any],
         progress: ProgressSink) -> torch.nn.Module:
    """Fine-tune the quantized copy at a tenth of the fine-tune's rate (a full rate took w4a8 on
    the demo from 98 % to 85 % in one epoch, with BatchNorm folded away); keep the calibrated copy
    when QAT made it worse on the validation data."""
    import copy

    from edgeprune.training.finetune import TrainConfig, pytorch_accuracy, train

    train_loader, val_loader = loaders
    calibrated_accuracy = pytorch_accuracy(qmodel, val_loader)
    snapshot = copy.deepcopy(qmodel) if epochs > 0 else qmodel
    if epochs > 0:
        train(qmodel, train_loader, TrainConfig(epochs=epochs, lr=lr / 10), progress=progress,
              description=f"quantization-aware fine-tune ({record['precision']}, {record['toolkit']})")
    accuracy = pytorch_accuracy(qmodel, val_loader)
    record.update(calibrated_pytorch_accuracy=calibrated_accuracy, kept_calibrated=accuracy < calibrated_accuracy)
    if record["kept_calibrated"]:
        qmodel, accuracy = snapshot.eval(), calibrated_accuracy
    record["quantized_pytorch_accuracy"] = accuracy
    return qmodel


def check_against_float(record: dict[str, Any], after: dict[str, Evaluated], max_accuracy_drop: float | None) -> None:
    """A result built from a quantized PyTorch model was validated against that model; here its
    compiled artifact is held to the float model's accuracy (the precision's default drop, or
    ``--max-accuracy-drop``). One-line ValidationError naming what to change."""
    from edgeprune.candidate.validate import tolerance_for
    from edgeprune.errors import ValidationError

    bound = tolerance_for(record["precision"], max_accuracy_drop).max_accuracy_drop or 0.0
    for runtime, done in after.items():
        if done.accuracy is None:
            continue
        drop = record["float_accuracy"] - done.accuracy
        record.setdefault("artifact_accuracy", {})[runtime] = done.accuracy
        if drop > bound + 1e-12:
            raise ValidationError(
                f"{runtime} {record['precision']} artifact: top-1 {done.accuracy:.2%} is {drop * 100:.2f} pt below the "
                f"float model's {record['float_accuracy']:.2%} (max {bound * 100:.2f} pt) after {record['epochs']:g} "
                "QAT epochs; rerun with --resume and more --qat-epochs (the search is kept), or use a wider precision")

"""The oracle study behind ``edgeprune criteria compare``: every criterion against the oracle.

:func:`run_study` loads the model and data the way every command does
(:func:`edgeprune.models.loading.load_inputs`: ``--model --weights --trust-checkpoint
--input-shape --data --val-data --resize --mean --std``), optionally trains the model, runs
:func:`edgeprune.studies.compare.compare` once and writes ``criteria.json``, ``report.md`` and the
plots. The study needs, in one run, the oracle once (by far the slowest part: one pass over the
held-out batches per channel), every criterion scored once (with options such as
``taylor-so?hessian=fisher``), and the accuracy at each ratio both straight after pruning and
after a short fine-tune.

Data use, chosen so no figure is measured on data it was fitted to:
- criteria score ``batches.score`` minibatches of the *training* split (as when pruning), or,
  with ``score_on="heldout"``, the oracle's own batches (a diagnostic: approximation error
  without the sampling noise of two different small samples);
- the oracle uses the first ``batches.heldout`` minibatches of the (shuffled, seeded) validation
  split;
- accuracies are measured on the *rest* of the validation split (``batches.evaluation`` of it,
  0 = all), so the oracle's own ranking is not judged on the images it was computed from. Only
  when the oracle takes the whole validation split do the two overlap (``data.eval_overlaps_oracle``).
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from edgeprune.data import DataBundle, make_loader, take_batches
from edgeprune.errors import ConfigError
from edgeprune.io import default_cache_dir, versions, write_json_atomic, write_text_atomic
from edgeprune.models.loading import DataOptions, Loaded, ModelOptions, load_inputs
from edgeprune.progress import ProgressSink, null_progress
from edgeprune.studies.accuracy import Finetuner, ratio_key, refresh_batchnorm
from edgeprune.studies.compare import StudyData, build_criteria, compare
from edgeprune.studies.oracle import Batch
from edgeprune.studies.plots import write_plots
from edgeprune.studies.tables import render_markdown
from edgeprune.training.finetune import TrainConfig, train

DEFAULT_RATIOS = (0.1, 0.3, 0.5, 0.7)
TRAIN_RECIPE = TrainConfig(epochs=1.0, lr=0.05, weight_decay=5e-4)  # the demo net's recipe


@dataclass(frozen=True)
class StudyBatches:
    """How much data each use takes, in minibatches of ``size`` (see the module docstring)."""

    size: int = 64
    score: int = 2
    score_on: Literal["train", "heldout"] = "train"
    heldout: int = 2
    evaluation: int = 0  # 0: all of the validation split the oracle does not use

    def __post_init__(self) -> None:
        if min(self.score, self.heldout, self.size) < 1 or self.evaluation < 0:
            raise ConfigError("--score-batches, --heldout-batches and --batch-size must be >= 1, --eval-batches >= 0")
        if self.score_on not in ("train", "heldout"):
            raise ConfigError(f"--score-on must be train or heldout, got {self.score_on!r}")


@dataclass(frozen=True)
class StudyTraining:
    """Training before the study (for an untrained factory) and the fine-tune after each pruning
    (SGD, cosine schedule; 0 epochs: no fine-tuned accuracies)."""

    finetune_epochs: float = 0.5
    train_epochs: float = 0.0
    lr: float = 0.01

    def __post_init__(self) -> None:
        if self.finetune_epochs < 0 or self.train_epochs < 0 or self.lr <= 0:
            raise ConfigError("--finetune-epochs and --train-epochs must be >= 0, --lr > 0")


@dataclass(frozen=True)
class StudyConfig:
    """Everything one study run depends on (the flags of ``edgeprune criteria compare``).
    Malformed settings are refused on construction, before anything is loaded."""

    out: Path
    model: ModelOptions = field(default_factory=ModelOptions)
    data: DataOptions = field(default_factory=DataOptions)
    criteria: tuple[str, ...] = ()  # empty: every registered criterion with its defaults
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    batches: StudyBatches = field(default_factory=StudyBatches)
    training: StudyTraining = field(default_factory=StudyTraining)
    seed: int = 0
    command: str | None = None  # recorded verbatim; None: the equivalent CLI command
    cache_dir: Path | None = None  # demo weights (default: $EDGEPRUNE_CACHE or ~/.cache/edgeprune)

    def __post_init__(self) -> None:
        if not self.ratios or any(not 0 <= r < 1 for r in self.ratios):
            raise ConfigError(f"--ratios must be numbers in [0, 1), got {','.join(f'{r:g}' for r in self.ratios)}")
        if len({ratio_key(r) for r in self.ratios}) != len(self.ratios):
            raise ConfigError("--ratios lists a ratio twice")

    def as_command(self) -> str:
        """The CLI command that reruns this configuration (recorded when none was given)."""
        m, d, b, t = self.model, self.data, self.batches, self.training
        args = ["edgeprune", "criteria", "compare", *_model_args(m), *_data_args(d)]
        if self.criteria:
            args += ["--criteria", ",".join(self.criteria)]
        args += ["--ratios", ",".join(f"{r:g}" for r in self.ratios),
                 "--finetune-epochs", f"{t.finetune_epochs:g}", "--train-epochs", f"{t.train_epochs:g}",
                 "--score-batches", str(b.score), "--score-on", b.score_on, "--heldout-batches", str(b.heldout),
                 "--eval-batches", str(b.evaluation), "--batch-size", str(b.size),
                 "--lr", f"{t.lr:g}", "--seed", str(self.seed), "--out", str(self.out)]
        return shlex.join(args)


def _model_args(options: ModelOptions) -> list[str]:
    """``--model``, ``--weights``, ``--trust-checkpoint``, ``--input-shape`` as given."""
    args = ["--model", options.model]
    if options.weights is not None:
        args += ["--weights", str(options.weights)]
    if options.trust_checkpoint:
        args += ["--trust-checkpoint"]
    if options.input_shape is not None:
        args += ["--input-shape", "x".join(str(d) for d in options.input_shape)]
    return args


def _data_args(options: DataOptions) -> list[str]:
    """``--data``, ``--val-data`` and the preprocessing flags as given."""
    args = ["--data", options.data]
    if options.val_data is not None:
        args += ["--val-data", options.val_data]
    prep = options.preprocessing
    if prep.resize is not None:
        args += ["--resize", "x".join(str(d) for d in prep.resize)]
    if prep.mean is not None and prep.std is not None:
        args += ["--mean", ",".join(f"{v:g}" for v in prep.mean), "--std", ",".join(f"{v:g}" for v in prep.std)]
    if prep.grayscale:
        args += ["--grayscale"]
    return args


def prepare_data(config: StudyConfig, bundle: DataBundle) -> StudyData:
    """Score batches from the training split (or, with ``score_on="heldout"``, the oracle's own:
    that separates a criterion's approximation error from the sampling noise of two different
    small samples); oracle and evaluation batches from validation."""
    b = config.batches
    train_loader = make_loader(bundle.train, b.size, shuffle=True, seed=config.seed)
    scored = take_batches(train_loader, b.score)
    # Shuffled (seeded): an ImageFolder split is sorted by class, its first batches one class only.
    val_loader = make_loader(bundle.val, b.size, shuffle=True, seed=config.seed)
    val = take_batches(val_loader, len(val_loader))
    oracle, rest = val[:b.heldout], val[b.heldout:]
    evaluation = rest[:b.evaluation or len(rest)] if rest else oracle
    return StudyData(oracle if b.score_on == "heldout" else scored, oracle, evaluation, not rest, scored)


def prepare_model(config: StudyConfig, loaded: Loaded, calibration: tuple[Batch, ...],
                  progress: ProgressSink) -> tuple[nn.Module, dict]:
    """The loaded model and, with ``train_epochs``, trained here; say which in the result.

    Correlating criteria with the oracle on an untrained net says little about trained ones, so
    an untrained model used as is is labelled as such rather than silently accepted.
    """
    model, origin, trained = loaded.model, loaded.origin, loaded.trained
    epochs = config.training.train_epochs
    if epochs > 0:
        torch.manual_seed(config.seed)
        recipe = replace(TRAIN_RECIPE, epochs=epochs)
        loader = make_loader(loaded.data.train, config.batches.size, shuffle=True, seed=config.seed)
        train(model, loader, recipe, progress=progress, description="train")
        refresh_batchnorm(model, calibration)
        origin = f"{origin}, then trained here for {epochs:g} epochs (SGD lr {recipe.lr:g}, cosine)"
        trained = True
    elif not trained:
        origin += "; used as is (pass --weights or --train-epochs for a trained net)"
    weights = config.model.weights
    info = {"spec": config.model.model, "weights": str(weights) if weights else None,
            "trained": trained, "training": origin, "parameters": sum(p.numel() for p in model.parameters())}
    return model.eval(), info


def make_finetune(config: StudyConfig, bundle: DataBundle, calibration: tuple[Batch, ...],
                  progress: ProgressSink) -> Finetuner | None:
    """The study's fine-tune after each pruning (``None`` with ``finetune_epochs`` 0)."""
    t = config.training
    if t.finetune_epochs == 0:
        return None
    return Finetuner(bundle.train, TrainConfig(epochs=t.finetune_epochs, lr=t.lr), config.batches.size,
                     config.seed, calibration, progress)


def study_versions() -> dict[str, object]:
    """Package versions plus where and when: figures from another machine differ."""
    from edgeprune import __version__

    found: dict[str, object] = {**versions(extra=("scipy", "matplotlib")), "edgeprune": __version__}
    found.update(platform=platform.platform(), machine=platform.machine(), cpus=os.cpu_count(),
                 torch_threads=torch.get_num_threads(),
                 date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    return found


def _images(batches: tuple[Batch, ...]) -> int:
    return sum(len(y) for _, y in batches)


def _data_entry(config: StudyConfig, data: StudyData) -> dict:
    """``criteria.json``'s ``data``: what each use of the data took."""
    t = config.training
    return {"spec": config.data.data, "batch_size": config.batches.size, "score_images": _images(data.score),
            "score_on": config.batches.score_on,
            "oracle_images": _images(data.oracle), "eval_images": _images(data.evaluation),
            "eval_overlaps_oracle": data.eval_overlaps_oracle,
            "finetune": {"epochs": t.finetune_epochs, "lr": t.lr, "seed": config.seed,
                         "bn_refresh_images": _images(data.calibration)}}


def run_study(config: StudyConfig, progress: ProgressSink = null_progress) -> dict:
    """Run the whole study and write ``criteria.json``, ``report.md`` and the PNGs to ``config.out``.

    Returns the report written to ``criteria.json``. Criterion names and the output folder are
    checked before anything slow runs; ``criteria.json`` is written last, atomically. The model
    is not checked with ``torch.export``: the study never exports, and the dependency graph it
    prunes with follows models that export cannot.
    """
    from edgeprune.report.publish import ensure_writable

    built = build_criteria(config.criteria)
    ensure_writable(config.out)
    loaded = load_inputs(config.model, config.data, config.cache_dir or default_cache_dir(), progress, trace=False)
    torch.manual_seed(config.seed)  # after loading: a factory may reseed, the figures must not depend on it
    data = prepare_data(config, loaded.data)
    model, model_info = prepare_model(config, loaded, data.calibration, progress)
    finetune = make_finetune(config, loaded.data, data.calibration, progress)
    measured, scores, oracle = compare(model, loaded.example, built, data, config.ratios, finetune, progress)
    report = {"criteria": measured["criteria"], "oracle": measured["oracle"], "model": model_info,
              "data": _data_entry(config, data), "command": config.command or config.as_command(),
              "versions": study_versions()}
    plots = write_plots(report, scores, oracle, config.out)
    write_text_atomic(config.out / "report.md", render_markdown(report, plots))
    write_json_atomic(config.out / "criteria.json", report)
    return report

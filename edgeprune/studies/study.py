"""The oracle study behind ``edgeprune criteria compare``: every criterion against the oracle.

Why a study and not just :func:`edgeprune.studies.oracle.compare_criteria`: the study needs, in one run,
the oracle once (it is by far the slowest part: one pass over the held-out batches per channel),
every criterion scored once, and the accuracy at each ratio both straight after pruning and after
a short fine-tune. It also needs criterion options (``taylor-so?hessian=fisher``: the exact
Hessian costs one double-backward per channel), progress bars, plots and a report. The figures
use the same definitions as ``compare_criteria`` (its correlation helpers, the planner and
``apply_plan``), so the two agree wherever both apply.

Data use, chosen so no figure is measured on data it was fitted to:
- criteria score ``score_batches`` minibatches of the *training* split (as when pruning), or,
  with ``--score-on heldout``, the oracle's own batches (a diagnostic: approximation error
  without the sampling noise of two different small samples);
- the oracle uses the first ``heldout_batches`` minibatches of the (shuffled, seeded) validation
  split;
- accuracies are measured on the *rest* of the validation split (``eval_batches`` of it, 0 = all),
  so the oracle's own ranking is not judged on the images it was computed from. Only when the
  oracle takes the whole validation split do the two overlap (``data.eval_overlaps_oracle``).

Fine-tuning (``--finetune-epochs``) is SGD with a cosine schedule on the training split, followed
by re-estimating the BN statistics on the training score batches: a short run's moving averages lag its
weights. The accuracies "without fine-tuning" keep the unpruned model's BN statistics, exactly
the function the oracle and the criteria judged.
"""

from __future__ import annotations

import copy
import datetime
import importlib.metadata
import math
import os
import platform
import re
import shlex
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import parse_qsl

import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.models.sources import parse_value
from edgeprune.criteria import Criterion, ScoreContext, criteria, load_builtin
from edgeprune.data import DataBundle, Preprocessing, load_data, make_loader
from edgeprune.errors import ConfigError
from edgeprune.training.finetune import TrainConfig, train
from edgeprune.graph import GroupedModel
# The private helpers are compare_criteria's own definitions: reusing them keeps the figures equal.
from edgeprune.studies.oracle import _rank_correlations, _ratio_key, _within_groups, accuracy, mean_loss, oracle_scores
from edgeprune.io import write_json_atomic
from edgeprune.plan import PruningPlan
from edgeprune.search.planner import StepPolicy, next_plan
from edgeprune.progress import ProgressSink, null_progress
from edgeprune.prune import apply_plan

Batch = tuple[torch.Tensor, torch.Tensor]
Finetune = Callable[[nn.Module, str], None]

DEFAULT_RATIOS = (0.1, 0.3, 0.5, 0.7)
TRAIN_RECIPE = TrainConfig(epochs=1.0, lr=0.05, weight_decay=5e-4)  # the demo net's recipe
MIN_KEEP = 0.1  # as compare_criteria: every group keeps at least 10 % of its channels


@dataclass(frozen=True)
class StudyConfig:
    """Everything one study run depends on (the CLI flags of ``edgeprune criteria compare``)."""

    out: Path
    model: str = "demo"
    data: str = "digits"
    weights: Path | None = None
    trust_checkpoint: bool = False
    criteria: tuple[str, ...] = ()  # empty: every registered criterion with its defaults
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    finetune_epochs: float = 0.5  # 0: no fine-tuned accuracies
    train_epochs: float = 0.0  # train the loaded model first (for untrained factories)
    score_batches: int = 2
    score_on: str = "train"  # "heldout": criteria score the oracle's own batches (a diagnostic)
    heldout_batches: int = 2
    eval_batches: int = 0  # 0: all of the validation split the oracle does not use
    batch_size: int = 64
    lr: float = 0.01
    seed: int = 0
    command: str | None = None  # recorded verbatim; None: the equivalent CLI command
    cache_dir: Path | None = None  # demo weights (default: $EDGEPRUNE_CACHE or ~/.cache/edgeprune)

    def validate(self) -> None:
        """Refuse malformed settings before any slow work starts."""
        if not self.ratios or any(not 0 <= r < 1 for r in self.ratios):
            raise ConfigError(f"--ratios must be numbers in [0, 1), got {','.join(f'{r:g}' for r in self.ratios)}")
        if len({_ratio_key(r) for r in self.ratios}) != len(self.ratios):
            raise ConfigError("--ratios lists a ratio twice")
        if min(self.score_batches, self.heldout_batches, self.batch_size) < 1 or self.eval_batches < 0:
            raise ConfigError("--score-batches, --heldout-batches and --batch-size must be >= 1, --eval-batches >= 0")
        if self.finetune_epochs < 0 or self.train_epochs < 0 or self.lr <= 0:
            raise ConfigError("--finetune-epochs and --train-epochs must be >= 0, --lr > 0")
        if self.score_on not in ("train", "heldout"):
            raise ConfigError(f"--score-on must be train or heldout, got {self.score_on!r}")
        if self.model == "demo" and self.weights is not None:
            raise ConfigError("--weights is for your own model; the demo brings its own")

    def as_command(self) -> str:
        """The CLI command that reruns this configuration (recorded when none was given)."""
        args = ["edgeprune", "criteria", "compare", "--model", self.model, "--data", self.data]
        if self.weights is not None:
            args += ["--weights", str(self.weights)]
        if self.trust_checkpoint:
            args += ["--trust-checkpoint"]
        if self.criteria:
            args += ["--criteria", ",".join(self.criteria)]
        args += ["--ratios", ",".join(f"{r:g}" for r in self.ratios),
                 "--finetune-epochs", f"{self.finetune_epochs:g}", "--train-epochs", f"{self.train_epochs:g}",
                 "--score-batches", str(self.score_batches), "--score-on", self.score_on, "--heldout-batches", str(self.heldout_batches),
                 "--eval-batches", str(self.eval_batches), "--batch-size", str(self.batch_size),
                 "--lr", f"{self.lr:g}", "--seed", str(self.seed), "--out", str(self.out)]
        return shlex.join(args)


@dataclass(frozen=True)
class StudyData:
    """The uses of the data (see the module docstring); ``calibration`` (training batches) only
    re-estimates BN statistics."""

    score: tuple[Batch, ...]
    oracle: tuple[Batch, ...]
    evaluation: tuple[Batch, ...]
    eval_overlaps_oracle: bool
    calibration: tuple[Batch, ...] = ()


# ---------------------------------------------------------------- criterion specs


def parse_criterion_spec(spec: str) -> tuple[str, dict[str, object]]:
    """``taylor-so?hessian=fisher`` -> ("taylor-so", {"hessian": "fisher"}); options go to the
    criterion's constructor, the way ``torchvision:NAME?k=v`` passes model options."""
    name, _, query = spec.strip().partition("?")
    return name, {k: parse_value(v) for k, v in parse_qsl(query, keep_blank_values=True)}


def build_criteria(specs: Sequence[str]) -> dict[str, Criterion]:
    """``{spec: criterion instance}``; an unknown name or option is a one-line ConfigError."""
    load_builtin()
    built: dict[str, Criterion] = {}
    for spec in specs or criteria.names():
        if spec in built:
            raise ConfigError(f"criterion {spec!r} is listed twice")
        name, options = parse_criterion_spec(spec)
        factory = criteria.get(name)  # UnknownNameError (exit 2) lists the known names
        try:
            built[spec] = factory(**options)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"criterion {spec!r}: {exc}") from None
    return built


# ---------------------------------------------------------------- model and data


def _load_model(config: StudyConfig, bundle: DataBundle, progress: ProgressSink) -> tuple[nn.Module, str, bool]:
    """(model, how it came to be, whether it is trained before any --train-epochs)."""
    if config.model == "demo":
        from edgeprune.models.demo import default_cache_dir, load_demo

        model = load_demo(bundle, config.cache_dir or default_cache_dir(), progress)
        return model, f"demo net trained on {bundle.name} (cached recipe)", True
    from edgeprune.models.sources import load_model

    model = load_model(config.model, config.weights, config.trust_checkpoint)
    if config.weights is not None:
        return model, f"weights from {config.weights}", True
    return model, "untrained (as built by its factory)", False


@torch.no_grad()
def refresh_batchnorm(model: nn.Module, batches: Sequence[Batch]) -> None:
    """Re-estimate every BN's running statistics as the plain average over ``batches``.

    After a short, high-learning-rate run the moving averages lag the weights (a tiny net
    trained for one epoch scored chance in eval mode and 50 % in train mode); one forward pass
    in train mode with a cumulative average fixes that without touching any weight.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    model.train()
    try:
        for x, _ in batches:
            model(x)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)


def prepare_model(config: StudyConfig, bundle: DataBundle, calibration: Sequence[Batch],
                  progress: ProgressSink) -> tuple[nn.Module, dict]:
    """Load the model and, with ``--train-epochs``, train it; say which in the result.

    Correlating criteria with the oracle on an untrained net says little about trained ones, so
    an untrained model used as is is labelled as such rather than silently accepted.
    """
    model, origin, trained = _load_model(config, bundle, progress)
    if config.train_epochs > 0:
        torch.manual_seed(config.seed)
        recipe = replace(TRAIN_RECIPE, epochs=config.train_epochs)
        train(model, make_loader(bundle.train, config.batch_size, shuffle=True, seed=config.seed), recipe,
              progress=progress, description="train")
        refresh_batchnorm(model, calibration)
        origin = f"{origin}, then trained here for {config.train_epochs:g} epochs (SGD lr {recipe.lr:g}, cosine)"
        trained = True
    elif not trained:
        origin += "; used as is (pass --weights or --train-epochs for a trained net)"
    info = {"spec": config.model, "weights": str(config.weights) if config.weights else None,
            "trained": trained, "training": origin,
            "parameters": sum(p.numel() for p in model.parameters())}
    return model.eval(), info


def _take(loader, count: int) -> tuple[Batch, ...]:
    """The first ``count`` batches (0 = all), materialised so every pass sees the same tensors."""
    batches = []
    for x, y in loader:
        batches.append((x, y))
        if count and len(batches) == count:
            break
    return tuple(batches)


def prepare_data(config: StudyConfig, bundle: DataBundle) -> StudyData:
    """Score batches from the training split (or, with ``score_on="heldout"``, the oracle's own:
    that separates a criterion's approximation error from the sampling noise of two different
    small samples); oracle and evaluation batches from validation."""
    train = _take(make_loader(bundle.train, config.batch_size, shuffle=True, seed=config.seed), config.score_batches)
    # Shuffled (seeded): an ImageFolder split is sorted by class, its first batches one class only.
    val = _take(make_loader(bundle.val, config.batch_size, shuffle=True, seed=config.seed), 0)
    oracle = val[: config.heldout_batches]
    rest = val[config.heldout_batches:]
    evaluation = rest[: config.eval_batches or len(rest)] if rest else oracle
    return StudyData(oracle if config.score_on == "heldout" else train, oracle, evaluation, not rest, train)


def _images(batches: Sequence[Batch]) -> int:
    return sum(len(y) for _, y in batches)


# ---------------------------------------------------------------- measurement


def _counting(loss_fn: Callable, progress: ProgressSink, task: object) -> Callable:
    """``loss_fn`` that advances a progress bar: the oracle calls it once per batch and channel."""
    def counted(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        progress.advance(task)
        return loss_fn(output, target)
    return counted


def measure_oracle(model: nn.Module, grouped: GroupedModel, batches: Sequence[Batch],
                   progress: ProgressSink = null_progress) -> dict[str, torch.Tensor]:
    """The oracle ΔL of every channel (see :func:`edgeprune.studies.oracle.oracle_scores`), with a bar."""
    total = (1 + sum(g.channels for g in grouped.groups.values())) * len(batches)
    task = progress.start("oracle: remove each channel", total)
    try:
        return oracle_scores(model, grouped, batches, _counting(F.cross_entropy, progress, task))
    finally:
        progress.finish(task)


def accuracies_at(model: nn.Module, example: torch.Tensor, scores: dict[str, torch.Tensor], scope: str,
                  ratios: Sequence[float], batches: Sequence[Batch], finetune: Finetune | None,
                  label: str) -> tuple[dict[str, float], dict[str, float] | None]:
    """Accuracy at each ratio straight after pruning by ``scores`` and, if ``finetune``, after it.

    The same pruning as ``compare_criteria`` (planner step of ``ratio`` from the full model,
    ``apply_plan``), done once per ratio for both figures.
    """
    start = PruningPlan.identity("", tuple(example.shape), "oracle-study", {n: len(s) for n, s in scores.items()})
    plain: dict[str, float] = {}
    tuned: dict[str, float] = {}
    for ratio in ratios:
        if ratio == 0:
            pruned = copy.deepcopy(model).eval()
        else:
            pruned = apply_plan(model, next_plan(start, scores, StepPolicy(ratio, scope, 1, MIN_KEEP)), example)
        plain[_ratio_key(ratio)] = accuracy(pruned, batches)
        if finetune is not None:
            finetune(pruned, f"fine-tune {label} @{ratio:g}")
            tuned[_ratio_key(ratio)] = accuracy(pruned, batches)
    return plain, tuned if finetune is not None else None


def score_criterion(criterion: Criterion, model: nn.Module, example: torch.Tensor,
                    batches: Sequence[Batch]) -> dict[str, torch.Tensor]:
    """Scores on a fresh copy of ``model``, so no criterion sees another's side effects."""
    work = copy.deepcopy(model)
    scores = criterion(ScoreContext(work, GroupedModel(work, example), tuple(batches), F.cross_entropy))
    return {g: s.detach().float() for g, s in scores.items()}


def oracle_entry(model: nn.Module, example: torch.Tensor, grouped: GroupedModel, oracle: dict[str, torch.Tensor],
                 seconds: float, data: StudyData, ratios: Sequence[float], finetune: Finetune | None) -> dict:
    """The oracle's figures, and the accuracy of pruning by the oracle itself, two ways.

    ``accuracy_at`` ranks by signed ΔL, as ``compare_criteria`` does (channels whose removal
    lowered the held-out loss go first); ``abs_ranking`` ranks by |ΔL|, the importance the
    correlations use (Molchanov's oracle). On the demo net the signed ranking removes channels
    whose measured benefit is mostly sampling noise, and removing many of them together is ruinous
    — hence both.
    """
    order = list(grouped.groups)
    signed = {g: oracle[g].float() for g in order}
    plain, tuned = accuracies_at(model, example, signed, "global", ratios, data.evaluation, finetune, "oracle ΔL")
    abs_plain, abs_tuned = accuracies_at(model, example, {g: v.abs() for g, v in signed.items()}, "global", ratios,
                                         data.evaluation, finetune, "oracle |ΔL|")
    return {
        "loss": mean_loss(model, data.oracle), "accuracy": accuracy(model, data.evaluation),
        "channels": sum(len(oracle[g]) for g in order), "groups": {g: len(oracle[g]) for g in order},
        "seconds": round(seconds, 2), "accuracy_at": plain, "accuracy_at_finetuned": tuned,
        "abs_ranking": {"accuracy_at": abs_plain, "accuracy_at_finetuned": abs_tuned},
        "delta_loss": {g: [round(float(v), 8) for v in oracle[g]] for g in order},
    }


def criterion_entry(criterion: Criterion, scores: dict[str, torch.Tensor], oracle: dict[str, torch.Tensor],
                    model: nn.Module, example: torch.Tensor, data: StudyData, ratios: Sequence[float],
                    finetune: Finetune | None, label: str) -> dict:
    """One criterion's figures: pooled Spearman/Kendall against |ΔL| over every channel of every
    group, the mean per-group Spearman (the fair figure for "layer"-scope criteria), and the
    accuracy at each ratio without and with fine-tuning."""
    order = list(oracle)
    rho, tau = _rank_correlations(torch.cat([scores[g].double() for g in order]),
                                  torch.cat([oracle[g].abs() for g in order]))
    plain, tuned = accuracies_at(model, example, scores, criterion.scope, ratios, data.evaluation, finetune, label)
    return {"spearman": rho, "kendall": tau, "accuracy_at": plain, "accuracy_at_finetuned": tuned,
            "spearman_within_groups": _within_groups(scores, oracle), "scope": criterion.scope}


def compare(model: nn.Module, example: torch.Tensor, built: dict[str, Criterion], data: StudyData,
            ratios: Sequence[float], finetune: Finetune | None,
            progress: ProgressSink = null_progress) -> tuple[dict, dict[str, dict[str, torch.Tensor]], dict]:
    """The measurements: ``({"oracle": ..., "criteria": ...}, {spec: per-group scores}, oracle ΔL)``."""
    model = copy.deepcopy(model).eval()
    grouped = GroupedModel(model, example)
    started = time.perf_counter()
    oracle = measure_oracle(model, grouped, data.oracle, progress)
    report: dict = {"oracle": oracle_entry(model, example, grouped, oracle, time.perf_counter() - started, data,
                                           ratios, finetune), "criteria": {}}
    all_scores: dict[str, dict[str, torch.Tensor]] = {}
    task = progress.start("criteria", len(built))
    try:
        for spec, criterion in built.items():
            started = time.perf_counter()
            all_scores[spec] = score_criterion(criterion, model, example, data.score)
            seconds = time.perf_counter() - started
            entry = criterion_entry(criterion, all_scores[spec], oracle, model, example, data, ratios, finetune, spec)
            report["criteria"][spec] = {**entry, "score_seconds": round(seconds, 2)}
            progress.advance(task)
    finally:
        progress.finish(task)
    return report, all_scores, oracle


def make_finetune(config: StudyConfig, bundle: DataBundle, calibration: Sequence[Batch],
                  progress: ProgressSink) -> Finetune | None:
    """A short SGD fine-tune on the training split, then fresh BN statistics (see
    :func:`refresh_batchnorm`). Every call sees the same batches in the same order (a fresh
    seeded loader), so criteria are compared on equal terms."""
    if config.finetune_epochs == 0:
        return None
    recipe = TrainConfig(epochs=config.finetune_epochs, lr=config.lr)

    def finetune(model: nn.Module, description: str) -> None:
        torch.manual_seed(config.seed)
        loader = make_loader(bundle.train, config.batch_size, shuffle=True, seed=config.seed)
        train(model, loader, recipe, progress=progress, description=description)
        refresh_batchnorm(model, calibration)

    return finetune


# ---------------------------------------------------------------- output


def versions() -> dict[str, object]:
    """Package versions plus where and when: figures from another machine differ."""
    from edgeprune.report.publish import versions as package_versions

    from edgeprune import __version__

    found: dict[str, object] = {**package_versions(), "edgeprune": __version__}  # also when run from a checkout
    for name in ("scipy", "matplotlib"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    found.update(platform=platform.platform(), machine=platform.machine(), cpus=os.cpu_count(),
                 torch_threads=torch.get_num_threads(),
                 date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    return found


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _rows(report: dict) -> list[tuple[str, dict]]:
    """Table rows: the oracle's own rankings first (references, not criteria), then criteria."""
    oracle = report["oracle"]
    return [("oracle, signed ΔL ranking", oracle), ("oracle, |ΔL| ranking", oracle["abs_ranking"]),
            *report["criteria"].items()]


def correlation_markdown(report: dict) -> str:
    """Markdown table: each criterion's rank correlation with the oracle |ΔL|."""
    lines = ["| criterion | scope | Spearman ρ | Kendall τ | mean ρ within layers | scoring s |",
             "|---|---|---:|---:|---:|---:|"]
    for name, e in report["criteria"].items():
        lines.append(f"| `{name}` | {e['scope']} | {_fmt(e['spearman'])} | {_fmt(e['kendall'])} | "
                     f"{_fmt(e['spearman_within_groups'])} | {e['score_seconds']:.1f} |")
    return "\n".join(lines)


def accuracy_markdown(report: dict, key: str) -> str:
    """Markdown table: held-out top-1 accuracy at each ratio (``key``: with or without fine-tune)."""
    ratios = list(report["oracle"]["accuracy_at"])
    lines = ["| criterion | " + " | ".join(f"{r}" for r in ratios) + " |",
             "|---|" + "---:|" * len(ratios)]
    for name, e in _rows(report):
        values = e.get(key) or {}
        label = name.replace("|", "\\|") if name.startswith("oracle") else f"`{name}`"  # a bare | splits the cell
        lines.append(f"| {label} | " + " | ".join(_fmt(values.get(r)) for r in ratios) + " |")
    return "\n".join(lines)


def rich_table(report: dict):
    """One rich table: correlations, and per ratio "accuracy pruned / after fine-tune"."""
    from rich.table import Table

    ratios = list(report["oracle"]["accuracy_at"])
    table = Table(title=f"criteria vs oracle ({report['oracle']['channels']} channels; "
                        f"unpruned top-1 {report['oracle']['accuracy']:.3f}; cells: pruned / fine-tuned)")
    for column in ("criterion", "scope", "Spearman", "Kendall", "ρ in-layer", *(f"@{r}" for r in ratios)):
        table.add_column(column, justify="left" if column in ("criterion", "scope") else "right")
    for name, e in _rows(report):
        tuned = e.get("accuracy_at_finetuned") or {}
        cells = [f"{_fmt(e['accuracy_at'][r])} / {_fmt(tuned.get(r))}" for r in ratios]
        table.add_row(name, e.get("scope", "global"), _fmt(e.get("spearman")), _fmt(e.get("kendall")),
                      _fmt(e.get("spearman_within_groups")), *cells)
    return table


def _settings_markdown(report: dict) -> list[str]:
    """What was measured on what: the lines a reader needs before trusting the tables."""
    m, d, v, o = report["model"], report["data"], report["versions"], report["oracle"]
    scored = "training images" if d["score_on"] == "train" else "held-out images (the oracle's own: --score-on heldout)"
    seen = " (the oracle's own)" if d["eval_overlaps_oracle"] else " the oracle did not see"
    tune = (f"Fine-tune: {d['finetune']['epochs']:g} epochs of SGD (lr {d['finetune']['lr']:g}, cosine) after each "
            f"pruning, then BN statistics re-estimated on {d['finetune']['bn_refresh_images']} training images."
            if d["finetune"]["epochs"] else "Fine-tune: none (--finetune-epochs 0).")
    return [f"Command: `{report['command']}`", "",
            f"Model: `{m['spec']}` — {m['training']}; {m['parameters']:,} parameters; {o['channels']} prunable "
            f"channels; unpruned top-1 {o['accuracy']:.4f}.",
            f"Data: `{d['spec']}` — criteria score {d['score_images']} {scored}; the oracle uses {d['oracle_images']} "
            f"held-out images ({o['seconds']:.0f} s); accuracy is measured on {d['eval_images']} held-out images{seen}.",
            tune,
            f"Machine: {v['platform']}, {v['cpus']} CPUs, torch {v['torch']} ({v['torch_threads']} threads); {v['date']}."]


def render_markdown(report: dict, plots: dict[str, str]) -> str:
    """``report.md``: the settings, the tables and the plots (relative links)."""
    lines = ["# Criteria vs oracle", "", *_settings_markdown(report),
             "", "## Rank correlation with the oracle |ΔL|", "",
             "Pooled over every channel of every layer; \"within layers\" is the mean per-layer Spearman ρ "
             "(the fair figure for layer-scope criteria, whose scores are not meant to compare across layers).",
             "", correlation_markdown(report), "",
             "## Top-1 accuracy after pruning (no fine-tuning)", "", accuracy_markdown(report, "accuracy_at"), ""]
    if report["data"]["finetune"]["epochs"]:
        lines += ["## Top-1 accuracy after pruning and fine-tuning", "",
                  accuracy_markdown(report, "accuracy_at_finetuned"), ""]
    lines += ["## Plots", ""] + [f"![{title}]({path})" for title, path in plots.items()]
    return "\n".join(lines) + "\n"


def _file_name(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", spec).strip("-") or "criterion"


def write_plots(report: dict, scores: dict[str, dict[str, torch.Tensor]], oracle: dict[str, torch.Tensor],
                out: Path) -> dict[str, str]:
    """One scatter grid per criterion and the accuracy-vs-ratio curves; ``{title: file name}``."""
    from edgeprune.studies.plots import accuracy_curves, scatter_grid

    plots = {"accuracy vs pruning ratio": "accuracy-vs-ratio.png"}
    curves = {name: e["accuracy_at"] for name, e in _rows(report)}
    tuned = {name: e["accuracy_at_finetuned"] for name, e in _rows(report) if e.get("accuracy_at_finetuned")}
    accuracy_curves(out / plots["accuracy vs pruning ratio"], curves, tuned or None,
                    report["oracle"]["accuracy"])
    for spec, per_group in scores.items():
        name = f"scatter-{_file_name(spec)}.png"
        scatter_grid(out / name, spec, per_group, oracle)
        plots[f"{spec}: score vs oracle |ΔL| per layer"] = name
    return plots


# ---------------------------------------------------------------- entry point


def run_study(config: StudyConfig, progress: ProgressSink = null_progress) -> dict:
    """Run the whole study and write ``criteria.json``, ``report.md`` and the PNGs to ``config.out``.

    Returns the report written to ``criteria.json``. Settings and criterion names are checked
    before anything slow runs; ``criteria.json`` is written last, atomically.
    """
    from edgeprune.report.publish import ensure_writable

    config.validate()
    built = build_criteria(config.criteria)
    ensure_writable(config.out)
    torch.manual_seed(config.seed)
    bundle = load_data(config.data, Preprocessing())
    data = prepare_data(config, bundle)
    model, model_info = prepare_model(config, bundle, data.calibration, progress)
    example = data.oracle[0][0][:1]
    measured, scores, oracle = compare(model, example, built, data, config.ratios,
                                       make_finetune(config, bundle, data.calibration, progress), progress)
    report = {
        "criteria": measured["criteria"], "oracle": measured["oracle"],
        "model": model_info,
        "data": {"spec": config.data, "batch_size": config.batch_size, "score_images": _images(data.score),
                 "score_on": config.score_on,
                 "oracle_images": _images(data.oracle), "eval_images": _images(data.evaluation),
                 "eval_overlaps_oracle": data.eval_overlaps_oracle,
                 "finetune": {"epochs": config.finetune_epochs, "lr": config.lr, "seed": config.seed,
                              "bn_refresh_images": _images(data.calibration)}},
        "command": config.command or config.as_command(),
        "versions": versions(),
    }
    plots = write_plots(report, scores, oracle, config.out)
    (config.out / "report.md").write_text(render_markdown(report, plots))
    write_json_atomic(config.out / "criteria.json", report)
    return report

"""``edgeprune sparsify``: a weight-level (unstructured) sparsity method, run and *measured*.

Why this command exists next to ``deploy``: users ask for "90% sparse" models and expect them to
be faster. On a dense compiler they are not — a zero weight costs as much as any other — so this
command runs the method faithfully, evaluates it, exports the masked model, and then times the
dense and the sparse ONNX files with ONNX Runtime on this machine
(:func:`~edgeprune.sparsity.measure.measure_sparse_vs_dense`), writing the ratio into the report
instead of a promise. ``--structured 2:4|block:RxC`` also converts the mask to a structured one
(re-trained with the mask held when ``--epochs`` > 0) and measures that too.

How each method reaches ``--density`` (the kept fraction of conv/linear weights):

- ``snip``: one shot, top-κ connection sensitivity on one training batch (exact κ), then
  ``--epochs`` of training with the mask held.
- ``magnitude`` (Han et al., iterative): ``ROUNDS`` prune → retrain rounds whose target density
  falls geometrically to ``--density``; each round's per-layer threshold is ``q · std`` with the
  one ``q`` (found by bisection) that meets the round's target; ``--epochs`` split over rounds.
- ``relief`` (iterative, like magnitude): each round the per-neuron coverage α (one α for conv
  and linear layers, found by bisection) that meets the round's target, dead neurons dropped.
- ``rigl``: ERK layer densities at ``--density``, initial weights chosen by magnitude (the input
  is a trained model; RigL's random start is for training from scratch), drop/grow every
  ΔT = min(100, steps/10) steps (the paper's ΔT = 100 assumes far longer runs) for ``--epochs``.
- ``scl``: ``--epochs`` of SCL training (λ = 1e-4) learns the connectivity; SCL has no density
  knob, so when the learned density is above ``--density`` the smallest surviving weights are
  removed (global magnitude) to meet it. Both densities are reported.

The "sparse" latency is measured on the loaded model's weights with the final mask applied: the
same shapes and the same zero positions as the shipped ``model.onnx`` (a dense runtime's latency
does not depend on the weight values), against the loaded model unchanged as "dense".
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import field, dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from edgeprune import __version__
from edgeprune.backends.base import CompileOptions
from edgeprune.backends.ort import OnnxRuntimeBackend
from edgeprune.data import DataBundle, make_loader, take_batches
from edgeprune.models.loading import DataOptions, ModelOptions, load_inputs
from edgeprune.errors import ConfigError, ToolchainMissingError
from edgeprune.training.finetune import TrainConfig, pytorch_accuracy, train
from edgeprune.profilers.base import MeasureSettings
from edgeprune.progress import ProgressSink, null_progress
from edgeprune.training.regularizers import RigLOptions, regularizers
from edgeprune.io import default_cache_dir, torch_save_atomic, versions
from edgeprune.report.publish import ensure_writable, publish
from edgeprune.sparsity import get_sparsity_method, scl
from edgeprune.sparsity.magnitude import magnitude_masks
from edgeprune.sparsity.masks import MaskedTraining, Masks, global_topk
from edgeprune.sparsity.measure import SparseDenseTiming, measure_sparse_vs_dense, onnx_zero_fraction
from edgeprune.sparsity.relief import cover_masks, drop_dead_neurons, relief_scores
from edgeprune.sparsity.snip import snip_masks
from edgeprune.sparsity.structured import parse_kind, to_structured
from edgeprune.candidate.validate import validate_artifact

ROUNDS = 3  # prune -> retrain rounds of the iterative methods (magnitude, relief)
BISECT_STEPS = 30
SCL_LAMBDA = 1e-4
WORK_DIR = ".edgeprune-work"


@dataclass(frozen=True)
class SparsifyConfig:
    model: ModelOptions
    out: Path
    method: str
    density: float
    data: DataOptions = field(default_factory=DataOptions)
    structured: str | None = None
    epochs: float = 1.0
    lr: float = 0.01
    batch_size: int = 64
    threads: int | None = None
    repeats: int = 50
    seed: int = 0
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.method not in METHOD_RUNNERS:
            get_sparsity_method(self.method)  # an unknown name lists the registry's methods
            raise ConfigError(f"{self.method} acts during training only: use deploy --regularizer {self.method}; "
                              f"sparsify runs {', '.join(METHOD_RUNNERS)}")
        if not 0 < self.density < 1:
            raise ConfigError(f"--density {self.density} must be in (0, 1): the kept fraction of weights")
        if self.epochs < 0 or self.lr <= 0 or self.batch_size < 1 or self.repeats < 1:
            raise ConfigError("epochs must be >= 0, lr > 0, batch_size and repeats >= 1")
        if self.structured is not None:
            try:
                parse_kind(self.structured)
            except ValueError as exc:
                raise ConfigError(f"--structured: {exc}") from None


@dataclass(frozen=True)
class Run:
    """What every method needs: the training data, the optimiser settings and the target density."""

    train_loader: DataLoader
    config: TrainConfig
    density: float
    progress: ProgressSink

    def batches(self, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(take_batches(self.train_loader, n))

    def retrain(self, model: nn.Module, masks: Masks, epochs: float, label: str) -> None:
        """Train with the mask held at zero (weights and gradients), as every method's retrain step."""
        masks.apply(model)
        train(model, self.train_loader, replace(self.config, epochs=epochs), callbacks=(MaskedTraining(masks),),
              progress=self.progress, description=label)


MethodResult = tuple[Masks, dict]  # final masks, method details for the manifest


def bisect(kept_at: Callable[[float], float], target: float, lo: float, hi: float, increasing: bool) -> float:
    """The knob in [lo, hi] whose kept fraction is closest to ``target`` from the safe side.

    ``kept_at`` is monotone in the knob (``increasing`` says which way); the answer keeps at most
    ``target`` (never denser than asked) unless even ``hi``/``lo`` cannot.
    """
    for _ in range(BISECT_STEPS):
        mid = (lo + hi) / 2
        too_dense = kept_at(mid) > target
        if too_dense == increasing:
            hi = mid
        else:
            lo = mid
    return lo if increasing else hi


def round_targets(density: float, rounds: int) -> list[float]:
    """Geometric schedule: ``density^(r/R)`` for r = 1..R (each round removes the same share)."""
    return [density ** (r / rounds) for r in range(1, rounds + 1)]


def run_epochs(run: Run, rounds: int) -> float:
    """Each of ``rounds`` retrain steps gets an equal share of ``--epochs``."""
    return run.config.epochs / rounds


def _magnitude(model: nn.Module, run: Run) -> MethodResult:
    masks: Masks | None = None
    qs = []
    for target in round_targets(run.density, ROUNDS):
        previous = masks

        def kept(q: float) -> float:
            m = magnitude_masks(model, q, previous)
            return m.kept() / m.total()

        hi = 1.0
        while kept(hi) > target and hi < 1e3:
            hi *= 2
        q = bisect(kept, target, 0.0, hi, increasing=False)
        masks = magnitude_masks(model, q, previous)
        qs.append(q)
        run.retrain(model, masks, run_epochs(run, ROUNDS), f"magnitude retrain (q={q:.3g})")
    return masks, {"rounds": ROUNDS, "q_per_round": qs, "round_targets": round_targets(run.density, ROUNDS)}


def _relief(model: nn.Module, run: Run) -> MethodResult:
    batches = run.batches(2)
    masks: Masks | None = None
    alphas = []
    for target in round_targets(run.density, ROUNDS):
        previous = masks
        scores = relief_scores(model, batches, previous)  # once per round; α is searched on them

        def kept(alpha: float) -> float:
            m = cover_masks(model, scores, alpha, alpha, previous)
            return m.kept() / m.total()

        alpha = bisect(kept, target, 1e-6, 1.0, increasing=True)
        masks = drop_dead_neurons(model, cover_masks(model, scores, alpha, alpha, previous), batches[0][0][:1])
        alphas.append(alpha)
        run.retrain(model, masks, run_epochs(run, ROUNDS), f"relief retrain (α={alpha:.3g})")
    return masks, {"rounds": ROUNDS, "alpha_per_round": alphas, "round_targets": round_targets(run.density, ROUNDS),
                   "note": "masks include biases (NN Relief counts the bias as a connection); dropping dead "
                           "neurons can leave the result sparser than the round's target"}


def _snip(model: nn.Module, run: Run) -> MethodResult:
    masks = snip_masks(model, run.batches(1)[0], density=run.density)
    run.retrain(model, masks, run.config.epochs, "SNIP training")
    return masks, {"score_batches": 1}


def _rigl(model: nn.Module, run: Run) -> MethodResult:
    steps_per_epoch = max(1, len(run.train_loader))
    total = max(1, int(round(run.config.epochs * steps_per_epoch)))
    options = RigLOptions(density=run.density, epochs=run.config.epochs, delta_t=max(1, min(100, total // 10)))
    regularizer = regularizers.get("rigl")(model, options, steps_per_epoch)
    try:
        train(model, run.train_loader, run.config, callbacks=(regularizer,), progress=run.progress,
              description="RigL training")
    finally:
        regularizer.close()
    rigl = regularizer.callback
    return rigl.masks, {"delta_t": options.delta_t, "init": options.init, "layer_densities": "ERK",
                        "updates": len(rigl.history)}


def _scl(model: nn.Module, run: Run) -> MethodResult:
    scl.attach(model)
    try:
        train(model, run.train_loader, run.config, callbacks=(scl.SCL(SCL_LAMBDA),), progress=run.progress,
              description="SCL training")
    finally:
        learned = scl.detach(model)
    density_learned = 1.0 - learned.sparsity()
    masks = learned
    if learned.kept() > run.density * learned.total():
        scores = {n: model.get_parameter(n).detach().abs() * m for n, m in learned.items()}
        masks = global_topk(scores, int(round(run.density * learned.total())))
        masks = Masks({n: m & learned[n] for n, m in masks.items()})
        masks.apply(model)
    return masks, {"lambda": SCL_LAMBDA, "density_learned": density_learned,
                   "trimmed_by_magnitude": masks is not learned}


METHOD_RUNNERS: dict[str, Callable[[nn.Module, Run], MethodResult]] = {
    "magnitude": _magnitude, "snip": _snip, "scl": _scl, "rigl": _rigl, "relief": _relief,
}


def _export(model: nn.Module, example: torch.Tensor, folder: Path, data: DataBundle) -> dict:
    """ONNX file of ``model`` in ``folder``, validated against PyTorch on the validation set."""
    backend = OnnxRuntimeBackend()
    artifact = backend.compile(model.eval(), example, folder, CompileOptions("host", {}, folder / ".cache"))
    shutil.rmtree(folder / ".cache", ignore_errors=True)
    validation = validate_artifact(backend.load(artifact), model, data.val, example.shape[0], runtime="onnxruntime")
    return {"accuracy_onnxruntime": validation.accuracy, "validation": validation.to_json(),
            "zero_fraction_in_file": onnx_zero_fraction(artifact.path)}


def _timing_json(timing: SparseDenseTiming) -> dict:
    return {**timing.to_json(),
            "dense_model": "the loaded model, unchanged",
            "sparse_model": "the loaded model's weights with the final mask applied (same shapes and zero "
                            "positions as the exported sparse model)"}


def _structured(cfg: SparsifyConfig, model: nn.Module, masks: Masks, original: nn.Module, run: Run,
                example: torch.Tensor, staging: Path, work: Path, data: DataBundle, val_loader: DataLoader,
                settings: MeasureSettings) -> dict:
    """The nearest ``cfg.structured`` mask, re-trained with the mask held, exported and measured."""
    smasks = to_structured(masks, cfg.structured, model)
    smodel = copy.deepcopy(model)
    run.retrain(smodel, smasks, cfg.epochs, f"{cfg.structured} retrain")
    exported = _export(smodel, example, staging / "structured", data)
    timing = measure_sparse_vs_dense(original, smasks, example, work / "structured", settings)
    return {"kind": cfg.structured, "artifact": "structured/model.onnx", "sparsity": smasks.sparsity(),
            "densities": smasks.density(), "accuracy_pytorch": pytorch_accuracy(smodel, val_loader), **exported,
            "latency": _timing_json(timing)}


def sparsify(cfg: SparsifyConfig, progress: ProgressSink = null_progress) -> dict:
    """Run the method, evaluate, export and measure; returns the manifest written to ``cfg.out``."""
    if (reason := OnnxRuntimeBackend().unavailable_reason()) is not None:
        raise ToolchainMissingError(reason)
    ensure_writable(cfg.out)
    torch.manual_seed(cfg.seed)
    loaded = load_inputs(cfg.model, cfg.data, cfg.cache_dir or default_cache_dir(), progress, trace=False)
    data, original, example = loaded.data, loaded.model, loaded.example
    train_loader = make_loader(data.train, cfg.batch_size, shuffle=True, seed=cfg.seed)
    val_loader = make_loader(data.val, 256, shuffle=False)
    run = Run(train_loader, TrainConfig(epochs=cfg.epochs, lr=cfg.lr), cfg.density, progress)
    model = copy.deepcopy(original)
    masks, details = METHOD_RUNNERS[cfg.method](model, run)
    masks.apply(model)
    staging, work = cfg.out / ".staging", cfg.out / WORK_DIR
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    settings = MeasureSettings(repeats=cfg.repeats, threads=cfg.threads)
    exported = _export(model, example, staging, data)
    progress.log("measuring dense vs sparse with ONNX Runtime")
    timing = measure_sparse_vs_dense(original, masks, example, work / "unstructured", settings)
    structured = (_structured(cfg, model, masks, original, run, example, staging, work, data, val_loader, settings)
                  if cfg.structured else None)
    torch_save_atomic(model.eval().state_dict(), staging / "sparse_state_dict.pt")
    torch_save_atomic(dict(masks.items()), staging / "masks.pt")
    manifest = _manifest(cfg, data, masks, details, pytorch_accuracy(original, val_loader), pytorch_accuracy(model, val_loader),
                         exported, timing, structured)
    publish(staging, cfg.out, manifest, render_sparsify_markdown(manifest))
    shutil.rmtree(work, ignore_errors=True)
    return manifest


def _manifest(cfg: SparsifyConfig, data: DataBundle, masks: Masks, details: dict, dense_acc: float,
              sparse_acc: float, exported: dict, timing: SparseDenseTiming, structured: dict | None) -> dict:
    """The sparsify contract: files (added by ``publish``), sparsity, accuracy, measured latency."""
    method = get_sparsity_method(cfg.method)
    manifest = {
        "manifest_version": 1,
        "command": "sparsify",
        "model": cfg.model.model,
        "data": {"spec": cfg.data.data, "train_samples": len(data.train), "val_samples": len(data.val)},
        "method": {"name": method.name, "paper": method.paper, "kind": method.kind, "epochs": cfg.epochs,
                   **details},
        "density_requested": cfg.density,
        "sparsity": masks.sparsity(),
        "weights_masked": {"kept": masks.kept(), "total": masks.total()},
        "densities": masks.density(),
        "accuracy": {"dense_pytorch": dense_acc, "sparse_pytorch": sparse_acc,
                     "sparse_onnxruntime": exported["accuracy_onnxruntime"]},
        "validation": exported["validation"],
        "artifact": "model.onnx",
        "zero_fraction_in_artifact": exported["zero_fraction_in_file"],
        "weights": "sparse_state_dict.pt",
        "masks": "masks.pt",
        "latency": _timing_json(timing),
        "versions": versions(),
        "edgeprune": __version__,
    }
    if structured is not None:
        manifest["structured"] = structured
    return manifest


def render_sparsify_markdown(m: dict) -> str:
    """The plain statement: what the zeros did (measured), and what would make it faster (not measured)."""
    lat = m["latency"]
    lines = [
        f"# edgeprune sparsify — {m['model']}, {m['method']['name']} at density {m['density_requested']}",
        "",
        f"- Method: {m['method']['name']} ({m['method']['paper']})",
        f"- Sparsity: {m['sparsity']:.1%} of conv/linear weights are zero "
        f"({m['weights_masked']['kept']:,} of {m['weights_masked']['total']:,} kept)",
        f"- Top-1: dense {m['accuracy']['dense_pytorch']:.4f} → sparse {m['accuracy']['sparse_pytorch']:.4f} "
        f"(PyTorch); exported file {m['accuracy']['sparse_onnxruntime']:.4f} (ONNX Runtime)",
        "",
        "## Measured latency (ONNX Runtime, this CPU, same settings)",
        "",
        "| model | median | p90 | zeros in file | source |",
        "|---|---|---|---|---|",
        _row("dense", lat["dense_ms"], lat["zero_fraction_dense"]),
        _row(f"unstructured {m['sparsity']:.0%} sparse", lat["sparse_ms"], lat["zero_fraction_sparse"]),
    ]
    if "structured" in m:
        s = m["structured"]
        lines.append(_row(f"{s['kind']} structured ({s['sparsity']:.0%} sparse, top-1 {s['accuracy_pytorch']:.4f})",
                          s["latency"]["sparse_ms"], s["latency"]["zero_fraction_sparse"]))
    lines += ["", "## What this means", "",
              f"Dense compilers do not get faster from unstructured zeros: a zero weight is multiplied like "
              f"any other. Measured here: sparse / dense = **{lat['ratio']:.2f}×** the latency "
              f"({lat['sparse_ms']['median']:.3f} ms vs {lat['dense_ms']['median']:.3f} ms). The expected ratio "
              "is 1: both files run the same operations on the same shapes, so a difference either way is "
              "timing noise (compare it with the p90 spread), not a speed-up from the zeros."]
    if "structured" in m:
        lines.append(f"The {m['structured']['kind']} mask measured {m['structured']['latency']['ratio']:.2f}× "
                     "on the same dense runtime: ONNX Runtime's CPU provider has no N:M or block-sparse kernels.")
    lines += ["", "What would make it faster:", "",
              "- **Structured (channel) pruning** with `edgeprune deploy`: it removes whole filters, so the "
              "compiled model is smaller and its latency is measured against your budget.",
              "- **N:M (2:4) sparsity on GPUs with sparse tensor cores** (NVIDIA Ampere and later, via "
              "cuSPARSELt / TensorRT) — **not measured here**.",
              "- Block-sparse kernels in a sparse-aware runtime — **not measured here**.",
              "", "Unstructured sparsity still shrinks the model after compression (zeros compress well).", "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()), ""]
    return "\n".join(lines)


def _row(label: str, stats: dict, zeros: float) -> str:
    return f"| {label} | {stats['median']:.3f} ms | {stats['p90']:.3f} ms | {zeros:.1%} | `{stats['source']}` |"


__all__ = ["METHOD_RUNNERS", "SparsifyConfig", "bisect", "round_targets", "sparsify", "render_sparsify_markdown"]

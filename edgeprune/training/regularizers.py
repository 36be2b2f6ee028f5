"""Training-time regularisers for the fine-tune loop, selectable by name (``--regularizer NAME``).

Each registry entry is a :class:`RegularizerFactory`: given the model about to be trained, a small
typed options dataclass and the number of steps in one epoch of the train loader, it builds a
:class:`Regularizer` — a ``TrainCallback`` for ``finetune.train`` that also knows what to undo
when training ends (SCL's parametrisations, RigL's forward hooks, LRPET's last projection).

Why a context manager around ``train`` (:func:`regularized`) rather than a bare callback: the
channel-pruning search hands ``train`` a *new* model after every pruning step, and some methods
change the model's structure while they train (SCL wraps every weight in ``w ⊙ step(m)``). Such a
change must be made before ``train`` builds its optimiser and removed before the next pruning
step or ``torch.export`` sees the model; ``with regularized(...) as callbacks`` guarantees both,
also when training is interrupted (Ctrl-C leaves a plain model that can be checkpointed).

Entries (papers in :mod:`edgeprune.criteria.slimming`, :mod:`edgeprune.sparsity` and
:mod:`edgeprune.training.lowrank`):

- ``slimming``: λ·Σ|γ| over BN scales, λ = 1e-4 (Liu et al. 2017's VGG value).
- ``scl``: learned connectivity ``w ⊙ step(m)`` plus λ·#active; the weights come out of training
  with the pruned connections at exactly 0.
- ``rigl``: fixed-density sparse training with drop/grow every ΔT steps. Initial masks have ERK
  layer densities; they are chosen by magnitude by default, because here RigL fine-tunes a
  *trained* (pruned) network and the paper's random masks (``init="random"``, for training from
  scratch) would throw its learned weights away. Each train call starts a fresh schedule; with
  the paper's ΔT = 100 a fine-tune shorter than 100 steps only holds the mask (no drop/grow).
- ``hessian-spectral``: μ·ρ(H) of a probe minibatch (the first batch of the train loader).
- ``lrpet``: LRPET's per-epoch projection. ``TrainCallback`` has no epoch hook, so the callback
  counts optimiser steps and projects once every ``steps_per_epoch`` steps (one pass over the
  loader ≈ one epoch), in a forward pre-hook so that the next step's gradient is taken at the
  projected weights; a last projection runs when training ends, so the model always leaves
  low-rank (ready for :func:`edgeprune.training.lowrank.factorize`). Momentum is not reset between
  epochs (the paper's single training run), unlike :func:`~edgeprune.training.lowrank.train_lrpet`.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Callable, Generic, Iterator, Literal, Protocol, TypeVar

import torch
from torch import nn
from torch.utils.data import DataLoader

from edgeprune.criteria.slimming import SlimmingRegularizer
from edgeprune.errors import ConfigError
from edgeprune.training.finetune import TrainCallback
from edgeprune.training.lowrank import conv_bn_pairs, lrpet_project, ranks_by_ratio
from edgeprune.registry import Registry
from edgeprune.sparsity import scl
from edgeprune.sparsity.masks import Masks, prunable_weights
from edgeprune.sparsity.rigl import RigL, erk_densities, random_masks
from edgeprune.sparsity.spectral import HessianSpectralRegularizer


class Regularizer:
    """A TrainCallback plus its teardown: pass it to ``train``, then :meth:`close` it once.

    ``callback`` is the method's own callback object (inspect it for method state: RigL's masks,
    the Hessian estimates); ``stack`` holds what :meth:`close` undoes, in reverse order.
    """

    def __init__(self, name: str, callback: TrainCallback, stack: ExitStack | None = None) -> None:
        self.name = name
        self.callback = callback
        self.stack = stack or ExitStack()

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        return self.callback.extra_loss(model)

    def after_backward(self, model: nn.Module, step: int) -> None:
        self.callback.after_backward(model, step)

    def close(self) -> None:
        """Undo the method's changes to the model (idempotent)."""
        self.stack.close()


class RegularizerOptions(Protocol):
    """An options dataclass that can fill in its defaults for one training run."""

    @classmethod
    def for_training(cls, loader: DataLoader, epochs: float) -> "RegularizerOptions": ...


O = TypeVar("O")


@dataclass(frozen=True)
class RegularizerFactory(Generic[O]):
    """Builds a :class:`Regularizer` from (model, options, steps per epoch); knows its options type."""

    name: str
    options: type
    build: Callable[[nn.Module, O, int], Regularizer]
    summary: str

    def __call__(self, model: nn.Module, options: O, steps_per_epoch: int) -> Regularizer:
        if not isinstance(options, self.options):
            raise TypeError(f"regularizer {self.name!r} takes {self.options.__name__}, got {type(options).__name__}")
        if steps_per_epoch < 1:
            raise ValueError("steps_per_epoch must be >= 1")
        return self.build(model, options, steps_per_epoch)


regularizers: Registry[RegularizerFactory] = Registry("regularizer")


def _register(name: str, options: type, summary: str):
    def deco(build: Callable[[nn.Module, O, int], Regularizer]) -> Callable[[nn.Module, O, int], Regularizer]:
        regularizers.register(name)(RegularizerFactory(name, options, build, summary))
        return build

    return deco


# --- slimming -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlimmingOptions:
    lam: float = 1e-4

    @classmethod
    def for_training(cls, loader: DataLoader, epochs: float) -> "SlimmingOptions":
        return cls()


@_register("slimming", SlimmingOptions, "Network Slimming: λ·Σ|γ| on BN scales (Liu et al., ICCV 2017)")
def build_slimming(model: nn.Module, options: SlimmingOptions, steps_per_epoch: int) -> Regularizer:
    """Stateless: nothing to set up or undo."""
    return Regularizer("slimming", SlimmingRegularizer(options.lam))


# --- scl ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SCLOptions:
    lam: float = 1e-4
    init_score: float = 1.0

    @classmethod
    def for_training(cls, loader: DataLoader, epochs: float) -> "SCLOptions":
        return cls()


@_register("scl", SCLOptions, "Sparse Connectivity Learning: w ⊙ step(m), λ·#active (Tang et al., TNNLS 2022)")
def build_scl(model: nn.Module, options: SCLOptions, steps_per_epoch: int) -> Regularizer:
    """Attach the mask scores now (``train`` must see them when it builds its optimiser);
    closing bakes ``w ⊙ step(m)`` into plain weights."""
    scl.attach(model, options.init_score)
    stack = ExitStack()
    stack.callback(scl.detach, model)
    return Regularizer("scl", scl.SCL(options.lam), stack)


# --- rigl -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RigLOptions:
    density: float = 0.5
    epochs: float = 1.0  # length of the train call, for RigL's T_end = 0.75·T
    delta_t: int = 100
    alpha: float = 0.3
    init: Literal["magnitude", "random"] = "magnitude"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.density <= 1 or self.epochs < 0:
            raise ConfigError("rigl needs 0 < density <= 1 and epochs >= 0")
        if self.init not in ("magnitude", "random"):
            raise ConfigError(f"rigl init must be 'magnitude' or 'random', got {self.init!r}")

    @classmethod
    def for_training(cls, loader: DataLoader, epochs: float) -> "RigLOptions":
        return cls(epochs=epochs)


def magnitude_masks_at(model: nn.Module, densities: dict[str, float]) -> Masks:
    """Per layer, keep the ``round(d_l · n_l)`` largest-|w| weights (ties broken by position)."""
    weights = prunable_weights(model)
    out = {}
    for name, density in densities.items():
        flat = weights[name].detach().abs().flatten()
        keep = torch.zeros(flat.numel(), dtype=torch.bool)
        keep[torch.topk(flat, int(round(density * flat.numel())), sorted=False).indices] = True
        out[name] = keep.view(weights[name].shape)
    return Masks(out)


def erk_masks(model: nn.Module, density: float, init: str, seed: int) -> Masks:
    """RigL's ERK layer densities; which weights each layer keeps: largest |w| or uniformly random."""
    shapes = {n: p.shape for n, p in prunable_weights(model).items()}
    densities = erk_densities(shapes, density)
    if init == "random":
        return random_masks(shapes, densities, torch.Generator().manual_seed(seed))
    return magnitude_masks_at(model, densities)


@_register("rigl", RigLOptions, "RigL: fixed-density sparse training with drop/grow (Evci et al., ICML 2020)")
def build_rigl(model: nn.Module, options: RigLOptions, steps_per_epoch: int) -> Regularizer:
    """Masks applied now; forward pre-hooks hold them until close (see ``MaskedTraining.hold``)."""
    total = max(1, int(round(options.epochs * steps_per_epoch)))
    masks = erk_masks(model, options.density, options.init, options.seed)
    rigl = RigL(masks, total, delta_t=options.delta_t, alpha=options.alpha)
    stack = ExitStack()
    stack.enter_context(rigl.hold(model))
    return Regularizer("rigl", rigl, stack)


# --- hessian-spectral -----------------------------------------------------------------------


Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class HessianSpectralOptions:
    probe: Batch
    mu: float = 1e-3
    every: int = 10
    iters: int = 10

    @classmethod
    def for_training(cls, loader: DataLoader, epochs: float) -> "HessianSpectralOptions":
        """The probe minibatch is the loader's first batch (the callback never sees training batches)."""
        x, y = next(iter(loader))
        return cls(probe=(x, y))


@_register("hessian-spectral", HessianSpectralOptions,
           "μ·ρ(H) of a probe batch, toward flat minima (after Ebrahimi & Klabjan 2021)")
def build_hessian_spectral(model: nn.Module, options: HessianSpectralOptions, steps_per_epoch: int) -> Regularizer:
    """Stateless towards the model (probe passes copy the BN buffers)."""
    return Regularizer("hessian-spectral", HessianSpectralRegularizer(
        options.probe, mu=options.mu, every=options.every, iters=options.iters))


# --- lrpet ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LRPETOptions:
    rank_ratio: float = 0.5  # r = ceil(ratio · min(out, in·k·k)) per ungrouped conv

    def __post_init__(self) -> None:
        if not 0 < self.rank_ratio <= 1:
            raise ConfigError("lrpet rank_ratio must be in (0, 1]")

    @classmethod
    def for_training(cls, loader: DataLoader, epochs: float) -> "LRPETOptions":
        return cls()


class EpochProjection:
    """TrainCallback: LRPET's projection once per ``steps_per_epoch`` optimiser steps.

    Steps are counted in ``after_backward``; the projection itself runs in a forward pre-hook on
    the root module (installed by :func:`build_lrpet`) at the first forward pass of each new
    epoch, i.e. after the previous epoch's last optimiser step and before the next gradient.
    """

    def __init__(self, ranks: dict[str, int], pairs: dict[str, str], steps_per_epoch: int) -> None:
        self.ranks = ranks
        self.pairs = pairs
        self.steps_per_epoch = steps_per_epoch
        self.steps_done = 0
        self.projected_at = 0  # steps_done at the last projection
        self.projections = 0

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        return None

    def after_backward(self, model: nn.Module, step: int) -> None:
        self.steps_done += 1

    def due(self) -> bool:
        return self.steps_done > self.projected_at and self.steps_done % self.steps_per_epoch == 0

    def project(self, model: nn.Module) -> None:
        lrpet_project(model, self.ranks, pairs=self.pairs)
        self.projected_at = self.steps_done
        self.projections += 1

    def finish(self, model: nn.Module) -> None:
        """Project once more if any step was taken since the last projection."""
        if self.steps_done > self.projected_at:
            self.project(model)

    def pre_forward_hook(self, module: nn.Module, args: tuple) -> None:
        if module.training and self.due():
            self.project(module)


@_register("lrpet", LRPETOptions, "LRPET: per-epoch low-rank projection with energy transfer (Guo et al., TNNLS 2024)")
def build_lrpet(model: nn.Module, options: LRPETOptions, steps_per_epoch: int) -> Regularizer:
    """Ranks from ``rank_ratio`` for the model as it is now; conv→BN pairs traced once."""
    callback = EpochProjection(ranks_by_ratio(model, options.rank_ratio), conv_bn_pairs(model), steps_per_epoch)
    stack = ExitStack()
    stack.callback(callback.finish, model)  # runs after the hook is removed (ExitStack is LIFO)
    stack.callback(model.register_forward_pre_hook(callback.pre_forward_hook).remove)
    return Regularizer("lrpet", callback, stack)


# --- wiring ---------------------------------------------------------------------------------


def build_regularizer(name: str, model: nn.Module, loader: DataLoader, epochs: float) -> Regularizer:
    """The named regulariser with default options for a ``train`` call of ``epochs`` over ``loader``."""
    factory = regularizers.get(name)
    options = factory.options.for_training(loader, epochs)
    return factory(model, options, max(1, len(loader)))


@contextmanager
def regularized(name: str | None, model: nn.Module, loader: DataLoader,
                epochs: float) -> Iterator[tuple[TrainCallback, ...]]:
    """``with regularized(name, model, loader, epochs) as callbacks: train(..., callbacks=callbacks)``.

    ``name=None`` yields no callbacks. Nothing is built when the train call would make no step
    (``epochs · len(loader)`` rounds to 0), so e.g. SCL does not touch the model for nothing.
    """
    if name is None or int(round(epochs * len(loader))) == 0:
        yield ()
        return
    regularizer = build_regularizer(name, model, loader, epochs)
    try:
        yield (regularizer,)
    finally:
        regularizer.close()


__all__ = [
    "EpochProjection", "HessianSpectralOptions", "LRPETOptions", "Regularizer", "RegularizerFactory",
    "RigLOptions", "SCLOptions", "SlimmingOptions", "build_regularizer", "regularized", "regularizers",
]

"""Weight masks: which individual weights a sparsity method keeps, and how training keeps the rest at 0.

A :class:`Masks` maps parameter names (``model.named_parameters()`` spelling, e.g.
``"stage1.1.conv1.weight"``) to boolean tensors of the parameter's shape; ``True`` = kept.
Masks are data, separate from the model, so a mask computed on one copy applies to another and a
method can be tested without training.

Keeping pruned weights at exactly zero while ``finetune.train`` runs SGD with momentum and
weight decay: :class:`MaskedTraining` zeroes the masked weights *and* their gradients after every
backward pass. With a fresh optimiser (``train`` builds one per call) the momentum buffer of a
masked weight then stays 0 (its gradient is 0 and weight decay adds ``wd·0``), so the weight never
moves. Methods whose masks change during training (RigL) can leave momentum in a newly dropped
weight; :meth:`MaskedTraining.hold` adds forward pre-hooks that re-zero masked weights before every
forward pass, so the network never computes with them, and zeroes them once more on exit.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator, Mapping

import torch
from torch import nn

WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)


def prunable_weights(model: nn.Module, skip: Iterable[str] = ()) -> dict[str, nn.Parameter]:
    """The ``weight`` of every conv and linear layer (module order), minus modules named in ``skip``.

    Biases and BN parameters are left dense: they are a negligible share of the weights and the
    papers here (Han, SNIP, RigL, SCL) prune only connection weights.
    """
    skipped = set(skip)
    return {qualified(name, "weight"): module.weight for name, module in model.named_modules()
            if isinstance(module, WEIGHTED) and name not in skipped}


def qualified(module_name: str, leaf: str) -> str:
    """``named_parameters`` spelling of ``leaf`` on the module ``module_name`` ("" = the root)."""
    return f"{module_name}.{leaf}" if module_name else leaf


class Masks:
    """Parameter name → boolean keep-mask. Mutable on purpose: RigL rewires masks in place."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        for name, mask in tensors.items():
            if mask.dtype != torch.bool:
                raise TypeError(f"mask {name!r} must be a bool tensor, got {mask.dtype}")
        self.tensors: dict[str, torch.Tensor] = dict(tensors)

    @classmethod
    def dense(cls, model: nn.Module, skip: Iterable[str] = ()) -> "Masks":
        """All-True masks over :func:`prunable_weights` (nothing pruned yet)."""
        return cls({n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable_weights(model, skip).items()})

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def __setitem__(self, name: str, mask: torch.Tensor) -> None:
        if mask.dtype != torch.bool or mask.shape != self.tensors[name].shape:
            raise ValueError(f"replacement mask for {name!r} must be bool with shape {tuple(self.tensors[name].shape)}")
        self.tensors[name] = mask

    def __contains__(self, name: object) -> bool:
        return name in self.tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        return iter(self.tensors.items())

    def copy(self) -> "Masks":
        return Masks({n: m.clone() for n, m in self.tensors.items()})

    def check(self, model: nn.Module) -> None:
        """Raise ``ValueError`` when a mask names no parameter of ``model`` or has the wrong shape."""
        params = dict(model.named_parameters())
        for name, mask in self.tensors.items():
            if name not in params:
                raise ValueError(f"mask {name!r} names no parameter of the model")
            if params[name].shape != mask.shape:
                raise ValueError(f"mask {name!r} has shape {tuple(mask.shape)}, the parameter "
                                 f"{tuple(params[name].shape)}")

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """``w *= mask`` for every masked parameter (``masked_fill`` so no NaN·0 or -0.0 appears)."""
        self.check(model)
        for name, mask in self.tensors.items():
            param = model.get_parameter(name)
            param.masked_fill_(~mask.to(param.device), 0.0)

    def kept(self) -> int:
        return int(sum(int(m.sum()) for m in self.tensors.values()))

    def total(self) -> int:
        return int(sum(m.numel() for m in self.tensors.values()))

    def density(self) -> dict[str, float]:
        """Per parameter: the fraction of entries kept."""
        return {n: float(m.sum()) / m.numel() for n, m in self.tensors.items()}

    def sparsity(self) -> float:
        """Overall fraction of masked-out entries over all masked parameters (0 = dense)."""
        total = self.total()
        return 1.0 - self.kept() / total if total else 0.0


def global_topk(scores: Mapping[str, torch.Tensor], keep: int) -> Masks:
    """Masks keeping exactly ``keep`` entries: the largest scores across all parameters together.

    ``torch.topk`` breaks ties by position, so the count is exact even when scores tie.
    """
    total = sum(s.numel() for s in scores.values())
    if not 0 <= keep <= total:
        raise ValueError(f"cannot keep {keep} of {total} weights")
    flat = torch.cat([s.detach().flatten().float() for s in scores.values()])
    chosen = torch.zeros(total, dtype=torch.bool)
    chosen[torch.topk(flat, keep, sorted=False).indices] = True
    out, start = {}, 0
    for name, s in scores.items():
        out[name] = chosen[start:start + s.numel()].view(s.shape).to(s.device)
        start += s.numel()
    return Masks(out)


def _owner(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name.rpartition(".")[0])


class MaskedTraining:
    """TrainCallback that keeps masked weights at zero: ``w ⊙ m`` and ``∇w ⊙ m`` after backward.

    Use ``train(..., callbacks=(MaskedTraining(masks),))`` after ``masks.apply(model)``. The
    masks are read at every call, so a subclass (RigL) may rewrite them between steps.
    """

    def __init__(self, masks: Masks) -> None:
        self.masks = masks

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        return None

    @torch.no_grad()
    def after_backward(self, model: nn.Module, step: int) -> None:
        for name, mask in self.masks.items():
            param = model.get_parameter(name)
            param.masked_fill_(~mask, 0.0)
            if param.grad is not None:
                param.grad.masked_fill_(~mask, 0.0)

    @contextmanager
    def hold(self, model: nn.Module) -> Iterator["MaskedTraining"]:
        """Re-zero masked weights before every forward pass while inside; apply once more on exit.

        Needed only when masks change mid-training (momentum may carry a just-dropped weight off
        zero for a step); harmless otherwise.
        """
        self.masks.check(model)
        handles = []
        for name in self.masks:
            leaf = name.rpartition(".")[2]
            handles.append(_owner(model, name).register_forward_pre_hook(self._zero_hook(name, leaf)))
        try:
            self.masks.apply(model)
            yield self
        finally:
            for handle in handles:
                handle.remove()
            self.masks.apply(model)

    def _zero_hook(self, name: str, leaf: str):
        def hook(module: nn.Module, args: tuple) -> None:
            with torch.no_grad():
                getattr(module, leaf).masked_fill_(~self.masks[name], 0.0)

        return hook

"""CHIP — Sui, Yin, Xie, Phan, Zonouz, Yuan, "CHIP: CHannel Independence-based Pruning for
Compact Neural Networks", NeurIPS 2021.

For one image, stack a layer's post-ReLU feature maps as the rows of A (c × hw). The channel
independence of channel i is how much nuclear norm A loses without that row,

    CI_i = ‖A‖_* − ‖A with row i zeroed‖_*,

averaged over the images (the paper uses ~5 × 128). A channel whose map is a combination of the
others carries little independent information and is pruned first; each layer is pruned by its
own ratio (scope "layer").

How it is computed: ‖A‖_* = Σ sqrt(eig(A Aᵀ)) (or of Aᵀ A, whichever is smaller); zeroing row i
deletes row and column i of A Aᵀ (or subtracts a_i a_iᵀ from Aᵀ A), so each CI costs one small
symmetric eigen-solve instead of an SVD. Done in float64 so the square roots of tiny eigenvalues
stay accurate.

Choices: the "post-ReLU feature maps" of a group are the inputs of the conv layers that read it
(exactly what they see: after BN, ReLU, a residual add, pooling); a group read in several
distinct tensors (a residual stream) sums their CIs. Linear readers (a classifier after global
pooling, hw = 1) are used only when no conv reads the group; a group nobody reads falls back to
its filters' L1 norm. The model runs in eval mode.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeprune.criteria import criteria
from edgeprune.criteria.base import ScoreContext
from edgeprune.criteria.common import consumers, filter_l1, finish, require_batches, run_capturing_inputs, to_group


def _nuclear_from_gram(gram: torch.Tensor) -> torch.Tensor:
    return torch.linalg.eigvalsh(gram).clamp(min=0).sqrt().sum(-1)


def channel_independence(maps: torch.Tensor) -> torch.Tensor:
    """Σ over samples of CI_i for ``maps`` (N, c, hw): ‖A‖_* − ‖A with row i zeroed‖_*."""
    a = maps.double()
    n, c, hw = a.shape
    total = torch.zeros(c, dtype=torch.float64)
    if c <= hw:
        gram = a @ a.transpose(1, 2)  # (N, c, c)
        full = _nuclear_from_gram(gram)
        for i in range(c):
            rest = torch.cat([torch.arange(i), torch.arange(i + 1, c)])
            total[i] = (full - _nuclear_from_gram(gram[:, rest][:, :, rest])).sum()
    else:
        gram = a.transpose(1, 2) @ a  # (N, hw, hw)
        full = _nuclear_from_gram(gram)
        for i in range(c):
            row = a[:, i, :]
            reduced = gram - row[:, :, None] * row[:, None, :]
            total[i] = (full - _nuclear_from_gram(reduced)).sum()
    return total


def _as_maps(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, C, ...) conv inputs or (N, C·k) linear inputs -> (N, C, positions)."""
    return x.reshape(x.shape[0], channels, -1)


def _linear_maps(x: torch.Tensor, channels: int) -> torch.Tensor:
    """A Linear's input as (N, C, positions): (N, C·k) flattened maps, or token layouts
    (N, L, C) whose channels are the last axis."""
    if x.dim() > 2:
        return x.reshape(x.shape[0], -1, x.shape[-1]).transpose(1, 2).reshape(x.shape[0], channels, -1)
    return _as_maps(x, channels)


@criteria.register("chip")
class CHIP:
    name = "chip"
    paper = ("Sui, Yin, Xie, Phan, Zonouz, Yuan, CHIP: CHannel Independence-based Pruning for Compact "
             "Neural Networks, NeurIPS 2021")
    scope = "layer"

    def __call__(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        require_batches(ctx, self.name)
        readers = {}
        for name in ctx.grouped.groups:
            found = consumers(ctx, name)
            convs = [c for c in found if isinstance(ctx.grouped.module(c), nn.Conv2d)]
            readers[name] = convs or list(found)
        owners: dict[str, list[str]] = {}
        for g, cs in readers.items():
            for c in cs:
                owners.setdefault(c, []).append(g)
        sums = {name: torch.zeros(g.channels, dtype=torch.float64) for name, g in ctx.grouped.groups.items()}
        samples = {name: 0 for name in ctx.grouped.groups}
        seen: set[tuple] = set()
        computed: dict[tuple, torch.Tensor] = {}
        kept_alive: list[torch.Tensor] = []

        def take(consumer: str, x: torch.Tensor) -> None:
            module = ctx.grouped.module(consumer)
            tensor = (x.data_ptr(), tuple(x.shape), tuple(x.stride()))
            kept_alive.append(x)  # keep the storage so no other tensor of this batch reuses it
            for group_name in owners[consumer]:
                key = (group_name, *tensor)
                if key in seen:  # one tensor read by several layers counts once per group
                    continue
                seen.add(key)
                group = ctx.grouped.groups[group_name]
                if isinstance(module, nn.Conv2d):
                    # CI over every channel the conv reads (maybe a concatenation of groups),
                    # then each channel credited to the group position it belongs to
                    if tensor not in computed:
                        computed[tensor] = channel_independence(_as_maps(x, x.shape[1]))
                    ci = to_group(computed[tensor], group.member(consumer, "in"), group.channels)
                else:
                    ci = channel_independence(_linear_maps(x, group.channels))
                sums[group_name] += ci
                samples[group_name] += x.shape[0]

        def forget() -> None:
            seen.clear()
            computed.clear()
            kept_alive.clear()

        run_capturing_inputs(ctx, set(owners), take, forget)
        images = sum(x.shape[0] for x, _ in ctx.batches)
        return finish(ctx, {name: (sums[name] / images).float() if samples[name] else filter_l1(ctx, name)
                            for name in ctx.grouped.groups})

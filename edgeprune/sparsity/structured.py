"""Structured alternatives to an unstructured mask: N:M (e.g. 2:4) and block masks, by magnitude.

Why: unstructured zeros do not speed up dense kernels (see :mod:`edgeprune.sparsity.measure`);
N:M sparsity (NVIDIA Ampere sparse tensor cores run 2:4) and small dense blocks (1x4, 4x4: the
shapes block-sparse CPU kernels vectorise) can. ``to_structured`` turns a method's mask into the
nearest such pattern, scoring weights by ``|w|`` restricted to the input mask (weights the method
pruned score 0, so they are chosen last).

Layout (as NVIDIA's ASP does): a weight is viewed as a matrix (out, reduction) with the reduction
axis ordered (kh, kw, in) for convs, so groups/blocks run along input channels at one kernel
position, the axis sparse GEMM kernels reduce over.

- N:M: in every group of M consecutive reduction entries keep exactly the N largest. A layer whose
  reduction length is not a multiple of M (e.g. a 1-channel stem conv) cannot be tiled and keeps
  its input mask unchanged (reported by :func:`nm_eligible`).
- Blocks (bh x bw over (out, reduction)): each block scores the L1 norm of its masked weights; keep
  the ``round(density · #blocks)`` best blocks, where density is the input mask's for that layer,
  so the structured mask has about the same number of weights. Edge blocks of shapes that do not
  divide are partial (zero-padded for scoring, cropped after).
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.nn import functional as F

from edgeprune.sparsity.masks import Masks


def as_matrix(weight: torch.Tensor) -> torch.Tensor:
    """(out, in, kh, kw) → (out, kh·kw·in) with input channels innermost; Linear stays (out, in)."""
    if weight.dim() <= 2:
        return weight.reshape(weight.shape[0], -1)
    return weight.movedim(1, -1).reshape(weight.shape[0], -1)


def from_matrix(matrix: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of :func:`as_matrix` for a tensor of ``shape``."""
    if len(shape) <= 2:
        return matrix.reshape(shape)
    permuted = (shape[0], *shape[2:], shape[1])
    return matrix.reshape(permuted).movedim(-1, 1).contiguous()


def nm_eligible(shape: torch.Size, m: int) -> bool:
    """Whether a weight of ``shape`` tiles into groups of ``m`` along its reduction axis."""
    return len(shape) >= 2 and (torch.Size(shape).numel() // shape[0]) % m == 0


def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` largest of every ``m`` consecutive reduction entries (exactly ``n`` per group)."""
    if not 0 < n <= m:
        raise ValueError(f"N:M needs 0 < N <= M, got {n}:{m}")
    if not nm_eligible(score.shape, m):
        raise ValueError(f"shape {tuple(score.shape)} does not tile into groups of {m}")
    groups = as_matrix(score).reshape(-1, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, torch.topk(groups, n, dim=1).indices, True)
    return from_matrix(keep.reshape(score.shape[0], -1), score.shape)


def block_mask(score: torch.Tensor, density: float, bh: int, bw: int) -> torch.Tensor:
    """Keep the ``round(density · #blocks)`` blocks of size bh x bw with the largest summed score."""
    matrix = as_matrix(score)
    rows, cols = matrix.shape
    padded = F.pad(matrix, (0, -cols % bw, 0, -rows % bh))
    pr, pc = padded.shape
    blocks = padded.reshape(pr // bh, bh, pc // bw, bw).sum(dim=(1, 3))
    keep_blocks = int(round(density * blocks.numel()))
    chosen = torch.zeros(blocks.numel(), dtype=torch.bool)
    if keep_blocks:
        chosen[torch.topk(blocks.flatten(), keep_blocks).indices] = True
    full = chosen.view(blocks.shape).repeat_interleave(bh, 0).repeat_interleave(bw, 1)
    return from_matrix(full[:rows, :cols].contiguous(), score.shape)


def parse_kind(kind: str) -> tuple[str, int, int]:
    """``"2:4"`` → ("nm", 2, 4); ``"1x4"`` or ``"block:4x4"`` → ("block", 1, 4) / ("block", 4, 4)."""
    nm = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", kind)
    if nm:
        return "nm", int(nm.group(1)), int(nm.group(2))
    block = re.fullmatch(r"\s*(?:block:)?(\d+)\s*x\s*(\d+)\s*", kind)
    if block and int(block.group(1)) > 0 and int(block.group(2)) > 0:
        return "block", int(block.group(1)), int(block.group(2))
    raise ValueError(f"unknown structure {kind!r}; use N:M (e.g. '2:4') or a block 'RxC' (e.g. '1x4', '4x4')")


@torch.no_grad()
def to_structured(masks: Masks, kind: str, model: nn.Module) -> Masks:
    """The structured mask of ``kind`` nearest to ``masks``, chosen by the magnitude of ``model``'s weights.

    Only weight matrices (>= 2-D) are converted; 1-D masks (biases) pass through unchanged.
    """
    form, a, b = parse_kind(kind)
    masks.check(model)
    out = {}
    for name, mask in masks.items():
        weight = model.get_parameter(name).detach()
        if weight.dim() < 2:
            out[name] = mask.clone()
            continue
        score = weight.abs().float() * mask
        if form == "nm":
            out[name] = nm_mask(score, a, b) if nm_eligible(weight.shape, b) else mask.clone()
        else:
            out[name] = block_mask(score, float(mask.float().mean()), a, b)
    return Masks(out)

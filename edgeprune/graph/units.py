"""Which units of a coupled group go: a small integer program (the planner and latency tables use it).

A coupled group (:mod:`edgeprune.graph.coupling`) can only lose whole *units* (channels tied by a
shuffle or grouped conv), never a frozen channel, and every balance pair (the pieces of a chunk)
must lose as many channels each. Picking the lowest-scored units greedily breaks the balance; the
exact choice is a 0/1 program: one variable per unit, balance rows as equalities, each part (one
torch-pruning group, i.e. one conv's output) keeping at least its minimum, at most ``remove``
channels in all; maximise the channels removed, then minimise their summed (normalised) score.
ShuffleNetV2's largest stage has ~250 units and 8 balance rows: HiGHS (``scipy.optimize.milp``)
solves it in milliseconds. ``channel_multiple`` is not applied inside a coupled group (its units
are fixed by the model's shuffle), which the module doc of :mod:`edgeprune.search.planner` says.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from edgeprune.graph.coupling import Coupling

log = logging.getLogger("edgeprune.search")
TIME_LIMIT_S = 20.0


def _part_rows(coupling: Coupling, units: list[tuple[int, ...]]) -> np.ndarray:
    rows, start = [], 0
    for _, size in coupling.parts:
        rows.append([sum(1 for p in u if start <= p < start + size) for u in units])
        start += size
    return np.array(rows, dtype=float)


def choose_removal(coupling: Coupling, scores: torch.Tensor, remove: int, min_keep: float = 0.0) -> list[int]:
    """Current positions to remove (at most ``remove``), whole units, balance kept.

    ``min_keep``: share of each part's current channels that must stay (at least one)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    units = list(coupling.units)
    if remove <= 0 or not units:
        return []
    s = scores.detach().double().flatten()
    s = (s - s.min()) / (float(s.max() - s.min()) or 1.0)
    cost = np.array([float(s[list(u)].sum()) for u in units])
    size = np.array([len(u) for u in units], dtype=float)
    weight = 1.0 + float(cost.sum())  # one more channel removed outweighs any score difference
    parts = _part_rows(coupling, units)
    caps = [n - max(1, math.ceil(min_keep * n)) for _, n in coupling.parts]
    constraints = [LinearConstraint(size[None, :], 0, remove), LinearConstraint(parts, 0, np.array(caps))]
    if coupling.balance:
        rows = [[len(set(u) & set(a)) - len(set(u) & set(b)) for u in units] for a, b in coupling.balance]
        constraints.append(LinearConstraint(np.array(rows, dtype=float), 0, 0))
    result = milp(cost - weight * size, integrality=np.ones(len(units)), bounds=Bounds(0, 1),
                  constraints=constraints, options={"time_limit": TIME_LIMIT_S})
    if result.x is None:
        log.warning("no balanced removal found for a coupled group (%s): kept as is", result.message)
        return []
    return sorted(p for u, x in zip(units, result.x) if x > 0.5 for p in u)


def removable(coupling: Coupling) -> bool:
    """Whether any exact removal exists (every part keeping a channel). ShuffleNetV2's 8-block
    stage at 48 channels per branch has none: each unbalanced chunk can only be offset by a unit
    that covers a whole conv's output."""
    total = sum(n for _, n in coupling.parts)
    return bool(choose_removal(coupling, torch.zeros(total), total))


def keep_first(coupling: Coupling, channels: int, count: int) -> tuple[int, ...]:
    """A valid kept set of about ``count`` channels preferring low positions (latency tables:
    which channels go does not change the latency, only how many)."""
    removed = set(choose_removal(coupling, torch.arange(channels, 0, -1, dtype=torch.float64),
                                 channels - count))
    return tuple(p for p in range(channels) if p not in removed)

"""Search strategies: how big the next pruning step is, given where the last candidate measured.

A registry, so a new strategy (latency-knapsack, evolutionary, ...) is one module that registers
itself and is offered by ``edgeprune deploy --strategy`` without editing anything else.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

from edgeprune.registry import Registry

if TYPE_CHECKING:
    from edgeprune.search.config import SearchConfig


class Strategy(Protocol):
    """``fraction`` of the currently kept channels to remove next; ``paper`` says where it is from."""

    paper: str

    def fraction(self, latency_ratio: float, goal_ratio: float, cfg: "SearchConfig") -> float: ...


strategies: Registry = Registry("search strategy")


@strategies.register("sqrt-step")
class SqrtStep:
    """Latency ~ channels² for conv nets, so keeping sqrt(goal/latency) of the channels would land
    on the goal; take at most ``max_step`` of that per step and let fine-tuning recover."""

    paper = "Molchanov et al. 2017 (iterative prune + fine-tune) with a measured-latency step size"

    def fraction(self, latency_ratio: float, goal_ratio: float, cfg: "SearchConfig") -> float:
        wanted = 1.0 - math.sqrt(max(goal_ratio, 1e-9) / latency_ratio)
        return min(cfg.max_step, max(cfg.min_step, wanted))


@strategies.register("fixed-step")
class FixedStep:
    """NetAdapt's schedule: the same small step every time (``min_step``), measured after each;
    slower, but never overshoots the budget by much."""

    paper = "Yang et al. 2018, NetAdapt (ECCV)"

    def fraction(self, latency_ratio: float, goal_ratio: float, cfg: "SearchConfig") -> float:
        return cfg.min_step

"""The iterative loop: score -> prune a step -> fine-tune a little -> compile and measure,
until the measured latency of the compiled candidate meets the budget (Molchanov's schedule,
with NetAdapt's rule that the *measured* figure, not MACs, decides).

Progress is checkpointed after every step (plan + weights) so Ctrl-C or a crash loses at most
the step in flight, and ``--resume`` continues from the last checkpoint.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from edgeprune.criteria import ScoreContext, get_criterion
from edgeprune.errors import BudgetError, ConfigError
from edgeprune.candidate.evaluator import Evaluator, RuntimeResult
from edgeprune.training.finetune import TrainConfig, pytorch_accuracy, train
from edgeprune.graph import GroupedModel, count_macs
from edgeprune.io import write_json_atomic
from edgeprune.plan import PruningPlan
from edgeprune.search.planner import StepPolicy, next_plan
from edgeprune.progress import ProgressSink, null_progress
from edgeprune.prune import apply_plan, prune_between
from edgeprune.training.regularizers import regularized
from edgeprune.config import SearchConfig


@dataclass(frozen=True)
class SearchInputs:
    original: nn.Module
    example: torch.Tensor
    train_loader: DataLoader
    val_loader: DataLoader
    runtime: str
    budget_ms: float
    recovery: TrainConfig
    teacher: nn.Module | None


@dataclass(frozen=True)
class SearchOutcome:
    model: nn.Module
    plan: PruningPlan
    result: RuntimeResult


class Checkpoint:
    """``DIR/.edgeprune-state``: the plan so far and the matching weights, written atomically."""

    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.folder = folder
        self.fingerprint = fingerprint

    def save(self, plan: PruningPlan, model: nn.Module, phase: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        weights = self.folder / "model.pt"
        tmp = self.folder / ".model.pt.tmp"
        torch.save(model.state_dict(), str(tmp))
        os.replace(tmp, weights)
        plan.save(self.folder / "plan.json")
        write_json_atomic(self.folder / "state.json", {"fingerprint": self.fingerprint, "phase": phase})

    def load(self, original: nn.Module, example: torch.Tensor) -> tuple[PruningPlan, nn.Module, str] | None:
        state_file = self.folder / "state.json"
        if not state_file.is_file():
            return None
        state = json.loads(state_file.read_text())
        if state.get("fingerprint") != self.fingerprint:
            raise ConfigError(f"{self.folder} holds progress of a different run; use another --out or drop --resume")
        plan = PruningPlan.load(self.folder / "plan.json")
        model = apply_plan(original, plan, example)
        model.load_state_dict(torch.load(str(self.folder / "model.pt"), map_location="cpu", weights_only=True))
        return plan, model.eval(), str(state.get("phase", "search"))


def fingerprint(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def step_fraction(latency_ms: float, budget_ms: float, cfg: SearchConfig) -> float:
    """Latency ~ channels^2 for conv nets, so keeping sqrt(budget/latency) of the channels would
    land on the budget; take at most ``max_step`` of that per step and let fine-tuning recover."""
    wanted = 1.0 - math.sqrt(max(budget_ms, 1e-9) / latency_ms)
    return min(cfg.max_step, max(cfg.min_step, wanted))


def _score_batches(loader: DataLoader, n: int) -> tuple:
    batches = []
    for x, y in loader:
        batches.append((x, y))
        if len(batches) >= n:
            break
    return tuple(batches)


def run_search(inputs: SearchInputs, cfg: SearchConfig, evaluator: Evaluator, channel_multiple: int,
               checkpoint: Checkpoint, start: tuple[PruningPlan, nn.Module] | None,
               progress: ProgressSink = null_progress) -> SearchOutcome:
    """Prune until the compiled candidate measures within the budget; raise BudgetError if the
    loop runs out of steps or channels, naming the best latency reached and at what size."""
    criterion = get_criterion(cfg.criterion)
    if start is None:
        from edgeprune.prune import group_channels

        model = copy.deepcopy(inputs.original).eval()
        plan = PruningPlan.identity("", tuple(inputs.example.shape), cfg.criterion,
                                    group_channels(model, inputs.example))
    else:
        plan, model = start
    best: tuple[float, int] | None = None
    first = len(plan.steps)  # a resumed search continues its step numbering
    goal = inputs.budget_ms * (1.0 - cfg.headroom)
    try:
        for step in range(first, first + cfg.max_steps + 1):
            result = evaluator.run(model, inputs.example, inputs.runtime, f"step{step}")
            macs, params = count_macs(model, inputs.example)
            record = {"step": step, "latency_ms": result.measurement.latency.to_json(), "macs": macs,
                      "params": params, "accuracy_pytorch": pytorch_accuracy(model, inputs.val_loader),
                      "kept_fraction": round(plan.kept_fraction(), 4)}
            plan = replace(plan, steps=plan.steps + (record,))
            checkpoint.save(plan, model, "search")
            progress.log(f"step {step}: {result.measurement.latency.short()} on {inputs.runtime}, "
                         f"{macs / 1e6:.2f} MMACs, top-1 {record['accuracy_pytorch']:.3f}")
            if best is None or result.median_ms < best[0]:
                best = (result.median_ms, macs)
            if result.median_ms <= goal:
                return SearchOutcome(model, plan, result)
            if step == first + cfg.max_steps:
                break
            fraction = step_fraction(result.median_ms, goal, cfg)
            scores = criterion(ScoreContext(model, GroupedModel(model, inputs.example),
                                            _score_batches(inputs.train_loader, cfg.score_batches)))
            policy = StepPolicy(fraction, criterion.scope, channel_multiple, cfg.min_keep)
            new_plan = next_plan(plan, scores, policy)
            if new_plan.groups == plan.groups:
                break  # every group is at its minimum size
            model = prune_between(model, inputs.example, plan, new_plan)
            plan = new_plan
            with regularized(cfg.regularizer, model, inputs.train_loader, inputs.recovery.epochs) as callbacks:
                train(model, inputs.train_loader, inputs.recovery, inputs.teacher, callbacks, progress=progress,
                      description=f"recover step {step + 1}")
    except KeyboardInterrupt:
        checkpoint.save(plan, model, "search")
        raise
    assert best is not None
    raise BudgetError(
        f"latency budget {inputs.budget_ms:.3f} ms cannot be met on {inputs.runtime}: best reached "
        f"{best[0]:.3f} ms at {best[1] / 1e6:.2f} MMACs ({plan.kept_fraction():.0%} of channels kept)"
    )

"""The iterative loop: score -> prune a step -> fine-tune a little -> compile and measure, until
the compiled candidate meets the budget (Molchanov's schedule, with NetAdapt's rule that the
*measured* figure, not MACs, decides).

Every candidate is timed in alternating rounds with the compiled baseline (same process, same
minute), and the verdict is the median candidate/baseline ratio against the budget's ratio; an
undecided verdict gets more rounds. Progress (plan, weights, trace) is checkpointed after every
step; ``--resume`` continues from it with the same baseline figure.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from edgeprune.artifact import Artifact
from edgeprune.candidate.candidate import Candidate
from edgeprune.candidate.evaluator import Evaluator
from edgeprune.candidate.paired import Paired
from edgeprune.criteria import Criterion, ScoreContext, get_criterion
from edgeprune.data import take_batches
from edgeprune.errors import BudgetError
from edgeprune.graph import GroupedModel, count_macs
from edgeprune.plan import PruningPlan
from edgeprune.progress import ProgressSink, null_progress
from edgeprune.prune import group_channels, prune_between
from edgeprune.search.checkpoint import Checkpoint
from edgeprune.search.config import SearchConfig
from edgeprune.search.planner import StepPolicy, next_plan
from edgeprune.search.strategies import strategies
from edgeprune.search.trace import SearchTrace, StepRecord
from edgeprune.training.finetune import TrainConfig, pytorch_accuracy, train
from edgeprune.training.regularizers import regularized


@dataclass(frozen=True)
class SearchInputs:
    original: nn.Module
    example: torch.Tensor
    train_loader: DataLoader
    val_loader: DataLoader
    recovery: TrainConfig
    teacher: nn.Module | None


@dataclass(frozen=True)
class Reference:
    """The compiled unpruned model every candidate is timed against, on the search runtime."""

    runtime: str
    artifact: Artifact
    candidate: Candidate


@dataclass(frozen=True)
class SearchOutcome:
    model: nn.Module
    plan: PruningPlan
    trace: SearchTrace


@dataclass
class _State:
    plan: PruningPlan
    model: nn.Module
    trace: SearchTrace


def initial_plan(inputs: SearchInputs, criterion: str, precision: dict) -> PruningPlan:
    """Every channel kept: the plan of the unpruned model."""
    plan = PruningPlan.identity("", tuple(inputs.example.shape), criterion,
                                group_channels(inputs.original, inputs.example))
    return PruningPlan(**{**plan.__dict__, "precision": dict(precision)})


def _measure_step(state: _State, step: int, inputs: SearchInputs, ref: Reference, evaluator: Evaluator,
                  cfg: SearchConfig, goal_ratio: float) -> Paired:
    candidate = Candidate(state.model, state.plan, inputs.example, f"step{step}")
    artifact = evaluator.compile(candidate, ref.runtime)
    paired = evaluator.measure_against(artifact, candidate, ref.artifact, ref.candidate, goal_ratio, cfg.rounds)
    macs, params = count_macs(state.model, inputs.example)
    record = StepRecord(step, paired.candidate.latency.to_json(), paired.ratio, paired.spread(), len(paired.ratios),
                        macs, params, pytorch_accuracy(state.model, inputs.val_loader),
                        round(state.plan.kept_fraction(), 4), paired.stability())
    state.trace = state.trace.add(record)
    return paired


def _prune_step(state: _State, inputs: SearchInputs, criterion: Criterion, cfg: SearchConfig, fraction: float,
                channel_multiple: int, progress: ProgressSink, step: int) -> bool:
    """Score, remove ``fraction`` of the kept channels, fine-tune; False when nothing can go."""
    grouped = GroupedModel(state.model, inputs.example)
    scores = criterion(ScoreContext(state.model, grouped, take_batches(inputs.train_loader, cfg.score_batches)))
    policy = StepPolicy(fraction, criterion.scope, channel_multiple, cfg.min_keep)
    new_plan = next_plan(state.plan, scores, policy, blocks=grouped.blocks(),  # grouped convs: whole blocks
                         couplings=grouped.couplings())  # shuffles/chunks: whole units, balanced
    if new_plan.groups == state.plan.groups:
        return False  # every group is at its minimum size
    state.model = prune_between(state.model, inputs.example, state.plan, new_plan)
    state.plan = new_plan
    with regularized(cfg.regularizer, state.model, inputs.train_loader, inputs.recovery.epochs) as callbacks:
        train(state.model, inputs.train_loader, inputs.recovery, inputs.teacher, callbacks, progress=progress,
              description=f"recover step {step + 1}")
    return True


def run_search(inputs: SearchInputs, cfg: SearchConfig, ref: Reference, evaluator: Evaluator, channel_multiple: int,
               checkpoint: Checkpoint, start: tuple[PruningPlan, nn.Module, SearchTrace],
               progress: ProgressSink = null_progress) -> SearchOutcome:
    """Prune until the compiled candidate measures within the budget; raise BudgetError naming the
    best ratio reached and at what size when the loop runs out of steps or channels."""
    criterion, strategy = get_criterion(cfg.criterion), strategies.get(cfg.strategy)()
    plan, model, trace = start
    state = _State(plan, model if trace.steps else copy.deepcopy(model).eval(), trace)
    goal_ratio = trace.budget_ms * (1.0 - cfg.headroom) / trace.baseline_ms
    first = len(trace.steps)  # a resumed search continues its step numbering
    try:
        for step in range(first, first + cfg.max_steps + 1):
            paired = _measure_step(state, step, inputs, ref, evaluator, cfg, goal_ratio)
            checkpoint.save(state.plan, state.model, state.trace, "search")
            rec = state.trace.steps[-1]
            lo, hi = rec.ratio_spread
            progress.log(f"step {step}: {rec.ratio_to_baseline:.3f}x the baseline (spread {lo:.3f}-{hi:.3f}, "
                         f"{rec.rounds} rounds; goal {goal_ratio:.3f}x) on {ref.runtime} "
                         f"({paired.candidate.latency.source}), {rec.macs / 1e6:.2f} MMACs, top-1 {rec.accuracy_pytorch:.3f}")
            if paired.ratio <= goal_ratio:
                return SearchOutcome(state.model, state.plan, state.trace)
            if step == first + cfg.max_steps:
                break
            fraction = strategy.fraction(paired.ratio, goal_ratio, cfg)
            if not _prune_step(state, inputs, criterion, cfg, fraction, channel_multiple, progress, step):
                break
    except KeyboardInterrupt:
        checkpoint.save(state.plan, state.model, state.trace, "search")
        raise
    best = min(state.trace.steps, key=lambda s: s.ratio_to_baseline)
    raise BudgetError(
        f"latency budget {trace.budget_ms:.3f} ms cannot be met on {ref.runtime}: best reached "
        f"{best.ratio_to_baseline * trace.baseline_ms:.3f} ms ({best.ratio_to_baseline:.2f}x the baseline) at "
        f"{best.macs / 1e6:.2f} MMACs ({state.plan.kept_fraction():.0%} of channels kept)")

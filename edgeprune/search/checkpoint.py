"""``OUT/.edgeprune-state``: the plan so far, the matching weights and the search trace, written
atomically after every step so Ctrl-C or a crash loses at most the step in flight."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgeprune.errors import ConfigError
from edgeprune.io import torch_save_atomic, write_json_atomic
from edgeprune.plan import PruningPlan
from edgeprune.prune import apply_plan
from edgeprune.search.trace import SearchTrace


@dataclass(frozen=True)
class Resumed:
    plan: PruningPlan
    model: nn.Module
    trace: SearchTrace
    phase: str  # "search" (steps still to run) or "final" (search and final fine-tune done)


class Checkpoint:
    """``fingerprint`` covers every setting that changes the result, so progress of a different
    run is never continued by accident."""

    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.folder = folder
        self.fingerprint = fingerprint

    def save(self, plan: PruningPlan, model: nn.Module, trace: SearchTrace, phase: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        torch_save_atomic(model.state_dict(), self.folder / "model.pt")
        plan.save(self.folder / "plan.json")
        trace.save(self.folder / "search.json")
        write_json_atomic(self.folder / "state.json", {"fingerprint": self.fingerprint, "phase": phase})

    def exists(self) -> bool:
        return (self.folder / "state.json").is_file()

    def load(self, original: nn.Module, example: torch.Tensor) -> Resumed | None:
        if not self.exists():
            return None
        state = json.loads((self.folder / "state.json").read_text())
        if state.get("fingerprint") != self.fingerprint:
            raise ConfigError(f"{self.folder} holds progress of a different run (other settings); "
                              "use another --out or drop --resume")
        plan = PruningPlan.load(self.folder / "plan.json")
        trace = SearchTrace.from_json(json.loads((self.folder / "search.json").read_text()))
        model = apply_plan(original, plan, example)
        model.load_state_dict(torch.load(str(self.folder / "model.pt"), map_location="cpu", weights_only=True))
        return Resumed(plan, model.eval(), trace, str(state.get("phase", "search")))

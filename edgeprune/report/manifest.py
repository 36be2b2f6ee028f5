"""``manifest.json``: the public contract of a deploy (README documents its keys).

Every latency carries its source label; an estimated verdict says it is one (``budget.verdict``
is ``"estimated"`` and ``measured_on`` is ``null``), so nothing downstream can mistake a roofline
figure for a timing of the artifact.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeprune import __version__
from edgeprune.candidate.candidate import Candidate, Evaluated
from edgeprune.candidate.paired import Paired
from edgeprune.graph import count_macs
from edgeprune.io import torch_save_atomic, versions
from edgeprune.models.loading import Loaded
from edgeprune.profilers.base import Measurement
from edgeprune.report.markdown import render_markdown
from edgeprune.report.publish import MANIFEST_VERSION, publish
from edgeprune.search.trace import SearchTrace
from edgeprune.targets import TargetSpec


@dataclass(frozen=True)
class DeployRecord:
    """Everything a deploy produced, as the report needs it."""

    cfg: Any  # DeployConfig (typed loosely: the report must not import the pipeline)
    target: TargetSpec
    loaded: Loaded
    baseline: Candidate
    result: Candidate
    before: dict[str, Evaluated]
    after: dict[str, Evaluated]
    paired: dict[str, Paired]  # result vs baseline, interleaved, per runtime
    eager: tuple[Measurement, Measurement]
    trace: SearchTrace
    timing_s: dict[str, float]
    scratch: dict | None = None
    precision_choice: dict | None = None  # how the shipping precision was settled (fallback, auto table)
    not_rebuilt: dict[str, str] | None = None  # runtime -> why its result artifact was not built

    def shipped(self) -> str:
        """The fastest runtime whose result meets the budget; if none does, the fastest.

        The budget is one figure for every runtime (a ratio is resolved once, against the search
        runtime's baseline), so a slower runtime never wins just because its own baseline was
        slower too."""
        meeting = [rt for rt in self.paired if self.meets(rt)]
        return min(meeting or list(self.paired), key=lambda rt: self.paired[rt].candidate.latency.median)

    def meets(self, runtime: str) -> bool:
        """A relative budget is judged on the interleaved ratio (robust to machine load); an
        absolute one on the result's median."""
        paired = self.paired[runtime]
        if self.cfg.budget.ratio is not None and runtime == self.trace.runtime:
            return paired.ratio <= self.trace.budget_ms / self.trace.baseline_ms
        return paired.candidate.latency.median <= self.trace.budget_ms


def _size(model, example, accuracy: float | None, latency: dict) -> dict:
    macs, params = count_macs(model, example)
    return {"latency_ms": latency, "accuracy": accuracy, "macs": macs, "params": params}


def _runtimes(rec: DeployRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rt, after in rec.after.items():
        pair = rec.paired[rt]
        entry = {"baseline": {**rec.before[rt].to_json(), "latency_ms": pair.reference.latency.to_json()},
                 "result": {**after.to_json(), "latency_ms": pair.candidate.latency.to_json()},
                 "paired": pair.to_json()}
        if after.artifact.meta.get("note"):
            entry["note"] = after.artifact.meta["note"]
        out[rt] = entry
    for rt, reason in (rec.not_rebuilt or {}).items():
        out[rt] = {"baseline": rec.before[rt].to_json(), "result": None, "note": reason}
    out["pytorch-eager"] = {"baseline": rec.eager[0].to_json(), "result": rec.eager[1].to_json(),
                            "note": "reference only: not an artifact"}
    return out


def _budget(rec: DeployRecord, shipped: str) -> dict[str, Any]:
    source = rec.paired[shipped].candidate.latency.source
    estimated = source.startswith("estimate")
    return {"requested": rec.cfg.budget.describe(), "latency_ms": rec.trace.budget_ms, "met": rec.meets(shipped),
            "verdict": "estimated" if estimated else "measured", "source": source,
            "measured_on": None if estimated else shipped, "estimated_for": shipped if estimated else None,
            "baseline_ms": rec.trace.baseline_ms, "resolved_on": rec.trace.runtime,
            "judged_on": "ratio to the baseline, interleaved" if rec.cfg.budget.ratio is not None else "result median",
            "ratio": rec.paired[shipped].ratio, "requested_ratio": rec.cfg.budget.ratio}


def _not_done_here(rec: DeployRecord, shipped: str) -> list[str]:
    """What this run could not do on this machine, one sentence each (the report lists them)."""
    notes = []
    after = rec.after[shipped]
    if after.estimated:
        notes.append(f"latency not measured: no board was reachable, figures are {after.measurement.latency.source} "
                     "estimates (pass --device to measure)")
    engine = str(after.artifact.meta.get("engine", ""))
    if engine.startswith("not built"):
        notes.append(f"engine {engine}")
    if after.artifact.meta.get("tuning_skipped"):
        notes.append(f"tuning skipped: {after.artifact.meta['tuning_skipped']}")
    if after.artifact.meta.get("build_command"):
        notes.append(f"build and time it on the board: {after.artifact.meta['build_command']}")
    if after.validation is not None and after.validation.samples == 0:
        notes.append(f"artifact not validated: {after.validation.accuracy_source}")
    if after.energy_note_missing():
        notes.append(f"energy: {after.measurement.energy_note}")
    return notes


def build_manifest(rec: DeployRecord) -> dict[str, Any]:
    shipped = rec.shipped()
    after, pair = rec.after[shipped], rec.paired[shipped]
    example = rec.loaded.example
    return {
        "manifest_version": MANIFEST_VERSION,
        "target": rec.target.name,
        "runtime": shipped,
        "precision": {**rec.result.plan.precision, "choice": rec.precision_choice,
                      "quantizer": after.artifact.meta.get("quantizer")},
        "artifact": f"artifact/{after.artifact.path.name}",
        "model": rec.cfg.model.model,
        "input": {"shape": list(example.shape), "dtype": after.artifact.input_dtype, "layout": "NCHW"},
        "preprocessing": rec.loaded.data.preprocessing.describe(),
        "data": {"spec": rec.cfg.data.data, "val_spec": rec.cfg.data.val_data, "train_samples": len(rec.loaded.data.train),
                 "val_samples": len(rec.loaded.data.val), "classes": rec.loaded.data.num_classes},
        "criterion": rec.cfg.search.criterion,
        "baseline": _size(rec.baseline.model, example, rec.before[shipped].accuracy, pair.reference.latency.to_json()),
        "result": _size(rec.result.model, example, after.accuracy, pair.candidate.latency.to_json()),
        "speedup": 1.0 / pair.ratio,
        "budget": _budget(rec, shipped),
        "runtimes": _runtimes(rec),
        "search": {"runtime": rec.trace.runtime, "criterion": rec.cfg.search.criterion, "strategy": rec.cfg.search.strategy,
                   "steps": [s.to_json() for s in rec.trace.steps], "regularizer": rec.cfg.search.regularizer,
                   "trace": "search.json"},
        "not_done_here": _not_done_here(rec, shipped),
        "machine_stability": {**rec.trace.stability(), "final_rounds_variation": pair.stability()},
        "device": pair.candidate.device,
        "energy": after.measurement.to_json()["energy"].get("status", "measured"),
        "plan": "plan.json",
        "weights": "pruned_state_dict.pt",
        "timing_s": dict(rec.timing_s),
        "versions": versions(),
        "edgeprune": __version__,
        **({"from_scratch": rec.scratch} if rec.scratch is not None else {}),
    }


def write_deploy_outputs(out: Path, rec: DeployRecord, manifest: dict[str, Any]) -> None:
    """Artifact, the other runtimes' artifacts, plan, trace and weights, staged and then renamed
    into place; report.md and manifest.json last."""
    staging = out / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "artifact").mkdir(parents=True)
    shipped = manifest["runtime"]
    for rt, evaluated in rec.after.items():
        folder = staging / "artifact" if rt == shipped else staging / "other" / rt
        folder.mkdir(parents=True, exist_ok=True)
        for f in evaluated.artifact.files:
            shutil.copy2(f, folder / f.name)
    rec.result.plan.save(staging / "plan.json")
    rec.trace.save(staging / "search.json")
    torch_save_atomic(rec.result.model.state_dict(), staging / "pruned_state_dict.pt")
    publish(staging, out, manifest, render_markdown(manifest))

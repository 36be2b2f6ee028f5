"""Benchmark (not a test): how well a latency lookup table predicts measured pruned variants.

For each model (torchvision, weights=None, num_classes=10, reduced resolution) on this host with
ONNX Runtime: build the profile with the same function ``edgeprune profile`` uses (or reuse one
with ``--reuse``) and time it; then prune random per-group kept fractions (PruningPlan +
apply_plan), compile and measure every variant, and compare with ``Profile.predict``.

Each variant is measured in a block with the unpruned model (rounds in rotating order, the
profile's statistic), so two "measured" columns exist: ``abs`` is the variant's own figure;
``norm`` is its ratio to the unpruned model of the same block times the profile's base, i.e. the
latency at the load the profile was measured under. On a quiet device they agree; on a CPU shared
with other jobs only ``norm`` is comparable with any table, which is why both are printed.

    PYTHONPATH=. .venv/bin/python bench/bench_lut.py --threads 1 --out bench/lut_results.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgeprune.models.loading import parse_shape
from edgeprune.graph import count_macs
from edgeprune.latency.build import profile_to_file
from edgeprune.latency.costmodel import FEATURES
from edgeprune.latency.curves import round_count
from edgeprune.latency.measure import PROFILE_SETTINGS, CompiledMeter, measure_block
from edgeprune.latency.plans import ProfileConfig
from edgeprune.latency.table import Profile, default_profile_path, load_profile
from edgeprune.models.sources import load_model
from edgeprune.plan import GroupPlan, PruningPlan
from edgeprune.prune import apply_plan, group_channels
from edgeprune.targets import get_target


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="resnet18,mobilenet_v2", help="torchvision names, comma-separated")
    p.add_argument("--input-shape", default="1x3x64x64")
    p.add_argument("--target", default="host")
    p.add_argument("--runtime", default="onnxruntime")
    p.add_argument("--threads", type=int, default=1, help="runtime threads (1: steadiest on a shared CPU)")
    p.add_argument("--variants", type=int, default=50)
    p.add_argument("--min-fraction", type=float, default=0.25, help="lowest kept share per group")
    p.add_argument("--grid", type=int, default=8)
    p.add_argument("--calibration", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--block", type=int, default=5, help="variants per measured block (plus the unpruned model)")
    p.add_argument("--seed", type=int, default=12345, help="variants' seed (the profile's calibration uses 0)")
    p.add_argument("--profile-dir", type=Path, default=None, help="where profiles are written (default profiles/)")
    p.add_argument("--reuse", action="store_true",
                   help="load an existing profile (e.g. written by `edgeprune profile`) instead of building one; "
                        "its build time is then the one recorded in its provenance")
    p.add_argument("--keep-measurements", action="store_true",
                   help="keep the profile's side file: a rerun rebuilds the table without measuring")
    p.add_argument("--out", type=Path, default=Path("bench/lut_results.json"))
    return p.parse_args()


def random_plan(name: str, shape: tuple[int, ...], channels: dict[str, int], multiple: int, low: float,
                rng: np.random.Generator) -> PruningPlan:
    """Independent uniform kept fraction per group, rounded to the target's multiple; random channels."""
    groups = {}
    for g, c in channels.items():
        k = round_count(c, float(rng.uniform(low, 1.0)), multiple)
        groups[g] = GroupPlan(c, tuple(sorted(int(i) for i in rng.choice(c, size=k, replace=False))))
    return PruningPlan(name, shape, "random", groups)


def error_summary(predicted: list[float], measured: list[float]) -> dict[str, float]:
    err = (np.asarray(predicted) - np.asarray(measured)) / np.asarray(measured)
    return {"median_abs_pct": float(np.median(np.abs(err)) * 100), "mean_pct": float(np.mean(err) * 100),
            "max_abs_pct": float(np.max(np.abs(err)) * 100), "within_10pct": float(np.mean(np.abs(err) <= 0.10))}


def variant_predictors(profile: Profile, plan: PruningPlan, macs: float, base_macs: float) -> dict[str, float]:
    """The table's prediction; the plain sum of its per-group deltas; MAC-proportional."""
    return {"profile": profile.predict(plan), "additive": profile.additive(plan),
            "macs": profile.base_ms * macs / base_macs}


def bench_model(name: str, args: argparse.Namespace) -> dict:
    shape = parse_shape(args.input_shape)
    spec = f"torchvision:{name}?num_classes=10"
    target = get_target(args.target)
    model = load_model(spec)
    example = torch.rand(shape)
    settings = dataclasses.replace(PROFILE_SETTINGS, threads=args.threads)
    config = ProfileConfig(grid=args.grid, calibration=args.calibration, rounds=args.rounds)
    out = (args.profile_dir / target.name / default_profile_path(target.name, spec, shape).name
           if args.profile_dir else default_profile_path(target.name, spec, shape))
    start = time.perf_counter()
    reused = args.reuse and out.is_file()
    if reused:
        profile = load_profile(out)
    else:
        profile = profile_to_file(model, example, target, args.runtime, model_name=spec, out=out, config=config,
                                  settings=settings, keep_measurements=args.keep_measurements)
    profile_s = float(profile.provenance.get("build_wall_s", math.nan)) if reused else time.perf_counter() - start
    print(f"{name}: profile {out} ({profile_s:.0f} s, base {profile.base_ms:.3f} ms, period {profile.period}, "
          f"coefficients {dict(zip(FEATURES, (round(c, 3) for c in profile.fit.model.coefficients)))})", flush=True)

    channels = group_channels(model, example)
    rng = np.random.default_rng(args.seed)
    plans = [random_plan(spec, shape, channels, target.channel_multiple, args.min_fraction, rng)
             for _ in range(args.variants)]
    base_macs, _ = count_macs(model, example)
    rows = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-lut-") as tmp:
        meter = CompiledMeter(target, args.runtime, example, Path(tmp), settings)
        for i in range(0, len(plans), args.block):
            chunk = plans[i:i + args.block]
            pruned = [apply_plan(model, p, example) for p in chunk]
            values = measure_block(meter, [model, *pruned], args.rounds, profile.statistic)
            for plan, module, value in zip(chunk, pruned, values[1:]):
                macs, _ = count_macs(module, example)
                rows.append({"counts": [len(g.kept) for g in plan.groups.values()],
                             "kept_fraction": plan.kept_fraction(), "macs": macs, "measured_abs_ms": value,
                             "measured_norm_ms": value / values[0] * profile.base_ms, "block_base_ms": values[0],
                             "predicted_ms": variant_predictors(profile, plan, macs, base_macs)})
            print(f"  {len(rows)}/{len(plans)} variants measured", flush=True)
    predictors = list(rows[0]["predicted_ms"])
    summary = {f"{pred} vs {kind}": error_summary([r["predicted_ms"][pred] for r in rows],
                                                  [r[f"measured_{kind}_ms"] for r in rows])
               for pred in predictors for kind in ("norm", "abs")}
    return {"model": spec, "input_shape": list(shape), "profile": str(out), "profile_wall_s": profile_s,
            "reused_profile": reused, "validation_wall_s": time.perf_counter() - start,
            "base_ms": profile.base_ms, "period": profile.period, "noise_ms": profile.noise_ms,
            "fit": {"coefficients": dict(zip(FEATURES, profile.fit.model.coefficients)),
                    "singles_median_abs_rel_error": profile.fit.singles_median_abs_rel_error,
                    "whole_median_abs_rel_error": profile.fit.whole_median_abs_rel_error},
            "groups": list(channels), "variants": len(rows), "summary": summary, "rows": rows}


def markdown(results: list[dict]) -> str:
    lines = ["| model | profile build | base (ms) | predictor | vs measured | median abs err | within ±10% | max abs err |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for key, s in r["summary"].items():
            pred, kind = key.split(" vs ")
            lines.append(f"| {r['model'].split(':')[1].split('?')[0]} | {r['profile_wall_s']:.0f} s | {r['base_ms']:.3f} "
                         f"| {pred} | {kind} | {s['median_abs_pct']:.2f}% | {s['within_10pct']:.0%} "
                         f"| {s['max_abs_pct']:.1f}% |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    results = [bench_model(name.strip(), args) for name in args.models.split(",") if name.strip()]
    table = markdown(results)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results,
                                    "table": table}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

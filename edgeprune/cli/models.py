"""Commands that take a model besides deploy: ``prune`` (replay a plan), ``profile`` (latency
lookup table) and ``sparsify`` (weight-level sparsity, measured)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Optional

import typer

from edgeprune.cli.guard import fail, guarded
from edgeprune.cli.options import Lr, ModelDataOptions, Seed, Target, Threads, model_data_options


@guarded
@model_data_options
def prune(
    inputs: ModelDataOptions,
    plan: Path = typer.Option(..., help="plan.json written by deploy."),
    pruned_weights: Optional[Path] = typer.Option(None, help="State dict of the pruned model (deploy's pruned_state_dict.pt)."),
    out: Path = typer.Option(Path("pruned.pt2"), help="Where to write the pruned model (torch.export archive)."),
) -> None:
    """Replay a saved plan on the original model (--weights: the *unpruned* weights): same
    architecture and kept weights."""
    import torch

    from edgeprune.io import default_cache_dir
    from edgeprune.models.loading import load_model_only
    from edgeprune.models.sources import apply_weights, load_state_dict
    from edgeprune.plan import PruningPlan
    from edgeprune.prune import apply_plan

    loaded = PruningPlan.load(plan)
    original, _, _ = load_model_only(inputs.model, None, default_cache_dir())
    example = torch.rand(inputs.model.input_shape or loaded.input_shape)
    pruned = apply_plan(original, loaded, example)
    if pruned_weights is not None:
        apply_weights(pruned, load_state_dict(pruned_weights, inputs.model.trust_checkpoint), pruned_weights)
    tmp = out.with_name(f".{out.name}.tmp")
    torch.export.save(torch.export.export(pruned.eval(), (example,)), str(tmp))
    tmp.replace(out)
    print(f"wrote {out}")


@guarded
@model_data_options
def profile(
    inputs: ModelDataOptions,
    target: Target = "host",
    runtime: Optional[str] = typer.Option(None, help="Runtime to profile (default: the target's first local one)."),
    grid: int = typer.Option(8, help="Kept-fraction grid points per dependency group."),
    calibration: int = typer.Option(16, help="Random whole models measured for the cost-model fit."),
    rounds: int = typer.Option(3, help="Interleaved measuring rounds per block."),
    threads: Threads = None,
    statistic: str = typer.Option("min", help="min (steadiest on a shared CPU) | median"),
    out: Optional[Path] = typer.Option(None, help="Profile JSON (default: profiles/<target>/<model>_<shape>.json)."),
    resume: bool = typer.Option(True, "--resume/--restart", help="Reuse the partial measurements of an interrupted run."),
    seed: Seed = 0,
) -> None:
    """Measure a latency lookup table: each group's latency against kept channels, on the target.
    The table holds for the input shape it was measured at (default: one sample of the data)."""
    from edgeprune.io import default_cache_dir
    from edgeprune.latency.build import ProfileConfig, local_runtime, profile_to_file
    from edgeprune.latency.measure import PROFILE_SETTINGS
    from edgeprune.models.loading import load_inputs
    from edgeprune.progress import RichProgress
    from edgeprune.targets import get_target

    if statistic not in ("min", "median"):
        fail(f"--statistic {statistic!r} is not min or median", 2)
    spec = get_target(target)
    chosen = local_runtime(spec, runtime)
    config = ProfileConfig(grid=grid, calibration=calibration, rounds=rounds, statistic=statistic, seed=seed)
    settings = dataclasses.replace(PROFILE_SETTINGS, threads=threads)
    start = time.perf_counter()
    with RichProgress() as progress:
        loaded = load_inputs(inputs.model, inputs.data, default_cache_dir(), progress)
        table = profile_to_file(loaded.model, loaded.example, spec, chosen, model_name=inputs.model.model, out=out,
                                config=config, settings=settings, resume=resume, progress=progress)
    fit = table.fit
    print(f"{table.source}: base {table.base_ms:.3f} ms, {len(table.groups)} groups, staircase period {table.period}, "
          f"fit error {fit.singles_median_abs_rel_error:.1%} on single groups, {fit.whole_median_abs_rel_error:.1%} on "
          f"{len(fit.whole_counts)} whole models; wrote {table.path} in {time.perf_counter() - start:.0f} s")


@guarded
@model_data_options
def sparsify(
    inputs: ModelDataOptions,
    method: str = typer.Option(..., help="magnitude | snip | scl | rigl | relief"),
    density: float = typer.Option(..., help="Fraction of conv/linear weights kept, e.g. 0.2 (= 80% sparse)."),
    structured: Optional[str] = typer.Option(None, help="Also build and measure a structured mask: 2:4 | block:4x4."),
    epochs: float = typer.Option(1.0, help="Training with the mask held (training-time methods train this long)."),
    lr: Lr = 0.01,
    threads: Threads = None,
    repeats: int = typer.Option(50, help="Timed repeats per model (median and p90 reported)."),
    out: Path = typer.Option(..., help="Output directory: model.onnx, manifest.json, report.md."),
    seed: Seed = 0,
) -> None:
    """Zero individual weights with a sparsity method, then MEASURE dense vs sparse with ONNX Runtime."""
    from edgeprune.progress import RichProgress
    from edgeprune.sparsity.run import SparsifyConfig
    from edgeprune.sparsity.run import sparsify as run_sparsify

    cfg = SparsifyConfig(model=inputs.model, data=inputs.data, out=out, method=method, density=density,
                         structured=structured, epochs=epochs, lr=lr, threads=threads, repeats=repeats, seed=seed)
    with RichProgress() as progress:
        manifest = run_sparsify(cfg, progress)
    lat = manifest["latency"]
    print(f"{method}: {manifest['sparsity']:.1%} sparse, top-1 {manifest['accuracy']['dense_pytorch']:.4f} -> "
          f"{manifest['accuracy']['sparse_pytorch']:.4f}; onnxruntime dense {lat['dense_ms']['median']:.3f} ms, "
          f"sparse {lat['sparse_ms']['median']:.3f} ms (ratio {lat['ratio']:.2f}); wrote {out}/manifest.json")

"""Plots for the oracle study: criterion score vs oracle per layer, accuracy vs pruning ratio.

Figures are built with ``matplotlib.figure.Figure`` and saved through the Agg canvas directly:
no pyplot, so no global figure registry or backend switch leaks into the caller's process (and
no display is needed). matplotlib is imported inside the functions: the CLI's other commands
never pay for it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch

from edgeprune.studies.oracle import rank_correlations
from edgeprune.studies.tables import rows

COLUMNS = 4


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _linthresh(values: np.ndarray) -> float:
    """Linear range of a symlog axis: the 10th percentile of the non-zero magnitudes, so
    scores spanning decades stay readable and zeros still plot."""
    nonzero = np.abs(values[values != 0])
    return float(np.percentile(nonzero, 10)) if nonzero.size else 1.0


def scatter_grid(path: Path, title: str, scores: dict[str, torch.Tensor], oracle: dict[str, torch.Tensor]) -> None:
    """One panel per layer (group): each channel's criterion score against its oracle |ΔL|.

    Per layer because layer-scope criteria are only meant to rank within a layer; each panel's
    title carries that layer's Spearman ρ.
    """
    groups = list(oracle)
    cols = min(COLUMNS, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig = _figure(3.2 * cols, 2.8 * rows + 0.4)
    fig.suptitle(f"{title}: score vs oracle |ΔL| (one point per channel)")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, group in zip(axes, groups):
        x = oracle[group].abs().double().numpy()
        y = scores[group].double().numpy()
        ax.scatter(x, y, s=8, alpha=0.6)
        ax.set_xscale("symlog", linthresh=_linthresh(x))
        ax.set_yscale("symlog", linthresh=_linthresh(y))
        ax.set_title(f"{group} ({len(x)} ch) ρ={rank_correlations(torch.from_numpy(x), torch.from_numpy(y))[0]:.2f}", fontsize=8)
        ax.set_xlabel("oracle |ΔL|", fontsize=8)
        ax.set_ylabel("score", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    fig.savefig(path)


def _curve_panel(ax, curves: dict[str, dict[str, float]], unpruned: float, title: str) -> None:
    from matplotlib import colormaps

    colours = colormaps["tab20"]
    markers = "os^vD<>ph*Xd"
    criteria = [name for name in curves if not name.startswith("oracle")]
    for name, points in curves.items():
        ratios = [float(r) for r in points]
        if name.startswith("oracle"):  # the references: black, one line style each
            references = [n for n in curves if n.startswith("oracle")]
            style: dict = {"color": "black", "linewidth": 2.2, "linestyle": ("-", "--", ":")[references.index(name) % 3]}
        else:
            i = criteria.index(name)
            # tab20 pairs a dark and a light shade: the ten dark ones first
            style = {"color": colours((2 * i) % 20 + (2 * i) // 20 % 2), "marker": markers[i % len(markers)],
                     "markersize": 4, "linewidth": 1.2}
        ax.plot(ratios, list(points.values()), label=name, **style)
        ax.set_xticks(ratios)
    ax.axhline(unpruned, color="grey", linestyle=":", linewidth=1, label="unpruned")
    ax.set_title(title)
    ax.set_xlabel("pruning ratio (share of channels removed)")
    ax.set_ylabel("held-out top-1")
    ax.grid(alpha=0.3)


def accuracy_curves(path: Path, curves: dict[str, dict[str, float]], tuned: dict[str, dict[str, float]] | None,
                    unpruned: float) -> None:
    """Accuracy vs ratio per criterion: one panel without fine-tuning, one with (if measured)."""
    panels = [("pruned, no fine-tuning", curves)] + ([("pruned, then fine-tuned", tuned)] if tuned else [])
    fig = _figure(6.0 * len(panels) + 2.2, 4.6)
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True).ravel()
    for ax, (title, data) in zip(axes, panels):
        _curve_panel(ax, data, unpruned, title)
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.savefig(path)


def _file_name(spec: str) -> str:
    """``taylor-so?hessian=fisher`` -> ``taylor-so-hessian-fisher``: a safe, readable file name."""
    return re.sub(r"[^A-Za-z0-9]+", "-", spec).strip("-") or "criterion"


def write_plots(report: dict, scores: dict[str, dict[str, torch.Tensor]], oracle: dict[str, torch.Tensor],
                out: Path) -> dict[str, str]:
    """One scatter grid per criterion and the accuracy-vs-ratio curves; ``{title: file name}``."""
    plots = {"accuracy vs pruning ratio": "accuracy-vs-ratio.png"}
    curves = {name: e["accuracy_at"] for name, e in rows(report)}
    tuned = {name: e["accuracy_at_finetuned"] for name, e in rows(report) if e.get("accuracy_at_finetuned")}
    accuracy_curves(out / plots["accuracy vs pruning ratio"], curves, tuned or None,
                    report["oracle"]["accuracy"])
    for spec, per_group in scores.items():
        name = f"scatter-{_file_name(spec)}.png"
        scatter_grid(out / name, spec, per_group, oracle)
        plots[f"{spec}: score vs oracle |ΔL| per layer"] = name
    return plots

"""How a study reads: markdown tables for ``report.md`` and one rich table for the terminal.

Pure functions of the report dictionary written to ``criteria.json``, so a saved report can be
rendered again (and the tests check the tables without running a study).
"""

from __future__ import annotations

import math


def fmt(value: float | None, digits: int = 3) -> str:
    """A figure for a table cell; "—" where it was not measured or is undefined (NaN)."""
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def rows(report: dict) -> list[tuple[str, dict]]:
    """Table rows: the oracle's own rankings first (references, not criteria), then criteria."""
    oracle = report["oracle"]
    return [("oracle, signed ΔL ranking", oracle), ("oracle, |ΔL| ranking", oracle["abs_ranking"]),
            *report["criteria"].items()]


def correlation_markdown(report: dict) -> str:
    """Markdown table: each criterion's rank correlation with the oracle |ΔL|."""
    lines = ["| criterion | scope | Spearman ρ | Kendall τ | mean ρ within layers | scoring s |",
             "|---|---|---:|---:|---:|---:|"]
    for name, e in report["criteria"].items():
        lines.append(f"| `{name}` | {e['scope']} | {fmt(e['spearman'])} | {fmt(e['kendall'])} | "
                     f"{fmt(e['spearman_within_groups'])} | {e['score_seconds']:.1f} |")
    return "\n".join(lines)


def accuracy_markdown(report: dict, key: str) -> str:
    """Markdown table: held-out top-1 accuracy at each ratio (``key``: with or without fine-tune)."""
    ratios = list(report["oracle"]["accuracy_at"])
    lines = ["| criterion | " + " | ".join(f"{r}" for r in ratios) + " |",
             "|---|" + "---:|" * len(ratios)]
    for name, e in rows(report):
        values = e.get(key) or {}
        label = name.replace("|", "\\|") if name.startswith("oracle") else f"`{name}`"  # a bare | splits the cell
        lines.append(f"| {label} | " + " | ".join(fmt(values.get(r)) for r in ratios) + " |")
    return "\n".join(lines)


def rich_table(report: dict):
    """One rich table: correlations, and per ratio "accuracy pruned / after fine-tune"."""
    from rich.table import Table

    ratios = list(report["oracle"]["accuracy_at"])
    table = Table(title=f"criteria vs oracle ({report['oracle']['channels']} channels; "
                        f"unpruned top-1 {report['oracle']['accuracy']:.3f}; cells: pruned / fine-tuned)")
    for column in ("criterion", "scope", "Spearman", "Kendall", "ρ in-layer", *(f"@{r}" for r in ratios)):
        table.add_column(column, justify="left" if column in ("criterion", "scope") else "right")
    for name, e in rows(report):
        tuned = e.get("accuracy_at_finetuned") or {}
        cells = [f"{fmt(e['accuracy_at'][r])} / {fmt(tuned.get(r))}" for r in ratios]
        table.add_row(name, e.get("scope", "global"), fmt(e.get("spearman")), fmt(e.get("kendall")),
                      fmt(e.get("spearman_within_groups")), *cells)
    return table


def settings_markdown(report: dict) -> list[str]:
    """What was measured on what: the lines a reader needs before trusting the tables."""
    m, d, v, o = report["model"], report["data"], report["versions"], report["oracle"]
    scored = "training images" if d["score_on"] == "train" else "held-out images (the oracle's own: --score-on heldout)"
    seen = " (the oracle's own)" if d["eval_overlaps_oracle"] else " the oracle did not see"
    tune = (f"Fine-tune: {d['finetune']['epochs']:g} epochs of SGD (lr {d['finetune']['lr']:g}, cosine) after each "
            f"pruning, then BN statistics re-estimated on {d['finetune']['bn_refresh_images']} training images."
            if d["finetune"]["epochs"] else "Fine-tune: none (--finetune-epochs 0).")
    return [f"Command: `{report['command']}`", "",
            f"Model: `{m['spec']}` — {m['training']}; {m['parameters']:,} parameters; {o['channels']} prunable "
            f"channels; unpruned top-1 {o['accuracy']:.4f}.",
            f"Data: `{d['spec']}` — criteria score {d['score_images']} {scored}; the oracle uses {d['oracle_images']} "
            f"held-out images ({o['seconds']:.0f} s); accuracy is measured on {d['eval_images']} held-out images{seen}.",
            tune,
            f"Machine: {v['platform']}, {v['cpus']} CPUs, torch {v['torch']} ({v['torch_threads']} threads); {v['date']}."]


def render_markdown(report: dict, plots: dict[str, str]) -> str:
    """``report.md``: the settings, the tables and the plots (relative links)."""
    lines = ["# Criteria vs oracle", "", *settings_markdown(report),
             "", "## Rank correlation with the oracle |ΔL|", "",
             "Pooled over every channel of every layer; \"within layers\" is the mean per-layer Spearman ρ "
             "(the fair figure for layer-scope criteria, whose scores are not meant to compare across layers).",
             "", correlation_markdown(report), "",
             "## Top-1 accuracy after pruning (no fine-tuning)", "", accuracy_markdown(report, "accuracy_at"), ""]
    if report["data"]["finetune"]["epochs"]:
        lines += ["## Top-1 accuracy after pruning and fine-tuning", "",
                  accuracy_markdown(report, "accuracy_at_finetuned"), ""]
    lines += ["## Plots", ""] + [f"![{title}]({path})" for title, path in plots.items()]
    return "\n".join(lines) + "\n"

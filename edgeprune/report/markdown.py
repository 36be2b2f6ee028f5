"""``report.md``: the manifest for people — the verdict first, then the side-by-side table, the
search steps and where every figure came from."""

from __future__ import annotations


def _lat(entry: dict | None) -> str:
    if not entry:
        return "—"
    lat = entry["latency_ms"]
    if lat["source"].startswith("estimate"):
        return f"{lat['median']:.3f} ms `{lat['source']}` (ESTIMATE)"
    return f"{lat['median']:.3f} ms (p90 {lat['p90']:.3f}) `{lat['source']}`"


def _provenance(m: dict) -> str:
    """One honest sentence on where the latencies came from (measured vs estimated)."""
    if m["result"]["latency_ms"]["source"].startswith("estimate:"):
        return ("**No board was reachable: latencies labelled `estimate:*` were computed from the "
                "target's peak compute and bandwidth, not measured.** Pass `--device` to measure. "
                "MAC counts are sizes, not latencies.")
    return ("Every latency above was measured on the compiled artifact on the device named above "
            "(warm-up, repeats, median and p90); the `source` label names the profiler. "
            "MAC counts are sizes, not latencies.")


def render_markdown(m: dict) -> str:
    """A short human report: the budget verdict, then the side-by-side measured table."""
    b, r = m["baseline"], m["result"]
    lines = [
        f"# edgeprune report — {m['model']} on target `{m['target']}`",
        "",
        f"- Shipped runtime: **{m['runtime']}** (`{m['artifact']}`)",
        f"- Budget: {m['budget']['requested']} = {m['budget']['latency_ms']:.3f} ms → "
        f"**{'met' if m['budget']['met'] else 'NOT met'}**, judged on the {m['budget']['judged_on']} "
        f"({r['latency_ms']['median']:.3f} ms "
        f"{'ESTIMATED, not measured' if m['budget']['verdict'] == 'estimated' else 'measured'}; "
        f"{m['speedup']:.2f}× faster than the unpruned model, interleaved in one run)",
        f"- Accuracy (top-1 of the compiled artifact on {m['data']['val_samples']} validation samples): "
        f"{b['accuracy']:.4f} → {r['accuracy']:.4f}",
        f"- MACs {b['macs'] / 1e6:.2f} M → {r['macs'] / 1e6:.2f} M; params {b['params']:,} → {r['params']:,}",
        f"- Device: {m['device']}; energy: {m['energy']}",
        "",
        "## Latency, same device, same run (baseline and result interleaved)",
        "",
        "| runtime | before pruning | after pruning | speed-up (median of round ratios, spread) | notes |",
        "|---|---|---|---|---|",
    ]
    for name, entry in m["runtimes"].items():
        before, after, pair = entry.get("baseline"), entry.get("result"), entry.get("paired")
        speed = (f"{1 / pair['ratio_to_reference']:.2f}× ({1 / pair['ratio_spread'][1]:.2f}–"
                 f"{1 / pair['ratio_spread'][0]:.2f}, {pair['rounds']} rounds)" if pair else "—")
        lines.append(f"| {name} | {_lat(before)} | {_lat(after)} | {speed} | {entry.get('note', '')} |")
    lines += ["", "## Search steps (each candidate compiled and timed against the baseline, interleaved)", "",
              "| step | latency (median) | × baseline (spread) | rounds | MMACs | top-1 (PyTorch) | channels kept |",
              "|---|---|---|---|---|---|---|"]
    for s in m["search"]["steps"]:
        lo, hi = s["ratio_spread"]
        lines.append(f"| {s['step']} | {s['latency_ms']['median']:.3f} ms | {s['ratio_to_baseline']:.3f} "
                     f"({lo:.3f}–{hi:.3f}) | {s['rounds']} | {s['macs'] / 1e6:.2f} | "
                     f"{s['accuracy_pytorch']:.4f} | {s['kept_fraction']:.0%} |")
    lines += ["", _stability(m["machine_stability"])]
    if m.get("not_done_here"):
        lines += ["", "## What could not be done here", ""] + [f"- {note}" for note in m["not_done_here"]]
    lines += _scratch_lines(m.get("from_scratch"))
    lines += ["", "## Where the figures come from", "",
              _provenance(m), "",
              f"Stage wall times (s): {', '.join(f'{k} {v:.1f}' for k, v in m['timing_s'].items())}", "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()), ""]
    return "\n".join(lines)


def _scratch_lines(scratch: dict | None) -> list[str]:
    """Liu et al.'s baselines next to the fine-tuned model, when ``--from-scratch`` ran them."""
    if not scratch:
        return []
    lines = ["", "## Fine-tuned vs trained from scratch (Rethinking the Value of Network Pruning)", "",
             f"Same pruned architecture, {scratch['accuracy']}; Scratch-B trains "
             f"{scratch['macs_ratio']:.2f}× the epochs of Scratch-E (original MACs / pruned MACs).", "",
             "| model | epochs | top-1 (PyTorch) |", "|---|---|---|",
             f"| fine-tuned (inherited weights) | {scratch['E']['epochs_trained']:.2f} | "
             f"{scratch['fine_tuned_accuracy']:.4f} |"]
    for mode, label in (("E", "Scratch-E (same epochs)"), ("B", "Scratch-B (same compute)")):
        run = scratch[mode]
        lines.append(f"| {label} | {run['epochs_trained']:.2f} | {run['accuracy']:.4f} |")
    lines += ["", f"Scratch-E epochs = {scratch['epochs_basis']}."]
    return lines


def _stability(s: dict) -> str:
    """How steady the machine was: the baseline's movement between interleaved rounds."""
    if not s.get("rounds"):
        return f"Machine stability: {s.get('note', 'not measured')}."
    return (f"Machine stability: the baseline moved by up to {s['baseline_variation_max']:.0%} between "
            f"interleaved rounds during the search (median {s['baseline_variation_median']:.0%}, "
            f"{s['rounds']} rounds): **{s['verdict']}**; final comparison rounds moved "
            f"{s['final_rounds_variation']:.0%}. Ratios are robust to this; absolute figures are not.")

"""Pure functions over one group's latency curve: rounding, smoothing, interpolation, noise, staircases.

Nothing here measures or touches a model, so every rule the lookup table relies on (which counts
are sampled, how noise is smoothed away and estimated, where a staircase is, which counts are
cheap) is testable on synthetic numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def round_count(channels: int, fraction: float, multiple: int) -> int:
    """Kept count nearest ``fraction * channels`` that is a multiple of ``multiple`` (at least one
    multiple, at most ``channels``). A group smaller than two multiples is rounded to 1 instead:
    rounding it to the multiple would leave nothing to choose from."""
    m = multiple if channels >= 2 * multiple else 1
    count = int(round(fraction * channels / m)) * m
    return max(m, min(channels, count))


def isotonic_increasing(values: Sequence[float], weights: Sequence[float] | None = None) -> list[float]:
    """Least-squares non-decreasing fit (pool-adjacent-violators).

    Latency cannot fall when channels are added back (on average); measured points that say so
    are noise, and pooling them is the smallest change that removes it.
    """
    w = [1.0] * len(values) if weights is None else [float(x) for x in weights]
    blocks: list[list[float]] = []  # [mean, weight, size]
    for v, wt in zip(values, w):
        blocks.append([float(v), wt, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, n2 = blocks.pop()
            m1, w1, n1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    out: list[float] = []
    for mean, _, size in blocks:
        out.extend([mean] * int(size))
    return out


def interpolate(counts: Sequence[int], values: Sequence[float], count: float) -> float:
    """Piecewise-linear value at ``count``; below the first count, the first segment extended.

    ``counts`` ascend and end at the group's full count, so there is nothing above to extrapolate.
    Linear between grid points keeps a monotone curve monotone, which the planner relies on.
    """
    xs = np.asarray(counts, dtype=np.float64)
    ys = np.asarray(values, dtype=np.float64)
    if count >= xs[0] or len(xs) == 1:
        return float(np.interp(count, xs, ys))
    slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
    return float(ys[0] + slope * (count - xs[0]))


def residual_noise(curves: Sequence[tuple[Sequence[int], Sequence[float]]]) -> float:
    """Noise (standard deviation) of one measured point, from curves of (counts, latencies).

    Each interior point is compared with the straight line through its two neighbours; with
    independent noise that residual has variance ``(1 + w^2 + (1-w)^2) * sigma^2`` (``w`` the
    neighbour weight). Pooled over every curve through the median, so the few real steps and
    penalties do not inflate it. Unlike the spread of the reference across blocks, it leaves out
    the drift of the machine's load over the build, which the per-block ratios cancel.
    """
    scaled = []
    for counts, latency in curves:
        x = np.asarray(counts, dtype=np.float64)
        y = np.asarray(latency, dtype=np.float64)
        for i in range(1, len(x) - 1):
            w = (x[i + 1] - x[i]) / (x[i + 1] - x[i - 1])
            residual = y[i] - (w * y[i - 1] + (1 - w) * y[i + 1])
            scaled.append(abs(residual) / math.sqrt(1 + w * w + (1 - w) ** 2))
    return 1.4826 * float(np.median(scaled)) if scaled else 0.0


@dataclass(frozen=True)
class Step:
    """A latency jump between two neighbouring measured counts, larger than noise explains.

    ``lo`` is the largest count still on the cheaper plateau; ``jump_ms`` is the rise beyond the
    curve's typical slope.
    """

    lo: int
    hi: int
    jump_ms: float


def find_steps(counts: Sequence[int], latency_ms: Sequence[float], noise_ms: float,
               factor: float = 3.0) -> list[Step]:
    """Staircases in a latency-versus-kept-count curve.

    Each segment's rise is compared with what the curve's typical slope (the median over
    segments, robust to the steps themselves) predicts for its width; a rise exceeding that by
    more than ``factor`` times the noise of a difference of two points (sqrt(2) * ``noise_ms``)
    is a step. Returns steps in ascending count order.
    """
    xs = np.asarray(counts, dtype=np.float64)
    ys = np.asarray(latency_ms, dtype=np.float64)
    if len(xs) < 3:
        return []
    order = np.argsort(xs)
    xs, ys = xs[order], ys[order]
    widths = np.diff(xs)
    rises = np.diff(ys)
    slope = float(np.median(rises / widths))
    threshold = factor * math.sqrt(2.0) * max(noise_ms, 1e-12)
    excess = rises - max(slope, 0.0) * widths
    return [Step(int(xs[i]), int(xs[i + 1]), float(excess[i])) for i in range(len(excess)) if excess[i] > threshold]


def effective_count(count: int, channels: int, period: int) -> int:
    """The count the device computes: above one period, rounded up to the period (vector or
    blocked-layout width), never past the group's full count, whose own padding is in the base.

    At or below one period a device may take another code path altogether (ONNX Runtime here runs
    convs with fewer input channels than its NCHWc block in plain NCHW), so those counts are
    measured as they are rather than assumed to cost a whole period.
    """
    if count <= period:
        return count
    return min(channels, -(-count // period) * period)


def candidate_periods(multiple: int, max_period: int) -> tuple[int, ...]:
    """``multiple`` times powers of two up to ``max_period``: the widths SIMD layouts use."""
    out, p = [], multiple
    while p <= max_period:
        out.append(p)
        p *= 2
    return tuple(out)


def infer_period(curves: Sequence[tuple[Sequence[int], Sequence[float], int]], candidates: Sequence[int],
                 improvement: float = 0.8) -> int:
    """The staircase period shared by ``curves`` (each: counts, latencies, full count).

    For each candidate period the latencies are fitted, per curve, as ``a + b * effective_count``;
    the candidate with the least residual wins if it beats the plain linear fit (the smallest
    candidate) by the factor ``improvement`` and its step (``b * period``) exceeds the residual
    noise; otherwise there is no staircase and the smallest candidate is returned.
    """
    if not candidates:
        raise ValueError("no candidate periods")
    rss: dict[int, float] = {}
    heights: dict[int, float] = {}
    for period in candidates:
        total, height = 0.0, []
        for counts, latency, channels in curves:
            q = np.array([effective_count(int(c), channels, period) for c in counts], dtype=np.float64)
            y = np.asarray(latency, dtype=np.float64)
            if len(np.unique(q)) < 2:
                total += float(np.sum((y - y.mean()) ** 2))
                height.append(0.0)
                continue
            b, a = np.polyfit(q, y, 1)
            total += float(np.sum((y - (a + b * q)) ** 2))
            height.append(float(b) * period)
        rss[period] = total
        heights[period] = float(np.median(height)) if height else 0.0
    n = sum(len(c[0]) for c in curves)
    smallest = candidates[0]
    best = min(candidates, key=lambda p: (rss[p], p))
    residual_sd = math.sqrt(rss[best] / max(n, 1))
    if best != smallest and rss[best] <= improvement * rss[smallest] and heights[best] > 2 * residual_sd:
        return best
    return smallest


def cheap_counts(steps: Sequence[Step], channels: int, period: int = 1) -> tuple[int, ...]:
    """Counts at the top of each plateau: keeping one channel more costs a latency step.

    With a staircase period every multiple of it tops a plateau; larger measured steps (a layout
    or kernel switch) add their lower count.
    """
    tops = set(range(period, channels + 1, period)) if period > 1 else set()
    return tuple(sorted(tops | {s.lo for s in steps} | {channels}))

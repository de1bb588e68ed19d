"""Market-intelligence insights (docs/analytics.md, "Trend" to "Latency audit"): pure formulas.

* :func:`histogram_quantile` reproduces Prometheus 2.42's classic ``histogram_quantile``
  bucket interpolation, special cases included, so a p99 shown by the API equals what
  PromQL computes from the same ``_bucket`` series.
* :func:`execution_risk` = ``clip(w_fill*x_fill + w_lat*x_lat + w_vol*x_vol + w_age*x_age, 0, 1)``.
* :func:`buying_pressure` = ``(1 + imbalance) / 2`` = bid share of the band's depth.
* :func:`trend_direction` is the ▲/–/▼ dead band.

Levels (low/medium/high) and one-line explanations come with each result for the API.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

RISK_LEVELS = (0.33, 0.66)  # score < 0.33 low, < 0.66 medium, else high
PRESSURE_LEVELS = (0.4, 0.6)  # bid share < 0.4 low (sellers), > 0.6 high (buyers)
RISK_FACTORS = ("fill", "latency", "volatility", "age")
ARROWS = {1: "▲", 0: "–", -1: "▼"}


# -- Prometheus histogram_quantile ---------------------------------------------------------
def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """phi-quantile of cumulative ``(upper_bound, count)`` buckets, as Prometheus interpolates.

    Rules (Prometheus 2.42 ``bucketQuantile``): q NaN -> NaN, q < 0 -> -Inf, q > 1 -> +Inf;
    the highest bucket must be +Inf, else NaN; equal bounds are merged and counts forced
    monotonic; fewer than 2 buckets or no observation -> NaN; a rank in the +Inf bucket
    returns the second-highest bound; the lowest bucket interpolates from 0 unless its
    bound is <= 0, then that bound is returned.
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(buckets, key=lambda b: b[0])
    if not ordered or ordered[-1][0] != math.inf:
        return math.nan
    merged: list[list[float]] = []
    for bound, count in ordered:
        if merged and merged[-1][0] == bound:
            merged[-1][1] += count
        else:
            merged.append([bound, count])
    running = merged[0][1]
    for b in merged[1:]:  # the monotonic envelope
        running = max(running, b[1])
        b[1] = running
    if len(merged) < 2:
        return math.nan
    total = merged[-1][1]
    if total == 0:
        return math.nan
    rank = q * total
    # first bucket (the +Inf one excluded) whose cumulative count reaches the rank
    idx = next((i for i in range(len(merged) - 1) if merged[i][1] >= rank), len(merged) - 1)
    if idx == len(merged) - 1:
        return merged[-2][0]
    if idx == 0 and merged[0][0] <= 0:
        return merged[0][0]
    start, end, count = 0.0, merged[idx][0], merged[idx][1]
    if idx > 0:
        start = merged[idx - 1][0]
        count -= merged[idx - 1][1]
        rank -= merged[idx - 1][1]
    # Go float division: 0/0 (q = 0 on an empty lowest bucket) is NaN, not an error
    return start + (end - start) * (rank / count if count else math.nan)


def finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def level(value: float, edges: tuple[float, float]) -> str:
    """``low`` below edges[0], ``high`` at or above edges[1], else ``medium``."""
    if value < edges[0]:
        return "low"
    return "high" if value >= edges[1] else "medium"


# -- trend ---------------------------------------------------------------------------------
def trend_direction(change: float, epsilon: float) -> int:
    """1 (▲) when change > epsilon, -1 (▼) when change < -epsilon, else 0 (–)."""
    if change > epsilon:
        return 1
    if change < -epsilon:
        return -1
    return 0


# -- execution risk ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Risk:
    score: float
    level: str
    factors: dict[str, float]  # x_i per factor (before weights)
    explanation: str


def volatility_ratio(rois: Sequence[float], eps: float) -> float:
    """Population std of the ROI samples / max(|mean|, eps); 0 with fewer than 2 samples."""
    n = len(rois)
    if n < 2:
        return 0.0
    mean = sum(rois) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in rois) / n)
    return std / max(abs(mean), eps)


def execution_risk(
    notional: float,
    depth: float,
    p99_latency: float | None,
    latency_budget: float,
    rois: Sequence[float],
    roi_eps: float,
    book_age: float,
    stale_after: float,
    weights: Mapping[str, float],
) -> Risk:
    """clip(sum w_i * x_i, 0, 1) with x_fill = Q / depth (inf when depth is 0),
    x_lat = p99 / budget (0 when unknown), x_vol = :func:`volatility_ratio`,
    x_age = book age / stale_after."""
    x = {
        "fill": notional / depth if depth > 0 else math.inf,
        "latency": max(p99_latency, 0.0) / latency_budget if p99_latency is not None else 0.0,
        "volatility": volatility_ratio(rois, roi_eps),
        "age": max(book_age, 0.0) / stale_after,
    }
    # A zero weight ignores its factor entirely (0 * inf would be NaN).
    terms = {k: weights.get(k, 0.0) * v if weights.get(k, 0.0) > 0 else 0.0 for k, v in x.items()}
    score = min(max(sum(terms.values()), 0.0), 1.0)
    top = max(terms, key=lambda k: terms[k])
    lvl = level(score, RISK_LEVELS)
    desc = {
        "fill": f"size is {x['fill']:.2f}x the reference-band depth",
        "latency": "p99 latency is "
        + (f"{x['latency']:.2f}x the budget" if p99_latency is not None else "unknown"),
        "volatility": f"ROI std is {x['volatility']:.2f}x its mean",
        "age": f"book age is {x['age']:.2f}x stale_after",
    }
    explanation = f"{lvl} risk {score:.2f}: mostly {top} ({desc[top]})"
    if terms[top] == 0:
        explanation = f"{lvl} risk {score:.2f}: deep books, fresh and steady"
    return Risk(score, lvl, x, explanation)


# -- buying pressure -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Pressure:
    value: float
    level: str
    explanation: str


def buying_pressure(bid_depth: float, ask_depth: float) -> Pressure | None:
    """(1 + imbalance) / 2 with imbalance = (bid - ask) / (bid + ask); None when both are 0."""
    total = bid_depth + ask_depth
    if not total > 0:
        return None
    value = (1.0 + (bid_depth - ask_depth) / total) / 2.0
    lvl = level(value, PRESSURE_LEVELS)
    who = {"low": "sellers dominate", "medium": "balanced", "high": "buyers dominate"}[lvl]
    return Pressure(value, lvl, f"bids are {value:.0%} of the band's depth: {who}")


# -- latency audit -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LatencyAudit:
    p50: float | None
    p99: float | None
    clock_offset: float | None
    negative: int
    reconnects: int
    resyncs: int
    level: str
    explanation: str


def latency_audit(
    buckets: Sequence[tuple[float, float]],
    budget: float,
    clock_offset: float | None,
    negative: int,
    reconnects: int,
    resyncs: int,
) -> LatencyAudit:
    """p50/p99 from recent bucket counts; high when p99 > budget, medium when p99 > budget/2,
    when the clock runs behind the exchange (negative offset) or without recent samples."""
    p50 = finite_or_none(histogram_quantile(0.5, buckets)) if buckets else None
    p99 = finite_or_none(histogram_quantile(0.99, buckets)) if buckets else None
    if p99 is None:
        lvl, why = "medium", "no latency samples recently"
    elif p99 > budget:
        lvl, why = "high", f"p99 {p99 * 1000:.0f} ms exceeds the {budget * 1000:.0f} ms budget"
    elif p99 > budget / 2:
        lvl, why = "medium", f"p99 {p99 * 1000:.0f} ms is over half the budget"
    elif clock_offset is not None and clock_offset < 0:
        lvl, why = "medium", f"local clock {-clock_offset * 1000:.0f} ms behind the exchange"
    else:
        lvl, why = "low", f"p99 {p99 * 1000:.0f} ms within the budget"
    extra = f"; {reconnects} reconnects, {resyncs} resyncs" if reconnects or resyncs else ""
    return LatencyAudit(
        p50, p99, clock_offset, negative, reconnects, resyncs, lvl, f"{lvl}: {why}{extra}"
    )

"""Synthetic replay reports (the ``--report PATH.json`` document) for the HTML report tests.

Each route's net ROI is a seeded random walk sampled once per second (at a random instant
inside the second), with stretches of no live opportunity (null); a window is each run of
positive ROI, and the summary fields are derived from those windows as the replay does.
"""

from __future__ import annotations

import random
from typing import Any

START = 1733270400.0

DEFAULT_ROUTES: list[tuple[str, str, str, float]] = [
    ("BTC/USDT", "binance", "kraken", 10000.0),
    ("BTC/USDT", "kraken", "binance", 10000.0),
    ("ETH/USDT", "binance", "coinbase", 5000.0),
    ("ETH/USDT", "coinbase", "binance", 5000.0),
    ("SOL/USDT", "okx", "kraken", 2000.0),
    ("SOL/USDT", "kraken", "okx", 2000.0),
]


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def build_route(
    symbol: str,
    buy: str,
    sell: str,
    notional: float,
    seconds: int,
    rng: random.Random,
    *,
    drift: float = 0.0,
) -> dict[str, Any]:
    """One route entry; ``drift`` well below zero gives a route that never opens a window."""
    series: list[list[Any]] = []
    roi = -0.0004
    dead = 0  # seconds left in a stretch without a live opportunity
    for k in range(seconds):
        t = round(START + k + rng.random() * 0.999, 3)
        if dead == 0 and rng.random() < 0.01:
            dead = rng.randint(1, 20)
        if dead:
            dead -= 1
            series.append([t, None])
            continue
        roi = max(-0.003, min(0.003, roi + rng.gauss(0.0, 0.00008) - 0.02 * (roi + 0.0002)))
        series.append([t, round(roi + drift, 9)])
    spans: list[list[float]] = []
    peaks: list[float] = []
    open_rois: list[float] = []
    opened: float | None = None
    for t, value in series:
        if value is not None and value > 0:
            open_rois.append(value)
            if opened is None:
                opened = t
                peaks.append(value)
            peaks[-1] = max(peaks[-1], value)
        elif opened is not None:
            spans.append([opened, t])
            opened = None
    if opened is not None:  # only closed windows are logged
        peaks.pop()
    durations = [e - s for s, e in spans]
    in_window = sum(durations)
    live = sum(1 for _, v in series if v is not None)
    return {
        "symbol": symbol,
        "buy_exchange": buy,
        "sell_exchange": sell,
        "notional": notional,
        "windows": len(spans),
        "time_in_window_seconds": in_window,
        "time_in_window_ratio": in_window / seconds,
        "duration_seconds": {
            "p50": _quantile(durations, 0.5) if durations else None,
            "p90": _quantile(durations, 0.9) if durations else None,
            "max": max(durations) if durations else None,
        },
        "peak_profit_sum": sum(p * notional for p in peaks),
        "peak_profit_max": max((p * notional for p in peaks), default=0.0),
        "mean_net_roi_open": sum(open_rois) / len(open_rois) if open_rois else None,
        "fillable_ratio": live / seconds,
        "series": series,
        "window_spans": spans,
    }


def build_report(
    seconds: int = 600,
    routes: list[tuple[str, str, str, float]] | None = None,
    *,
    seed: int = 7,
    windowless: int | None = -1,
) -> dict[str, Any]:
    """A report over ``seconds`` of recorded time; route ``windowless`` (default: the last)
    never has a window."""
    rng = random.Random(seed)
    chosen = routes if routes is not None else DEFAULT_ROUTES[:4]
    quiet = None if windowless is None else windowless % len(chosen)
    entries = [
        build_route(*r, seconds, rng, drift=-0.01 if i == quiet else 0.0)
        for i, r in enumerate(chosen)
    ]
    return {
        "span": {"start": START, "end": START + seconds, "seconds": float(seconds)},
        "rows": seconds * 40,
        "updates": seconds * 25,
        "rejected": {
            "malformed": 2,
            "truncated": 1,
            "unknown": [{"exchange": "binance", "symbol": "DOGEUSDT", "rows": 40}],
        },
        "routes": entries,
    }

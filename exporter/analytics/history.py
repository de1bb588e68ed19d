"""Master history (docs/analytics.md, "History row", "Correlation", "Trend").

One :class:`HistoryRow` per canonical symbol per ``history.interval``; the in-memory window
keeps the rows needed by correlation and trends (refilled from Redis on restart). The
correlation matrix runs in a worker thread (pandas), so only plain tuples cross threads.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

MIN_FRACTION = 0.8  # min_periods = 80 % of the window's 1 s samples

Sample = tuple[float, float]  # (unix time, spread)


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """``time`` unix s; ``spread`` signed basis of the reference pair; ``liquidity``
    reference-band depth summed over the symbol's books (canonical quote); ``latency`` max
    over exchanges of the interval's median latency (s); ``imbalance`` depth-weighted over
    exchanges; ``net_profit`` best direction at the reference notional. None = no value."""

    time: float
    spread: float | None
    liquidity: float | None
    latency: float | None
    imbalance: float | None
    net_profit: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> HistoryRow | None:
        """From a decoded Redis row; None when ``time`` is missing or not a number."""

        def num(key: str) -> float | None:
            v = fields.get(key)
            return float(v) if isinstance(v, int | float) and math.isfinite(v) else None

        t = num("time")
        if t is None:
            return None
        return cls(
            t, num("spread"), num("liquidity"), num("latency"), num("imbalance"), num("net_profit")
        )


def signed_basis(mid_a: float, r_a: float, mid_b: float, r_b: float) -> float:
    """(mid_B*r_B - mid_A*r_A) / (mid_A*r_A) for the reference pair (A, B)."""
    a = mid_a * r_a
    return (mid_b * r_b - a) / a


def depth_weighted_imbalance(depths: Iterable[tuple[float, float]]) -> float | None:
    """sum(imbalance_e * depth_e) / sum(depth_e) = (sum bid - sum ask) / (sum bid + sum ask)."""
    bid = ask = 0.0
    for b, a in depths:
        bid += b
        ask += a
    total = bid + ask
    return (bid - ask) / total if total > 0 else None


def median_or_none(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


class HistoryWindow:
    """Rolling rows per symbol, bounded by ``horizon`` seconds (oldest dropped on append)."""

    def __init__(self, symbols: Iterable[str], horizon: float) -> None:
        self.horizon = horizon
        self.rows: dict[str, deque[HistoryRow]] = {s: deque() for s in symbols}

    def append(self, symbol: str, row: HistoryRow) -> None:
        rows = self.rows[symbol]
        if rows and row.time <= rows[-1].time:
            return  # refilled rows may overlap live ones: keep time strictly increasing
        rows.append(row)
        while rows and rows[0].time < row.time - self.horizon:
            rows.popleft()

    def refill(self, symbol: str, rows: Iterable[HistoryRow]) -> int:
        """Prepend rows read back from Redis (older than anything held); returns the count."""
        current = self.rows[symbol]
        first = current[0].time if current else math.inf
        older = sorted((r for r in rows if r.time < first), key=lambda r: r.time)
        self.rows[symbol] = deque([*older, *current])
        return len(older)

    def spreads(self, symbol: str) -> list[Sample]:
        return [(r.time, r.spread) for r in self.rows[symbol] if r.spread is not None]


def spread_change(
    samples: Sequence[Sample], now: float, window: float, tolerance: float
) -> float | None:
    """spread(now) - spread(now - window), each the last sample at or before that time and
    no older than ``tolerance``; None when either is missing (too little history)."""
    latest = _at(samples, now, tolerance)
    past = _at(samples, now - window, tolerance)
    if latest is None or past is None or latest[0] <= past[0]:
        return None
    return latest[1] - past[1]


def _at(samples: Sequence[Sample], t: float, tolerance: float) -> Sample | None:
    for s in reversed(samples):  # newest first: trend windows are short next to the history
        if s[0] <= t:
            return s if s[0] >= t - tolerance else None
    return None


def correlation_matrix(
    series: Mapping[str, Sequence[Sample]],
    now: float,
    window_seconds: float,
    ffill_seconds: float,
    min_fraction: float = MIN_FRACTION,
) -> dict[tuple[str, str], tuple[float, int]]:
    """Pearson correlation of spreads on a 1 s grid over the last ``window_seconds``.

    Each series keeps its last sample per second, is forward-filled at most
    ``ffill_seconds`` (samples before the window may fill its start), and a pair needs
    ``ceil(min_fraction * window)`` seconds where both have a value. Returns
    ``{(symbol, other): (r, samples)}`` for symbol < other; pairs with too little data or a
    constant series are absent (never NaN). Order of ``series`` is kept; cap it upstream.
    """
    n = max(1, int(window_seconds))
    end = math.floor(now)
    limit = max(0, int(ffill_seconds))
    grid = pd.RangeIndex(end - n - limit + 1, end + 1)
    min_periods = max(2, math.ceil(min_fraction * n))
    cols: dict[str, npt.NDArray[np.float64]] = {}
    for symbol, samples in series.items():
        if not samples:
            continue
        secs = pd.Series(
            [v for _, v in samples], index=[math.floor(t) for t, _ in samples], dtype="float64"
        )
        secs = secs[~secs.index.duplicated(keep="last")]
        filled = secs.reindex(grid).ffill(limit=limit) if limit else secs.reindex(grid)
        cols[symbol] = np.asarray(filled.to_numpy()[-n:], dtype=np.float64)
    out: dict[tuple[str, str], tuple[float, int]] = {}
    names = sorted(cols)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            x, y = cols[a], cols[b]
            mask = ~(np.isnan(x) | np.isnan(y))
            count = int(mask.sum())
            if count < min_periods:
                continue
            xs, ys = x[mask], y[mask]
            # exact constancy test: a constant series has no correlation
            if np.ptp(xs) == 0 or np.ptp(ys) == 0:
                continue
            dx, dy = xs - xs.mean(), ys - ys.mean()
            denom = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
            if not denom > 0:
                continue
            r = float((dx * dy).sum()) / denom
            if math.isfinite(r):
                out[(a, b)] = (min(1.0, max(-1.0, r)), count)
    return out

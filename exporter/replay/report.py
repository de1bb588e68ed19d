"""What a replay reports: the closed windows and, per route, the JSON report (docs/replay.md).

During a replay, :class:`ReportingTracker` (the live window tracker, thresholds from the
config) tells :class:`RouteStats` about every evaluation of every route, and the logged
windows as they close. A replay (or each job of a split one) hands over a plain-data
*partial*; :func:`finalize` merges partials into the windows log and the report, so one
process and N jobs produce the same bytes.

Window ids: the live id is ``<start ms>-<opening sequence of the process>``, which depends on
how the symbols were split; a replay numbers its logged windows instead in the order
(start, route in configuration order, end), the same whatever ``--jobs``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from exporter.analytics.windows import WindowKey, WindowTracker, window_entry
from exporter.config import Config
from exporter.model import CloseReason, Window

if TYPE_CHECKING:
    from exporter.market.state import MarketState


def route_keys(config: Config) -> list[WindowKey]:
    """Every route (symbol, buy, sell, notional) in configuration order (MarketState's)."""
    return [
        (s, a, b, n)
        for s in config.symbols
        for a, b in config.routes_for(s)
        for n in config.notionals
    ]


@dataclass
class _Route:
    evaluations: int = 0  # evaluations of a live pair
    fillable: int = 0  # ... that gave a net ROI
    open_sum: float = 0.0  # net ROI summed over the evaluations while a window was open
    open_n: int = 0
    seconds: list[int] = field(default_factory=list)  # series: one point per second
    values: list[float | None] = field(default_factory=list)

    def point(self, now: float, value: float | None) -> None:
        sec = math.floor(now)
        if self.seconds and self.seconds[-1] == sec:
            self.values[-1] = value
        else:
            self.seconds.append(sec)
            self.values.append(value)


class RouteStats:
    """Per-route accumulators and the logged windows of one replay."""

    def __init__(self, config: Config) -> None:
        self.keys = route_keys(config)
        self._routes = {key: _Route() for key in self.keys}
        self._pairs = list(dict.fromkeys(key[:3] for key in self.keys))
        self._notionals = list(config.notionals)
        self.windows: list[dict[str, Any]] = []

    def evaluation(
        self, key: WindowKey, roi: float | None, evaluated: bool, open_: bool, now: float
    ) -> None:
        route = self._routes[key]
        if evaluated:
            route.evaluations += 1
            if roi is not None:
                route.fillable += 1
        if open_ and roi is not None:
            route.open_sum += roi
            route.open_n += 1
        route.point(now, roi)

    def after_sweep(self, state: MarketState, now: float) -> None:
        """A pair whose books stopped being live gets a null point (no evaluation says so
        while both books are quiet)."""
        for pair in self._pairs:
            if state.live_pair(pair) is None:
                for n in self._notionals:
                    route = self._routes[(*pair, n)]
                    if route.values and route.values[-1] is not None:
                        route.point(now, None)

    def window_closed(self, window: Window, logged: bool) -> None:
        # Windows closed by the end of the data are kept even when too short to log: a split
        # replay moves their end to the end of the whole replay (finalize).
        if logged or window.close_reason is CloseReason.SHUTDOWN:
            self.windows.append(
                {
                    "entry": window_entry(window),
                    "logged": logged,
                    "start": window.start,
                    "end": window.end if window.end is not None else window.last_seen,
                    "route": [window.symbol, window.buy_exchange, window.sell_exchange,
                              window.notional],
                }
            )  # fmt: skip

    def partial_routes(self) -> list[dict[str, Any]]:
        return [
            {
                "route": list(key),
                "evaluations": r.evaluations,
                "fillable": r.fillable,
                "open_sum": r.open_sum,
                "open_n": r.open_n,
                "seconds": r.seconds,
                "values": r.values,
            }
            for key, r in self._routes.items()
        ]


class ReportingTracker(WindowTracker):
    """The live window tracker (same thresholds, same decisions) that also reports every
    evaluation: whether the pair was evaluated from live books, its net ROI, and whether a
    window of the route is open after it."""

    def __init__(self, config: Config, state: MarketState, routes: RouteStats) -> None:
        w = config.windows
        super().__init__(
            w.open_threshold, w.close_threshold, w.min_duration_seconds, routes.window_closed
        )
        self._state = state
        self._routes = routes
        # A pair's notionals are observed one after the other at one instant: whether the
        # pair was evaluated from live books is looked up once for all of them.
        self._last: tuple[str, str, str, float, bool] | None = None

    def observe(self, key: WindowKey, roi: float | None, profit: float | None, now: float) -> None:
        super().observe(key, roi, profit, now)
        last = self._last
        if last is not None and last[3] == now and last[:3] == key[:3]:
            evaluated = last[4]
        else:
            evaluated = self._state.live_pair((key[0], key[1], key[2])) is not None
            self._last = (key[0], key[1], key[2], now, evaluated)
        self._routes.evaluation(key, roi, evaluated, key in self.open, now)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None when empty."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _route_key(raw: Iterable[Any]) -> WindowKey:
    s, a, b, n = raw
    return (str(s), str(a), str(b), float(n))


def _at_end(w: Mapping[str, Any], end: float | None, min_duration: float) -> dict[str, Any] | None:
    """A window closed by the end of its job's data, closed at the end of the whole replay
    instead (what one process does); None when it is then too short to log."""
    if w["entry"]["close_reason"] != str(CloseReason.SHUTDOWN) or end is None or end <= w["end"]:
        return dict(w) if w["logged"] else None
    if end - w["start"] < min_duration:
        return None
    entry = dict(w["entry"])
    entry["end"] = round(end, 3)
    entry["duration_seconds"] = round(end - w["start"], 3)
    return {**w, "entry": entry, "end": end, "logged": True}


def merge_windows(
    config: Config, partials: Sequence[Mapping[str, Any]], end: float | None = None
) -> list[dict[str, Any]]:
    """Every logged window, renumbered (start, route order, end) and ordered by end, then
    number: the `windows` log entries of the replay. ``end``: the replay's last instant."""
    order = {key: i for i, key in enumerate(route_keys(config))}
    min_duration = config.windows.min_duration_seconds
    items = [
        w
        for p in partials
        for raw in p["windows"]
        if (w := _at_end(raw, end, min_duration)) is not None
    ]
    items.sort(key=lambda w: (w["start"], order.get(_route_key(w["route"]), len(order)), w["end"]))
    numbered = []
    for seq, w in enumerate(items, start=1):
        entry = dict(w["entry"])
        entry["id"] = f"{int(w['start'] * 1000)}-{seq}"
        numbered.append((w["end"], seq, entry))
    numbered.sort(key=lambda x: (x[0], x[1]))
    return [entry for _end, _seq, entry in numbered]


def _files(partials: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Counts per input file, each file once (a conversion book's file is replayed by every
    job that needs it)."""
    files: dict[str, Mapping[str, Any]] = {}
    for p in partials:
        for path, counts in p["files"].items():
            files.setdefault(path, counts)
    return files


def finalize(
    config: Config, partials: Sequence[Mapping[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(the windows log entries, the report document) of a replay made of ``partials``."""
    spans = [p["span"] for p in partials if p["span"] is not None]
    start = min(s[0] for s in spans) if spans else None
    end = max(s[1] for s in spans) if spans else None
    windows = merge_windows(config, partials, end)
    files = _files(partials)
    unknown: dict[tuple[str, str], int] = {}
    for counts in files.values():
        for ex, sym, rows in counts["unknown"]:
            unknown[(ex, sym)] = unknown.get((ex, sym), 0) + rows
    seconds = end - start if start is not None and end is not None else 0.0
    stats: dict[WindowKey, Mapping[str, Any]] = {}
    for p in partials:
        for r in p["routes"]:
            key = _route_key(r["route"])
            if key not in stats or r["evaluations"] > stats[key]["evaluations"]:
                stats[key] = r
    by_route: dict[WindowKey, list[dict[str, Any]]] = {}
    for entry in windows:
        route = (entry["symbol"], entry["buy_exchange"], entry["sell_exchange"], entry["notional"])
        by_route.setdefault(_route_key(route), []).append(entry)
    routes = [
        _route_report(key, stats.get(key), by_route.get(key, []), seconds)
        for key in route_keys(config)
    ]
    report = {
        "span": {"start": start, "end": end, "seconds": seconds},
        "rows": sum(c["rows"] for c in files.values()),
        "updates": sum(c["updates"] for c in files.values()),
        "rejected": {
            "malformed": sum(c["malformed"] for c in files.values()),
            "truncated": sum(c["truncated"] for c in files.values()),
            "unknown": [
                {"exchange": ex, "symbol": sym, "rows": rows}
                for (ex, sym), rows in sorted(unknown.items())
            ],
        },
        "routes": routes,
    }
    return windows, report


def _route_report(
    key: WindowKey,
    stats: Mapping[str, Any] | None,
    windows: list[dict[str, Any]],
    span_seconds: float,
) -> dict[str, Any]:
    durations = [float(w["duration_seconds"]) for w in windows]
    profits = [float(w["peak_profit"]) for w in windows]
    total = math.fsum(durations)
    evaluations = stats["evaluations"] if stats else 0
    open_n = stats["open_n"] if stats else 0
    series = (
        [[float(s), v] for s, v in zip(stats["seconds"], stats["values"], strict=True)]
        if stats
        else []
    )
    symbol, buy, sell, notional = key
    return {
        "symbol": symbol,
        "buy_exchange": buy,
        "sell_exchange": sell,
        "notional": notional,
        "windows": len(windows),
        "time_in_window_seconds": total,
        "time_in_window_ratio": total / span_seconds if span_seconds > 0 else 0.0,
        "duration_seconds": {
            "p50": percentile(durations, 0.5),
            "p90": percentile(durations, 0.9),
            "max": max(durations) if durations else None,
        },
        "peak_profit_sum": math.fsum(profits),
        "peak_profit_max": max(profits) if profits else 0.0,
        "mean_net_roi_open": stats["open_sum"] / open_n if stats and open_n else None,
        "fillable_ratio": stats["fillable"] / evaluations if stats and evaluations else 0.0,
        "series": series,
        "window_spans": [[float(w["start"]), float(w["end"])] for w in windows],
    }

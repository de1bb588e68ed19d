"""JSON API: ``/api/opportunities``, ``/api/windows``, ``/api/history``, ``/api/insights``.

``/api/opportunities?scope=global`` answers from every shard's route summary in Redis
(exporter/store/summary.py) instead of this process's books.

Read-only views over MarketState, the intelligence results and the Redis log. Bad query
parameters answer 400 with a JSON error; Redis being away answers 503 (history falls back
to the in-memory window). Numbers that are not finite are sent as null, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from exporter.analytics.insights import ARROWS, Risk, trend_direction
from exporter.config import Config
from exporter.http.server import Handler, json_error
from exporter.market.intelligence import Intelligence
from exporter.market.state import MarketState
from exporter.model import Fill, PairKey, PairResult, label_number
from exporter.store.reader import StateUnavailable
from exporter.store.summary import DEFAULT_STALE_AFTER, global_view, read_summaries
from exporter.store.writer import StateWriter

MAX_NOTIONAL = 1e9  # on-demand sizes beyond this are refused (the walk is bounded anyway)
MAX_WINDOWS = 1000
MAX_HISTORY = 10_000
LOG_KINDS = ("window", "alert")
SCOPES = ("local", "global")


class BadRequest(Exception):
    """A query parameter is invalid; the message is returned with status 400."""


def _num(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _float_param(query: Mapping[str, str], name: str, lo: float, hi: float) -> float | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"`{name}` must be a number, got {raw!r}") from None
    if not (math.isfinite(value) and lo <= value <= hi):
        raise BadRequest(f"`{name}` must lie in [{lo:g}, {hi:g}], got {raw!r}")
    return value


def _int_param(query: Mapping[str, str], name: str, default: int, hi: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= hi:
        raise BadRequest(f"`{name}` must be an integer in [1, {hi}], got {raw!r}")
    return int(raw)


def _risk_json(risk: Risk | None) -> dict[str, Any] | None:
    if risk is None:
        return None
    return {
        "score": risk.score,
        "level": risk.level,
        "explanation": risk.explanation,
        "factors": {k: _num(v) for k, v in risk.factors.items()},
    }


class Api:
    def __init__(
        self, config: Config, state: MarketState, intel: Intelligence, writer: StateWriter
    ) -> None:
        self.config = config
        self.state = state
        self.intel = intel
        self.writer = writer

    def _symbol(self, query: Mapping[str, str], required: bool) -> str | None:
        symbol = query.get("symbol")
        if not symbol:
            if required:
                raise BadRequest("`symbol` is required, e.g. ?symbol=BTC/USD")
            return None
        if symbol not in self.config.symbols:
            raise BadRequest(f"unknown symbol {symbol!r}; configured: {list(self.config.symbols)}")
        return symbol

    def trend_json(self, symbol: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for w in self.config.trend_windows:
            change = self.intel.trends.get((symbol, w))
            d = trend_direction(change, self.config.trend_epsilon) if change is not None else None
            out[label_number(w)] = {
                "change": change,
                "direction": d,
                "arrow": ARROWS[d] if d is not None else None,
            }
        return out

    def _entry(self, key: PairKey, res: PairResult, fill: Fill, now: float) -> dict[str, Any]:
        symbol, a, b = key
        opt = res.optimum
        risk = self.intel.risk.get((*key, fill.notional))
        if risk is None:
            risk = self.intel.risk_for(key, fill.notional, now)
        return {
            "symbol": symbol,
            "buy_exchange": a,
            "sell_exchange": b,
            "notional": fill.notional,
            "fillable": fill.fillable,
            "net_roi": _num(fill.net_roi),
            "net_profit": _num(fill.net_profit),
            "gross_spread": res.gross_spread,
            "breakeven_notional": opt.breakeven_notional if opt else 0.0,
            "optimal_notional": opt.optimal_notional if opt else 0.0,
            "optimal_net_profit": opt.optimal_net_profit if opt else 0.0,
            "optimal_capped": opt.capped if opt else False,
            "window_open": (*key, fill.notional) in self.state.windows.open,
            "risk": _risk_json(risk),
            "trend": self.trend_json(symbol),
            "computed_at": res.computed_at,
        }

    def opportunities(self, query: Mapping[str, str]) -> dict[str, Any]:
        symbol = self._symbol(query, required=False)
        notional = _float_param(query, "notional", 0.0, MAX_NOTIONAL)
        if notional is not None and notional <= 0:
            raise BadRequest("`notional` must be > 0")
        now = self.state.clock.time()
        entries: list[dict[str, Any]] = []
        for key, res in self.state.live_pairs(symbol):
            if notional is None:
                fills: tuple[Fill, ...] = res.fills
            else:
                fill = self.state.evaluate_notional(*key, notional)
                fills = (fill,) if fill is not None else ()
            entries += [self._entry(key, res, f, now) for f in fills]
        # best net ROI first; not fillable (no ROI) last
        entries.sort(key=lambda e: (e["net_roi"] is None, -(e["net_roi"] or 0.0)))
        return {
            "generated_at": now,
            "notional": notional,
            "reference_notional": self.config.reference_notional,
            "count": len(entries),
            "opportunities": entries,
        }

    def insights(self) -> dict[str, Any]:
        it, cfg = self.intel, self.config
        risk = [
            {"symbol": s, "buy_exchange": a, "sell_exchange": b, "notional": n,
             **(_risk_json(r) or {})}
            for (s, a, b, n), r in it.risk.items()
        ]  # fmt: skip
        risk.sort(key=lambda e: -e["score"])
        pressure = [
            {"exchange": ex, "symbol": s, "value": p.value, "level": p.level,
             "explanation": p.explanation}
            for (ex, s), p in it.pressure.items()
        ]  # fmt: skip
        latency = [
            {"exchange": ex, "p50": a.p50, "p99": a.p99, "clock_offset": a.clock_offset,
             "negative_latency": a.negative, "reconnects": a.reconnects, "resyncs": a.resyncs,
             "level": a.level, "explanation": a.explanation}
            for ex, a in it.latency.items()
        ]  # fmt: skip
        corr = [
            {"symbol": a, "other_symbol": b, "ratio": r, "samples": n}
            for (a, b), (r, n) in sorted(it.correlation.items())
        ]
        return {
            "generated_at": self.state.clock.time(),
            "reference": {
                "notional": cfg.reference_notional,
                "band": cfg.reference_band,
                "pair": list(cfg.reference_pair),
            },
            "execution_risk": risk,
            "buying_pressure": pressure,
            "latency": latency,
            "trends": [{"symbol": s, "windows": self.trend_json(s)} for s in cfg.symbols],
            "correlation": {
                "window_seconds": cfg.correlation.window_seconds,
                "computed_at": it.correlation_at,
                "compute_duration_seconds": it.correlation_duration,
                "pairs": corr,
            },
        }

    async def global_opportunities(self, query: Mapping[str, str]) -> dict[str, Any]:
        """Every shard's routes from the summaries in Redis; StateUnavailable without Redis."""
        if query.get("notional"):
            raise BadRequest("`notional` is evaluated from local books: not with scope=global")
        stale_after = _float_param(query, "stale_after", 0.001, 86_400.0)
        try:
            summaries = await read_summaries(self.writer.client)
        except Exception as exc:
            raise StateUnavailable(f"shard summaries unavailable: {exc}") from exc
        return global_view(
            summaries,
            self.state.clock.time(),
            stale_after=DEFAULT_STALE_AFTER if stale_after is None else stale_after,
            expected_count=self.config.shard.count,
            symbol=query.get("symbol") or None,
        )

    # -- handlers ----------------------------------------------------------------------
    async def get_opportunities(self, request: web.Request) -> web.Response:
        scope = request.query.get("scope") or "local"
        if scope not in SCOPES:
            raise BadRequest(f"`scope` must be one of {list(SCOPES)}, got {scope!r}")
        if scope == "local":
            return web.json_response(self.opportunities(request.query))
        try:
            return web.json_response(await self.global_opportunities(request.query))
        except StateUnavailable as exc:
            return json_error(503, str(exc), path=request.path)

    async def get_insights(self, request: web.Request) -> web.Response:
        return web.json_response(self.insights())

    async def get_windows(self, request: web.Request) -> web.Response:
        q = request.query
        since = _float_param(q, "since", 0.0, 1e11)
        limit = _int_param(q, "limit", 100, MAX_WINDOWS)
        kind = q.get("kind") or None
        if kind is not None and kind not in LOG_KINDS:
            raise BadRequest(f"`kind` must be one of {list(LOG_KINDS)}, got {kind!r}")
        try:
            entries = await self.writer.reader.read_log(since=since, limit=limit, kind=kind)
        except StateUnavailable as exc:
            return json_error(503, f"window log unavailable: {exc}", path=request.path)
        return web.json_response({"count": len(entries), "windows": entries})

    async def get_history(self, request: web.Request) -> web.Response:
        q = request.query
        symbol = self._symbol(q, required=True)
        assert symbol is not None
        since = _float_param(q, "since", 0.0, 1e11)
        limit = _int_param(q, "limit", 300, MAX_HISTORY)
        source = "redis"
        try:
            rows = await self.writer.reader.read_history(symbol, since=since, limit=limit)
        except StateUnavailable:
            # Redis away or disabled: the in-memory window still answers (shorter span).
            source = "memory"
            mem = [r.as_dict() for r in self.intel.window.rows[symbol]]
            rows = [r for r in mem if since is None or r["time"] >= since][-limit:]
        return web.json_response(
            {"symbol": symbol, "source": source, "count": len(rows), "rows": rows}
        )


def _guard(handler: Handler) -> Handler:
    """Turn :class:`BadRequest` into a 400 JSON error."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except BadRequest as exc:
            return json_error(400, str(exc), path=request.path)

    return wrapped


def api_routes(
    config: Config, state: MarketState, intel: Intelligence, writer: StateWriter
) -> list[web.RouteDef]:
    api = Api(config, state, intel, writer)
    return [
        web.get("/api/opportunities", _guard(api.get_opportunities)),
        web.get("/api/windows", _guard(api.get_windows)),
        web.get("/api/history", _guard(api.get_history)),
        web.get("/api/insights", _guard(api.get_insights)),
    ]

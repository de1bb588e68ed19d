"""Route summaries per shard: one view of every shard's symbols through the shared Redis.

Each shard puts a compact summary of its routes (the ``/api/opportunities`` entries without
risk and trend) at ``shard:{index}:summary`` through the writer's buffered put and flush
(``StateWriter.put_value``: conflated, written on the writer's flush timer with the ticker
TTL, never on the feed path); :class:`SummaryPublisher` refreshes it every
``SUMMARY_INTERVAL`` seconds. Readers (``GET /api/opportunities?scope=global``,
``arb-exporter status --redis.url``) read every ``shard:*:summary`` key and
:func:`global_view` merges them: the owner shard of each symbol, every route tagged with its
shard, and the shards whose summary is older than ``stale_after`` (``stale``), absent
(``missing``: never published, or expired after the TTL) or published under another
``shard.count`` (``count_mismatch``, during a resize).

Value (JSON)::

    {"shard": 0, "count": 2, "symbols": ["BTC/USD", ...], "published_at": 1763960000.1,
     "routes": [{"symbol", "buy_exchange", "sell_exchange", "notional", "net_roi",
                 "net_profit", "fillable", "window_open", "computed_at"}, ...]}
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from exporter.market.state import MarketState
from exporter.store.writer import StateWriter

log = logging.getLogger(__name__)

SUMMARY_INTERVAL = 1.0  # seconds between two summaries of a shard
DEFAULT_STALE_AFTER = 5.0  # a summary older than this is flagged stale
SUMMARY_PATTERN = "shard:*:summary"
_KEY = re.compile(r"^shard:(\d+):summary$")
ROUTE_FIELDS = (
    "symbol", "buy_exchange", "sell_exchange", "notional", "net_roi", "net_profit",
    "fillable", "window_open", "computed_at",
)  # fmt: skip


def summary_key(index: int) -> str:
    return f"shard:{index}:summary"


def _num(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def build_summary(state: MarketState, index: int, count: int) -> dict[str, Any]:
    """This shard's summary now: its symbols and every live route per configured notional."""
    routes: list[dict[str, Any]] = []
    open_windows = state.windows.open
    for key, res in state.live_pairs():
        symbol, a, b = key
        for fill in res.fills:
            routes.append(
                {
                    "symbol": symbol,
                    "buy_exchange": a,
                    "sell_exchange": b,
                    "notional": fill.notional,
                    "net_roi": _num(fill.net_roi),
                    "net_profit": _num(fill.net_profit),
                    "fillable": fill.fillable,
                    "window_open": (*key, fill.notional) in open_windows,
                    "computed_at": res.computed_at,
                }
            )
    return {
        "shard": index,
        "count": count,
        "symbols": list(state.symbols),
        "published_at": state.clock.time(),
        "routes": routes,
    }


class SummaryPublisher:
    """Puts this shard's summary into the writer's buffer (called on a timer)."""

    def __init__(self, state: MarketState, writer: StateWriter, index: int, count: int) -> None:
        self.state = state
        self.writer = writer
        self.index = index
        self.count = count
        self.key = summary_key(index)

    def publish(self) -> None:
        self.writer.put_value(self.key, build_summary(self.state, self.index, self.count))


def parse_summaries(values: Mapping[str, str | bytes | None]) -> dict[int, dict[str, Any]]:
    """key -> raw JSON value, as read from Redis -> shard index -> summary (bad ones skipped)."""
    out: dict[int, dict[str, Any]] = {}
    for key, raw in values.items():
        match = _KEY.match(key)
        if match is None or raw is None:
            continue
        try:
            data = json.loads(raw)
        except ValueError:
            log.warning("summary %s is not JSON; ignored", key)
            continue
        if isinstance(data, dict) and isinstance(data.get("published_at"), int | float):
            out[int(match.group(1))] = data
    return out


async def read_summaries(client: Redis | RedisCluster | None) -> dict[int, dict[str, Any]]:
    """Every shard summary in Redis (one SCAN, then one GET per shard key)."""
    if client is None:
        raise RuntimeError("redis is disabled")
    keys = sorted({k async for k in client.scan_iter(match=SUMMARY_PATTERN, count=1000)})
    values: dict[str, str | bytes | None] = {}
    for key in keys:
        values[key] = await client.get(key)
    return parse_summaries(values)


def global_view(
    summaries: Mapping[int, Mapping[str, Any]],
    now: float,
    stale_after: float = DEFAULT_STALE_AFTER,
    expected_count: int | None = None,
    symbol: str | None = None,
) -> dict[str, Any]:
    """Merge shard summaries: shard states, the owner of every symbol, all routes (best net
    ROI first, not fillable last), each tagged with its ``shard`` and ``stale`` flag."""
    counts = [int(s.get("count", 0)) for s in summaries.values()]
    count = max([expected_count or 0, *counts, *(i + 1 for i in summaries)], default=0)
    shards: list[dict[str, Any]] = []
    status_of: dict[int, str] = {}
    for i in range(count):
        s = summaries.get(i)
        if s is None:
            status = "missing"
            shards.append({"shard": i, "status": status, "count": None, "published_at": None,
                           "age_seconds": None, "symbols": 0, "routes": 0})  # fmt: skip
        else:
            age = now - float(s["published_at"])
            status = "ok"
            if age > stale_after:
                status = "stale"
            elif int(s.get("count", 0)) != count:
                status = "count_mismatch"
            shards.append({"shard": i, "status": status, "count": s.get("count"),
                           "published_at": s["published_at"], "age_seconds": age,
                           "symbols": len(s.get("symbols", [])),
                           "routes": len(s.get("routes", []))})  # fmt: skip
        status_of[i] = status
    owners: dict[str, list[int]] = {}
    routes: list[dict[str, Any]] = []
    for i, s in sorted(summaries.items()):
        for sym in _strings(s.get("symbols")):
            owners.setdefault(sym, []).append(i)
        for r in s.get("routes", []) or []:
            if isinstance(r, dict) and (symbol is None or r.get("symbol") == symbol):
                routes.append({**r, "shard": i, "stale": status_of[i] == "stale"})
    routes.sort(key=lambda e: (e.get("net_roi") is None, -(e.get("net_roi") or 0.0)))
    symbols = [
        {"symbol": sym, "shard": own[0] if len(own) == 1 else own,
         "status": status_of[own[0]] if len(own) == 1 else "conflict"}
        for sym, own in sorted(owners.items())
        if symbol is None or sym == symbol
    ]  # fmt: skip
    flagged = [s["shard"] for s in shards if s["status"] != "ok"]
    return {
        "scope": "global",
        "generated_at": now,
        "stale_after": stale_after,
        "shard_count": count,
        "shards": shards,
        "flagged_shards": flagged,
        "symbols": symbols,
        "count": len(routes),
        "opportunities": routes,
    }


def _strings(value: Any) -> Iterable[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []

"""Two shards against one simulator and one private redis-server: each publishes its route
summary (``shard:{i}:summary``), the global view through either shard's API (and
``arb-exporter status --redis.url``) lists every symbol with its owner shard, and a stopped
shard's summary goes stale, then missing, and is flagged; both shards resubscribing at once
stay within one shared REST budget per exchange (``feeds.shared_rate_limit``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from typing import Any

import aiohttp
import pytest
import redis

from exporter.app import Exporter
from exporter.config import parse
from exporter.sharding import shard_of
from tests.support.exporter import ROOT, all_live, running_exporter, sim_config_data, wait_for
from tests.support.redis_server import RedisServer
from tests.support.simulator import SimulatorHarness

pytestmark = pytest.mark.integration

SIMULATOR = {"seed": 23, "rate": 10}

SYMBOLS = {
    "BTC/USD": {"binance": "BTC/USDT", "kraken": "BTC/USD"},
    "ETH/USD": {"binance": "ETH/USDT", "kraken": "ETH/USD"},
    "SOL/USD": {"binance": "SOL/USDT", "kraken": "SOL/USD"},
}
OWNER = {s: shard_of(s, 2) for s in SYMBOLS}


def shard_config(
    sim: SimulatorHarness, redis_url: str | None, index: int, feeds: dict[str, Any] | None = None
) -> Any:
    data = sim_config_data(
        sim.base_url, redis_url, feeds, symbols=SYMBOLS, shard={"index": index, "count": 2}
    )
    return parse(data, "test", environ={})


async def global_view(exp: Exporter, **params: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{exp.server.bound_port}/api/opportunities"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, params={"scope": "global", **params}) as resp,
    ):
        assert resp.status == 200, await resp.text()
        data: dict[str, Any] = await resp.json()
        return data


def owners(view: dict[str, Any]) -> dict[str, Any]:
    return {e["symbol"]: e["shard"] for e in view["symbols"]}


async def test_global_view_across_two_shards_flags_a_stopped_shard(
    sim: SimulatorHarness, redis_server: RedisServer
) -> None:
    assert set(OWNER.values()) == {0, 1}  # both shards own a symbol
    async with contextlib.AsyncExitStack() as stack:
        shard0 = await stack.enter_async_context(
            running_exporter(shard_config(sim, redis_server.url, 0))
        )
        shard1_cm = running_exporter(shard_config(sim, redis_server.url, 1))
        shard1 = await shard1_cm.__aenter__()
        stopped = False
        try:
            assert set(shard0.state.symbols) == {s for s, i in OWNER.items() if i == 0}
            assert set(shard1.state.symbols) == {s for s, i in OWNER.items() if i == 1}
            await wait_for(lambda: all_live(shard0) and all_live(shard1), 20, what="live")

            views: dict[int, dict[str, Any]] = {}

            async def complete() -> bool:
                for i, exp in enumerate((shard0, shard1)):
                    views[i] = await global_view(exp)
                return all(
                    not v["flagged_shards"]
                    and owners(v) == OWNER
                    and {r["symbol"] for r in v["opportunities"]} == set(SYMBOLS)
                    for v in views.values()
                )

            await _wait_async(complete, 15, "both shards' routes in the global view")
            for view in views.values():  # the same view through either shard
                assert [s["status"] for s in view["shards"]] == ["ok", "ok"]
                assert view["shard_count"] == 2
                for r in view["opportunities"]:
                    assert r["shard"] == OWNER[r["symbol"]] and r["stale"] is False
                    assert {"net_roi", "net_profit", "fillable", "window_open", "computed_at",
                            "notional", "buy_exchange", "sell_exchange"} <= set(r)  # fmt: skip
                # 2 routes x 2 notionals per symbol
                assert len(view["opportunities"]) == len(SYMBOLS) * 2 * 2

            # The summary in Redis: TTL-bounded, one key per shard.
            client = redis.Redis.from_url(redis_server.url, decode_responses=True)
            raw = json.loads(client.get("shard:1:summary") or "{}")
            assert raw["shard"] == 1 and raw["count"] == 2
            assert raw["symbols"] == [s for s in SYMBOLS if OWNER[s] == 1]
            assert 0 < client.pttl("shard:1:summary") <= 3000  # 3 x stale_after (1 s)

            # The terminal view reads Redis directly.
            out = _status(redis_server.url)
            assert out.returncode == 0, out.stderr
            for sym, i in OWNER.items():
                assert any(sym in line and f" {i} " in line for line in out.stdout.splitlines())

            # Stop shard 1: its summary goes stale (older than stale_after), then missing.
            await shard1_cm.__aexit__(None, None, None)
            stopped = True

            async def flagged(status: str) -> bool:
                views[0] = await global_view(shard0, stale_after="1")
                return views[0]["flagged_shards"] == [1] and (
                    views[0]["shards"][1]["status"] == status
                )

            await _wait_async(lambda: flagged("stale"), 10, "shard 1 stale")
            sol = [e for e in views[0]["symbols"] if OWNER[e["symbol"]] == 1]
            assert sol and all(e["status"] == "stale" for e in sol)
            assert all(r["stale"] for r in views[0]["opportunities"] if r["shard"] == 1)
            await _wait_async(lambda: flagged("missing"), 10, "shard 1 summary expired")
            assert owners(views[0]) == {s: i for s, i in OWNER.items() if i == 0}
            assert views[0]["shards"][0]["status"] == "ok"
            out = _status(redis_server.url)
            assert out.returncode == 0, out.stderr
            assert "missing" in out.stdout and "flagged: shard 1" in out.stdout
        finally:
            if not stopped:
                await shard1_cm.__aexit__(None, None, None)


async def test_scope_parameter_is_checked(sim: SimulatorHarness) -> None:
    async with running_exporter(shard_config(sim, None, 0)) as exp:
        base = f"http://127.0.0.1:{exp.server.bound_port}/api/opportunities"
        async with aiohttp.ClientSession() as session:
            async with session.get(base, params={"scope": "world"}) as resp:
                assert resp.status == 400
                assert "scope" in (await resp.json())["error"]
            async with session.get(base, params={"scope": "global", "notional": "5"}) as resp:
                assert resp.status == 400
            async with session.get(base, params={"scope": "global"}) as resp:
                assert resp.status == 503  # Redis disabled: no shared view


RATE, BURST = 60.0, 1  # shared budget: one snapshot per second per exchange, all shards


def binance_snapshots(counters: dict[str, Any]) -> int:
    return sum(counters["depth_snapshots"].get("binance", {}).values())


async def test_two_shards_resubscribing_at_once_share_one_rest_budget(
    sim: SimulatorHarness, redis_server: RedisServer
) -> None:
    limit = {"shared_rate_limit": {"snapshots_per_minute": RATE, "burst": BURST}}
    async with (
        running_exporter(shard_config(sim, redis_server.url, 0, limit)) as shard0,
        running_exporter(shard_config(sim, redis_server.url, 1, limit)) as shard1,
    ):
        await wait_for(lambda: all_live(shard0) and all_live(shard1), 30, what="live")
        markets = sum(ex == "binance" for exp in (shard0, shard1) for ex, _ in exp.feed_stats)
        assert markets == len(SYMBOLS)  # both shards have binance markets
        base = binance_snapshots(await sim.acounters())
        sim.fault("binance", "close")  # every binance socket of both shards at once
        t0 = time.monotonic()
        samples: list[tuple[float, int]] = [(t0, 0)]
        while samples[-1][1] < markets or not (all_live(shard0) and all_live(shard1)):
            assert time.monotonic() - t0 < 30, f"{samples[-1][1]} snapshots after 30 s"
            await asyncio.sleep(0.05)
            samples.append((time.monotonic(), binance_snapshots(await sim.acounters()) - base))
    # Never above the bucket: burst + rate x elapsed in any interval (+1: sampling granularity).
    for i, (ti, ni) in enumerate(samples):
        for tj, nj in samples[i + 1 :]:
            assert nj - ni <= BURST + RATE / 60 * (tj - ti) + 1, (ti - t0, tj - t0, nj - ni)
    first = next(t for t, n in samples if n >= 1)
    last = next(t for t, n in samples if n >= markets)
    # 3 resubscriptions, one token per second: spread over >= 2 s (unlimited: all at once)
    assert last - first >= (markets - BURST) / (RATE / 60) - 0.3, last - first
    for exp in (shard0, shard1):
        assert exp.registry.get_sample_value(
            "cryptoarb_rest_budget_fallbacks_total", {"exchange": "binance"}
        ) in (None, 0.0)


def _status(redis_url: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "exporter.cli.main", "status", "--redis.url", redis_url,
           "--stale-after", "1"]  # fmt: skip
    env = {"COLUMNS": "200", "PATH": "/usr/bin:/bin"}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=30, env=env)


async def _wait_async(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.1)

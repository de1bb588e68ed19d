"""Fault matrix, part 2 (part 1: test_feeds.py): exchange host down and back, REST snapshot
failures with Retry-After, a 60 s reconnect storm against the snapshot budget, crossed and
frozen books, Redis down/killed, SIGTERM under load. Real ccxt.pro against the simulator,
both exchanges running; each fault is timed (recovery table at the end of the run) and a
watchdog scrapes /metrics throughout: no ROI and no open window from a book that is not live.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
import urllib.request
from typing import Any

import aiohttp
import pytest
import redis

from exporter.app import Exporter
from exporter.devstack.procs import free_port
from exporter.model import BookKey, BookStatus, ErrorReason
from tests.support.exporter import (
    ExporterProcess,
    all_live,
    running_exporter,
    sim_config,
    sim_config_data,
    wait_for,
)
from tests.support.faults import RECOVERY, Recovery, freeze_and_compare, recover, watchdog
from tests.support.redis_server import RedisServer
from tests.support.simulator import SimulatorHarness

pytestmark = pytest.mark.integration

# Every direction is a window while both books are live: losing a book must close them.
ALWAYS_OPEN = {"open_threshold": -0.05, "close_threshold": -0.06, "min_duration_seconds": 0}


# One simulator process for the module, reset before each test (tests/support/fixtures.py)
SIMULATOR = {"seed": 23, "rate": 20}


def config(base_url: str, redis_url: str | None = None, **feeds: Any) -> Any:
    return sim_config(base_url, redis_url, feeds, windows=ALWAYS_OPEN)


async def scrape(exp: Exporter, path: str = "/metrics") -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{exp.server.bound_port}{path}") as resp,
    ):
        return resp.status, await resp.text()


class LogSpy:
    """Window-log entries the exporter hands to the Redis writer."""

    def __init__(self, exp: Exporter) -> None:
        self.entries: list[dict[str, Any]] = []
        original = exp.writer.append_log

        def spy(entry: Any, dedupe_key: str | None = None) -> None:
            self.entries.append(dict(entry))
            original(entry, dedupe_key)

        exp.writer.append_log = spy  # type: ignore[method-assign]

    def reasons(self, exchange: str, symbol: str) -> set[str]:
        return {
            str(e["close_reason"])
            for e in self.entries
            if e["symbol"] == symbol and exchange in (e["buy_exchange"], e["sell_exchange"])
        }


async def live_with_windows(exp: Exporter) -> None:
    await wait_for(lambda: all_live(exp), timeout=20, what="all books live")
    n = len(exp.state.window_keys())
    await wait_for(lambda: len(exp.state.windows.open) == n, timeout=5, what="all windows open")


# -- exchange host down ---------------------------------------------------------------------


async def test_exchange_host_down_at_start_then_restarted_mid_run() -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    extra = ["--port", str(port)]
    async with running_exporter(config(base_url)) as exp:
        # Nothing listens yet: markets cannot even be loaded.
        await wait_for(
            lambda: all(s.errors[ErrorReason.NETWORK] >= 2 for s in exp.feed_stats.values()),
            timeout=10,
            what="load_markets retried",
        )
        status, text = await scrape(exp)
        assert status == 200 and "cryptoarb_feed_up" in text
        assert not list(exp.state.live_pairs()) and not exp.state.windows.open
        assert (await scrape(exp, "/readyz"))[0] == 503
        sim = SimulatorHarness(seed=5, rate=20, extra_args=extra).start()
        try:
            t0 = time.monotonic()
            await recover(exp, sim, "exchange host down at start", t0, timeout=30)
            await live_with_windows(exp)
            spy = LogSpy(exp)
            async with watchdog(exp) as dog:
                sim.stop()  # both exchanges gone mid-run
                await wait_for(lambda: not exp.state.windows.open, timeout=5, what="windows closed")
                await wait_for(lambda: dog.saw_not_live, timeout=5, what="seen not live")
                reasons = spy.reasons("binance", "BTC/USD") | spy.reasons("kraken", "ETH/USD")
                assert reasons and reasons <= {"feed_down", "stale"}, reasons
                await asyncio.sleep(2)
                assert (await scrape(exp))[0] == 200
                sim = SimulatorHarness(seed=6, rate=20, extra_args=extra).start()
                t0 = time.monotonic()
                await recover(exp, sim, "exchange host restarted mid-run", t0, timeout=30)
            assert all(s.reconnects >= 1 for s in exp.feed_stats.values())
        finally:
            sim.stop()


# -- REST snapshot failures --------------------------------------------------------------------


def depth_requests(sim: SimulatorHarness, ex: str, market: str) -> int:
    return int(sim.counters()["depth_snapshots"].get(ex, {}).get(market, 0))


@pytest.mark.parametrize(("status", "reason"), [
    (429, ErrorReason.RATE_LIMIT),
    (418, ErrorReason.RATE_LIMIT),
    (503, ErrorReason.NETWORK),
])  # fmt: skip
async def test_depth_snapshot_error_honours_retry_after(
    sim: SimulatorHarness, status: int, reason: ErrorReason
) -> None:
    async with running_exporter(config(sim.base_url)) as exp:
        await live_with_windows(exp)
        stats = exp.feed_stats[("binance", "BTC/USDT")]
        injected = sim.counters()["rest_errors_injected"].get("binance", {}).get("depth", 0)
        sim.fault("binance", "rest_error", endpoint="depth", status=status, count=1, retry_after=2)
        async with watchdog(exp):
            t0 = time.monotonic()
            sim.fault("binance", "sequence_gap", "BTC/USDT")  # forces a resync: a new snapshot

            def refused() -> bool:
                errs = sim.counters()["rest_errors_injected"].get("binance", {})
                return bool(errs.get("depth", 0) > injected)

            await wait_for(refused, timeout=10, interval=0.02, what="the refused snapshot")
            t_refused = time.monotonic()
            after_refusal = depth_requests(sim, "binance", "BTC/USDT")
            await wait_for(
                lambda: depth_requests(sim, "binance", "BTC/USDT") > after_refusal,
                timeout=10,
                interval=0.02,
                what="the next snapshot request",
            )
            waited = time.monotonic() - t_refused
            assert waited >= 1.8, f"Retry-After 2 s not honoured: next request after {waited:.2f}s"
            assert stats.errors[reason] >= 1
            await recover(exp, sim, f"REST depth snapshot {status} (Retry-After 2 s)", t0)


@pytest.mark.slow  # a 60 s storm
async def test_reconnect_storm_stays_within_the_snapshot_budget(sim: SimulatorHarness) -> None:
    """60 s of sockets closed or aborted every second on both exchanges: at most 12 depth
    snapshots per market (burst 4 + 8 per minute), and every book recovers afterwards."""
    async with running_exporter(config(sim.base_url)) as exp:
        await live_with_windows(exp)
        sim.post("/control/counters/reset")
        async with watchdog(exp) as dog:
            t_end = time.monotonic() + 60
            i = 0
            while time.monotonic() < t_end:
                for ex in ("binance", "kraken"):
                    await sim.afault(ex, "close" if i % 2 else "abort")
                i += 1
                await asyncio.sleep(1.0)
            counts = sim.counters()["depth_snapshots"]
            t0 = time.monotonic()
            await wait_for(lambda: dog.saw_not_live, timeout=5, what="watchdog saw the book down")
            per_market = {(ex, m): n for ex, ms in counts.items() for m, n in ms.items()}
            watched = set(exp.feed_stats)
            assert watched <= set(per_market), per_market
            over = {k: n for k, n in per_market.items() if k in watched and n > 12}
            assert not over, f"more than 12 depth snapshots in 60 s: {over}"
            assert all(s.reconnects >= 5 for s in exp.feed_stats.values())
            await recover(exp, sim, "reconnect storm (60 s, every socket every 1 s)", t0, 30)
        worst = max(per_market[k] for k in watched)
        RECOVERY.append(Recovery("storm: most depth snapshots of one market", worst, "limit 12"))


# -- crossed and frozen books ---------------------------------------------------------------


async def test_crossed_book_yields_nothing_until_it_uncrosses(sim: SimulatorHarness) -> None:
    async with running_exporter(config(sim.base_url)) as exp:
        await live_with_windows(exp)
        spy = LogSpy(exp)
        stats = exp.feed_stats[("kraken", "BTC/USD")]
        async with watchdog(exp) as dog:
            t0 = time.monotonic()
            sim.fault("kraken", "crossed", "BTC/USD", seconds=2.5)
            await wait_for(
                lambda: exp.state.status("kraken", "BTC/USD") is BookStatus.CROSSED,
                timeout=5,
                what="crossed",
            )
            assert stats.errors[ErrorReason.CROSSED] >= 1
            await wait_for(lambda: "crossed" in spy.reasons("kraken", "BTC/USD"), timeout=5)
            await wait_for(lambda: dog.saw_not_live, timeout=5, what="watchdog saw the book down")
            await recover(exp, sim, "crossed book (2.5 s)", t0)


async def test_frozen_book_while_the_other_exchange_moves(sim: SimulatorHarness) -> None:
    async with running_exporter(config(sim.base_url, frozen_after=1.5)) as exp:
        await live_with_windows(exp)
        spy = LogSpy(exp)
        stats = exp.feed_stats[("binance", "BTC/USDT")]
        async with watchdog(exp) as dog:
            t0 = time.monotonic()
            sim.fault("binance", "frozen", "BTC/USDT", seconds=4)
            await wait_for(
                lambda: exp.state.status("binance", "BTC/USDT") is BookStatus.STALE,
                timeout=5,
                what="frozen detected",
            )
            # The feed itself is fine: frames keep arriving, the top of the book stands still.
            assert stats.status is BookStatus.LIVE
            seen = stats.messages
            await wait_for(lambda: stats.messages > seen + 5, timeout=3, what="frames flowing")
            await wait_for(lambda: stats.errors[ErrorReason.STALE] >= 1, timeout=3)
            await wait_for(lambda: "stale" in spy.reasons("binance", "BTC/USD"), timeout=5)
            text = (await scrape(exp))[1]
            assert 'cryptoarb_orderbook_stale{exchange="binance",symbol="BTC/USD"} 1.0' in text
            await wait_for(lambda: dog.saw_not_live, timeout=5, what="watchdog saw the book down")
            await recover(exp, sim, "frozen book (4 s, frozen_after 1.5 s)", t0)


# -- Redis ------------------------------------------------------------------------------------


def stream_ids(server: RedisServer) -> list[str]:
    r = redis.Redis.from_url(server.url, decode_responses=True)
    return [f["id"] for _i, f in r.xrange("windows")]


async def test_redis_down_at_start_then_killed_mid_run_loses_no_window_entry(
    sim: SimulatorHarness, redis_server_factory: Any
) -> None:
    server: RedisServer = redis_server_factory(started=False)
    async with running_exporter(config(sim.base_url, server.url)) as exp:
        spy = LogSpy(exp)
        await live_with_windows(exp)
        # Redis was never there: /metrics serves, redis_up 0, readiness fails.
        status, text = await scrape(exp)
        assert status == 200 and "cryptoarb_redis_up 0.0" in text
        assert (await scrape(exp, "/readyz"))[0] == 503
        sim.fault("kraken", "close", "ETH/USD")  # closes every ETH window touching kraken
        await wait_for(lambda: len(spy.entries) >= 4, timeout=5, what="windows closed")
        await wait_for(lambda: all_live(exp), timeout=15)
        t0 = time.monotonic()
        server.start()
        await wait_for(lambda: exp.writer.up, timeout=10, what="redis up")
        produced = {e["id"] for e in spy.entries}
        await wait_for(lambda: produced <= set(stream_ids(server)), timeout=10, what="flushed")
        RECOVERY.append(Recovery("Redis down at start: backlog written", time.monotonic() - t0))

        # Killed mid-run (SIGKILL, no shutdown work), windows closing meanwhile, restarted.
        server.kill()
        await wait_for(lambda: not exp.writer.up, timeout=10, what="redis down noticed")
        assert "cryptoarb_redis_up 0.0" in (await scrape(exp))[1]
        before = len(spy.entries)
        sim.fault("binance", "close", "BTC/USDT")
        await wait_for(lambda: len(spy.entries) >= before + 4, timeout=5, what="more windows")
        t0 = time.monotonic()
        server.start()  # empty: no persistence
        await wait_for(lambda: exp.writer.up, timeout=10, what="redis back")
        lost = {e["id"] for e in spy.entries[before:]}
        await wait_for(lambda: lost <= set(stream_ids(server)), timeout=10, what="flushed again")
        RECOVERY.append(Recovery("Redis killed mid-run: backlog written", time.monotonic() - t0))
        ids = stream_ids(server)
        assert len(ids) == len(set(ids)), "no duplicates"
        text = (await scrape(exp))[1]
        assert "cryptoarb_redis_up 1.0" in text
        assert 'cryptoarb_redis_dropped_writes_total{kind="log"} 0.0' in text


# -- SIGTERM under load -------------------------------------------------------------------------


def test_sigterm_under_load_closes_windows_and_exits_zero(redis_server: RedisServer) -> None:
    with SimulatorHarness(seed=3, rate=300, extra_args=["--mode", "fixed_rate"]) as busy:
        proc = ExporterProcess(
            sim_config_data(busy.base_url, redis_server.url, windows=ALWAYS_OPEN)
        ).start()
        try:
            deadline = time.monotonic() + 30
            while not _ready(proc.url):
                assert time.monotonic() < deadline, proc.log()
                time.sleep(0.2)
            time.sleep(2)  # a few thousand updates in flight
            # Signal only with all 8 windows open (a book between reconnects has none).
            proc.wait_open_windows(8)
            t0 = time.monotonic()
            proc.signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0, proc.log()
            elapsed = time.monotonic() - t0
            RECOVERY.append(Recovery("SIGTERM under load (300 updates/s/market): exit", elapsed))
            assert elapsed < 10
            r = redis.Redis.from_url(redis_server.url, decode_responses=True)
            reasons = [f["close_reason"] for _i, f in r.xrange("windows")]
            assert len(reasons) >= 8 and "shutdown" in reasons, proc.log()
            assert reasons[-8:] == ["shutdown"] * 8
        finally:
            proc.stop()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


async def test_freeze_compare_helper_detects_a_wrong_book(sim: SimulatorHarness) -> None:
    """The ground-truth comparison used everywhere above must be able to fail."""
    # A watch times out after stale_after of quiet and the reconnect's snapshot replaces the
    # tampered book with the truth: with 1 s that could land before the 0.5 s comparison
    # below gave up (freeze, settle and the synchronous control calls eat the margin).
    async with running_exporter(config(sim.base_url, stale_after=5.0)) as exp:
        await wait_for(lambda: all_live(exp), timeout=20)
        key = ("kraken", "BTC/USD")
        sim.freeze()
        try:
            await asyncio.sleep(0.5)  # the last frames arrive; a reconnect needs 5 s of quiet
            rec = exp.state._records[BookKey(key)]
            bad = (rec.snapshot.bids[0][0] + 1.0, rec.snapshot.bids[0][1])
            snap = dataclasses.replace(rec.snapshot, bids=(bad, *rec.snapshot.bids[1:]))
            exp.state._records[BookKey(key)] = dataclasses.replace(rec, snapshot=snap)
            # The tampered book is the one that fails, not any book still settling.
            with pytest.raises(AssertionError, match="kraken BTC/USD equal to ground truth"):
                await freeze_and_compare(exp, sim, timeout=0.5)
        finally:
            sim.unfreeze()

"""Round trip: a live run against the simulator is recorded (``run --record`` wiring) while
its windows go to the Redis ``windows`` log; replaying the recording must give the same
windows (docs/replay.md, "Live run and replay").

Compared per window: the route, start and end within one book update of the route's books,
peak ROI and profit to 1e-9, the close reason. Where the docs say a replay may differ: a
window still open at the end closes ``shutdown`` at the last recorded instant (the live stop
comes later), and ``feed_down`` replays as ``stale``.
"""

from __future__ import annotations

import asyncio
import bisect
import json
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from exporter.cli.main import main
from exporter.config import parse
from exporter.replay.tardis import ReadStats, market_index, read_updates
from tests.support.exporter import all_live, sim_config_data, wait_for
from tests.support.recording import recording_exporter
from tests.support.redis_server import RedisServer
from tests.support.simulator import SimulatorHarness

pytestmark = pytest.mark.integration

SIMULATOR = {"seed": 5, "rate": 20}


def windows_of(log: list[tuple[str, dict[str, str]]]) -> list[dict[str, Any]]:
    out = []
    for _sid, fields in log:
        if fields.get("kind") == "window":
            w: dict[str, Any] = dict(fields)
            for key in ("start", "end", "peak_roi", "peak_profit"):
                w[key] = float(w[key])
            out.append(w)
    return out


def route(w: dict[str, Any]) -> tuple[str, str, str, str]:
    return (w["symbol"], w["buy_exchange"], w["sell_exchange"], str(w["notional"]))


async def test_replay_of_a_recording_gives_the_live_windows(
    sim: SimulatorHarness, redis_server: RedisServer, tmp_path: Path
) -> None:
    data = sim_config_data(sim.base_url, redis_url=redis_server.url)
    data["windows"] = {"open_threshold": 0.0005, "close_threshold": 0.0, "min_duration_seconds": 0}
    config = parse(data, "test", environ={})
    record = tmp_path / "rec"
    async with recording_exporter(config, record) as exp:
        await wait_for(lambda: all_live(exp), timeout=20, what="every book live")
        for k in range(3):  # price dislocations open windows on both symbols' routes
            sim.dislocation("BTC/USD", "kraken", 0.004 if k % 2 == 0 else -0.004, 1.5)
            sim.dislocation("ETH/USD", "binance", 0.004, 1.0)
            await asyncio.sleep(2.5)
        # A window open when kraken's ETH book goes silent: it closes `stale`.
        sim.dislocation("ETH/USD", "kraken", 0.004, 4.0)
        await asyncio.sleep(0.7)
        sim.market_stop("kraken", "ETH/USD")
        await asyncio.sleep(2.0)
        sim.market_start("kraken", "ETH/USD")
        # ... and one still open at the stop: it closes `shutdown`.
        sim.dislocation("BTC/USD", "binance", -0.004, 10.0)
        await asyncio.sleep(2.0)
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    live = windows_of(client.xrange("windows"))
    client.close()
    assert len(live) >= 4, live

    files = sorted(record.glob("*_incremental_book_L2_*.csv.gz"))
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(data), encoding="utf-8")
    out = tmp_path / "replayed.jsonl"
    argv = ["replay", "--config.file", str(cfg_path), *map(str, files), "--windows", str(out)]
    assert await asyncio.to_thread(main, argv) == 0
    replayed = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]

    # Recorded update instants of every book, to measure "within one book update".
    index = market_index(config)
    symbol_of = {(ex, m): s for s, mp in config.symbols.items() for ex, m in mp.items()}
    instants: dict[tuple[str, str], list[float]] = {}
    last = 0.0
    for u in read_updates(files, ReadStats()):
        ex, market = index[(u.exchange, u.symbol)]
        t = u.local_timestamp_us / 1e6
        instants.setdefault((ex, symbol_of.get((ex, market), market)), []).append(t)
        last = max(last, t)

    def updates_between(w: dict[str, Any], a: float, b: float) -> int:
        lo, hi = min(a, b) + 0.0005, max(a, b) - 0.0005  # entries are rounded to the ms
        n = 0
        for ex in (w["buy_exchange"], w["sell_exchange"]):
            times = instants[(ex, w["symbol"])]
            n += max(0, bisect.bisect_left(times, hi) - bisect.bisect_right(times, lo))
        return n

    by_route: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for w in replayed:
        by_route.setdefault(route(w), []).append(w)
    assert sorted(by_route) == sorted({route(w) for w in live})
    for w in live:
        candidates = by_route[route(w)]
        match = min(candidates, key=lambda r: abs(r["start"] - w["start"]))
        candidates.remove(match)  # each replayed window answers one live window
        assert updates_between(w, match["start"], w["start"]) <= 1, (w, match)
        assert match["peak_roi"] == pytest.approx(w["peak_roi"], abs=1e-9), (w, match)
        assert match["peak_profit"] == pytest.approx(w["peak_profit"], abs=1e-9), (w, match)
        if w["close_reason"] == "shutdown":
            # The live stop comes after the last recorded update.
            assert match["close_reason"] == "shutdown"
            assert match["end"] == pytest.approx(last, abs=0.001) and match["end"] <= w["end"]
            continue
        expected = "stale" if w["close_reason"] == "feed_down" else w["close_reason"]
        assert match["close_reason"] == expected, (w, match)
        assert updates_between(w, match["end"], w["end"]) <= 1, (w, match)
    assert len(replayed) == len(live)
    reasons = {w["close_reason"] for w in live}
    assert "below_threshold" in reasons and "shutdown" in reasons, reasons
    assert reasons & {"stale", "feed_down"}, reasons

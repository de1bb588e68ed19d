"""Market intelligence against the simulator and a private redis-server: history rows in
Redis, the correlation matrix, refill after a restart, trend/insight series, the JSON API
(windows provoked by the simulator, ``?notional=`` equal to an independent walk on ground
truth, 400s) and ``arb-exporter status``."""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
import yaml

from exporter.analytics.history import correlation_matrix
from exporter.app import Exporter
from tests.integration.test_pipeline import independent_net_profit, samples, scrape
from tests.support.exporter import ROOT, all_live, running_exporter, sim_config_data, wait_for
from tests.support.redis_server import RedisServer
from tests.support.simulator import SimulatorHarness

pytestmark = pytest.mark.integration

SYMBOLS = {
    "BTC/USD": {"binance": "BTC/USDT", "kraken": "BTC/USD"},
    "ETH/USD": {"binance": "ETH/USDT", "kraken": "ETH/USD"},
    "SOL/USD": {"binance": "SOL/USDT", "kraken": "SOL/USD"},
}
PAIRS = [("BTC/USD", "ETH/USD"), ("BTC/USD", "SOL/USD"), ("ETH/USD", "SOL/USD")]
HISTORY_FIELDS = {"time", "spread", "liquidity", "latency", "imbalance", "net_profit"}
TREND_WINDOWS = [1.0, 2.0]


# One simulator process for the module, reset before each test (tests/support/fixtures.py)
SIMULATOR = {"seed": 5, "rate": 10}


def intel_config(base_url: str, redis_url: str | None) -> dict[str, Any]:
    return sim_config_data(
        base_url,
        redis_url,
        # books stay live (3 s) while a test freezes the simulator to read ground truth
        feeds={"stale_after": 3.0},
        symbols=SYMBOLS,
        reference={"notional": 1000, "pair": ["binance", "kraken"]},
        history={"interval": 0.25, "maxlen": 1000},
        correlation={"window_seconds": 4, "interval": 0.5, "symbols": 3},
        trend_windows=TREND_WINDOWS,
    )


def _parse(data: dict[str, Any]) -> Any:
    from exporter.config import parse

    return parse(data, "test", environ={})


def matrix_at(exp: Exporter, t: float) -> dict[tuple[str, str], tuple[float, int]]:
    series = {s: exp.intel.window.spreads(s) for s in exp.intel.corr_symbols}
    return correlation_matrix(series, t, exp.config.correlation.window_seconds, exp.intel.max_stale)


async def get(exp: Exporter, path: str) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{exp.server.bound_port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.json()


async def test_history_rows_correlation_matrix_and_refill_after_restart(
    sim: SimulatorHarness, redis_server: RedisServer
) -> None:
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    config = _parse(intel_config(sim.base_url, redis_server.url))
    async with running_exporter(config) as exp:
        await wait_for(lambda: all_live(exp), timeout=15, what="all live")
        await wait_for(
            lambda: len(exp.intel.correlation) == 3, timeout=20, what="matrix of 3 pairs"
        )
        text = await scrape(exp)
        corr = samples(text, "cryptoarb_spread_correlation_ratio")
        assert set(corr) == {frozenset({"symbol": a, "other_symbol": b}.items()) for a, b in PAIRS}
        assert all(-1 <= v <= 1 for v in corr.values())
        assert samples(text, "cryptoarb_correlation_compute_duration_seconds")[frozenset()] > 0

        # history rows in Redis carry the seed's fields
        rows = [f for _i, f in r.xrange("history:BTC/USD")]
        assert len(rows) >= 8
        assert all(set(f) == HISTORY_FIELDS for f in rows)
        last = rows[-1]
        assert float(last["liquidity"]) > 0 and -1 <= float(last["imbalance"]) <= 1
        assert abs(float(last["spread"])) < 0.05 and float(last["latency"]) >= 0
        times = [float(f["time"]) for f in rows]
        assert times == sorted(times)

        # a reference time whose window is complete (the loaded machine may delay rows) and
        # in a second that is over: the matrix keeps each second's last row, so a row the
        # exporter adds later in the same second (before it stops) would reach Redis and the
        # refilled matrix but not `before`
        def full_window_time() -> float | None:
            t = math.floor(time.time()) - 0.5
            return t if len(matrix_at(exp, t)) == 3 else None

        t_ref = await wait_for(full_window_time, timeout=10, what="a full window")
        before = matrix_at(exp, t_ref)
        assert set(before) == set(PAIRS)
        rows_before = {s: len(r.xrange(f"history:{s}")) for s in SYMBOLS}

    # restart: the new process refills its window from Redis before any live row
    started = time.time()
    async with running_exporter(config) as exp2:
        await wait_for(lambda: exp2.intel.refilled > 0, timeout=10, what="refill")
        assert exp2.intel.refilled >= sum(rows_before.values()) - 3 * 4  # newest rows kept
        oldest = min(exp2.intel.window.rows["BTC/USD"], key=lambda row: row.time)
        assert oldest.time < started
        # the matrix computed from the refilled rows alone is the one before the restart
        after = matrix_at(exp2, t_ref)
        assert after == before
        await wait_for(lambda: len(exp2.intel.correlation) == 3, timeout=10, what="matrix")


async def _status(*args: str) -> str:
    env = dict(os.environ, COLUMNS="220", TERM="dumb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter.cli.main", "status", *args,
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_api_metrics_and_status_view(
    sim: SimulatorHarness, redis_server: RedisServer, tmp_path: Path
) -> None:
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    data = intel_config(sim.base_url, redis_server.url)
    async with running_exporter(_parse(data)) as exp:
        await wait_for(lambda: all_live(exp), timeout=15, what="all live")
        # Kraken 2 % above Binance for 1.5 s: a window buying Binance, selling Kraken
        sim.dislocation("BTC", "kraken", 0.02, 1.5)
        logged = await wait_for(
            lambda: [f for _i, f in r.xrange("windows") if f["symbol"] == "BTC/USD"],
            timeout=10,
            what="window in the log",
        )
        ids = {f["id"] for f in logged}

        # -- /api/windows
        status, body = await get(exp, "/api/windows?limit=50")
        assert status == 200 and body["count"] >= 1
        assert ids <= {w["id"] for w in body["windows"]}
        logged_at = [w["logged_at"] for w in body["windows"]]
        assert logged_at == sorted(logged_at, reverse=True)
        w = next(w for w in body["windows"] if w["id"] in ids)
        assert w["buy_exchange"] == "binance" and w["sell_exchange"] == "kraken"
        assert (await get(exp, "/api/windows?limit=1"))[1]["count"] == 1
        assert (await get(exp, "/api/windows?kind=alert"))[1]["count"] == 0
        future = time.time() + 3600
        assert (await get(exp, f"/api/windows?since={future}"))[1]["count"] == 0
        for bad in ("limit=0", "limit=abc", "limit=100000", "kind=bogus", "since=-1"):
            status, body = await get(exp, f"/api/windows?{bad}")
            assert status == 400 and body["status"] == 400 and body["error"], bad

        # -- /api/history
        status, body = await get(exp, "/api/history?symbol=BTC/USD&limit=5")
        assert status == 200 and body["source"] == "redis" and body["count"] == 5
        assert all(set(row) >= HISTORY_FIELDS for row in body["rows"])
        for bad in ("", "?symbol=XYZ/USD", "?symbol=BTC/USD&limit=-3"):
            status, body = await get(exp, f"/api/history{bad}")
            assert status == 400 and "error" in body, bad

        # -- trend, insight and correlation series for every symbol, pair and book
        keys = [(s, a, b) for s, m in SYMBOLS.items() for a in m for b in m if a != b]

        async def complete() -> str | None:
            text = await scrape(exp)
            change = samples(text, "cryptoarb_spread_change_ratio")
            risk = samples(text, "cryptoarb_execution_risk_ratio")
            pressure = samples(text, "cryptoarb_buying_pressure_ratio")
            corr = samples(text, "cryptoarb_spread_correlation_ratio")
            ok = (
                len(change) == len(SYMBOLS) * len(TREND_WINDOWS)
                and len(risk) == len(keys) * 2
                and len(pressure) == 6
                and len(corr) == 3
                and len(samples(text, "cryptoarb_feed_latency_p99_seconds")) == 2
            )
            return text if ok else None

        text = None
        deadline = time.monotonic() + 20
        while text is None:
            assert time.monotonic() < deadline, "intelligence series incomplete"
            text = await complete()
            await asyncio.sleep(0.2)
        assert "NaN" not in text
        direction = samples(text, "cryptoarb_spread_trend_direction")
        assert set(direction.values()) <= {-1.0, 0.0, 1.0}
        windows = {dict(k)["window"] for k in direction}
        assert windows == {"1", "2"}
        assert all(0 <= v <= 1 for v in samples(text, "cryptoarb_execution_risk_ratio").values())
        promtool = shutil.which("promtool")
        assert promtool
        check = await asyncio.create_subprocess_exec(
            promtool, "check", "metrics",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(check.communicate(text.encode()), 30)
        assert check.returncode == 0, (out + err).decode()

        # -- /api/insights
        status, ins = await get(exp, "/api/insights")
        assert status == 200
        assert len(ins["execution_risk"]) == len(keys) * 2
        every = ins["execution_risk"] + ins["buying_pressure"] + ins["latency"]
        assert all(e["level"] in ("low", "medium", "high") and e["explanation"] for e in every)
        assert {a["exchange"] for a in ins["latency"]} == {"binance", "kraken"}
        assert len(ins["correlation"]["pairs"]) == 3
        assert {t["symbol"] for t in ins["trends"]} == set(SYMBOLS)

        # -- /api/opportunities: sorted by net ROI; ?notional= equals a walk on ground truth
        status, body = await get(exp, "/api/opportunities")
        rois = [e["net_roi"] for e in body["opportunities"] if e["net_roi"] is not None]
        assert rois == sorted(rois, reverse=True) and len(rois) >= 6
        for bad in ("notional=0", "notional=-5", "notional=1e12", "notional=abc",
                    "notional=inf", "symbol=NOPE"):  # fmt: skip
            status, body = await get(exp, f"/api/opportunities?{bad}")
            assert status == 400 and "error" in body, bad
        await sim.afreeze()
        try:
            await asyncio.sleep(0.5)  # last frames in; books stay live (stale_after 3 s)
            truth = {
                (ex, m): await sim.abook(ex, m, depth=100)
                for ex, m in [*exp.feed_stats, ("kraken", "USDT/USD")]
            }
            status, body = await get(exp, "/api/opportunities?notional=2500")
        finally:
            await sim.aunfreeze()
        assert status == 200 and body["notional"] == 2500
        usdt = truth[("kraken", "USDT/USD")]
        rates = {
            "binance": (Decimal(usdt["bids"][0][0]) + Decimal(usdt["asks"][0][0])) / 2,
            "kraken": Decimal(1),
        }
        by_key = {
            (e["symbol"], e["buy_exchange"], e["sell_exchange"]): e for e in body["opportunities"]
        }
        assert set(by_key) == set(keys)
        for s, a, b in keys:
            fa, fb = exp.fees.get(a, SYMBOLS[s][a]), exp.fees.get(b, SYMBOLS[s][b])
            assert fa is not None and fb is not None
            expected = independent_net_profit(
                truth[(a, SYMBOLS[s][a])]["asks"], truth[(b, SYMBOLS[s][b])]["bids"],
                Decimal(2500), Decimal(str(fa.taker_fee)), Decimal(str(fb.taker_fee)),
                rates[a], rates[b],
            )  # fmt: skip
            e = by_key[(s, a, b)]
            assert e["notional"] == 2500 and e["risk"]["level"] in ("low", "medium", "high")
            if expected is None:
                assert e["fillable"] is False
            else:
                assert e["net_profit"] == pytest.approx(float(expected), abs=1e-6)

        # -- arb-exporter status, by URL and by config file
        url = f"http://127.0.0.1:{exp.server.bound_port}"
        out = await _status("--url", url, "--notional", "2500")
        for word in ("BTC/USD", "ETH/USD", "SOL/USD", "binance", "kraken", "2500", "window",
                     "below_threshold", "Latency audit"):  # fmt: skip
            assert word in out, word
        assert any(a in out for a in ("▲", "▼", "–"))
        cfg_file = tmp_path / "config.yaml"
        data["web"]["listen_address"] = f"127.0.0.1:{exp.server.bound_port}"
        cfg_file.write_text(yaml.safe_dump(data))
        out = await _status("--config.file", str(cfg_file))
        assert "BTC/USD" in out and "live" in out


async def test_status_exit_codes_for_an_unreachable_exporter_and_a_bad_config() -> None:
    from exporter.devstack.procs import free_port

    env = dict(os.environ)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter.cli.main", "status", "--url", f"http://127.0.0.1:{free_port()}",
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    _out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1 and b"not reachable" in err
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter.cli.main", "status", "--config.file", "/nonexistent.yaml",
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    _out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and b"cannot read file" in err

"""End to end with the real binaries, all on 127.0.0.1, started and stopped here:
redis-server + simulator + exporter + Prometheus 2.42 + Alertmanager 0.25 with loopback Slack and
SMTP catchers. The Prometheus and Alertmanager configs, rules, routes, inhibitions and templates
come unchanged from the repository; only hosts, ports, secret paths, the scrape/evaluation
interval (1 s) and notification timings are overridden (exporter/observability.py).

- a dislocation the simulator provokes fires the window alert; the Slack catcher receives the
  title with symbol, exchanges and ROI; the entry lands in the Redis log through the webhook;
- stopping a feed raises the stale alert;
- ``amtool alert add`` of a stale-feed alert plus an arbitrage alert on the same exchange and
  symbol leaves the arbitrage alert suppressed (``inhibitedBy``) and the Slack catcher silent;
- every recording rule and every dashboard query returns series carrying the panel's labels.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from exporter.app import Exporter
from exporter.devstack.observability import ObservabilityStack
from tests.observability import dashboards as dsh
from tests.support.exporter import all_live, running_exporter, sim_config, wait_for
from tests.support.redis_server import RedisServer
from tests.support.simulator import SimulatorHarness

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "e2e-webhook-token"


async def until(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.5)


async def get_json(url: str, **params: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(url, params=params) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def prom_query(stack: ObservabilityStack, expr: str) -> list[dict[str, Any]]:
    assert stack.prometheus is not None
    body = await get_json(f"{stack.prometheus.url}/api/v1/query", query=expr)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def firing(stack: ObservabilityStack, alertname: str, **labels: str) -> list[Any]:
    assert stack.prometheus is not None
    body = await get_json(f"{stack.prometheus.url}/api/v1/alerts")
    return [
        a for a in body["data"]["alerts"]
        if a["state"] == "firing" and a["labels"]["alertname"] == alertname
        and all(a["labels"].get(k) == v for k, v in labels.items())
    ]  # fmt: skip


def amtool_add(stack: ObservabilityStack, *labels: str) -> None:
    amtool = shutil.which("amtool")
    assert amtool and stack.alertmanager is not None
    res = subprocess.run(
        [amtool, f"--alertmanager.url={stack.alertmanager.url}", "alert", "add", *labels,
         "--annotation=title=injected by the e2e test"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr


async def test_end_to_end(tmp_path: Path) -> None:
    token_file = tmp_path / "webhook_token"
    token_file.write_text(TOKEN + "\n")
    with RedisServer() as redis, SimulatorHarness(seed=21, rate=10) as sim:
        # Short correlation and trend windows so those panels have data within seconds.
        config = sim_config(
            sim.base_url, redis.url, webhook={"token_file": str(token_file)},
            correlation={"window_seconds": 10, "interval": 1}, trend_windows=[5, 10],
        )  # fmt: skip
        async with running_exporter(config) as exp:
            addr = f"127.0.0.1:{exp.server.bound_port}"
            async with ObservabilityStack(ROOT, addr, TOKEN, interval="1s") as stack:
                await wait_for(lambda: all_live(exp), timeout=30, what="all books live")
                await run_checks(stack, exp, sim)


async def run_checks(stack: ObservabilityStack, exp: Exporter, sim: SimulatorHarness) -> None:
    # A dislocation (Kraken BTC +0.6 % for 25 s: buy on Binance, sell on Kraken) and, at the
    # same time, a stopped feed (Binance ETH/USDT) for the stale alert.
    await sim.adislocation("BTC", "kraken", 0.006, 25)
    sim.market_stop("binance", "ETH/USDT")

    # -- window alert -> Slack (title with symbol, exchanges, ROI) ---------------------------
    def window_messages() -> list[Any]:
        return [
            m for m in stack.slack.messages
            if m.channel == "#cryptoarb-windows" and "BTC/USD binance→kraken" in m.title
        ]  # fmt: skip

    async def slack_window() -> list[Any]:
        return window_messages()

    msgs = await until(slack_window, 60, "the window alert on the Slack catcher")
    title = msgs[0].title
    assert title.startswith("💰 BTC/USD binance→kraken ROI ")
    roi = float(title.split("ROI ")[1].split("%")[0])
    assert 0.05 < roi < 0.6, title  # net of fees, below the +0.6 % dislocation
    assert "profit" in title and "notional 1000 USD" in title
    assert await firing(stack, "CryptoArbWindowOpen", symbol="BTC/USD", notional="1000")

    # -- ... and into the Redis log through the webhook ---------------------------------------
    async def logged() -> list[dict[str, Any]]:
        entries = await exp.writer.reader.read_log(kind="alert", limit=100)
        return [
            e for e in entries
            if e["alertname"] == "CryptoArbWindowOpen" and e.get("symbol") == "BTC/USD"
            and e.get("buy_exchange") == "binance"
        ]  # fmt: skip

    entries = await until(logged, 30, "the window alert in the Redis windows log")
    entry = entries[0]
    assert entry["status"] == "firing" and entry["fingerprint"]
    assert entry["labels"]["sell_exchange"] == "kraken" and entry["labels"]["notional"] == "1000"

    # -- stopped feed -> stale alert ------------------------------------------------------------
    async def stale() -> list[Any]:
        return await firing(stack, "CryptoArbBookStale", exchange="binance", symbol="ETH/USD")

    alerts = await until(stale, 60, "CryptoArbBookStale for binance ETH/USD")
    # Restart it: the correlation panels below need both symbols' spreads again.
    sim.market_start("binance", "ETH/USDT")
    assert alerts[0]["labels"]["buy_exchange"] == alerts[0]["labels"]["sell_exchange"] == "binance"

    # -- inhibition on the real Alertmanager -----------------------------------------------------
    amtool_add(stack, "alertname=CryptoArbBookStale", "severity=warning", "category=feed",
               "exchange=kraken", "symbol=XRP/USD", "buy_exchange=kraken",
               "sell_exchange=kraken")  # fmt: skip
    amtool_add(stack, "alertname=CryptoArbWindowOpen", "severity=info", "category=arbitrage",
               "symbol=XRP/USD", "buy_exchange=binance", "sell_exchange=kraken",
               "notional=1000")  # fmt: skip
    assert stack.alertmanager is not None

    async def inhibited() -> dict[str, Any] | None:
        body = await get_json(f"{stack.alertmanager.url}/api/v2/alerts")  # type: ignore[union-attr]
        for a in body:
            if a["labels"]["alertname"] == "CryptoArbWindowOpen" and \
                    a["labels"]["symbol"] == "XRP/USD" and a["status"]["inhibitedBy"]:  # fmt: skip
                return dict(a)
        return None

    window = await until(inhibited, 20, "the injected arbitrage alert to be inhibited")
    assert window["status"]["state"] == "suppressed"
    await asyncio.sleep(4)  # > group_wait + group_interval of the overlay
    assert not [m for m in stack.slack.messages if "XRP/USD" in m.title + m.text]

    # -- every recording rule and every dashboard query returns labelled series -----------------
    # (polled: correlation and trends need a few seconds of history)
    deadline = time.monotonic() + 30
    problems = await query_problems(stack)
    for _ in range(30):
        if not problems or time.monotonic() > deadline:
            break
        await asyncio.sleep(2)
        problems = await query_problems(stack)
    assert not problems, "\n".join(problems)


async def query_problems(stack: ObservabilityStack) -> list[str]:
    problems = []
    for name in sorted(dsh.recorded_names()):
        if not await prom_query(stack, name):
            problems.append(f"recording rule {name}: no series")
    for target in dsh.prometheus_targets():
        expr = dsh.substitute(target.expr, scrape_interval=1.0)
        result = await prom_query(stack, expr)
        where = f"{target.dashboard} / {target.panel} / {target.ref}: {expr}"
        if not result:
            problems.append(f"{where}: no series")
            continue
        for series in result:
            missing = target.labels() - set(series["metric"])
            if missing:
                problems.append(f"{where}: series {json.dumps(series['metric'])} lacks {missing}")
                break
    return problems

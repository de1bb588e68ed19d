"""StateWriter / readers against a private redis-server (never the shared 127.0.0.1:6379)."""

# ruff: noqa: F811  (pytest fixtures are parameters named like the imported fixtures)

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from redis.exceptions import ConnectionError as RedisConnectionError

from exporter.store.reader import StateUnavailable

# Also imported by tests/conftest.py; importing here keeps this module self-contained.
from tests.support.fixtures import redis_server, redis_server_factory  # noqa: F401
from tests.support.redis_server import RedisServer
from tests.support.writers import Harness, h  # noqa: F401  (the `h` fixture)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def wait_until(cond: Callable[[], Any], limit: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + limit
    while True:
        res = cond()
        if isinstance(res, Awaitable):
            res = await res
        if res:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def r(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


def sample(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, labels)


async def smembers(r: aioredis.Redis, key: str) -> set[str]:
    return set(await r.smembers(key))  # type: ignore[misc]


def log_ids(entries: list[tuple[str, dict[str, str]]]) -> list[int]:
    return [int(f["n"]) for _, f in entries]


async def test_tickers_json_ttl_and_conflation(
    h: Harness,
    redis_server: RedisServer,
    r: aioredis.Redis,
) -> None:
    w, reg = h.writer(redis_server.url, ticker_ttl=30.0)
    for kind in ("ticker", "history", "log"):
        assert sample(reg, "cryptoarb_redis_pending_writes", kind=kind) == 0
        assert sample(reg, "cryptoarb_redis_dropped_writes_total", kind=kind) == 0
    assert sample(reg, "cryptoarb_redis_up") == 0
    await r.config_resetstat()
    for i in range(100):
        w.put_ticker(
            "binance", "BTC/USDT", {"bid": 100.0 + i, "ask": 101.0 + i, "levels": [[1, 2]]}
        )
    w.put_ticker("kraken", "BTC/USDT", {"bid": 99.5})
    assert sample(reg, "cryptoarb_redis_pending_writes", kind="ticker") == 2
    assert await w.flush() is True
    assert w.up and sample(reg, "cryptoarb_redis_up") == 1
    assert sample(reg, "cryptoarb_redis_pending_writes", kind="ticker") == 0
    raw = await r.get("ticker:binance:BTC/USDT")
    assert orjson.loads(raw) == {"bid": 199.0, "ask": 200.0, "levels": [[1, 2]]}
    assert orjson.loads(await r.get("ticker:kraken:BTC/USDT")) == {"bid": 99.5}
    assert 25_000 < await r.pttl("ticker:binance:BTC/USDT") <= 30_000
    stats = await r.info("commandstats")
    assert stats["cmdstat_set"]["calls"] == 2  # one SET per key, not per put
    ev = stats["cmdstat_evalsha"]  # the first call may be a NOSCRIPT miss, then loaded
    assert ev["calls"] - ev.get("failed_calls", 0) - ev.get("rejected_calls", 0) == 1
    assert sample(reg, "cryptoarb_redis_write_duration_seconds_count") == 1
    assert await w.flush() is True  # nothing pending: no Redis call
    assert sample(reg, "cryptoarb_redis_write_duration_seconds_count") == 1


async def test_symbols_set_replaced(
    h: Harness,
    redis_server: RedisServer,
    r: aioredis.Redis,
) -> None:
    w, _ = h.writer(redis_server.url)
    w.put_symbols(["BTC/USDT", "ETH/USDT"])
    assert await w.flush()
    assert await smembers(r, "symbols") == {"BTC/USDT", "ETH/USDT"}
    w.put_symbols(["SOL/USDT"])
    w.put_symbols(["ETH/USDT", "SOL/USDT"])  # latest wins
    assert await w.flush()
    assert await smembers(r, "symbols") == {"ETH/USDT", "SOL/USDT"}
    w.put_symbols([])
    assert await w.flush()
    assert await r.exists("symbols") == 0


async def test_history_bounded_and_read_history(
    h: Harness,
    redis_server: RedisServer,
    r: aioredis.Redis,
) -> None:
    w, _ = h.writer(redis_server.url, history_maxlen=100)
    for i in range(1000):
        row = {"time": 1000.0 + i, "spread": i / 1e4, "liquidity": 5e5, "net_profit": None}
        w.put_history("BTC/USDT", row)
    w.put_history("ETH/USDT", {"time": 1.0, "spread": 0.5})
    assert await w.flush()
    n = await r.xlen("history:BTC/USDT")
    assert 100 <= n <= 300  # MAXLEN ~ trims whole nodes, never below maxlen
    last = await r.xrevrange("history:BTC/USDT", count=1)
    assert last[0][1] == {"time": "1999.0", "spread": "0.0999", "liquidity": "500000.0",
                          "net_profit": ""}  # fmt: skip
    rows = await w.reader.read_history("BTC/USDT", limit=5)
    assert [row["time"] for row in rows] == [1995.0, 1996.0, 1997.0, 1998.0, 1999.0]
    assert rows[-1]["net_profit"] is None and rows[-1]["spread"] == 0.0999
    # Stream IDs are "<ms>-<seq>": compare as numbers ("...-97" > "...-101" as strings).
    ids = [tuple(map(int, row["stream_id"].split("-"))) for row in rows]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert len(await w.reader.read_history("BTC/USDT")) == n
    assert await w.reader.read_history("BTC/USDT", since=time.time() + 60) == []
    assert await w.reader.read_history("XRP/USDT") == []
    assert (await w.reader.read_history("ETH/USDT"))[0]["spread"] == 0.5


async def test_log_order_fields_json_and_dedupe(
    h: Harness,
    redis_server: RedisServer,
    r: aioredis.Redis,
) -> None:
    w, _ = h.writer(redis_server.url)
    w.append_log({"kind": "window", "n": 0, "symbol": "BTC/USDT", "peak_roi": 0.0012,
                  "open": True, "close_reason": "stale", "extra": None})  # fmt: skip
    alert = {"kind": "alert", "n": 1, "alertname": "X", "labels": {"a": "b", "n": 1},
             "tags": ["x", 2]}  # fmt: skip
    w.append_log(alert, dedupe_key="fp1|2024|firing")
    w.append_log(alert, dedupe_key="fp1|2024|firing")  # same batch
    assert await w.flush()
    w.append_log(alert, dedupe_key="fp1|2024|firing")  # later batch
    w.append_log({**alert, "n": 2, "status": "resolved"}, dedupe_key="fp1|2024|resolved")
    for i in range(3, 50):
        w.append_log({"kind": "window", "n": i})
    assert await w.flush()
    entries = await r.xrange("windows")
    assert log_ids(entries) == list(range(50))
    assert entries[0][1] == {"kind": "window", "n": "0", "symbol": "BTC/USDT",
                             "peak_roi": "0.0012", "open": "true", "close_reason": "stale",
                             "extra": ""}  # fmt: skip
    assert orjson.loads(entries[1][1]["labels"]) == {"a": "b", "n": 1}
    assert orjson.loads(entries[1][1]["tags"]) == ["x", 2]
    assert await r.ttl("dedupe:fp1|2024|firing") > 6 * 86_400

    # readers: newest first, limit, kind, since; nested JSON decoded
    got = await w.reader.read_log(limit=3)
    assert [int(e["n"]) for e in got] == [49, 48, 47]
    alerts = await w.reader.read_log(kind="alert")
    assert [int(e["n"]) for e in alerts] == [2, 1]
    assert alerts[1]["labels"] == {"a": "b", "n": 1} and alerts[1]["tags"] == ["x", 2]
    assert alerts[0]["logged_at"] == pytest.approx(time.time(), abs=30)
    assert len(await w.reader.read_log(limit=1000)) == 50
    assert await w.reader.read_log(since=time.time() + 60) == []
    cut = got[1]["logged_at"]  # ms resolution: everything at/after that ms
    since = await w.reader.read_log(since=cut, limit=1000)
    assert since and all(e["logged_at"] >= cut for e in since) and int(since[0]["n"]) == 49
    assert await w.reader.read_log(limit=0) == []


async def test_redis_down_at_start_then_up(
    h: Harness,
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory(started=False)
    w, reg = h.writer(server.url, history_maxlen=1000)  # constructor must not fail
    h.run(w)
    w.put_ticker("binance", "BTC/USDT", {"bid": 1.0})
    w.put_symbols(["BTC/USDT"])
    w.put_history("BTC/USDT", {"time": 1.0})
    for i in range(20):
        w.append_log({"kind": "window", "n": i})
    await wait_until(lambda: (sample(reg, "cryptoarb_redis_write_errors_total") or 0) >= 2)
    assert not w.up and sample(reg, "cryptoarb_redis_up") == 0
    assert sample(reg, "cryptoarb_redis_pending_writes", kind="ticker") == 1
    assert sample(reg, "cryptoarb_redis_pending_writes", kind="history") == 1
    assert sample(reg, "cryptoarb_redis_pending_writes", kind="log") == 20
    assert await w.flush() is False
    with pytest.raises(StateUnavailable):
        await w.reader.read_log()

    server.start()
    await wait_until(
        lambda: w.up and sample(reg, "cryptoarb_redis_pending_writes", kind="log") == 0
    )
    assert sample(reg, "cryptoarb_redis_up") == 1
    r = aioredis.Redis.from_url(server.url, decode_responses=True)
    try:
        assert log_ids(await r.xrange("windows")) == list(range(20))
        assert await smembers(r, "symbols") == {"BTC/USDT"}
        assert await r.xlen("history:BTC/USDT") == 1
        assert orjson.loads(await r.get("ticker:binance:BTC/USDT")) == {"bid": 1.0}
    finally:
        await r.aclose()


async def test_ambiguous_failure_is_not_duplicated(
    h: Harness,
    redis_server: RedisServer,
    r: aioredis.Redis,
) -> None:
    """The server ran the batch but the reply was lost: the retry must not duplicate."""
    w, _ = h.writer(redis_server.url)
    real = w._script
    assert real is not None
    calls = 0

    async def lost_reply(*, keys: list[Any], args: list[Any]) -> Any:
        nonlocal calls
        calls += 1
        result = await real(keys=keys, args=args)
        if calls == 1:
            raise RedisConnectionError("connection lost after EXEC")
        return result

    w._script = lost_reply  # type: ignore[assignment]
    for i in range(10):
        w.append_log({"kind": "window", "n": i}, dedupe_key=f"k{i}" if i % 2 else None)
        w.put_history("BTC/USDT", {"time": float(i)})
    assert await w.flush() is False and not w.up
    w.append_log({"kind": "window", "n": 10})
    assert await w.flush() is True and w.up
    assert log_ids(await r.xrange("windows")) == list(range(11))
    assert await r.xlen("history:BTC/USDT") == 10


async def test_redis_killed_mid_run_exactly_once(
    h: Harness,
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory(extra_args=["--appendonly", "yes", "--appendfsync", "always"])
    w, reg = h.writer(server.url)
    h.run(w)
    n = 0

    async def produce(count: int) -> None:
        nonlocal n
        for _ in range(count):
            w.append_log({"kind": "window", "n": n, "payload": {"i": n}})
            n += 1
            await asyncio.sleep(0.002)

    await produce(100)
    await wait_until(lambda: w.up)
    server.kill()
    await produce(100)  # during the outage
    await wait_until(lambda: not w.up)
    server.start()
    await produce(100)
    server.stop(save=True)  # graceful stop + restart: data kept, writer reconnects
    await produce(50)
    server.start()
    await wait_until(
        lambda: w.up and sample(reg, "cryptoarb_redis_pending_writes", kind="log") == 0
    )
    r = aioredis.Redis.from_url(server.url, decode_responses=True)
    try:
        assert log_ids(await r.xrange("windows")) == list(range(n))
    finally:
        await r.aclose()
    assert sample(reg, "cryptoarb_redis_dropped_writes_total", kind="log") == 0


async def test_bound_drops_tickers_then_history_then_log(
    h: Harness,
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory(started=False)
    w, reg = h.writer(server.url, queue_max=10)

    def dropped(kind: str) -> float | None:
        return sample(reg, "cryptoarb_redis_dropped_writes_total", kind=kind)

    for i in range(4):
        w.put_ticker("ex", f"S{i}", {"i": i})
    for i in range(4):
        w.put_history("S", {"time": float(i)})
    for i in range(2):
        w.append_log({"kind": "window", "n": i})
    w.put_ticker("ex", "S0", {"i": 99})  # conflated: no growth, no drop
    assert (dropped("ticker"), dropped("history"), dropped("log")) == (0, 0, 0)
    for i in range(2, 6):  # full: each evicts one ticker first
        w.append_log({"kind": "window", "n": i})
    assert (dropped("ticker"), dropped("history"), dropped("log")) == (4, 0, 0)
    w.put_ticker("ex", "NEW", {"i": 0})  # no ticker left to evict: the new one yields
    assert dropped("ticker") == 5
    for i in range(6, 10):  # then history, oldest first
        w.append_log({"kind": "window", "n": i})
    assert (dropped("ticker"), dropped("history"), dropped("log")) == (5, 4, 0)
    w.put_history("S", {"time": 9.0})  # all log: history yields
    assert dropped("history") == 5
    for i in range(10, 13):  # all log: oldest log entries go last
        w.append_log({"kind": "window", "n": i})
    assert (dropped("ticker"), dropped("history"), dropped("log")) == (5, 5, 3)
    for kind, want in (("ticker", 0), ("history", 0), ("log", 10)):
        assert sample(reg, "cryptoarb_redis_pending_writes", kind=kind) == want

    server.start()
    assert await w.flush()
    r = aioredis.Redis.from_url(server.url, decode_responses=True)
    try:
        assert log_ids(await r.xrange("windows")) == list(range(3, 13))
    finally:
        await r.aclose()


async def test_close_flushes(
    h: Harness,
    redis_server: RedisServer,
    r: aioredis.Redis,
) -> None:
    w, reg = h.writer(redis_server.url, flush_interval=10.0)
    task = h.run(w)
    await wait_until(lambda: w.up)
    w.put_ticker("kraken", "ETH/USD", {"bid": 2.0})
    w.append_log({"kind": "window", "n": 0, "close_reason": "shutdown"})
    w.put_history("ETH/USD", {"time": 1.0})
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await w.close()
    assert log_ids(await r.xrange("windows")) == [0]
    assert await r.exists("ticker:kraken:ETH/USD", "history:ETH/USD") == 2
    assert not w.up and sample(reg, "cryptoarb_redis_up") == 0


async def test_disabled_writer(h: Harness) -> None:
    w, reg = h.writer(None)
    w.put_ticker("a", "b", {"x": 1})
    w.put_history("b", {"time": 1.0})
    w.append_log({"kind": "window"})
    assert sample(reg, "cryptoarb_redis_pending_writes", kind="log") == 0
    assert await w.flush() is True and not w.up
    with pytest.raises(StateUnavailable):
        await w.reader.read_history("b")
    task = h.run(w)
    await asyncio.sleep(0.01)
    assert not task.done()

"""StateWriter and StateReader against a real Redis Cluster (6 nodes) and a real Sentinel setup
(primary, replica, three sentinels): per-slot writes, WAIT durability, failover."""

# ruff: noqa: F811  (pytest fixtures are parameters named like the imported fixtures)

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from exporter.config import ConfigError, parse
from exporter.store.writer import StateWriter, slot_tags
from tests.support.redis_cluster import ClusterHarness, SentinelHarness
from tests.support.writers import Harness, h  # noqa: F401  (the `h` fixture)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SYMBOLS = [f"S{i}/USD" for i in range(12)]
MINIMAL: dict[str, Any] = {
    "exchanges": {"binance": {}, "kraken": {}},
    "symbols": {"BTC/USD": {"binance": "BTC/USDT", "kraken": "BTC/USD"}},
    "notionals": [1000],
    "quote_conversion": {"USDT": {"rate": 1.0}},
}


def problems(redis: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse({**MINIMAL, "redis": redis})
    return {p.path: p.message for p in info.value.problems}


def test_config_modes_and_sentinel_checks() -> None:
    c = parse(dict(MINIMAL))
    assert c.redis.mode == "standalone" and c.redis.wait_timeout == 1.0
    c = parse({**MINIMAL, "redis": {"mode": "cluster", "url": "redis://10.0.0.1:7000"}})
    assert c.redis.mode == "cluster"
    found = problems({"mode": "sentinel"})
    assert found == {
        "redis.sentinel.master_name": "required when redis.mode is sentinel",
        "redis.sentinel.addresses": (
            'required when redis.mode is sentinel: a list of "host:port" sentinels'
        ),
    }
    found = problems(
        {"mode": "sentinel", "sentinel": {"master_name": "m", "addresses": ["a:1", "b"]}}
    )
    assert list(found) == ["redis.sentinel.addresses.1"]
    assert "redis.mode" in problems({"mode": "ring"})
    c = parse(
        {
            **MINIMAL,
            "redis": {
                "mode": "sentinel",
                "sentinel": {"master_name": "m", "addresses": ["h:26379"]},
            },
        }
    )
    assert c.redis.sentinel.addresses == ["h:26379"]


def test_slot_tags_cover_every_slot() -> None:
    tags = slot_tags()
    assert len(tags) == 16384
    assert all(key_slot(f"writer:{{{t}}}:x".encode()) == s for s, t in enumerate(tags))


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterHarness]:
    with ClusterHarness() as c:
        yield c


def up(reg: CollectorRegistry) -> float | None:
    return reg.get_sample_value("cryptoarb_redis_up")


def log_ns(entries: list[tuple[str, dict[str, str]]]) -> list[int]:
    return [int(f["n"]) for _, f in entries]


async def test_cluster_tickers_history_log_round_trip(h: Harness, cluster: ClusterHarness) -> None:
    w, reg = h.writer(cluster.url, mode="cluster")
    for i, sym in enumerate(SYMBOLS):
        w.put_ticker("binance", sym, {"bid": float(i)})
        w.put_history(sym, {"time": float(i), "spread": 0.5})
    w.put_symbols(SYMBOLS)
    for i in range(20):
        w.append_log({"kind": "window", "n": i}, dedupe_key=f"fp{i % 10}")
    assert await w.flush() is True and w.up and up(reg) == 1
    # The keys spread over several slots (one script call each).
    assert len({key_slot(f"ticker:binance:{s}".encode()) for s in SYMBOLS}) > 1
    r = RedisCluster.from_url(cluster.url, decode_responses=True)
    try:
        for i, sym in enumerate(SYMBOLS):
            assert orjson.loads(await r.get(f"ticker:binance:{sym}")) == {"bid": float(i)}
            assert await r.xlen(f"history:{sym}") == 1
        assert await r.smembers("symbols") == set(SYMBOLS)
        assert log_ns(await r.xrange("windows")) == list(range(10))  # de-duplicated
        # Internal keys sit in the slot of what they guard.
        tag = slot_tags()[key_slot(b"windows")]
        assert await r.exists(f"dedupe:{{{tag}}}:fp3") == 1
        guard = f"writer:{{{tag}}}:{w._id}"
        assert await r.hget(guard, "log") is not None
    finally:
        await r.aclose()
    # The reader works over the cluster client too.
    rows = await w.reader.read_history(SYMBOLS[3])
    assert [row["spread"] for row in rows] == [0.5]
    entries = await w.reader.read_log(limit=5)
    assert [e["n"] for e in entries] == ["9", "8", "7", "6", "5"]


async def test_cluster_retried_batch_is_not_duplicated(h: Harness, cluster: ClusterHarness) -> None:
    """The server ran the calls but the reply was lost: the retry skips what was applied."""
    w, _ = h.writer(cluster.url, mode="cluster")
    real = w._pipelined
    calls = 0

    async def lost_reply(batch: Any) -> Any:
        nonlocal calls
        calls += 1
        result = await real(batch)
        if calls == 1:
            raise ConnectionError("reply lost")
        return result

    w._pipelined = lost_reply  # type: ignore[method-assign]
    w._script = lost_reply
    for i in range(10):
        w.put_history(SYMBOLS[i % 3], {"time": float(100 + i)})
        w.append_log({"kind": "window", "n": 1000 + i})
    assert await w.flush() is False
    assert await w.flush() is True
    r = RedisCluster.from_url(cluster.url, decode_responses=True)
    try:
        ns = [n for n in log_ns(await r.xrange("windows")) if n >= 1000]
        assert ns == list(range(1000, 1010))
        rows = [await r.xrange(f"history:{s}", min="-", max="+") for s in SYMBOLS[:3]]
        times = sorted(float(f["time"]) for rs in rows for _, f in rs if float(f["time"]) >= 100)
        assert times == [float(100 + i) for i in range(10)]
    finally:
        await r.aclose()


class Feeder:
    """Appends a numbered window entry (and a ticker) every ``period`` s; samples
    ``cryptoarb_redis_up`` alongside, with monotonic times."""

    def __init__(self, w: StateWriter, reg: CollectorRegistry, period: float = 0.01) -> None:
        self.w, self.reg, self.period = w, reg, period
        self.n = 0
        self.ups: list[tuple[float, float | None]] = []
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            self.w.append_log({"kind": "window", "n": self.n})
            self.w.put_ticker("binance", SYMBOLS[self.n % len(SYMBOLS)], {"bid": float(self.n)})
            self.n += 1
            self.ups.append((time.monotonic(), up(self.reg)))
            await asyncio.sleep(self.period)

    async def stop(self) -> None:
        self._stop.set()
        await self._task

    def first(self, value: float, after: float) -> float | None:
        return next((t for t, v in self.ups if t >= after and v == value), None)


async def wait_until(cond: Any, limit: float, what: str) -> float:
    deadline = time.monotonic() + limit
    while True:
        res = cond()
        if asyncio.iscoroutine(res):
            res = await res
        if res:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit} s waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.mark.timeout(90)
async def test_cluster_master_killed_failover_exactly_once(h: Harness) -> None:
    """The master of the `windows` slot is SIGKILLed while entries are in flight: the replica
    is promoted, writes resume, and every entry is in the log exactly once; `up` shows the
    gap. WAIT needs a replica again, so the killed node is restarted (it rejoins as replica)."""
    with ClusterHarness() as c:
        victim = c.master_for_key("windows")
        seed = next(n for n in c.nodes if n is not victim)
        w, reg = h.writer(seed.url, mode="cluster", wait_timeout=0.5)
        h.run(w)
        feeder = Feeder(w, reg)
        await wait_until(lambda: feeder.n > 50 and not w._log, 10, "first entries acked")
        t_kill = time.monotonic()
        victim.kill()
        t_down = await wait_until(lambda: up(reg) == 0, 10, "up=0 after the kill")

        def promoted() -> bool:
            try:
                return c.master_for_key("windows").running
            except LookupError:  # the old master is marked failed, no new one yet
                return False

        await wait_until(promoted, 20, "the replica's promotion")
        t_promoted = time.monotonic()
        probe = RedisCluster.from_url(seed.url, decode_responses=True)
        try:
            before = await probe.xlen("windows")
            # Writes resume on the promoted replica (not yet acknowledged: no replica to WAIT).
            await wait_until(lambda: _grew(probe, before), 10, "writes on the new master")
            t_resumed = time.monotonic()
            victim.start()  # rejoins as the new master's replica
            t_up = await wait_until(lambda: up(reg) == 1 and w.up, 30, "up=1 again")
            await asyncio.sleep(0.3)
            await feeder.stop()
            await wait_until(lambda: not w._log, 10, "the log drained")
            assert await w.flush() is True
            ns = log_ns(await probe.xrange("windows"))
        finally:
            await probe.aclose()
        assert ns == list(range(feeder.n)), "lost or duplicated window entries"
        assert feeder.first(0, t_kill) is not None and feeder.first(1, t_up) is not None
        print(
            f"\nfailover: up=0 after {t_down - t_kill:.2f} s, promotion seen after "
            f"{t_promoted - t_kill:.2f} s, writes resumed after {t_resumed - t_kill:.2f} s, "
            f"up=1 after {t_up - t_kill:.2f} s (old master restarted at "
            f"{t_resumed - t_kill:.2f} s); {feeder.n} entries exactly once"
        )


async def _grew(client: RedisCluster, before: int) -> bool:
    try:
        return int(await client.xlen("windows")) > before
    except Exception:
        await client.aclose()  # stale slot map: refresh on the next call
        return False


@pytest.mark.timeout(90)
async def test_sentinel_writer_follows_promotion(h: Harness) -> None:
    with SentinelHarness() as s:
        w, reg = h.writer(
            "redis://127.0.0.1:1/0",  # sentinel mode: only password and db come from the url
            mode="sentinel",
            sentinel_master=SentinelHarness.MASTER,
            sentinel_addresses=s.addresses,
            wait_timeout=0.5,
        )
        h.run(w)
        for i in range(10):
            w.append_log({"kind": "window", "n": i})
        await wait_until(lambda: not w._log and w.up, 10, "first entries acked")
        old = s.primary.port
        t_kill = time.monotonic()
        s.primary.kill()
        for i in range(10, 30):
            w.append_log({"kind": "window", "n": i})
            await asyncio.sleep(0.02)
        t_down = await wait_until(lambda: up(reg) == 0, 10, "up=0")
        await wait_until(lambda: s.master_port() != old, 30, "the sentinels' promotion")
        t_promoted = time.monotonic()
        new = aioredis.Redis(host="127.0.0.1", port=s.master_port(), decode_responses=True)
        try:
            # Entries written after the kill read back from the new primary.
            await wait_until(lambda: _stream_ns(new, 30), 15, "the entries on the new primary")
            t_written = time.monotonic()
            # Back as the new primary's replica (what the sentinels would also do, ~10 s later),
            # so WAIT 1 can confirm the entries.
            s.primary.extra_args += ["--replicaof", "127.0.0.1", str(s.master_port())]
            s.primary.start()
            t_up = await wait_until(lambda: not w._log and w.up and up(reg) == 1, 30, "up=1")
            assert log_ns(await new.xrange("windows")) == list(range(30))
        finally:
            await new.aclose()
        print(
            f"\nsentinel failover: up=0 after {t_down - t_kill:.2f} s, promotion after "
            f"{t_promoted - t_kill:.2f} s, entries on the new primary after "
            f"{t_written - t_kill:.2f} s, acknowledged (WAIT) after {t_up - t_kill:.2f} s"
        )


async def _stream_ns(client: aioredis.Redis, n: int) -> bool:
    return log_ns(await client.xrange("windows")) == list(range(n))


async def test_cluster_shard_summaries_are_written_and_read_across_nodes(
    h: Harness, cluster: ClusterHarness
) -> None:
    from exporter.store.summary import read_summaries, summary_key

    w, _ = h.writer(cluster.url, mode="cluster")
    shards = range(6)  # keys in several slots, on several primaries
    assert len({key_slot(summary_key(i).encode()) for i in shards}) > 1
    for i in shards:
        w.put_value(summary_key(i), {"shard": i, "count": 6, "published_at": 1.0 + i})
    assert await w.flush() is True
    found = await read_summaries(w.client)
    assert {i: s["shard"] for i, s in found.items()} == {i: i for i in shards}

"""Shard assignment: stable across processes, a partition of the symbols, minimal movement on
resize (rendezvous hashing), applied in config (``shard.index: auto`` from the hostname)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zlib
from typing import Any

import pytest

from exporter.app import Exporter
from exporter.config import ConfigError, parse
from exporter.sharding import apply_shard, hostname_ordinal, select, shard_of, weight

SYMBOLS = [f"S{i}/USD" for i in range(500)] + ["BTC/USD", "ETH/USD", "SOL/USD"]


def test_assignment_is_pinned() -> None:
    # blake2b (8 bytes) of "symbol|index": these values must never change between releases.
    digest = hashlib.blake2b(b"BTC/USD|0", digest_size=8).digest()
    assert weight("BTC/USD", 0) == int.from_bytes(digest, "big")
    assert [shard_of(s, 2) for s in ("BTC/USD", "ETH/USD", "SOL/USD")] == [0, 0, 1]
    assert [shard_of(s, 3) for s in ("BTC/USD", "ETH/USD", "SOL/USD")] == [0, 2, 1]
    assert shard_of("BTC/USD", 1) == 0


RESIZE_SYMBOLS = [f"SYM{i}/USD" for i in range(1000)]


@pytest.mark.parametrize("n", range(2, 9))
def test_growing_by_one_shard_moves_about_one_in_n_plus_one(n: int) -> None:
    before = {s: shard_of(s, n) for s in RESIZE_SYMBOLS}
    after = {s: shard_of(s, n + 1) for s in RESIZE_SYMBOLS}
    moved = [s for s in RESIZE_SYMBOLS if before[s] != after[s]]
    # only to the new shard, never between the old ones
    assert all(after[s] == n for s in moved)
    fraction = len(moved) / len(RESIZE_SYMBOLS)
    assert abs(fraction - 1 / (n + 1)) < 0.04, (n, fraction)
    # shrinking back moves exactly the same symbols
    assert {s for s in RESIZE_SYMBOLS if shard_of(s, n) != after[s]} == set(moved)


def test_the_old_modulo_scheme_moved_most_symbols() -> None:
    # why the switch matters (and why switching itself moves most symbols once)
    crc = {s: zlib.crc32(s.encode()) for s in RESIZE_SYMBOLS}
    moved = sum(crc[s] % 4 != crc[s] % 5 for s in RESIZE_SYMBOLS) / len(RESIZE_SYMBOLS)
    assert moved > 0.7


def test_assignment_is_the_same_in_another_process() -> None:
    code = (
        "from exporter.sharding import shard_of; "
        "print([shard_of(f'S{i}/USD', 5) for i in range(50)])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"PYTHONHASHSEED": "123"},
    ).stdout  # fmt: skip
    assert out.strip() == str([shard_of(f"S{i}/USD", 5) for i in range(50)])


@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_shards_partition_the_symbols(count: int) -> None:
    mapping = {s: {"binance": s + "T", "kraken": s} for s in SYMBOLS}
    parts = [select(mapping, i, count) for i in range(count)]
    assert sum(len(p) for p in parts) == len(mapping)
    merged: dict[str, Any] = {}
    for p in parts:
        assert not set(p) & set(merged)
        merged.update(p)
    assert merged == mapping  # every exchange of a symbol in the same shard
    if count > 1:  # roughly balanced on many symbols
        assert min(len(p) for p in parts) > len(mapping) / count * 0.7


def test_invalid_index() -> None:
    with pytest.raises(ValueError):
        select({}, 2, 2)
    with pytest.raises(ValueError):
        shard_of("BTC/USD", 0)


def config(**over: Any) -> Any:
    data: dict[str, Any] = {
        "exchanges": {"binance": {}, "kraken": {}},
        "symbols": {s: {"binance": s + "T", "kraken": s} for s in SYMBOLS[:40]},
        "quote_conversion": {"USDT": {"book": {"exchange": "kraken", "market": "USDT/USD"}}},
        "notionals": [1000],
        "redis": {"url": None},
    }
    data.update(over)
    return parse(data, environ={})


def test_apply_shard_keeps_config_otherwise() -> None:
    full = config()
    assert apply_shard(full) is full
    halves = [apply_shard(config(shard={"index": i, "count": 2})) for i in range(2)]
    assert set(halves[0].symbols) | set(halves[1].symbols) == set(full.symbols)
    assert not set(halves[0].symbols) & set(halves[1].symbols)
    assert halves[0].quote_conversion == full.quote_conversion
    assert halves[0].notionals == full.notionals


def test_shard_index_must_be_below_count() -> None:
    with pytest.raises(ConfigError, match=r"shard\.index"):
        config(shard={"index": 2, "count": 2})


def test_exporter_watches_its_shard_only() -> None:
    cfg = config(shard={"index": 1, "count": 3})
    ex = Exporter(cfg)
    mine = {s for s in cfg.symbols if shard_of(s, 3) == 1}
    assert set(ex.state.symbols) == mine
    watched = {st.symbol for st in ex.feed_stats.values()} - {"USDT/USD"}
    assert watched == mine
    assert ("kraken", "USDT/USD") in ex.feed_stats  # the conversion book, in every shard


def test_hostname_ordinal() -> None:
    assert hostname_ordinal("arb-exporter-2") == 2
    assert hostname_ordinal("arb-exporter-10\n") == 10
    assert hostname_ordinal("arb-exporter") is None
    assert hostname_ordinal("laptop") is None


def test_shard_index_auto_from_hostname() -> None:
    data: dict[str, Any] = {
        "exchanges": {"binance": {}, "kraken": {}},
        "symbols": {"BTC/USD": {"binance": "BTC/USDT", "kraken": "BTC/USD"}},
        "quote_conversion": {"USDT": {"book": {"exchange": "kraken", "market": "USDT/USD"}}},
        "notionals": [1000],
        "shard": {"index": "auto", "count": 3},
    }
    assert parse(data, environ={"HOSTNAME": "arb-exporter-2"}).shard.index == 2
    env = {"HOSTNAME": "arb-exporter-1", "CRYPTOARB_SHARD_INDEX": "auto"}
    assert parse({**data, "shard": {"count": 3}}, environ=env).shard.index == 1
    with pytest.raises(ConfigError, match=r"shard\.index: `auto` needs a hostname ending in"):
        parse(data, environ={"HOSTNAME": "laptop"})
    with pytest.raises(ConfigError, match=r"shard\.index: must be < shard\.count"):
        parse(data, environ={"HOSTNAME": "arb-exporter-3"})


class _DownRedis:
    calls = 0

    async def eval(self, *args: Any) -> int:
        self.calls += 1
        raise ConnectionError("redis down")


class _Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_shared_budget_falls_back_to_one_nth_of_the_rate_and_counts_it() -> None:
    from prometheus_client import CollectorRegistry

    from exporter.feeds.shared_budget import RETRY_AFTER, SharedBudget, fallback_counter

    registry = CollectorRegistry()
    client, clock = _DownRedis(), _Clock()
    budget = SharedBudget(client, "binance", 60.0, 4, 2, fallback_counter(registry), clock)
    # Redis down: a local bucket of burst 4/2 = 2 and 60/2 = 30 per minute (0.5/s)
    assert await budget.try_take() == 0 and budget.on_fallback
    assert await budget.try_take() == 0
    assert await budget.try_take() == pytest.approx(2.0)
    clock.now += 2.0
    assert await budget.try_take() == 0
    assert client.calls == 1  # Redis not retried while on the fallback
    fallbacks = registry.get_sample_value(
        "cryptoarb_rest_budget_fallbacks_total", {"exchange": "binance"}
    )
    assert fallbacks == 3
    clock.now += RETRY_AFTER
    assert await budget.try_take() == pytest.approx(0.0)  # retried, down again: fallback
    assert client.calls == 2


def test_shared_rate_limit_config() -> None:
    cfg = config(feeds={"shared_rate_limit": {"snapshots_per_minute": 30}})
    assert cfg.feeds.shared_rate_limit is not None
    assert cfg.feeds.shared_rate_limit.burst == 4
    assert config().feeds.shared_rate_limit is None
    with pytest.raises(ConfigError, match=r"feeds\.shared_rate_limit\.snapshots_per_minute"):
        config(feeds={"shared_rate_limit": {"snapshots_per_minute": 0}})

"""Shard assignment: stable across processes, a partition of the symbols, applied in config."""

from __future__ import annotations

import subprocess
import sys
import zlib
from typing import Any

import pytest

from exporter.app import Exporter
from exporter.config import ConfigError, parse
from exporter.sharding import apply_shard, select, shard_of

SYMBOLS = [f"S{i}/USD" for i in range(500)] + ["BTC/USD", "ETH/USD", "SOL/USD"]


def test_assignment_is_pinned() -> None:
    # CRC32 of the UTF-8 symbol: these values must never change between releases.
    assert zlib.crc32(b"BTC/USD") == 0xB4B50B7B
    assert [shard_of(s, 2) for s in ("BTC/USD", "ETH/USD", "SOL/USD")] == [1, 0, 0]
    assert [shard_of(s, 3) for s in ("BTC/USD", "ETH/USD", "SOL/USD")] == [0, 0, 0]
    assert shard_of("BTC/USD", 1) == 0


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

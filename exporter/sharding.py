"""Sharding by canonical symbol: run N exporter processes, each on 1/N of the symbols.

``shard: {index, count}`` in the config selects the canonical symbols whose stable hash falls
on ``index``; every exchange of a symbol stays in the same process (its opportunities need
both books). The hash is CRC32 of the UTF-8 symbol, so the assignment is the same in every
process, Python version and restart (Python's ``hash()`` is salted per process). Label sets
do not change, so Prometheus scrapes all shards and PromQL aggregates across them.
Conversion books (``quote_conversion.<Q>.book``) are watched by every shard that needs them.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import TypeVar

from exporter.config import Config

V = TypeVar("V")


def shard_of(symbol: str, count: int) -> int:
    """The shard (0..count-1) that owns canonical ``symbol``."""
    if count < 1:
        raise ValueError("shard count must be >= 1")
    return zlib.crc32(symbol.encode("utf-8")) % count


def select(symbols: Mapping[str, V], index: int, count: int) -> dict[str, V]:
    """The entries of ``symbols`` owned by shard ``index`` of ``count`` (order kept)."""
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} not in 0..{count - 1}")
    return {s: v for s, v in symbols.items() if shard_of(s, count) == index}


def apply_shard(config: Config) -> Config:
    """``config`` restricted to its shard's symbols (the same object when count is 1)."""
    shard = config.shard
    if shard.count == 1:
        return config
    return config.model_copy(update={"symbols": select(config.symbols, shard.index, shard.count)})

"""Sharding by canonical symbol: run N exporter processes, each on about 1/N of the symbols.

``shard: {index, count}`` in the config selects the canonical symbols this process owns; every
exchange of a symbol stays in the same process (its opportunities need both books). The
assignment is rendezvous (highest-random-weight) hashing: symbol ``s`` belongs to the shard
``i`` in ``0..count-1`` with the highest ``blake2b(f"{s}|{i}")``. It is the same in every
process, Python version and restart (Python's ``hash()`` is salted per process), and going
from N to N+1 shards moves only the symbols the new shard wins, about 1/(N+1) of them (the
modulo scheme used before moved about N/(N+1)). Label sets do not change, so Prometheus
scrapes all shards and PromQL aggregates across them. Conversion books
(``quote_conversion.<Q>.book``) are watched by every shard that needs them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TypeVar

from exporter.config import Config, hostname_ordinal

V = TypeVar("V")

__all__ = ["apply_shard", "hostname_ordinal", "select", "shard_of", "weight"]


def weight(symbol: str, index: int) -> int:
    """The stable rendezvous weight of ``symbol`` on shard ``index`` (64-bit blake2b)."""
    digest = hashlib.blake2b(f"{symbol}|{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def shard_of(symbol: str, count: int) -> int:
    """The shard (0..count-1) that owns canonical ``symbol``: the highest weight wins."""
    if count < 1:
        raise ValueError("shard count must be >= 1")
    if count == 1:
        return 0
    return max(range(count), key=lambda i: (weight(symbol, i), -i))


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

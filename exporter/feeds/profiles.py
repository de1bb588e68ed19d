"""Watch profiles: one table of what each supported venue's ccxt.pro ``watch_order_book``
does with a depth, what it costs and what the exporter verifies on top.

Every fact below was read in ccxt 4.5.90's source (``ccxt/pro/<id>.py`` and the REST class
it extends) and is described in docs/exchanges.md. The table is pure data (no ccxt import):
configuration checks use it before any client exists.

- ``feeds.depth`` is the number of levels the analytics copy. The limit handed to ccxt is
  :func:`ccxt_limit`: the smallest supported value at or above ``feeds.depth`` (else the
  largest), or ``exchanges.<id>.depth`` when set (checked by :func:`depth_problem`).
- ``ccxt_options`` are exporter defaults merged *under* ``exchanges.<id>.ccxt`` (the user's
  mapping wins key by key, see :func:`client_config`).
- An exchange outside the table runs on ccxt's defaults (no limit passed unless
  ``exchanges.<id>.depth`` is set) and is logged as unverified at start.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Binance spot REST /api/v3/depth: any limit 1..5000 (ccxt passes it through,
# ccxt/binance.py fetch_order_book: "default 100, max 5000").
BINANCE_MAX_LIMIT = 5000


@dataclass(frozen=True)
class Checksum:
    kind: str  # "crc32"
    levels: int  # levels per side that enter it
    verified_by: str  # "ccxt" or "exporter" (the integrity hook)


@dataclass(frozen=True)
class WatchProfile:
    exchange: str  # ccxt id
    name: str  # display name
    # Limits ccxt accepts and that work on public data, ascending. ``depth_range`` instead
    # for venues that take any value in a range (Binance REST snapshot).
    depths: tuple[int, ...] = ()
    depth_range: tuple[int, int] | None = None
    # How a ccxt limit selects the exchange channel (for logs, messages and docs).
    channel_of: Callable[[int | None], str] = field(default=lambda _limit: "")
    # Limits ccxt accepts that cannot work on public data, with the reason.
    refused: Mapping[int, str] = field(default_factory=dict)
    # The venue streams its whole book whatever the limit (Coinbase level2).
    limit_ignored: bool = False
    checksum: Checksum | None = None
    # What guarantees that no update was missed, and who checks it.
    sequence: str = ""
    # What one (re)subscription costs: the depth snapshot.
    snapshot: str = ""
    # Subscriptions the exporter puts on one connection (one ccxt client per market), and
    # the cap ccxt itself knows of.
    subscriptions_per_connection: int = 1
    connection_cap: str = ""
    # Exporter defaults for the ccxt constructor's ``options`` and ``has`` (merged under the
    # user's ``exchanges.<id>.ccxt``).
    ccxt_options: Mapping[str, Any] = field(default_factory=dict)
    ccxt_has: Mapping[str, bool] = field(default_factory=dict)

    def allowed_text(self) -> str:
        """The depth values allowed on public data, as shown in messages and docs."""
        if self.depth_range is not None:
            return f"{self.depth_range[0]}-{self.depth_range[1]}"
        return _runs(self.depths, self.channel_of)

    def accepts(self, limit: int) -> bool:
        if self.depth_range is not None:
            return self.depth_range[0] <= limit <= self.depth_range[1]
        return limit in self.depths


def _runs(values: tuple[int, ...], key: Callable[[int], str]) -> str:
    """Consecutive values with the same ``key`` (channel) as one run: OKX (1, 2, 3, 4, 5,
    400) -> "1, 2-5, 400" (1 is bbo-tbt, 2-5 books5)."""
    out: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while (
            j + 1 < len(values)
            and values[j + 1] == values[j] + 1
            and key(values[j + 1]) == key(values[i])
        ):
            j += 1
        out.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ", ".join(out)


def _binance_channel(limit: int | None) -> str:
    return f"<symbol>@depth@100ms diff stream + REST /api/v3/depth?limit={limit or 1000}"


def _kraken_channel(limit: int | None) -> str:
    return f"WS v2 book, depth {limit or 10}"


def _bybit_channel(limit: int | None) -> str:
    return f"orderbook.{limit or 50}.<symbol>"


def _okx_channel(limit: int | None) -> str:
    # ccxt/pro/okx.py watch_order_book_for_symbols
    if limit == 1:
        return "bbo-tbt"
    if limit is not None and 1 < limit <= 5:
        return "books5"
    if limit == 50:
        return "books50-l2-tbt"
    return "books"  # 400, and any other value: the option default


def _coinbase_channel(_limit: int | None) -> str:
    return "level2 (+ heartbeats)"


_SPOT_ONLY = {"fetchMarkets": {"types": ["spot"]}}

PROFILES: Mapping[str, WatchProfile] = {
    "binance": WatchProfile(
        exchange="binance",
        name="Binance",
        depth_range=(1, BINANCE_MAX_LIMIT),
        channel_of=_binance_channel,
        checksum=None,
        sequence="diff stream U/u continuity and the REST snapshot's lastUpdateId (ccxt)",
        snapshot="REST GET /api/v3/depth per (re)subscription, request weight 5/25/50/250 "
        "for limit <=100/<=500/<=1000/<=5000",
        connection_cap="ccxt: 200 subscriptions per stream (options.subscriptionLimitByStream)",
        ccxt_options={**_SPOT_ONLY, "fetchMargins": False},
    ),
    "kraken": WatchProfile(
        exchange="kraken",
        name="Kraken",
        depths=(10, 25, 100, 500, 1000),
        channel_of=_kraken_channel,
        checksum=Checksum("crc32", 10, "exporter"),
        sequence="none in the feed: the checksum stands in for it",
        snapshot="WS snapshot in band (the subscribe answer)",
    ),
    "bybit": WatchProfile(
        exchange="bybit",
        name="Bybit",
        depths=(1, 50, 200, 1000),
        channel_of=_bybit_channel,
        checksum=None,
        sequence="delta u == previous u + 1 per symbol; a snapshot (or u == 1) resets "
        "(exporter; ccxt ignores u and seq)",
        snapshot="WS snapshot in band (the subscribe answer)",
        ccxt_options=_SPOT_ONLY,
    ),
    "okx": WatchProfile(
        exchange="okx",
        name="OKX",
        depths=(1, 2, 3, 4, 5, 400),
        channel_of=_okx_channel,
        refused={
            50: "selects books50-l2-tbt, which needs VIP4 credentials (ccxt raises "
            "AuthenticationError without them)",
        },
        checksum=Checksum("crc32", 25, "exporter"),
        sequence="seqId/prevSeqId (ccxt, InvalidNonce)",
        snapshot="WS snapshot in band (the subscribe answer)",
        ccxt_options=_SPOT_ONLY,
    ),
    "coinbase": WatchProfile(
        exchange="coinbase",
        name="Coinbase",
        channel_of=_coinbase_channel,
        limit_ignored=True,
        checksum=None,
        sequence="sequence_num + 1 per connection, every channel (exporter; ccxt ignores it)",
        snapshot="WS snapshot in band (the subscribe answer)",
        # load_markets would also fetch /v2/currencies, /v2/currencies/crypto and
        # /v2/exchange-rates, which the exporter never reads; the FUTURE product list is
        # fetched whatever the options (its errors are ignored by ccxt).
        ccxt_has={"fetchCurrencies": False},
    ),
}


def profile(exchange_id: str) -> WatchProfile | None:
    return PROFILES.get(exchange_id)


def ccxt_limit(exchange_id: str, depth: int, override: int | None = None) -> int | None:
    """The limit passed to ``watch_order_book``: ``override`` if given; None (ccxt's default)
    for a venue outside the table or one that ignores it; else the smallest supported value
    at or above ``depth`` (else the largest)."""
    if override is not None:
        return override
    p = PROFILES.get(exchange_id)
    if p is None or p.limit_ignored:
        return None
    if p.depth_range is not None:
        return min(max(depth, p.depth_range[0]), p.depth_range[1])
    return next((d for d in p.depths if d >= depth), p.depths[-1])


def depth_problem(exchange_id: str, depth: int) -> str | None:
    """Why ``exchanges.<id>.depth: depth`` cannot work on public data (None: it can, or the
    venue is not in the table and ccxt decides)."""
    p = PROFILES.get(exchange_id)
    if p is None:
        return None
    if p.limit_ignored:
        return (
            f"{p.name} {p.channel_of(depth)} streams the whole book and ignores the depth; "
            "remove this key"
        )
    if p.accepts(depth):
        return None
    why = p.refused.get(depth)
    if why is None:
        why = f"is not a depth ccxt {p.name} subscribes with ({p.channel_of(depth)})"
    return f"{p.name} depth {depth} {why}; allowed on public data: {p.allowed_text()}"


def describe_limit(exchange_id: str, depth: int, limit: int | None) -> str:
    """One start-up log line: copied levels, the ccxt limit and the channel it selects."""
    p = PROFILES.get(exchange_id)
    if p is None:
        shown = "ccxt's default" if limit is None else str(limit)
        return (
            f"{exchange_id}: not a verified venue (exporter/feeds/profiles.py): runs on "
            f"ccxt's defaults (limit {shown}), no integrity check beyond ccxt's own; "
            f"{depth} levels copied"
        )
    shown = "none (ignored by the venue)" if limit is None else str(limit)
    return f"{exchange_id}: {depth} levels copied; ccxt limit {shown}: {p.channel_of(limit)}"


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base`` as ccxt's constructor merges: dicts key by key, anything else
    replaced."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def client_config(exchange_id: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The ccxt constructor config: the profile's ``options`` and ``has`` defaults under
    ``config``."""
    p = PROFILES.get(exchange_id)
    defaults: dict[str, Any] = {}
    if p is not None and p.ccxt_options:
        defaults["options"] = copy.deepcopy(dict(p.ccxt_options))
    if p is not None and p.ccxt_has:
        defaults["has"] = dict(p.ccxt_has)
    return _deep_merge(defaults, config) if defaults else dict(config)

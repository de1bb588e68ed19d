"""Tardis ``incremental_book_L2`` CSV: names, symbols, the markets sidecar and a streaming reader.

Columns ``exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount``; timestamps
are integer microseconds since the epoch (``timestamp`` the exchange's, possibly empty,
``local_timestamp`` the receive time), ``amount`` 0 deletes the level, and snapshot rows that
follow update rows replace the book. Files are gzip (or plain CSV), one per exchange, symbol
and UTC day. The reader merges several files by ``local_timestamp`` in constant memory.
"""

from __future__ import annotations

import datetime
import gzip
import heapq
import io
import json
import logging
import math
import os
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.config import Config
from exporter.model import FeedKey, Level, MarketInfo

log = logging.getLogger(__name__)

# ccxt id -> Tardis exchange id (Tardis names Bybit's spot venue and OKX after their APIs).
TARDIS_EXCHANGES: dict[str, str] = {
    "binance": "binance",
    "kraken": "kraken",
    "okx": "okex",
    "bybit": "bybit-spot",
    "coinbase": "coinbase",
}
COLUMNS: tuple[str, ...] = (
    "exchange",
    "symbol",
    "timestamp",
    "local_timestamp",
    "is_snapshot",
    "side",
    "price",
    "amount",
)
HEADER = ",".join(COLUMNS)
DATA_MARKER = "_incremental_book_L2_"
# Kraken's websocket names (what Tardis records) use its legacy asset codes.
_KRAKEN_ASSETS = {"BTC": "XBT", "DOGE": "XDG"}
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
_MALFORMED_LOGGED = 20  # per read_updates call; every one is counted


def tardis_exchange(config: Config, exchange: str) -> str:
    """The exchange's id in Tardis files: ``exchanges.<id>.tardis_exchange``, else the table."""
    ex = config.exchanges.get(exchange)
    if ex is not None and ex.tardis_exchange:
        return ex.tardis_exchange
    return TARDIS_EXCHANGES.get(exchange, exchange)


def default_symbol(exchange: str, market: str) -> str:
    """Tardis's spelling of a ccxt market on a venue (no config overrides)."""
    base, _, quote = market.partition("/")
    quote = quote.split(":", 1)[0]  # a settle currency is not part of a spot symbol
    base, quote = base.upper(), quote.upper()
    if exchange == "kraken":
        return f"{_KRAKEN_ASSETS.get(base, base)}/{_KRAKEN_ASSETS.get(quote, quote)}"
    if exchange in ("okx", "coinbase"):
        return f"{base}-{quote}"
    return f"{base}{quote}"


def tardis_symbol(config: Config, exchange: str, market: str) -> str:
    """The market's symbol in Tardis files: ``exchanges.<id>.markets.<market>.tardis_symbol``,
    else :func:`default_symbol`."""
    ex = config.exchanges.get(exchange)
    override = ex.markets.get(market) if ex is not None else None
    if override is not None and override.tardis_symbol:
        return override.tardis_symbol
    return default_symbol(exchange, market)


def watched_books(config: Config) -> list[FeedKey]:
    """Every watched book (symbol markets, then conversion books), without repeats."""
    keys: dict[FeedKey, None] = {}
    for mapping in config.symbols.values():
        for ex, market in mapping.items():
            keys[FeedKey((ex, market))] = None
    for ref in config.conversion_books():
        keys[FeedKey((ref.exchange, ref.market))] = None
    return list(keys)


def market_index(config: Config) -> dict[tuple[str, str], FeedKey]:
    """(Tardis exchange, Tardis symbol) -> (ccxt exchange, ccxt market) for every watched book."""
    return {
        (tardis_exchange(config, ex), tardis_symbol(config, ex, market)): FeedKey((ex, market))
        for ex, market in watched_books(config)
    }


def file_name(tardis_exchange: str, day: datetime.date, tardis_symbol: str) -> str:
    symbol = tardis_symbol.replace("/", "-").replace(":", "-")
    return f"{tardis_exchange}{DATA_MARKER}{day.isoformat()}_{symbol}.csv.gz"


def sidecar_name(tardis_exchange: str, day: datetime.date) -> str:
    return f"{tardis_exchange}_markets_{day.isoformat()}.json"


def parse_file_name(name: str) -> tuple[str, datetime.date, str] | None:
    """(Tardis exchange, day, file symbol) of a data file name, None for any other name."""
    exchange, marker, rest = name.partition(DATA_MARKER)
    if not marker or not exchange or len(rest) < 12 or rest[10] != "_":
        return None
    try:
        day = datetime.date.fromisoformat(rest[:10])
    except ValueError:
        return None
    symbol = rest[11:]
    for suffix in (".csv.gz", ".csv"):
        if symbol.endswith(suffix):
            return exchange, day, symbol[: -len(suffix)]
    return None


def write_sidecar(
    directory: Path,
    config: Config,
    exchange: str,
    day: datetime.date,
    markets: Mapping[str, MarketInfo],
) -> Path:
    """Write (atomically) what replay cannot fetch offline: each market's trading terms."""
    tex = tardis_exchange(config, exchange)
    body = {
        "exchange": exchange,
        "tardis_exchange": tex,
        "date": day.isoformat(),
        "markets": {
            market: {
                "tardis_symbol": tardis_symbol(config, exchange, market),
                "taker_fee": info.taker_fee,
                "min_cost": info.min_cost,
                "min_amount": info.min_amount,
                "price_precision": info.price_precision,
                "amount_precision": info.amount_precision,
            }
            for market, info in markets.items()
        },
    }
    path = directory / sidecar_name(tex, day)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def find_sidecar(data_file: Path) -> Path | None:
    """The sidecar of the data file's exchange and day in the same directory, if any."""
    parsed = parse_file_name(data_file.name)
    if parsed is None:
        return None
    path = data_file.with_name(sidecar_name(parsed[0], parsed[1]))
    return path if path.is_file() else None


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


def load_sidecar(path: Path) -> tuple[str, dict[str, MarketInfo]]:
    """(ccxt exchange id, {ccxt market: MarketInfo as ccxt listed it}). Raises ValueError on
    a file that is not a sidecar."""
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        markets = {
            str(market): MarketInfo(
                taker_fee=float(m["taker_fee"]),
                min_cost=float(m["min_cost"]),
                min_amount=float(m["min_amount"]),
                price_precision=_optional(m.get("price_precision")),
                amount_precision=_optional(m.get("amount_precision")),
            )
            for market, m in body["markets"].items()
        }
        return str(body["exchange"]), markets
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a markets sidecar: {err!r}") from err


# -- reader ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BookUpdate:
    exchange: str  # Tardis exchange id as in the file
    symbol: str  # Tardis symbol as in the file
    timestamp_us: int  # exchange time; local_timestamp_us when the row left it empty
    local_timestamp_us: int
    is_snapshot: bool  # True: the book is replaced by these levels
    bids: tuple[tuple[float, float], ...]  # (price, amount) in file order; amount 0 deletes
    asks: tuple[tuple[float, float], ...]
    source: str  # "file:line" of the group's first row (for logs)


@dataclass
class ReadStats:
    rows: int = 0  # well-formed rows read
    updates: int = 0  # BookUpdate groups yielded
    malformed: int = 0  # rows counted and skipped (logged with file:line, rate-limited)
    truncated: int = 0  # files whose gzip stream broke (read up to the break)


class TardisFormatError(ValueError):
    """A file that is not an ``incremental_book_L2`` CSV (wrong or missing header)."""


# One file's rows of one update, as merged: (local_us, file index, line, exchange, symbol,
# ts_us, is_snapshot, bids, asks). Ordering by the first three keeps file order on ties.
_Group = tuple[int, int, int, str, str, int, bool, list[Level], list[Level]]


class _Malformed:
    """Counts malformed rows and logs the first few with their file:line."""

    def __init__(self, stats: ReadStats) -> None:
        self.stats = stats
        self.logged = 0

    def __call__(self, where: str, why: str, line: str) -> None:
        self.stats.malformed += 1
        if self.logged < _MALFORMED_LOGGED:
            self.logged += 1
            log.warning("%s: malformed row skipped (%s): %.200r", where, why, line)
            if self.logged == _MALFORMED_LOGGED:
                log.warning("further malformed rows are counted, not logged")


def _lines(path: Path, stats: ReadStats) -> Iterator[str]:
    """The file's complete lines (without line ends). A gzip stream that breaks (a process
    killed while writing) ends the file there: the partial last line is dropped."""
    raw = path.open("rb")
    try:
        magic = raw.read(2)
        raw.seek(0)
        src: io.BufferedIOBase = (
            gzip.GzipFile(fileobj=raw, mode="rb") if magic == _GZIP_MAGIC else raw
        )
        tail = b""
        while True:
            try:
                # read1: one block at a time, so a break loses no data read before it
                chunk = src.read1(_CHUNK)
            except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as err:
                stats.truncated += 1
                log.warning("%s: compressed stream broken (%s); read up to the break", path, err)
                return
            if not chunk:
                break
            data = tail + chunk
            cut = data.rfind(b"\n") + 1
            tail = data[cut:]
            if cut:
                yield from data[:cut].decode("utf-8", "replace").splitlines()
        if tail:
            yield tail.decode("utf-8", "replace").rstrip("\r")
    finally:
        raw.close()


def _file_groups(path: Path, index: int, stats: ReadStats, bad: _Malformed) -> Iterator[_Group]:
    """The file's updates: consecutive well-formed rows with the same (exchange, symbol,
    local_timestamp, is_snapshot). Grouped here, per file, so that the merge across files
    and its comparisons run once per update rather than once per row."""
    name = path.name
    lines = _lines(path, stats)
    header = next(lines, None)
    if header is None:
        return  # empty (or broken before the header): nothing recorded
    if header.strip() != HEADER:
        raise TardisFormatError(f"{path}: expected header {HEADER!r}, got {header[:200]!r}")
    group: _Group | None = None
    bids: list[Level] = []
    asks: list[Level] = []
    key_ex = key_sym = key_lts = key_snap = ""
    lineno = 1
    for line in lines:
        lineno += 1
        parts = line.split(",")
        if len(parts) != 8:
            if line.strip():
                bad(f"{name}:{lineno}", f"{len(parts)} fields", line)
            continue
        exchange, symbol, ts, lts, snap, side, price_s, amount_s = parts
        try:
            price = float(price_s)
            amount = float(amount_s)
        except ValueError:
            bad(f"{name}:{lineno}", "not a number", line)
            continue
        if not (price > 0 and amount >= 0 and math.isfinite(price + amount)):
            bad(f"{name}:{lineno}", "price or amount out of range", line)
            continue
        if side == "bid":
            is_bid = True
        elif side == "ask":
            is_bid = False
        else:
            bad(f"{name}:{lineno}", "side", line)
            continue
        if not (lts == key_lts and snap == key_snap and symbol == key_sym and exchange == key_ex):
            try:
                local_us = int(lts)
                ts_us = int(ts) if ts else local_us
            except ValueError:
                bad(f"{name}:{lineno}", "not a number", line)
                continue
            if snap != "true" and snap != "false":
                bad(f"{name}:{lineno}", "is_snapshot", line)
                continue
            if group is not None:
                yield group
            bids, asks = [], []
            group = (local_us, index, lineno, exchange, symbol, ts_us, snap == "true", bids, asks)
            key_ex, key_sym, key_lts, key_snap = exchange, symbol, lts, snap
        stats.rows += 1
        (bids if is_bid else asks).append((price, amount))
    if group is not None:
        yield group


def read_updates(paths: Sequence[Path], stats: ReadStats) -> Iterator[BookUpdate]:
    """Book updates of all files merged by ``local_timestamp`` (ties: files in argument order,
    then line order). Consecutive rows with the same (exchange, symbol, local_timestamp) and
    is_snapshot form one update. Streaming: one update per file in memory at a time."""
    bad = _Malformed(stats)
    names = [p.name for p in paths]
    files = [_file_groups(p, i, stats, bad) for i, p in enumerate(paths)]
    merged = files[0] if len(files) == 1 else heapq.merge(*files)
    pending: _Group | None = None
    for group in merged:
        if (
            pending is not None
            and group[0] == pending[0]
            and group[6] == pending[6]
            and group[4] == pending[4]
            and group[3] == pending[3]
        ):
            # The same update continues in the next file (equal local timestamps).
            pending[7].extend(group[7])
            pending[8].extend(group[8])
            continue
        if pending is not None:
            stats.updates += 1
            yield _update(pending, names)
        pending = group
    if pending is not None:
        stats.updates += 1
        yield _update(pending, names)


def _update(group: _Group, names: list[str]) -> BookUpdate:
    local_us, index, lineno, exchange, symbol, ts_us, is_snapshot, bids, asks = group
    return BookUpdate(
        exchange=exchange,
        symbol=symbol,
        timestamp_us=ts_us,
        local_timestamp_us=local_us,
        is_snapshot=is_snapshot,
        bids=tuple(bids),
        asks=tuple(asks),
        source=f"{names[index]}:{lineno}",
    )

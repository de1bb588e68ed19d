"""Round-trip helpers for recorded books: an independent rebuild of books from Tardis rows,
CSV fixtures, book snapshots and a recorder config without a simulator.

    rebuilt = Rebuilt()
    for update in read_updates(paths, ReadStats()):
        rebuilt.apply(update)
    assert rebuilt.book("binance", "BTCUSDT") == (snap.bids, snap.asks)
"""

from __future__ import annotations

import contextlib
import gzip
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from exporter.app import Exporter
from exporter.config import Config, parse
from exporter.model import BookSnapshot, Level
from exporter.replay.tardis import COLUMNS, BookUpdate
from tests.support.exporter import running_exporter

HEADER = ",".join(COLUMNS)

Book = tuple[tuple[Level, ...], tuple[Level, ...]]


class Rebuilt:
    """Books rebuilt by Tardis's rules, written apart from the code under test: a snapshot
    group replaces the book, an update sets a level's amount, amount 0 deletes it."""

    def __init__(self) -> None:
        self.sides: dict[tuple[str, str], tuple[dict[float, float], dict[float, float]]] = {}

    def apply(self, update: BookUpdate) -> None:
        key = (update.exchange, update.symbol)
        if update.is_snapshot or key not in self.sides:
            self.sides[key] = ({}, {})
        bids, asks = self.sides[key]
        for levels, side in ((update.bids, bids), (update.asks, asks)):
            for price, amount in levels:
                if amount == 0:
                    side.pop(price, None)
                else:
                    side[price] = amount

    def book(self, exchange: str, symbol: str) -> Book:
        bids, asks = self.sides[(exchange, symbol)]
        return (
            tuple(sorted(bids.items(), reverse=True)),
            tuple(sorted(asks.items())),
        )


def write_csv(path: Path, rows: Iterable[Sequence[Any]], header: str = HEADER) -> Path:
    """A Tardis CSV fixture; gzip when ``path`` ends with ``.gz``."""
    text = header + "\n" + "".join(",".join(str(v) for v in row) + "\n" for row in rows)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def snapshot(
    bids: Sequence[Level],
    asks: Sequence[Level],
    received_at: float,
    exchange: str = "binance",
    market: str = "BTC/USDT",
    symbol: str = "BTC/USD",
    exchange_ts: float | None = None,
) -> BookSnapshot:
    """A BookSnapshot as the feeds build it (bids high->low, asks low->high)."""
    return BookSnapshot(
        exchange=exchange,
        symbol=symbol,
        market=market,
        bids=tuple(sorted(bids, reverse=True)),
        asks=tuple(sorted(asks)),
        exchange_ts=exchange_ts,
        received_at=received_at,
        received_mono=received_at,
    )


def offline_config(**sections: Any) -> Config:
    """Binance and Kraken books with a USDT/USD conversion book (no simulator needed)."""
    data: dict[str, Any] = {
        "exchanges": {"binance": {}, "kraken": {}},
        "symbols": {"BTC/USD": {"binance": "BTC/USDT", "kraken": "BTC/USD"}},
        "quote_conversion": {"USDT": {"book": {"exchange": "kraken", "market": "USDT/USD"}}},
        "notionals": [1000],
        "redis": {"url": None},
    }
    data.update(sections)
    return parse(data, "test", environ={})


@contextlib.asynccontextmanager
async def recording_exporter(
    config: Config, record_dir: Path, tap: Callable[[BookSnapshot], None] | None = None
) -> AsyncIterator[Exporter]:
    """An in-process exporter recording to ``record_dir`` (``run --record`` wiring); ``tap``
    sees every book handed to the recorder, from the first."""

    def install_tap(exporter: Exporter) -> None:
        recorder = exporter.recorder
        assert recorder is not None
        if tap is not None:
            record = recorder.on_book

            def tapped(snap: BookSnapshot) -> None:
                tap(snap)
                record(snap)

            recorder.on_book = tapped  # type: ignore[method-assign]

    async with running_exporter(config, record_dir=record_dir, setup=install_tap) as exporter:
        yield exporter


def stop_once_recording(
    proc: subprocess.Popen[bytes],
    recorded: Callable[[], int],
    files: int,
    *,
    timeout: float,
    then: float,
    sig: signal.Signals,
    poll: float = 0.2,
) -> bytes:
    """Wait until ``recorded()`` counts ``files`` data files (the process still running),
    let it record ``then`` seconds more, stop it with ``sig`` and return its output; the
    process is killed if anything fails on the way."""
    try:
        deadline = time.monotonic() + timeout
        while recorded() < files:
            assert time.monotonic() < deadline and proc.poll() is None, "no recording"
            time.sleep(poll)
        time.sleep(then)
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=30)
        return output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

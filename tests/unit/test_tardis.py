"""Tardis incremental_book_L2 files: names and symbols, the reader, the markets sidecar, and
the recorder (diffs that rebuild the copied books, midnight rotation, bounds, write errors)."""

from __future__ import annotations

import asyncio
import datetime
import errno
import gzip
import logging
import os
import random
import shutil
import threading
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from exporter.model import BookSnapshot, MarketInfo
from exporter.replay import tardis
from exporter.replay.recorder import Recorder
from exporter.replay.tardis import (
    ReadStats,
    TardisFormatError,
    file_name,
    find_sidecar,
    load_sidecar,
    market_index,
    read_updates,
    sidecar_name,
    tardis_exchange,
    tardis_symbol,
    write_sidecar,
)
from tests.support.recording import HEADER, Rebuilt, offline_config, snapshot, write_csv

DAY = 86_400.0
T0 = 1_764_806_400.0  # 2025-12-04 00:00:00 UTC


def five_venue_config(**overrides: Any) -> Any:
    exchanges: dict[str, Any] = {ex: {} for ex in ("binance", "kraken", "okx", "bybit", "coinbase")}
    for ex, value in overrides.items():
        exchanges[ex] = value
    return offline_config(
        exchanges=exchanges,
        symbols={
            "BTC/USD": {
                "binance": "BTC/USDT", "kraken": "BTC/USD", "okx": "BTC/USDT",
                "bybit": "BTC/USDT", "coinbase": "BTC/USD",
            },
            "ETH/USD": {"kraken": "ETH/USD", "coinbase": "ETH/USD"},
        },
    )  # fmt: skip


# -- names and symbols ----------------------------------------------------------------------


def test_symbols_and_exchanges_of_the_five_venues() -> None:
    config = five_venue_config()
    expected = {
        ("binance", "BTC/USDT"): ("binance", "BTCUSDT"),
        ("kraken", "BTC/USD"): ("kraken", "XBT/USD"),
        ("kraken", "ETH/USD"): ("kraken", "ETH/USD"),
        ("kraken", "USDT/USD"): ("kraken", "USDT/USD"),
        ("okx", "BTC/USDT"): ("okex", "BTC-USDT"),
        ("bybit", "BTC/USDT"): ("bybit-spot", "BTCUSDT"),
        ("coinbase", "BTC/USD"): ("coinbase", "BTC-USD"),
        ("coinbase", "ETH/USD"): ("coinbase", "ETH-USD"),
    }
    for (ex, market), (tex, tsym) in expected.items():
        assert (tardis_exchange(config, ex), tardis_symbol(config, ex, market)) == (tex, tsym)
    # The other way: every watched book (the conversion book included) by its Tardis names.
    assert market_index(config) == {names: key for key, names in expected.items()}


def test_other_exchanges_write_base_and_quote_upper_case() -> None:
    assert tardis.default_symbol("bitstamp", "btc/usd") == "BTCUSD"
    assert tardis.default_symbol("binance", "BTC/USDT:USDT") == "BTCUSDT"


def test_config_overrides_both_ways() -> None:
    config = five_venue_config(
        bybit={
            "tardis_exchange": "bybit",
            "markets": {"BTC/USDT": {"tardis_symbol": "BTCUSDT-SPOT"}},
        },
        kraken={"markets": {"BTC/USD": {"tardis_symbol": "BTC/USD"}}},
    )
    assert tardis_exchange(config, "bybit") == "bybit"
    assert tardis_symbol(config, "bybit", "BTC/USDT") == "BTCUSDT-SPOT"
    assert tardis_symbol(config, "kraken", "BTC/USD") == "BTC/USD"
    index = market_index(config)
    assert index[("bybit", "BTCUSDT-SPOT")] == ("bybit", "BTC/USDT")
    assert index[("kraken", "BTC/USD")] == ("kraken", "BTC/USD")
    assert ("kraken", "XBT/USD") not in index


def test_file_and_sidecar_names() -> None:
    day = datetime.date(2025, 3, 9)
    assert file_name("kraken", day, "XBT/USD") == (
        "kraken_incremental_book_L2_2025-03-09_XBT-USD.csv.gz"
    )
    assert file_name("binance", day, "BTCUSDT") == (
        "binance_incremental_book_L2_2025-03-09_BTCUSDT.csv.gz"
    )
    assert file_name("deribit", day, "BTC:PERP/X") == (
        "deribit_incremental_book_L2_2025-03-09_BTC-PERP-X.csv.gz"
    )
    assert sidecar_name("bybit-spot", day) == "bybit-spot_markets_2025-03-09.json"
    assert tardis.parse_file_name(file_name("bybit-spot", day, "BTCUSDT")) == (
        "bybit-spot", day, "BTCUSDT",
    )  # fmt: skip
    assert tardis.parse_file_name("bybit-spot_markets_2025-03-09.json") is None


# -- sidecar ----------------------------------------------------------------------------------


def test_sidecar_round_trip(tmp_path: Path) -> None:
    config = five_venue_config()
    day = datetime.date(2025, 3, 9)
    markets = {
        "BTC/USD": MarketInfo(0.0026, 0.5, 0.0001, price_precision=0.1, amount_precision=1e-8),
        "USDT/USD": MarketInfo(0.002, 5.0, 5.0),
    }
    path = write_sidecar(tmp_path, config, "kraken", day, markets)
    assert path.name == "kraken_markets_2025-03-09.json"
    assert load_sidecar(path) == ("kraken", markets)
    data = write_csv(tmp_path / file_name("kraken", day, "XBT/USD"), [])
    assert find_sidecar(data) == path
    assert find_sidecar(tmp_path / file_name("kraken", day + datetime.timedelta(1), "X")) is None
    assert find_sidecar(tmp_path / file_name("okex", day, "BTC-USDT")) is None
    (tmp_path / "broken.json").write_text('{"exchange": "kraken"}')
    with pytest.raises(ValueError, match="not a markets sidecar"):
        load_sidecar(tmp_path / "broken.json")


# -- reader -----------------------------------------------------------------------------------


def read(paths: list[Path]) -> tuple[list[tardis.BookUpdate], ReadStats]:
    stats = ReadStats()
    return list(read_updates(paths, stats)), stats


def test_reader_gzip_and_plain_merge_and_group(tmp_path: Path) -> None:
    a = write_csv(tmp_path / "a.csv.gz", [
        ("binance", "BTCUSDT", 90, 100, "true", "bid", 10.0, 1.0),
        ("binance", "BTCUSDT", 90, 100, "true", "ask", 11.0, 2.0),
        ("binance", "BTCUSDT", 95, 100, "true", "bid", 9.5, 1.5),  # same group: same local ts
        ("binance", "BTCUSDT", 110, 200, "false", "bid", 10.0, 0),
        ("binance", "BTCUSDT", 120, 300, "false", "ask", 11.5, 3.0),
    ])  # fmt: skip
    b = write_csv(tmp_path / "b.csv", [
        ("kraken", "XBT/USD", "", 100, "true", "ask", 11.1, 1.0),
        ("kraken", "XBT/USD", 150, 200, "false", "ask", 11.1, 2.0),
        ("kraken", "XBT/USD", 150, 250, "false", "bid", 9.0, 2.0),
    ])  # fmt: skip
    assert gzip.decompress(a.read_bytes()).startswith(HEADER.encode())
    updates, stats = read([a, b])
    order = [(u.exchange, u.local_timestamp_us, u.is_snapshot) for u in updates]
    # Equal local timestamps keep the argument order of the files (a before b).
    assert order == [
        ("binance", 100, True), ("kraken", 100, True), ("binance", 200, False),
        ("kraken", 200, False), ("kraken", 250, False), ("binance", 300, False),
    ]  # fmt: skip
    first = updates[0]
    assert first.bids == ((10.0, 1.0), (9.5, 1.5)) and first.asks == ((11.0, 2.0),)
    assert first.timestamp_us == 90 and first.source == "a.csv.gz:2"
    assert updates[1].timestamp_us == 100  # empty timestamp: the local timestamp
    assert updates[2].bids == ((10.0, 0.0),) and updates[2].source == "a.csv.gz:5"
    assert (stats.rows, stats.updates, stats.malformed, stats.truncated) == (8, 6, 0, 0)
    # Reversed arguments: ties go the other way.
    assert [u.exchange for u in read([b, a])[0]][:2] == ["kraken", "binance"]


def test_reader_snapshot_after_updates_is_its_own_update(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "s.csv", [
        ("okex", "BTC-USDT", 1, 10, "true", "bid", 100.0, 1.0),
        ("okex", "BTC-USDT", 2, 20, "false", "bid", 101.0, 1.0),
        ("okex", "BTC-USDT", 3, 20, "true", "bid", 99.0, 4.0),  # resync at the same instant
        ("okex", "BTC-USDT", 3, 20, "true", "ask", 102.0, 4.0),
    ])  # fmt: skip
    updates, _stats = read([path])
    assert [(u.is_snapshot, u.local_timestamp_us) for u in updates] == [
        (True, 10), (False, 20), (True, 20),
    ]  # fmt: skip
    rebuilt = Rebuilt()
    for u in updates:
        rebuilt.apply(u)
    assert rebuilt.book("okex", "BTC-USDT") == (((99.0, 4.0),), ((102.0, 4.0),))


def test_reader_header_is_required(tmp_path: Path) -> None:
    no_snapshot_column = "exchange,symbol,timestamp,local_timestamp,side,price,amount"
    row = ("binance", "BTCUSDT", 1, 1, "true", "bid", 1, 1)
    path = write_csv(tmp_path / "x.csv", [row], header=no_snapshot_column)
    with pytest.raises(TardisFormatError, match="expected header"):
        read([path])
    (tmp_path / "empty.csv.gz").write_bytes(b"")
    assert read([tmp_path / "empty.csv.gz"])[0] == []


def test_reader_counts_and_logs_malformed_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_csv(tmp_path / "m.csv.gz", [
        ("binance", "BTCUSDT", 1, 10, "true", "bid", 100.0, 1.0),
        ("binance", "BTCUSDT", 1, 11, "maybe", "bid", 100.0, 1.0),
        ("binance", "BTCUSDT", 1, 12, "false", "middle", 100.0, 1.0),
        ("binance", "BTCUSDT", 1, "soon", "false", "bid", 100.0, 1.0),
        ("binance", "BTCUSDT", 1, 13, "false", "bid", "nan", 1.0),
        ("binance", "BTCUSDT", 1, 14, "false", "bid", 100.0, -1),
        ("binance", "BTCUSDT", 1, 15, "false"),
        ("binance", "BTCUSDT", 1, 16, "false", "ask", 101.0, 2.0),
    ])  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="exporter.replay.tardis"):
        updates, stats = read([path])
    assert (stats.rows, stats.malformed) == (2, 6)
    assert [u.local_timestamp_us for u in updates] == [10, 16]
    for line in range(3, 9):
        assert f"m.csv.gz:{line}:" in caplog.text


def test_reader_reads_a_truncated_gzip_up_to_the_break(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [("binance", "BTCUSDT", i, 1000 + i, "false", "bid", 100.0 + i, 1.0)
            for i in range(5000)]  # fmt: skip
    whole = write_csv(tmp_path / "whole.csv.gz", rows)
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="exporter.replay.tardis"):
        from_cut, stats = read([cut])
    assert stats.truncated == 1 and stats.malformed == 0
    assert "cut.csv.gz" in caplog.text and "broken" in caplog.text
    assert 0 < len(from_cut) == stats.rows < len(rows)
    # Every row read from the cut file is a whole row of the original, in order.
    assert [u.bids for u in from_cut] == [((100.0 + i, 1.0),) for i in range(len(from_cut))]
    assert read([whole])[1].rows == len(rows)


# -- recorder ---------------------------------------------------------------------------------


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def data_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*_incremental_book_L2_*.csv.gz"))


def listing(directory: Path, pattern: str) -> list[str]:
    return sorted(p.name for p in directory.glob(pattern))


def make_recorder(directory: Path, **kwargs: Any) -> tuple[Recorder, CollectorRegistry]:
    registry = CollectorRegistry()
    config = kwargs.pop("config", None) or offline_config()
    return Recorder(config, directory, registry, **kwargs), registry


async def record(recorder: Recorder, books: list[BookSnapshot | str]) -> None:
    """Feed books (a str is a status change of that book's feed), then close."""
    for item in books:
        if isinstance(item, str):
            recorder.on_status("binance", "BTC/USDT")
        else:
            recorder.on_book(item)
    await recorder.close()


prices = st.sampled_from([100.0 + i * 0.5 for i in range(12)])
amounts = st.one_of(st.sampled_from([1.0, 2.0]), st.floats(1e-8, 1e6, allow_nan=False))
sides = st.dictionaries(prices, amounts, max_size=8)
steps = st.lists(
    st.one_of(st.tuples(sides, sides, st.booleans()), st.just("status")), min_size=1, max_size=25
)


@settings(max_examples=60, deadline=None)
@given(steps)
def test_recorded_rows_rebuild_every_copied_book(tmp_path_factory: Any, plan: list[Any]) -> None:
    directory = tmp_path_factory.mktemp("rec")
    books: list[BookSnapshot | str] = []
    for i, step in enumerate(plan):
        if step == "status":
            books.append(step)
            continue
        bids, asks, with_ts = step
        t = T0 + 10 + i * 0.001
        books.append(snapshot(list(bids.items()), list(asks.items()), t,
                              exchange_ts=t - 0.002 if with_ts else None))  # fmt: skip
    recorder, _registry = make_recorder(directory)
    asyncio.run(record(recorder, books))
    snaps = [b for b in books if isinstance(b, BookSnapshot)]
    expected = {round(s.received_at * 1e6): (s.bids, s.asks) for s in snaps}
    rebuilt = Rebuilt()
    seen = 0
    for update in read_updates(data_files(directory), ReadStats()):
        rebuilt.apply(update)
        assert (update.exchange, update.symbol) == ("binance", "BTCUSDT")
        assert rebuilt.book("binance", "BTCUSDT") == expected[update.local_timestamp_us]
        seen += 1
    # Every instant whose copy differs from the previous one (or follows a status change,
    # or is the first non-empty one) appears in the file.
    assert seen <= len(snaps)
    if any(s.bids or s.asks for s in snaps):
        assert rebuilt.book("binance", "BTCUSDT") == (snaps[-1].bids, snaps[-1].asks)


async def test_snapshot_at_start_and_after_each_status_change(tmp_path: Path) -> None:
    recorder, registry = make_recorder(tmp_path)
    b1 = snapshot([(100.0, 1.0), (99.0, 2.0)], [(101.0, 1.0)], T0 + 1.0000006, exchange_ts=T0 + 1)
    b2 = snapshot([(100.0, 1.5), (98.0, 2.0)], [(101.0, 1.0)], T0 + 2)
    b3 = snapshot([(100.0, 1.5)], [(101.0, 1.0)], T0 + 3)
    await record(recorder, [b1, b2, "status", b3])
    (path,) = data_files(tmp_path)
    assert path.name == "binance_incremental_book_L2_2025-12-04_BTCUSDT.csv.gz"
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    assert lines[0] == HEADER
    rows = [line.split(",") for line in lines[1:]]
    t0, t1, t2, t3 = (str(round(t * 1e6)) for t in (T0 + 1, T0 + 1.0000006, T0 + 2, T0 + 3))
    assert t1 == str(int(T0) * 10**6 + 1_000_001)  # rounded, not truncated
    assert rows[0] == ["binance", "BTCUSDT", t0, t1, "true", "bid", "100.0", "1.0"]
    snaps = [(r[3], r[4]) for r in rows]
    assert snaps == [(t1, "true")] * 3 + [(t2, "false")] * 3 + [(t3, "true")] * 2
    # b1 -> b2: 99 left the copied top (deleted), 98 is new, 100 changed; asks unchanged.
    assert sorted((r[5], r[6], r[7]) for r in rows[3:6]) == [
        ("bid", "100.0", "1.5"), ("bid", "98.0", "2.0"), ("bid", "99.0", "0"),
    ]  # fmt: skip
    assert rows[3][2] == ""  # no exchange time
    assert sample(registry, "cryptoarb_record_rows_total", exchange="binance",
                  market="BTC/USDT") == 8  # fmt: skip
    assert sample(registry, "cryptoarb_record_snapshots_total", exchange="binance",
                  market="BTC/USDT") == 2  # fmt: skip
    assert sample(registry, "cryptoarb_record_bytes_total") == path.stat().st_size
    assert sample(registry, "cryptoarb_record_up") == 0  # closed


async def test_rotation_at_midnight_utc(tmp_path: Path) -> None:
    recorder, _registry = make_recorder(tmp_path)
    recorder.on_markets("binance", {"BTC/USDT": MarketInfo(0.001, 5.0, 1e-5, 0.01, 1e-5)})
    before = snapshot([(100.0, 1.0)], [(101.0, 1.0)], T0 + DAY - 0.5)
    after = snapshot([(100.0, 2.0)], [(101.0, 1.0)], T0 + DAY + 0.5)
    recorder.on_book(before)
    await recorder.flush()
    recorder.on_book(after)
    await recorder.flush()
    first, second = data_files(tmp_path)
    assert "2025-12-04" in first.name and "2025-12-05" in second.name
    # The first day's file was closed at rotation: a complete gzip stream.
    assert gzip.decompress(first.read_bytes()).decode().count("\n") == 3
    await recorder.close()
    updates = list(read_updates([second], ReadStats()))
    assert [u.is_snapshot for u in updates] == [True]
    assert updates[0].bids == ((100.0, 2.0),) and updates[0].asks == ((101.0, 1.0),)
    assert listing(tmp_path, "*.json") == [
        "binance_markets_2025-12-04.json", "binance_markets_2025-12-05.json",
    ]  # fmt: skip


def fake_file(directory: Path, name: str, size: int) -> Path:
    path = directory / name
    path.write_bytes(os.urandom(size))
    return path


async def test_retention_then_size_cap_delete_oldest_first(tmp_path: Path) -> None:
    config = offline_config(record={"max_bytes": 1024 * 1024, "retention_days": 3})
    day = datetime.date(2025, 12, 4)

    def old(days: int, symbol: str = "ETHUSDT") -> str:
        return file_name("binance", day - datetime.timedelta(days), symbol)

    fake_file(tmp_path, old(5), 1000)  # past retention
    fake_file(tmp_path, sidecar_name("binance", day - datetime.timedelta(5)), 100)
    oldest = fake_file(tmp_path, old(2), 400_000)
    middle = fake_file(tmp_path, old(1, "SOLUSDT"), 400_000)
    newest = fake_file(tmp_path, old(1), 300_000)
    other = fake_file(tmp_path, "notes.txt", 2_000_000)  # not the recorder's: never deleted
    recorder, registry = make_recorder(tmp_path, config=config)
    recorder.on_book(snapshot([(100.0, 1.0)], [(101.0, 1.0)], T0 + 60))
    await recorder.flush()
    assert not (tmp_path / old(5)).exists()
    assert not (tmp_path / sidecar_name("binance", day - datetime.timedelta(5))).exists()
    assert sample(registry, "cryptoarb_record_deleted_files_total", reason="retention") == 2
    # 1.1 MB of older days over a 1 MiB cap: the oldest day goes first, then no more.
    assert not oldest.exists() and middle.exists() and newest.exists() and other.exists()
    assert sample(registry, "cryptoarb_record_deleted_files_total", reason="max_bytes") == 1
    assert sample(registry, "cryptoarb_record_up") == 1
    on_disk = sum(p.stat().st_size for p in data_files(tmp_path)) + sum(
        (tmp_path / name).stat().st_size for name in listing(tmp_path, "*.json")
    )
    assert sample(registry, "cryptoarb_record_disk_usage_bytes") == on_disk
    await recorder.close()


async def test_current_day_over_the_cap_stops_recording(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = offline_config(record={"max_bytes": 1024 * 1024})
    fake_file(tmp_path, file_name("binance", datetime.date(2025, 12, 4), "SOLUSDT"), 1_100_000)
    recorder, registry = make_recorder(tmp_path, config=config)
    with caplog.at_level(logging.ERROR, logger="exporter.replay.recorder"):
        recorder.on_book(snapshot([(100.0, 1.0)], [(101.0, 1.0)], T0 + 60))
        await recorder.flush()
    assert recorder.stopped
    assert sample(registry, "cryptoarb_record_errors_total", reason="size_limit") == 1
    assert sample(registry, "cryptoarb_record_up") == 0
    assert "size_limit" in caplog.text
    (ours,) = [p for p in data_files(tmp_path) if "BTCUSDT" in p.name]
    recorder.on_book(snapshot([(100.0, 2.0)], [(101.0, 1.0)], T0 + 61))  # no error, no write
    await recorder.close()
    stats = ReadStats()
    assert len(list(read_updates([ours], stats))) == 1  # the rows before the stop, no more
    assert stats.truncated == 0  # closed cleanly (gzip trailer)


class FailingFile:
    """A file object whose writes fail like a full disk (or another I/O error)."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.closed = False

    def write(self, data: bytes) -> int:
        raise OSError(self.code, os.strerror(self.code))

    def flush(self) -> None:
        pass

    def tell(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(("code", "reason"), [(errno.ENOSPC, "disk_full"), (errno.EIO, "io_error")])
async def test_write_error_stops_recording_and_books_keep_flowing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, code: int, reason: str
) -> None:
    opened: list[FailingFile] = []

    def opener(path: Path) -> BinaryIO:
        f = FailingFile(code)
        opened.append(f)
        return f  # type: ignore[return-value]

    recorder, registry = make_recorder(tmp_path, opener=opener)
    with caplog.at_level(logging.ERROR, logger="exporter.replay.recorder"):
        recorder.on_book(snapshot([(100.0, 1.0)], [(101.0, 1.0)], T0 + 60))
        await recorder.flush()
    assert recorder.stopped
    assert sample(registry, "cryptoarb_record_errors_total", reason=reason) == 1
    assert sample(registry, "cryptoarb_record_up") == 0
    assert f"stopped ({reason})" in caplog.text and "exporting goes on" in caplog.text
    for i in range(3):  # the feed's calls keep working and cost nothing more
        recorder.on_book(snapshot([(100.0 + i, 1.0)], [(102.0, 1.0)], T0 + 61 + i))
        recorder.on_status("binance", "BTC/USDT")
    await recorder.close()
    assert sample(registry, "cryptoarb_record_errors_total", reason=reason) == 1
    assert all(f.closed for f in opened)


async def test_restart_after_a_hard_kill_appends_after_the_complete_rows(tmp_path: Path) -> None:
    first, _registry = make_recorder(tmp_path)
    book = [(100.0, 1.0)]
    for i in range(200):
        book = [(100.0 + random.Random(i).randrange(5), 1.0 + i)]
        first.on_book(snapshot(book, [(110.0, 1.0)], T0 + 60 + i))
        if i % 50 == 0:
            await first.flush()
    await first.flush()
    (path,) = data_files(tmp_path)
    # A hard kill: the file as flushed, without the gzip trailer (or a cut inside a flush).
    killed = tmp_path / "killed"
    shutil.copy(path, killed)
    await first.close()
    path.write_bytes(killed.read_bytes()[:-7])
    killed.unlink()
    stats = ReadStats()
    before = list(read_updates([path], stats))
    assert stats.truncated == 1 and before
    second, _registry = make_recorder(tmp_path)
    later = snapshot([(99.0, 3.0)], [(111.0, 1.0)], T0 + 600)
    await record(second, [later])
    stats = ReadStats()
    after = list(read_updates([path], stats))
    assert stats.truncated == 0 and stats.malformed == 0
    assert after[: len(before)] == before
    assert after[-1].is_snapshot and after[-1].bids == ((99.0, 3.0),)


class BlockingFile(FailingFile):
    """A file object whose writes hang until released, like a disk that stopped answering."""

    def __init__(self, release: threading.Event) -> None:
        super().__init__(errno.EIO)
        self.release = release

    def write(self, data: bytes) -> int:
        self.release.wait(10)
        return len(data)


async def test_a_disk_that_does_not_answer_stops_recording_at_the_backlog_bound(
    tmp_path: Path,
) -> None:
    release = threading.Event()
    recorder, registry = make_recorder(
        tmp_path, opener=lambda _path: BlockingFile(release), max_backlog=20_000
    )
    recorder.on_book(snapshot([(100.0, 1.0)], [(101.0, 1.0)], T0 + 60))
    flush = asyncio.create_task(recorder.flush())  # the worker hangs in the first write
    await asyncio.sleep(0.05)
    i = 0
    while not recorder.stopped:
        i += 1
        assert i < 10_000, "never stopped"
        bids = [(100.0 - k * 0.5, 1.0 + i) for k in range(20)]
        recorder.on_book(snapshot(bids, [(101.0, 1.0)], T0 + 61 + i * 0.001))
    assert sample(registry, "cryptoarb_record_errors_total", reason="backlog") == 1
    assert sample(registry, "cryptoarb_record_up") == 0
    await recorder.close(timeout=0.2)  # the disk still hangs: shutdown is not held up
    release.set()
    await flush


async def test_an_existing_file_that_is_not_gzip_is_not_appended_to(tmp_path: Path) -> None:
    plain = tmp_path / file_name("binance", datetime.date(2025, 12, 4), "BTCUSDT")
    plain.write_text(HEADER + "\n")
    recorder, registry = make_recorder(tmp_path)
    recorder.on_book(snapshot([(100.0, 1.0)], [(101.0, 1.0)], T0 + 60))
    await recorder.flush()
    await recorder.close()
    assert sample(registry, "cryptoarb_record_errors_total", reason="io_error") == 1
    assert plain.read_text() == HEADER + "\n"

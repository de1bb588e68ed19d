"""Records the books the exporter computes on as Tardis ``incremental_book_L2`` files.

A :class:`Recorder` is a feed sink (``on_book`` / ``on_status`` / ``on_markets``). Each book's
first copy, and the first after any status change of its feed (disconnect, resync, timeout),
is written as a snapshot; every other copy as the difference from the previous one: a level
that left the copied top ``feeds.depth`` levels is a deletion (amount 0), a new or changed
level is written with its amount. Replaying the rows rebuilds exactly the copied books.

The feed path only formats rows into per-file buffers. A worker thread compresses and writes
them once a second (:mod:`exporter.replay.output`), rotates files at midnight UTC and keeps
the directory within ``record.max_bytes`` and ``record.retention_days``. A full disk, a write
error or the size cap stops recording (counted, logged); exporting goes on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import logging
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import compress
from operator import ne
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.config import Config
from exporter.model import BookSnapshot, Level, MarketInfo
from exporter.replay import tardis
from exporter.replay.output import (
    Deleted,
    Opener,
    OutputFiles,
    SizeLimitReached,
    is_disk_full,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

FLUSH_INTERVAL = 1.0
COMPRESS_LEVEL = 5
# Rows buffered while the disk does not keep up; past this the recorder stops ("backlog")
# rather than grow without bound behind a hung disk.
MAX_BACKLOG = 256 * 1024 * 1024
ERROR_REASONS = ("disk_full", "io_error", "size_limit", "backlog", "internal")
_EPOCH = datetime.date(1970, 1, 1)
_DAY = 86_400


class RecordMetrics:
    """The recorder's own health on the exporter's registry (label values from config)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rows = Counter(
            "cryptoarb_record_rows",
            "Rows written to recorded book files (snapshot and update rows)",
            ["exchange", "market"],
            registry=registry,
        )
        self.snapshots = Counter(
            "cryptoarb_record_snapshots",
            "Whole-book snapshots written (at start, after a resync or reconnect, at midnight)",
            ["exchange", "market"],
            registry=registry,
        )
        self.bytes = Counter(
            "cryptoarb_record_bytes",
            "Compressed bytes written to recorded book files",
            registry=registry,
        )
        self.disk_bytes = Gauge(
            "cryptoarb_record_disk_usage_bytes",
            "Bytes the recorder's files take in its directory (after bounds are applied)",
            registry=registry,
        )
        self.deleted = Counter(
            "cryptoarb_record_deleted_files",
            "Recorded files deleted to stay within record.retention_days or record.max_bytes",
            ["reason"],
            registry=registry,
        )
        self.errors = Counter(
            "cryptoarb_record_errors",
            "Failures that stopped recording, by reason",
            ["reason"],
            registry=registry,
        )
        self.up = Gauge(
            "cryptoarb_record_up", "1 while the recorder is writing, 0 once it stopped",
            registry=registry,
        )  # fmt: skip
        for reason in ERROR_REASONS:
            self.errors.labels(reason)
        for reason in ("retention", "max_bytes"):
            self.deleted.labels(reason)


@dataclass(eq=False, slots=True)
class _Book:
    """Hot-path state of one recorded book."""

    exchange: str
    market: str
    prefix: str  # "tardis_exchange,tardis_symbol,"
    tardis_exchange: str
    tardis_symbol: str
    rows: Counter
    snapshots: Counter
    day: int = -1  # days since the epoch of the open file
    path: Path | None = None
    buf: list[str] | None = None
    bids: tuple[Level, ...] = ()
    asks: tuple[Level, ...] = ()
    need_snapshot: bool = True


def diff_side(
    old: tuple[Level, ...], new: tuple[Level, ...], head: str, side: str, out: list[str]
) -> None:
    """Rows turning ``old`` into ``new`` (one side of a copied book): deletions of prices
    that left the copied top, then new or changed levels (in no particular order)."""
    if old == new:
        return
    # Both sides are sorted with unique prices, so a level found at the same position in
    # both is in both books unchanged; only the other positions can differ. Found in C,
    # position by position: usually a few amounts changed (hashing 2x100 float tuples into
    # sets would cost several times more).
    n = min(len(old), len(new))
    moved = list(compress(range(n), map(ne, new, old)))
    was = dict([old[i] for i in moved])
    was.update(old[n:])
    now = [new[i] for i in moved]
    now.extend(new[n:])
    present = {p for p, _q in now}
    out.extend(f"{head}{side},{p!r},0\n" for p in was if p not in present)
    out.extend(f"{head}{side},{p!r},{q!r}\n" for p, q in now if was.get(p) != q)


class Recorder:
    """Feed sink writing every configured book to ``directory`` (see the module doc)."""

    def __init__(
        self,
        config: Config,
        directory: Path,
        registry: CollectorRegistry,
        clock: Clock = SYSTEM_CLOCK,
        opener: Opener | None = None,
        flush_interval: float = FLUSH_INTERVAL,
        max_backlog: int = MAX_BACKLOG,
    ) -> None:
        self.config = config
        self.directory = directory
        self.clock = clock
        self.flush_interval = flush_interval
        self.max_backlog = max_backlog
        self._backlog = 0  # characters buffered since the last hand-off
        self.metrics = RecordMetrics(registry)
        kwargs = {"opener": opener} if opener is not None else {}
        self._files = OutputFiles(
            directory,
            config.record.max_bytes,
            config.record.retention_days,
            COMPRESS_LEVEL,
            **kwargs,
        )
        # One worker: jobs run in submission order, so the final flush follows any in flight.
        self._worker = Worker("recorder")
        self._books: dict[tuple[str, str], _Book] = {}
        for ex, market in tardis.watched_books(config):
            tex = tardis.tardis_exchange(config, ex)
            tsym = tardis.tardis_symbol(config, ex, market)
            self._books[(ex, market)] = _Book(
                ex, market, f"{tex},{tsym},", tex, tsym,
                self.metrics.rows.labels(ex, market), self.metrics.snapshots.labels(ex, market),
            )  # fmt: skip
        self._pending: dict[Path, list[str]] = {}
        self._markets: dict[str, dict[str, MarketInfo]] = {}
        self._sidecars: set[tuple[str, int]] = set()  # (exchange, day) written
        self._today = -1
        self._latest = 0.0  # newest received_at seen
        self.stopped = False
        self._closed = False
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            self._stop(err)
        else:
            self.metrics.up.set(1)

    # -- feed sink (event loop, hot path) -------------------------------------------------
    def on_book(self, snap: BookSnapshot) -> None:
        if self.stopped:
            return
        book = self._books.get((snap.exchange, snap.market))
        if book is None:
            return  # not a configured book: nothing to label it with
        try:
            self._record(book, snap)
        except Exception as err:  # a recorder bug must not take the feed down
            log.exception("record: %s %s failed", snap.exchange, snap.market)
            self._stop(err, "internal")

    def _record(self, book: _Book, snap: BookSnapshot) -> None:
        received = snap.received_at
        day = int(received // _DAY)
        if day != book.day:
            self._rotate(book, day)
        if received > self._latest:
            self._latest = received
        ts = "" if snap.exchange_ts is None else round(snap.exchange_ts * 1e6)
        lts = round(received * 1e6)
        bids, asks = snap.bids, snap.asks
        out: list[str] = []
        if book.need_snapshot and (bids or asks):
            head = f"{book.prefix}{ts},{lts},true,"
            out.extend(f"{head}bid,{p!r},{q!r}\n" for p, q in bids)
            out.extend(f"{head}ask,{p!r},{q!r}\n" for p, q in asks)
            book.need_snapshot = False
            book.snapshots.inc()
        else:
            # An empty copy cannot be a snapshot (no rows): the levels written before are
            # deleted instead, and the next non-empty copy is the snapshot.
            head = f"{book.prefix}{ts},{lts},false,"
            diff_side(book.bids, bids, head, "bid", out)
            diff_side(book.asks, asks, head, "ask", out)
        book.bids, book.asks = bids, asks
        if out:
            assert book.buf is not None
            text = "".join(out)
            book.buf.append(text)
            book.rows.inc(len(out))
            self._backlog += len(text)
            if self._backlog > self.max_backlog:
                self._stop(
                    OSError(f"{self._backlog} bytes of rows waiting for the disk"), "backlog"
                )

    def _rotate(self, book: _Book, day: int) -> None:
        """A new UTC day (or the first book): a new file, starting with a snapshot."""
        date = _EPOCH + datetime.timedelta(days=day)
        book.day = day
        book.path = self.directory / tardis.file_name(
            book.tardis_exchange, date, book.tardis_symbol
        )
        book.buf = self._pending.setdefault(book.path, [])
        book.bids = book.asks = ()  # the new file starts from an empty book
        book.need_snapshot = True
        self._today = max(self._today, day)

    def on_status(self, exchange: str, market: str) -> None:
        book = self._books.get((exchange, market))
        if book is not None:
            book.need_snapshot = True  # the feed reconnected or resynced: a new book follows

    def on_markets(self, exchange: str, markets: Mapping[str, MarketInfo]) -> None:
        self._markets[exchange] = dict(markets)
        self._sidecars = {(ex, d) for ex, d in self._sidecars if ex != exchange}

    # -- flushing (event loop side) -------------------------------------------------------
    def _take(self) -> tuple[dict[Path, bytes], list[tuple[str, datetime.date]]]:
        batch: dict[Path, bytes] = {}
        self._backlog = 0
        for path, buf in self._pending.items():
            if buf:
                batch[path] = "".join(buf).encode()
                buf.clear()
        active = {b.path for b in self._books.values()}
        for path in [p for p in self._pending if p not in active]:
            del self._pending[path]  # a file left behind at midnight: written above, done
        sidecars = []
        for ex, day in {(b.exchange, b.day) for b in self._books.values() if b.path}:
            if ex in self._markets and (ex, day) not in self._sidecars:
                self._sidecars.add((ex, day))
                sidecars.append((ex, _EPOCH + datetime.timedelta(days=day)))
        return batch, sidecars

    def _job(
        self,
        batch: dict[Path, bytes],
        sidecars: list[tuple[str, datetime.date]],
        markets: dict[str, dict[str, MarketInfo]],
        active: set[Path],
        today: datetime.date,
        now: float,
    ) -> tuple[int, Deleted]:
        """Worker thread: sidecars, rows, files of past days closed, bounds applied."""
        for ex, day in sidecars:
            tardis.write_sidecar(self.directory, self.config, ex, day, markets[ex])
        written = self._files.write(batch)
        written += self._files.close_except(active)
        return written, self._files.enforce_bounds(today, now)

    async def flush(self) -> None:
        """Hand the buffered rows to the worker thread and wait for them to be on disk."""
        if self.stopped:
            return
        batch, sidecars = self._take()
        active = {b.path for b in self._books.values() if b.path is not None}
        today = _EPOCH + datetime.timedelta(days=max(self._today, 0))
        # The books' own time (the clock's before the first book): the same in a live run,
        # and what decides the file's day.
        now = self._latest or self.clock.time()
        job = self._worker.submit(
            self._job, batch, sidecars, dict(self._markets), active, today, now
        )
        try:
            written, deleted = await asyncio.wrap_future(job)
        except SizeLimitReached as err:
            self._stop(err, "size_limit")
            return
        except OSError as err:
            self._stop(err)
            return
        except Exception as err:
            log.exception("record: flush failed")
            self._stop(err, "internal")
            return
        self._account(written, deleted)

    def _account(self, written: int, deleted: Deleted) -> None:
        m = self.metrics
        m.bytes.inc(written)
        m.disk_bytes.set(deleted.total_bytes)
        if deleted.retention:
            m.deleted.labels("retention").inc(deleted.retention)
        if deleted.max_bytes:
            m.deleted.labels("max_bytes").inc(deleted.max_bytes)
        for failure in deleted.failed:
            log.warning("record: could not delete %s", failure)

    def _stop(self, err: BaseException, reason: str | None = None) -> None:
        """Stop recording for good: counted, logged, the open files closed (best effort)."""
        if reason is None:
            reason = "disk_full" if isinstance(err, OSError) and is_disk_full(err) else "io_error"
        self.metrics.errors.labels(reason).inc()
        self.metrics.up.set(0)
        if not self.stopped:
            log.error("record: stopped (%s): %s; exporting goes on", reason, err)
        self.stopped = True
        self._pending.clear()
        for book in self._books.values():
            book.buf = None
        self._worker.submit(self._close_quietly)

    def _close_quietly(self) -> None:
        try:
            self._files.close_all()
        except OSError as err:
            log.warning("record: closing files after a stop failed: %s", err)

    # -- lifecycle -------------------------------------------------------------------------
    async def run(self) -> None:
        """The flush timer (owned by the exporter's task group)."""
        while not self.stopped:
            await self.clock.sleep(self.flush_interval)
            await self.flush()

    async def close(self, timeout: float = 10.0) -> None:
        """Final flush and clean close (gzip trailers), once the feeds have stopped. A disk
        that does not answer within ``timeout`` is left behind (logged): shutdown goes on."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.wait_for(self._finish(), timeout)
        except TimeoutError:
            log.error("record: files not closed within %gs: the disk does not answer", timeout)
        self.stopped = True  # nothing is written after close
        self.metrics.up.set(0)
        self._worker.shutdown()

    async def _finish(self) -> None:
        await self.flush()
        if self.stopped:  # wait for the close a stop submitted
            await asyncio.wrap_future(self._worker.submit(lambda: 0))
            return
        try:
            trailers = await asyncio.wrap_future(self._worker.submit(self._files.close_all))
        except OSError as err:
            self._stop(err)
            await asyncio.wrap_future(self._worker.submit(lambda: 0))
        else:
            self.metrics.bytes.inc(trailers)


class Worker:
    """One daemon thread running jobs in submission order. Daemon, unlike an executor's
    threads, so a disk that hangs a write cannot keep the process from exiting."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((future, fn, args))
        return future

    def shutdown(self) -> None:
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as err:  # handed to the awaiting side, which counts it
                future.set_exception(err)


_Job = tuple["concurrent.futures.Future[Any]", "Callable[..., Any]", tuple[Any, ...]]

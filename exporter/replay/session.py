"""One replay of a set of files in this process: trading terms, the merged read, the engine,
the pace (``--speed``), the HTTP server of ``--speed > 0``, Redis writes of ``--redis.url``
and the progress line. It returns a *partial* (exporter/replay/report.py), plain data that
:mod:`exporter.replay.jobs` also sends back from worker processes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import logging
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from exporter.config import Config
from exporter.model import BookStatus
from exporter.replay.engine import ReplayEngine
from exporter.replay.tardis import BookUpdate, ReadStats, read_updates
from exporter.replay.terms import load_terms
from exporter.store.writer import StateWriter

if TYPE_CHECKING:
    from exporter.http.server import HttpServer

log = logging.getLogger(__name__)

PROGRESS_AFTER = 3.0  # seconds of replay before the progress line appears
PROGRESS_EVERY = 2.0


@dataclass(frozen=True)
class Options:
    speed: float = 0.0  # 0: as fast as possible; X: X times the recorded pace (serves HTTP)
    listen: tuple[str, int] | None = None  # with speed > 0
    redis_url: str | None = None
    origin: float | None = None  # timer origin (earliest instant of the whole replay)
    progress: bool = True
    label: str = "replay"


# -- reading -------------------------------------------------------------------------------
def merged(paths: Sequence[Path], stats: Sequence[ReadStats]) -> Iterator[tuple[int, BookUpdate]]:
    """(file index, update) of every file merged by local_timestamp; ties keep the files'
    argument order (heapq.merge is stable), so one file's counts stay its own."""

    def tagged(i: int) -> Iterator[tuple[int, BookUpdate]]:
        for update in read_updates([paths[i]], stats[i]):
            yield i, update

    return heapq.merge(
        *(tagged(i) for i in range(len(paths))), key=lambda x: x[1].local_timestamp_us
    )


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


class _Progress:
    def __init__(self, label: str, stats: Sequence[ReadStats], enabled: bool) -> None:
        self.label, self.stats, self.enabled = label, stats, enabled
        self.t0 = time.monotonic()
        self.next = self.t0 + PROGRESS_AFTER
        self.shown = False

    def maybe(self, recorded: float) -> None:
        now = time.monotonic()
        if not self.enabled or now < self.next:
            return
        self.next = now + PROGRESS_EVERY
        rows = sum(s.rows for s in self.stats)
        rate = rows / max(now - self.t0, 1e-9)
        print(
            f"{self.label}: {rows:,} rows, {rate:,.0f} rows/s, recorded time {_iso(recorded)}",
            file=sys.stderr,
            flush=True,
        )
        self.shown = True


# -- the replay ----------------------------------------------------------------------------
async def replay(config: Config, paths: Sequence[Path], options: Options) -> dict[str, Any]:
    """Replay ``paths`` through the analytics; returns the partial (report.py)."""
    fees = load_terms(config, paths)
    registry = CollectorRegistry()
    serve = options.speed > 0
    writer = StateWriter(
        options.redis_url,
        registry=registry,
        flush_interval=config.redis.flush_interval,
        queue_max=config.redis.queue_max,
        ticker_ttl=3 * config.feeds.stale_after,
        history_maxlen=config.history.maxlen,
        log_maxlen=config.windows.log_maxlen,
        socket_timeout=config.redis.socket_timeout,
        key_prefix=config.replay.key_prefix,
    )
    engine = ReplayEngine(
        config,
        fees,
        writer,
        origin=options.origin,
        publish=options.redis_url is not None,
        correlation=serve,
    )
    stats = [ReadStats() for _ in paths]
    server = await _start_server(config, engine, registry, options) if serve else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if serve:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    progress = _Progress(options.label, stats, options.progress)
    pace = _Pace(options.speed)
    try:
        for n, (i, update) in enumerate(merged(paths, stats)):
            t = update.local_timestamp_us / 1e6
            if not engine.started:
                engine.start(t)
            while engine.next_due() <= t:
                if serve:
                    await pace.until(engine.next_due())
                engine.run_next_timer()
                await _after_timers(engine, writer)
            if serve:
                await pace.until(t)
                if stop.is_set():
                    break
            engine.apply(update, i)
            if n & 1023 == 0:
                progress.maybe(t)
                if serve:
                    await asyncio.sleep(0)
        engine.finish()
        await _after_timers(engine, writer)
    finally:
        if serve:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        if server is not None:
            await server.stop()
        await writer.close(timeout=5.0)
    if progress.shown:
        progress.next = 0.0
        progress.maybe(engine.last or 0.0)
    return partial(engine, paths, stats)


async def _after_timers(engine: ReplayEngine, writer: StateWriter) -> None:
    if engine.flush_due:
        engine.flush_due = False
        await writer.flush()
    if engine.correlation_due:
        engine.correlation_due = False
        try:
            await engine.intel.compute_correlation(engine.clock.time())
        except Exception:  # as live: counted and logged
            engine.intel.errors["correlation"] += 1
            log.exception("correlation failed")


class _Pace:
    """``--speed X``: recorded instant t is reached X times faster than it was recorded."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.origin: tuple[float, float] | None = None

    async def until(self, t: float) -> None:
        loop = asyncio.get_running_loop()
        if self.origin is None:
            self.origin = (loop.time(), t)
        real0, rec0 = self.origin
        delay = real0 + (t - rec0) / self.speed - loop.time()
        if delay > 0.0005:
            await asyncio.sleep(delay)


async def _start_server(
    config: Config, engine: ReplayEngine, registry: CollectorRegistry, options: Options
) -> HttpServer:
    """/metrics, /readyz and the JSON API over the replay's state, as ``run`` serves them."""
    from prometheus_client import disable_created_metrics

    from exporter.http.api import api_routes
    from exporter.http.collector import IntelligenceCollector, MarketCollector
    from exporter.http.server import HttpServer

    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry.register(MarketCollector(engine.state, engine.latency))
    registry.register(IntelligenceCollector(engine.intel))
    state = engine.state

    def readiness() -> tuple[bool, dict[str, Any]]:
        books = {f"{ex}:{m}": str(st) for (ex, m), st in state.feed_statuses().items()}
        ok = all(v == BookStatus.LIVE for v in books.values())
        return ok, {"books": books, "redis_up": engine.writer.up, "replay": True}

    host, port = options.listen or (config.web.host, config.web.port)
    server = HttpServer(
        registry,
        readiness,
        host,
        port,
        extra_routes=api_routes(config, state, engine.intel, engine.writer),
    )
    await server.start()
    return server


def partial(
    engine: ReplayEngine, paths: Sequence[Path], stats: Sequence[ReadStats]
) -> dict[str, Any]:
    files: dict[str, Any] = {}
    for i, path in enumerate(paths):
        counts = engine.files.get(i)
        rejected = counts.malformed if counts else 0
        files[str(path)] = {
            "rows": stats[i].rows - rejected,
            "updates": stats[i].updates,
            "malformed": stats[i].malformed + rejected,
            "truncated": stats[i].truncated,
            "unknown": [
                [ex, sym, rows] for (ex, sym), rows in (counts.unknown.items() if counts else ())
            ],
        }
    span = (
        [engine.first, engine.last]
        if engine.first is not None and engine.last is not None
        else None
    )
    return {
        "span": span,
        "files": files,
        "used_updates": engine.used_updates,
        "routes": engine.routes.partial_routes(),
        "windows": engine.routes.windows,
    }

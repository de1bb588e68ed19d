"""``replay --jobs N``: independent symbols replayed in N processes, outputs merged.

A symbol's books only meet in its own pairs, so the files are split by canonical symbol (a
file's symbol is read from its first row: ``record`` and Tardis write one symbol per file),
each group with the conversion books its symbols need; each job replays its files with the
config restricted to its symbols, and :func:`exporter.replay.report.finalize` merges the
partials. Every job anchors its timers at the earliest instant of the whole replay, so the
sweeps, rate flushes and ticks happen at the same instants as in one process, and the windows
and report equal those of ``--jobs 1``. Files of books the config does not watch go to the
first job, which reports them.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from exporter.config import Config, parse
from exporter.model import FeedKey
from exporter.replay.session import Options, replay
from exporter.replay.tardis import ReadStats, market_index, read_updates
from exporter.replay.terms import load_terms

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    symbols: tuple[str, ...]
    paths: tuple[Path, ...]


def _first(path: Path) -> tuple[tuple[str, str], float] | None:
    for update in read_updates([path], ReadStats()):
        return (update.exchange, update.symbol), update.local_timestamp_us / 1e6
    return None


def _conversion_users(config: Config) -> dict[FeedKey, set[str]]:
    users: dict[FeedKey, set[str]] = {}
    for symbol, mapping in config.symbols.items():
        for market in mapping.values():
            quote = market.split("/")[1]
            conv = config.quote_conversion.get(quote)
            if quote != config.canonical_quote(symbol) and conv and conv.book is not None:
                users.setdefault(FeedKey((conv.book.exchange, conv.book.market)), set()).add(symbol)
    return users


def plan(config: Config, paths: Sequence[Path], jobs: int) -> tuple[list[Job], float | None]:
    """The jobs (at most ``jobs``, balanced by file size) and the replay's first instant."""
    index = market_index(config)
    symbol_of = {
        FeedKey((ex, m)): s for s, mapping in config.symbols.items() for ex, m in mapping.items()
    }
    users = _conversion_users(config)
    by_symbol: dict[str, list[Path]] = {}
    conversion: dict[FeedKey, list[Path]] = {}
    other: list[Path] = []
    origin: float | None = None
    for path in paths:
        first = _first(path)
        if first is None:
            other.append(path)
            continue
        key, t = first
        origin = t if origin is None else min(origin, t)
        feed = index.get(key)
        if feed is not None and feed in symbol_of:
            by_symbol.setdefault(symbol_of[feed], []).append(path)
        elif feed is not None and feed in users:
            conversion.setdefault(feed, []).append(path)
        else:
            other.append(path)
    groups = sorted(
        by_symbol.items(), key=lambda kv: -sum(p.stat().st_size for p in kv[1])
    )  # largest first, each to the least loaded job
    n = max(1, min(jobs, len(groups)))
    load = [0] * n
    members: list[list[str]] = [[] for _ in range(n)]
    for symbol, files in groups:
        j = load.index(min(load))
        members[j].append(symbol)
        load[j] += sum(p.stat().st_size for p in files)
    out = []
    order = {p: i for i, p in enumerate(paths)}  # argument order: ties keep file order
    for j, symbols in enumerate(members):
        chosen = [p for s in symbols for p in by_symbol[s]]
        for feed, files in conversion.items():
            if users[feed] & set(symbols):
                chosen += files
        if j == 0:
            chosen += other
        out.append(Job(tuple(sorted(symbols, key=list(config.symbols).index)),
                       tuple(sorted(set(chosen), key=order.__getitem__))))  # fmt: skip
    return out, origin


def _restricted(config: Config, symbols: Sequence[str]) -> Config:
    return config.model_copy(update={"symbols": {s: config.symbols[s] for s in symbols}})


def _run_job(
    data: dict[str, Any], symbols: tuple[str, ...], paths: tuple[Path, ...], options: Options
) -> dict[str, Any]:
    """A worker process: one job's replay (the config travels as its validated data)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = _restricted(parse(data, "replay job", environ={}), symbols)
    return asyncio.run(replay(config, list(paths), options))


async def run_jobs(
    config: Config, paths: Sequence[Path], jobs: int, options: Options
) -> list[dict[str, Any]]:
    """The partials of a replay split over ``jobs`` processes (one process: in this one)."""
    load_terms(config, paths)  # a missing fee stops the replay here, before any job starts
    planned, origin = plan(config, paths, jobs)
    options = replace(options, origin=origin)
    if len(planned) <= 1:
        return [await replay(config, paths, options)]
    log.info(
        "replay: %d jobs: %s",
        len(planned),
        "; ".join(f"{', '.join(j.symbols)} ({len(j.paths)} files)" for j in planned),
    )
    data = config.model_dump(mode="python")
    loop = asyncio.get_running_loop()
    # fork where there is one: the workers start with every module already imported (a
    # spawned worker spends seconds importing before it reads a row). Nothing here holds a
    # socket or a thread yet, and asyncio ignores the parent's running loop in a child.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    with ProcessPoolExecutor(max_workers=len(planned), mp_context=ctx) as pool:
        futures = [
            loop.run_in_executor(
                pool,
                _run_job,
                data,
                job.symbols,
                job.paths,
                replace(options, label=f"replay job {i + 1}/{len(planned)}"),
            )
            for i, job in enumerate(planned)
        ]
        return list(await asyncio.gather(*futures))

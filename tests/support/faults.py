"""Fault-matrix helpers: ground-truth comparison, recovery timing, and a watchdog asserting
that a book that is not live yields no exported opportunity and no open window.

Recovery times are collected in ``RECOVERY`` and printed at the end of the run (see
tests/integration/conftest.py); ``FAULT_RECOVERY_OUT=path.json`` also writes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from exporter.app import Exporter
from tests.support.exporter import all_live, wait_for
from tests.support.simulator import SimulatorHarness


@dataclass
class Recovery:
    fault: str
    seconds: float
    detail: str = ""


RECOVERY: list[Recovery] = []


def book_equals_truth(exp: Exporter, sim: SimulatorHarness, ex: str, market: str) -> bool:
    """The top half of the copied depth equals the simulator's book.

    Only the top: a depth-limited book learns of levels beyond its snapshot's edge only when
    they change, so after deletions near the top its tail can miss levels the exchange has
    (ccxt on a real exchange behaves the same; the next snapshot heals it). Seen in a 60 s
    reconnect storm. Everything the analytics read lies well inside the top half."""
    snap = exp.state.snapshot(ex, market)
    if snap is None:
        return False
    n = max(1, exp.config.feeds.depth // 2)
    truth = sim.book(ex, market, depth=n)
    bids = tuple((float(p), float(q)) for p, q in truth["bids"])
    asks = tuple((float(p), float(q)) for p, q in truth["asks"])
    return snap.bids[:n] == bids and snap.asks[:n] == asks


async def freeze_and_compare(exp: Exporter, sim: SimulatorHarness, timeout: float = 5) -> None:
    """Freeze the simulator; every book must equal the ground truth, at most ``feeds.depth``
    levels copied and at least half of them."""
    sim.freeze()
    try:
        for ex, market in exp.feed_stats:
            await wait_for(
                lambda ex=ex, market=market: book_equals_truth(exp, sim, ex, market),
                timeout=timeout,
                what=f"{ex} {market} equal to ground truth",
            )
            symbol = exp.feed_stats[(ex, market)].symbol
            if symbol in exp.state.symbols:
                # A depth-limited book only shrinks by deletions until the next snapshot, so
                # a long fault leaves fewer levels (89 seen in CI after a 4 s freeze).
                depth = exp.config.feeds.depth
                rec = exp.state.record(ex, symbol)
                assert rec is not None
                copied = len(rec.snapshot.bids)
                assert depth // 2 <= copied <= depth, f"{ex} {market}: {copied} copied levels"
    finally:
        sim.unfreeze()


def _not_live(exp: Exporter) -> set[tuple[str, str]]:
    """(exchange, symbol) of books that are not live, conversion books mapped to users."""
    m = exp.state
    out = set()
    for symbol, mapping in m.symbols.items():
        for ex in mapping:
            if not m.book_live(ex, symbol):
                out.add((ex, symbol))
    return out


def _updated_since(exp: Exporter, key: tuple[str, str], since: float) -> bool:
    """Whether the book (and its conversion book) got an update after ``since``: it was live
    then, between two polls, even if both polls saw it down (a reconnect storm flaps books
    faster than the watchdog polls, and a scrape is rendered over several loop steps)."""
    ex, symbol = key
    m = exp.state
    rec = m.record(ex, symbol)
    if rec is None or rec.snapshot.received_mono <= since:
        return False
    ref = m.conversion_of(ex, symbol)
    conv = m.snapshot(*ref) if ref is not None else None
    return ref is None or (conv is not None and conv.received_mono > since)


@dataclass
class Watchdog:
    """Scrapes /metrics every ``interval`` s and records violations: an ROI sample or an open
    window for a pair with a book that was not live before and after the scrape (windows get
    two sweep intervals of grace from the book's last update, the sweep closes them)."""

    exp: Exporter
    interval: float = 0.1
    violations: list[str] = field(default_factory=list)
    scrapes: int = 0
    saw_not_live: bool = False
    _since: dict[tuple[str, str], float] = field(default_factory=dict)

    async def run(self) -> None:
        import aiohttp

        url = f"http://127.0.0.1:{self.exp.server.bound_port}/metrics"
        grace = 2 * self.exp.config.feeds.sweep_interval + 0.2
        async with aiohttp.ClientSession() as session:
            while True:
                before = _not_live(self.exp)
                now = time.monotonic()
                for key in before:
                    since = self._since.setdefault(key, now)
                    if _updated_since(self.exp, key, since):
                        self._since[key] = now  # it was live in between: grace starts again
                for key in list(self._since):
                    if key not in before:
                        del self._since[key]
                async with session.get(url) as resp:
                    text = await resp.text()
                after = _not_live(self.exp)
                down = before & after
                self.saw_not_live |= bool(down)
                self.scrapes += 1
                for fam in text_string_to_metric_families(text):
                    for s in fam.samples:
                        if s.name not in ("cryptoarb_net_roi_ratio", "cryptoarb_window_open"):
                            continue
                        sym, a, b = (s.labels[k] for k in ("symbol", "buy_exchange",
                                                           "sell_exchange"))  # fmt: skip
                        bad = {(a, sym), (b, sym)} & down
                        if not bad:
                            continue
                        if s.name == "cryptoarb_net_roi_ratio":
                            self.violations.append(f"ROI exported for {s.labels} while {bad}")
                        elif s.value == 1 and min(now - self._since[k] for k in bad) > grace:
                            self.violations.append(f"window open for {s.labels} while {bad}")
                await asyncio.sleep(self.interval)


@contextlib.asynccontextmanager
async def watchdog(exp: Exporter, what: str = "") -> AsyncIterator[Watchdog]:
    dog = Watchdog(exp)
    task = asyncio.create_task(dog.run())
    try:
        yield dog
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]
    assert not dog.violations, (what, dog.violations[:5])
    assert dog.scrapes >= 3, "the watchdog must have scraped /metrics"


async def recover(
    exp: Exporter,
    sim: SimulatorHarness,
    fault: str,
    t0: float,
    timeout: float = 20,
    books: Iterable[tuple[str, str]] | None = None,
    detail: str = "",
) -> float:
    """Wait until every book is live again, record the time since ``t0``, compare to truth."""
    await wait_for(lambda: all_live(exp), timeout=timeout, what=f"live again after {fault}")
    seconds = time.monotonic() - t0
    RECOVERY.append(Recovery(fault, seconds, detail))
    await freeze_and_compare(exp, sim)
    return seconds

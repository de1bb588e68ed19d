"""Replayed books at frozen instants equal the simulator's ground truth.

A live run against the simulator is recorded; twice the simulator is frozen, every book the
exporter holds is waited for to equal the simulator's book, and the simulator's books are
taken as the ground truth of that instant. The recording is then replayed through the replay
engine, and at each frozen instant every replayed book must equal the ground truth (the top
half of the copied depth: deeper levels of a depth-limited book only heal at its next
snapshot, see tests/support/faults.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exporter.config import parse
from exporter.model import Level
from exporter.replay.engine import ReplayEngine
from exporter.replay.tardis import ReadStats, read_updates
from exporter.replay.terms import load_terms
from exporter.store.writer import StateWriter
from tests.support.exporter import all_live, sim_config_data, wait_for
from tests.support.faults import book_equals_truth
from tests.support.recording import recording_exporter
from tests.support.simulator import SimulatorHarness

pytestmark = pytest.mark.integration

SIMULATOR = {"seed": 23, "rate": 40}

Truth = dict[tuple[str, str], tuple[tuple[Level, ...], tuple[Level, ...]]]


async def test_replayed_books_equal_the_ground_truth_at_frozen_instants(
    sim: SimulatorHarness, tmp_path: Path
) -> None:
    config = parse(sim_config_data(sim.base_url), "test", environ={})
    n = config.feeds.depth // 2
    record = tmp_path / "rec"
    frozen: list[tuple[float, Truth]] = []
    async with recording_exporter(config, record) as exp:
        await wait_for(lambda: all_live(exp), timeout=20, what="every book live")
        for k in range(2):
            sim.dislocation("BTC/USD", "kraken", 0.003 * (1 if k else -1), 1.0)
            await asyncio.sleep(1.5)
            sim.freeze()
            try:
                for ex, market in exp.feed_stats:
                    await wait_for(
                        lambda ex=ex, market=market: book_equals_truth(exp, sim, ex, market),
                        timeout=5,
                        what=f"{ex} {market} equal to the ground truth",
                    )
                truth: Truth = {}
                for ex, market in exp.feed_stats:
                    book = sim.book(ex, market, depth=n)
                    truth[(ex, market)] = (
                        tuple((float(p), float(q)) for p, q in book["bids"]),
                        tuple((float(p), float(q)) for p, q in book["asks"]),
                    )
                frozen.append((time.time(), truth))
                await asyncio.sleep(0.3)
            finally:
                sim.unfreeze()
            await asyncio.sleep(1.0)

    files = sorted(record.glob("*_incremental_book_L2_*.csv.gz"))
    assert files
    engine = ReplayEngine(
        config, load_terms(config, files), StateWriter(None, registry=CollectorRegistry())
    )
    checked = 0

    def compare(truth: Truth) -> None:
        for (ex, market), (bids, asks) in truth.items():
            snap = engine.state.snapshot(ex, market)
            assert snap is not None, f"{ex} {market}: no replayed book"
            assert snap.bids[:n] == bids, f"{ex} {market}: bids differ from the ground truth"
            assert snap.asks[:n] == asks, f"{ex} {market}: asks differ from the ground truth"

    for update in read_updates(files, ReadStats()):
        while checked < len(frozen) and update.local_timestamp_us / 1e6 > frozen[checked][0]:
            compare(frozen[checked][1])
            checked += 1
        engine.feed(update)
    while checked < len(frozen):
        compare(frozen[checked][1])
        checked += 1
    assert checked == 2

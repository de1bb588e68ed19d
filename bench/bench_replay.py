"""Replay throughput: book updates per second of ``arb-exporter replay`` on one core, and the
speed-up of ``--jobs 2``. Run:

    .venv/bin/python bench/bench_replay.py [--updates 60000] [--seconds 300] [--repeat 3]

The input is a ``record`` recording synthesised through the recorder's own writer
(exporter/replay/recorder.py, the exact files ``record`` writes, sidecars included): the
demo's 3 symbols (BTC, ETH, SOL /USD) on 2 venues (Binance in USDT, Kraken in USD) plus
Kraken's USDT/USD conversion book, depth 100, each update moving a few levels of one book
as a ccxt wake-up does, with price dislocations that open windows. The replay runs pinned
with ``taskset -c 1`` (``--jobs 2``: ``taskset -c 0,1`` against ``--jobs 1`` on the same two
cores). Results: bench/results/replay.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import PY, ROOT, pin, table, write_results  # type: ignore[import-not-found]
from prometheus_client import CollectorRegistry

from exporter.config import Config, parse
from exporter.model import BookSnapshot, Level, MarketInfo
from exporter.replay.recorder import Recorder

T0 = 1_733_270_400.0  # 2024-12-04T00:00:00Z
DEPTH = 100
MIDS = {"BTC": 97_000.0, "ETH": 3_600.0, "SOL": 230.0}
BOOKS = [
    ("binance", "BTC/USDT", "BTC/USD"), ("kraken", "BTC/USD", "BTC/USD"),
    ("binance", "ETH/USDT", "ETH/USD"), ("kraken", "ETH/USD", "ETH/USD"),
    ("binance", "SOL/USDT", "SOL/USD"), ("kraken", "SOL/USD", "SOL/USD"),
    ("kraken", "USDT/USD", "USDT/USD"),
]  # fmt: skip


def config_data() -> dict[str, Any]:
    return {
        "exchanges": {"binance": {}, "kraken": {}},
        "symbols": {f"{a}/USD": {"binance": f"{a}/USDT", "kraken": f"{a}/USD"} for a in MIDS},
        "quote_conversion": {"USDT": {"book": {"exchange": "kraken", "market": "USDT/USD"}}},
        "notionals": [1000, 10000, 50000],
        "feeds": {"depth": DEPTH, "stale_after": 5, "frozen_after": 15, "max_book_skew": 2},
        "windows": {"open_threshold": 0.0, "close_threshold": -0.0002, "min_duration_seconds": 1},
        "redis": {"url": None},
    }


class _Book:
    """A depth-100 book on a tick grid whose mid walks. Amounts belong to price levels (tick
    indices), so an update re-draws a few amounts near the top, and a move of the mid by a
    tick shifts one level out of the copy on one side and one in on the other, as a ccxt
    wake-up does."""

    def __init__(self, rng: random.Random, mid: float) -> None:
        self.rng = rng
        self.tick = mid * 2e-5
        self.mid = mid
        self.amounts: dict[int, float] = {}

    def copy(self) -> tuple[tuple[Level, ...], tuple[Level, ...]]:
        centre = round(self.mid / self.tick)
        tick = self.tick
        bids = tuple(((centre - 1 - i) * tick, self._amount(centre - 1 - i)) for i in range(DEPTH))
        asks = tuple(((centre + 1 + i) * tick, self._amount(centre + 1 + i)) for i in range(DEPTH))
        return bids, asks

    def _amount(self, k: int) -> float:
        a = self.amounts.get(k)
        if a is None:
            a = self.amounts[k] = round(self.rng.lognormvariate(-1.0, 1.0), 4) + 0.001
        return a

    def step(self, fair: float) -> None:
        self.mid += (fair - self.mid) * 0.05 + self.rng.gauss(0, 0.2 * self.tick)
        centre = round(self.mid / self.tick)
        for _ in range(self.rng.randint(1, 4)):
            self.amounts.pop(centre + self.rng.choice((-1, 1)) * self.rng.randint(1, 20), None)


def synthesise(out: Path, config: Config, updates: int, seconds: float) -> None:
    """``updates`` book copies over ``seconds`` recorded, through the Recorder."""
    rng = random.Random(7)
    recorder = Recorder(config, out, CollectorRegistry())
    terms = MarketInfo(0.001, 1.0, 0.0, 0.01, 1e-5)
    recorder.on_markets("binance", {m: terms for e, m, _s in BOOKS if e == "binance"})
    recorder.on_markets("kraken", {m: MarketInfo(0.0016, 1.0, 0.0) for e, m, _ in BOOKS
                                   if e == "kraken"})  # fmt: skip
    books = {}
    for ex, market, _symbol in BOOKS:
        base = market.split("/")[0]
        books[(ex, market)] = _Book(rng, MIDS.get(base, 1.0))
    fair = dict(MIDS)

    async def run() -> None:
        dt = seconds / updates
        for n in range(updates):
            t = T0 + n * dt
            for asset in fair:
                fair[asset] *= 1 + rng.gauss(0, 2e-6)
            ex, market, symbol = BOOKS[rng.randrange(len(BOOKS))]
            book = books[(ex, market)]
            base = market.split("/")[0]
            target = fair.get(base, 1.0)
            if ex == "kraken" and base in fair and int(t) % 20 < 3:
                target *= 1.004  # a dislocation: kraken 0.4 % rich for 3 s out of every 20
            book.step(target)
            bids, asks = book.copy()
            recorder.on_book(BookSnapshot(ex, symbol, market, bids, asks, t - 0.003, t, t))
            if n % 20_000 == 0:
                await recorder.flush()
        await recorder.flush()
        await recorder.close()

    asyncio.run(run())


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def replay(args: list[str], cpus: str) -> tuple[float, float, dict[str, Any]]:
    """Wall seconds and CPU seconds (all its processes) of one replay run, and its report."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "r.json"
        cmd = [*pin(cpus), PY, "-m", "exporter.cli", "replay", "--log.level", "warning",
               *args, "--report", str(report)]  # fmt: skip
        c0, t0 = _children_cpu(), time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
        return wall, cpu, json.loads(report.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=60_000)
    parser.add_argument("--seconds", type=float, default=300.0, help="recorded span")
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args()
    started = time.time()
    load_before = os.getloadavg()  # machine() records the load at the end
    data = config_data()
    config = parse(data, "bench", environ={})
    with tempfile.TemporaryDirectory() as tmp:
        rec = Path(tmp) / "rec"
        t0 = time.perf_counter()
        synthesise(rec, config, opts.updates, opts.seconds)
        print(
            f"recording: {opts.updates:,} updates synthesised in {time.perf_counter() - t0:.1f} s"
        )
        files = sorted(str(p) for p in rec.glob("*_incremental_book_L2_*.csv.gz"))
        cfg = Path(tmp) / "config.json"
        cfg.write_text(json.dumps(data))
        base = ["--config.file", str(cfg), *files]
        # Start-up alone (imports, config): a replay of the first file's header only.
        empty = Path(tmp) / "kraken_incremental_book_L2_2024-12-04_XBT-USD.csv"
        empty.write_text(
            "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n"
        )
        starts = [
            _startup(["--config.file", str(cfg), str(empty)], "1") for _ in range(opts.repeat)
        ]
        startup, startup_cpu = min(w for w, _c in starts), min(c for _w, c in starts)
        runs = [replay(base, "1") for _ in range(opts.repeat)]
        one, one_cpu = min(r[0] for r in runs), min(r[1] for r in runs)
        report = runs[0][2]
        updates = report["updates"]
        pair1 = min(replay([*base, "--jobs", "1"], "0,1")[0] for _ in range(opts.repeat))
        pair2 = min(replay([*base, "--jobs", "2"], "0,1")[0] for _ in range(opts.repeat))
    windows = sum(r["windows"] for r in report["routes"])
    figures = {
        "updates": updates,
        "rows": report["rows"],
        "recorded_seconds": report["span"]["seconds"],
        "windows": windows,
        "one_core_seconds": round(one, 3),
        "startup_seconds": round(startup, 3),
        "one_core_cpu_seconds": round(one_cpu, 3),
        "startup_cpu_seconds": round(startup_cpu, 3),
        "updates_per_second": round(updates / one),
        "updates_per_second_after_startup": round(updates / (one - startup)),
        # CPU time is what the shared machine's load does not inflate (wall time waits for
        # the core while other processes run on it).
        "updates_per_cpu_second_after_startup": round(updates / (one_cpu - startup_cpu)),
        "loadavg_before": load_before,
        "target_updates_per_second": 8000,
        "two_cores_jobs1_seconds": round(pair1, 3),
        "two_cores_jobs2_seconds": round(pair2, 3),
        "jobs2_speedup": round(pair1 / pair2, 2),
    }
    print(
        table(
            ["run", "cores", "seconds", "updates/s"],
            [
                ["replay", "1", one, updates / one],
                ["replay (start-up excluded)", "1", one - startup, updates / (one - startup)],
                [
                    "replay, CPU time (start-up excl.)",
                    "1",
                    one_cpu - startup_cpu,
                    updates / (one_cpu - startup_cpu),
                ],
                ["replay --jobs 1", "0,1", pair1, updates / pair1],
                ["replay --jobs 2", "0,1", pair2, updates / pair2],
            ],
        )
    )
    print(f"{updates:,} updates, {report['rows']:,} rows, {windows} windows; "
          f"--jobs 2 speed-up {pair1 / pair2:.2f}x")  # fmt: skip
    print(write_results("replay", figures, started))


def _startup(args: list[str], cpus: str) -> tuple[float, float]:
    """Wall and CPU seconds of a replay with no row (imports, config, exit 1)."""
    c0, t0 = _children_cpu(), time.perf_counter()
    subprocess.run([*pin(cpus), PY, "-m", "exporter.cli", "replay", "--log.level", "error", *args],
                   cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - t0, _children_cpu() - c0


if __name__ == "__main__":
    sys.exit(main())

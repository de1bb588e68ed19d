"""Behaviour-unchanged check of the hot path: the same recorded books through two versions.

    .venv/bin/python bench/equivalence.py --base <commit> [--steps 20000] [--seed 7]

1. Synthesises a deterministic sequence of BookSnapshots with the simulator's market engine
   (exporter/simulator/market.py: the seeded price walks and book mechanics of a simulator
   run): Binance and Kraken books of BTC, ETH and SOL plus Kraken's USDT/USD conversion
   book, top 100 levels, one market stepped every 10 ms, with dislocations that open real
   windows, quiet spells past ``stale_after`` and crossed books. The sequence is pickled
   (plain tuples, readable by any version) to ``--recording``.
2. Feeds it into MarketState in a child process per code version: this checkout and a git
   worktree of ``--base`` (``git worktree add``, removed at the end). Each side advances a
   FakeClock to every snapshot's receive time, sets the feed's status as the supervisor does,
   and runs the sweep and rate-refresh timers every 0.25 s of book time.
3. Compares, per evaluation (every WindowTracker.observe call: key, net ROI, net profit),
   the figures to 1e-12; the window log entries (identical); the MarketCollector's market
   series scraped every 2 s of book time and at the end (identical text); and the live
   pairs' gross spread, fills and size optimum after every book (1e-12). Prints the result
   and writes bench/results/equivalence.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-12
Event = tuple[Any, ...]

SYMBOLS = {
    "BTC/USD": {"binance": "BTC/USDT", "kraken": "BTC/USD"},
    "ETH/USD": {"binance": "ETH/USDT", "kraken": "ETH/USD"},
    "SOL/USD": {"binance": "SOL/USDT", "kraken": "SOL/USD"},
}
CONVERSION = ("kraken", "USDT/USD")
CONFIG: dict[str, Any] = {
    "exchanges": {"binance": {}, "kraken": {}},
    "symbols": SYMBOLS,
    "quote_conversion": {"USDT": {"book": {"exchange": "kraken", "market": "USDT/USD"}}},
    "notionals": [1000, 10000, 50000],
    "bands": [0.001, 0.005, 0.01],
    "feeds": {"depth": 100, "stale_after": 3, "frozen_after": 30},
    "windows": {"open_threshold": 0.0005, "close_threshold": 0.0001, "min_duration_seconds": 0},
}


# -- 1. recording --------------------------------------------------------------------------
def synthesise(steps: int, seed: int) -> dict[str, Any]:
    """Books from the simulator's market engine, deterministic for a seed."""
    sys.path.insert(0, str(ROOT))
    from exporter.simulator.market import Dislocation, World

    world = World(seed=seed, levels=400)
    rng = random.Random(seed)
    keys = [(ex, m) for mp in SYMBOLS.values() for ex, m in mp.items()] + [CONVERSION]
    specs = {k: world.sims[k].spec for k in keys}
    terms = {
        f"{ex}|{m}": (0.001, float(specs[(ex, m)].min_notional), float(specs[(ex, m)].min_qty))
        for ex, m in keys
    }
    wall0, mono0, dt = 1.7e9, 1000.0, 0.01
    silent_until: dict[tuple[str, str], float] = {}
    events: list[Event] = []
    for i in range(steps):
        t = i * dt
        if i % 400 == 0:  # a new dislocation every 4 s: one asset, one venue, 10-80 bps
            world.dislocations = [
                Dislocation(
                    rng.choice(["BTC", "ETH", "SOL"]), rng.choice(["binance", "kraken"]),
                    rng.choice([-1, 1]) * rng.uniform(0.001, 0.008), -math.inf, math.inf,
                )
            ]  # fmt: skip
        if i % 100 == 0:
            for w in world.walks.values():
                w.step(world.rng)
        key = keys[rng.randrange(len(keys))] if rng.random() < 0.9 else CONVERSION
        if rng.random() < 0.0004:  # a quiet spell past stale_after
            silent_until[key] = t + rng.uniform(3.5, 6.0)
        if silent_until.get(key, -1.0) > t:
            continue
        if rng.random() < 0.001:
            world.cross(key)
        else:
            world.step(key)
        spec = specs[key]
        book = world.book(key)
        tick, lot = spec.tick, spec.lot
        bids = tuple((p * tick, q * lot) for p, q in book.top_bids(100))
        asks = tuple((p * tick, q * lot) for p, q in book.top_asks(100))
        events.append((key[0], key[1], bids, asks, book.ts_ms / 1000.0, wall0 + t, mono0 + t))
    return {"config": CONFIG, "terms": terms, "events": events}


# -- 2. one side ------------------------------------------------------------------------------
def market_series(text: str) -> str:
    """The exposition without ``cryptoarb_build_info``: it names the build (version, and
    whether the analytics are compiled), not the market."""
    return "".join(
        line for line in text.splitlines(keepends=True) if "cryptoarb_build_info" not in line
    )


def run_side(recording: Path, out: Path) -> None:
    """Runs in a child whose sys.path starts with the version's checkout."""
    from prometheus_client import CollectorRegistry, generate_latest

    from exporter.clock import FakeClock
    from exporter.config import parse
    from exporter.feeds.stats import FeedStats, LatencyHistogram
    from exporter.http.collector import MarketCollector
    from exporter.market.fees import FeeTable
    from exporter.market.state import MarketState
    from exporter.model import BookSnapshot, BookStatus, FeedKey, MarketInfo

    rec = pickle.loads(recording.read_bytes())
    config = parse(rec["config"], "equivalence", environ={})
    feeds = {
        FeedKey((ex, m)): FeedStats(ex, sym, m)
        for sym, mapping in config.symbols.items()
        for ex, m in mapping.items()
    }
    for ref in config.conversion_books():
        feeds[FeedKey((ref.exchange, ref.market))] = FeedStats(ref.exchange, ref.market, ref.market)
    fees = FeeTable(config)
    for exchange in sorted({ex for ex, _ in feeds}):
        fees.load(
            exchange,
            {m: MarketInfo(*rec["terms"][f"{ex}|{m}"]) for ex, m in feeds if ex == exchange},
        )
    log: list[dict[str, Any]] = []

    class Sink:
        def append_log(self, entry: Any, dedupe_key: str | None = None) -> None:
            log.append(dict(entry))

    first = rec["events"][0]
    clock = FakeClock(wall=first[5], mono=first[6])
    state = MarketState(config, feeds, fees, Sink(), clock)
    observed: list[tuple[Any, ...]] = []
    observe = state.windows.observe

    def spy(key: Any, roi: float | None, profit: float | None, now: float) -> None:
        observed.append((list(key), roi, profit, now))
        observe(key, roi, profit, now)

    state.windows.observe = spy  # type: ignore[method-assign]
    # How many pair evaluations ran in full (the rest reused a result nothing had changed).
    import exporter.market.state as state_module

    computed = [0]
    name = (
        "evaluate_pair_reach" if hasattr(state_module, "evaluate_pair_reach") else "evaluate_pair"
    )
    real = getattr(state_module, name)

    def counting(*args: Any, **kwargs: Any) -> Any:
        computed[0] += 1
        return real(*args, **kwargs)

    setattr(state_module, name, counting)
    registry = CollectorRegistry()
    registry.register(MarketCollector(state, {ex: LatencyHistogram() for ex in config.exchanges}))
    scrapes: list[str] = []
    pairs: list[list[Any]] = []
    next_timer = next_scrape = first[6]
    for ex, market, bids, asks, exchange_ts, wall, mono in rec["events"]:
        while next_timer <= mono:  # the app's timers, at their own instants
            clock.advance(max(0.0, next_timer - clock.monotonic()))
            state.sweep()
            state.flush_rates()
            next_timer += 0.25
            if next_timer > next_scrape + 2.0:
                scrapes.append(market_series(generate_latest(registry).decode()))
                next_scrape += 2.0
        clock.advance(max(0.0, mono - clock.monotonic()))
        stats = feeds[FeedKey((ex, market))]
        snap = BookSnapshot(
            exchange=ex, symbol=stats.symbol, market=market, bids=bids, asks=asks,
            exchange_ts=exchange_ts, received_at=wall, received_mono=mono,
        )  # fmt: skip
        if not bids or not asks:
            stats.status = BookStatus.SYNCING
        else:
            stats.status = BookStatus.CROSSED if snap.crossed else BookStatus.LIVE
        state.on_book(snap)
        pairs.append(
            [
                [list(k), r.gross_spread, r.computed_at,
                 [[f.notional, f.fillable, f.net_profit, f.net_roi] for f in r.fills],
                 None if r.optimum is None else [
                     r.optimum.breakeven_notional, r.optimum.optimal_notional,
                     r.optimum.optimal_net_profit, r.optimum.capped]]
                for k, r in state.live_pairs()
            ]
        )  # fmt: skip
    clock.advance(10.0)
    state.sweep()
    scrapes.append(market_series(generate_latest(registry).decode()))
    out.write_bytes(pickle.dumps({"observed": observed, "log": log, "scrapes": scrapes,
                                  "pairs": pairs, "computed": computed[0]}))  # fmt: skip


# -- 3. compare ---------------------------------------------------------------------------------
def close(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or abs(a - b) <= TOL
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def compare(base: dict[str, Any], head: dict[str, Any]) -> dict[str, Any]:
    ob, oh = base["observed"], head["observed"]
    roi_diffs = [i for i, (x, y) in enumerate(zip(ob, oh, strict=False)) if not close(x, y)]
    max_dev = max(
        (abs(x[1] - y[1]) for x, y in zip(ob, oh, strict=False)
         if isinstance(x[1], float) and isinstance(y[1], float)),
        default=0.0,
    )  # fmt: skip
    pair_diffs = [
        i for i, (x, y) in enumerate(zip(base["pairs"], head["pairs"], strict=False))
        if not close(x, y)
    ]  # fmt: skip
    scrape_diffs = [
        i for i, (x, y) in enumerate(zip(base["scrapes"], head["scrapes"], strict=False)) if x != y
    ]
    fillable = sum(1 for x in oh if x[1] is not None)
    return {
        "evaluations": {"base": len(ob), "head": len(oh), "fillable": fillable},
        "pair_evaluations_computed": {"base": base["computed"], "head": head["computed"]},
        "evaluations_differing": len(roi_diffs) + abs(len(ob) - len(oh)),
        "max_abs_roi_deviation": max_dev,
        "pair_results_compared": len(head["pairs"]),
        "pair_results_differing": len(pair_diffs) + abs(len(base["pairs"]) - len(head["pairs"])),
        "window_log_entries": {"base": len(base["log"]), "head": len(head["log"])},
        "window_logs_identical": base["log"] == head["log"],
        "scrapes": {"base": len(base["scrapes"]), "head": len(head["scrapes"])},
        "scrapes_differing": len(scrape_diffs) + abs(len(base["scrapes"]) - len(head["scrapes"])),
        "market_series_last_scrape": sum(
            1 for line in head["scrapes"][-1].splitlines() if line and not line.startswith("#")
        ),
    }


def side(checkout: Path, recording: Path, out: Path) -> tuple[dict[str, Any], float]:
    code = (
        f"import sys; sys.path.insert(0, {str(checkout)!r}); sys.path.insert(1, {str(ROOT)!r});"
        "from bench.equivalence import run_side; from pathlib import Path;"
        f"run_side(Path({str(recording)!r}), Path({str(out)!r}))"
    )
    t = time.perf_counter()
    # The state iterates sets of symbols (the users of a conversion book): one hash seed
    # for both sides, so both visit them in the same order.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    subprocess.run([sys.executable, "-c", code], cwd=checkout, check=True, env=env)
    return pickle.loads(out.read_bytes()), time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--base", required=True, help="commit to compare against (a git worktree)")
    p.add_argument("--steps", type=int, default=20000, help="10 ms steps of book time")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--recording", default=None, help="pickle of the books (default: a temp file)")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    from common import write_results

    started = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="equivalence-"))
    recording = Path(args.recording) if args.recording else tmp / "books.pickle"
    rec = synthesise(args.steps, args.seed)
    recording.write_bytes(pickle.dumps(rec))
    worktree = tmp / "base"
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(worktree), args.base],
                   cwd=ROOT, check=True)  # fmt: skip
    try:
        base, base_s = side(worktree, recording, tmp / "base.pickle")
        head, head_s = side(ROOT, recording, tmp / "head.pickle")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT)
    result = compare(base, head)
    ok = (
        result["evaluations_differing"] == 0
        and result["pair_results_differing"] == 0
        and result["window_logs_identical"]
        and result["scrapes_differing"] == 0
    )
    figures = {
        "base": args.base,
        "books": len(rec["events"]),
        "seed": args.seed,
        **result,
        "seconds": {"base": round(base_s, 2), "head": round(head_s, 2)},
        "equivalent": ok,
    }
    print(json.dumps(figures, indent=2))
    print(f"results: {write_results('equivalence', figures, started)}")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()

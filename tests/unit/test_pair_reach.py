"""Skipping a pair's re-evaluation when nothing within reach changed gives exactly the figures
a full re-evaluation gives: for the pure analytics (``evaluate_pair_reach``) and through
MarketState on random book sequences."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.analytics.arbitrage import Leg, evaluate_pair, evaluate_pair_reach, sort_levels
from exporter.clock import FakeClock
from exporter.config import parse
from exporter.feeds.stats import FeedStats
from exporter.market.fees import FeeTable
from exporter.market.state import MarketState
from exporter.model import BookSnapshot, BookStatus, FeedKey, Level, MarketInfo, PairResult

qty_st = st.floats(min_value=1e-3, max_value=20.0, allow_nan=False, allow_infinity=False)


@st.composite
def side(draw: st.DrawFn, center: float, asks: bool) -> tuple[Level, ...]:
    offsets = draw(st.lists(st.floats(0.0, 0.02), min_size=1, max_size=30, unique=True))
    sign = 1.0 if asks else -1.0
    levels = [(center * (1.0 + sign * o), draw(qty_st)) for o in offsets]
    return sort_levels(levels, "asks" if asks else "bids")


def mutate_beyond(
    rng: random.Random, levels: tuple[Level, ...], keep: int, asks: bool
) -> tuple[Level, ...]:
    """The first ``keep`` levels as they are; everything after them redrawn (dropped,
    requantified or extended), still sorted best first."""
    head = list(levels[:keep])
    last = head[-1][0] if head else levels[0][0]
    step = 1.0 + 0.001 * (1 if asks else -1)
    tail = []
    for _ in range(rng.randrange(0, 6)):
        last *= step
        tail.append((last, rng.uniform(0.001, 20.0)))
    return tuple(head + tail)


@settings(max_examples=400, deadline=None)
@given(
    center=st.floats(10.0, 5e4),
    skew=st.floats(0.99, 1.02),
    data=st.data(),
    fees=st.tuples(st.sampled_from([0.0, 0.001]), st.sampled_from([0.0, 0.0026])),
    mins=st.tuples(st.sampled_from([0.0, 0.0, 5.0]), st.sampled_from([0.0, 0.0, 0.01])),
    transfer=st.sampled_from([0.0, 0.0, 0.001]),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_change_beyond_the_reach_leaves_the_pair_result_unchanged(
    center: float,
    skew: float,
    data: st.DataObject,
    fees: tuple[float, float],
    mins: tuple[float, float],
    transfer: float,
    seed: int,
) -> None:
    asks = data.draw(side(center, asks=True))
    bids = data.draw(side(center * skew, asks=False))
    notionals = [100.0, 1000.0, center * 5]
    buy = Leg(asks, fees[0], 1.0, mins[0], mins[1] / 10)
    sell = Leg(bids, fees[1], 1.0, mins[0], mins[1] / 10)
    result, reach_a, reach_b = evaluate_pair_reach(
        "X", "a", "b", buy, sell, notionals, transfer, 0.0, 1.0
    )
    assert result == evaluate_pair("X", "a", "b", buy, sell, notionals, transfer, 0.0, 1.0)
    assert 1 <= reach_a <= len(asks) + 1 and 1 <= reach_b <= len(bids) + 1
    rng = random.Random(seed)
    new_asks = mutate_beyond(rng, asks, reach_a, asks=True) if reach_a <= len(asks) else asks
    new_bids = mutate_beyond(rng, bids, reach_b, asks=False) if reach_b <= len(bids) else bids
    again = evaluate_pair(
        "X", "a", "b",
        Leg(new_asks, fees[0], 1.0, mins[0], mins[1] / 10),
        Leg(new_bids, fees[1], 1.0, mins[0], mins[1] / 10),
        notionals, transfer, 0.0, 1.0,
    )  # fmt: skip
    assert again == result


def test_a_walk_off_the_end_reports_len_plus_one() -> None:
    asks = ((100.0, 1.0), (101.0, 1.0))
    bids = ((100.5, 5.0),)
    _, reach_a, _ = evaluate_pair_reach(
        "X", "a", "b", Leg(asks, 0.0, 1.0), Leg(bids, 0.0, 1.0), [1000.0], 0.0, 0.0, 1.0
    )
    # 1,000 needs more than the 201 of copied asks: "not fillable at this depth" depends on
    # there being no third level, so the count is part of what was read.
    assert reach_a == 3


# -- through MarketState --------------------------------------------------------------------------
class _Log(list[dict[str, Any]]):
    def append_log(self, entry: Mapping[str, Any], dedupe_key: str | None = None) -> None:
        self.append(dict(entry))


class _NeverCached(dict[Any, Any]):
    """A pair cache that never holds anything: every update re-evaluates in full."""

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


def _state(full: bool) -> tuple[MarketState, dict[FeedKey, FeedStats], FakeClock, _Log]:
    config = parse(
        {
            "exchanges": {"binance": {}, "kraken": {}},
            "symbols": {"BTC/USD": {"binance": "BTC/USD", "kraken": "BTC/USD"}},
            "notionals": [500, 2000, 8000],
            "windows": {"open_threshold": 0.0, "close_threshold": -0.0005},
        },
        environ={},
    )
    feeds = {
        FeedKey(("binance", "BTC/USD")): FeedStats("binance", "BTC/USD", "BTC/USD"),
        FeedKey(("kraken", "BTC/USD")): FeedStats("kraken", "BTC/USD", "BTC/USD"),
    }
    fees = FeeTable(config)
    fees.load("binance", {"BTC/USD": MarketInfo(0.001, 10.0, 0.0)})
    fees.load("kraken", {"BTC/USD": MarketInfo(0.0026, 0.0, 0.0001)})
    clock = FakeClock()
    log = _Log()
    state = MarketState(config, feeds, fees, log, clock)
    if full:
        state._evaluated = _NeverCached()
    return state, feeds, clock, log


def _pairs(state: MarketState) -> dict[Any, tuple[Any, ...]]:
    out: dict[Any, tuple[Any, ...]] = {}
    for key, r in state.live_pairs():
        assert isinstance(r, PairResult)
        out[key] = (r.gross_spread, r.fills, r.optimum, r.computed_at)
    return out


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(5, 40))
def test_state_with_skips_matches_full_re_evaluation(seed: int, steps: int) -> None:
    rng = random.Random(seed)
    books: dict[str, tuple[list[list[float]], list[list[float]]]] = {}
    for ex, mid in (("binance", 100.0), ("kraken", 100.0 * rng.uniform(0.995, 1.01))):
        asks = [[mid * (1 + 0.0005 * (i + 1)), rng.uniform(0.1, 30)] for i in range(40)]
        bids = [[mid * (1 - 0.0005 * (i + 1)), rng.uniform(0.1, 30)] for i in range(40)]
        books[ex] = (bids, asks)
    runs = [_state(full=False), _state(full=True)]
    seen: list[list[Any]] = [[], []]
    for _ in range(steps):
        ex = rng.choice(["binance", "kraken"])
        bids, asks = books[ex]
        for _ in range(rng.randrange(1, 3)):
            levels = rng.choice([bids, asks])
            # mostly near the touch, sometimes deep, as on a real book
            i = min(int(rng.expovariate(0.15)), len(levels) - 1)
            levels[i][1] = rng.choice([rng.uniform(0.1, 30), levels[i][1] * 2])
        if rng.random() < 0.2:  # the touch moves: a dislocation, or back
            f = rng.uniform(0.995, 1.008)
            for lv in bids + asks:
                lv[0] *= f
        dt = rng.choice([0.0, 0.01, 0.5])
        for i, (state, feeds, clock, _log) in enumerate(runs):
            clock.advance(dt)
            snap = BookSnapshot(
                exchange=ex, symbol="BTC/USD", market="BTC/USD",
                bids=tuple((p, q) for p, q in bids), asks=tuple((p, q) for p, q in asks),
                exchange_ts=None, received_at=clock.time(), received_mono=clock.monotonic(),
            )  # fmt: skip
            feeds[FeedKey((ex, "BTC/USD"))].status = BookStatus.LIVE
            state.on_book(snap)
            seen[i].append(_pairs(state))
    assert seen[0] == seen[1]
    assert runs[0][3] == runs[1][3]  # the window logs
    assert runs[0][0].windows.open.keys() == runs[1][0].windows.open.keys()
    assert all(
        (w.peak_roi, w.peak_profit, w.last_seen) == (o.peak_roi, o.peak_profit, o.last_seen)
        for k, w in runs[0][0].windows.open.items()
        for o in [runs[1][0].windows.open[k]]
    )


def test_a_deep_change_is_not_re_evaluated_and_a_near_one_is(monkeypatch: Any) -> None:
    import exporter.market.state as state_module

    calls: list[str] = []
    real = state_module.evaluate_pair_reach

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(state_module, "evaluate_pair_reach", counting)
    state, feeds, clock, _log = _state(full=False)
    bids = [(100.0 - 0.05 * i, 5.0) for i in range(50)]
    asks = [(100.1 + 0.05 * i, 5.0) for i in range(50)]

    def book(ex: str) -> None:
        feeds[FeedKey((ex, "BTC/USD"))].status = BookStatus.LIVE
        snap = BookSnapshot(
            exchange=ex, symbol="BTC/USD", market="BTC/USD", bids=tuple(bids), asks=tuple(asks),
            exchange_ts=None, received_at=clock.time(), received_mono=clock.monotonic(),
        )  # fmt: skip
        state.on_book(snap)

    book("binance")
    book("kraken")
    assert len(calls) == 2  # both routes, once each
    before = _pairs(state)
    asks[45] = (asks[45][0], 7.0)  # 8,000 at ~100 needs ~16 levels of 5: 45 is out of reach
    bids[45] = (bids[45][0], 7.0)
    clock.advance(0.1)
    book("binance")
    assert len(calls) == 2
    after = _pairs(state)
    assert {k: v[:3] for k, v in after.items()} == {k: v[:3] for k, v in before.items()}
    assert all(v[3] == clock.time() for v in after.values())  # computed now all the same
    asks[0] = (asks[0][0], 1.0)  # the touch: both routes through binance change
    book("binance")
    assert len(calls) == 3  # binance's asks: buy on binance; its bids did not change

"""Property tests for exporter.analytics (arbitrage and book metrics).

Convention under test: the analytics functions require best-first sorted levels (as
BookSnapshot provides); ``sort_levels`` makes any input order give the same results.
"""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.analytics.arbitrage import (
    Leg,
    evaluate,
    evaluate_pair,
    gross_spread,
    size_optimum,
    sort_levels,
)
from exporter.analytics.book import book_metrics
from exporter.model import BookSnapshot, Fill, Level

SETTINGS = settings(max_examples=300, deadline=None)

qty_st = st.floats(min_value=1e-4, max_value=50.0, allow_nan=False, allow_infinity=False)
offset_st = st.floats(min_value=-0.03, max_value=0.03, allow_nan=False, allow_infinity=False)
fee_st = st.sampled_from([0.0, 0.0004, 0.001, 0.0026]) | st.floats(min_value=0.0, max_value=0.01)
rate_st = st.sampled_from([1.0]) | st.floats(min_value=0.9, max_value=1.1)
transfer_st = st.sampled_from([0.0]) | st.floats(min_value=0.0, max_value=0.5)
bps_st = st.sampled_from([0.0]) | st.floats(min_value=0.0, max_value=50.0)


@st.composite
def raw_levels(draw: st.DrawFn, center: float) -> list[Level]:
    """Unsorted levels around ``center`` (duplicated prices allowed)."""
    offsets = draw(st.lists(offset_st, min_size=1, max_size=25))
    return [(center * (1.0 + o), draw(qty_st)) for o in offsets]


@st.composite
def scenario(draw: st.DrawFn) -> tuple[Leg, Leg, float, float, list[float]]:
    center = draw(st.floats(min_value=1.0, max_value=5e4))
    asks = sort_levels(draw(raw_levels(center)), "asks")
    bids = sort_levels(draw(raw_levels(center * draw(st.floats(0.98, 1.03)))), "bids")
    # minimums: usually none, sometimes a fraction of the copied depth (market quote / base)
    mins = st.sampled_from([0.0, 0.0, 0.0]) | st.floats(min_value=0.0, max_value=0.3)
    buy = Leg(
        asks,
        draw(fee_st),
        draw(rate_st),
        min_cost=draw(mins) * sum(p * q for p, q in asks),
        min_amount=draw(mins) * sum(q for _, q in asks),
    )
    sell = Leg(
        bids,
        draw(fee_st),
        draw(rate_st),
        min_cost=draw(mins) * sum(p * q for p, q in bids),
        min_amount=draw(mins) * sum(q for _, q in bids),
    )
    depth_q = sum(p * q for p, q in asks) * buy.rate
    fracs = draw(st.lists(st.floats(min_value=1e-4, max_value=1.2), min_size=1, max_size=4))
    return (
        buy,
        sell,
        draw(transfer_st) * 0.1 * (depth_q / center),
        draw(bps_st),
        [f * depth_q for f in fracs],
    )


def grid(buy: Leg, n: int = 60) -> list[float]:
    depth_q = sum(p * q for p, q in buy.levels) * buy.rate
    return [depth_q * k / n for k in range(1, n + 1)]


def tol(q: float) -> float:
    return 1e-9 * max(1.0, q)


def finite_fill(f: Fill) -> bool:
    if not f.fillable:
        return f.net_profit is None and f.net_roi is None
    assert f.net_profit is not None and f.net_roi is not None
    return math.isfinite(f.net_profit) and math.isfinite(f.net_roi)


@SETTINGS
@given(scenario())
def test_net_roi_never_exceeds_gross_spread(s: tuple[Leg, Leg, float, float, list[float]]) -> None:
    buy, sell, t, bps, notionals = s
    gross = gross_spread(buy.levels[0][0], buy.rate, sell.levels[0][0], sell.rate)
    for q in [*notionals, *grid(buy)]:
        f = evaluate(buy, sell, q, t, bps)
        if f.fillable:
            assert f.net_roi is not None
            assert f.net_roi <= gross + 1e-12


@SETTINGS
@given(scenario(), st.randoms(use_true_random=False))
def test_results_invariant_to_input_order_after_sort_levels(
    s: tuple[Leg, Leg, float, float, list[float]], rnd: random.Random
) -> None:
    buy, sell, t, bps, notionals = s
    shuffled_asks = list(buy.levels)
    shuffled_bids = list(sell.levels)
    rnd.shuffle(shuffled_asks)
    rnd.shuffle(shuffled_bids)
    buy2 = dataclasses.replace(buy, levels=sort_levels(shuffled_asks, "asks"))
    sell2 = dataclasses.replace(sell, levels=sort_levels(reversed(shuffled_bids), "bids"))
    a = evaluate_pair("X/Y", "a", "b", buy, sell, notionals, t, bps, 0.0)
    b = evaluate_pair("X/Y", "a", "b", buy2, sell2, notionals, t, bps, 0.0)
    assert a.gross_spread == b.gross_spread
    for fa, fb in zip(a.fills, b.fills, strict=True):
        assert fa.fillable == fb.fillable
        if fa.fillable and fb.fillable:
            assert fa.net_profit == pytest.approx(fb.net_profit, rel=1e-9, abs=tol(fa.notional))
    assert (a.optimum is None) == (b.optimum is None)
    if a.optimum is not None and b.optimum is not None:
        assert a.optimum.optimal_net_profit == pytest.approx(
            b.optimum.optimal_net_profit, rel=1e-9, abs=tol(a.optimum.optimal_notional)
        )


@SETTINGS
@given(scenario())
def test_no_nan_or_inf(s: tuple[Leg, Leg, float, float, list[float]]) -> None:
    buy, sell, t, bps, notionals = s
    r = evaluate_pair("X/Y", "a", "b", buy, sell, [*notionals, *grid(buy, 10)], t, bps, 0.0)
    assert math.isfinite(r.gross_spread)
    assert all(finite_fill(f) for f in r.fills)
    if r.optimum is not None:
        o = r.optimum
        assert math.isfinite(o.breakeven_notional) and o.breakeven_notional > 0.0
        assert math.isfinite(o.optimal_notional) and o.optimal_notional > 0.0
        assert math.isfinite(o.optimal_net_profit) and o.optimal_net_profit >= 0.0
        assert o.breakeven_notional >= o.optimal_notional


wide_price = st.floats(min_value=1e-6, max_value=1e6)
wide_qty = st.floats(min_value=1e-8, max_value=1e6)
wide_levels = st.lists(st.tuples(wide_price, wide_qty), min_size=1, max_size=20)


@SETTINGS
@given(
    wide_levels,
    wide_levels,
    fee_st,
    fee_st,
    st.floats(min_value=1e-3, max_value=1e3),
    st.floats(min_value=1e-3, max_value=1e3),
    st.floats(min_value=0.0, max_value=1e3),
    bps_st,
    st.lists(st.floats(min_value=1e-6, max_value=1e9), min_size=1, max_size=4),
)
def test_no_nan_or_inf_wide_magnitudes(
    asks: list[Level],
    bids: list[Level],
    f_a: float,
    f_b: float,
    r_a: float,
    r_b: float,
    t: float,
    bps: float,
    notionals: list[float],
) -> None:
    buy = Leg(sort_levels(asks, "asks"), f_a, r_a)
    sell = Leg(sort_levels(bids, "bids"), f_b, r_b)
    r = evaluate_pair("X/Y", "a", "b", buy, sell, notionals, t, bps, 0.0)
    assert math.isfinite(r.gross_spread)
    assert all(finite_fill(f) for f in r.fills)
    if r.optimum is not None:
        o = r.optimum
        assert all(
            math.isfinite(v)
            for v in (o.breakeven_notional, o.optimal_notional, o.optimal_net_profit)
        )
        assert o.breakeven_notional >= o.optimal_notional > 0.0


@SETTINGS
@given(scenario())
def test_optimum_beats_every_fillable_notional(
    s: tuple[Leg, Leg, float, float, list[float]],
) -> None:
    buy, sell, t, bps, notionals = s
    opt = size_optimum(buy, sell, t, bps)
    for q in [*notionals, *grid(buy)]:
        f = evaluate(buy, sell, q, t, bps)
        if not f.fillable:
            continue
        assert f.net_profit is not None
        if opt is None:
            # no profitable size: nothing fillable makes money
            assert f.net_profit < tol(q)
        else:
            assert f.net_profit <= opt.optimal_net_profit + tol(q)
            if f.net_profit > tol(q):
                assert q <= opt.breakeven_notional * (1.0 + 1e-9)


@SETTINGS
@given(scenario())
def test_breakeven_and_optimal_evaluate_consistently(
    s: tuple[Leg, Leg, float, float, list[float]],
) -> None:
    buy, sell, t, bps, _ = s
    opt = size_optimum(buy, sell, t, bps)
    if opt is None:
        return
    at_opt = evaluate(buy, sell, opt.optimal_notional, t, bps)
    assert at_opt.fillable and at_opt.net_profit is not None
    assert at_opt.net_profit == pytest.approx(
        opt.optimal_net_profit, rel=1e-9, abs=tol(opt.optimal_notional)
    )
    at_be = evaluate(buy, sell, opt.breakeven_notional, t, bps)
    assert at_be.fillable and at_be.net_profit is not None
    assert at_be.net_profit >= -tol(opt.breakeven_notional)
    if not opt.capped:
        assert at_be.net_profit == pytest.approx(0.0, abs=tol(opt.breakeven_notional))
        beyond = evaluate(buy, sell, opt.breakeven_notional * 1.001 + 1e-6, t, bps)
        # Past break-even profit is negative, or exactly flat at zero (equal prices, no fees:
        # a zero-slope segment where every size breaks even; found by hypothesis).
        assert not beyond.fillable or (
            beyond.net_profit is not None and beyond.net_profit <= tol(opt.breakeven_notional)
        )


# ------------------------------------------------------------------------------ book metrics

BANDS = (0.001, 0.005, 0.01, 0.05)


@st.composite
def book(draw: st.DrawFn) -> BookSnapshot:
    center = draw(st.floats(min_value=0.01, max_value=1e5))
    half = draw(st.floats(min_value=0.0, max_value=0.01))
    bid_off = draw(st.lists(st.floats(0.0, 0.06), min_size=0, max_size=40, unique=True))
    ask_off = draw(st.lists(st.floats(0.0, 0.06), min_size=0, max_size=40, unique=True))
    bids = sort_levels([(center * (1 - half - o), draw(qty_st)) for o in bid_off], "bids")
    asks = sort_levels([(center * (1 + half + o), draw(qty_st)) for o in ask_off], "asks")
    return BookSnapshot("x", "X/Y", "X/Y", bids, asks, None, 0.0, 0.0)


@SETTINGS
@given(book(), rate_st)
def test_book_metrics_match_brute_force(snap: BookSnapshot, rate: float) -> None:
    m = book_metrics(snap, rate, BANDS)
    if not snap.bids or not snap.asks:
        assert m is None
        return
    assert m is not None
    mid = (snap.bids[0][0] + snap.asks[0][0]) / 2
    assert m.mid == mid
    assert math.isfinite(m.spread_ratio)
    prev = (0.0, 0.0)
    for b in BANDS:
        bd = sum(p * q for p, q in snap.bids if p >= mid * (1 - b)) * rate
        ad = sum(p * q for p, q in snap.asks if p <= mid * (1 + b)) * rate
        assert m.depth[b][0] == pytest.approx(bd, rel=1e-12)
        assert m.depth[b][1] == pytest.approx(ad, rel=1e-12)
        assert m.depth[b][0] >= prev[0] and m.depth[b][1] >= prev[1]
        prev = m.depth[b]
        complete = snap.bids[-1][0] <= mid * (1 - b) and snap.asks[-1][0] >= mid * (1 + b)
        assert m.depth_complete[b] is complete
        if bd + ad > 0:
            assert -1.0 <= m.imbalance[b] <= 1.0
            assert math.isfinite(m.imbalance[b])
        else:
            assert b not in m.imbalance

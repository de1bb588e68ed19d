"""Hand-computed checks of exporter.analytics.arbitrage (arithmetic in the comments)."""

from __future__ import annotations

import pytest

from exporter.analytics.arbitrage import (
    Leg,
    evaluate,
    evaluate_pair,
    gross_spread,
    size_optimum,
    sort_levels,
)
from exporter.model import Fill, Level, SizeOptimum

# Buy leg A: asks low->high. Cumulative: base 1 / 3 / 8, cost 100 / 302 / 812.
ASKS: tuple[Level, ...] = ((100.0, 1.0), (101.0, 2.0), (102.0, 5.0))
# Sell leg B: bids high->low. Cumulative: base 2 / 5, proceeds 206 / 512.
BIDS: tuple[Level, ...] = ((103.0, 2.0), (102.0, 3.0))
# A sell book with a steep second level: cumulative base 2 / 12, proceeds 220 / 1210.
STEEP_BIDS: tuple[Level, ...] = ((110.0, 2.0), (99.0, 10.0))


def approx(x: float) -> object:
    return pytest.approx(x, rel=1e-12, abs=1e-9)


def profit_of(fill: Fill) -> float:
    assert fill.fillable
    assert fill.net_profit is not None
    return fill.net_profit


# ---------------------------------------------------------------------------- gross spread


def test_gross_spread_with_conversion() -> None:
    # (103*1 - 100*0.999) / (100*0.999) = (103 - 99.9) / 99.9
    assert gross_spread(100.0, 0.999, 103.0, 1.0) == approx(3.1 / 99.9)
    assert gross_spread(100.0, 1.0, 99.0, 1.0) == approx(-0.01)


# ---------------------------------------------------------------------------- evaluate


def test_vwap_across_levels_partial_last_level() -> None:
    # Q = 300: level 1 costs 100 -> b = 1, 200 left; level 2 (202 available) takes
    # 200/101 -> b = 1 + 200/101 = 301/101 (VWAP 300 / (301/101) = 100.664...).
    # Sell 301/101 into B: 2*103 = 206, then (301/101 - 2) = 99/101 at 102 = 10098/101
    # P_B = 206 + 10098/101 = 30904/101; profit = 30904/101 - 300 = 604/101 = 5.9801...
    f = evaluate(Leg(ASKS, 0.0, 1.0), Leg(BIDS, 0.0, 1.0), 300.0)
    assert f.notional == 300.0
    assert profit_of(f) == approx(604 / 101)
    assert f.net_roi == approx(604 / 101 / 300)


def test_both_fees_and_per_leg_difference() -> None:
    # f_A = 0.1%, f_B = 0.2%: b' = 301/101 * 0.999 = 2.977217...;
    # P_B = (206 + (b' - 2) * 102) * 0.998; profit = P_B - 300
    b1 = 301 / 101 * 0.999
    expected = (206 + (b1 - 2) * 102) * 0.998 - 300
    f = evaluate(Leg(ASKS, 0.001, 1.0), Leg(BIDS, 0.002, 1.0), 300.0)
    assert profit_of(f) == approx(expected)  # ~5.06
    # swapped fees (f_A = 0.2%, f_B = 0.1%) are a different trade: b' = 301/101 * 0.998
    b2 = 301 / 101 * 0.998
    swapped = (206 + (b2 - 2) * 102) * 0.999 - 300
    g = evaluate(Leg(ASKS, 0.002, 1.0), Leg(BIDS, 0.001, 1.0), 300.0)
    assert profit_of(g) == approx(swapped)
    assert profit_of(f) != pytest.approx(profit_of(g), rel=1e-9)


def test_conversion_rate_on_buy_leg() -> None:
    # Buy on a USDT market, 1 USDT = 0.999 USD. Q = 299.7 USD -> Q_A = 299.7/0.999 = 300 USDT,
    # the same walk as above: b = 301/101, P_B = 30904/101 USD.
    # profit = 30904/101 - 299.7 = 6.2801...
    f = evaluate(Leg(ASKS, 0.0, 0.999), Leg(BIDS, 0.0, 1.0), 299.7)
    assert profit_of(f) == approx(30904 / 101 - 299.7)
    # rate on the sell leg instead (B quotes USDT, 1 USDT = 1.001 USD):
    # profit = 30904/101 * 1.001 - 300
    g = evaluate(Leg(ASKS, 0.0, 1.0), Leg(BIDS, 0.0, 1.001), 300.0)
    assert profit_of(g) == approx(30904 / 101 * 1.001 - 300)


def test_transfer_cost_and_rebalance_bps() -> None:
    buy, sell = Leg(ASKS, 0.0, 1.0), Leg(BIDS, 0.0, 1.0)
    # inventory model (t = 0): 604/101 as above
    assert profit_of(evaluate(buy, sell, 300.0)) == approx(604 / 101)
    # transfer model, t = 0.01 base: b' = 301/101 - 0.01, all of it still at 102 beyond the
    # first 2 -> proceeds fall by 0.01*102 = 1.02: profit = 604/101 - 1.02
    assert profit_of(evaluate(buy, sell, 300.0, transfer_cost=0.01)) == approx(604 / 101 - 1.02)
    # rebalance 10 bps of Q = 300 -> 0.3
    f = evaluate(buy, sell, 300.0, rebalance_cost_bps=10.0)
    assert profit_of(f) == approx(604 / 101 - 0.3)


def test_not_fillable_on_buy_leg() -> None:
    sell = Leg(BIDS, 0.0, 1.0)
    # A's copied asks cost 812 in total
    f = evaluate(Leg(ASKS, 0.0, 1.0), Leg(((103.0, 100.0),), 0.0, 1.0), 813.0)
    assert f == Fill(notional=813.0, fillable=False)
    assert f.net_profit is None and f.net_roi is None
    # exactly the whole copied depth is fillable: b = 8
    whole = evaluate(Leg(ASKS, 0.0, 1.0), Leg(((103.0, 100.0),), 0.0, 1.0), 812.0)
    assert profit_of(whole) == approx(8 * 103 - 812)
    # zero / negative notional
    assert not evaluate(Leg(ASKS, 0.0, 1.0), sell, 0.0).fillable


def test_not_fillable_on_sell_leg() -> None:
    buy, sell = Leg(ASKS, 0.0, 1.0), Leg(BIDS, 0.0, 1.0)
    # B holds 5 base. Q = 506 buys exactly 1 + 2 + 204/102 = 5 -> fillable (P_B = 512)
    assert profit_of(evaluate(buy, sell, 506.0)) == approx(512 - 506)
    # Q = 600 buys 3 + 298/102 = 5.92 > 5 -> not fillable
    assert not evaluate(buy, sell, 600.0).fillable
    # b' <= 0: transfer cost 5 base eats the ~2.98 bought
    assert not evaluate(buy, sell, 300.0, transfer_cost=5.0).fillable


def test_below_minimums() -> None:
    bids = Leg(BIDS, 0.0, 1.0)
    # Q_A = 300 < buy min_cost 500
    assert not evaluate(Leg(ASKS, 0.0, 1.0, min_cost=500.0), bids, 300.0).fillable
    # min cost is in the market's quote: Q = 300 USD at 0.5 USD/USDT is Q_A = 600 USDT >= 500
    deep = Leg(((103.0, 100.0),), 0.0, 1.0)
    assert evaluate(Leg(ASKS, 0.0, 0.5, min_cost=500.0), deep, 300.0).fillable
    # b = 2.98 < buy min_amount 3
    assert not evaluate(Leg(ASKS, 0.0, 1.0, min_amount=3.0), bids, 300.0).fillable
    buy = Leg(ASKS, 0.0, 1.0)
    # b' = 2.98 < sell min_amount 3
    assert not evaluate(buy, Leg(BIDS, 0.0, 1.0, min_amount=3.0), 300.0).fillable
    # gross proceeds 305.98 < sell min_cost 310
    assert not evaluate(buy, Leg(BIDS, 0.0, 1.0, min_cost=310.0), 300.0).fillable
    # ... and 305 passes
    assert evaluate(buy, Leg(BIDS, 0.0, 1.0, min_cost=305.0), 300.0).fillable


# ---------------------------------------------------------------------------- size_optimum


def test_optimum_not_capped_inventory() -> None:
    # t = 0, no fees, STEEP_BIDS. Breakpoints in b (base bought): A at 1, 3, 8; B at 2, 12.
    #   b=1: Q=100, P=110            profit 10
    #   b=2: Q=100+101=201, P=220    profit 19   <- optimal
    #   b=3: Q=302, P=220+99=319     profit 17
    #   b=8: Q=812, P=319+5*99=814   profit 2   -> A's depth runs out with profit >= 0: capped
    opt = size_optimum(Leg(ASKS, 0.0, 1.0), Leg(STEEP_BIDS, 0.0, 1.0))
    assert opt == SizeOptimum(
        breakeven_notional=approx(812.0),  # type: ignore[arg-type]
        optimal_notional=approx(201.0),  # type: ignore[arg-type]
        optimal_net_profit=approx(19.0),  # type: ignore[arg-type]
        capped=True,
    )


def test_optimum_rebalance_bps_breakeven_inside_segment() -> None:
    # as above with 100 bps rebalance: profit = P - 1.01*Q
    #   b=1: 110 - 101 = 9; b=2: 220 - 203.01 = 16.99 (optimal); b=3: 319 - 305.02 = 13.98;
    #   b=8: 814 - 820.12 = -6.12 -> crosses zero between Q=302 and Q=812, linearly:
    #   Q = 302 + 510 * 13.98 / (13.98 + 6.12)
    opt = size_optimum(Leg(ASKS, 0.0, 1.0), Leg(STEEP_BIDS, 0.0, 1.0), rebalance_cost_bps=100.0)
    assert opt is not None
    assert opt.optimal_notional == approx(201.0)
    assert opt.optimal_net_profit == approx(16.99)
    assert opt.breakeven_notional == approx(302 + 510 * 13.98 / 20.1)
    assert not opt.capped


def test_optimum_with_transfer_cost_roi_not_monotone() -> None:
    # t = 0.05 base, no fees. b' = b - 0.05, so B's breakpoints map to b = 2.05 and 12.05.
    #   b=0.05 (b'=0): Q=5,   P=0                        profit -5
    #   b=1:    Q=100,        P=0.95*110 = 104.5         profit 4.5
    #   b=2.05: Q=100+1.05*101 = 206.05, P=220           profit 13.95 <- optimal
    #   b=3:    Q=302,        P=220+0.95*99 = 314.05     profit 12.05
    #   b=8:    Q=812,        P=220+5.95*99 = 809.05     profit -2.95 (not capped)
    # breakeven = 302 + 510 * 12.05/15 = 711.7 (b = 3 + 409.7/102, P = 220 + 4.9666*99 = 711.7)
    buy, sell = Leg(ASKS, 0.0, 1.0), Leg(STEEP_BIDS, 0.0, 1.0)
    opt = size_optimum(buy, sell, transfer_cost=0.05)
    assert opt is not None
    assert opt.optimal_notional == approx(206.05)
    assert opt.optimal_net_profit == approx(13.95)
    assert opt.breakeven_notional == approx(711.7)
    assert not opt.capped
    assert profit_of(evaluate(buy, sell, 711.7, transfer_cost=0.05)) == approx(0.0)
    # ROI is NOT monotone: Q=50 (b=0.5, b'=0.45, P=49.5) loses -1%, then rises, then falls
    rois = [
        evaluate(buy, sell, q, transfer_cost=0.05).net_roi for q in (50.0, 100.0, 206.05, 302.0)
    ]
    assert rois == [approx(-0.01), approx(0.045), approx(13.95 / 206.05), approx(12.05 / 302)]
    # the same books in the inventory model: ROI only falls and the optimum differs
    inv = size_optimum(buy, sell)
    assert inv is not None and inv.optimal_notional == approx(201.0) and inv.capped


def test_optimum_capped_by_sell_depth() -> None:
    # BIDS hold 5 base: b=1: Q=100 P=103 (3); b=2: Q=201 P=206 (5); b=3: Q=302 P=308 (6);
    # b=5: Q=506, P=512 (6): flat last segment (buy 102, sell 102). Optimal = the smallest Q
    # with profit 6 = 302; B's depth runs out at profit 6 >= 0 -> breakeven 506, capped.
    opt = size_optimum(Leg(ASKS, 0.0, 1.0), Leg(BIDS, 0.0, 1.0))
    assert opt is not None
    assert opt.optimal_notional == approx(302.0)
    assert opt.optimal_net_profit == approx(6.0)
    assert opt.breakeven_notional == approx(506.0)
    assert opt.capped


def test_optimum_conversion_rate() -> None:
    # buy leg quoted in USDT at 0.5 USD each: every Q halves, P unchanged.
    #   b=1: Q=50 P=110 (60); b=2: Q=100.5 P=220 (119.5); b=3: Q=151 P=319 (168);
    #   b=8: Q=406 P=814 (408) -> optimal = capped end
    opt = size_optimum(Leg(ASKS, 0.0, 0.5), Leg(STEEP_BIDS, 0.0, 1.0))
    assert opt is not None
    assert opt.optimal_notional == approx(406.0)
    assert opt.optimal_net_profit == approx(408.0)
    assert opt.breakeven_notional == approx(406.0)
    assert opt.capped


def test_optimum_respects_min_cost() -> None:
    # the t = 0.05 case with buy min_cost 250: the range starts at Q = 250
    # (b = 1 + 150/101 = 2.48515, b' = 2.43515, P = 220 + 0.43515*99 = 263.08);
    # profit falls from there: optimal Q = 250, breakeven still 711.7
    b = 1 + 150 / 101
    expected = 220 + (b - 0.05 - 2) * 99 - 250
    opt = size_optimum(
        Leg(ASKS, 0.0, 1.0, min_cost=250.0), Leg(STEEP_BIDS, 0.0, 1.0), transfer_cost=0.05
    )
    assert opt is not None
    assert opt.optimal_notional == approx(250.0)
    assert opt.optimal_net_profit == approx(expected)
    assert opt.breakeven_notional == approx(711.7)
    # a minimum beyond the copied depth: nothing fillable
    assert size_optimum(Leg(ASKS, 0.0, 1.0, min_cost=1000.0), Leg(STEEP_BIDS, 0.0, 1.0)) is None


def test_optimum_none_when_never_profitable() -> None:
    # bid below ask
    assert size_optimum(Leg(((100.0, 1.0),), 0.0, 1.0), Leg(((99.0, 1.0),), 0.0, 1.0)) is None
    # 0.1% gross spread eaten by 2 x 0.1% fees: 100.1 * 0.999^2 = 99.9 < 100
    assert size_optimum(Leg(((100.0, 1.0),), 0.001, 1.0), Leg(((100.1, 1.0),), 0.001, 1.0)) is None
    # transfer cost larger than what the whole depth can earn: 8 base, t = 1 -> b' = 7,
    # P = 220 + 5*99 = 715 < 812
    assert size_optimum(Leg(ASKS, 0.0, 1.0), Leg(STEEP_BIDS, 0.0, 1.0), transfer_cost=1.0) is None
    # empty side
    assert size_optimum(Leg((), 0.0, 1.0), Leg(BIDS, 0.0, 1.0)) is None


# ---------------------------------------------------------------------------- pair / helpers


def test_evaluate_pair() -> None:
    buy, sell = Leg(ASKS, 0.0, 1.0), Leg(BIDS, 0.0, 1.0)
    r = evaluate_pair(
        "BTC/USD", "kraken", "binance", buy, sell, [300.0, 50.0, 813.0], 0.0, 0.0, 7.0
    )
    assert (r.symbol, r.buy_exchange, r.sell_exchange, r.computed_at) == (
        "BTC/USD",
        "kraken",
        "binance",
        7.0,
    )
    assert r.gross_spread == approx(0.03)  # (103 - 100) / 100
    assert [f.notional for f in r.fills] == [300.0, 50.0, 813.0]
    assert profit_of(r.fills[0]) == approx(604 / 101)
    assert profit_of(r.fills[1]) == approx(50 * 1.03 - 50)  # 0.5 base at 103
    assert not r.fills[2].fillable
    assert r.optimum == size_optimum(buy, sell)
    with pytest.raises(ValueError):
        evaluate_pair("BTC/USD", "a", "b", Leg((), 0.0, 1.0), sell, [1.0], 0.0, 0.0, 0.0)


def test_leg_validation() -> None:
    with pytest.raises(ValueError):
        Leg(ASKS, 1.0, 1.0)
    with pytest.raises(ValueError):
        Leg(ASKS, -0.1, 1.0)
    with pytest.raises(ValueError):
        Leg(ASKS, 0.0, 0.0)
    with pytest.raises(ValueError):
        Leg(ASKS, 0.0, float("nan"))
    with pytest.raises(ValueError):
        Leg(ASKS, 0.0, 1.0, min_cost=-1.0)


def test_sort_levels() -> None:
    assert sort_levels([(102.0, 5.0), (100.0, 1.0), (101.0, 2.0)], "asks") == ASKS
    assert sort_levels([(102.0, 3.0), (103.0, 2.0)], "bids") == BIDS

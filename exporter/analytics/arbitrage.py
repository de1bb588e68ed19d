"""Cross-exchange opportunity math (docs/analytics.md, "Opportunity"): pure, no I/O.

Buy on exchange A (walk A's asks), sell on exchange B (walk B's bids), notional ``Q`` in the
canonical quote C:

* ``Q_A = Q / r_A``; ``b`` = base bought walking A's asks (the last level partially);
* ``b' = b * (1 - f_A) - t`` (``t`` = transfer cost in base; 0 in the ``inventory`` model);
* ``P_B`` = proceeds of selling ``b'`` into B's bids ``* (1 - f_B)`` (B's quote);
* net profit = ``P_B * r_B - Q - Q * rebalance_cost_bps / 1e4``; net ROI = profit / Q.

Conventions
-----------
* Input order: ``Leg.levels`` MUST be sorted best first (asks low->high for the buy leg, bids
  high->low for the sell leg), as :class:`~exporter.model.BookSnapshot` already guarantees.
  The functions do not sort (that would cost more than the walk); :func:`sort_levels` sorts
  levels that come from elsewhere.
* Fillability tolerance: a walk that falls short of the copied depth by at most ``REL_TOL``
  (relative) still counts as filled, and the minimum cost/amount checks accept values within
  ``REL_TOL`` below the minimum, so that notionals returned by :func:`size_optimum` (e.g. a
  break-even capped exactly at the copied depth) evaluate as fillable despite rounding.
* Minimums: buy leg ``Q_A >= min_cost`` and ``b >= min_amount``; sell leg ``b' >= min_amount``
  and gross proceeds (before fee, B's quote) ``>= min_cost``; ``b' <= 0`` is never fillable.
* :func:`size_optimum` returns ``None`` when no notional ``Q > 0`` inside the fillable range has
  net profit >= 0 (or nothing at all is fillable). The metric exporter then exports
  ``breakeven``/``optimal``/``optimal_net_profit`` as 0: "no profitable size".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from exporter.model import Fill, Level, PairResult, SizeOptimum

REL_TOL = 1e-9
"""Relative slack for 'the copied levels absorb the order' and minimum cost/amount checks."""

_BPS = 1e-4


@dataclass(frozen=True, slots=True)
class Leg:
    """One side of a trade on one market.

    ``levels``: asks low->high (buy leg) or bids high->low (sell leg), prices in the market's
    quote; ``fee``: taker fee in [0, 1); ``rate``: market quote -> canonical quote (> 0, no
    default: never assume USDT == USD); ``min_cost`` in the market's quote and ``min_amount``
    in base (0 = no minimum).
    """

    levels: tuple[Level, ...]
    fee: float
    rate: float
    min_cost: float = 0.0
    min_amount: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.fee < 1.0:
            raise ValueError(f"fee must be in [0, 1), got {self.fee!r}")
        if not 0.0 < self.rate < math.inf:
            raise ValueError(f"rate must be finite and > 0, got {self.rate!r}")
        if not (0.0 <= self.min_cost < math.inf and 0.0 <= self.min_amount < math.inf):
            raise ValueError("min_cost and min_amount must be finite and >= 0")


def sort_levels(levels: Iterable[Level], side: Literal["asks", "bids"]) -> tuple[Level, ...]:
    """Levels sorted best first: asks by ascending price, bids by descending price."""
    return tuple(sorted(levels, key=lambda lv: lv[0], reverse=side == "bids"))


def gross_spread(buy_ask: float, r_buy: float, sell_bid: float, r_sell: float) -> float:
    """Top-of-book gross spread ``(bid_B*r_B - ask_A*r_A) / (ask_A*r_A)``."""
    cost = buy_ask * r_buy
    return (sell_bid * r_sell - cost) / cost


def evaluate(
    buy: Leg,
    sell: Leg,
    notional: float,
    transfer_cost: float = 0.0,
    rebalance_cost_bps: float = 0.0,
) -> Fill:
    """Net profit and ROI of buying ``notional`` (canonical quote) on ``buy``, selling on
    ``sell``; ``Fill(fillable=False)`` without profit/ROI when not fillable."""
    return _evaluate(buy, sell, notional, transfer_cost, rebalance_cost_bps)[0]


def _evaluate(
    buy: Leg, sell: Leg, notional: float, transfer_cost: float, rebalance_cost_bps: float
) -> tuple[Fill, int, int]:
    """:func:`evaluate`, and the reach of each walk (see :func:`evaluate_pair_reach`)."""
    if not notional > 0.0:
        return Fill(notional, False), 0, 0
    q_a = notional / buy.rate
    if q_a < buy.min_cost * (1.0 - REL_TOL):
        return Fill(notional, False), 0, 0

    # Walk A's asks spending q_a.
    levels = buy.levels
    remaining = q_a
    base = 0.0
    reach_a = len(levels) + 1  # walked off the end: the answer depends on the count too
    for i, (price, qty) in enumerate(levels):
        cost = price * qty
        if cost >= remaining:
            base += remaining / price
            reach_a = i + 1
            break
        base += qty
        remaining -= cost
    else:
        if remaining > q_a * REL_TOL:
            return Fill(notional, False), reach_a, 0
    if base < buy.min_amount * (1.0 - REL_TOL):
        return Fill(notional, False), reach_a, 0

    # Sell b' into B's bids.
    to_sell = base * (1.0 - buy.fee) - transfer_cost
    if not to_sell > 0.0 or to_sell < sell.min_amount * (1.0 - REL_TOL):
        return Fill(notional, False), reach_a, 0
    levels = sell.levels
    left = to_sell
    proceeds = 0.0
    reach_b = len(levels) + 1
    for j, (price, qty) in enumerate(levels):
        if qty >= left:
            proceeds += left * price
            reach_b = j + 1
            break
        proceeds += price * qty
        left -= qty
    else:
        if left > to_sell * REL_TOL:
            return Fill(notional, False), reach_a, reach_b
    if proceeds < sell.min_cost * (1.0 - REL_TOL):
        return Fill(notional, False), reach_a, reach_b

    profit = (
        proceeds * (1.0 - sell.fee) * sell.rate - notional - notional * rebalance_cost_bps * _BPS
    )
    fill = Fill(notional=notional, fillable=True, net_profit=profit, net_roi=profit / notional)
    return fill, reach_a, reach_b


def _base_for_amount(levels: tuple[Level, ...], amount: float) -> tuple[float | None, int]:
    """Base quantity whose cumulative ``price*qty`` reaches ``amount`` (None beyond depth),
    and the number of levels read (``len + 1`` when the walk ran off the end)."""
    remaining = amount
    base = 0.0
    for i, (price, qty) in enumerate(levels):
        cost = price * qty
        if cost >= remaining:
            return base + remaining / price, i + 1
        base += qty
        remaining -= cost
    return (base if remaining <= amount * REL_TOL else None), len(levels) + 1


def size_optimum(
    buy: Leg,
    sell: Leg,
    transfer_cost: float = 0.0,
    rebalance_cost_bps: float = 0.0,
) -> SizeOptimum | None:
    """Exact break-even and profit-maximising notional on the merged level breakpoints.

    Parametrised by ``b`` (base bought on A), both ``Q(b)`` and profit are piecewise linear with
    breakpoints at A's cumulative ask quantities and at the ``b`` where ``b'`` reaches one of
    B's cumulative bid quantities, so profit is linear in ``Q`` between consecutive merged
    breakpoints. With sorted levels profit(Q) is concave (concave increasing P_B of concave
    b'(Q), minus a linear cost): the walk stops as soon as profit is negative and the
    current segment's marginal profit is <= 0 (exact, from the two level prices). ROI itself
    need not be monotone (``t > 0`` makes small sizes lose the fixed transfer cost).

    * ``optimal_notional``: the smallest breakpoint ``Q > 0`` with the maximal net profit.
    * ``breakeven_notional``: the largest ``Q`` with net profit >= 0 (linear inside the
      segment where profit turns negative); >= ``optimal_notional``.
    * ``capped``: the copied depth of either book ran out while profit was still >= 0, so
      break-even (and, if profit was still increasing, the optimum) is a lower bound.
    * ``None`` when no fillable ``Q > 0`` has net profit >= 0.
    """
    return _size_optimum(buy, sell, transfer_cost, rebalance_cost_bps)[0]


def _size_optimum(
    buy: Leg, sell: Leg, transfer_cost: float, rebalance_cost_bps: float
) -> tuple[SizeOptimum | None, int, int]:
    """:func:`size_optimum`, and the reach of each walk (see :func:`evaluate_pair_reach`)."""
    asks = buy.levels
    bids = sell.levels
    n = len(asks)
    m = len(bids)
    if n == 0 or m == 0:
        return None, n + 1, m + 1
    keep = 1.0 - buy.fee  # base kept per base bought
    t = transfer_cost
    r_a = buy.rate
    h = (1.0 - sell.fee) * sell.rate  # canonical quote per unit of B's gross proceeds
    extra = rebalance_cost_bps * _BPS

    # Lowest b of the fillable range (b' >= 0 and the minimums).
    b_lo = t / keep
    if buy.min_amount > b_lo:
        b_lo = buy.min_amount
    v = (sell.min_amount + t) / keep
    if v > b_lo:
        b_lo = v
    reach_a = reach_b = 0  # levels read by the minimum-cost walks
    if buy.min_cost > 0.0:
        found, reach_a = _base_for_amount(asks, buy.min_cost)
        if found is None:
            return None, reach_a, 0
        if found > b_lo:
            b_lo = found
    if sell.min_cost > 0.0:
        found, reach_b = _base_for_amount(bids, sell.min_cost)
        if found is None:
            return None, reach_a, reach_b
        v = (found + t) / keep
        if v > b_lo:
            b_lo = v

    # Position A's walker at b_lo: i = current level, ab/ac = base/cost before level i.
    i = 0
    ab = 0.0
    ac = 0.0
    while i < n and ab + asks[i][1] <= b_lo:
        price, qty = asks[i]
        ab += qty
        ac += price * qty
        i += 1
    # From here on the walkers have read levels 0..i of A and 0..j of B (i == n: all of
    # them, and the count matters), so the reach is i + 1 and j + 1.
    if i == n and b_lo > ab:
        return None, max(reach_a, i + 1), reach_b
    # Position B's walker at x_lo = b'(b_lo): j = current level, bb/bp = base/proceeds before j.
    x_lo = keep * b_lo - t
    if x_lo < 0.0:
        x_lo = 0.0
    j = 0
    bb = 0.0
    bp = 0.0
    while j < m and bb + bids[j][1] <= x_lo:
        price, qty = bids[j]
        bb += qty
        bp += price * qty
        j += 1
    if j == m and x_lo > bb:
        return None, max(reach_a, i + 1), max(reach_b, j + 1)

    cost = ac + (b_lo - ab) * asks[i][0] if i < n else ac
    proceeds = bp + (x_lo - bb) * bids[j][0] if j < m else bp
    q = r_a * cost
    profit = proceeds * h - q - q * extra

    best_q = 0.0
    best_profit = -math.inf
    if q > 0.0:
        best_q = q
        best_profit = profit
    breakeven = q if profit >= 0.0 else -1.0
    prev_q = q
    prev_profit = profit
    exhausted = True
    unit = 1.0 + extra
    gain = h * keep / r_a  # times b_price / a_price: gross marginal value per unit of Q
    if i < n and j < m:
        a_price, a_qty = asks[i]
        b_price, b_qty = bids[j]
        a_end = ab + a_qty  # b at the end of A's current level
        b_end = (bb + b_qty + t) / keep  # b at which B's current level is used up
        while True:
            if prev_profit < 0.0 and gain * b_price <= unit * a_price:
                # Marginal profit of this segment <= 0 and later segments are no better (sorted
                # levels: asks only get dearer, bids cheaper): profit stays < 0 from here on.
                exhausted = False
                break
            if a_end <= b_end:
                ab = a_end
                ac += a_price * a_qty
                i += 1
                if b_end == a_end:
                    bb += b_qty
                    bp += b_price * b_qty
                    j += 1
                    proceeds = bp
                    if j < m:
                        b_price, b_qty = bids[j]
                        b_end = (bb + b_qty + t) / keep
                else:
                    proceeds = bp + (keep * a_end - t - bb) * b_price
                q = r_a * ac
                if i < n:
                    a_price, a_qty = asks[i]
                    a_end = ab + a_qty
            else:
                bb += b_qty
                bp += b_price * b_qty
                j += 1
                proceeds = bp
                q = r_a * (ac + (b_end - ab) * a_price)
                if j < m:
                    b_price, b_qty = bids[j]
                    b_end = (bb + b_qty + t) / keep
            profit = proceeds * h - q * unit
            if profit >= 0.0:
                breakeven = q
                if profit > best_profit and q > 0.0:
                    best_q = q
                    best_profit = profit
            elif prev_profit >= 0.0:
                # Crosses zero inside (prev_q, q]: solve linearly.
                breakeven = prev_q + (q - prev_q) * prev_profit / (prev_profit - profit)
            prev_q = q
            prev_profit = profit
            if i == n or j == m:
                break

    reach_a = max(reach_a, i + 1)
    reach_b = max(reach_b, j + 1)
    if best_profit < 0.0 or breakeven < 0.0:
        return None, reach_a, reach_b
    optimum = SizeOptimum(
        breakeven_notional=breakeven,
        optimal_notional=best_q,
        optimal_net_profit=best_profit,
        capped=exhausted and prev_profit >= 0.0,
    )
    return optimum, reach_a, reach_b


def evaluate_pair(
    symbol: str,
    buy_exchange: str,
    sell_exchange: str,
    buy: Leg,
    sell: Leg,
    notionals: Sequence[float],
    transfer_cost: float,
    rebalance_cost_bps: float,
    computed_at: float,
) -> PairResult:
    """Gross spread, one :class:`Fill` per notional (same order) and the size optimum.

    Both legs must have at least one level (the caller only pairs live books); otherwise
    ``ValueError``.
    """
    return evaluate_pair_reach(
        symbol, buy_exchange, sell_exchange, buy, sell, notionals,
        transfer_cost, rebalance_cost_bps, computed_at,
    )[0]  # fmt: skip


def evaluate_pair_reach(
    symbol: str,
    buy_exchange: str,
    sell_exchange: str,
    buy: Leg,
    sell: Leg,
    notionals: Sequence[float],
    transfer_cost: float,
    rebalance_cost_bps: float,
    computed_at: float,
) -> tuple[PairResult, int, int]:
    """:func:`evaluate_pair`, and how many leading levels of ``buy.levels`` and
    ``sell.levels`` it read (its reach). A walk that ran off the end of a leg reports
    ``len + 1``: its answer ("not fillable at this depth", a capped optimum) depends on the
    count of levels too. So the result is the same for any other levels whose first
    ``reach`` entries are equal to these (same fees, rates, minimums and costs): a book
    update beyond the reach of both legs cannot change it (MarketState skips it then)."""
    if not buy.levels or not sell.levels:
        raise ValueError("evaluate_pair needs at least one level on each leg")
    spread = gross_spread(buy.levels[0][0], buy.rate, sell.levels[0][0], sell.rate)
    reach_a = reach_b = 1  # the top of both books (gross spread)
    fills = []
    for q in notionals:
        fill, ra, rb = _evaluate(buy, sell, q, transfer_cost, rebalance_cost_bps)
        fills.append(fill)
        if ra > reach_a:
            reach_a = ra
        if rb > reach_b:
            reach_b = rb
    optimum, ra, rb = _size_optimum(buy, sell, transfer_cost, rebalance_cost_bps)
    result = PairResult(
        symbol=symbol,
        buy_exchange=buy_exchange,
        sell_exchange=sell_exchange,
        gross_spread=spread,
        fills=tuple(fills),
        optimum=optimum,
        computed_at=computed_at,
    )
    return result, max(reach_a, ra), max(reach_b, rb)

"""Independent computations on the simulator's ground truth (exact decimal strings), to
compare the exporter's figures with."""

from __future__ import annotations

from decimal import Decimal


def independent_net_profit(
    asks: list[list[str]],
    bids: list[list[str]],
    notional: Decimal,
    fee_a: Decimal,
    fee_b: Decimal,
    r_a: Decimal,
    r_b: Decimal,
) -> Decimal | None:
    """Straight from docs/analytics.md ("Opportunity"), in Decimal: buy Q on A's asks, sell
    on B's bids."""
    budget = notional / r_a
    base = Decimal(0)
    for price, qty in ((Decimal(p), Decimal(q)) for p, q in asks):
        cost = price * qty
        if cost >= budget:
            base += budget / price
            budget = Decimal(0)
            break
        base += qty
        budget -= cost
    if budget > 0:
        return None
    to_sell = base * (1 - fee_a)
    proceeds = Decimal(0)
    for price, qty in ((Decimal(p), Decimal(q)) for p, q in bids):
        take = min(qty, to_sell)
        proceeds += take * price
        to_sell -= take
        if to_sell <= 0:
            break
    if to_sell > 0:
        return None
    return proceeds * (1 - fee_b) * r_b - notional

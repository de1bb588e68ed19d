"""Per-book metrics (docs/analytics.md, "Per book"): pure, no I/O.

Conventions
-----------
* ``best_bid``, ``best_ask`` and ``mid`` in the returned :class:`BookMetrics` are in the
  market's own quote (what the exchange shows); ``depth`` is in the canonical quote
  (``sum(price * qty) * rate``); the rate is kept in ``BookMetrics.quote_rate``.
* Band membership: a bid level is in band ``b`` when ``price >= mid * (1 - b)``, an ask level
  when ``price <= mid * (1 + b)`` (the edge itself is inside the band).
* Completeness boundary: levels that were not copied are strictly worse than the last copied
  one (bids lower, asks higher). A band is therefore complete exactly when no uncopied level
  can lie inside it: ``last_bid <= mid * (1 - b)`` and ``last_ask >= mid * (1 + b)``. A last
  copied level lying exactly on the edge counts as complete (every uncopied level is strictly
  beyond the edge). The copied levels are always treated as a possibly truncated book, even
  when the exchange's book happens to hold fewer than K levels.
* Imbalance has no entry for a band with zero depth on both sides (never NaN).
* ``None`` when either side is empty or the mid is not positive.

Cost: one pass per side that stops at the widest band's edge; the bands are sorted inside
(any order may be passed; the result dicts are keyed by the values given).
"""

from __future__ import annotations

from collections.abc import Sequence

from exporter.model import BookMetrics, BookSnapshot, Level


def _bid_depths(bids: tuple[Level, ...], edges: list[float]) -> list[float]:
    """Cumulative ``price*qty`` of bids (high->low) with price >= edge, per descending edge."""
    n = len(edges)
    out = [0.0] * n
    k = 0
    edge = edges[0]
    acc = 0.0
    for price, qty in bids:
        if price < edge:
            out[k] = acc
            k += 1
            while k < n and price < edges[k]:
                out[k] = acc
                k += 1
            if k == n:
                return out
            edge = edges[k]
        acc += price * qty
    while k < n:
        out[k] = acc
        k += 1
    return out


def _ask_depths(asks: tuple[Level, ...], edges: list[float]) -> list[float]:
    """Cumulative ``price*qty`` of asks (low->high) with price <= edge, per ascending edge."""
    n = len(edges)
    out = [0.0] * n
    k = 0
    edge = edges[0]
    acc = 0.0
    for price, qty in asks:
        if price > edge:
            out[k] = acc
            k += 1
            while k < n and price > edges[k]:
                out[k] = acc
                k += 1
            if k == n:
                return out
            edge = edges[k]
        acc += price * qty
    while k < n:
        out[k] = acc
        k += 1
    return out


def book_metrics(snap: BookSnapshot, rate: float, bands: Sequence[float]) -> BookMetrics | None:
    """Mid, spread, depth/completeness/imbalance per band for one book.

    ``rate`` converts the market's quote to the canonical quote (applied to depth only).
    Bids must be sorted high->low and asks low->high, as :class:`BookSnapshot` guarantees.
    """
    bids = snap.bids
    asks = snap.asks
    if not bids or not asks:
        return None
    best_bid = bids[0][0]
    best_ask = asks[0][0]
    mid = (best_bid + best_ask) / 2.0
    if not mid > 0.0:
        return None
    spread = (best_ask - best_bid) / mid

    depth: dict[float, tuple[float, float]] = {}
    complete: dict[float, bool] = {}
    imbalance: dict[float, float] = {}
    if bands:
        ordered = sorted(bands)
        bid_edges = [mid * (1.0 - b) for b in ordered]
        ask_edges = [mid * (1.0 + b) for b in ordered]
        bid_d = _bid_depths(bids, bid_edges)
        ask_d = _ask_depths(asks, ask_edges)
        last_bid = bids[-1][0]
        last_ask = asks[-1][0]
        for k, band in enumerate(ordered):
            bd = bid_d[k] * rate
            ad = ask_d[k] * rate
            depth[band] = (bd, ad)
            complete[band] = last_bid <= bid_edges[k] and last_ask >= ask_edges[k]
            total = bd + ad
            if total > 0.0:
                imbalance[band] = (bd - ad) / total
    return BookMetrics(
        best_bid=best_bid,
        best_ask=best_ask,
        mid=mid,
        spread_ratio=spread,
        depth=depth,
        depth_complete=complete,
        imbalance=imbalance,
        quote_rate=rate,
    )

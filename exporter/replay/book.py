"""An L2 order book rebuilt from Tardis ``incremental_book_L2`` rows.

Each side is a dict price -> amount plus the sorted list of its prices, so a row costs one
dict operation and one bisect (O(log n) search; the list insert/delete is a memmove), and
the top-K copy handed to the market state slices the sorted list. The copy is cached and
rebuilt only when a change reaches the top K levels, which most deep-book rows do not.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from exporter.model import Level


class Side:
    """One side of a book. Prices are kept ascending on both sides; the top-K copy (bids high
    -> low, asks low -> high) is patched in place of a rebuild: a row inside the top K costs
    two tuple slices (C), a row below it nothing."""

    __slots__ = ("_amounts", "_bids", "_depth", "_prices", "_top")

    def __init__(self, bids: bool, depth: int) -> None:
        self._amounts: dict[float, float] = {}
        self._prices: list[float] = []
        self._bids = bids
        self._depth = depth
        self._top: tuple[Level, ...] = ()

    def __len__(self) -> int:
        return len(self._prices)

    def clear(self) -> None:
        self._amounts.clear()
        self._prices.clear()
        self._top = ()

    def set(self, price: float, amount: float) -> None:
        """Apply one row: amount 0 deletes the level (a delete of an absent level is a no-op,
        as in Tardis files where a level may be deleted twice)."""
        amounts, prices, depth = self._amounts, self._prices, self._depth
        n = len(prices)
        if amount == 0.0:
            if price not in amounts:
                return
            idx = bisect.bisect_left(prices, price)
            del prices[idx]
            del amounts[price]
            pos = n - 1 - idx if self._bids else idx
            if pos < depth:
                top = self._top
                top = top[:pos] + top[pos + 1 :]
                if n - 1 >= depth:  # the next level moves up into the copy
                    nxt = prices[n - 1 - depth] if self._bids else prices[depth - 1]
                    top += ((nxt, amounts[nxt]),)
                self._top = top
            return
        if price in amounts:
            amounts[price] = amount
            idx = bisect.bisect_left(prices, price)
            pos = n - 1 - idx if self._bids else idx
            if pos < depth:
                top = self._top
                self._top = (*top[:pos], (price, amount), *top[pos + 1 :])
            return
        amounts[price] = amount
        idx = bisect.bisect_left(prices, price)
        prices.insert(idx, price)
        pos = n - idx if self._bids else idx
        if pos < depth:
            top = self._top
            top = (*top[:pos], (price, amount), *top[pos:])
            self._top = top[:depth] if len(top) > depth else top

    def top(self) -> tuple[Level, ...]:
        """The best ``depth`` levels: bids high -> low, asks low -> high."""
        return self._top

    def rebuilt(self) -> tuple[Level, ...]:
        """The same copy built from scratch (tests compare it with :meth:`top`)."""
        chosen = self._prices[-self._depth :][::-1] if self._bids else self._prices[: self._depth]
        return tuple((p, self._amounts[p]) for p in chosen)


class L2Book:
    """Both sides of one book. A snapshot group (rows of one book at one local_timestamp with
    is_snapshot true: Tardis writes a snapshot at one instant, and so does ``record``)
    replaces the book."""

    __slots__ = ("asks", "bids", "max_price", "max_qty")

    def __init__(self, depth: int, max_price: float, max_qty: float) -> None:
        self.bids = Side(True, depth)
        self.asks = Side(False, depth)
        self.max_price = max_price
        self.max_qty = max_qty

    def apply(
        self,
        is_snapshot: bool,
        bids: Iterable[Level],
        asks: Iterable[Level],
        bad: list[tuple[str, float, float]],
    ) -> int:
        """Apply one update's rows; returns how many rows were applied. Rows that fail the
        value checks are skipped and appended to ``bad`` as (side, price, amount)."""
        if is_snapshot:
            self.bids.clear()
            self.asks.clear()
        applied = 0
        mp, mq = self.max_price, self.max_qty
        for side, name, rows in ((self.bids, "bid", bids), (self.asks, "ask", asks)):
            for price, amount in rows:
                # What copy_levels rejects live (NaN fails both comparisons); 0 deletes.
                if 0.0 < price <= mp and 0.0 <= amount <= mq:
                    side.set(price, amount)
                    applied += 1
                else:
                    bad.append((name, price, amount))
        return applied

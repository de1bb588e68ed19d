"""Copies of ccxt book sides: the exporter's own immutable top ``k`` levels, checked.

A feed copies both sides of its book at every ccxt wake-up. ccxt's sides are lists of
``[price, amount]`` lists that it changes in place, so the copy must be a fresh, checked
tuple of float pairs, and making it from scratch (2 x 100 levels) was the exporter's largest
cost per message. Two ways keep it in proportion to what changed:

- The guarded clients give their books :class:`TrackedAsks` / :class:`TrackedBids` sides,
  which log each change ccxt makes (set, insert, delete, trim, clear) with its index; the
  copier replays the log on its previous copy: a few list operations per update.
- Any other side (an exchange whose books use other side classes) is compared column by
  column with the previous copy, reusing the unchanged runs.

Both give exactly what :func:`copy_levels` gives, value for value, and reject what it
rejects.
"""

from __future__ import annotations

import math
import operator
from bisect import bisect_left
from typing import Any

from ccxt.async_support.base.ws.order_book import OrderBook
from ccxt.async_support.base.ws.order_book_side import OrderBookSide


def copy_levels(
    side: Any, k: int, max_price: float, max_qty: float
) -> tuple[tuple[float, float], ...]:
    """Copy the top ``k`` levels; raises ValueError on NaN/inf/non-positive/out-of-bound values.

    Runs once per book update on up to 2K values, so the checks use C-level builtins
    (min/max/sum over the columns) instead of a Python loop per level."""
    top = side[:k]
    if not top:
        return ()
    try:
        prices = [float(level[0]) for level in top]
        qtys = [float(level[1]) for level in top]
    except IndexError as exc:
        raise ValueError(f"bad level: {exc}") from exc
    return _checked(prices, qtys, max_price, max_qty)


_PRICE = operator.itemgetter(0)
_QTY = operator.itemgetter(1)
_SCAN = 8  # how far past a change the next unchanged run may start, in levels
_RUNS = 4  # unchanged runs looked for per copy, before the rest is copied in full


class LevelCopier:
    """:func:`copy_levels` for one side of one feed, reusing the level tuples of its
    previous copy (already validated) wherever the book still holds them: the same result,
    value for value, and the same rejections.

    An update changes a few levels near the touch, and an insertion or a deletion shifts
    the rest by one. So the book's columns are compared with those of the previous copy
    (C-level list comparisons): the unchanged head, then unchanged runs at a shift of up to
    two levels; only the levels in between (and new ones at the bottom) are checked and
    built. Anything else is a full copy. Reading the columns out of ccxt's level lists stays
    (about half of a full copy on a simulator book, whose memory is cold by then); the
    checks and the tuple building of the unchanged levels go (10-25 % of the copy)."""

    __slots__ = ("k", "levels", "max_price", "max_qty", "prices", "qtys", "side")

    def __init__(self, k: int, max_price: float, max_qty: float) -> None:
        self.k, self.max_price, self.max_qty = k, max_price, max_qty
        self.levels: tuple[tuple[float, float], ...] = ()
        self.prices: list[float] = []
        self.qtys: list[float] = []
        self.side: _TrackedSide | None = None  # the tracked side `levels` was copied from

    def copy(self, side: Any) -> tuple[tuple[float, float], ...]:
        if isinstance(side, _TrackedSide):
            return self._copy_tracked(side)
        self.side = None
        top = side[: self.k]
        try:
            prices = list(map(float, map(_PRICE, top)))
            qtys = list(map(float, map(_QTY, top)))
        except (IndexError, TypeError):
            prices = qtys = []
        if not prices or not self.prices:
            levels = copy_levels(side, self.k, self.max_price, self.max_qty)  # raises as ever
            self.levels = levels
            self.prices = list(map(_PRICE, levels))
            self.qtys = list(map(_QTY, levels))
            return levels
        levels = self._reuse(prices, qtys)
        self.levels, self.prices, self.qtys = levels, prices, qtys
        return levels

    def _copy_tracked(self, side: _TrackedSide) -> tuple[tuple[float, float], ...]:
        changes, side._log = side._log, []  # log from here on, for the next copy
        if changes is not None and side is self.side:
            try:
                levels = replay_changes(
                    self.levels, changes, side, self.k, self.max_price, self.max_qty
                )
            except BaseException:
                self.side = None  # those changes are gone with the log: copy in full next
                raise
        else:  # the first copy of this side, or after a clear or an overflowing log
            self.side = None
            levels = copy_levels(side, self.k, self.max_price, self.max_qty)
            self.side = side
            self.prices = self.qtys = []  # the column path starts from scratch if used
        self.levels = levels
        return levels

    def _reuse(self, prices: list[float], qtys: list[float]) -> tuple[tuple[float, float], ...]:
        old_p, old_q, prev = self.prices, self.qtys, self.levels
        n, m = len(prices), len(old_p)
        if n == m and prices == old_p and qtys == old_q:
            return prev
        i = 0  # the unchanged head: levels 0..i-1
        lim = min(n, m)
        while i < lim and prices[i] == old_p[i] and qtys[i] == old_q[i]:
            i += 1
        parts = [prev[:i]]
        for _ in range(_RUNS):
            found = self._run(prices, qtys, i)
            if found is None:
                break
            s, e, length = found
            parts.append(_checked(prices[i:s], qtys[i:s], self.max_price, self.max_qty))
            parts.append(prev[e : e + length])
            i = s + length
            if i == n:
                return sum(parts, ())
        parts.append(_checked(prices[i:], qtys[i:], self.max_price, self.max_qty))
        return sum(parts, ())

    def _run(self, prices: list[float], qtys: list[float], i: int) -> tuple[int, int, int] | None:
        """The next run of unchanged levels at or after level ``i``: (start, start in the
        previous copy, length), or None when none starts within ``_SCAN`` levels."""
        old_p, old_q = self.prices, self.qtys
        n, m = len(prices), len(old_p)
        for s in range(i, min(i + _SCAN, n)):
            ps, qs = prices[s], qtys[s]
            for d in (0, -1, 1, -2, 2):
                e = s + d
                if e < 0 or e >= m or ps != old_p[e] or qs != old_q[e]:
                    continue
                # The longest equal run from (s, e): the whole rest usually; else the next
                # change is near (updates touch the top of the book), so gallop, then bisect.
                hi = min(n - s, m - e)
                if _same(prices, qtys, old_p, old_q, s, e, hi):
                    return s, e, hi
                lo, step = 1, 4  # a run of lo matches; one of hi does not
                while lo + step < hi and _same(prices, qtys, old_p, old_q, s, e, lo + step):
                    lo, step = lo + step, step * 2
                hi = min(hi, lo + step)
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if _same(prices, qtys, old_p, old_q, s, e, mid):
                        lo = mid
                    else:
                        hi = mid
                return s, e, lo
        return None


def _same(
    prices: list[float],
    qtys: list[float],
    old_p: list[float],
    old_q: list[float],
    s: int,
    e: int,
    length: int,
) -> bool:
    return prices[s : s + length] == old_p[e : e + length] and (
        qtys[s : s + length] == old_q[e : e + length]
    )


def _checked(
    prices: list[float], qtys: list[float], max_price: float, max_qty: float
) -> tuple[tuple[float, float], ...]:
    """The levels of two float columns, with copy_levels' checks (and messages)."""
    if not prices:
        return ()
    if (
        min(prices) <= 0
        or max(prices) > max_price
        or min(qtys) <= 0
        or max(qtys) > max_qty
        or math.isnan(sum(prices) + sum(qtys))
    ):
        bad = next(
            (p, q)
            for p, q in zip(prices, qtys, strict=True)
            if not (0 < p <= max_price and 0 < q <= max_qty) or math.isnan(p + q)
        )
        raise ValueError(f"bad level price={bad[0]} qty={bad[1]}")
    return tuple(zip(prices, qtys, strict=True))


# -- sides that log their changes ----------------------------------------------------------
SET, INSERT, DELETE, TRIM = 0, 1, 2, 3
LOG_CAP = 512  # changes kept between two copies; past it the next copy is a full one

Change = tuple[int, int, Any, Any]  # (kind, index, price, amount)


class _TrackedSide(OrderBookSide):  # type: ignore[misc]
    """ccxt's book side plus a log of its changes since the copier last read it.

    ``storeArray`` is ccxt's own (same bisect, same in-place writes) with one append per
    change; ``limit`` logs its trim. ``clear`` (a snapshot replacing the book) drops the
    log, and so does a log past :data:`LOG_CAP`: the next copy is then a full one. The log
    is None until a copier first reads the side."""

    _log: list[Change] | None = None

    def storeArray(self, delta: Any) -> None:  # ccxt's spelling
        price = delta[0]
        size = delta[1]
        index_price = -price if self.side else price
        keys = self._index
        index = bisect_left(keys, index_price)
        log = self._log
        if size:
            if index < len(keys) and keys[index] == index_price:
                self[index][1] = size
                if log is not None:
                    log.append((SET, index, self[index][0], size))
            else:
                keys.insert(index, index_price)
                self.insert(index, delta)
                if log is not None:
                    log.append((INSERT, index, price, size))
        elif index < len(keys) and keys[index] == index_price:
            del keys[index]
            del self[index]
            if log is not None:
                log.append((DELETE, index, None, None))
        if log is not None and len(log) > LOG_CAP:
            self._log = None

    def limit(self) -> None:
        n = len(self)
        super().limit()
        log = self._log
        if log is not None and len(self) < n:
            log.append((TRIM, len(self), None, None))

    def clear(self) -> None:
        super().clear()
        self._log = None


class TrackedAsks(_TrackedSide):
    side = False


class TrackedBids(_TrackedSide):
    side = True


def tracked_order_book(snapshot: Any = None, depth: int | None = None) -> OrderBook:
    """``Exchange.order_book`` with sides that log their changes."""
    data = dict(snapshot or {})
    data["asks"] = TrackedAsks(data.get("asks", []), depth)
    data["bids"] = TrackedBids(data.get("bids", []), depth)
    return OrderBook(data, depth)


def _check_level(level: list[Any], max_price: float, max_qty: float) -> tuple[float, float]:
    price, qty = float(level[0]), float(level[1])
    if not (0 < price <= max_price and 0 < qty <= max_qty):  # NaN fails both
        raise ValueError(f"bad level price={price} qty={qty}")
    return price, qty


def replay_changes(
    previous: tuple[tuple[float, float], ...],
    changes: list[Change],
    side: Any,
    k: int,
    max_price: float,
    max_qty: float,
) -> tuple[tuple[float, float], ...]:
    """``copy_levels(side, k)`` from the previous copy and the side's changes since then.

    The copy holds the side's first ``len(copy)`` levels before and after each change
    (ccxt's indices apply to it as they are); levels beyond ``k`` are cut at the end, and
    levels a deletion pulled up from below the copy are read from the side. New levels stay
    lists until they are checked, so only they are."""
    if not changes:
        return previous
    levels: list[Any] = list(previous)
    fresh = 0  # lists (unchecked levels) in `levels`
    for kind, i, price, size in changes:
        n = len(levels)
        if kind == SET:
            if i < n:
                if type(levels[i]) is not list:
                    fresh += 1
                levels[i] = [price, size]
        elif kind == INSERT:
            if i <= n:
                levels.insert(i, [price, size])
                fresh += 1
        elif kind == DELETE:
            if i < n and type(levels.pop(i)) is list:
                fresh -= 1
        elif i < n:  # TRIM
            fresh -= sum(type(x) is list for x in levels[i:])
            del levels[i:]
    if len(levels) > k:
        fresh -= sum(type(x) is list for x in levels[k:])
        del levels[k:]
    elif len(levels) < k and len(side) > len(levels):
        levels.extend(copy_levels(side[len(levels) : k], k, max_price, max_qty))
    if fresh:
        for j, level in enumerate(levels):
            if type(level) is list:
                levels[j] = _check_level(level, max_price, max_qty)
                fresh -= 1
                if not fresh:
                    break
    return tuple(levels)

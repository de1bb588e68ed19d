"""Copies of ccxt book sides: the exporter's own immutable top ``k`` levels, checked.

A feed copies both sides of its book at every ccxt wake-up. ccxt's sides are lists of
``[price, amount]`` lists that it changes in place, so the copy must be a fresh, checked
tuple of float pairs, and making it from scratch (2 x 100 levels) was the exporter's largest
cost per message. The guarded clients give their books :class:`TrackedAsks` /
:class:`TrackedBids` sides, which log each change ccxt makes (set, insert, delete, trim,
clear) with its index, and the copier replays the log on its previous copy: a few list
operations per update, exactly what :func:`copy_levels` gives, value for value, and the
same rejections. Sides of other classes (an exchange whose books use counted or indexed
sides) are copied in full.
"""

from __future__ import annotations

import math
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


class LevelCopier:
    """:func:`copy_levels` for one side of one feed. A tracked side (the guarded clients'
    books) is copied by replaying its change log on the previous copy; any other side, the
    first copy of a side and a copy after a cleared or overlong log are full copies."""

    __slots__ = ("k", "levels", "max_price", "max_qty", "side")

    def __init__(self, k: int, max_price: float, max_qty: float) -> None:
        self.k, self.max_price, self.max_qty = k, max_price, max_qty
        self.levels: tuple[tuple[float, float], ...] = ()
        self.side: _TrackedSide | None = None  # the tracked side `levels` was copied from

    def copy(self, side: Any) -> tuple[tuple[float, float], ...]:
        if not isinstance(side, _TrackedSide):
            return copy_levels(side, self.k, self.max_price, self.max_qty)
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
        self.levels = levels
        return levels


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

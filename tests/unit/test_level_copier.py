"""LevelCopier (the feed's copy of a book side) returns exactly what a full copy_levels
returns, and rejects exactly what it rejects, over random sequences of book changes like
ccxt's (in-place quantity changes, insertions, deletions, garbage values): on plain lists
(copied in full) and on the tracked sides the guarded clients give ccxt (patched from
their change log)."""

from __future__ import annotations

import contextlib
import math
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.feeds.levels import LOG_CAP, LevelCopier, copy_levels, tracked_order_book

MAX_PRICE, MAX_QTY = 1e9, 1e12
BAD = [math.nan, math.inf, -1.0, 0.0, 2e9, "x", None]


def outcome(fn: Any, *args: Any) -> Any:
    try:
        return ("ok", fn(*args))
    except (ValueError, TypeError) as exc:
        return ("error", type(exc).__name__, str(exc))


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    depth=st.sampled_from([1, 5, 25, 100]),
    asks=st.booleans(),
    steps=st.integers(1, 40),
)
def test_incremental_copy_equals_full_copy(seed: int, depth: int, asks: bool, steps: int) -> None:
    rng = random.Random(seed)
    sign = 1.0 if asks else -1.0
    n = rng.randrange(0, 150)
    book: list[list[Any]] = [
        [1000.0 * (1 + sign * 0.0001 * i), rng.uniform(0.01, 5)] for i in range(n)
    ]
    copier = LevelCopier(depth, MAX_PRICE, MAX_QTY)
    for _ in range(steps):
        garbage = False
        for _ in range(rng.randrange(0, 4)):
            if garbage:
                break
            op = rng.random()
            i = min(int(rng.expovariate(0.2)), max(len(book) - 1, 0))
            if op < 0.4 and book:
                book[i][1] = rng.choice([rng.uniform(0.01, 5), book[i][1] * 2])
            elif op < 0.6 and book:
                del book[i]
            elif op < 0.85:
                lo = book[i - 1][0] if 0 < i <= len(book) else 1000.0 * (1 - sign * 0.01)
                hi = book[i][0] if i < len(book) else lo * (1 + sign * 0.01)
                book.insert(min(i, len(book)), [(lo + hi) / 2, rng.uniform(0.01, 5)])
            elif op < 0.9:
                book.append([1000.0 * (1 + sign * 0.02 * rng.random()), 1.0])  # unsorted tail
            elif op < 0.95 and book:
                j = rng.randrange(len(book))
                book[j][rng.randrange(2)] = rng.choice(BAD)  # garbage, anywhere
                garbage = True
            elif book:
                j = rng.randrange(len(book))
                book[j] = book[j][:1] if rng.random() < 0.5 else [str(book[j][0]), book[j][1]]
                garbage = True
        expected = outcome(copy_levels, book, depth, MAX_PRICE, MAX_QTY)
        got = outcome(copier.copy, book)
        assert got == expected
        if expected[0] == "ok":
            assert all(type(p) is float and type(q) is float for p, q in got[1])
        if garbage:  # the feed rebuilds a rejected book from a fresh snapshot
            book = [[1000.0 * (1 + sign * 0.0001 * i), rng.uniform(0.01, 5)] for i in range(n)]


def ok_or_error(fn: Any, *args: Any) -> Any:
    try:
        return ("ok", fn(*args))
    except (ValueError, TypeError):
        return ("error",)


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    depth=st.sampled_from([1, 5, 25, 100]),
    limit=st.sampled_from([None, 3, 30, 120]),
    asks=st.booleans(),
    steps=st.integers(1, 40),
)
def test_tracked_side_copy_equals_full_copy(
    seed: int, depth: int, limit: int | None, asks: bool, steps: int
) -> None:
    """ccxt's own operations on a tracked side (stores, deletions, trims, snapshot resets,
    bursts past the log's cap, garbage values): the patched copy is the full copy, and it
    is rejected exactly when the full copy is."""
    rng = random.Random(seed)
    sign = 1.0 if asks else -1.0

    def price() -> float:
        return round(1000.0 * (1 + sign * 0.0001 * rng.randrange(0, 300)), 6)

    def snapshot() -> list[list[Any]]:
        return [[price(), rng.uniform(0.01, 5)] for _ in range(rng.randrange(0, 150))]

    book = tracked_order_book({"asks" if asks else "bids": snapshot()}, limit)
    side = book["asks" if asks else "bids"]
    copier = LevelCopier(depth, MAX_PRICE, MAX_QTY)
    for _ in range(steps):
        garbage = False
        for _ in range(rng.randrange(0, 6)):
            op = rng.random()
            if op < 0.45:
                side.storeArray([price(), rng.uniform(0.01, 5)])  # set or insert
            elif op < 0.7 and side:
                side.storeArray([side[min(int(rng.expovariate(0.2)), len(side) - 1)][0], 0])
            elif op < 0.75:
                book.limit()
            elif op < 0.78:
                book.reset({"asks" if asks else "bids": snapshot()})
            elif op < 0.8:
                for _ in range(LOG_CAP + 1):
                    side.storeArray([price(), rng.uniform(0.01, 5)])
            elif op < 0.83:
                bad = rng.choice([math.nan, math.inf, -1.0, 2e9, 2e13, "x"])
                level = [price(), bad] if rng.random() < 0.5 else [bad, 1.0]
                if isinstance(level[0], float) or not asks:
                    with contextlib.suppress(TypeError):
                        side.storeArray(level)
                    garbage = True
        expected = ok_or_error(copy_levels, list(side), depth, MAX_PRICE, MAX_QTY)
        got = ok_or_error(copier.copy, side)
        assert got == expected
        if expected[0] == "ok":
            assert all(type(p) is float and type(q) is float for p, q in got[1])
        if garbage:  # the feed rebuilds a rejected book from a fresh snapshot
            book = tracked_order_book({"asks" if asks else "bids": snapshot()}, limit)
            side = book["asks" if asks else "bids"]
            copier = LevelCopier(depth, MAX_PRICE, MAX_QTY)


def test_tracked_side_patches_only_what_changed() -> None:
    book = tracked_order_book({"bids": [[100.0 - i, 1.0] for i in range(50)]}, None)
    copier = LevelCopier(10, MAX_PRICE, MAX_QTY)
    first = copier.copy(book["bids"])
    assert copier.copy(book["bids"]) is first  # nothing logged since
    book["bids"].storeArray([97.0, 5.0])
    book["bids"].storeArray([99.5, 2.0])
    book["bids"].storeArray([100.0, 0])
    got = copier.copy(book["bids"])
    assert got == copy_levels(book["bids"], 10, MAX_PRICE, MAX_QTY)
    assert got[0] == (99.5, 2.0) and got[3] == (97.0, 5.0)
    assert got[4] is first[4]  # an untouched level is the previous copy's tuple


def test_a_rejected_patch_makes_the_next_copy_a_full_one() -> None:
    book = tracked_order_book({"asks": [[100.0 + i, 1.0] for i in range(20)]}, None)
    side = book["asks"]
    copier = LevelCopier(10, MAX_PRICE, MAX_QTY)
    copier.copy(side)
    side.storeArray([100.5, math.inf])
    assert ok_or_error(copier.copy, side) == ("error",)
    side.storeArray([100.5, 0])  # the bad level leaves; the rejected log is gone
    side.storeArray([101.0, 7.0])
    assert copier.copy(side) == copy_levels(side, 10, MAX_PRICE, MAX_QTY)

"""LevelCopier (the feed's incremental copy of a book side) returns exactly what a full
copy_levels returns, and rejects exactly what it rejects, over random sequences of book
changes like ccxt's (in-place quantity changes, insertions, deletions, garbage values)."""

from __future__ import annotations

import math
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.feeds.supervisor import LevelCopier, copy_levels

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


def test_an_unchanged_book_returns_the_same_tuple() -> None:
    book = [[100.0 + i, 1.0] for i in range(10)]
    copier = LevelCopier(5, MAX_PRICE, MAX_QTY)
    first = copier.copy(book)
    assert copier.copy(book) is first
    book[7][1] = 2.0  # below the copied depth
    assert copier.copy(book) is first
    book[2][1] = 3.0
    again = copier.copy(book)
    assert again == copy_levels(book, 5, MAX_PRICE, MAX_QTY) and again[2] == (102.0, 3.0)

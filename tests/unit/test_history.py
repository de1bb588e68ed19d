"""History formulas on hand-built series: correlation (identical, inverted, independent,
too short, constant, forward-fill bound, min_periods edge, upper triangle), spread change,
the rolling window and its refill, the row's building blocks."""

from __future__ import annotations

import math
import random

import pytest

from exporter.analytics.history import (
    HistoryRow,
    HistoryWindow,
    Sample,
    correlation_matrix,
    depth_weighted_imbalance,
    signed_basis,
    spread_change,
)

NOW = 1_700_000_100.0  # an integer second: the grid is (NOW-100, NOW]


def walk(n: int, seed: int, start: float = NOW - 99) -> list[Sample]:
    rng = random.Random(seed)
    x, out = 0.0, []
    for i in range(n):
        x += rng.gauss(0, 1e-4)
        out.append((start + i, x))
    return out


def corr(series: dict[str, list[Sample]], window: float = 100, ffill: float = 0) -> dict:  # type: ignore[type-arg]
    return correlation_matrix(series, NOW, window, ffill)


def test_identical_series_correlate_to_one() -> None:
    a = walk(100, 1)
    result = corr({"BTC/USD": a, "ETH/USD": list(a)})
    r, n = result[("BTC/USD", "ETH/USD")]
    assert r == pytest.approx(1.0, abs=1e-12) and n == 100


def test_inverted_and_scaled_series_correlate_to_minus_one() -> None:
    a = walk(100, 2)
    b = [(t, 0.003 - 5 * v) for t, v in a]
    r, _ = corr({"A/USD": a, "B/USD": b})[("A/USD", "B/USD")]
    assert r == pytest.approx(-1.0, abs=1e-12)


def test_independent_series_are_near_zero() -> None:
    rng_a, rng_b = random.Random(3), random.Random(4)
    a = [(NOW - 99 + i, rng_a.gauss(0, 1)) for i in range(100)]
    b = [(NOW - 99 + i, rng_b.gauss(0, 1)) for i in range(100)]
    r, _ = corr({"A/USD": a, "B/USD": b})[("A/USD", "B/USD")]
    assert abs(r) < 0.3  # |r| of 100 iid normals: ~0.1 typical


def test_matches_pearson_by_hand() -> None:
    xs = [1.0, 2.0, 3.0, 4.0, 6.0]
    ys = [2.0, 1.0, 4.0, 3.0, 7.0]
    a = [(NOW - 4 + i, x) for i, x in enumerate(xs)]
    b = [(NOW - 4 + i, y) for i, y in enumerate(ys)]
    mx, my = sum(xs) / 5, sum(ys) / 5
    num = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    den = math.sqrt(sum((x - mx) ** 2 for x in xs) * sum((y - my) ** 2 for y in ys))
    r, n = correlation_matrix({"A/USD": a, "B/USD": b}, NOW, 5, 0)[("A/USD", "B/USD")]
    assert r == pytest.approx(num / den) and n == 5


def test_too_short_and_constant_series_give_no_sample() -> None:
    a = walk(100, 5)
    assert corr({"A/USD": a, "B/USD": a[-79:]}) == {}  # 79 < 80 % of 100
    assert ("A/USD", "B/USD") in corr({"A/USD": a, "B/USD": a[-80:]})  # exactly 80 %
    flat = [(t, 0.001) for t, _ in a]
    assert corr({"A/USD": a, "B/USD": flat}) == {}
    assert corr({"A/USD": flat, "B/USD": flat}) == {}
    assert corr({"A/USD": a, "B/USD": []}) == {}
    assert corr({"A/USD": a}) == {}


def test_forward_fill_is_bounded() -> None:
    # B has a sample every 4 s: with ffill 3 s every second is covered, with ffill 2 s only 75 %
    a = walk(100, 6)
    b = [(t, v) for i, (t, v) in enumerate(walk(100, 7)) if i % 4 == 0]
    assert ("A/USD", "B/USD") in corr({"A/USD": a, "B/USD": b}, ffill=3)
    assert corr({"A/USD": a, "B/USD": b}, ffill=2) == {}
    # a sample just before the window fills its start, within the bound only
    early = [(NOW - 102, 0.5), *walk(100, 8)[3:]]  # seconds NOW-96.. plus one at NOW-102
    counts = {
        f: corr({"A/USD": a, "B/USD": early}, ffill=f)[("A/USD", "B/USD")][1] for f in (1, 4, 5)
    }
    assert counts == {1: 97, 4: 99, 5: 100}  # fills NOW-99..-97 only up to 102-f


def test_last_sample_per_second_and_samples_outside_the_window_ignored() -> None:
    a = walk(100, 9)
    noisy = sorted([*a, (NOW - 50.5, 99.0)])  # after NOW-51's sample, same second
    # the extra sample is the last of its second: it replaces the value there
    r_clean, _ = corr({"A/USD": a, "B/USD": a})[("A/USD", "B/USD")]
    r_noisy, _ = corr({"A/USD": a, "B/USD": noisy})[("A/USD", "B/USD")]
    assert r_clean == pytest.approx(1.0) and r_noisy < 0.9
    future = [(t + 1000, v) for t, v in a]
    assert corr({"A/USD": a, "B/USD": future}) == {}


def test_upper_triangle_only_sorted_by_symbol() -> None:
    s = {name: walk(100, i) for i, name in enumerate(["SOL/USD", "BTC/USD", "ETH/USD"])}
    result = corr(s)
    assert set(result) == {("BTC/USD", "ETH/USD"), ("BTC/USD", "SOL/USD"), ("ETH/USD", "SOL/USD")}
    assert all(-1 <= r <= 1 and not math.isnan(r) for r, _ in result.values())


# -- trend ---------------------------------------------------------------------------------
def test_spread_change_over_the_window() -> None:
    samples = [(NOW - 10 + i, 0.001 * i) for i in range(11)]  # 0 at NOW-10 .. 0.01 at NOW
    assert spread_change(samples, NOW, 10, 2) == pytest.approx(0.01)
    assert spread_change(samples, NOW, 4, 2) == pytest.approx(0.004)
    assert spread_change(samples, NOW + 0.5, 4, 2) == pytest.approx(0.004)  # last at or before


def test_spread_change_needs_history_and_fresh_samples() -> None:
    samples = [(NOW - 10 + i, 0.001 * i) for i in range(11)]
    assert spread_change(samples, NOW, 30, 2) is None  # history shorter than the window
    assert spread_change(samples, NOW + 5, 2, 2) is None  # latest sample too old
    assert spread_change([], NOW, 1, 2) is None
    gap = [(NOW - 10, 0.0), (NOW, 0.001)]
    assert spread_change(gap, NOW, 5, 2) is None  # nothing within 2 s of NOW-5


# -- window and rows -----------------------------------------------------------------------
def row(t: float, spread: float | None = 0.001) -> HistoryRow:
    return HistoryRow(t, spread, 1e6, 0.01, 0.1, None)


def test_window_bounded_by_horizon_and_time_strictly_increasing() -> None:
    w = HistoryWindow(["BTC/USD"], horizon=10)
    for i in range(30):
        w.append("BTC/USD", row(NOW + i))
    w.append("BTC/USD", row(NOW + 5))  # out of order: ignored
    times = [r.time for r in w.rows["BTC/USD"]]
    assert times[0] == NOW + 19 and times[-1] == NOW + 29 and times == sorted(times)
    w.append("BTC/USD", row(NOW + 30, None))
    assert len(w.rows["BTC/USD"]) == 11 and len(w.spreads("BTC/USD")) == 10  # None skipped


def test_refill_prepends_only_older_rows() -> None:
    w = HistoryWindow(["BTC/USD"], horizon=100)
    w.append("BTC/USD", row(NOW))
    added = w.refill("BTC/USD", [row(NOW - 2), row(NOW - 3), row(NOW), row(NOW + 1)])
    assert added == 2
    assert [r.time for r in w.rows["BTC/USD"]] == [NOW - 3, NOW - 2, NOW]


def test_row_from_redis_fields() -> None:
    fields = {"time": NOW, "spread": 0.001, "liquidity": 5.0, "latency": None,
              "imbalance": -0.2, "net_profit": "garbage", "stream_id": "1-0"}  # fmt: skip
    r = HistoryRow.from_fields(fields)
    assert r == HistoryRow(NOW, 0.001, 5.0, None, -0.2, None)
    assert HistoryRow.from_fields({"spread": 0.1}) is None
    assert set(r.as_dict()) == {"time", "spread", "liquidity", "latency", "imbalance", "net_profit"}


def test_signed_basis_and_depth_weighted_imbalance() -> None:
    # mid_A 100 USDT at 0.999 -> 99.9; mid_B 100.5 USD: (100.5 - 99.9) / 99.9
    assert signed_basis(100.0, 0.999, 100.5, 1.0) == pytest.approx(0.6 / 99.9)
    assert signed_basis(100.0, 1.0, 99.0, 1.0) == pytest.approx(-0.01)
    # imbalances 0.5 (depth 40) and -0.5 (depth 120): (0.5*40 - 0.5*120) / 160 = -0.25
    assert depth_weighted_imbalance([(30.0, 10.0), (30.0, 90.0)]) == pytest.approx(-0.25)
    assert depth_weighted_imbalance([(0.0, 0.0)]) is None
    assert depth_weighted_imbalance([]) is None

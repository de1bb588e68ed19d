"""Insight formulas on hand-built inputs: Prometheus' histogram_quantile interpolation (hand
values and promtool evaluating the same buckets), execution risk at its edges, buying
pressure, the trend dead band and the latency audit levels."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import pytest

from exporter.analytics.insights import (
    buying_pressure,
    execution_risk,
    histogram_quantile,
    latency_audit,
    trend_direction,
    volatility_ratio,
)

INF = math.inf
W = {"fill": 0.4, "latency": 0.2, "volatility": 0.2, "age": 0.2}


# -- histogram_quantile ----------------------------------------------------------------------
def test_quantile_interpolates_linearly_inside_a_bucket() -> None:
    b = [(0.1, 10.0), (0.2, 30.0), (0.5, 40.0), (INF, 40.0)]
    # rank 0.5*40 = 20 lies in (0.1, 0.2]: 0.1 + 0.1 * (20-10)/(30-10)
    assert histogram_quantile(0.5, b) == pytest.approx(0.15)
    # rank 0.99*40 = 39.6 in (0.2, 0.5]: 0.2 + 0.3 * (39.6-30)/10
    assert histogram_quantile(0.99, b) == pytest.approx(0.488)


def test_quantile_lowest_bucket_starts_at_zero_or_returns_a_non_positive_bound() -> None:
    assert histogram_quantile(0.25, [(0.4, 8.0), (INF, 8.0)]) == pytest.approx(0.1)
    assert histogram_quantile(0.25, [(-1.0, 8.0), (0.0, 8.0), (INF, 8.0)]) == -1.0
    assert histogram_quantile(0.25, [(0.0, 8.0), (1.0, 8.0), (INF, 8.0)]) == 0.0


def test_quantile_in_the_inf_bucket_returns_the_second_highest_bound() -> None:
    b = [(0.1, 1.0), (0.5, 2.0), (INF, 10.0)]
    assert histogram_quantile(0.99, b) == 0.5
    assert histogram_quantile(1.0, b) == 0.5


def test_quantile_special_cases() -> None:
    b = [(0.1, 1.0), (INF, 2.0)]
    assert math.isnan(histogram_quantile(math.nan, b))
    assert histogram_quantile(-0.1, b) == -INF
    assert histogram_quantile(1.1, b) == INF
    assert math.isnan(histogram_quantile(0.5, [(0.1, 1.0), (1.0, 2.0)]))  # no +Inf bucket
    assert math.isnan(histogram_quantile(0.5, [(INF, 5.0)]))  # fewer than 2 buckets
    assert math.isnan(histogram_quantile(0.5, [(0.1, 0.0), (INF, 0.0)]))  # no observation
    assert math.isnan(histogram_quantile(0.5, []))


def test_quantile_sorts_merges_equal_bounds_and_forces_monotonic_counts() -> None:
    shuffled = [(INF, 40.0), (0.2, 30.0), (0.1, 10.0), (0.5, 40.0)]
    assert histogram_quantile(0.5, shuffled) == pytest.approx(0.15)
    # two 0.2 buckets are summed; the dip at 0.5 is lifted to the envelope
    assert histogram_quantile(0.5, [(0.1, 4.0), (0.2, 3.0), (0.2, 3.0), (0.5, 5.0), (INF, 10.0)]) \
        == pytest.approx(0.1 + 0.1 * (5 - 4) / (6 - 4))  # fmt: skip


def test_quantile_equals_prometheus_on_the_same_buckets(tmp_path: Path) -> None:
    """promtool (Prometheus 2.42's engine) evaluates histogram_quantile on bucket series; the
    rule test passes only when our values are the ones it computes."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by scripts/setup.sh"
    cases = {
        "a": [(0.001, 0.0), (0.0025, 3.0), (0.005, 9.0), (0.01, 20.0), (0.025, 21.0), (INF, 25.0)],
        "b": [(0.5, 7.0), (1.0, 7.0), (2.5, 100.0), (INF, 100.0)],
        "c": [(0.1, 3.0), (0.2, 3.0), (INF, 3.0)],
    }
    series, tests = [], []
    for name, buckets in cases.items():
        for le, count in buckets:
            label = "+Inf" if le == INF else repr(le)
            series.append(
                f'      - series: \'h_bucket{{case="{name}",le="{label}"}}\'\n'
                f"        values: '{count:g}'"
            )
        for q in (0.0, 0.25, 0.5, 0.9, 0.99, 1.0):
            expr = f'histogram_quantile({q}, h_bucket{{case="{name}"}})'
            expected = histogram_quantile(q, buckets)
            if math.isnan(expected):  # promtool cannot compare NaN: x != x holds only for NaN
                expr, expected = f"{expr} != bool {expr}", 1.0
            tests.append(
                f"      - expr: '{expr}'\n"
                f"        eval_time: 0\n"
                f"        exp_samples:\n"
                f"          - labels: '{{case=\"{name}\"}}'\n"
                f"            value: {expected!r}"
            )
    (tmp_path / "rules.yml").write_text("groups: []\n")
    (tmp_path / "test.yml").write_text(
        "rule_files: [rules.yml]\nevaluation_interval: 1m\ntests:\n"
        "  - interval: 1m\n    input_series:\n" + "\n".join(series) + "\n"
        "    promql_expr_test:\n" + "\n".join(tests) + "\n"
    )
    res = subprocess.run(
        [promtool, "test", "rules", "test.yml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr


# -- trend -----------------------------------------------------------------------------------
def test_trend_dead_band() -> None:
    eps = 0.0001
    assert trend_direction(0.00011, eps) == 1
    assert trend_direction(-0.00011, eps) == -1
    for x in (0.0, eps, -eps, 0.00009, -0.00009):
        assert trend_direction(x, eps) == 0
    assert trend_direction(1e-12, 0.0) == 1 and trend_direction(0.0, 0.0) == 0


# -- execution risk --------------------------------------------------------------------------
def risk(**kw: object) -> float:
    args: dict[str, object] = dict(
        notional=1000.0, depth=1e9, p99_latency=0.0, latency_budget=0.25, rois=[],
        roi_eps=1e-4, book_age=0.0, stale_after=10.0, weights=W,
    )  # fmt: skip
    args.update(kw)
    return execution_risk(**args).score  # type: ignore[arg-type]


def test_risk_is_zero_for_deep_fresh_steady_books() -> None:
    r = execution_risk(1000.0, 1e9, 0.0, 0.25, [0.01, 0.01], 1e-4, 0.0, 10.0, W)
    assert r.score == pytest.approx(1e-6 * 0.4) and r.level == "low"
    assert "steady" in r.explanation or "fill" in r.explanation


def test_risk_factors_add_with_their_weights() -> None:
    # x_fill = 0.5, x_lat = 0.1/0.25 = 0.4, x_vol = std([1,3]%)/mean = 0.01/0.02 = 0.5, x_age = 0.3
    r = execution_risk(5000.0, 10000.0, 0.1, 0.25, [0.01, 0.03], 1e-4, 3.0, 10.0, W)
    assert r.factors == pytest.approx({"fill": 0.5, "latency": 0.4, "volatility": 0.5, "age": 0.3})
    assert r.score == pytest.approx(0.4 * 0.5 + 0.2 * 0.4 + 0.2 * 0.5 + 0.2 * 0.3)
    assert r.level == "medium" and "fill" in r.explanation


def test_risk_is_clipped_to_one_and_zero_depth_saturates() -> None:
    assert risk(notional=1e6, depth=100.0) == 1.0
    assert risk(depth=0.0) == 1.0
    # a zero weight ignores even an infinite factor (never NaN)
    assert risk(depth=0.0, weights={**W, "fill": 0.0}) == 0.0


def test_risk_level_edges() -> None:
    only_age = {"fill": 0.0, "latency": 0.0, "volatility": 0.0, "age": 1.0}
    for age, lvl in ((0.3299, "low"), (0.33, "medium"), (0.6599, "medium"), (0.66, "high")):
        r = execution_risk(1.0, 1.0, None, 0.25, [], 1e-4, age, 1.0, only_age)
        assert r.level == lvl, (age, r.score)


def test_risk_unknown_latency_counts_zero_and_says_so() -> None:
    only_lat = {"latency": 1.0}
    r = execution_risk(1.0, 1e9, None, 0.25, [], 1e-4, 0.0, 10.0, only_lat)
    assert r.score == 0.0 and r.factors["latency"] == 0.0
    assert risk(p99_latency=0.5, weights=only_lat) == 1.0


def test_volatility_ratio_edges() -> None:
    assert volatility_ratio([], 1e-4) == 0.0 and volatility_ratio([0.5], 1e-4) == 0.0
    assert volatility_ratio([0.002, 0.002, 0.002], 1e-4) == 0.0
    # mean 0: divided by eps, not by zero
    assert volatility_ratio([-0.001, 0.001], 1e-4) == pytest.approx(0.001 / 1e-4)


# -- buying pressure -------------------------------------------------------------------------
def test_buying_pressure_edges() -> None:
    assert buying_pressure(0.0, 0.0) is None
    all_bids = buying_pressure(10.0, 0.0)
    assert all_bids is not None and all_bids.value == 1.0 and all_bids.level == "high"
    all_asks = buying_pressure(0.0, 10.0)
    assert all_asks is not None and all_asks.value == 0.0 and all_asks.level == "low"
    even = buying_pressure(5.0, 5.0)
    assert even is not None and even.value == 0.5 and even.level == "medium"
    # (1 + imbalance) / 2 with imbalance = (60-40)/100
    p = buying_pressure(60.0, 40.0)
    assert p is not None and p.value == pytest.approx(0.6) and p.level == "high"
    p = buying_pressure(39.0, 61.0)
    assert p is not None and p.level == "low" and "sellers" in p.explanation


# -- latency audit ---------------------------------------------------------------------------
def buckets_at(value_bucket: int) -> list[tuple[float, float]]:
    bounds = [0.01, 0.1, 0.25, 0.5, INF]
    return [(b, 100.0 if i >= value_bucket else 0.0) for i, b in enumerate(bounds)]


def test_latency_audit_levels() -> None:
    low = latency_audit(buckets_at(0), 0.25, 0.002, 0, 0, 0)
    assert low.level == "low" and low.p99 == pytest.approx(0.0099)
    assert low.p50 == pytest.approx(0.005)
    medium = latency_audit(buckets_at(2), 0.25, 0.002, 0, 1, 2)
    assert medium.level == "medium" and "1 reconnects, 2 resyncs" in medium.explanation
    high = latency_audit(buckets_at(3), 0.25, 0.002, 0, 0, 0)
    assert high.level == "high" and high.p99 is not None and high.p99 > 0.25
    behind = latency_audit(buckets_at(0), 0.25, -0.05, 3, 0, 0)
    assert behind.level == "medium" and "behind" in behind.explanation and behind.negative == 3
    empty = latency_audit([(0.1, 0.0), (INF, 0.0)], 0.25, None, 0, 0, 0)
    assert empty.p99 is None and empty.p50 is None and empty.level == "medium"

"""The lean exposition renders exactly what prometheus_client's generate_latest renders."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
from collections.abc import Iterator

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    Summary,
    generate_latest,
)
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exporter.feeds.stats import LatencyHistogram
from exporter.http.collector import MarketCollector
from exporter.http.exposition import Exposition, Renderer, format_value, generate
from tests.unit.test_market import Harness, make_config

ODD = ['quote " in', "back \\ slash", "new\nline", "ünïcødé €", "", "a=b,c"]


class Custom(Collector):
    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily("custom_values", "Help with \\ and\nnewline", labels=["z", "a"])
        values = [0.0, -0.0, 1.0, 5, 1e6, 999999.9, 1234567.0, 1e22, 1e-7, -2e7]
        for i, v in enumerate([*values, math.nan, math.inf, -math.inf]):
            g.add_metric([str(i), ODD[i % len(ODD)]], v)
        g.add_metric(["ts", "x"], 1.5, timestamp=1700000000.123)
        yield g
        gh = GaugeHistogramMetricFamily("custom_gh", "gauge histogram", labels=["l"])
        gh.add_metric(["x"], [("1.0", 2.0), ("+Inf", 3.0)], gsum_value=4.5)
        yield gh


def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    c = Counter("things", "Things", ["kind"], registry=reg)
    for v in ODD:
        c.labels(v).inc(3)
    Gauge("temperature", "T", registry=reg).set(-12.25)
    h = Histogram("latency_seconds", "L", ["ex"], registry=reg)
    for x in (0.001, 0.2, 3.0, 100.0):
        h.labels("binance").observe(x)
    Summary("sizes", "S", registry=reg).observe(7)
    Info("build", "B", registry=reg).info({"version": "1.2", "odd": 'x"y'})
    Enum("state", "E", states=["a", "b"], registry=reg).state("b")
    reg.register(Custom())
    return reg


def test_same_bytes_as_generate_latest() -> None:
    reg = registry()
    assert generate(reg) == generate_latest(reg)
    r = Renderer()
    generate(reg, r)
    assert generate(reg, r) == generate_latest(reg)  # with a warm label cache too


def market_registry() -> tuple[CollectorRegistry, Harness]:
    """A MarketCollector over three live books (two routes, one conversion book)."""
    h = Harness(make_config())
    h.book("kraken", "USDT/USD", 0.9999, 1.0001)
    h.book("binance", "BTC/USDT", 100.0, 100.5)
    h.book("kraken", "BTC/USD", 101.0, 101.5)
    reg = CollectorRegistry()
    reg.register(MarketCollector(h.state, {"binance": LatencyHistogram()}))
    return reg, h


def test_market_collector_same_bytes_and_parse() -> None:
    reg = market_registry()[0]
    ours, theirs = generate(reg), generate_latest(reg)
    assert ours == theirs
    parsed = list(text_string_to_metric_families(ours.decode()))
    assert parsed == list(text_string_to_metric_families(theirs.decode()))
    assert any(f.name == "cryptoarb_net_roi_ratio" and f.samples for f in parsed)


def test_label_cache_is_bounded() -> None:
    r = Renderer(max_labelsets=3)
    reg = registry()
    assert r.render(reg.collect()) == generate_latest(reg)
    assert len(r._labels) <= 3


@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**20), 10**20))
def test_format_value_matches_go_formatting(value: float) -> None:
    assert format_value(value) == floatToGoString(value)


async def test_async_render_reflects_latest_state_and_shares_concurrent_scrapes() -> None:
    reg = CollectorRegistry()
    g = Gauge("value", "V", ["i"], registry=reg)
    for i in range(3000):
        g.labels(str(i)).set(i)
    expo = Exposition(reg, slice_seconds=0.0)  # yield between every family
    g.labels("7").set(123.5)
    body = await expo.render()
    assert body == generate_latest(reg)
    assert 'value{i="7"} 123.5\n' in body.decode()
    a, b = await asyncio.gather(expo.render(), expo.render())
    assert a is b


async def test_collectors_are_walked_lazily_so_feeds_run_between_groups() -> None:
    """A large scrape never builds every group in one uninterrupted step: the event loop
    runs between the groups a collector yields (books, feeds, pairs, windows)."""
    events: list[str] = []

    class Groups(Collector):
        def collect(self) -> Iterator[Metric]:
            for name in ("books", "feeds", "pairs"):
                events.append(f"build {name}")
                g = GaugeMetricFamily(f"group_{name}", name)
                g.add_metric([], 1.0)
                yield g

    reg = CollectorRegistry(auto_describe=False)
    reg.register(Groups())

    async def feed() -> None:  # until cancelled: a render step may wait on a timer
        while True:
            events.append("feed")
            await asyncio.sleep(0)

    expo = Exposition(reg, slice_seconds=0.0)
    task = asyncio.create_task(feed())
    body = await expo.render()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    builds = [i for i, e in enumerate(events) if e.startswith("build")]
    assert body == generate_latest(reg)
    assert len(builds) == 3
    # a feed step ran between consecutive group builds
    assert all("feed" in events[a + 1 : b] for a, b in itertools.pairwise(builds))
    assert expo.longest_step_seconds > 0

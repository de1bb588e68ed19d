"""The collectors' prebuilt label sets give exactly the samples prometheus_client's own
``add_metric`` builds from the same label values (so /metrics and generate_latest agree)."""

from __future__ import annotations

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from exporter.analytics.windows import DURATION_BUCKETS, DurationHistogram
from exporter.feeds.stats import LatencyHistogram
from exporter.http.collector import MarketCollector
from exporter.http.exposition import LabelSet
from exporter.model import ErrorReason
from tests.unit.test_market import Harness, make_config

FAMILY = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily}


def collected() -> tuple[list[Metric], Harness]:
    h = Harness(make_config())
    h.book("kraken", "USDT/USD", 0.9999, 1.0001)
    h.book("binance", "BTC/USDT", 100.0, 100.5)
    h.book("kraken", "BTC/USD", 101.0, 101.5)
    h.feeds[next(iter(h.feeds))].errors[ErrorReason.CHECKSUM] += 2
    hist = h.state.windows.durations.setdefault("BTC/USD", DurationHistogram())
    for seconds in (0.2, 3.0, 45.0, 1e6):
        hist.observe(seconds)
    collector = MarketCollector(h.state, {"binance": LatencyHistogram()})
    return list(collector.collect()), h


def test_gauges_and_counters_match_add_metric() -> None:
    families, _ = collected()
    checked = 0
    for fam in families:
        if fam.type not in FAMILY or not fam.samples:
            continue
        names = list(fam.samples[0].labels)
        ref = FAMILY[fam.type](fam.name, fam.documentation, labels=names)
        for s in fam.samples:
            ref.add_metric([s.labels[n] for n in names], s.value)
        assert fam.samples == ref.samples, fam.name
        checked += all(isinstance(s.labels, LabelSet) for s in fam.samples)
    assert checked >= 15  # the book, feed, pair and window families


def test_window_duration_histogram_matches_add_metric() -> None:
    families, h = collected()
    (fam,) = [f for f in families if f.name == "cryptoarb_window_duration_seconds"]
    ref = HistogramMetricFamily(fam.name, fam.documentation, labels=["symbol"])
    for symbol, hist in h.state.windows.durations.items():
        acc, buckets = 0, []
        for bound, c in zip(DURATION_BUCKETS, hist.counts, strict=False):
            acc += c
            buckets.append((repr(float(bound)), acc))
        buckets.append(("+Inf", acc + hist.counts[-1]))
        ref.add_metric([symbol], buckets, hist.total)
    assert fam.samples == ref.samples
    assert any(s.value == 4 for s in fam.samples if s.name.endswith("_count"))


def test_label_sets_are_the_same_objects_at_every_scrape() -> None:
    h = Harness(make_config())
    h.book("kraken", "USDT/USD", 0.9999, 1.0001)
    h.book("binance", "BTC/USDT", 100.0, 100.5)
    collector = MarketCollector(h.state, {"binance": LatencyHistogram()})
    first = [s.labels for f in collector.collect() for s in f.samples if s.labels]
    second = [s.labels for f in collector.collect() for s in f.samples if s.labels]
    shared = [a for a, b in zip(first, second, strict=True) if a is b]
    assert len(shared) > len(first) // 2  # every series but the latency histogram's

"""Custom Collector: renders market metrics from MarketState's views and FeedStats per scrape.

No I/O and no computation beyond reading plain in-memory records happens in ``collect()``.
Fixed label sets (feed counters, error reasons, window counters, fillability, window_open)
are exported from start, at 0, so series never appear from nowhere. Each series' labels are
built once (:class:`~exporter.http.exposition.LabelCache`) and reused at every scrape.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from exporter import __version__
from exporter.analytics import build as analytics_build
from exporter.analytics.insights import trend_direction
from exporter.analytics.windows import DURATION_BUCKETS
from exporter.feeds.stats import LatencyHistogram
from exporter.http.exposition import LabelCache
from exporter.market.intelligence import Intelligence
from exporter.market.state import MarketState
from exporter.model import BookStatus, ErrorReason, label_number

P = "cryptoarb_"
_BOOK = ("exchange", "symbol")
_PAIR = ("symbol", "buy_exchange", "sell_exchange")
_ROUTE = (*_PAIR, "notional")


class MarketCollector(Collector):
    def __init__(self, state: MarketState, latency: dict[str, LatencyHistogram]) -> None:
        self.state = state
        self.latency = latency
        self._now = 0.0
        self._analytics_build = analytics_build()
        self._book = LabelCache(_BOOK)
        self._book_band = LabelCache([*_BOOK, "band"])
        self._book_side = LabelCache([*_BOOK, "side", "band"])
        self._book_reason = LabelCache([*_BOOK, "reason"])
        self._pair = LabelCache(_PAIR)
        self._route = LabelCache(_ROUTE)
        self._symbol = LabelCache(["symbol"])
        self._symbol_le = LabelCache(["symbol", "le"])
        self._reasons = [(reason, reason.value) for reason in ErrorReason]
        self._les = [repr(float(bound)) for bound in DURATION_BUCKETS]

    def describe(self) -> list[Metric]:
        # Registration must not call collect(): the state may still be empty.
        return []

    def collect(self) -> Iterator[Metric]:
        # One instant per scrape: every family judges liveness at the same time.
        self._now = self.state.clock.monotonic()
        yield from self._books()
        yield from self._feeds()
        yield from self._latency()
        yield from self._pairs()
        yield from self._windows()
        cfg = self.state.config
        info = GaugeMetricFamily(
            P + "reference_info",
            "Reference notional and band used by history, insights and alerts",
            labels=["notional", "band"],
        )
        info.add_metric([label_number(cfg.reference_notional), label_number(cfg.reference_band)], 1)
        yield info
        build = GaugeMetricFamily(
            P + "build_info",
            "Exporter version; analytics: compiled (mypyc) or python",
            labels=["version", "analytics"],
        )
        build.add_metric([__version__, self._analytics_build], 1)
        yield build

    def _books(self) -> Iterator[Metric]:
        m = self.state
        ls = ["exchange", "symbol"]
        bid = GaugeMetricFamily(
            P + "orderbook_best_bid_price", "Best bid in the canonical quote", labels=ls
        )
        ask = GaugeMetricFamily(
            P + "orderbook_best_ask_price", "Best ask in the canonical quote", labels=ls
        )
        spread = GaugeMetricFamily(
            P + "orderbook_spread_ratio", "Book spread (ask - bid) / mid", labels=ls
        )
        depth = GaugeMetricFamily(
            P + "orderbook_depth_quote",
            "Depth within the band around mid, canonical quote",
            labels=[*ls, "side", "band"],
        )
        complete = GaugeMetricFamily(
            P + "orderbook_depth_complete",
            "1 when the copied levels reach the band edge on both sides",
            labels=[*ls, "band"],
        )
        imbalance = GaugeMetricFamily(
            P + "orderbook_imbalance_ratio",
            "(bid depth - ask depth) / (bid depth + ask depth) within the band",
            labels=[*ls, "band"],
        )
        updated = GaugeMetricFamily(
            P + "orderbook_last_update_timestamp_seconds",
            "Local receive wall time of the last book update",
            labels=ls,
        )
        stale = GaugeMetricFamily(
            P + "orderbook_stale", "1 when the book is stale or frozen", labels=ls
        )
        bands = [(b, label_number(b)) for b in m.config.bands]
        book, book_band, book_side = self._book, self._book_band, self._book_side
        for view in m.books(self._now):
            ex, symbol, rec = view.exchange, view.symbol, view.record
            labels = book(ex, symbol)
            _add(stale, labels, float(view.status is BookStatus.STALE))
            if rec is None:
                continue
            _add(updated, labels, rec.snapshot.received_at)
            met = rec.metrics
            if met is None or rec.rate is None:
                continue
            _add(bid, labels, met.best_bid * rec.rate)
            _add(ask, labels, met.best_ask * rec.rate)
            _add(spread, labels, met.spread_ratio)
            for b, bl in bands:
                bd, ad = met.depth[b]
                _add(depth, book_side(ex, symbol, "bid", bl), bd)
                _add(depth, book_side(ex, symbol, "ask", bl), ad)
                band_labels = book_band(ex, symbol, bl)
                _add(complete, band_labels, float(met.depth_complete[b]))
                if b in met.imbalance:
                    _add(imbalance, band_labels, met.imbalance[b])
        yield from (bid, ask, spread, depth, complete, imbalance, updated, stale)

    def _feeds(self) -> Iterator[Metric]:
        ls = ["exchange", "symbol"]
        up = GaugeMetricFamily(
            P + "feed_up", "1 when the feed is connected and its book synchronised", labels=ls
        )
        msgs = CounterMetricFamily(
            P + "feed_messages", "Messages handled by ccxt for this market", labels=ls
        )
        reconnects = CounterMetricFamily(
            P + "feed_reconnects", "Reconnections of this market's client", labels=ls
        )
        resyncs = CounterMetricFamily(
            P + "feed_resyncs", "Book resynchronisations (sequence gap, checksum)", labels=ls
        )
        errors = CounterMetricFamily(
            P + "feed_errors", "Feed errors by reason", labels=[*ls, "reason"]
        )
        book, book_reason, reasons = self._book, self._book_reason, self._reasons
        for stats in self.state.feeds.values():
            ex, symbol, counts = stats.exchange, stats.symbol, stats.errors
            labels = book(ex, symbol)
            _add(up, labels, float(stats.up))
            _count(msgs, labels, stats.messages)
            _count(reconnects, labels, stats.reconnects)
            _count(resyncs, labels, stats.resyncs)
            for reason, value in reasons:
                _count(errors, book_reason(ex, symbol, value), counts[reason])
        yield from (up, msgs, reconnects, resyncs, errors)

    def _latency(self) -> Iterator[Metric]:
        hist = HistogramMetricFamily(
            P + "feed_latency_seconds",
            "Exchange event time to local receive time (negatives observed as 0)",
            labels=["exchange"],
        )
        neg = CounterMetricFamily(
            P + "feed_negative_latency",
            "Updates whose exchange time was ahead of the local clock",
            labels=["exchange"],
        )
        offset = GaugeMetricFamily(
            P + "feed_clock_offset_seconds",
            "Minimum signed latency over the last 60 s (clock offset estimate)",
            labels=["exchange"],
        )
        now = self.state.clock.time()
        for ex, h in self.latency.items():
            hist.add_metric([ex], h.cumulative(), h.total)
            neg.add_metric([ex], h.negative)
            off = h.clock_offset(now)
            if off is not None:
                offset.add_metric([ex], off)
        yield from (hist, neg, offset)

    def _pairs(self) -> Iterator[Metric]:
        m = self.state
        pl = ["symbol", "buy_exchange", "sell_exchange"]
        nl = [*pl, "notional"]
        cross = GaugeMetricFamily(
            P + "cross_spread_ratio",
            "Gross top-of-book spread buying on A, selling on B",
            labels=pl,
        )
        roi = GaugeMetricFamily(P + "net_roi_ratio", "Net ROI after fees and slippage", labels=nl)
        profit = GaugeMetricFamily(
            P + "net_profit_quote", "Net profit after fees and slippage, canonical quote", labels=nl
        )
        fillable = GaugeMetricFamily(
            P + "opportunity_fillable", "1 when both live books can absorb the notional", labels=nl
        )
        breakeven = GaugeMetricFamily(
            P + "breakeven_notional_quote", "Largest notional with net profit >= 0", labels=pl
        )
        optimal = GaugeMetricFamily(
            P + "optimal_notional_quote", "Notional maximising net profit", labels=pl
        )
        optimal_profit = GaugeMetricFamily(
            P + "optimal_net_profit_quote", "Net profit at the optimal notional", labels=pl
        )
        notionals = [(n, label_number(n)) for n in m.config.notionals]
        pair, route = self._pair, self._route
        for key in m.pair_keys():
            s, a, b = key
            labels = pair(s, a, b)
            result = m.live_pair(key, self._now)
            if result is None:
                for _, nl_ in notionals:
                    _add(fillable, route(s, a, b, nl_), 0.0)
                continue
            _add(cross, labels, result.gross_spread)
            for fill, (_, nl_) in zip(result.fills, notionals, strict=True):
                route_labels = route(s, a, b, nl_)
                _add(fillable, route_labels, float(fill.fillable))
                if fill.net_roi is not None and fill.net_profit is not None:
                    _add(roi, route_labels, fill.net_roi)
                    _add(profit, route_labels, fill.net_profit)
            # No profitable size at all is exported as 0 ("nothing to trade").
            opt = result.optimum
            _add(breakeven, labels, opt.breakeven_notional if opt else 0.0)
            _add(optimal, labels, opt.optimal_notional if opt else 0.0)
            _add(optimal_profit, labels, opt.optimal_net_profit if opt else 0.0)
        yield from (cross, roi, profit, fillable, breakeven, optimal, optimal_profit)

    def _windows(self) -> Iterator[Metric]:
        w = self.state.windows
        nl = ["symbol", "buy_exchange", "sell_exchange", "notional"]
        is_open = GaugeMetricFamily(
            P + "window_open", "1 while a profitable window is open", labels=nl
        )
        total = CounterMetricFamily(P + "windows", "Profitable windows opened", labels=nl)
        route, is_opened = self._route, w.open
        for key, count in w.totals.items():
            labels = route(key[0], key[1], key[2], label_number(key[3]))
            _add(is_open, labels, float(key in is_opened))
            _count(total, labels, count)
        dur = HistogramMetricFamily(
            P + "window_duration_seconds", "Duration of closed windows", labels=["symbol"]
        )
        # HistogramMetricFamily.add_metric's samples, with prebuilt labels
        append, les, symbol_le = dur.samples.append, self._les, self._symbol_le
        bucket, n_name, sum_name = dur.name + "_bucket", dur.name + "_count", dur.name + "_sum"
        with_count = float(les[0] if les else "+Inf") >= 0
        for symbol, h in w.durations.items():
            acc = 0
            for le, c in zip(les, h.counts, strict=False):
                acc += c
                append(Sample(bucket, symbol_le(symbol, le), acc))
            acc += h.counts[-1]
            append(Sample(bucket, symbol_le(symbol, "+Inf"), acc))
            if with_count:
                labels = self._symbol(symbol)
                append(Sample(n_name, labels, acc))
                append(Sample(sum_name, labels, h.total))
        yield from (is_open, total, dur)


def _add(family: Metric, labels: dict[str, str], value: float) -> None:
    """``GaugeMetricFamily.add_metric`` with prebuilt labels (same sample)."""
    family.samples.append(Sample(family.name, labels, value))


def _count(family: Metric, labels: dict[str, str], value: float) -> None:
    """``CounterMetricFamily.add_metric`` with prebuilt labels (same sample)."""
    family.samples.append(Sample(family.name + "_total", labels, value))


class IntelligenceCollector(Collector):
    """Renders the precomputed intelligence dicts; no computation in ``collect()``."""

    def __init__(self, intel: Intelligence) -> None:
        self.intel = intel
        self._route = LabelCache(_ROUTE)
        self._book = LabelCache(_BOOK)

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        it = self.intel
        p = "cryptoarb_"
        corr = GaugeMetricFamily(
            p + "spread_correlation_ratio",
            "Pearson correlation of the reference spreads of two symbols (1 s samples)",
            labels=["symbol", "other_symbol"],
        )
        for (a, b), (r, _n) in sorted(it.correlation.items()):
            corr.add_metric([a, b], r)
        dur = GaugeMetricFamily(
            p + "correlation_compute_duration_seconds",
            "Duration of the last correlation matrix computation",
        )
        dur.add_metric([], it.correlation_duration)
        change = GaugeMetricFamily(
            p + "spread_change_ratio",
            "Change of the reference spread over the trend window",
            labels=["symbol", "window"],
        )
        direction = GaugeMetricFamily(
            p + "spread_trend_direction",
            "1 rising, -1 falling, 0 within +-trend_epsilon over the trend window",
            labels=["symbol", "window"],
        )
        eps = it.config.trend_epsilon
        for (symbol, w), v in it.trends.items():
            change.add_metric([symbol, label_number(w)], v)
            direction.add_metric([symbol, label_number(w)], trend_direction(v, eps))
        risk = GaugeMetricFamily(
            p + "execution_risk_ratio",
            "Execution risk score in [0, 1] (fill, latency, volatility, book age)",
            labels=["symbol", "buy_exchange", "sell_exchange", "notional"],
        )
        route = self._route
        for (s, a, b, n), rk in it.risk.items():
            _add(risk, route(s, a, b, label_number(n)), rk.score)
        pressure = GaugeMetricFamily(
            p + "buying_pressure_ratio",
            "(1 + reference-band imbalance) / 2: bid share of the band's depth",
            labels=["exchange", "symbol"],
        )
        book = self._book
        for (ex, s), pr in it.pressure.items():
            _add(pressure, book(ex, s), pr.value)
        p50 = GaugeMetricFamily(
            p + "feed_latency_p50_seconds",
            "Median feed latency over insights.latency_seconds (histogram_quantile rules)",
            labels=["exchange"],
        )
        p99 = GaugeMetricFamily(
            p + "feed_latency_p99_seconds",
            "99th percentile feed latency over insights.latency_seconds",
            labels=["exchange"],
        )
        for ex, audit in it.latency.items():
            if audit.p50 is not None:
                p50.add_metric([ex], audit.p50)
            if audit.p99 is not None:
                p99.add_metric([ex], audit.p99)
        errors = CounterMetricFamily(
            p + "intelligence_errors",
            "Failures of the intelligence timer by stage",
            labels=["stage"],
        )
        for stage, count in it.errors.items():
            errors.add_metric([stage], count)
        yield from (corr, dur, change, direction, risk, pressure, p50, p99, errors)

"""Market intelligence service: history rows, trends, insights (every ``history.interval``)
and the correlation matrix (every ``correlation.interval``, in a worker thread).

Everything here reads :class:`MarketState`'s views and the feed counters, and leaves its
results in plain dicts that ``IntelligenceCollector`` (exporter/http/collector.py) and the
JSON API read without computing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Mapping

from exporter.analytics.history import (
    HistoryRow,
    HistoryWindow,
    Sample,
    correlation_matrix,
    depth_weighted_imbalance,
    median_or_none,
    signed_basis,
    spread_change,
)
from exporter.analytics.insights import (
    LatencyAudit,
    Pressure,
    Risk,
    buying_pressure,
    execution_risk,
    latency_audit,
)
from exporter.analytics.windows import WindowKey
from exporter.config import Config
from exporter.feeds.stats import FeedStats, LatencyHistogram
from exporter.market.state import BookRecord, MarketState
from exporter.model import BookSnapshot, FeedKey, PairKey
from exporter.store.reader import StateUnavailable
from exporter.store.writer import StateWriter

log = logging.getLogger(__name__)

MAX_LATENCY_SAMPLES = 10_000  # per book and interval: a firehose still gets a fair median
REFILL_TIMEOUT = 5.0
STAGES = ("tick", "correlation", "refill")


class Intelligence:
    def __init__(
        self,
        config: Config,
        state: MarketState,
        latency: Mapping[str, LatencyHistogram],
        feed_stats: Mapping[FeedKey, FeedStats],
        writer: StateWriter,
    ) -> None:
        self.config = config
        self.state = state
        self.clock = state.clock
        self._hist = latency
        self._feeds = feed_stats
        self._writer = writer
        self.symbols = list(config.symbols)
        self._symbol_set = frozenset(self.symbols)
        self.corr_symbols = self.symbols[: config.correlation.symbols]
        self.max_stale = max(
            config.stale_after(ex, m) for s in config.symbols.values() for ex, m in s.items()
        )
        ins = config.insights
        self.horizon = (
            max(config.correlation.window_seconds, *config.trend_windows, ins.volatility_seconds)
            + self.max_stale
            + 2 * config.history.interval
        )
        self.window = HistoryWindow(self.symbols, self.horizon)
        self._ref_idx = config.notionals.index(config.reference_notional)
        # (exchange, symbol) -> latencies received since the last tick
        self._lat_samples: dict[tuple[str, str], list[float]] = {}
        # exchange -> (monotonic time, per-bucket counts) snapshots over latency_seconds
        self._lat_snaps: dict[str, deque[tuple[float, list[int]]]] = {ex: deque() for ex in latency}
        # (symbol, A, B, notional) -> (sample times, net ROIs) over volatility_seconds
        self._roi: dict[WindowKey, tuple[deque[float], deque[float]]] = {}
        # results, read by the collector and the API
        self.trends: dict[tuple[str, float], float] = {}
        self.correlation: dict[tuple[str, str], tuple[float, int]] = {}
        self.correlation_duration = 0.0
        self.correlation_at: float | None = None
        self.risk: dict[WindowKey, Risk] = {}
        self.pressure: dict[tuple[str, str], Pressure] = {}
        self.latency: dict[str, LatencyAudit] = {}
        self.refilled = 0
        self.errors = dict.fromkeys(STAGES, 0)

    # -- hot path ----------------------------------------------------------------------
    def observe_book(self, snap: BookSnapshot) -> None:
        """Called per book update: O(1), keeps the latency for the interval's median."""
        if snap.exchange_ts is None or snap.symbol not in self._symbol_set:
            return  # conversion books have no history row
        samples = self._lat_samples.setdefault((snap.exchange, snap.symbol), [])
        if len(samples) < MAX_LATENCY_SAMPLES:
            samples.append(snap.received_at - snap.exchange_ts)

    # -- per interval ------------------------------------------------------------------
    def _live(self, exchange: str, symbol: str) -> BookRecord | None:
        return self.state.live_book(exchange, symbol)

    def history_row(self, symbol: str, now: float) -> HistoryRow:
        band = self.config.reference_band
        live = {ex: r for ex in self.config.symbols[symbol] if (r := self._live(ex, symbol))}
        a, b = self.config.reference_pair
        spread = None
        if a in live and b in live:
            ma, mb = live[a].metrics, live[b].metrics
            ra, rb = live[a].rate, live[b].rate
            assert ma is not None and mb is not None and ra is not None and rb is not None
            spread = signed_basis(ma.mid, ra, mb.mid, rb)
        depths = [r.metrics.depth[band] for r in live.values() if r.metrics is not None]
        liquidity = sum(bd + ad for bd, ad in depths) if depths else None
        medians = [
            m
            for ex in self.config.symbols[symbol]
            if (m := median_or_none(self._lat_samples.pop((ex, symbol), []))) is not None
        ]
        profits = [
            fill.net_profit
            for _key, res in self.state.live_pairs(symbol)
            if (fill := res.fills[self._ref_idx]).net_profit is not None
        ]
        return HistoryRow(
            time=now,
            spread=spread,
            liquidity=liquidity,
            latency=max(medians) if medians else None,
            imbalance=depth_weighted_imbalance(depths),
            net_profit=max(profits) if profits else None,
        )

    def tick(self, now: float, mono: float | None = None) -> None:
        mono = self.clock.monotonic() if mono is None else mono
        for symbol in self.symbols:
            row = self.history_row(symbol, now)
            self._writer.put_history(symbol, row.as_dict())
            self.window.append(symbol, row)
        self._update_trends(now)
        self._update_latency(now, mono)
        self._update_pressure()
        self._update_risk(now)

    def _update_trends(self, now: float) -> None:
        tolerance = max(self.max_stale, 2 * self.config.history.interval)
        for symbol in self.symbols:
            samples = self.window.spreads(symbol)
            for w in self.config.trend_windows:
                change = spread_change(samples, now, w, tolerance)
                if change is None:
                    self.trends.pop((symbol, w), None)
                else:
                    self.trends[(symbol, w)] = change

    def _update_latency(self, now: float, mono: float) -> None:
        horizon = self.config.insights.latency_seconds
        for ex, h in self._hist.items():
            snaps = self._lat_snaps[ex]
            snaps.append((mono, list(h.counts)))
            # keep one snapshot at or before the horizon as the baseline
            while len(snaps) > 2 and snaps[1][0] <= mono - horizon:
                snaps.popleft()
            base = snaps[0][1]
            delta = [c - b for c, b in zip(h.counts, base, strict=True)]
            buckets: list[tuple[float, float]] = []
            acc = 0
            for bound, c in zip(h.buckets, delta, strict=False):
                acc += c
                buckets.append((bound, float(acc)))
            buckets.append((math.inf, float(acc + delta[-1])))
            stats = [s for s in self._feeds.values() if s.exchange == ex]
            self.latency[ex] = latency_audit(
                buckets if len(snaps) > 1 else [],
                self.config.insights.latency_budget,
                h.clock_offset(now),
                h.negative,
                sum(s.reconnects for s in stats),
                sum(s.resyncs for s in stats),
            )

    def _update_pressure(self) -> None:
        band = self.config.reference_band
        for symbol, mapping in self.config.symbols.items():
            for ex in mapping:
                rec = self._live(ex, symbol)
                p = buying_pressure(*rec.metrics.depth[band]) if rec and rec.metrics else None
                if p is None:
                    self.pressure.pop((ex, symbol), None)
                else:
                    self.pressure[(ex, symbol)] = p

    def risk_inputs(
        self, key: PairKey, now: float
    ) -> tuple[float, float | None, float, float] | None:
        """(reference-band depth, p99, book age, its stale_after) for a live pair, else None.

        Depth is the thinner side traded against: A's asks and B's bids in the band; the age
        is the book with the larger age / stale_after; p99 the worse of both exchanges."""
        symbol, a, b = key
        cfg = self.config
        ra, rb = self._live(a, symbol), self._live(b, symbol)
        if ra is None or rb is None or self.state.live_pair(key) is None:
            return None
        if ra.metrics is None or rb.metrics is None:
            return None
        band = cfg.reference_band
        depth = min(ra.metrics.depth[band][1], rb.metrics.depth[band][0])
        p99s = [x.p99 for ex in (a, b) if (x := self.latency.get(ex)) and x.p99 is not None]
        ages = [
            (now - r.snapshot.received_at, cfg.stale_after(ex, cfg.symbols[symbol][ex]))
            for ex, r in ((a, ra), (b, rb))
        ]
        age, stale_after = max(ages, key=lambda x: x[0] / x[1])
        return depth, max(p99s) if p99s else None, age, stale_after

    def risk_for(self, key: PairKey, notional: float, now: float) -> Risk | None:
        """Execution risk of any notional; volatility from the nearest configured notional."""
        inputs = self.risk_inputs(key, now)
        if inputs is None:
            return None
        nearest = min(self.config.notionals, key=lambda n: abs(math.log(n / notional)))
        return self._risk(inputs, notional, self._roi_series((*key, nearest))[1])

    def _risk(
        self,
        inputs: tuple[float, float | None, float, float],
        notional: float,
        rois: deque[float],
    ) -> Risk:
        depth, p99, age, stale_after = inputs
        ins = self.config.insights
        return execution_risk(
            notional,
            depth,
            p99,
            ins.latency_budget,
            rois,
            ins.roi_epsilon,
            age,
            stale_after,
            ins.weights,
        )

    def _roi_series(self, key: WindowKey) -> tuple[deque[float], deque[float]]:
        series = self._roi.get(key)
        if series is None:
            series = self._roi[key] = (deque(), deque())
        return series

    def _update_risk(self, now: float) -> None:
        # Once per tick for every pair and notional (1,200 at 200 symbols): inputs once per
        # pair, ROI samples kept as plain values so volatility reads them without copying.
        cutoff = now - self.config.insights.volatility_seconds
        for key in self.state.pair_keys():
            res = self.state.live_pair(key)
            for fill in res.fills if res else ():
                if fill.net_roi is not None:
                    times, values = self._roi_series((*key, fill.notional))
                    times.append(now)
                    values.append(fill.net_roi)
            inputs = self.risk_inputs(key, now)
            for n in self.config.notionals:
                wkey = (*key, n)
                times, values = self._roi_series(wkey)
                while times and times[0] < cutoff:
                    times.popleft()
                    values.popleft()
                if inputs is None:
                    self.risk.pop(wkey, None)
                else:
                    self.risk[wkey] = self._risk(inputs, n, values)

    # -- correlation (worker thread) ---------------------------------------------------
    async def compute_correlation(self, now: float | None = None) -> None:
        now = self.clock.time() if now is None else now
        series: dict[str, list[Sample]] = {s: self.window.spreads(s) for s in self.corr_symbols}

        def job() -> tuple[dict[tuple[str, str], tuple[float, int]], float]:
            t0 = time.perf_counter()
            result = correlation_matrix(
                series, now, self.config.correlation.window_seconds, self.max_stale
            )
            return result, time.perf_counter() - t0

        self.correlation, self.correlation_duration = await asyncio.to_thread(job)
        self.correlation_at = now

    # -- restart -----------------------------------------------------------------------
    async def refill(self) -> int:
        """Refill the in-memory window from ``history:{symbol}``; 0 when Redis is away."""
        limit = int(self.horizon / self.config.history.interval) + 10
        since = self.clock.time() - self.horizon
        total = 0
        for symbol in self.symbols:
            try:
                raw = await asyncio.wait_for(
                    self._writer.reader.read_history(symbol, since=since, limit=limit),
                    REFILL_TIMEOUT,
                )
            except (StateUnavailable, TimeoutError) as exc:
                log.info("history refill skipped: %s", exc or type(exc).__name__)
                return total
            rows = [r for f in raw if (r := HistoryRow.from_fields(f)) is not None]
            total += self.window.refill(symbol, rows)
        self.refilled = total
        log.info("history: refilled %d rows from Redis", total)
        return total

    async def run(self) -> None:
        try:
            await self.refill()
        except Exception:  # refill is best effort; live rows follow anyway
            self.errors["refill"] += 1
            log.exception("history refill failed")
        clock = self.clock
        interval = self.config.history.interval
        next_tick = clock.monotonic()
        next_corr = next_tick
        while True:
            next_tick = max(next_tick + interval, clock.monotonic())
            await clock.sleep(next_tick - clock.monotonic())
            try:
                self.tick(clock.time())
            except Exception:
                self.errors["tick"] += 1
                log.exception("intelligence tick failed")
            if clock.monotonic() >= next_corr:
                next_corr = clock.monotonic() + self.config.correlation.interval
                try:
                    await self.compute_correlation()
                except Exception:
                    self.errors["correlation"] += 1
                    log.exception("correlation failed")

"""Per-call cost of the pure analytics (book metrics, net ROI, size optimum). Run:

    .venv/bin/python bench/bench_analytics.py

Books are BTC-like: 100 levels per side, ~0.5-2 USD apart, 0.001-3 BTC per level. The machine is
noisy; compare ratios, not absolute figures.
"""

from __future__ import annotations

import random
import timeit
from collections.abc import Callable

from exporter.analytics.arbitrage import Leg, evaluate, evaluate_pair, size_optimum
from exporter.analytics.book import book_metrics
from exporter.model import BookSnapshot, Level

BANDS = (0.001, 0.005, 0.01)
NOTIONALS = (1_000.0, 10_000.0, 100_000.0)


def side(rng: random.Random, best: float, step: int, k: int) -> tuple[Level, ...]:
    out: list[Level] = []
    price = best
    for _ in range(k):
        out.append((round(price, 2), round(rng.lognormvariate(-1.5, 1.2), 5) + 0.001))
        price += step * rng.uniform(0.5, 2.0)
    return tuple(out)


def book(rng: random.Random, mid: float, k: int, tick: float) -> BookSnapshot:
    bids = side(rng, mid - 0.05, -1, k)
    asks = side(rng, mid + 0.05, 1, k)
    if tick != 1.0:  # widen the ladder (e.g. so bands end inside the copied levels)
        bids = tuple((mid - (mid - p) * tick, q) for p, q in bids)
        asks = tuple((mid + (p - mid) * tick, q) for p, q in asks)
    return BookSnapshot("binance", "BTC/USD", "BTC/USDT", bids, asks, 1.0, 1.0, 1.0)


def per_call_us(fn: Callable[[], object], number: int) -> float:
    best = min(timeit.repeat(fn, number=number, repeat=5))
    return best / number * 1e6


def main() -> None:
    rng = random.Random(42)
    print("book_metrics (3 bands: 0.1%, 0.5%, 1%)")
    for k, tick in ((100, 0.4), (100, 20.0), (1000, 0.4)):
        snap = book(rng, 60_000.0, k, tick)
        edge = 60_000.0 * (1 - BANDS[-1])
        inside = sum(1 for p, _ in snap.bids if p >= edge)
        number = 20_000 if k <= 100 else 2000
        us = per_call_us(lambda s=snap: book_metrics(s, 0.9995, BANDS), number)  # type: ignore[misc]
        label = f"K={k}, {inside} bid levels inside the 1% band"
        print(f"  {label:40s} {us:7.2f} us/call  {us * 1000 / (2 * k):5.1f} ns/level/side")

    a = book(rng, 60_000.0, 100, 1.0)
    b = book(rng, 60_280.0, 100, 1.0)  # B's bids ~0.47% above A's asks: net ~0.1% at the top
    buy = Leg(a.asks, 0.001, 0.9995)  # Binance BTC/USDT, 1 USDT = 0.9995 USD
    sell = Leg(b.bids, 0.0026, 1.0)  # Kraken BTC/USD
    depth_usd = sum(p * q for p, q in a.asks) * 0.9995
    print(f"evaluate (100-level books, A depth {depth_usd:,.0f} USD)")
    for q in NOTIONALS:
        f = evaluate(buy, sell, q)
        us = per_call_us(lambda q=q: evaluate(buy, sell, q), 50_000)  # type: ignore[misc]
        print(f"  Q={q:>9,.0f}  fillable={f.fillable!s:5}  roi={f.net_roi}  {us:6.2f} us/call")
    opt = size_optimum(buy, sell)
    us = per_call_us(lambda: size_optimum(buy, sell), 20_000)
    print(f"size_optimum (big dislocation, t=0)        {us:6.2f} us/call  {opt}")
    opt = size_optimum(buy, sell, 0.0005)
    us = per_call_us(lambda: size_optimum(buy, sell, 0.0005), 20_000)
    print(f"size_optimum (big dislocation, t=0.0005)   {us:6.2f} us/call  {opt}")
    near = Leg(tuple((p - 50.0, q) for p, q in b.bids), 0.0026, 1.0)  # net ~0.03% at the top
    opt = size_optimum(buy, near)
    us = per_call_us(lambda: size_optimum(buy, near), 20_000)
    print(f"size_optimum (typical: net +0.03% at top) {us:6.2f} us/call  {opt}")
    rich = Leg(tuple((p - 600.0, q) for p, q in a.asks), 0.0, 1.0)  # profitable everywhere
    opt = size_optimum(rich, sell)
    us = per_call_us(lambda: size_optimum(rich, sell), 5_000)
    print(f"size_optimum (worst: walks all levels, capped={opt and opt.capped}) {us:6.2f} us/call")
    none_sell = Leg(tuple((p - 200.0, q) for p, q in b.bids), 0.0026, 1.0)
    none = size_optimum(buy, none_sell)
    us = per_call_us(lambda: size_optimum(buy, none_sell), 50_000)
    print(f"size_optimum (no opportunity -> {none}) {us:6.2f} us/call")
    us = per_call_us(
        lambda: evaluate_pair("BTC/USD", "binance", "kraken", buy, sell, NOTIONALS, 0.0, 0.0, 1.0),
        20_000,
    )
    print(f"evaluate_pair (3 notionals + optimum) {us:6.2f} us/call")
    us = per_call_us(lambda: Leg(a.asks, 0.001, 0.9995), 100_000)
    print(f"Leg construction (validated)          {us:6.2f} us/call")


if __name__ == "__main__":
    main()

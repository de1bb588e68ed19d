"""Simulated L2 order books: the ground truth every venue serves.

Prices and quantities are integers in ticks and lots (exact; formatted to decimal strings only
on the wire), so the ground truth, Binance's strings and Kraken's checksum agree bit for bit.

Price model: one seeded Ornstein-Uhlenbeck walk of log(USD price) per asset (BTC, ETH, SOL,
USDT), shared by both venues, plus a small independent OU noise per market. Binance quotes in
USDT, so its fair value is ``asset_usd * noise / usdt_usd`` — consistent with Kraken's USD
books through Kraken's own USDT/USD book. A dislocation multiplies one venue's fair value of
one asset by ``1 + size`` until it expires, which opens a real cross-venue arbitrage.

Book mechanics per step (one step = one wire update): levels that the moving fair value
crosses are swept (deleted), a new best level is inserted when the touch drifts away, then a
few random operations inside an active window of ~30 mean level gaps next to the touch
(quantity changes, deletions, insertions, with insert/delete odds that keep the window's level
count steady). Books start with ``levels`` (default 1000) levels per side spaced
~``level_gap_fraction`` apart; levels beyond the window never change. So a client holding a
truncated book (ccxt's Binance snapshot of 100 levels) keeps an exact prefix of the ground
truth as long as the mid stays within ~0.6% of where it was at the snapshot.
"""

from __future__ import annotations

import math
import random
import time
from bisect import bisect_left, insort
from collections.abc import Callable
from dataclasses import dataclass, field

from exporter.simulator.endpoints import STABLECOINS, USDT_USD_MID, MarketSpec, all_markets

WINDOW_LEVELS = 30  # active window width, in mean level gaps from the touch
Key = tuple[str, str]  # (exchange, unified symbol)
_Put = Callable[[bool, int, int], None]
Level = tuple[int, int]  # (price ticks, qty lots)


def fmt_units(units: int, decimals: int) -> str:
    """Exact decimal string of ``units * 10**-decimals`` (units >= 0)."""
    if decimals == 0:
        return str(units)
    q, r = divmod(units, 10**decimals)
    return f"{q}.{r:0{decimals}d}"


@dataclass(slots=True)
class BookUpdate:
    """Changes of one step: final qty per changed price (0 = deleted), sequence range."""

    bids: dict[int, int]
    asks: dict[int, int]
    first_seq: int
    last_seq: int
    ts_ms: int


class Book:
    """One side-sorted L2 book. Keys are kept ascending on both sides (best bid = last)."""

    __slots__ = ("ask_keys", "asks", "bid_keys", "bids", "seq", "spec", "ts_ms")

    def __init__(self, spec: MarketSpec) -> None:
        self.spec = spec
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.bid_keys: list[int] = []
        self.ask_keys: list[int] = []
        self.seq = 0
        self.ts_ms = int(time.time() * 1000)

    def set(self, is_bid: bool, price: int, qty: int) -> None:
        levels, keys = (self.bids, self.bid_keys) if is_bid else (self.asks, self.ask_keys)
        if qty > 0:
            if price not in levels:
                insort(keys, price)
            levels[price] = qty
        elif price in levels:
            del levels[price]
            del keys[bisect_left(keys, price)]

    def best_bid(self) -> int | None:
        return self.bid_keys[-1] if self.bid_keys else None

    def best_ask(self) -> int | None:
        return self.ask_keys[0] if self.ask_keys else None

    def top_bids(self, n: int) -> list[Level]:
        """Best n bids, high -> low."""
        keys = self.bid_keys[-n:] if n > 0 else []
        return [(p, self.bids[p]) for p in reversed(keys)]

    def top_asks(self, n: int) -> list[Level]:
        """Best n asks, low -> high."""
        return [(p, self.asks[p]) for p in self.ask_keys[:n]]

    def mid(self) -> float | None:
        bb, ba = self.best_bid(), self.best_ask()
        if bb is None or ba is None:
            return None
        return (bb + ba) / 2 * self.spec.tick

    def price_str(self, ticks: int) -> str:
        return fmt_units(ticks, self.spec.price_decimals)

    def qty_str(self, lots: int) -> str:
        return fmt_units(lots, self.spec.qty_decimals)


@dataclass(slots=True)
class Walk:
    """Ornstein-Uhlenbeck process on a log offset: x += -theta*x + sigma*N(0,1) per step."""

    sigma: float
    theta: float
    x: float = 0.0

    def step(self, rng: random.Random) -> None:
        self.x += -self.theta * self.x + self.sigma * rng.gauss(0.0, 1.0)


@dataclass(slots=True)
class Dislocation:
    asset: str
    exchange: str
    size: float
    start: float  # time.monotonic()
    end: float


@dataclass(slots=True)
class _Sim:
    spec: MarketSpec
    book: Book
    noise: Walk
    gap_ticks: int
    rng: random.Random = field(repr=False)
    target: float = 1.0  # levels normally inside the active window, per side


class World:
    """All simulated books plus the price model. Not thread-safe; one asyncio loop owns it."""

    def __init__(self, seed: int = 42, levels: int = 1000) -> None:
        self.seed = seed
        self.levels = levels
        self.rng = random.Random(seed)
        base_prices: dict[str, float] = {"USDT": USDT_USD_MID}
        for spec in all_markets():
            base_prices.setdefault(spec.base, spec.base_price_usd)
        self.base_usd = base_prices
        self.walks = {
            a: Walk(sigma=0.00001, theta=0.01) if a in STABLECOINS else Walk(0.00005, 0.001)
            for a in base_prices
        }
        self.dislocations: list[Dislocation] = []
        self.sims: dict[Key, _Sim] = {}
        indexed = 0
        for spec in all_markets():
            gap = max(1, round(spec.base_price_usd * spec.level_gap_fraction / spec.tick))
            if spec.exchange in ("binance", "kraken"):  # seeded by position, as they always were
                rng = random.Random(seed * 1000 + indexed)
                indexed += 1
            else:  # later venues: by identity, so no market list changes another's book
                rng = random.Random(f"{seed}/{spec.exchange}/{spec.symbol}")
            sim = _Sim(spec, Book(spec), Walk(0.00002, 0.05), gap, rng)
            self.sims[(spec.exchange, spec.symbol)] = sim
            self._populate(sim, levels)
            m = self.fair((spec.exchange, spec.symbol)) / spec.tick
            a_min, b_max = math.floor(m) + 1, math.ceil(m) - 1
            sim.target = max(2.0, float(self._window(sim, False, a_min, b_max)[2]))

    # -- price model -------------------------------------------------------------------------

    def asset_usd(self, asset: str) -> float:
        return self.base_usd[asset] * math.exp(self.walks[asset].x)

    def dislocation_factor(self, exchange: str, asset: str, now: float | None = None) -> float:
        t = time.monotonic() if now is None else now
        f = 1.0
        for d in self.dislocations:
            if d.exchange == exchange and d.asset == asset and d.start <= t < d.end:
                f *= 1.0 + d.size
        return f

    def fair(self, key: Key) -> float:
        """Fair price of market `key` in its own quote currency."""
        sim = self.sims[key]
        spec = sim.spec
        usd = self.asset_usd(spec.base) * math.exp(sim.noise.x)
        usd *= self.dislocation_factor(spec.exchange, spec.base)
        if spec.quote != "USD":
            return usd / self.asset_usd(spec.quote)  # a stablecoin quote (USDT, USDC)
        return usd

    def advance(self) -> None:
        """Advance the shared asset walks one step; expire finished dislocations."""
        for w in self.walks.values():
            w.step(self.rng)
        now = time.monotonic()
        if self.dislocations:
            self.dislocations = [d for d in self.dislocations if d.end > now]

    def add_dislocation(self, asset: str, exchange: str, size: float, duration: float) -> None:
        now = time.monotonic()
        self.dislocations.append(Dislocation(asset, exchange, size, now, now + duration))

    # -- books -------------------------------------------------------------------------------

    def book(self, key: Key) -> Book:
        return self.sims[key].book

    def market_keys(self) -> list[Key]:
        return list(self.sims)

    def skip_sequence(self, key: Key, n: int) -> None:
        """Burn `n` sequence numbers without changing the book (a gap on the wire)."""
        self.sims[key].book.seq += n

    def cross(self, key: Key) -> BookUpdate:
        """Insert a bid above the best ask (a crossed book); the next `step` sweeps it."""
        sim = self.sims[key]
        book = sim.book
        ask = book.best_ask()
        price = (ask if ask is not None else (book.best_bid() or 1)) + max(1, sim.gap_ticks)
        qty = self._qty(sim, price)
        book.set(True, price, qty)
        first = book.seq + 1
        book.seq += 1
        book.ts_ms = int(time.time() * 1000)
        return BookUpdate({price: qty}, {}, first, book.seq, book.ts_ms)

    def step_same(self, key: Key) -> BookUpdate:
        """Re-send the best bid with its current quantity: the stream keeps flowing (sequence
        advances) but the book does not change (a frozen book)."""
        book = self.sims[key].book
        bid = book.best_bid()
        changes = {bid: book.bids[bid]} if bid is not None else {}
        first = book.seq + 1
        book.seq += 1
        book.ts_ms = int(time.time() * 1000)
        return BookUpdate(changes, {}, first, book.seq, book.ts_ms)

    def _qty(self, sim: _Sim, price_ticks: int) -> int:
        spec = sim.spec
        price = price_ticks * spec.tick
        usd_per_unit = price if spec.quote == "USD" else price * USDT_USD_MID
        notional = spec.level_notional_usd * sim.rng.lognormvariate(0.0, 0.8)
        lots = int(notional / usd_per_unit / spec.lot)
        return max(lots, round(float(spec.min_qty) / spec.lot), 1)

    def _gap(self, sim: _Sim) -> int:
        return 1 + int(sim.rng.expovariate(1.0 / sim.gap_ticks)) if sim.gap_ticks > 1 else 1

    def _populate(self, sim: _Sim, levels: int) -> None:
        m = self.fair((sim.spec.exchange, sim.spec.symbol)) / sim.spec.tick
        half = max(1, sim.gap_ticks // 2)
        ask = math.floor(m) + half
        bid = math.ceil(m) - half
        for _ in range(levels):
            sim.book.set(False, ask, self._qty(sim, ask))
            ask += self._gap(sim)
        for _ in range(levels):
            if bid <= 0:
                break
            sim.book.set(True, bid, self._qty(sim, bid))
            bid -= self._gap(sim)

    def step(self, key: Key, ops: int = 2) -> BookUpdate:
        """Apply one step of book changes to market `key`; return what changed."""
        sim = self.sims[key]
        book, rng, gap = sim.book, sim.rng, sim.gap_ticks
        sim.noise.step(rng)
        m = self.fair(key) / sim.spec.tick
        hm = max(0.5, gap * 0.3)
        a_min = math.floor(m + hm) + 1  # lowest allowed ask
        b_max = math.ceil(m - hm) - 1  # highest allowed bid
        ch_b: dict[int, int] = {}
        ch_a: dict[int, int] = {}

        def put(is_bid: bool, price: int, qty: int) -> None:
            book.set(is_bid, price, qty)
            (ch_b if is_bid else ch_a)[price] = qty

        while book.ask_keys and book.ask_keys[0] < a_min:  # sweep crossed levels
            put(False, book.ask_keys[0], 0)
        while book.bid_keys and book.bid_keys[-1] > b_max:
            put(True, book.bid_keys[-1], 0)
        ba, bb = book.best_ask(), book.best_bid()
        if ba is None or ba - a_min > 2 * gap:  # follow the mid with a new touch level
            p = a_min + rng.randint(0, gap // 2)
            put(False, p, self._qty(sim, p))
        if bb is None or b_max - bb > 2 * gap:
            p = max(1, b_max - rng.randint(0, gap // 2))
            put(True, p, self._qty(sim, p))
        for i in range(ops):
            self._random_op(sim, put, rng.random() < 0.5, first=i == 0, a_min=a_min, b_max=b_max)
        first = book.seq + 1
        book.seq += max(1, len(ch_a) + len(ch_b))
        book.ts_ms = int(time.time() * 1000)
        return BookUpdate(ch_b, ch_a, first, book.seq, book.ts_ms)

    def _window(self, sim: _Sim, is_bid: bool, a_min: int, b_max: int) -> tuple[int, int, int]:
        """(lo, hi, levels inside) of the active price window next to the touch."""
        width = WINDOW_LEVELS * sim.gap_ticks
        keys = sim.book.bid_keys if is_bid else sim.book.ask_keys
        lo, hi = (b_max - width, b_max) if is_bid else (a_min, a_min + width)
        return lo, hi, bisect_left(keys, hi + 1) - bisect_left(keys, lo)

    def _random_op(
        self, sim: _Sim, put: _Put, is_bid: bool, first: bool, a_min: int, b_max: int
    ) -> None:
        """One change inside the active window; insert/delete odds keep its density steady."""
        book, rng = sim.book, sim.rng
        keys = book.bid_keys if is_bid else book.ask_keys
        levels = book.bids if is_bid else book.asks
        n = len(keys)
        lo, hi, inside = self._window(sim, is_bid, a_min, b_max)
        ratio = max(inside, 1) / sim.target
        p_delete = 0.2 * min(2.0, ratio)
        p_insert = 0.2 * min(2.0, 1.0 / ratio)
        u = rng.random()
        if not first and p_delete <= u < p_delete + p_insert:  # insert anywhere in the window
            p = rng.randint(max(lo, 1), hi)
            if p not in levels:
                put(is_bid, p, self._qty(sim, p))
                return
        if n == 0:
            return
        rank = min(int(rng.expovariate(0.2)), max(inside - 1, 0), n - 1)
        if first:
            rank = min(rank, 4)
        price = keys[n - 1 - rank] if is_bid else keys[rank]
        if not first and u < p_delete and n > 50:
            put(is_bid, price, 0)
            return
        qty = levels[price]  # modify quantity
        new = max(1, round(qty * rng.lognormvariate(0.0, 0.35)))
        put(is_bid, price, new if new != qty else qty + 1)

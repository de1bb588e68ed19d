"""The simulator's clock: steps every book at the configured rate and hands updates to venues.

One asyncio task (`Engine.run`) owns time. Each tick advances the shared price walks once and
applies one step to every market that is not frozen, stopped or stalled, then calls the
market's venue (`Venue.publish`), which encodes the update and queues it on its sockets.
Modes: ``random`` (interval jittered 0.5-1.5 x 1/rate, 1-4 random ops per step),
``fixed_rate`` (exactly `rate` steps per second per market, 2 ops each), ``firehose`` (as fast
as the sockets drain; only markets somebody subscribed to change). Firehose may be limited to
a few markets (`Engine.firehose_markets`): the others then step at `rate` per second, so a
client can hold many quiet-but-live books next to a saturated one; `Engine.firehose_ops` sets
the book changes per firehose step (2 by default; a real venue's 100 ms diff carries dozens).
The send lag — how far behind schedule a tick ran — is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from aiohttp import WSCloseCode, web

from exporter.simulator.market import BookUpdate, Key, World

log = logging.getLogger(__name__)
Mode = Literal["random", "fixed_rate", "firehose"]
MODES: tuple[Mode, ...] = ("random", "fixed_rate", "firehose")
HIGH_WATER = 2_000  # firehose waits while any socket queue is longer than this


class Venue(Protocol):
    """What the engine and the control API need from an exchange front end."""

    name: str
    conns: set[Connection]

    def publish(self, symbol: str, update: BookUpdate, drop: bool = False) -> bool:
        """Encode `update` for every subscriber; `drop`: record it as sent but do not send.

        Returns False when a requested drop should stay pending (the venue judged this
        update unable to show the fault, e.g. a Kraken change below the checksummed top 10).
        """

    def max_queue(self) -> int: ...

    def subscribed(self, symbol: str) -> bool: ...

    async def disconnect(self, symbol: str | None, abort: bool) -> int: ...

    def malformed(self, symbol: str | None, variant: str) -> int: ...

    def reset(self) -> None:
        """Forget per-venue fault and subscription state (the sockets are already closed)."""


class Connection:
    """One client WebSocket: an ordered outgoing queue drained by its own writer task.

    Venues call `send` synchronously (so a snapshot queued at subscribe time always precedes
    the updates queued after it); a client that falls `SLOW_LIMIT` frames behind is closed,
    like real venues drop slow consumers.
    """

    SLOW_LIMIT = 100_000

    def __init__(self, exchange: str, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.exchange = exchange
        self.ws = ws
        self.transport = request.transport
        self.path = request.path
        self.subs: dict[str, int] = {}  # unified symbol -> depth (Kraken) or 0 (Binance)
        self._queue: deque[str] = deque()
        self._ready = asyncio.Event()
        self.slow = False
        self.combined = False  # Binance combined-stream framing

    def send(self, text: str) -> None:
        if self.slow or self.ws.closed:
            return
        self._queue.append(text)
        self._ready.set()
        if len(self._queue) > self.SLOW_LIMIT:
            self.slow = True
            self._queue.clear()
            self._queue.append("")  # sentinel: writer closes the socket

    def pending(self) -> int:
        return len(self._queue)

    async def writer(self) -> None:
        """Drain the queue in order until the socket closes."""
        ws, queue = self.ws, self._queue
        while not ws.closed:
            await self._ready.wait()
            self._ready.clear()
            while queue and not ws.closed:
                text = queue.popleft()
                if not text:
                    await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"slow consumer")
                    return
                try:
                    await ws.send_str(text)
                except (ConnectionError, RuntimeError):
                    return

    def abort(self) -> None:
        """Drop the TCP connection without a close frame."""
        if self.transport is not None:
            self.transport.abort()


def _nested() -> defaultdict[str, defaultdict[str, int]]:
    return defaultdict(lambda: defaultdict(int))


@dataclass
class Counters:
    """Everything `GET /control/counters` reports (plain ints; no locking needed)."""

    rest: defaultdict[str, defaultdict[str, int]] = field(default_factory=_nested)
    depth_snapshots: defaultdict[str, defaultdict[str, int]] = field(default_factory=_nested)
    rest_errors: defaultdict[str, defaultdict[str, int]] = field(default_factory=_nested)
    ws_opened: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    ws_slow_closed: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    subscribe_requests: defaultdict[str, defaultdict[str, int]] = field(default_factory=_nested)
    unsubscribe_requests: defaultdict[str, defaultdict[str, int]] = field(default_factory=_nested)
    messages_sent: defaultdict[str, defaultdict[str, int]] = field(default_factory=_nested)
    steps: defaultdict[str, defaultdict[str, int]] = field(default_factory=_nested)
    faults: defaultdict[str, defaultdict[str, int]] = field(default_factory=_nested)
    pings: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    ticks: int = 0
    lag_last: float = 0.0
    lag_max: float = 0.0
    lag_sum: float = 0.0
    lag_resets: int = 0
    engine_errors: int = 0

    def record_lag(self, lag: float) -> None:
        self.lag_last = lag
        self.lag_max = max(self.lag_max, lag)
        self.lag_sum += lag

    def snapshot(self, open_sockets: dict[str, int]) -> dict[str, Any]:
        """The counters as JSON; `open_sockets` (per exchange) is the venues' current count,
        not a counter (a socket outlives a counters reset)."""

        def plain(d: Any) -> Any:
            return {k: plain(v) for k, v in d.items()} if isinstance(d, dict) else d

        return {
            "rest_requests": plain(self.rest),
            "depth_snapshots": plain(self.depth_snapshots),
            "rest_errors_injected": plain(self.rest_errors),
            "ws_connections": {
                ex: {
                    "opened": self.ws_opened[ex],
                    "open": open_sockets.get(ex, 0),
                    "slow_consumer_closed": self.ws_slow_closed[ex],
                }
                for ex in sorted(set(self.ws_opened) | {e for e, n in open_sockets.items() if n})
            },
            "subscribe_requests": plain(self.subscribe_requests),
            "unsubscribe_requests": plain(self.unsubscribe_requests),
            "messages_sent": plain(self.messages_sent),
            "book_steps": plain(self.steps),
            "faults": plain(self.faults),
            "pings": dict(self.pings),
            "ticks": self.ticks,
            "engine_errors": self.engine_errors,
            "send_lag_seconds": {
                "last": self.lag_last,
                "max": self.lag_max,
                "mean": self.lag_sum / self.ticks if self.ticks else 0.0,
                "resets": self.lag_resets,
            },
        }


@dataclass
class RestFault:
    endpoint: str  # "depth", "exchangeInfo", "AssetPairs", ... or "*"
    remaining: int
    status: int
    retry_after: float | None


class Engine:
    """Owns the world, the clock, freeze/stop/stall state and the venues."""

    def __init__(self, world: World, rate: float = 10.0, mode: Mode = "random") -> None:
        self.world = world
        self.rate = rate
        self.mode: Mode = mode
        self.initial = (rate, mode)  # what `reset` restores
        # firehose only these markets (the others step at `rate`); None: every market
        self.firehose_markets: frozenset[Key] | None = None
        self.firehose_ops = 2  # book changes per firehose step
        self.frozen = False
        self.stopped: set[Key] = set()
        self.stalled_until: dict[Key, float] = {}
        self.drop_next: set[Key] = set()
        # key -> monotonic end of a `frozen` fault: updates flow but change nothing
        self.frozen_until: dict[Key, float] = {}
        self.rest_faults: dict[str, list[RestFault]] = defaultdict(list)
        self.venues: dict[str, Venue] = {}
        self.counters = Counters()
        self.started = time.time()
        self._wake = asyncio.Event()
        # (exchange, symbol, last sequence, wall time) per published update, when enabled
        # (--record-sends, for latency benchmarks); read and cleared by GET /control/sends.
        self.send_log: deque[tuple[str, str, int, float]] | None = None

    def add_venue(self, venue: Venue) -> None:
        self.venues[venue.name] = venue

    def open_sockets(self) -> dict[str, int]:
        return {name: len(v.conns) for name, v in self.venues.items()}

    async def reset(self, frozen: bool = False, timeout: float = 2.0) -> int:
        """Back to the state right after startup; return how many sockets were closed.

        Every WebSocket is aborted (its client held books and sequences of the old world) and
        awaited for up to `timeout` s; then, with no await in between, the world is rebuilt
        from the seed (books, sequences, price walks and RNGs as generated at startup, no
        dislocations), mode and rate return to their startup values, every fault (stall,
        stop, drop, frozen book, pending REST errors, Kraken bad checksum), the global freeze
        and the counters are cleared, and the send log emptied. `frozen=True` leaves the
        engine frozen, so the initial books can be read before they change.
        """
        victims = [c for v in self.venues.values() for c in v.conns]
        for conn in victims:
            conn.abort()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and any(  # noqa: ASYNC110  (handlers end on their own)
            c in v.conns for v in self.venues.values() for c in victims
        ):
            await asyncio.sleep(0.005)
        self.world = World(self.world.seed, self.world.levels)
        self.rate, self.mode = self.initial
        self.firehose_markets = None
        self.firehose_ops = 2
        self.frozen = frozen
        self.stopped.clear()
        self.stalled_until.clear()
        self.drop_next.clear()
        self.frozen_until.clear()
        self.rest_faults.clear()
        for venue in self.venues.values():
            venue.reset()
        self.counters = Counters()
        if self.send_log is not None:
            self.send_log.clear()
        self._wake.set()  # re-plan the schedule with the startup rate
        return len(victims)

    def set_mode(
        self,
        mode: Mode,
        rate: float | None,
        firehose_markets: frozenset[Key] | None = None,
        firehose_ops: int = 2,
    ) -> None:
        self.mode = mode
        if rate is not None:
            self.rate = rate
        self.firehose_markets = firehose_markets if mode == "firehose" else None
        self.firehose_ops = firehose_ops
        self._wake.set()  # re-plan the schedule now

    def silent(self, key: Key, now: float | None = None) -> bool:
        """True when `key` must not change: frozen, stopped or stalled."""
        if self.frozen or key in self.stopped:
            return True
        until = self.stalled_until.get(key)
        if until is None:
            return False
        if (time.monotonic() if now is None else now) < until:
            return True
        del self.stalled_until[key]
        return False

    def tick(self, keys: list[Key] | None = None, ops: int | None = None) -> None:
        """Advance the walks and step every live market (of ``keys``, when given) once, with
        ``ops`` book changes each (default: per the mode)."""
        if self.frozen:
            return
        world = self.world
        world.advance()
        self.counters.ticks += 1
        if ops is None:
            ops = 2 if self.mode != "random" else 1 + int(world.rng.random() * 4)
        now = time.monotonic()
        firehose = self.mode == "firehose"
        send_log = self.send_log
        for key in world.market_keys() if keys is None else keys:
            if self.silent(key, now):
                continue
            exchange, symbol = key
            venue = self.venues.get(exchange)
            if firehose and (venue is None or not venue.subscribed(symbol)):
                continue  # firehose spends the CPU on watched markets only
            if self.frozen_until.get(key, 0.0) > now:
                update = world.step_same(key)
            else:
                self.frozen_until.pop(key, None)
                update = world.step(key, ops)
            self.counters.steps[exchange][symbol] += 1
            drop = key in self.drop_next
            applied = venue.publish(symbol, update, drop) if venue is not None else True
            if drop and applied:
                self.drop_next.discard(key)
                self.counters.faults[exchange]["drop_update_applied"] += 1
            if send_log is not None and venue is not None and not drop:
                send_log.append((exchange, symbol, update.last_seq, time.time()))

    def safe_tick(self, keys: list[Key] | None = None, ops: int | None = None) -> None:
        """`tick`, but a bug in one step is logged and counted instead of killing the clock."""
        try:
            self.tick(keys, ops)
        except Exception:
            self.counters.engine_errors += 1
            log.exception("simulator tick failed")

    def _split(self) -> tuple[list[Key] | None, list[Key]]:
        """(markets to firehose (None: all), markets stepped at `rate`)."""
        only = self.firehose_markets
        if only is None:
            return None, []
        keys = self.world.market_keys()
        return [k for k in keys if k in only], [k for k in keys if k not in only]

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            if self.mode == "firehose":
                if self.frozen:
                    await asyncio.sleep(0.01)
                    continue
                fast, slow = self._split()
                self.safe_tick(fast, self.firehose_ops)
                if slow and loop.time() >= next_at:
                    self.safe_tick(slow)
                    next_at = max(next_at + 1.0 / max(self.rate, 1e-6), loop.time() - 1.0)
                await asyncio.sleep(0)
                # backpressure: poll the socket queues (many queues, no single event to wait on)
                while any(v.max_queue() > HIGH_WATER for v in self.venues.values()):  # noqa: ASYNC110
                    await asyncio.sleep(0.0005)
                if not slow:
                    next_at = loop.time()
                continue
            interval = 1.0 / max(self.rate, 1e-6)
            if self.mode == "random":
                interval *= 0.5 + self.world.rng.random()
            next_at += interval
            delay = next_at - loop.time()
            if delay > 0.05:  # long wait: wake early when the mode or rate changes
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                if self._wake.is_set():
                    next_at = loop.time()
                    continue
            elif delay > 0:
                await asyncio.sleep(delay)
            lag = max(0.0, loop.time() - next_at)
            self.counters.record_lag(lag)
            if lag > 1.0:  # hopelessly behind: do not burst, start a fresh schedule
                self.counters.lag_resets += 1
                next_at = loop.time()
            self.safe_tick()

    def rest_request(
        self, exchange: str, endpoint: str, snapshot_of: str | None = None
    ) -> RestFault | None:
        """Count one REST request (and a depth snapshot of market ``snapshot_of``), then
        consume one injected REST error for (exchange, endpoint), if any is pending."""
        self.counters.rest[exchange][endpoint] += 1
        if snapshot_of is not None:
            self.counters.depth_snapshots[exchange][snapshot_of] += 1
        return self.take_rest_fault(exchange, endpoint)

    def take_rest_fault(self, exchange: str, endpoint: str) -> RestFault | None:
        """Consume one injected REST error for (exchange, endpoint), if any is pending."""
        pending = self.rest_faults.get(exchange)
        if not pending:
            return None
        for f in pending:
            if f.endpoint in ("*", endpoint) and f.remaining > 0:
                f.remaining -= 1
                if f.remaining == 0:
                    pending.remove(f)
                self.counters.rest_errors[exchange][endpoint] += 1
                return f
        return None

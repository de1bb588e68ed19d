"""What every simulated exchange shares; read this to add a venue.

A venue is one exchange's wire front end (REST + WebSocket) over the engine's books. The
engine (``engine.Engine``) owns the books (``engine.world``), the clock, freeze/stop/stall
state, pending REST errors and the counters; a venue only encodes. To add exchange ``foo``:

1. **Markets** — in ``endpoints.py`` add ``MarketSpec`` rows with ``exchange="foo"`` to
   ``SIMULATED_MARKETS`` (append: each market's random stream is keyed by its own exchange and
   symbol, so adding markets never changes another market's book), add ``"foo"`` to
   ``EXCHANGES`` and a ``ccxt_config("foo", base_url)`` branch that points *every* REST and WS
   URL key ccxt has under ``urls.api`` at the simulator (served paths under ``/foo/...``) or at
   ``DEAD_HOST``, plus ``options.fetchMarkets`` limited to spot where ccxt has it.
2. **Module** ``foo.py`` — a subclass of ``WsVenue`` with ``name = "foo"`` and:

   - ``routes()``: aiohttp routes, all under ``/foo/``. REST handlers start with
     ``err = self.rest_fault("endpoint", symbol)`` and return ``err`` when it is not None
     (this counts the request — and a depth snapshot of ``symbol`` when given — and consumes
     an injected ``rest_error``); ``rest_error_response(fault)`` builds the exchange's own
     error body for a ``RestFault`` (status, ``Retry-After``). The WebSocket route handler is
     ``self.serve_ws`` (or a method calling it).
   - ``on_text(conn, text)``: one client frame (subscribe/unsubscribe/ping). Record a
     subscription with ``conn.subs[symbol] = depth`` (0 when the venue has no depth) and count
     ``engine.counters.subscribe_requests[name][symbol]``; send with ``conn.send(text)`` (an
     ordered queue; never await inside ``on_text``). Optional hooks: ``on_open(conn,
     request)`` (greeting, subscribe-by-URL) and ``on_close(conn)`` (forget per-socket state).
   - ``publish(symbol, update, drop)``: called by the engine after every book step of one of
     the venue's markets (``update``: changed levels, sequence range; the book in
     ``engine.world.book((name, symbol))`` already holds the new state). Encode and send to
     the subscribers (``broadcast`` for one text per market, or per-depth ``DepthViews``);
     with ``drop`` send nothing but advance whatever the wire sequence would have. Return
     False to keep a requested drop pending (the venue judged this step unable to show it).
   - ``malformed_text(symbol, variant)``: the bad frame for ``malformed_frame`` (variants
     ``crash``, ``garbage``, ``not_json``; return None for a variant the venue lacks).
   - ``reset()``: forget per-venue fault and subscription state (sockets are already gone);
     call ``super().reset()``.
   - ``ground_truth(symbol)``: extra fields for ``GET /control/book/foo/{market}``
     (checksum, wire sequence numbers), exact for the current book.
   - venue-specific faults: ``fault(kind, symbols, body)`` handles kinds the control API
     delegates to the venue (``sequence_gap``, ``bad_checksum``, ``corrupt_level``...);
     raise ``ValueError`` for a kind or argument that does not apply (answered HTTP 400).
3. **Composition** — ``server.build`` constructs the venue, ``engine.add_venue(venue)``,
   adds its routes; ``control.Control`` finds it in ``engine.venues``.

Faults the base class and the engine implement for every venue: ``close`` / ``abort``
(``disconnect``), ``malformed_frame`` (``malformed``), ``stall``, ``frozen``, ``crossed``,
``drop_update`` (via ``publish(drop=True)``), ``rest_error`` (via ``rest_fault``), market
stop/start, dislocations, freeze and reset. ``Connection`` closes slow consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from aiohttp import WSMsgType, web

from exporter.simulator.endpoints import MarketSpec, markets_of
from exporter.simulator.engine import Connection, Engine, RestFault
from exporter.simulator.market import Book, BookUpdate, Level


def retry_after_headers(f: RestFault) -> dict[str, str] | None:
    """``Retry-After`` (whole seconds) when the injected error asks for one."""
    return {"Retry-After": str(int(f.retry_after))} if f.retry_after is not None else None


class WsVenue:
    """Base of a venue: sockets, subscriptions, broadcast, disconnect, malformed frames."""

    name: str = ""  # the exchange, as in EXCHANGES
    ws_heartbeat: ClassVar[float | None] = None  # aiohttp protocol-level pings (s), if any
    fault_kinds: ClassVar[frozenset[str]] = frozenset()  # kinds handled by `fault`

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.markets: dict[str, MarketSpec] = {m.symbol: m for m in markets_of(self.name)}
        self.conns: set[Connection] = set()

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    # -- REST --------------------------------------------------------------------------------

    def rest_fault(self, endpoint: str, symbol: str | None = None) -> web.Response | None:
        """Count a REST request (a depth snapshot of `symbol` if given); the injected error
        response if one is pending for `endpoint`, else None."""
        f = self.engine.rest_request(self.name, endpoint, symbol)
        return None if f is None else self.rest_error_response(f)

    def rest_error_response(self, f: RestFault) -> web.Response:
        """The exchange's error answer for an injected REST fault."""
        raise NotImplementedError

    # -- WebSocket ---------------------------------------------------------------------------

    async def serve_ws(self, request: web.Request) -> web.StreamResponse:
        """Accept one client socket and feed its text frames to `on_text` until it closes."""
        ws = web.WebSocketResponse(heartbeat=self.ws_heartbeat, max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = Connection(self.name, ws, request)
        self.on_open(conn, request)
        self.engine.counters.ws_opened[self.name] += 1
        self.conns.add(conn)
        writer = asyncio.create_task(conn.writer())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self.on_text(conn, msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self.conns.discard(conn)
            self.on_close(conn)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        return ws

    def on_open(self, conn: Connection, request: web.Request) -> None:
        """A socket was accepted (before any frame is read)."""

    def on_text(self, conn: Connection, text: str) -> None:
        raise NotImplementedError

    def on_close(self, conn: Connection) -> None:
        """A socket ended; forget per-socket state."""

    def broadcast(self, symbol: str, text: str) -> int:
        """Queue `text` on every socket subscribed to `symbol`; count and return the sends."""
        n = 0
        for conn in self.conns:
            if symbol in conn.subs:
                conn.send(text)
                n += 1
        self.engine.counters.messages_sent[self.name][symbol] += n
        return n

    # -- engine and control hooks ------------------------------------------------------------

    def publish(self, symbol: str, update: BookUpdate, drop: bool = False) -> bool:
        raise NotImplementedError

    def max_queue(self) -> int:
        return max((c.pending() for c in self.conns), default=0)

    def subscribed(self, symbol: str) -> bool:
        return any(symbol in c.subs for c in self.conns)

    def reset(self) -> None:
        """Forget per-venue fault and subscription state (the sockets are already closed)."""

    async def disconnect(self, symbol: str | None, abort: bool) -> int:
        """Close (frame 1000) or abort (TCP) the sockets of `symbol` (all if None)."""
        victims = [c for c in self.conns if symbol is None or symbol in c.subs]
        for conn in victims:
            if abort:
                conn.abort()
            else:
                await conn.ws.close(code=1000, message=b"closed by simulator")
        return len(victims)

    def malformed_text(self, symbol: str, variant: str) -> str | None:
        """The bad frame `variant` for a subscriber of `symbol` (None: not for this venue)."""
        if variant == "not_json":
            return "{not json"
        return None

    def malformed(self, symbol: str | None, variant: str) -> int:
        """Send one bad frame per subscribed market to the sockets of `symbol` (all if None)."""
        n = 0
        for spec in self.markets.values():
            if symbol is not None and spec.symbol != symbol:
                continue
            text = self.malformed_text(spec.symbol, variant)
            if text is not None:
                n += self.broadcast(spec.symbol, text)
        return n

    def ground_truth(self, symbol: str) -> dict[str, Any]:
        """Venue fields added to ``GET /control/book/{exchange}/{market}``."""
        return {}

    def fault(self, kind: str, symbols: list[str], body: dict[str, Any]) -> int:
        """A venue-specific fault for `symbols`; return how many markets it touched."""
        raise ValueError(f"{kind} does not apply to {self.name}")


# -- per-depth views ---------------------------------------------------------------------------


@dataclass
class DepthView:
    """Subscribers of one (symbol, depth) and the book they hold: the top `depth` levels.

    ``seq`` is the venue's per-view wire counter (e.g. Bybit ``u``, OKX last ``seqId``);
    ``skip`` is an injected jump added to the next message's counter.
    """

    depth: int
    bids: dict[int, int]
    asks: dict[int, int]
    conns: set[Connection] = field(default_factory=set)
    seq: int = 0
    skip: int = 0

    def diff(self, book: Book, explicit_out: bool) -> tuple[list[Level], list[Level]]:
        """Move the view to `book`'s top `depth`; return the (bids, asks) levels to send.

        New or changed levels are sent with their qty. A level that left the view is sent
        with qty 0 when it was deleted from the book, or (``explicit_out``) whenever it left —
        Bybit and OKX keep the client's book at depth; Kraken lets the client truncate.
        """
        bids, asks = dict(book.top_bids(self.depth)), dict(book.top_asks(self.depth))
        d_bids = _diff(self.bids, bids, book.bids, explicit_out)
        d_asks = _diff(self.asks, asks, book.asks, explicit_out)
        self.bids, self.asks = bids, asks
        return d_bids, d_asks


def _diff(
    old: dict[int, int], new: dict[int, int], full: dict[int, int], explicit_out: bool
) -> list[Level]:
    out = [(p, q) for p, q in new.items() if old.get(p) != q]
    out += [(p, 0) for p in old if p not in new and (explicit_out or p not in full)]
    return out


class DepthViews:
    """The (symbol, depth) views of one venue, in subscription order per symbol."""

    def __init__(self) -> None:
        self.views: dict[tuple[str, int], DepthView] = {}

    def add(self, conn: Connection, symbol: str, depth: int, book: Book) -> tuple[DepthView, bool]:
        """Subscribe `conn`; return the view and whether it was created now."""
        key = (symbol, depth)
        view = self.views.get(key)
        created = view is None
        if view is None:
            view = DepthView(depth, dict(book.top_bids(depth)), dict(book.top_asks(depth)))
            self.views[key] = view
        view.conns.add(conn)
        return view, created

    def remove(self, conn: Connection, symbol: str, depth: int) -> None:
        view = self.views.get((symbol, depth))
        if view is not None:
            view.conns.discard(conn)

    def drop_conn(self, conn: Connection, subs: Iterable[tuple[str, int]]) -> None:
        for symbol, depth in subs:
            self.remove(conn, symbol, depth)

    def of(self, symbol: str, depths: Iterable[int]) -> list[DepthView]:
        """Live views of `symbol` in `depths` order; views nobody holds are forgotten."""
        out = []
        for depth in depths:
            view = self.views.get((symbol, depth))
            if view is None:
                continue
            if not view.conns:
                del self.views[(symbol, depth)]
                continue
            out.append(view)
        return out

    def has(self, symbol: str) -> bool:
        """True when some view of `symbol` exists (held or not yet pruned)."""
        return any(sym == symbol for sym, _ in self.views)

    def subscribed(self, symbol: str) -> bool:
        return any(bool(v.conns) for (sym, _), v in self.views.items() if sym == symbol)

    def clear(self) -> None:
        self.views.clear()

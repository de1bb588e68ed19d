"""Fake Coinbase Advanced Trade: public REST products and the WebSocket ``level2`` channel.

REST (under ``/coinbase/api/v3/brokerage``, ccxt's ``urls.api.rest`` is ``/coinbase``):

- ``market/products`` — the spot products in Coinbase's format (``product_id`` BTC-USD,
  ``base_increment``, ``quote_increment``/``price_increment``, ``base_min_size``,
  ``quote_min_size``, ``alias``/``alias_to``...), ``{"products": [...], "num_products": N}``.
  ``?product_type=FUTURE`` answers an empty list: ccxt 4.5.90's ``fetch_markets`` always asks
  for the futures too (no option skips that call; ccxt swallows its errors). The counters
  name the two calls ``market/products`` and ``market/products:FUTURE``.
- ``market/products/{product_id}`` — one product; ``market/product_book?product_id=&limit=``
  — the top ``limit`` (default all) levels as ``{"pricebook": {"bids": [{"price","size"}],
  ...}}`` (counted as a depth snapshot).

USDC: Coinbase merged its USDC and USD books. The product list has ``BTC-USDC``,
``ETH-USDC``, ``SOL-USDC`` as aliases (``"alias": "BTC-USD"``; ``BTC-USD`` lists
``"alias_to": ["BTC-USDC"]``), so ccxt has a ``BTC/USDC`` market; subscribing to ``BTC-USDC``
streams the one ``BTC-USD`` book with ``"product_id": "BTC-USD"`` — ccxt files it under
``BTC/USD`` and resolves the ``BTC/USDC`` watch with that book. There is no USDC-USD
product (USDC converts to USD 1:1 outside the order book), hence no Coinbase conversion book.

WebSocket at ``/coinbase/ws`` (ccxt connects to ``urls.api.ws``, one socket for every
symbol). Client frames ``{"type": "subscribe" | "unsubscribe", "channel": "level2" |
"heartbeats", "product_ids": [...]}`` (no credentials: both channels are public). Every
server message carries ``"sequence_num"``, counted per connection from 0 (ccxt ignores it):

- ``level2`` subscribe: per product a snapshot of the whole book, ``{"channel": "l2_data",
  "client_id": "", "timestamp": "...Z", "sequence_num": N, "events": [{"type": "snapshot",
  "product_id": "BTC-USD", "updates": [{"side": "bid" | "offer", "event_time": "...Z",
  "price_level": "97000.01", "new_quantity": "0.12345678"}, ...]}]}``, then a
  ``{"channel": "subscriptions", ..., "events": [{"subscriptions": {"level2": ["BTC-USD"]}}]}``
  listing what the socket is subscribed to (an unsubscribe answers the same; ccxt finishes
  an unwatch only when that list is empty). One ``"type": "update"`` message per book step
  with the changed levels, ``new_quantity`` "0" deleting a level.
- ``heartbeats``: ``{"channel": "heartbeats", ..., "events": [{"current_time": "...",
  "heartbeat_counter": "N"}]}`` every second while subscribed.
- Errors: ``{"type": "error", "message": "..."}`` — ccxt raises it inside its receive loop,
  which kills the loop (the watch then hangs), as against the real exchange.
- Idle close: a socket with a ``level2`` subscription, no ``heartbeats`` subscription and no
  ``l2_data`` message for ``idle_timeout`` seconds (``--coinbase-idle-timeout``, default
  10; 0 disables) is closed by the server with close code 1000 — Coinbase closes quiet
  channels the same way (after 60-90 s) unless the client subscribes to heartbeats. ccxt
  subscribes only ``level2``, so a quiet market (stopped, stalled, a global freeze longer
  than the timeout) costs a ccxt client its socket. Counted as ``faults.coinbase.idle_closed``.

Faults: the common ones (``venue.WsVenue``), ``drop_update`` (the step is not sent but every
subscriber's ``sequence_num`` advances as if it had been: a hole ccxt does not notice, its
book silently diverges) and ``sequence_gap`` (``gap``, default 10: the next ``l2_data``
message of the market jumps ``sequence_num`` by ``gap``; nothing is lost). ``rest_error``
answers 429 with ``{"error": "rate_limit_exceeded", ...}`` (ccxt: RateLimitExceeded), 500
with ``{"error": "internal_server_error", ...}`` (ccxt: ExchangeError) and other statuses
with a plain-text gateway body (ccxt: its HTTP status mapping, 502/503 ExchangeNotAvailable,
504 RequestTimeout). ``malformed_frame`` variants: ``crash`` (an update whose price is not a
number; ccxt's handler raises, its receive loop dies), ``garbage`` (an ``l2_data`` message
whose ``events`` is not a list; ccxt ignores it), ``not_json``.

Fee: public products carry no fee; without credentials ccxt takes its default taker fee
0.012 (``fees.trading.taker``). The exporter's ``taker_fee`` setting overrides it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
from aiohttp import web

from exporter.simulator.endpoints import MarketSpec
from exporter.simulator.engine import Connection, Engine, RestFault
from exporter.simulator.market import Book, BookUpdate, Level, fmt_units
from exporter.simulator.venue import WsVenue, retry_after_headers

NAME = "coinbase"
API = "/coinbase/api/v3/brokerage"
HEARTBEAT_INTERVAL = 1.0
ASSET_NAMES = {"BTC": "Bitcoin", "ETH": "Ethereum", "SOL": "Solana", "USD": "US Dollar"}
NOT_FOUND = {"error": "NOT_FOUND", "error_details": "", "message": "ProductID is invalid"}
MAX_BASE = {"BTC": "3400", "ETH": "42000", "SOL": "1400000"}


def iso_ns(ns: int) -> str:
    """Coinbase's timestamp: RFC 3339 with nanoseconds, ``2023-02-09T20:32:50.714964855Z``."""
    s, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{frac:09d}Z"


def _event_time(ts_ms: int) -> str:
    return iso_ns(ts_ms * 1_000_000)


def product(spec: MarketSpec, book: Book, alias_of: str | None = None) -> dict[str, Any]:
    """One spot product as ``market/products`` lists it; ``alias_of``: the ``-USDC`` alias of
    the ``-USD`` product ``spec``."""
    quote = "USDC" if alias_of else spec.quote
    pid = f"{spec.base}-{quote}"
    mid = book.mid()
    price = f"{mid:.{spec.price_decimals}f}" if mid is not None else ""
    tick = fmt_units(1, spec.price_decimals)
    return {
        "product_id": pid,
        "price": price,
        "price_percentage_change_24h": "0",
        "volume_24h": "0",
        "volume_percentage_change_24h": "0",
        "base_increment": fmt_units(1, spec.qty_decimals),
        "quote_increment": tick,
        "quote_min_size": spec.min_notional,
        "quote_max_size": "150000000",
        "base_min_size": spec.min_qty,
        "base_max_size": MAX_BASE.get(spec.base, "1000000"),
        "base_name": ASSET_NAMES.get(spec.base, spec.base),
        "quote_name": "USDC" if alias_of else ASSET_NAMES.get(quote, quote),
        "watched": False,
        "is_disabled": False,
        "new": False,
        "status": "online",
        "cancel_only": False,
        "limit_only": False,
        "post_only": False,
        "trading_disabled": False,
        "auction_mode": False,
        "product_type": "SPOT",
        "quote_currency_id": quote,
        "base_currency_id": spec.base,
        "fcm_trading_session_details": None,
        "mid_market_price": "",
        "alias": alias_of or "",
        "alias_to": [] if alias_of else [f"{spec.base}-USDC"],
        "base_display_symbol": spec.base,
        "quote_display_symbol": "USD",
        "view_only": False,
        "price_increment": tick,
        "display_name": pid,
        "product_venue": "CBE",
    }


@dataclass
class _Socket:
    """Per-connection protocol state."""

    seq: int = 0  # sequence_num of the next message
    heartbeats: bool = False
    heartbeat_counter: int = 0
    last_l2: float = 0.0  # monotonic time of the last l2_data message sent
    idle_closed: bool = False


class CoinbaseVenue(WsVenue):
    """REST products + WS ``level2``/``heartbeats`` over the engine's Coinbase books."""

    name = NAME
    fault_kinds: ClassVar[frozenset[str]] = frozenset({"sequence_gap"})

    def __init__(self, engine: Engine, idle_timeout: float = 10.0) -> None:
        super().__init__(engine)
        self.idle_timeout = idle_timeout
        self.by_product: dict[str, MarketSpec] = {}
        for spec in self.markets.values():
            self.by_product[spec.market_id] = spec
            if spec.quote == "USD":
                self.by_product[f"{spec.base}-USDC"] = spec  # merged USDC book
        self.sockets: dict[Connection, _Socket] = {}
        self.gap_next: dict[str, int] = {}  # symbol -> sequence_num jump of its next message

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(f"{API}/market/products", self.products),
            web.get(f"{API}/market/products/{{product_id}}", self.one_product),
            web.get(f"{API}/market/product_book", self.product_book),
            web.get("/coinbase/ws", self.serve_ws),
            web.get("/coinbase/ws/{tail:.*}", self.serve_ws),
        ]

    # -- REST --------------------------------------------------------------------------------

    def rest_error_response(self, f: RestFault) -> web.Response:
        headers = retry_after_headers(f)
        if f.status == 429:
            body = {
                "error": "rate_limit_exceeded",
                "error_details": "Too many requests",
                "message": "Too many requests",
            }
            return web.json_response(body, status=429, headers=headers)
        if f.status == 500:
            body = {"error": "internal_server_error", "message": "Internal server error"}
            return web.json_response(body, status=500, headers=headers)
        text = f"{f.status} injected by simulator (gateway)"
        return web.Response(text=text, status=f.status, headers=headers)

    def _product_list(self) -> list[dict[str, Any]]:
        out = []
        for spec in self.markets.values():
            book = self.engine.world.book((NAME, spec.symbol))
            out.append(product(spec, book))
            if spec.quote == "USD":
                out.append(product(spec, book, alias_of=spec.market_id))
        return out

    async def products(self, request: web.Request) -> web.Response:
        future = request.query.get("product_type", "SPOT").upper() == "FUTURE"
        err = self.rest_fault("market/products:FUTURE" if future else "market/products")
        if err is not None:
            return err
        items = [] if future else self._product_list()
        wanted = request.query.getall("product_ids", [])
        if wanted:
            items = [p for p in items if p["product_id"] in wanted]
        body = {"products": items, "num_products": len(items)}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def one_product(self, request: web.Request) -> web.Response:
        err = self.rest_fault("market/products/{product_id}")
        if err is not None:
            return err
        pid = request.match_info["product_id"].upper()
        for p in self._product_list():
            if p["product_id"] == pid:
                return web.Response(body=orjson.dumps(p), content_type="application/json")
        return web.json_response(NOT_FOUND, status=404)

    async def product_book(self, request: web.Request) -> web.Response:
        spec = self.by_product.get(request.query.get("product_id", "").upper())
        err = self.rest_fault("market/product_book", spec.symbol if spec else None)
        if err is not None:
            return err
        if spec is None:
            return web.json_response(NOT_FOUND, status=404)
        book = self.engine.world.book((NAME, spec.symbol))
        try:
            limit = int(request.query.get("limit", "0")) or len(book.bids) + len(book.asks)
        except ValueError:
            bad = {"error": "INVALID_ARGUMENT", "message": "limit is not an integer"}
            return web.json_response(bad, status=400)

        def side(levels: list[Level]) -> list[dict[str, str]]:
            return [{"price": book.price_str(p), "size": book.qty_str(q)} for p, q in levels]

        body: dict[str, Any] = {
            "pricebook": {
                "product_id": request.query.get("product_id", "").upper(),
                "bids": side(book.top_bids(limit)),
                "asks": side(book.top_asks(limit)),
                "time": iso_ns(time.time_ns()),
            },
            "last": "",
            "mid_market": f"{book.mid() or 0:.{spec.price_decimals}f}",
            "spread_bps": "",
            "spread_absolute": "",
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    # -- WebSocket ---------------------------------------------------------------------------

    def on_open(self, conn: Connection, request: web.Request) -> None:
        self.sockets[conn] = _Socket(last_l2=time.monotonic())

    def on_close(self, conn: Connection) -> None:
        self.sockets.pop(conn, None)

    def _state(self, conn: Connection) -> _Socket:
        state = self.sockets.get(conn)
        if state is None:
            state = self.sockets[conn] = _Socket(last_l2=time.monotonic())
        return state

    def _send(self, conn: Connection, head: str, tail: str) -> None:
        """Send ``head + sequence_num + tail`` and advance the socket's counter."""
        state = self._state(conn)
        conn.send(f"{head}{state.seq}{tail}")
        state.seq += 1

    def _message(self, conn: Connection, channel: str, events: str) -> None:
        head = (
            f'{{"channel":"{channel}","client_id":"","timestamp":"{iso_ns(time.time_ns())}",'
            '"sequence_num":'
        )
        self._send(conn, head, f',"events":{events}}}')

    def _error(self, conn: Connection, message: str) -> None:
        conn.send(orjson.dumps({"type": "error", "message": message}).decode())

    def _subscriptions(self, conn: Connection) -> None:
        subs: dict[str, list[str]] = {}
        if conn.subs:
            subs["level2"] = [self.markets[s].market_id for s in conn.subs]
        if self._state(conn).heartbeats:
            subs["heartbeats"] = []
        self._message(conn, "subscriptions", orjson.dumps([{"subscriptions": subs}]).decode())

    def on_text(self, conn: Connection, text: str) -> None:
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError:
            self._error(conn, "malformed request: not JSON")
            return
        if not isinstance(req, dict):
            self._error(conn, "malformed request")
            return
        kind, channel = req.get("type"), req.get("channel")
        if kind not in ("subscribe", "unsubscribe"):
            self._error(conn, f"unknown message type {kind!r}")
            return
        subscribe = kind == "subscribe"
        if channel == "heartbeats":
            self._state(conn).heartbeats = subscribe
            self._subscriptions(conn)
            return
        if channel != "level2":
            self._error(conn, f"Failed to subscribe: channel {channel!r} not simulated")
            return
        ids = req.get("product_ids")
        if not isinstance(ids, list) or not ids:
            self._error(conn, "Failed to subscribe: product_ids required")
            return
        specs = [self.by_product.get(p) if isinstance(p, str) else None for p in ids]
        if any(s is None for s in specs):
            self._error(conn, "Failed to subscribe: unknown product_ids")
            return
        counters = self.engine.counters
        for spec in specs:
            assert spec is not None
            if subscribe:
                conn.subs[spec.symbol] = 0
                counters.subscribe_requests[NAME][spec.symbol] += 1
                self._snapshot(conn, spec)
            else:
                conn.subs.pop(spec.symbol, None)
                counters.unsubscribe_requests[NAME][spec.symbol] += 1
        self._subscriptions(conn)

    def _snapshot(self, conn: Connection, spec: MarketSpec) -> None:
        book = self.engine.world.book((NAME, spec.symbol))
        t = _event_time(book.ts_ms)
        bids = _updates(book, "bid", book.top_bids(len(book.bids)), t)
        asks = _updates(book, "offer", book.top_asks(len(book.asks)), t)
        sep = "," if bids and asks else ""
        events = (
            f'[{{"type":"snapshot","product_id":"{spec.market_id}","updates":[{bids}{sep}{asks}]}}]'
        )
        self._message(conn, "l2_data", events)
        self._state(conn).last_l2 = time.monotonic()
        c = self.engine.counters
        c.depth_snapshots[NAME][spec.symbol] += 1
        c.messages_sent[NAME][spec.symbol] += 1

    # -- engine hooks ------------------------------------------------------------------------

    def publish(self, symbol: str, update: BookUpdate, drop: bool = False) -> bool:
        subscribers = [c for c in self.conns if symbol in c.subs]
        if not subscribers:
            return not drop  # a drop nobody would miss stays pending
        gap = self.gap_next.pop(symbol, 0)
        now = time.monotonic()
        if drop:
            for conn in subscribers:  # the message is lost, its sequence_num is spent
                state = self._state(conn)
                state.seq += 1 + gap
            return True
        spec = self.markets[symbol]
        book = self.engine.world.book((NAME, symbol))
        t = _event_time(update.ts_ms)
        bids = _updates(book, "bid", list(update.bids.items()), t)
        asks = _updates(book, "offer", list(update.asks.items()), t)
        sep = "," if bids and asks else ""
        head = (
            f'{{"channel":"l2_data","client_id":"","timestamp":"{iso_ns(time.time_ns())}",'
            '"sequence_num":'
        )
        tail = (
            f',"events":[{{"type":"update","product_id":"{spec.market_id}",'
            f'"updates":[{bids}{sep}{asks}]}}]}}'
        )
        for conn in subscribers:
            state = self._state(conn)
            state.seq += gap
            state.last_l2 = now
            self._send(conn, head, tail)
        self.engine.counters.messages_sent[NAME][symbol] += len(subscribers)
        return True

    def reset(self) -> None:
        """Forget pending sequence gaps and per-socket state."""
        super().reset()
        self.gap_next.clear()
        self.sockets.clear()

    def fault(self, kind: str, symbols: list[str], body: dict[str, Any]) -> int:
        if kind != "sequence_gap":
            return super().fault(kind, symbols, body)
        gap = body.get("gap", 10)
        if isinstance(gap, bool) or not isinstance(gap, int) or gap < 1:
            raise ValueError("gap must be an integer >= 1")
        for symbol in symbols:
            self.gap_next[symbol] = self.gap_next.get(symbol, 0) + gap
        return len(symbols)

    def malformed_text(self, symbol: str, variant: str) -> str | None:
        pid = self.markets[symbol].market_id
        ts = iso_ns(time.time_ns())
        if variant == "crash":
            return (
                f'{{"channel":"l2_data","client_id":"","timestamp":"{ts}","sequence_num":0,'
                f'"events":[{{"type":"update","product_id":"{pid}","updates":[{{"side":"bid",'
                f'"event_time":"{ts}","price_level":"garbage","new_quantity":null}}]}}]}}'
            )
        if variant == "garbage":
            return (
                f'{{"channel":"l2_data","client_id":"","timestamp":"{ts}","sequence_num":0,'
                '"events":"garbage"}'
            )
        return super().malformed_text(symbol, variant)

    # -- background: heartbeats and idle close -----------------------------------------------

    async def run(self) -> None:
        """Send heartbeats every second to subscribed sockets; close idle level2 sockets."""
        loop = asyncio.get_running_loop()
        step = HEARTBEAT_INTERVAL
        if self.idle_timeout > 0:
            step = min(step, max(0.02, self.idle_timeout / 10))
        next_beat = loop.time() + HEARTBEAT_INTERVAL
        while True:
            await asyncio.sleep(step)
            if loop.time() >= next_beat:
                next_beat += HEARTBEAT_INTERVAL
                self._beat()
            if self.idle_timeout > 0:
                await self._close_idle()

    def _beat(self) -> None:
        now = iso_ns(time.time_ns())
        for conn in list(self.conns):
            state = self.sockets.get(conn)
            if state is None or not state.heartbeats:
                continue
            state.heartbeat_counter += 1
            event = {"current_time": now, "heartbeat_counter": str(state.heartbeat_counter)}
            self._message(conn, "heartbeats", orjson.dumps([event]).decode())

    async def _close_idle(self) -> None:
        deadline = time.monotonic() - self.idle_timeout
        idle = []
        for conn in list(self.conns):
            state = self.sockets.get(conn)
            if state is None or state.heartbeats or state.idle_closed or not conn.subs:
                continue
            if state.last_l2 <= deadline:
                idle.append(conn)
        if not idle:
            return
        self.engine.counters.faults[NAME]["idle_closed"] += len(idle)
        for conn in idle:
            self.sockets[conn].idle_closed = True  # not twice while the close handshake runs

        async def close(conn: Connection) -> None:
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1000, message=b"idle: no level2 updates")

        await asyncio.gather(*(close(c) for c in idle))


def _updates(book: Book, side: str, levels: list[Level], event_time: str) -> str:
    """Coinbase ``updates`` entries of one side (qty 0 -> ``"new_quantity":"0"``)."""
    return ",".join(
        f'{{"side":"{side}","event_time":"{event_time}","price_level":"{book.price_str(p)}",'
        f'"new_quantity":"{book.qty_str(q) if q else "0"}"}}'
        for p, q in levels
    )

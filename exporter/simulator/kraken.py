"""Fake Kraken spot: REST public endpoints and the WebSocket v2 ``book`` channel.

REST (under ``/kraken/0/public``): ``Time``, ``SystemStatus``, ``Assets``, ``AssetPairs``
(``?pair=`` filter; the fields ccxt parses: altname, wsname, base, quote, pair_decimals,
lot_decimals, cost_decimals, tick_size, ordermin, costmin, fees, fees_maker, leverage_buy,
status), ``Depth?pair=XBTUSD&count=N``. Responses are ``{"error": [], "result": ...}``.

WebSocket v2 at ``/kraken/v2`` (any path starting with it):

- ``{"method":"subscribe","params":{"channel":"book","symbol":["BTC/USD"],"depth":10},
  "req_id":1}`` -> one ack per symbol ``{"method":"subscribe","result":{"channel":"book",
  "depth":10,"snapshot":true,"symbol":"BTC/USD"},"success":true,"req_id":1,...}`` then a
  ``snapshot`` of the top `depth` levels; depth is one of 10, 25, 100, 500, 1000 (default 10).
- ``update`` messages ``{"channel":"book","type":"update","data":[{"symbol","bids":[{"price",
  "qty"}],"asks":[...],"checksum","timestamp"}]}``. Like Kraken, the server keeps each
  subscriber's book at the subscribed depth: a level deleted inside it is sent with qty 0 and
  the level that moves into range is sent too; a level pushed out by an insertion is *not*
  deleted explicitly (the client truncates to its depth — Kraken's documented rule, and what
  ccxt's ``orderbook.limit()`` does). Prices/quantities are JSON numbers printed with the
  pair's decimals (pair_decimals / lot_decimals).
- ``checksum``: CRC32 (unsigned) over the top 10 asks (low -> high) then the top 10 bids
  (high -> low), each level as price then qty formatted with the pair's decimals, '.' removed
  and leading zeros stripped, all concatenated (`book_checksum`).
- ``{"method":"ping","req_id":n}`` -> ``{"method":"pong",...}``; ``{"channel":"heartbeat"}``
  every second on sockets with a subscription; a ``status`` message on connect.
"""

from __future__ import annotations

import asyncio
import functools
import time
import zlib
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from exporter.simulator.endpoints import MarketSpec, find_market
from exporter.simulator.engine import Connection, Engine, RestFault
from exporter.simulator.market import Book, BookUpdate, Level, fmt_units
from exporter.simulator.venue import DepthViews, WsVenue, retry_after_headers

NAME = "kraken"
DEPTHS = (10, 25, 100, 500, 1000)
ASSETS: dict[str, tuple[str, int, int]] = {  # id -> (altname, decimals, display_decimals)
    "XXBT": ("XBT", 10, 5),
    "XETH": ("ETH", 10, 5),
    "SOL": ("SOL", 10, 5),
    "USDT": ("USDT", 8, 4),
    "ZUSD": ("USD", 4, 2),
}
TAKER_FEES = [[0, 0.1], [50000, 0.08], [100000, 0.06]]  # percent (sim: 0.1% taker)
MAKER_FEES = [[0, 0.08], [50000, 0.06], [100000, 0.04]]


def _strip(s: str) -> str:
    return s.replace(".", "").lstrip("0")


@functools.lru_cache(maxsize=1 << 16)
def _digits(units: int, decimals: int) -> str:
    # cached: the top 10 levels barely change between steps, and formatting them for every
    # update was the firehose's largest cost
    return _strip(fmt_units(units, decimals))


def book_checksum(book: Book) -> int:
    """Kraken v2 CRC32 over the ground truth's top 10 levels per side."""
    pd, qd = book.spec.price_decimals, book.spec.qty_decimals
    parts = [_digits(p, pd) + _digits(q, qd) for p, q in book.top_asks(10)]
    parts += [_digits(p, pd) + _digits(q, qd) for p, q in book.top_bids(10)]
    return zlib.crc32("".join(parts).encode()) & 0xFFFFFFFF


def _iso(ts_ms: float) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pair_info(spec: MarketSpec) -> dict[str, Any]:
    return {
        "altname": spec.altname,
        "wsname": spec.wsname,
        "aclass_base": "currency",
        "base": spec.base_id,
        "aclass_quote": "currency",
        "quote": spec.quote_id,
        "lot": "unit",
        "cost_decimals": 5,
        "pair_decimals": spec.price_decimals,
        "lot_decimals": spec.qty_decimals,
        "lot_multiplier": 1,
        "leverage_buy": [2, 3] if spec.base != "USDT" else [],
        "leverage_sell": [2, 3] if spec.base != "USDT" else [],
        "fees": TAKER_FEES,
        "fees_maker": MAKER_FEES,
        "fee_volume_currency": "ZUSD",
        "margin_call": 80,
        "margin_stop": 40,
        "ordermin": spec.min_qty,
        "costmin": spec.min_notional,
        "tick_size": fmt_units(1, spec.price_decimals),
        "status": "online",
    }


def _levels(book: Book, items: list[Level]) -> str:
    return ",".join(f'{{"price":{book.price_str(p)},"qty":{book.qty_str(q)}}}' for p, q in items)


class KrakenVenue(WsVenue):
    """REST + WS v2 front end over the engine's Kraken books."""

    name = NAME
    fault_kinds = frozenset({"bad_checksum"})

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.views = DepthViews()
        self.bad_checksum_next: set[str] = set()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/kraken/0/public/Time", self.time),
            web.get("/kraken/0/public/SystemStatus", self.system_status),
            web.get("/kraken/0/public/Assets", self.assets),
            web.get("/kraken/0/public/AssetPairs", self.asset_pairs),
            web.get("/kraken/0/public/Depth", self.depth),
            web.get("/kraken/v2", self.serve_ws),
            web.get("/kraken/v2{tail:.*}", self.serve_ws),
        ]

    # -- REST --------------------------------------------------------------------------------

    def rest_error_response(self, f: RestFault) -> web.Response:
        msg = "EGeneral:Too many requests" if f.status == 429 else "EService:Unavailable"
        return web.json_response({"error": [msg]}, status=f.status, headers=retry_after_headers(f))

    def _fault(self, endpoint: str, symbol: str | None = None) -> web.Response | None:
        return self.rest_fault(endpoint, symbol)

    @staticmethod
    def _ok(result: Any) -> web.Response:
        return web.Response(
            body=orjson.dumps({"error": [], "result": result}), content_type="application/json"
        )

    async def time(self, request: web.Request) -> web.Response:
        now = time.time()
        body = {"unixtime": int(now), "rfc1123": time.strftime("%a, %d %b %y %H:%M:%S +0000")}
        return self._fault("Time") or self._ok(body)

    async def system_status(self, request: web.Request) -> web.Response:
        body = {"status": "online", "timestamp": _iso(time.time() * 1000)[:19] + "Z"}
        return self._fault("SystemStatus") or self._ok(body)

    async def assets(self, request: web.Request) -> web.Response:
        assets = dict(ASSETS)
        for m in self.markets.values():  # generated symbols (--symbols)
            assets.setdefault(m.base_id, (m.base, 10, 5))
        result = {
            aid: {
                "aclass": "currency",
                "altname": alt,
                "decimals": dec,
                "display_decimals": disp,
                "collateral_value": 1.0,
                "status": "enabled",
            }
            for aid, (alt, dec, disp) in assets.items()
        }
        return self._fault("Assets") or self._ok(result)

    async def asset_pairs(self, request: web.Request) -> web.Response:
        err = self._fault("AssetPairs")
        if err is not None:
            return err
        wanted = request.query.get("pair")
        specs = list(self.markets.values())
        if wanted:
            found = [find_market(NAME, p) for p in wanted.split(",")]
            if any(s is None for s in found):
                return web.json_response({"error": ["EQuery:Unknown asset pair"]})
            specs = [s for s in found if s is not None]
        return self._ok({s.market_id: pair_info(s) for s in specs})

    async def depth(self, request: web.Request) -> web.Response:
        spec = find_market(NAME, request.query.get("pair", ""))
        err = self._fault("Depth", spec.symbol if spec else None)
        if err is not None:
            return err
        if spec is None:
            return web.json_response({"error": ["EQuery:Unknown asset pair"]})
        try:
            count = max(1, min(500, int(request.query.get("count", "100"))))
        except ValueError:
            return web.json_response({"error": ["EGeneral:Invalid arguments"]})
        book = self.engine.world.book((NAME, spec.symbol))
        ts = int(time.time())
        side = {
            "asks": [[book.price_str(p), book.qty_str(q), ts] for p, q in book.top_asks(count)],
            "bids": [[book.price_str(p), book.qty_str(q), ts] for p, q in book.top_bids(count)],
        }
        return self._ok({spec.market_id: side})

    # -- WebSocket ---------------------------------------------------------------------------

    def on_open(self, conn: Connection, request: web.Request) -> None:
        status = {
            "channel": "status",
            "type": "update",
            "data": [
                {
                    "api_version": "v2",
                    "connection_id": id(conn),
                    "system": "online",
                    "version": "2.0.10",
                }
            ],
        }
        conn.send(orjson.dumps(status).decode())

    def on_close(self, conn: Connection) -> None:
        self.views.drop_conn(conn, conn.subs.items())

    def _reply(self, conn: Connection, body: dict[str, Any], time_in: str) -> None:
        body["time_in"] = time_in
        body["time_out"] = _iso(time.time() * 1000)
        conn.send(orjson.dumps(body).decode())

    def on_text(self, conn: Connection, text: str) -> None:
        t_in = _iso(time.time() * 1000)
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError:
            self._reply(conn, {"error": "Malformed request", "success": False}, t_in)
            return
        if not isinstance(req, dict):
            self._reply(conn, {"error": "Malformed request", "success": False}, t_in)
            return
        method, rid = req.get("method"), req.get("req_id")
        if method == "ping":
            self.engine.counters.pings[NAME] += 1
            self._reply(conn, {"method": "pong", "req_id": rid}, t_in)
            return
        if method not in ("subscribe", "unsubscribe"):
            self._reply(conn, {"error": f"Method not found: {method}", "success": False}, t_in)
            return
        params = req.get("params") if isinstance(req.get("params"), dict) else {}
        assert isinstance(params, dict)
        base = {"method": method, "req_id": rid}
        if params.get("channel") != "book":
            err = f"Channel not supported by simulator: {params.get('channel')}"
            self._reply(conn, {**base, "error": err, "success": False}, t_in)
            return
        depth = params.get("depth", 10)
        if depth not in DEPTHS:
            self._reply(conn, {**base, "error": "Invalid depth", "success": False}, t_in)
            return
        symbols = params.get("symbol")
        if not isinstance(symbols, list) or not symbols:
            self._reply(conn, {**base, "error": "Malformed request", "success": False}, t_in)
            return
        for sym in symbols:
            spec = self.markets.get(sym) if isinstance(sym, str) else None
            if spec is None:
                err = "Currency pair not supported"
                self._reply(conn, {**base, "error": err, "success": False, "symbol": sym}, t_in)
                continue
            result = {"channel": "book", "depth": depth, "symbol": sym}
            if method == "subscribe":
                if sym in conn.subs:
                    err = "Already subscribed"
                    self._reply(conn, {**base, "error": err, "success": False, "symbol": sym}, t_in)
                    continue
                result["snapshot"] = params.get("snapshot", True)
                self._reply(conn, {**base, "result": result, "success": True}, t_in)
                self._subscribe(conn, spec, depth, bool(result["snapshot"]))
            else:
                old = conn.subs.pop(sym, None)
                if old is not None:
                    self.views.remove(conn, sym, old)
                self.engine.counters.unsubscribe_requests[NAME][sym] += 1
                self._reply(conn, {**base, "result": result, "success": True}, t_in)

    def _subscribe(self, conn: Connection, spec: MarketSpec, depth: int, snapshot: bool) -> None:
        c = self.engine.counters
        c.subscribe_requests[NAME][spec.symbol] += 1
        book = self.engine.world.book((NAME, spec.symbol))
        self.views.add(conn, spec.symbol, depth, book)
        conn.subs[spec.symbol] = depth
        if not snapshot:
            return
        checksum = book_checksum(book)
        text = (
            f'{{"channel":"book","type":"snapshot","data":[{{"symbol":"{spec.symbol}",'
            f'"bids":[{_levels(book, book.top_bids(depth))}],'
            f'"asks":[{_levels(book, book.top_asks(depth))}],"checksum":{checksum}}}]}}'
        )
        conn.send(text)
        c.depth_snapshots[NAME][spec.symbol] += 1
        c.messages_sent[NAME][spec.symbol] += 1

    async def heartbeat_loop(self, interval: float = 1.0) -> None:
        """Kraken sends a heartbeat about once per second on sockets with a subscription."""
        while True:
            await asyncio.sleep(interval)
            for conn in list(self.conns):
                if conn.subs:
                    conn.send('{"channel":"heartbeat"}')

    # -- engine hooks ------------------------------------------------------------------------

    def publish(self, symbol: str, update: BookUpdate, drop: bool = False) -> bool:
        if not self.views.has(symbol):
            return not drop
        book = self.engine.world.book((NAME, symbol))
        if drop and not self._touches_top(symbol, update):
            # Only a change within the checksummed top 10 is detectable: drop a later one.
            drop = False
            missed = True
        else:
            missed = False
        checksum = book_checksum(book)
        bad = symbol in self.bad_checksum_next
        if bad:
            checksum ^= 0x5A5A5A5A
        sent = 0
        for view in self.views.of(symbol, DEPTHS):
            d_bids, d_asks = view.diff(book, explicit_out=False)
            if drop or not (d_bids or d_asks):
                continue
            text = (
                f'{{"channel":"book","type":"update","data":[{{"symbol":"{symbol}",'
                f'"bids":[{_levels(book, d_bids)}],"asks":[{_levels(book, d_asks)}],'
                f'"checksum":{checksum},"timestamp":"{_iso(update.ts_ms)}"}}]}}'
            )
            for conn in view.conns:
                conn.send(text)
            sent += len(view.conns)
        if bad and sent:
            self.bad_checksum_next.discard(symbol)
        self.engine.counters.messages_sent[NAME][symbol] += sent
        return not missed

    def _touches_top(self, symbol: str, update: BookUpdate) -> bool:
        """True when the update changes a price among the top 10 levels a client held."""
        for (sym, _depth), view in self.views.views.items():
            if sym != symbol:
                continue
            old_bids = sorted(view.bids, reverse=True)[:10]
            old_asks = sorted(view.asks)[:10]
            if not old_bids or not old_asks:
                return True
            if any(p >= old_bids[-1] for p in update.bids) or any(
                p <= old_asks[-1] for p in update.asks
            ):
                return True
        return False

    def reset(self) -> None:
        """Forget the subscriber views (of the old books) and pending bad checksums."""
        self.views.clear()
        self.bad_checksum_next.clear()

    def subscribed(self, symbol: str) -> bool:
        return self.views.subscribed(symbol)

    def fault(self, kind: str, symbols: list[str], body: dict[str, Any]) -> int:
        """``bad_checksum``: the next update of each market carries a wrong checksum."""
        self.bad_checksum_next.update(symbols)
        return len(symbols)

    def ground_truth(self, symbol: str) -> dict[str, Any]:
        return {"checksum": book_checksum(self.engine.world.book((NAME, symbol)))}

    def malformed_text(self, symbol: str, variant: str) -> str | None:
        """``crash`` (default): a book update whose price is a string and qty null — ccxt's
        handle_order_book raises outside any try, killing its receive loop; ``not_json``."""
        if variant == "not_json":
            return "{not json"
        return (
            f'{{"channel":"book","type":"update","data":[{{"symbol":"{symbol}",'
            '"bids":[{"price":"garbage","qty":null}],"asks":[],"checksum":0,'
            '"timestamp":"garbage"}]}'
        )

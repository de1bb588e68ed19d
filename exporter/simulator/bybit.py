"""Fake Bybit v5 spot: instruments-info over REST and the public spot ``orderbook`` stream.

REST (under ``/bybit``): ``GET /v5/market/instruments-info?category=spot`` (symbol, baseCoin,
quoteCoin, status, lotSizeFilter {basePrecision, quotePrecision, minOrderQty, maxOrderQty,
minOrderAmt, maxOrderAmt}, priceFilter {tickSize}: what ccxt's fetch_spot_markets parses),
``GET /v5/market/time``, ``GET /v5/market/orderbook?category=spot&symbol=&limit=`` (1..200).
Answers are ``{"retCode":0,"retMsg":"OK","result":...,"retExtInfo":{},"time":ms}``; an injected
error answers its HTTP status with retCode 10006 "Too many visits!" (429), 10016 (other 4xx)
or a plain-text gateway page (5xx).

WebSocket at ``/bybit/v5/public/spot`` (ccxt tells spot from contract by "spot" in the URL):

- ``{"op":"subscribe","req_id":1,"args":["orderbook.50.BTCUSDT"]}`` -> ``{"success":true,
  "ret_msg":"subscribe","conn_id":...,"req_id":1,"op":"subscribe"}`` then, per topic, a
  ``snapshot`` of the top ``depth`` levels; depth is 1, 50, 200 or 1000 (what ccxt allows).
  ``unsubscribe`` likewise. An unknown topic answers ``success: false``.
- then ``delta`` messages ``{"topic","type":"delta","ts","data":{"s","b":[["p","q"]],"a",
  "u","seq"},"cts"}``. Like Bybit, the server keeps each topic's book at its depth: a level
  that leaves the top ``depth`` (deleted or pushed out) is sent with qty "0", a level that
  enters is sent. ``u`` counts the topic's messages (+1 per message, the snapshot carries the
  current value; a new topic starts at 1), ``seq`` is the market's cross sequence (the ground
  truth's ``sequence``). Strings carry the tick / basePrecision decimals.
- ``{"op":"ping","req_id":n}`` -> ``{"success":true,"ret_msg":"pong","conn_id":...,
  "req_id":n,"op":"ping"}``.

Faults: ``drop_update`` (the next step that changes a subscribed topic is not sent: ``u``
jumps by one and content is lost — ccxt 4.5.90 ignores ``u``/``seq``, so its book silently
diverges), ``sequence_gap`` (``gap``, default 10: the next message's ``u`` and ``seq`` jump,
content intact), ``frozen`` (steps change nothing, so Bybit sends nothing: the stream goes
quiet), malformed frames ``crash`` (a delta whose ``data`` is a list: ccxt raises outside any
try) and ``not_json``; the common ones (close, abort, stall, crossed, rest_error).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from exporter.simulator.endpoints import MarketSpec, find_market
from exporter.simulator.engine import Connection, Engine, RestFault
from exporter.simulator.market import Book, BookUpdate, Level, fmt_units
from exporter.simulator.venue import DepthView, DepthViews, WsVenue, retry_after_headers

NAME = "bybit"
DEPTHS = (1, 50, 200, 1000)


def instrument(spec: MarketSpec) -> dict[str, Any]:
    """One spot row of ``/v5/market/instruments-info``."""
    return {
        "symbol": spec.market_id,
        "baseCoin": spec.base_id,
        "quoteCoin": spec.quote_id,
        "innovation": "0",
        "status": "Trading",
        "marginTrading": "utaOnly",
        "stTag": "0",
        "lotSizeFilter": {
            "basePrecision": fmt_units(1, spec.qty_decimals),
            "quotePrecision": "0.00000001",
            "minOrderQty": spec.min_qty,
            "maxOrderQty": "9000",
            "minOrderAmt": spec.min_notional,
            "maxOrderAmt": "2000000",
        },
        "priceFilter": {"tickSize": fmt_units(1, spec.price_decimals)},
        "riskParameters": {"priceLimitRatioX": "0.05", "priceLimitRatioY": "0.05"},
    }


def _levels(book: Book, items: list[Level]) -> list[list[str]]:
    return [[book.price_str(p), book.qty_str(q)] for p, q in items]


class BybitVenue(WsVenue):
    """REST + public spot WS front end over the engine's Bybit books."""

    name = NAME
    fault_kinds = frozenset({"sequence_gap"})

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.views = DepthViews()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/bybit/v5/market/instruments-info", self.instruments_info),
            web.get("/bybit/v5/market/time", self.time),
            web.get("/bybit/v5/market/orderbook", self.orderbook),
            web.get("/bybit/v5/public/spot", self.serve_ws),
        ]

    # -- REST --------------------------------------------------------------------------------

    @staticmethod
    def _ok(result: Any) -> web.Response:
        body = {
            "retCode": 0,
            "retMsg": "OK",
            "result": result,
            "retExtInfo": {},
            "time": int(time.time() * 1000),
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    @staticmethod
    def _err(code: int, msg: str, status: int = 200) -> web.Response:
        body = {"retCode": code, "retMsg": msg, "result": {}, "retExtInfo": {}}
        return web.json_response(body, status=status)

    def rest_error_response(self, f: RestFault) -> web.Response:
        """429: retCode 10006 (ccxt: RateLimitExceeded); other 4xx: 10016; 5xx: the gateway's
        plain-text page, as Bybit's edge answers (ccxt maps the HTTP status)."""
        headers = retry_after_headers(f)
        if f.status >= 500:
            return web.Response(text="Service Unavailable", status=f.status, headers=headers)
        code, msg = (10006, "Too many visits!") if f.status == 429 else (10016, "Server error.")
        body = {"retCode": code, "retMsg": msg, "result": {}, "retExtInfo": {}}
        return web.json_response(body, status=f.status, headers=headers)

    async def instruments_info(self, request: web.Request) -> web.Response:
        err = self.rest_fault("instruments-info")
        if err is not None:
            return err
        if request.query.get("category") != "spot":
            return self._err(10001, "params error: category only spot in the simulator")
        specs = list(self.markets.values())
        wanted = request.query.get("symbol")
        if wanted:
            specs = [s for s in specs if s.market_id == wanted.upper()]
        return self._ok({"category": "spot", "list": [instrument(s) for s in specs]})

    async def time(self, request: web.Request) -> web.Response:
        now = time.time()
        result = {"timeSecond": str(int(now)), "timeNano": str(int(now * 1e9))}
        return self.rest_fault("time") or self._ok(result)

    async def orderbook(self, request: web.Request) -> web.Response:
        spec = find_market(NAME, request.query.get("symbol", ""))
        err = self.rest_fault("orderbook", spec.symbol if spec else None)
        if err is not None:
            return err
        if spec is None:
            return self._err(10001, "params error: symbol invalid")
        try:
            limit = max(1, min(200, int(request.query.get("limit", "1"))))
        except ValueError:
            return self._err(10001, "params error: limit invalid")
        book = self.engine.world.book((NAME, spec.symbol))
        result = {
            "s": spec.market_id,
            "b": _levels(book, book.top_bids(limit)),
            "a": _levels(book, book.top_asks(limit)),
            "ts": book.ts_ms,
            "u": book.seq,
            "seq": book.seq,
            "cts": book.ts_ms,
        }
        return self._ok(result)

    # -- WebSocket ---------------------------------------------------------------------------

    def _parse_topic(self, topic: Any) -> tuple[MarketSpec, int] | None:
        parts = topic.split(".") if isinstance(topic, str) else []
        if len(parts) != 3 or parts[0] != "orderbook" or not parts[1].isdigit():
            return None
        spec = find_market(NAME, parts[2])
        depth = int(parts[1])
        if spec is None or spec.market_id != parts[2] or depth not in DEPTHS:
            return None
        return spec, depth

    def on_text(self, conn: Connection, text: str) -> None:
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError:
            req = None
        conn_id = f"sim-{id(conn):x}"
        if not isinstance(req, dict):
            reply = {"success": False, "ret_msg": "error:invalid op", "conn_id": conn_id}
            conn.send(orjson.dumps(reply).decode())
            return
        op, rid = req.get("op"), req.get("req_id")
        base: dict[str, Any] = {"conn_id": conn_id, "op": op}
        if rid is not None:
            base["req_id"] = rid
        if op == "ping":
            self.engine.counters.pings[NAME] += 1
            conn.send(orjson.dumps({"success": True, "ret_msg": "pong", **base}).decode())
            return
        if op not in ("subscribe", "unsubscribe"):
            reply = {"success": False, "ret_msg": f"error:invalid op {op}", **base}
            conn.send(orjson.dumps(reply).decode())
            return
        args = req.get("args")
        topics = [self._parse_topic(t) for t in args] if isinstance(args, list) else [None]
        if not topics or any(t is None for t in topics):
            bad = [a for a, t in zip(args or [None], topics, strict=False) if t is None]
            reply = {"success": False, "ret_msg": f"Invalid topic: {bad}", **base}
            conn.send(orjson.dumps(reply).decode())
            return
        ack = {"success": True, "ret_msg": "subscribe" if op == "subscribe" else "", **base}
        conn.send(orjson.dumps(ack).decode())
        for parsed in topics:
            assert parsed is not None
            spec, depth = parsed
            if op == "subscribe":
                self._subscribe(conn, spec, depth)
            else:
                if conn.subs.get(spec.symbol) == depth:
                    del conn.subs[spec.symbol]
                self.views.remove(conn, spec.symbol, depth)
                self.engine.counters.unsubscribe_requests[NAME][spec.symbol] += 1

    def on_close(self, conn: Connection) -> None:
        self.views.drop_conn(conn, conn.subs.items())

    def _subscribe(self, conn: Connection, spec: MarketSpec, depth: int) -> None:
        c = self.engine.counters
        c.subscribe_requests[NAME][spec.symbol] += 1
        book = self.engine.world.book((NAME, spec.symbol))
        view, created = self.views.add(conn, spec.symbol, depth, book)
        if created:
            view.seq = 1
        conn.subs[spec.symbol] = depth  # one depth per market and socket (ccxt's use)
        conn.send(self._message(spec, view, "snapshot", self._view_levels(view), book))
        c.depth_snapshots[NAME][spec.symbol] += 1
        c.messages_sent[NAME][spec.symbol] += 1

    @staticmethod
    def _view_levels(view: DepthView) -> tuple[list[Level], list[Level]]:
        bids = sorted(view.bids.items(), reverse=True)
        asks = sorted(view.asks.items())
        return bids, asks

    def _message(
        self,
        spec: MarketSpec,
        view: DepthView,
        kind: str,
        levels: tuple[list[Level], list[Level]],
        book: Book,
    ) -> str:
        ts = book.ts_ms
        body = {
            "topic": f"orderbook.{view.depth}.{spec.market_id}",
            "type": kind,
            "ts": ts,
            "data": {
                "s": spec.market_id,
                "b": _levels(book, levels[0]),
                "a": _levels(book, levels[1]),
                "u": view.seq,
                "seq": book.seq,
            },
            "cts": ts,
        }
        return orjson.dumps(body).decode()

    # -- engine hooks ------------------------------------------------------------------------

    def publish(self, symbol: str, update: BookUpdate, drop: bool = False) -> bool:
        if not self.views.has(symbol):
            return not drop
        spec = self.markets[symbol]
        book = self.engine.world.book((NAME, symbol))
        sent = changed = 0
        for view in self.views.of(symbol, DEPTHS):
            d_bids, d_asks = view.diff(book, explicit_out=True)
            if not (d_bids or d_asks):
                continue
            changed += 1
            view.seq += 1 + view.skip
            view.skip = 0
            if drop:
                continue  # the topic's u advanced; its subscribers never see this delta
            text = self._message(spec, view, "delta", (d_bids, d_asks), book)
            for conn in view.conns:
                conn.send(text)
            sent += len(view.conns)
        self.engine.counters.messages_sent[NAME][symbol] += sent
        return not drop or changed > 0  # a drop nobody would notice stays pending

    def reset(self) -> None:
        self.views.clear()

    def subscribed(self, symbol: str) -> bool:
        return self.views.subscribed(symbol)

    def fault(self, kind: str, symbols: list[str], body: dict[str, Any]) -> int:
        """``sequence_gap``: the next message of every topic of each market has ``u`` (and
        ``seq``) ``gap`` higher than contiguous; nothing is lost."""
        gap = body.get("gap", 10)
        if isinstance(gap, bool) or not isinstance(gap, int | float) or gap < 1:
            raise ValueError("gap must be a number >= 1")
        for symbol in symbols:
            self.engine.world.skip_sequence((NAME, symbol), int(gap))
            for view in self.views.of(symbol, DEPTHS):
                view.skip += int(gap)
        return len(symbols)

    def ground_truth(self, symbol: str) -> dict[str, Any]:
        """``u`` per subscribed depth (the last message's, as a string key) and ``seq``."""
        views = self.views.of(symbol, DEPTHS)
        book = self.engine.world.book((NAME, symbol))
        return {"u": {str(v.depth): v.seq for v in views}, "seq": book.seq}

    def malformed_text(self, symbol: str, variant: str) -> str | None:
        """``crash`` (default): a delta whose ``data`` is a list — ccxt's handle_order_book
        cannot read it and raises outside any try (its receive loop dies); ``not_json``."""
        if variant == "not_json":
            return "{not json"
        spec = self.markets[symbol]
        depth = next((c.subs[symbol] for c in self.conns if symbol in c.subs), 50)
        return (
            f'{{"topic":"orderbook.{depth}.{spec.market_id}","type":"delta",'
            f'"ts":{int(time.time() * 1000)},"data":[null]}}'
        )

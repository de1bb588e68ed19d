"""Fake Binance spot: REST market data and the diff-depth WebSocket stream.

REST (under ``/binance/api/v3``): ``ping``, ``time``, ``exchangeInfo`` (spot symbols with
PRICE_FILTER / LOT_SIZE / MARKET_LOT_SIZE / NOTIONAL filters, so ccxt derives precision and
limits), ``depth?symbol=BTCUSDT&limit=N`` (``lastUpdateId`` + top N, N <= 5000, default 100).

WebSocket: any path under ``/binance/stream/`` or ``/binance/ws/`` (ccxt connects to
``urls.api.ws.spot + "/<n>"`` and its spot check needs ``/stream`` in the URL). Raw-stream
protocol: ``{"method":"SUBSCRIBE","params":["btcusdt@depth@100ms"],"id":1}`` is answered with
``{"result":null,"id":1}`` (repeatable on one socket), ``UNSUBSCRIBE`` likewise,
``LIST_SUBSCRIPTIONS`` lists them. Diffs, one per book step::

    {"e":"depthUpdate","E":ms,"s":"BTCUSDT","U":first,"u":last,"b":[["p","q"]],"a":[...]}

with ``U == previous u + 1`` and qty "0" meaning delete — exactly what ccxt's sync needs
(first diff after a snapshot: ``U-1 <= lastUpdateId <= u-1``). A path whose last segment names
streams (``/binance/ws/btcusdt@depth``) subscribes on connect; ``?streams=a/b`` selects the
combined format ``{"stream":..., "data":...}``. WebSocket-level pings are answered by aiohttp.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from exporter.simulator.endpoints import MarketSpec, find_market
from exporter.simulator.engine import Connection, Engine, RestFault
from exporter.simulator.market import BookUpdate, fmt_units
from exporter.simulator.venue import WsVenue

NAME = "binance"
MAX_DEPTH_LIMIT = 5000


def _dec8(s: str) -> str:
    """Binance prints every decimal with 8 places: "0.01" -> "0.01000000"."""
    whole, _, frac = s.partition(".")
    return f"{whole}.{frac:0<8}"


def symbol_info(spec: MarketSpec) -> dict[str, Any]:
    tick = _dec8(fmt_units(1, spec.price_decimals))
    step = _dec8(fmt_units(1, spec.qty_decimals))
    return {
        "symbol": spec.market_id,
        "status": "TRADING",
        "baseAsset": spec.base_id,
        "baseAssetPrecision": 8,
        "quoteAsset": spec.quote_id,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": True,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": tick,
                "maxPrice": "1000000.00000000",
                "tickSize": tick,
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": _dec8(spec.min_qty),
                "maxQty": "9000.00000000",
                "stepSize": step,
            },
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": "0.00000000",
                "maxQty": "100.00000000",
                "stepSize": "0.00000000",
            },
            {"filterType": "TRAILING_DELTA", "minTrailingAboveDelta": 10},
            {
                "filterType": "NOTIONAL",
                "minNotional": _dec8(spec.min_notional),
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
        ],
        "permissions": [],
        "permissionSets": [["SPOT", "MARGIN"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def _error(status: int, code: int, msg: str, retry_after: float | None = None) -> web.Response:
    headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else None
    return web.json_response({"code": code, "msg": msg}, status=status, headers=headers)


class BinanceVenue(WsVenue):
    """REST + WS front end over the engine's Binance books."""

    name = NAME
    ws_heartbeat = 20.0
    fault_kinds = frozenset({"sequence_gap"})

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.by_stream = {m.market_id.lower(): m for m in self.markets.values()}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/binance/api/v3/ping", self.ping),
            web.get("/binance/api/v3/time", self.time),
            web.get("/binance/api/v3/exchangeInfo", self.exchange_info),
            web.get("/binance/api/v3/depth", self.depth),
            web.get("/binance/stream", self.serve_ws),
            web.get("/binance/stream/{tail:.*}", self.serve_ws),
            web.get("/binance/ws", self.serve_ws),
            web.get("/binance/ws/{tail:.*}", self.serve_ws),
        ]

    # -- REST --------------------------------------------------------------------------------

    def rest_error_response(self, f: RestFault) -> web.Response:
        msgs = {429: "Too many requests; injected by simulator.", 418: "Way too many requests."}
        code = -1003 if f.status in (418, 429) else -1000
        return _error(f.status, code, msgs.get(f.status, "Injected failure."), f.retry_after)

    def _fault(self, endpoint: str, symbol: str | None = None) -> web.Response | None:
        return self.rest_fault(endpoint, symbol if endpoint == "depth" else None)

    async def ping(self, request: web.Request) -> web.Response:
        return self._fault("ping") or web.json_response({})

    async def time(self, request: web.Request) -> web.Response:
        return self._fault("time") or web.json_response({"serverTime": int(time.time() * 1000)})

    async def exchange_info(self, request: web.Request) -> web.Response:
        err = self._fault("exchangeInfo")
        if err is not None:
            return err
        return web.json_response(
            {
                "timezone": "UTC",
                "serverTime": int(time.time() * 1000),
                "rateLimits": [
                    {
                        "rateLimitType": "REQUEST_WEIGHT",
                        "interval": "MINUTE",
                        "intervalNum": 1,
                        "limit": 6000,
                    },
                ],
                "exchangeFilters": [],
                "symbols": [symbol_info(m) for m in self.markets.values()],
            }
        )

    async def depth(self, request: web.Request) -> web.Response:
        spec = find_market(NAME, request.query.get("symbol", ""))
        err = self._fault("depth", spec.symbol if spec else None)
        if err is not None:
            return err
        if spec is None:
            return _error(400, -1121, "Invalid symbol.")
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return _error(400, -1100, "Illegal characters found in parameter 'limit'.")
        if not 1 <= limit <= MAX_DEPTH_LIMIT:
            return _error(400, -1100, "Illegal limit; expected 1..5000.")
        book = self.engine.world.book((NAME, spec.symbol))
        body = {
            "lastUpdateId": book.seq,
            "bids": [
                [_dec8(book.price_str(p)), _dec8(book.qty_str(q))] for p, q in book.top_bids(limit)
            ],
            "asks": [
                [_dec8(book.price_str(p)), _dec8(book.qty_str(q))] for p, q in book.top_asks(limit)
            ],
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    # -- WebSocket ---------------------------------------------------------------------------

    def _parse_stream(self, stream: str) -> MarketSpec | None:
        parts = stream.lower().split("@")
        if len(parts) < 2 or parts[1] != "depth":
            return None
        return self.by_stream.get(parts[0])

    def _subscribe(self, conn: Connection, spec: MarketSpec) -> None:
        conn.subs[spec.symbol] = 0
        self.engine.counters.subscribe_requests[NAME][spec.symbol] += 1

    def on_open(self, conn: Connection, request: web.Request) -> None:
        """Streams named in the URL (``?streams=a/b`` or the last path segment) subscribe now."""
        combined = "streams" in request.query
        streams = request.query.get("streams", "").split("/") if combined else []
        streams.append(request.match_info.get("tail", "").rsplit("/", 1)[-1])
        for stream in streams:
            spec = self._parse_stream(stream)
            if spec is not None:
                self._subscribe(conn, spec)
        conn.combined = combined

    def on_text(self, conn: Connection, text: str) -> None:
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError:
            conn.send('{"error":{"code":3,"msg":"Invalid JSON: expected value"},"id":null}')
            return
        if not isinstance(req, dict):
            conn.send('{"error":{"code":3,"msg":"Invalid request"},"id":null}')
            return
        method, rid, params = req.get("method"), req.get("id"), req.get("params") or []
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            specs = [self._parse_stream(p) if isinstance(p, str) else None for p in params]
            bad = [p for p, s in zip(params, specs, strict=True) if s is None]
            if bad:
                msg = f"Invalid request: unsupported stream(s) {bad}"
                conn.send(orjson.dumps({"error": {"code": 2, "msg": msg}, "id": rid}).decode())
                return
            for spec in specs:
                assert spec is not None
                if method == "SUBSCRIBE":
                    self._subscribe(conn, spec)
                else:
                    conn.subs.pop(spec.symbol, None)
                    self.engine.counters.unsubscribe_requests[NAME][spec.symbol] += 1
            conn.send(orjson.dumps({"result": None, "id": rid}).decode())
        elif method == "LIST_SUBSCRIPTIONS":
            names = [f"{self.markets[s].market_id.lower()}@depth@100ms" for s in conn.subs]
            conn.send(orjson.dumps({"result": names, "id": rid}).decode())
        else:
            msg = f"Unknown method {method!r}"
            conn.send(orjson.dumps({"error": {"code": 1, "msg": msg}, "id": rid}).decode())

    # -- engine hooks ------------------------------------------------------------------------

    def publish(self, symbol: str, update: BookUpdate, drop: bool = False) -> bool:
        if drop:
            return True  # any dropped diff shows as a sequence gap
        spec = self.markets[symbol]
        pd, qd = spec.price_decimals, spec.qty_decimals
        event = {
            "e": "depthUpdate",
            "E": update.ts_ms,
            "s": spec.market_id,
            "U": update.first_seq,
            "u": update.last_seq,
            "b": [
                [_dec8(fmt_units(p, pd)), _dec8(fmt_units(q, qd))] for p, q in update.bids.items()
            ],
            "a": [
                [_dec8(fmt_units(p, pd)), _dec8(fmt_units(q, qd))] for p, q in update.asks.items()
            ],
        }
        self._broadcast(spec, event)
        return True

    def _broadcast(self, spec: MarketSpec, event: Any) -> int:
        """Send `event` to the subscribers of `spec`, wrapped on combined-stream sockets."""
        text = orjson.dumps(event).decode()
        stream = f"{spec.market_id.lower()}@depth@100ms"
        wrapped: str | None = None
        n = 0
        for conn in self.conns:
            if spec.symbol not in conn.subs:
                continue
            if conn.combined:
                if wrapped is None:
                    wrapped = orjson.dumps({"stream": stream, "data": event}).decode()
                conn.send(wrapped)
            else:
                conn.send(text)
            n += 1
        self.engine.counters.messages_sent[NAME][spec.symbol] += n
        return n

    def fault(self, kind: str, symbols: list[str], body: dict[str, Any]) -> int:
        """``sequence_gap``: the next diff of each market skips ``gap`` (10) sequence numbers."""
        gap = body.get("gap", 10)
        if isinstance(gap, bool) or not isinstance(gap, int | float) or gap < 1:
            raise ValueError("gap must be a number >= 1")
        for symbol in symbols:
            self.engine.world.skip_sequence((NAME, symbol), int(gap))
        return len(symbols)

    def malformed_text(self, symbol: str, variant: str) -> str | None:
        """``crash`` (default): a JSON array, which ccxt's handle_message cannot route and
        raises on outside any try (its receive loop dies, the watch hangs); ``garbage``: a
        depthUpdate with the right ids but non-numeric levels (ccxt rejects the watch);
        ``not_json``: text that is not JSON. Sent raw, also on combined-stream sockets."""
        if variant == "garbage":
            spec = self.markets[symbol]
            book = self.engine.world.book((NAME, symbol))
            event = {
                "e": "depthUpdate",
                "E": int(time.time() * 1000),
                "s": spec.market_id,
                "U": book.seq + 1,
                "u": book.seq + 1,
                "b": [["garbage", None]],
                "a": "x",
            }
            return orjson.dumps(event).decode()
        if variant == "not_json":
            return "{not json"
        return '[{"e":null}]'

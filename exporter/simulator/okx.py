"""Fake OKX v5 spot: the instruments list over REST and the public ``books`` WebSocket channels.

REST (under ``/okx``): ``GET /api/v5/public/instruments?instType=SPOT`` (instId, baseCcy,
quoteCcy, tickSz, lotSz, minSz, maxLmtSz, maxMktSz, state, lever...: what ccxt's parse_market
reads; ccxt takes the spot fees from its own describe(): taker 0.15 %, maker 0.10 %),
``GET /api/v5/public/time``, ``GET /api/v5/market/books?instId=&sz=`` (1..400). Answers are
``{"code":"0","msg":"","data":[...]}``; an injected error answers its HTTP status with code
50011 "Too Many Requests" (429) or 50026 "System error".

WebSocket at ``/okx/ws/v5/public`` (ccxt connects to ``urls.api.ws + "/public"``):

- ``{"op":"subscribe","args":[{"channel":"books","instId":"BTC-USDT"}]}`` -> per arg
  ``{"event":"subscribe","arg":{...},"connId":...}`` then the channel's data. Channels:
  ``books`` (400 levels: ``action: snapshot`` then ``action: update``), ``books5`` and
  ``bbo-tbt`` (5 / 1 levels, every message a full book without ``action``).
  ``books50-l2-tbt`` / ``books-l2-tbt`` need a VIP login: answered ``{"event":"error",
  "code":"60011","msg":"Please log in"}`` (ccxt refuses them without credentials before
  sending anyway). ``unsubscribe`` -> ``{"event":"unsubscribe","arg":{...}}``.
- ``books`` messages: ``{"arg","action","data":[{"asks":[["p","sz","0","n"]],"bids",
  "ts":"ms","checksum","prevSeqId","seqId"}]}``. ``seqId`` is the market's sequence (the
  ground truth's ``sequence``); ``prevSeqId`` is the ``seqId`` of the previous message on the
  channel (-1 on a snapshot). Like OKX, the channel's book is kept at 400 levels: a level
  leaving it is sent with size "0", one entering it is sent. Prices and sizes are printed as
  OKX does, without trailing zeros ("97000.1", "0.5").
- ``checksum``: OKX's CRC32 over the top 25 levels, ``bid1px:bid1sz:ask1px:ask1sz:bid2px...``
  (a side that runs out is skipped), of the wire strings, as a signed 32-bit int.
- Plain text ``ping`` -> ``pong``.

Faults: ``drop_update`` (the next update of the market's channels is not sent; the next one's
``prevSeqId`` names it, so ccxt raises InvalidNonce and resubscribes), ``sequence_gap``
(``gap``, default 10: the next update's ``prevSeqId`` names a message never sent — content
intact — InvalidNonce likewise), ``bad_checksum`` (the next update carries a wrong checksum over
a correct book), ``corrupt_level`` (the next update sends one level with a wrong size while
its checksum is the TRUE book's: ccxt never verifies checksums, so its book silently
diverges), ``frozen`` (OKX's keep-alive: empty updates with ``seqId == prevSeqId``),
malformed frames ``crash`` (an update whose levels are not lists: ccxt raises outside any
try) and ``not_json``; the common ones (close, abort, stall, crossed, rest_error).
"""

from __future__ import annotations

import time
import zlib
from typing import Any

import orjson
from aiohttp import web

from exporter.simulator.endpoints import MarketSpec, find_market
from exporter.simulator.engine import Connection, Engine, RestFault
from exporter.simulator.market import BookUpdate, Level, fmt_units
from exporter.simulator.venue import DepthView, DepthViews, WsVenue, retry_after_headers

NAME = "okx"
CHANNELS = {"bbo-tbt": 1, "books5": 5, "books": 400}  # public channels and their depth
DEPTHS = tuple(CHANNELS.values())
CHANNEL_OF = {d: c for c, d in CHANNELS.items()}
VIP_CHANNELS = ("books50-l2-tbt", "books-l2-tbt")


def okx_str(units: int, decimals: int) -> str:
    """OKX prints decimals without trailing zeros: 9700010 at 2 decimals -> "97000.1"."""
    s = fmt_units(units, decimals)
    return s.rstrip("0").rstrip(".") if "." in s else s


def book_checksum(bids: list[Level], asks: list[Level], spec: MarketSpec) -> int:
    """OKX CRC32 (signed) over the top 25 bids (high -> low) and asks (low -> high)."""
    pd, qd = spec.price_decimals, spec.qty_decimals
    parts: list[str] = []
    for i in range(25):
        if i < len(bids):
            parts.append(f"{okx_str(bids[i][0], pd)}:{okx_str(bids[i][1], qd)}")
        if i < len(asks):
            parts.append(f"{okx_str(asks[i][0], pd)}:{okx_str(asks[i][1], qd)}")
    crc = zlib.crc32(":".join(parts).encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def instrument(spec: MarketSpec) -> dict[str, Any]:
    """One SPOT row of ``/api/v5/public/instruments``."""
    return {
        "instType": "SPOT",
        "instId": spec.market_id,
        "uly": "",
        "instFamily": "",
        "baseCcy": spec.base_id,
        "quoteCcy": spec.quote_id,
        "settleCcy": "",
        "ctVal": "",
        "ctMult": "",
        "ctValCcy": "",
        "optType": "",
        "stk": "",
        "listTime": "1548133413000",
        "expTime": "",
        "lever": "10",
        "tickSz": okx_str(1, spec.price_decimals) or "1",
        "lotSz": okx_str(1, spec.qty_decimals) or "1",
        "minSz": spec.min_qty,
        "ctType": "",
        "alias": "",
        "state": "live",
        "ruleType": "normal",
        "maxLmtSz": "9999999999",
        "maxMktSz": "1000000",
        "maxLmtAmt": "20000000",
        "maxMktAmt": "1000000",
        "maxTwapSz": "9999999999",
        "maxIcebergSz": "9999999999",
        "maxTriggerSz": "9999999999",
        "maxStopSz": "1000000",
    }


class OkxVenue(WsVenue):
    """REST + public WS front end over the engine's OKX books."""

    name = NAME
    fault_kinds = frozenset({"sequence_gap", "bad_checksum", "corrupt_level"})

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.views = DepthViews()
        self.bad_checksum_next: set[str] = set()
        self.corrupt_next: set[str] = set()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/okx/api/v5/public/instruments", self.instruments),
            web.get("/okx/api/v5/public/time", self.time),
            web.get("/okx/api/v5/market/books", self.books),
            web.get("/okx/ws/v5/public", self.serve_ws),
        ]

    # -- REST --------------------------------------------------------------------------------

    @staticmethod
    def _ok(data: list[Any]) -> web.Response:
        body = {"code": "0", "msg": "", "data": data}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    @staticmethod
    def _err(code: str, msg: str, status: int = 400) -> web.Response:
        return web.json_response({"code": code, "msg": msg, "data": []}, status=status)

    def rest_error_response(self, f: RestFault) -> web.Response:
        code, msg = ("50011", "Too Many Requests") if f.status == 429 else ("50026", "System error")
        body = {"code": code, "msg": msg, "data": []}
        return web.json_response(body, status=f.status, headers=retry_after_headers(f))

    async def instruments(self, request: web.Request) -> web.Response:
        err = self.rest_fault("instruments")
        if err is not None:
            return err
        if request.query.get("instType") != "SPOT":
            return self._ok([])  # the simulator lists spot only
        specs = list(self.markets.values())
        wanted = request.query.get("instId")
        if wanted:
            specs = [s for s in specs if s.market_id == wanted]
        return self._ok([instrument(s) for s in specs])

    async def time(self, request: web.Request) -> web.Response:
        return self.rest_fault("time") or self._ok([{"ts": str(int(time.time() * 1000))}])

    async def books(self, request: web.Request) -> web.Response:
        spec = find_market(NAME, request.query.get("instId", ""))
        err = self.rest_fault("books", spec.symbol if spec else None)
        if err is not None:
            return err
        if spec is None:
            return self._err("51001", "Instrument ID does not exist")
        try:
            sz = max(1, min(400, int(request.query.get("sz", "1"))))
        except ValueError:
            return self._err("50014", "Parameter sz error")
        book = self.engine.world.book((NAME, spec.symbol))
        data = {
            "asks": self._levels(spec, book.top_asks(sz)),
            "bids": self._levels(spec, book.top_bids(sz)),
            "ts": str(book.ts_ms),
        }
        return self._ok([data])

    # -- WebSocket ---------------------------------------------------------------------------

    @staticmethod
    def _levels(spec: MarketSpec, items: list[Level]) -> list[list[str]]:
        pd, qd = spec.price_decimals, spec.qty_decimals
        return [[okx_str(p, pd), okx_str(q, qd), "0", "1" if q else "0"] for p, q in items]

    def on_text(self, conn: Connection, text: str) -> None:
        if text == "ping":
            self.engine.counters.pings[NAME] += 1
            conn.send("pong")
            return
        conn_id = f"{id(conn) & 0xFFFFFFFF:08x}"
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError:
            req = None
        op = req.get("op") if isinstance(req, dict) else None
        args = req.get("args") if isinstance(req, dict) else None
        if op not in ("subscribe", "unsubscribe") or not isinstance(args, list) or not args:
            msg = f"Illegal request: {text}" if op is None else f"Invalid request: {text}"
            self._send(conn, {"event": "error", "msg": msg, "code": "60012", "connId": conn_id})
            return
        for arg in args:
            channel = arg.get("channel") if isinstance(arg, dict) else None
            inst = arg.get("instId") if isinstance(arg, dict) else None
            spec = find_market(NAME, inst) if isinstance(inst, str) else None
            if channel in VIP_CHANNELS:
                self._send(
                    conn,
                    {"event": "error", "msg": "Please log in", "code": "60011", "connId": conn_id},
                )
                continue
            if channel not in CHANNELS or spec is None or spec.market_id != inst:
                msg = f"{op}:{arg} doesn't exist"
                self._send(conn, {"event": "error", "msg": msg, "code": "60018", "connId": conn_id})
                continue
            depth = CHANNELS[str(channel)]
            self._send(conn, {"event": op, "arg": arg, "connId": conn_id})
            if op == "subscribe":
                self._subscribe(conn, spec, depth)
            else:
                if conn.subs.get(spec.symbol) == depth:
                    del conn.subs[spec.symbol]
                self.views.remove(conn, spec.symbol, depth)
                self.engine.counters.unsubscribe_requests[NAME][spec.symbol] += 1

    @staticmethod
    def _send(conn: Connection, body: dict[str, Any]) -> None:
        conn.send(orjson.dumps(body).decode())

    def on_close(self, conn: Connection) -> None:
        self.views.drop_conn(conn, conn.subs.items())

    def _subscribe(self, conn: Connection, spec: MarketSpec, depth: int) -> None:
        c = self.engine.counters
        c.subscribe_requests[NAME][spec.symbol] += 1
        book = self.engine.world.book((NAME, spec.symbol))
        view, created = self.views.add(conn, spec.symbol, depth, book)
        if created:
            view.seq = book.seq
        conn.subs[spec.symbol] = depth  # one channel per market and socket (ccxt's use)
        bids = sorted(view.bids.items(), reverse=True)
        asks = sorted(view.asks.items())
        action = "snapshot" if depth == 400 else None
        conn.send(
            self._message(spec, view, action, bids, asks, book_checksum(bids, asks, spec), -1)
        )
        c.depth_snapshots[NAME][spec.symbol] += 1
        c.messages_sent[NAME][spec.symbol] += 1

    def _message(
        self,
        spec: MarketSpec,
        view: DepthView,
        action: str | None,
        bids: list[Level],
        asks: list[Level],
        checksum: int,
        prev: int,
    ) -> str:
        book = self.engine.world.book((NAME, spec.symbol))
        data: dict[str, Any] = {
            "asks": self._levels(spec, asks),
            "bids": self._levels(spec, bids),
            "ts": str(book.ts_ms),
        }
        if action is not None:
            data.update(checksum=checksum, prevSeqId=prev, seqId=view.seq)
        else:
            data["instId"] = spec.market_id
        body: dict[str, Any] = {
            "arg": {"channel": CHANNEL_OF[view.depth], "instId": spec.market_id}
        }
        if action is not None:
            body["action"] = action
        body["data"] = [data]
        return orjson.dumps(body).decode()

    # -- engine hooks ------------------------------------------------------------------------

    def publish(self, symbol: str, update: BookUpdate, drop: bool = False) -> bool:
        if not self.views.has(symbol):
            return not drop
        spec = self.markets[symbol]
        key = (NAME, symbol)
        book = self.engine.world.book(key)
        frozen = self.engine.frozen_until.get(key, 0.0) > time.monotonic()
        sent = changed = 0
        used = False  # a pending bad checksum / corrupt level went out
        bad = symbol in self.bad_checksum_next
        corrupt = symbol in self.corrupt_next
        for view in self.views.of(symbol, DEPTHS):
            d_bids, d_asks = view.diff(book, explicit_out=True)
            if view.depth != 400:  # books5 / bbo-tbt: a full book whenever it changed
                if d_bids or d_asks:
                    changed += 1
                    if not drop:
                        view.seq = book.seq
                        bids = sorted(view.bids.items(), reverse=True)
                        asks = sorted(view.asks.items())
                        text = self._message(spec, view, None, bids, asks, 0, -1)
                        for conn in view.conns:
                            conn.send(text)
                        sent += len(view.conns)
                continue
            prev = view.seq + view.skip
            if not (d_bids or d_asks):
                if frozen and not drop:  # OKX's keep-alive: nothing changed, seqId repeated
                    cs = book_checksum(book.top_bids(25), book.top_asks(25), spec)
                    text = self._message(spec, view, "update", [], [], cs, view.seq)
                    for conn in view.conns:
                        conn.send(text)
                    sent += len(view.conns)
                continue
            changed += 1
            view.skip = 0
            view.seq = book.seq
            if drop:
                continue  # the next update's prevSeqId names this unsent one
            checksum = book_checksum(book.top_bids(25), book.top_asks(25), spec)
            if bad:
                checksum ^= 0x2A5A5A5A
            if corrupt:
                d_bids, d_asks = _corrupt(d_bids, d_asks)
            text = self._message(spec, view, "update", d_bids, d_asks, checksum, prev)
            for conn in view.conns:
                conn.send(text)
            sent += len(view.conns)
            used = used or bool(view.conns)
        if used:
            self.bad_checksum_next.discard(symbol)
            self.corrupt_next.discard(symbol)
        self.engine.counters.messages_sent[NAME][symbol] += sent
        return not drop or changed > 0  # a drop nobody would notice stays pending

    def reset(self) -> None:
        self.views.clear()
        self.bad_checksum_next.clear()
        self.corrupt_next.clear()

    def subscribed(self, symbol: str) -> bool:
        return self.views.subscribed(symbol)

    def fault(self, kind: str, symbols: list[str], body: dict[str, Any]) -> int:
        """``sequence_gap`` (``gap``): the next ``books`` update's prevSeqId is ``gap`` past
        the last one sent; ``bad_checksum``: the next update's checksum is wrong;
        ``corrupt_level``: the next update carries one wrong size (checksum of the true book)."""
        if kind == "sequence_gap":
            gap = body.get("gap", 10)
            if isinstance(gap, bool) or not isinstance(gap, int | float) or gap < 1:
                raise ValueError("gap must be a number >= 1")
            for symbol in symbols:
                self.engine.world.skip_sequence((NAME, symbol), int(gap))
                for view in self.views.of(symbol, (400,)):
                    view.skip += int(gap)
        elif kind == "bad_checksum":
            self.bad_checksum_next.update(symbols)
        else:
            self.corrupt_next.update(symbols)
        return len(symbols)

    def ground_truth(self, symbol: str) -> dict[str, Any]:
        """OKX checksum of the true top 25 and the ``seqId`` a snapshot would carry now."""
        spec = self.markets[symbol]
        book = self.engine.world.book((NAME, symbol))
        checksum = book_checksum(book.top_bids(25), book.top_asks(25), spec)
        return {"checksum": checksum, "seqId": book.seq}

    def malformed_text(self, symbol: str, variant: str) -> str | None:
        """``crash`` (default): a ``books`` update whose levels are numbers, not lists —
        ccxt's handle_deltas raises outside any try (its receive loop dies); ``not_json``."""
        if variant == "not_json":
            return "{not json"
        inst = self.markets[symbol].market_id
        return (
            f'{{"arg":{{"channel":"books","instId":"{inst}"}},"action":"update",'
            '"data":[{"asks":[7],"bids":[7],"ts":"0","checksum":0,"prevSeqId":-1,"seqId":0}]}'
        )


def _corrupt(bids: list[Level], asks: list[Level]) -> tuple[list[Level], list[Level]]:
    """One level of the update with a wrong size (+1 lot; a deletion becomes 1 lot)."""
    side, other = (bids, asks) if bids else (asks, bids)
    p, q = side[0]
    wrong = [(p, q + 1 if q else 1), *side[1:]]
    return (wrong, other) if bids else (other, wrong)

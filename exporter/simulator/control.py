"""HTTP control API of the exchange simulator (JSON in, JSON out, under ``/control/``).

Markets are named by exchange (``endpoints.EXCHANGES``: ``binance``, ``kraken``, ``bybit``,
``okx``...) and ccxt unified symbol
(``BTC/USDT``, ``BTC/USD``, ``USDT/USD``...; exchange ids such as ``BTCUSDT``/``XBTUSD`` work
too). In a path, write the symbol URL-encoded (``BTC%2FUSDT``) or plain; or use ``?market=``.
Errors answer HTTP 400/404 with ``{"error": "..."}``.

Read:

- ``GET /control/health`` -> ``{"status":"ok","uptime_seconds","seed","mode","rate","frozen"}``
- ``GET /control/markets`` -> ``{"markets":[{"exchange","symbol","market_id","canonical",
  "price_decimals","qty_decimals","sequence","mid","best_bid","best_ask","stopped",
  "stalled"}],"dislocations":[{"asset","exchange","size","remaining_seconds"}]}``
- ``GET /control/book/{exchange}/{market}?depth=100`` (or ``/control/book/{exchange}?market=``)
  -> ground truth ``{"exchange","market","sequence","timestamp_ms","frozen","mid",
  "bids":[["price","qty"],...] (high -> low),"asks":[...] (low -> high),"checksum"}``; prices
  and quantities are exact decimal strings; ``checksum`` is Kraken's v2 CRC32 of the top 10
  levels or OKX's CRC32 of the top 25 (else null); venues add their wire sequence fields
  (``WsVenue.ground_truth``: Bybit ``u`` per subscribed depth and ``seq``, OKX ``seqId``);
  ``depth`` 1..5000 (default 100).
- ``GET /control/counters`` -> ``rest_requests[exchange][endpoint]``,
  ``depth_snapshots[exchange][market]`` (Binance REST depth requests; Kraken REST Depth
  requests + WS snapshots sent), ``rest_errors_injected``, ``ws_connections[exchange]``
  ``{opened, open, slow_consumer_closed}``, ``subscribe_requests`` / ``unsubscribe_requests``
  ``[exchange][market]``, ``messages_sent[exchange][market]`` (book frames, per socket),
  ``book_steps[exchange][market]``, ``faults[exchange][kind]``, ``pings[exchange]``,
  ``ticks``, ``engine_errors``, ``send_lag_seconds {last,max,mean,resets}`` (how late each
  tick ran vs. its schedule; a reset = more than 1 s behind, schedule restarted), ``mode``,
  ``rate``, ``frozen``.
  ``POST /control/counters/reset`` zeroes them.
- ``GET /control/sends`` (with ``--record-sends``) -> ``{"sends": [[exchange, market,
  last_sequence, unix_time], ...]}``: when each update was published; the log is cleared.

Write (POST, JSON body; every answer has ``"ok": true``):

- ``/control/freeze`` | ``/control/unfreeze``: stop / resume every book change (pings, pongs and
  Kraken heartbeats continue). Answer includes ``sequences[exchange][market]``.
- ``/control/fault`` ``{"exchange", "kind", "market"?: symbol (default: all markets), ...}``:
  ``close`` (close frame 1000 to the sockets subscribed to market, or all sockets),
  ``abort`` (TCP abort, no close frame), ``sequence_gap`` (Binance: the next diff skips
  ``gap`` sequence numbers, default 10), ``drop_update`` (the next step changes the ground
  truth but is not sent; Binance: also a sequence gap), ``bad_checksum`` (Kraken, OKX: the next
  update carries a wrong checksum), ``corrupt_level`` (OKX: the next update carries one wrong
  size under the true book's checksum); ``sequence_gap`` and drops per venue: Bybit ``u``,
  OKX ``prevSeqId``, Coinbase ``sequence_num`` (see the venue modules), ``stall`` (no book
  changes or data for ``seconds``, default 5; pings still answered), ``malformed_frame``
  (one bad frame; ``variant``: ``crash``
  (default), ``garbage`` (Binance), ``not_json``), ``rest_error`` (next ``count`` (1) REST
  requests of ``endpoint`` (``depth``, ``exchangeInfo``, ``Assets``, ``AssetPairs``,
  ``Depth``... or ``*``) answer HTTP ``status`` (429) with optional ``retry_after`` seconds),
  ``crossed`` (a bid above the best ask is published, then the market is silent for
  ``seconds`` (2); the next step uncrosses it), ``frozen`` (for ``seconds`` (5) each step re-sends
  the best bid unchanged: Binance keeps streaming diffs, sequence advancing, while the book
  stands still; Kraken sends no diff when nothing changed, so it goes quiet).
  Answer: ``{"ok":true,"kind","affected"}`` (sockets or markets touched).
- ``/control/market/stop`` | ``/control/market/start`` ``{"exchange","market"}``: the market's
  book stops changing and its stream goes silent (subscriptions stay) / resumes.
- ``/control/dislocation`` ``{"symbol":"BTC" | "BTC/USD", "exchange":"kraken", "size":0.004,
  "duration":3.0}``: multiply that exchange's fair price of the asset by ``1 + size`` for
  ``duration`` seconds (size may be negative).
- ``/control/mode`` ``{"mode":"random"|"fixed_rate"|"firehose", "rate"?: steps/s per market,
  "markets"?: [[exchange, market], ...], "ops"?: 1..50}``: with ``firehose``, ``markets``
  limits the firehose to those markets and every other market steps at ``rate`` per second
  (quiet but live); ``ops`` is the number of book changes per firehose step (default 2).
- ``/control/reset`` ``{"frozen"?: false}``: back to the state right after startup. Every
  WebSocket is aborted; books, sequences and price walks are regenerated from the seed;
  dislocations, faults (stalls, stopped markets, pending drops, frozen books, REST errors,
  Kraken bad checksums), the freeze, mode and rate, the counters and the send log are reset.
  ``"frozen": true`` leaves it frozen, to read the initial books. Answer:
  ``{"ok":true,"closed": sockets aborted,"frozen","sequences"}``. (Demo auto-dislocations
  keep their rotation.)
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web

from exporter.simulator.endpoints import EXCHANGES, find_market, markets_of
from exporter.simulator.engine import MODES, Engine, Mode, RestFault
from exporter.simulator.market import Key
from exporter.simulator.venue import WsVenue


class ControlError(Exception):
    """A bad control request: answered 400 with the message."""


@dataclass(frozen=True, slots=True)
class _Fault:
    """One ``POST /control/fault`` request, validated up to its kind-specific fields."""

    exchange: str
    market: Any  # as given (None: every market of the exchange)
    symbol: str | None  # its unified symbol
    venue: WsVenue
    body: dict[str, Any]


def _num(body: dict[str, Any], name: str, default: float | None = None) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ControlError(f"{name!r} must be a number")
    return float(value)


class Control:
    """Route handlers; `engine` owns all state, the venues implement the wire faults."""

    def __init__(self, engine: Engine, venues: dict[str, WsVenue]) -> None:
        self.engine = engine
        self.venues = venues
        # kinds every venue has; a venue adds its own (WsVenue.fault_kinds, WsVenue.fault)
        self._faults: dict[str, Callable[[_Fault], Awaitable[int]]] = {
            "close": self._close,
            "abort": self._abort,
            "drop_update": self._drop_update,
            "stall": self._stall,
            "malformed_frame": self._malformed_frame,
            "rest_error": self._rest_error,
            "crossed": self._crossed,
            "frozen": self._frozen,
        }

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/control/health", self.health),
            web.get("/control/markets", self.markets),
            web.get("/control/book/{exchange}", self.book),
            web.get("/control/book/{exchange}/{market:.+}", self.book),
            web.get("/control/counters", self.counters),
            web.post("/control/counters/reset", self.reset_counters),
            web.post("/control/reset", self.reset),
            web.get("/control/sends", self.sends),
            web.post("/control/freeze", self.freeze),
            web.post("/control/unfreeze", self.unfreeze),
            web.post("/control/fault", self.fault),
            web.post("/control/market/stop", self.market_stop),
            web.post("/control/market/start", self.market_start),
            web.post("/control/dislocation", self.dislocation),
            web.post("/control/mode", self.mode),
        ]

    @web.middleware
    async def errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return cast(web.StreamResponse, await handler(request))
        except ControlError as e:
            return web.json_response({"error": str(e)}, status=400)

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            body = await request.json()
        except ValueError as e:
            raise ControlError(f"body is not JSON: {e}") from e
        if not isinstance(body, dict):
            raise ControlError("body must be a JSON object")
        return body

    @staticmethod
    def _exchange(name: Any) -> str:
        if name not in EXCHANGES:
            raise ControlError(f"exchange must be one of {list(EXCHANGES)}, got {name!r}")
        return str(name)

    @staticmethod
    def _market(exchange: str, market: Any) -> str:
        spec = find_market(exchange, market) if isinstance(market, str) else None
        if spec is None:
            valid = [m.symbol for m in markets_of(exchange)]
            raise ControlError(f"unknown {exchange} market {market!r}; valid: {valid}")
        return spec.symbol

    def _keys(self, exchange: str, market: Any) -> list[Key]:
        if market is None:
            return [(exchange, m.symbol) for m in markets_of(exchange)]
        return [(exchange, self._market(exchange, market))]

    def _sequences(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (ex, sym), sim in self.engine.world.sims.items():
            out.setdefault(ex, {})[sym] = sim.book.seq
        return out

    # -- read --------------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        e = self.engine
        return web.json_response(
            {
                "status": "ok",
                "uptime_seconds": round(time.time() - e.started, 3),
                "seed": e.world.seed,
                "mode": e.mode,
                "rate": e.rate,
                "frozen": e.frozen,
            }
        )

    async def sends(self, request: web.Request) -> web.Response:
        log = self.engine.send_log
        if log is None:
            raise ControlError("start the simulator with --record-sends")
        rows = list(log)
        log.clear()
        return web.json_response({"sends": rows})

    async def markets(self, request: web.Request) -> web.Response:
        e, now = self.engine, time.monotonic()
        rows = []
        for (ex, sym), sim in e.world.sims.items():
            book, spec = sim.book, sim.spec
            bb, ba = book.best_bid(), book.best_ask()
            rows.append(
                {
                    "exchange": ex,
                    "symbol": sym,
                    "market_id": spec.market_id,
                    "canonical": spec.canonical,
                    "price_decimals": spec.price_decimals,
                    "qty_decimals": spec.qty_decimals,
                    "sequence": book.seq,
                    "mid": book.mid(),
                    "best_bid": book.price_str(bb) if bb is not None else None,
                    "best_ask": book.price_str(ba) if ba is not None else None,
                    "stopped": (ex, sym) in e.stopped,
                    "stalled": e.stalled_until.get((ex, sym), 0.0) > now,
                }
            )
        dis = [
            {
                "asset": d.asset,
                "exchange": d.exchange,
                "size": d.size,
                "remaining_seconds": round(d.end - now, 3),
            }
            for d in e.world.dislocations
            if d.end > now
        ]
        return web.json_response({"markets": rows, "dislocations": dis})

    async def book(self, request: web.Request) -> web.Response:
        exchange = self._exchange(request.match_info["exchange"])
        raw = request.match_info.get("market") or request.query.get("market")
        symbol = self._market(exchange, raw)
        try:
            depth = int(request.query.get("depth", "100"))
        except ValueError as e:
            raise ControlError("depth must be an integer") from e
        depth = max(1, min(depth, 5000))
        book = self.engine.world.book((exchange, symbol))
        body: dict[str, Any] = {
            "exchange": exchange,
            "market": symbol,
            "sequence": book.seq,
            "timestamp_ms": book.ts_ms,
            "frozen": self.engine.frozen,
            "mid": book.mid(),
            "bids": [[book.price_str(p), book.qty_str(q)] for p, q in book.top_bids(depth)],
            "asks": [[book.price_str(p), book.qty_str(q)] for p, q in book.top_asks(depth)],
            "checksum": None,
        }
        body.update(self.venues[exchange].ground_truth(symbol))
        return web.json_response(body)

    async def counters(self, request: web.Request) -> web.Response:
        e = self.engine
        body = e.counters.snapshot(e.open_sockets())
        body.update(mode=e.mode, rate=e.rate, frozen=e.frozen)
        return web.json_response(body)

    async def reset_counters(self, request: web.Request) -> web.Response:
        self.engine.counters = type(self.engine.counters)()  # open sockets stay open
        return web.json_response({"ok": True})

    # -- write -------------------------------------------------------------------------------

    async def freeze(self, request: web.Request) -> web.Response:
        self.engine.frozen = True
        return web.json_response({"ok": True, "frozen": True, "sequences": self._sequences()})

    async def unfreeze(self, request: web.Request) -> web.Response:
        self.engine.frozen = False
        return web.json_response({"ok": True, "frozen": False, "sequences": self._sequences()})

    async def reset(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        frozen = body.get("frozen", False)
        if not isinstance(frozen, bool):
            raise ControlError("frozen must be true or false")
        closed = await self.engine.reset(frozen=frozen)
        return web.json_response(
            {"ok": True, "closed": closed, "frozen": frozen, "sequences": self._sequences()}
        )

    async def fault(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        exchange = self._exchange(body.get("exchange"))
        kind = body.get("kind")
        venue = self.venues[exchange]
        handler = self._faults.get(kind) if isinstance(kind, str) else None
        if handler is None and kind in venue.fault_kinds:
            handler = self._venue_fault
        if handler is None:
            everywhere = set(self._faults).union(*(v.fault_kinds for v in self.venues.values()))
            if kind in everywhere:
                raise ControlError(f"{kind} does not apply to {exchange}")
            raise ControlError(f"kind must be one of {sorted(everywhere)}, got {kind!r}")
        market = body.get("market")
        symbol = None if market is None else self._market(exchange, market)
        affected = await handler(_Fault(exchange, market, symbol, venue, body))
        self.engine.counters.faults[exchange][str(kind)] += 1
        return web.json_response({"ok": True, "kind": kind, "affected": affected})

    # -- fault kinds: each answers how many sockets or markets it touched -------------------

    async def _close(self, f: _Fault) -> int:
        return await f.venue.disconnect(f.symbol, abort=False)

    async def _abort(self, f: _Fault) -> int:
        return await f.venue.disconnect(f.symbol, abort=True)

    async def _venue_fault(self, f: _Fault) -> int:
        symbols = [sym for _, sym in self._keys(f.exchange, f.market)]
        try:
            return f.venue.fault(str(f.body["kind"]), symbols, f.body)
        except ValueError as e:
            raise ControlError(str(e)) from e

    async def _drop_update(self, f: _Fault) -> int:
        keys = self._keys(f.exchange, f.market)
        self.engine.drop_next.update(keys)
        return len(keys)

    async def _stall(self, f: _Fault) -> int:
        until = time.monotonic() + _num(f.body, "seconds", 5.0)
        keys = self._keys(f.exchange, f.market)
        for key in keys:
            self.engine.stalled_until[key] = until
        return len(keys)

    async def _malformed_frame(self, f: _Fault) -> int:
        variant = str(f.body.get("variant", "crash"))
        if variant not in ("crash", "garbage", "not_json"):
            raise ControlError("variant must be crash, garbage or not_json")
        return f.venue.malformed(f.symbol, variant)

    async def _rest_error(self, f: _Fault) -> int:
        status = int(_num(f.body, "status", 429))
        if not 400 <= status <= 599:
            raise ControlError("status must be 4xx or 5xx")
        count = int(_num(f.body, "count", 1))
        retry = f.body.get("retry_after")
        retry_after = None if retry is None else _num(f.body, "retry_after")
        endpoint = str(f.body.get("endpoint", "*"))
        self.engine.rest_faults[f.exchange].append(RestFault(endpoint, count, status, retry_after))
        return count

    async def _crossed(self, f: _Fault) -> int:
        until = time.monotonic() + _num(f.body, "seconds", 2.0)
        keys = self._keys(f.exchange, f.market)
        for key in keys:
            f.venue.publish(key[1], self.engine.world.cross(key))
            self.engine.stalled_until[key] = until  # stays crossed until the next step
        return len(keys)

    async def _frozen(self, f: _Fault) -> int:
        until = time.monotonic() + _num(f.body, "seconds", 5.0)
        keys = self._keys(f.exchange, f.market)
        for key in keys:
            self.engine.frozen_until[key] = until
        return len(keys)

    async def _market_state(self, request: web.Request, stop: bool) -> web.Response:
        body = await self._body(request)
        exchange = self._exchange(body.get("exchange"))
        key = (exchange, self._market(exchange, body.get("market")))
        if stop:
            self.engine.stopped.add(key)
        else:
            self.engine.stopped.discard(key)
        return web.json_response(
            {"ok": True, "exchange": key[0], "market": key[1], "stopped": stop}
        )

    async def market_stop(self, request: web.Request) -> web.Response:
        return await self._market_state(request, True)

    async def market_start(self, request: web.Request) -> web.Response:
        return await self._market_state(request, False)

    async def dislocation(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        exchange = self._exchange(body.get("exchange"))
        symbol = body.get("symbol")
        if not isinstance(symbol, str) or not symbol:
            raise ControlError("symbol must be an asset ('BTC') or canonical symbol ('BTC/USD')")
        asset = symbol.split("/")[0].upper()
        if not any(m.base == asset for m in markets_of(exchange)):
            raise ControlError(f"{exchange} has no market with base {asset}")
        size = _num(body, "size", 0.004)
        duration = _num(body, "duration", 3.0)
        if not -0.5 < size < 0.5 or duration <= 0:
            raise ControlError("need -0.5 < size < 0.5 and duration > 0")
        self.engine.world.add_dislocation(asset, exchange, size, duration)
        return web.json_response(
            {"ok": True, "asset": asset, "exchange": exchange, "size": size, "duration": duration}
        )

    async def mode(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        mode = body.get("mode")
        if mode not in MODES:
            raise ControlError(f"mode must be one of {list(MODES)}")
        rate = body.get("rate")
        if rate is not None:
            rate = _num(body, "rate")
            if rate <= 0:
                raise ControlError("rate must be > 0")
        only = None
        if body.get("markets") is not None:
            if mode != "firehose" or not isinstance(body["markets"], list):
                raise ControlError("markets: a list of [exchange, market], with mode firehose")
            keys: set[Key] = set()
            for item in body["markets"]:
                if not isinstance(item, list) or len(item) != 2:
                    raise ControlError("markets: a list of [exchange, market]")
                exchange = self._exchange(item[0])
                keys.add((exchange, self._market(exchange, item[1])))
            only = frozenset(keys)
        ops = body.get("ops", 2)
        if isinstance(ops, bool) or not isinstance(ops, int) or not 1 <= ops <= 50:
            raise ControlError("ops must be an integer in 1..50")
        self.engine.set_mode(cast(Mode, mode), rate, only, ops)
        return web.json_response({"ok": True, "mode": mode, "rate": self.engine.rate})


async def auto_dislocations(engine: Engine, every: float, size: float, duration: float) -> None:
    """Demo helper: every `every` s, dislocate one asset on one exchange (seeded rotation)."""
    rng = random.Random(engine.world.seed + 7)
    assets = ["BTC", "ETH", "SOL"]
    while True:
        await asyncio.sleep(every)
        asset = assets[rng.randrange(len(assets))]
        exchange = EXCHANGES[rng.randrange(len(EXCHANGES))]
        sign = 1.0 if rng.random() < 0.5 else -1.0
        engine.world.add_dislocation(asset, exchange, sign * size, duration)

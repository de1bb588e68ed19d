"""Which markets the simulator serves, and how to point a real ccxt.pro client at it.

`ccxt_config(exchange, base_url)` returns the mapping to pass to the ccxt.pro constructor::

    import ccxt.pro
    from exporter.simulator.endpoints import ccxt_config

    ex = ccxt.pro.binance(ccxt_config("binance", "http://127.0.0.1:8765"))
    book = await ex.watch_order_book("BTC/USDT", 100)

Merge semantics: ccxt's constructor computes ``deep_extend(self.describe(), config)``. Nested
dicts merge key by key (a key absent from ``config`` keeps ccxt's default, e.g. the real
``https://api.binance.com/...`` URLs); any other value (str, list, number) replaces the default
outright. Therefore the mapping below lists *every* REST and WebSocket URL key ccxt 4.5.90 has
under ``urls.api`` for each exchange: the ones the simulator serves point at it, all others
point at a dead loopback port (``127.0.0.1:9``), so a code path we did not anticipate fails
fast with a connection error instead of reaching the real exchange. ``options`` merge the same
way: ``fetchMarkets.types`` replaces ccxt's list ``[spot, linear, inverse]`` (else Binance would
also fetch the futures exchangeInfo), other options keep their defaults. Callers may
deep-merge their own settings on top (e.g. ``rateLimit``, ``options.watchOrderBook``).

This module must not import ccxt (only ``exporter.feeds`` does); the integration tests check
the merged result against the installed ccxt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

STABLECOINS: Final = frozenset({"USDT", "USDC"})
"""Quote assets priced in USD by their own random walk (a conversion book each)."""

DEAD_HOST: Final = "127.0.0.1:9"
"""Loopback discard port: nothing listens there, connections are refused at once."""

EXCHANGES: Final = ("binance", "kraken", "bybit", "okx", "coinbase")


@dataclass(frozen=True, slots=True)
class MarketSpec:
    """One simulated market, with the precision and limits the venue advertises."""

    exchange: str
    symbol: str  # ccxt unified symbol, e.g. "BTC/USDT"
    market_id: str  # exchange REST id, e.g. "BTCUSDT" / "XXBTZUSD"
    base: str  # unified base code ("BTC")
    quote: str  # unified quote code ("USDT", "USD")
    base_id: str  # exchange asset id ("BTC" / "XXBT")
    quote_id: str  # exchange asset id ("USDT" / "ZUSD")
    altname: str  # Kraken altname ("XBTUSD"); Binance: same as market_id
    wsname: str  # Kraken v1 wsname ("XBT/USD"); WS v2 uses `symbol`
    price_decimals: int  # tick = 10**-price_decimals
    qty_decimals: int  # lot = 10**-qty_decimals
    min_qty: str
    min_notional: str
    base_price_usd: float  # starting fair value of one unit of base, in USD
    level_notional_usd: float  # median notional of one price level
    level_gap_fraction: float  # mean distance between neighbouring levels, fraction of price

    @property
    def tick(self) -> float:
        return 10.0**-self.price_decimals

    @property
    def lot(self) -> float:
        return 10.0**-self.qty_decimals

    @property
    def canonical(self) -> str:
        """Canonical symbol (quote USD) used by dislocations: BTC/USDT -> BTC/USD."""
        return f"{self.base}/USD"


def _b(symbol: str, pdec: int, qdec: int, min_qty: str, price: float) -> MarketSpec:
    base, quote = symbol.split("/")
    mid = base + quote
    return MarketSpec(
        "binance", symbol, mid, base, quote, base, quote, mid, symbol, pdec, qdec, min_qty, "5",
        price, 25_000.0, 0.0001,
    )  # fmt: skip


def _k(
    symbol: str, mid: str, alt: str, ws: str, ids: tuple[str, str], pdec: int, price: float
) -> MarketSpec:
    base, quote = symbol.split("/")
    stable = base in STABLECOINS
    gap = 0.00002 if stable else 0.0001
    notional = 50_000.0 if stable else 20_000.0
    min_qty = "5" if stable else "0.0001"
    return MarketSpec(
        "kraken", symbol, mid, base, quote, ids[0], ids[1], alt, ws, pdec, 8, min_qty, "0.5",
        price, notional, gap,
    )  # fmt: skip


def _v(
    exchange: str,
    symbol: str,
    mid: str,
    pdec: int,
    qdec: int,
    min_qty: str,
    min_cost: str,
    price: float,
) -> MarketSpec:
    """A market of a venue whose ids need no Kraken-style aliases (Bybit, OKX)."""
    base, quote = symbol.split("/")
    return MarketSpec(
        exchange, symbol, mid, base, quote, base, quote, mid, symbol, pdec, qdec, min_qty,
        min_cost, price, 25_000.0, 0.0001,
    )  # fmt: skip


def _c(symbol: str, price: float) -> MarketSpec:
    """A Coinbase Advanced Trade spot product (quote_increment 0.01, base_increment and
    base_min_size 0.00000001, quote_min_size 1, as BTC-USD)."""
    base, quote = symbol.split("/")
    pid = f"{base}-{quote}"
    return MarketSpec(
        "coinbase", symbol, pid, base, quote, base, quote, pid, pid, 2, 8, "0.00000001", "1",
        price, 25_000.0, 0.0001,
    )  # fmt: skip


SIMULATED_MARKETS: Final[tuple[MarketSpec, ...]] = (
    _b("BTC/USDT", 2, 5, "0.00001", 97_000.0),
    _b("ETH/USDT", 2, 4, "0.0001", 3_400.0),
    _b("SOL/USDT", 2, 3, "0.001", 190.0),
    _k("BTC/USD", "XXBTZUSD", "XBTUSD", "XBT/USD", ("XXBT", "ZUSD"), 1, 97_000.0),
    _k("ETH/USD", "XETHZUSD", "ETHUSD", "ETH/USD", ("XETH", "ZUSD"), 2, 3_400.0),
    _k("SOL/USD", "SOLUSD", "SOLUSD", "SOL/USD", ("SOL", "ZUSD"), 2, 190.0),
    _k("USDT/USD", "USDTZUSD", "USDTUSD", "USDT/USD", ("USDT", "ZUSD"), 5, 1.0002),
    # A second stablecoin quote: ETH/USDC on Binance priced through Kraken's USDC/USD book.
    _b("ETH/USDC", 2, 4, "0.0001", 3_400.0),
    _k("USDC/USD", "USDCUSD", "USDCUSD", "USDC/USD", ("USDC", "ZUSD"), 5, 0.9999),
    # Bybit v5 spot (tickSize, basePrecision, minOrderQty, minOrderAmt) and OKX v5 spot
    # (tickSz, lotSz, minSz; OKX has no minimum cost: "0").
    _v("bybit", "BTC/USDT", "BTCUSDT", 2, 6, "0.000048", "1", 97_000.0),
    _v("bybit", "ETH/USDT", "ETHUSDT", 2, 5, "0.00062", "1", 3_400.0),
    _v("bybit", "SOL/USDT", "SOLUSDT", 2, 3, "0.011", "1", 190.0),
    _v("okx", "BTC/USDT", "BTC-USDT", 1, 8, "0.00001", "0", 97_000.0),
    _v("okx", "ETH/USDT", "ETH-USDT", 2, 6, "0.0001", "0", 3_400.0),
    _v("okx", "SOL/USDT", "SOL-USDT", 2, 6, "0.001", "0", 190.0),
    # Coinbase: USD books only; its -USDC products are aliases of them (coinbase.py).
    _c("BTC/USD", 97_000.0),
    _c("ETH/USD", 3_400.0),
    _c("SOL/USD", 190.0),
)
"""Every market the simulator serves; USDT/USD and USDC/USD on Kraken are the conversion
books (appended markets keep the generated books of the earlier ones for a seed)."""

USDT_USD_MID: Final = 1.0002

_generated: list[MarketSpec] = []


def generated_markets(symbols: int, venues: int = 2) -> list[MarketSpec]:
    """Markets for canonical symbols 4..``symbols``: ``G0004/USDT`` on Binance and
    ``G0004/USD`` on Kraken, ..., for scale benchmarks (the three real assets come first).
    ``venues=5`` also lists them on Bybit and OKX (``/USDT``) and Coinbase (``/USD``)."""
    out: list[MarketSpec] = []
    for i in range(4, symbols + 1):
        base = f"G{i:04d}"
        price = 10.0 * (1 + (i * 37) % 97)  # 10..970 USD, deterministic
        out.append(_b(f"{base}/USDT", 3, 3, "0.001", price))
        pair = f"{base}USD"
        out.append(_k(f"{base}/USD", pair, pair, f"{base}/USD", (base, "ZUSD"), 3, price))
        if venues >= 5:
            out.append(_v("bybit", f"{base}/USDT", f"{base}USDT", 3, 3, "0.001", "1", price))
            out.append(_v("okx", f"{base}/USDT", f"{base}-USDT", 3, 3, "0.001", "0", price))
            out.append(_c(f"{base}/USD", price))
    return out


def set_symbols(symbols: int, venues: int = 2) -> None:
    """Serve ``max(symbols, 3)`` canonical symbols (default 3: only SIMULATED_MARKETS), the
    generated ones on Binance and Kraken, or on all five venues (``venues=5``)."""
    _generated[:] = generated_markets(symbols, venues)


def all_markets() -> tuple[MarketSpec, ...]:
    return SIMULATED_MARKETS + tuple(_generated)


def markets_of(exchange: str) -> tuple[MarketSpec, ...]:
    return tuple(m for m in all_markets() if m.exchange == exchange)


def find_market(exchange: str, symbol: str) -> MarketSpec | None:
    """Look a market up by unified symbol, exchange id or (Kraken) altname, case-insensitive."""
    wanted = symbol.upper()
    for m in markets_of(exchange):
        if wanted in (m.symbol, m.market_id, m.altname, m.wsname):
            return m
    return None


def ws_url(base_url: str) -> str:
    """http://host:port -> ws://host:port (https -> wss)."""
    if base_url.startswith("https://"):
        return "wss://" + base_url[len("https://") :]
    if base_url.startswith("http://"):
        return "ws://" + base_url[len("http://") :]
    return base_url


def _dead(path: str, scheme: str = "http") -> str:
    return f"{scheme}://{DEAD_HOST}/{path}"


_BINANCE_REST_KEYS: Final = (
    "sapi", "sapiV2", "sapiV3", "sapiV4", "dapiPublic", "dapiPrivate", "eapiPublic",
    "eapiPrivate", "dapiPrivateV2", "dapiData", "fapiPublic", "fapiPublicV2", "fapiPublicV3",
    "fapiPrivate", "fapiPrivateV2", "fapiPrivateV3", "fapiData", "private", "v1", "papi",
    "papiV2",
)  # fmt: skip
_BINANCE_WS_KEYS: Final = (
    "margin", "linear", "inverse", "stock", "option", "optionMarket", "optionPrivate", "papi",
)  # fmt: skip
_KRAKEN_WS_KEYS: Final = ("public", "private", "privateV2", "beta", "beta-private")


def ccxt_config(exchange: str, base_url: str) -> dict[str, Any]:
    """Constructor config that redirects ccxt.pro `exchange` to the simulator at `base_url`.

    `base_url` is the simulator's ``http://127.0.0.1:PORT`` (its listening line's base_url).
    """
    base = base_url.rstrip("/")
    ws = ws_url(base)
    if exchange == "binance":
        api: dict[str, Any] = {k: _dead(f"binance/{k}") for k in _BINANCE_REST_KEYS}
        api["public"] = f"{base}/binance/api/v3"
        ws_urls: dict[str, Any] = {k: _dead(f"binance/ws/{k}", "ws") for k in _BINANCE_WS_KEYS}
        ws_urls["spot"] = f"{ws}/binance/stream/ws"
        ws_urls["ws-api"] = {
            k: _dead(f"binance/ws-api/{k}", "ws") for k in ("spot", "linear", "inverse")
        }
        api["ws"] = ws_urls
        return {
            "urls": {"api": api},
            "options": {
                "fetchMarkets": {"types": ["spot"]},
                "fetchCurrencies": False,
                "fetchMargins": False,
                "watchOrderBookLimit": 100,
                "adjustForTimeDifference": False,
            },
        }
    if exchange == "kraken":
        kws: dict[str, Any] = {k: _dead(f"kraken/ws/{k}", "ws") for k in _KRAKEN_WS_KEYS}
        kws["publicV2"] = f"{ws}/kraken/v2"
        return {
            "urls": {
                "api": {
                    "public": f"{base}/kraken",
                    "private": _dead("kraken/private"),
                    "zendesk": _dead("kraken/zendesk"),
                    "ws": kws,
                }
            },
            "options": {"adjustForTimeDifference": False},
        }
    if exchange == "bybit":
        # REST: ccxt joins urls.api[<api>] + "/" + path ("v5/market/instruments-info"); the
        # spot WS URL must contain "spot" (ccxt derives the market type from it).
        api = {k: _dead(f"bybit/{k}") for k in ("spot", "futures", "v2", "private")}
        api["public"] = f"{base}/bybit"
        api["ws"] = {
            "public": {
                "spot": f"{ws}/bybit/v5/public/spot",
                **{k: _dead(f"bybit/v5/public/{k}", "ws") for k in ("inverse", "option", "linear")},
            },
            "private": {
                "spot": {
                    "unified": _dead("bybit/v5/private", "ws"),
                    "nonUnified": _dead("bybit/spot/private/v3", "ws"),
                },
                "contract": _dead("bybit/v5/private", "ws"),
                "usdc": _dead("bybit/trade/option/usdc/private/v1", "ws"),
                "trade": _dead("bybit/v5/trade", "ws"),
            },
        }
        return {"urls": {"api": api}, "options": {"fetchMarkets": {"types": ["spot"]}}}
    if exchange == "okx":
        # REST: urls.api.rest + "/api/v5/" + path; WS: urls.api.ws + "/public" (books).
        return {
            "urls": {"api": {"rest": f"{base}/okx", "ws": f"{ws}/okx/ws/v5"}},
            "options": {"fetchMarkets": {"types": ["spot"]}},
        }
    if exchange == "coinbase":
        # ccxt has two URL keys (rest, ws). has.fetchCurrencies off skips /v2/currencies,
        # /v2/currencies/crypto and /v2/exchange-rates; fetch_markets (options.fetchMarkets
        # is a method name here, not a types list) then asks market/products for SPOT and,
        # unconditionally, FUTURE (served empty).
        return {
            "urls": {"api": {"rest": f"{base}/coinbase", "ws": f"{ws}/coinbase/ws"}},
            "has": {"fetchCurrencies": False},
            "options": {"adjustForTimeDifference": False},
        }
    raise ValueError(f"unknown exchange {exchange!r}; expected one of {EXCHANGES}")

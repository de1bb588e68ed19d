"""Typed configuration: YAML file + ``CRYPTOARB_<SECTION>_<KEY>`` environment overrides.

Field-level checks live on the pydantic models; cross-field checks (unknown exchange in a
symbol mapping, reference values not configured, missing quote conversion...) run on the raw
mapping as well, so one run reports every problem at once with its field path. Every section
and key is described in docs/configuration.md.
"""

from __future__ import annotations

import copy
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

CREDENTIAL_KEYS = frozenset(
    {"apikey", "secret", "password", "uid", "privatekey", "walletaddress", "token", "twofa"}
)
ENV_PREFIX = "CRYPTOARB_"
# Venues whose USDC markets are their USD books under another name (ccxt resolves .../USDC
# from -USD events): refused, since the book's prices are USD, not USDC.
MERGED_USDC_BOOKS = frozenset({"coinbase"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MarketOverride(_Strict):
    taker_fee: float | None = Field(default=None, ge=0, lt=1)
    stale_after: float | None = Field(default=None, gt=0)
    # Replay of files without a sidecar (e.g. Tardis downloads): the market's minimum order
    # cost (quote) and amount (base), which ccxt's listing gives in a live run.
    min_cost: float | None = Field(default=None, ge=0)
    min_amount: float | None = Field(default=None, ge=0)
    # The market's symbol in Tardis files when the automatic mapping does not fit.
    tardis_symbol: str | None = Field(default=None, min_length=1)


class ExchangeConfig(_Strict):
    taker_fee: float | None = Field(default=None, ge=0, lt=1)
    stale_after: float | None = Field(default=None, gt=0)
    markets: dict[str, MarketOverride] = Field(default_factory=dict)
    # Withdrawal fee per base currency in base units, for execution model `transfer`.
    withdrawal_fees: dict[str, float] = Field(default_factory=dict)
    # The limit passed to ccxt's watch_order_book (default: from the venue's watch profile,
    # the smallest supported value >= feeds.depth); checked against the profile.
    depth: int | None = Field(default=None, ge=1)
    # The exchange's id in Tardis files when the automatic mapping does not fit.
    tardis_exchange: str | None = Field(default=None, min_length=1)
    ccxt: dict[str, Any] = Field(default_factory=dict)

    @field_validator("ccxt")
    @classmethod
    def _no_credentials(cls, value: dict[str, Any]) -> dict[str, Any]:
        found = sorted(k for k in value if k.lower() in CREDENTIAL_KEYS)
        if found:
            raise ValueError(
                f"credential keys are not accepted ({', '.join(found)}): "
                "the exporter reads public market data only"
            )
        return value

    @field_validator("withdrawal_fees")
    @classmethod
    def _fees_non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        bad = sorted(k for k, v in value.items() if not v >= 0)
        if bad:
            raise ValueError(f"withdrawal fees must be >= 0 ({', '.join(bad)})")
        return value


class BookRef(_Strict):
    exchange: str
    market: str


class QuoteConversion(_Strict):
    rate: float | None = Field(default=None, gt=0)
    book: BookRef | None = None

    @model_validator(mode="after")
    def _one_source(self) -> QuoteConversion:
        if (self.rate is None) == (self.book is None):
            raise ValueError("give exactly one of `rate` or `book`")
        return self


class BackoffConfig(_Strict):
    """Reconnect backoff of a feed, seconds (capped exponential with full jitter)."""

    base: float = Field(default=0.5, gt=0)
    cap: float = Field(default=30.0, gt=0)


class SharedRateLimitConfig(_Strict):
    """One REST snapshot budget per exchange shared by all shards (a token bucket in Redis);
    with Redis away each shard uses 1/shard.count of it."""

    snapshots_per_minute: float = Field(gt=0, le=6000)
    burst: int = Field(default=4, ge=1, le=1000)


class FeedsConfig(_Strict):
    depth: int = Field(default=100, ge=1, le=5000)
    stale_after: float = Field(default=10.0, gt=0)
    # Silence on a connection that still answers keepalives before the feed reconnects and
    # re-snapshots (a quiet market reads stale meanwhile; ccxt closes a dead socket itself).
    resubscribe_after: float = Field(default=300.0, gt=0)
    frozen_after: float = Field(default=30.0, gt=0)
    max_book_skew: float = Field(default=2.0, gt=0)
    backoff: BackoffConfig = Field(default_factory=BackoffConfig)
    # Prices/quantities beyond these bounds are rejected as `bad_value`.
    max_price: float = Field(default=1e9, gt=0)
    max_quantity: float = Field(default=1e12, gt=0)
    # Per-market budget of (re)subscriptions (each costs a depth snapshot): a token bucket.
    snapshot_burst: int = Field(default=4, ge=1, le=100)
    snapshots_per_minute: float = Field(default=8.0, gt=0, le=600)
    # Longest delay before a conversion-rate move reaches a symbol with no book update.
    rate_refresh_interval: float = Field(default=0.25, gt=0, le=60)
    # Per-exchange budget shared by every shard (Redis token bucket); None: per market only.
    shared_rate_limit: SharedRateLimitConfig | None = None

    @property
    def sweep_interval(self) -> float:
        return self.stale_after / 4


class WindowsConfig(_Strict):
    open_threshold: float = 0.0
    close_threshold: float = -0.0002
    min_duration_seconds: float = Field(default=1.0, ge=0)
    log_maxlen: int = Field(default=1_000_000, ge=1000)


class ExecutionConfig(_Strict):
    model: Literal["inventory", "transfer"] = "inventory"
    rebalance_cost_bps: float = Field(default=0.0, ge=0)


class RoutesConfig(_Strict):
    """Which routes (buy on A, sell on B) are evaluated. With E exchanges a symbol has
    E(E-1) routes, each exported per notional: ``allow`` lists the unordered exchange pairs to
    evaluate (both directions; empty: every pair), ``max_routes`` caps the ordered routes over
    all symbols, so a growing config fails ``check-config`` instead of the series budget."""

    allow: list[tuple[str, str]] = Field(default_factory=list)
    max_routes: int = Field(default=2000, ge=1)


class Reference(_Strict):
    notional: float | None = None
    band: float | None = None
    pair: tuple[str, str] | None = None


class SentinelConfig(_Strict):
    """``redis.mode: sentinel``: the monitored master's name and the sentinels (HOST:PORT)."""

    master_name: str | None = None
    addresses: list[str] = Field(default_factory=list)


class RedisConfig(_Strict):
    """``url: null`` disables Redis. ``mode``: standalone (url), cluster (url = any seed node)
    or sentinel (``sentinel.*``; the url only gives password and db). ``wait_timeout``: seconds
    a window-log batch waits for one replica (``WAIT 1``) in cluster and sentinel modes."""

    url: str | None = "redis://127.0.0.1:6379/0"
    mode: Literal["standalone", "cluster", "sentinel"] = "standalone"
    sentinel: SentinelConfig = Field(default_factory=SentinelConfig)
    wait_timeout: float = Field(default=1.0, gt=0, le=60)
    flush_interval: float = Field(default=0.25, gt=0, le=10)
    queue_max: int = Field(default=100_000, ge=10)
    socket_timeout: float = Field(default=2.0, gt=0)


class WebConfig(_Strict):
    listen_address: str = "127.0.0.1:9877"

    @field_validator("listen_address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:9877")
        return value

    @property
    def host(self) -> str:
        return self.listen_address.rpartition(":")[0].strip("[]") or "0.0.0.0"

    @property
    def port(self) -> int:
        return int(self.listen_address.rpartition(":")[2])


class HistoryConfig(_Strict):
    """Market history: one row per symbol every ``interval`` seconds (the input of trends,
    insights and correlation), kept in Redis streams capped at ``maxlen`` entries."""

    interval: float = Field(default=1.0, gt=0)
    maxlen: int = Field(default=86_400, ge=60)


class CorrelationConfig(_Strict):
    """Spread correlation between the first ``symbols`` symbols over ``window_seconds`` of
    history, recomputed every ``interval`` seconds."""

    window_seconds: float = Field(default=300.0, gt=0)
    symbols: int = Field(default=20, ge=2)
    interval: float = Field(default=10.0, gt=0)


class InsightsConfig(_Strict):
    """Insights: execution-risk scores (a ``weights``-weighted sum of factors), buying
    pressure and the latency audit. ``latency_budget`` is the p99 feed latency, seconds, that
    both compare against (latency factor = p99 / budget; audit level high above it)."""

    latency_budget: float = Field(default=0.25, gt=0)
    weights: dict[str, float] = Field(
        default_factory=lambda: {"fill": 0.4, "latency": 0.2, "volatility": 0.2, "age": 0.2}
    )
    # Window of the ROI volatility factor and of the p50/p99 latency audit, seconds.
    volatility_seconds: float = Field(default=60.0, gt=0)
    latency_seconds: float = Field(default=60.0, gt=0)
    roi_epsilon: float = Field(default=0.0001, gt=0)

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        known = {"fill", "latency", "volatility", "age"}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown factor(s) {', '.join(unknown)}; known: {sorted(known)}")
        if any(not 0 <= v < float("inf") for v in value.values()):
            raise ValueError("weights must be finite and >= 0")
        return value


class WebhookConfig(_Strict):
    token_file: str | None = None
    max_body_bytes: int = Field(default=1 << 20, ge=1024)


class RecordConfig(_Strict):
    """Bounds of ``record`` / ``run --record``: the oldest files go first when the output
    passes ``max_bytes`` or ``retention_days``."""

    max_bytes: int = Field(default=10 * 1024**3, ge=1024 * 1024)
    retention_days: float = Field(default=7.0, gt=0)


class ReplayConfig(_Strict):
    """``replay``: the key prefix of what it writes to Redis (only with ``--redis.url``)."""

    key_prefix: str = Field(default="replay:", min_length=1)


class ShardConfig(_Strict):
    """This process's shard: ``index`` in ``0..count-1`` (``auto`` in the file or the
    environment: the ordinal suffix of the hostname, ``arb-exporter-2`` -> 2, resolved by
    :func:`parse`)."""

    index: int = Field(default=0, ge=0)
    count: int = Field(default=1, ge=1)


_ORDINAL = re.compile(r"-(\d+)$")


def hostname_ordinal(hostname: str) -> int | None:
    """The ordinal suffix of a StatefulSet pod name (``arb-exporter-2`` -> 2), else None."""
    match = _ORDINAL.search(hostname.strip())
    return int(match.group(1)) if match else None


def _resolve_shard_index(data: dict[str, Any], environ: Mapping[str, str]) -> list[Problem]:
    """``shard.index: auto`` -> the hostname's ordinal ($HOSTNAME, else gethostname())."""
    shard = data.get("shard")
    if not isinstance(shard, dict) or str(shard.get("index")).lower() != "auto":
        return []
    hostname = environ.get("HOSTNAME") or socket.gethostname()
    ordinal = hostname_ordinal(hostname)
    if ordinal is None:
        return [
            Problem(
                "shard.index",
                f"`auto` needs a hostname ending in -<ordinal> (e.g. arb-exporter-2, a "
                f"StatefulSet pod), got {hostname!r}; set shard.index to a number instead",
            )
        ]
    shard["index"] = ordinal
    return []


class Config(_Strict):
    exchanges: dict[str, ExchangeConfig]
    symbols: dict[str, dict[str, str]]
    notionals: list[float]
    quote_conversion: dict[str, QuoteConversion] = Field(default_factory=dict)
    bands: list[float] = Field(default_factory=lambda: [0.001, 0.005, 0.01])
    reference: Reference = Field(default_factory=Reference)
    feeds: FeedsConfig = Field(default_factory=FeedsConfig)
    windows: WindowsConfig = Field(default_factory=WindowsConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    routes: RoutesConfig = Field(default_factory=RoutesConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    history: HistoryConfig = Field(default_factory=HistoryConfig)
    correlation: CorrelationConfig = Field(default_factory=CorrelationConfig)
    trend_windows: list[float] = Field(default_factory=lambda: [60.0, 300.0])
    trend_epsilon: float = Field(default=0.0001, ge=0)
    insights: InsightsConfig = Field(default_factory=InsightsConfig)
    webhook: WebhookConfig = Field(default_factory=WebhookConfig)
    shard: ShardConfig = Field(default_factory=ShardConfig)
    record: RecordConfig = Field(default_factory=RecordConfig)
    replay: ReplayConfig = Field(default_factory=ReplayConfig)

    @field_validator("notionals")
    @classmethod
    def _notionals(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("at least one notional is required")
        if any(not 0 < v < float("inf") for v in value):
            raise ValueError("every notional must be > 0")
        if len(set(value)) != len(value):
            raise ValueError("notionals must be unique")
        return sorted(value)

    @field_validator("bands")
    @classmethod
    def _bands(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("at least one band is required")
        if any(not 0 < v < 1 for v in value):
            raise ValueError("every band must lie in (0, 1)")
        if len(set(value)) != len(value):
            raise ValueError("bands must be unique")
        return sorted(value)

    @field_validator("trend_windows")
    @classmethod
    def _trend_windows(cls, value: list[float]) -> list[float]:
        if any(not 0 < v < float("inf") for v in value) or len(set(value)) != len(value):
            raise ValueError("trend windows must be unique, finite and > 0 (seconds)")
        return sorted(value)

    # -- derived, after validation ------------------------------------------------------
    @property
    def reference_notional(self) -> float:
        return self.reference.notional if self.reference.notional is not None else self.notionals[0]

    @property
    def reference_band(self) -> float:
        if self.reference.band is not None:
            return self.reference.band
        return self.bands[len(self.bands) // 2]

    @property
    def reference_pair(self) -> tuple[str, str]:
        if self.reference.pair is not None:
            return self.reference.pair
        names = list(self.exchanges)
        return (names[0], names[1] if len(names) > 1 else names[0])

    def taker_fee_override(self, exchange: str, market: str) -> float | None:
        ex = self.exchanges[exchange]
        override = ex.markets.get(market)
        if override is not None and override.taker_fee is not None:
            return override.taker_fee
        return ex.taker_fee

    def stale_after(self, exchange: str, market: str) -> float:
        ex = self.exchanges[exchange]
        override = ex.markets.get(market)
        if override is not None and override.stale_after is not None:
            return override.stale_after
        return ex.stale_after if ex.stale_after is not None else self.feeds.stale_after

    def routes_for(self, symbol: str) -> list[tuple[str, str]]:
        """The symbol's evaluated routes (buy exchange, sell exchange), in config order."""
        return routes_of(list(self.symbols[symbol]), self.routes.allow)

    def canonical_quote(self, symbol: str) -> str:
        return symbol.split("/")[1]

    def conversion_books(self) -> list[BookRef]:
        return [c.book for c in self.quote_conversion.values() if c.book is not None]


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: {self.message}"


class ConfigError(Exception):
    """Raised with every problem found; ``str()`` is the readable multi-line report."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"invalid configuration ({source}): {len(problems)} problem(s)"]
        lines += [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


def _pydantic_problems(err: ValidationError) -> list[Problem]:
    out = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        out.append(Problem(path, msg))
    return out


def _is_num(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _exchange_names(data: Mapping[str, Any]) -> list[str]:
    exchanges = data.get("exchanges")
    return list(exchanges) if isinstance(exchanges, Mapping) else []


def _check_exchanges(ex_names: list[str]) -> list[Problem]:
    from exporter.feeds.registry import watchable_exchanges

    known = watchable_exchanges()
    return [
        Problem(f"exchanges.{name}", "not a ccxt.pro exchange with watchOrderBook")
        for name in ex_names
        if name not in known
    ]


def _check_exchange_depths(exchanges: Any) -> list[Problem]:
    """``exchanges.<id>.depth`` must be a depth the venue serves on public data (the watch
    profiles in exporter/feeds/profiles.py name the allowed values)."""
    from exporter.feeds.profiles import depth_problem

    if not isinstance(exchanges, Mapping):
        return []
    problems: list[Problem] = []
    for name, ex in exchanges.items():
        depth = ex.get("depth") if isinstance(ex, Mapping) else None
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            continue  # pydantic reports the type
        message = depth_problem(str(name), depth)
        if message is not None:
            problems.append(Problem(f"exchanges.{name}.depth", message))
    return problems


def _check_symbol_markets(
    sym: str,
    mapping: Mapping[Any, Any],
    ex_names: list[str],
    seen: dict[tuple[str, str], str],
    quotes_needed: dict[str, str],
) -> list[Problem]:
    """One ``symbols.<sym>`` mapping of exchange -> market. Records each market in ``seen``
    and each non-canonical market quote in ``quotes_needed`` (quote -> first path)."""
    problems: list[Problem] = []
    canon_quote = sym.split("/")[1]
    for ex, market in mapping.items():
        path = f"symbols.{sym}.{ex}"
        if ex_names and ex not in ex_names:
            problems.append(Problem(path, f"exchange '{ex}' is not under `exchanges`"))
        if not isinstance(market, str) or market.count("/") != 1:
            problems.append(Problem(path, "market must look like BASE/QUOTE"))
            continue
        if (ex, market) in seen:
            problems.append(
                Problem(path, f"market {ex}:{market} is already mapped by {seen[ex, market]}")
            )
        seen[ex, market] = sym
        q = market.split("/")[1]
        if ex in MERGED_USDC_BOOKS and q == "USDC":
            problems.append(
                Problem(
                    path,
                    f"{ex} merged its USDC and USD books ({market} is the -USD book with a "
                    "USDC label): map the USD market instead, so USDC is never priced as USD",
                )
            )
            continue
        if q != canon_quote:
            quotes_needed.setdefault(q, path)
    return problems


def _check_symbols(symbols: Any, ex_names: list[str]) -> tuple[list[Problem], dict[str, str]]:
    """Problems of ``symbols``, and the market quotes that need a conversion (quote -> the
    first path that needs it)."""
    problems: list[Problem] = []
    quotes_needed: dict[str, str] = {}
    if not isinstance(symbols, Mapping):
        return problems, quotes_needed
    if not symbols:
        problems.append(Problem("symbols", "at least one symbol is required"))
    seen: dict[tuple[str, str], str] = {}
    for sym, mapping in symbols.items():
        if not isinstance(sym, str) or sym.count("/") != 1 or not all(sym.split("/")):
            problems.append(Problem(f"symbols.{sym}", "expected BASE/QUOTE, e.g. BTC/USD"))
            continue
        if not isinstance(mapping, Mapping) or not mapping:
            continue  # pydantic reports the type
        problems += _check_symbol_markets(sym, mapping, ex_names, seen, quotes_needed)
    return problems, quotes_needed


def _check_quote_conversion(
    conversions: Any, quotes_needed: Mapping[str, str], ex_names: list[str]
) -> list[Problem]:
    problems: list[Problem] = []
    if not isinstance(conversions, Mapping):
        return problems
    for q, path in quotes_needed.items():
        if q not in conversions:
            problems.append(
                Problem(
                    path,
                    f"quote {q} differs from the canonical quote and "
                    f"`quote_conversion.{q}` is missing (USDT is never assumed equal to USD)",
                )
            )
    for q, conv in conversions.items():
        if not isinstance(conv, Mapping) or not isinstance(conv.get("book"), Mapping):
            continue
        ex = conv["book"].get("exchange")
        if ex_names and ex not in ex_names:
            problems.append(
                Problem(f"quote_conversion.{q}.book.exchange", f"unknown exchange '{ex}'")
            )
        market = conv["book"].get("market")
        if isinstance(market, str) and q not in market.split("/"):
            problems.append(
                Problem(f"quote_conversion.{q}.book.market", f"market must contain {q}")
            )
    return problems


def _check_reference(data: Mapping[str, Any], ex_names: list[str]) -> list[Problem]:
    """``reference`` values must be among the configured ones. A single-exchange config may
    leave it out (it gets book metrics only)."""
    problems: list[Problem] = []
    ref = data.get("reference")
    if not isinstance(ref, Mapping):
        return problems
    notionals = data.get("notionals")
    n = ref.get("notional")
    if n is not None and isinstance(notionals, list) and _is_num(n) and n not in notionals:
        problems.append(Problem("reference.notional", f"{n} is not among `notionals`"))
    bands = data.get("bands", [0.001, 0.005, 0.01])
    b = ref.get("band")
    if b is not None and isinstance(bands, list) and _is_num(b) and b not in bands:
        problems.append(Problem("reference.band", f"{b} is not among `bands`"))
    pair = ref.get("pair")
    if isinstance(pair, list | tuple):
        if len(pair) == 2 and pair[0] == pair[1]:
            problems.append(Problem("reference.pair", "needs two different exchanges"))
        for i, ex in enumerate(pair):
            if ex_names and ex not in ex_names:
                problems.append(Problem(f"reference.pair.{i}", f"unknown exchange '{ex}'"))
    return problems


def _check_windows(windows: Any) -> list[Problem]:
    if not isinstance(windows, Mapping):
        return []
    o, c = windows.get("open_threshold", 0.0), windows.get("close_threshold", -0.0002)
    if _is_num(o) and _is_num(c) and c > o:
        return [Problem("windows.close_threshold", "must be <= open_threshold (hysteresis)")]
    return []


def _check_backoff(feeds: Any) -> list[Problem]:
    if not isinstance(feeds, Mapping) or not isinstance(feeds.get("backoff"), Mapping):
        return []
    bo = feeds["backoff"]
    if _is_num(bo.get("base")) and _is_num(bo.get("cap")) and bo["base"] > bo["cap"]:
        return [Problem("feeds.backoff.cap", "must be >= backoff.base")]
    return []


def routes_of(exchanges: list[str], allow: Any) -> list[tuple[str, str]]:
    """Ordered routes between ``exchanges`` whose unordered pair is allowed (all when
    ``allow`` is empty)."""
    allowed = {frozenset(p) for p in allow or () if isinstance(p, list | tuple)}
    return [
        (a, b)
        for a in exchanges
        for b in exchanges
        if a != b and (not allowed or frozenset((a, b)) in allowed)
    ]


def _check_routes(data: Mapping[str, Any], ex_names: list[str]) -> list[Problem]:
    routes = data.get("routes")
    if not isinstance(routes, Mapping):
        routes = {}
    problems: list[Problem] = []
    allow = routes.get("allow") or []
    for i, pair in enumerate(allow if isinstance(allow, list) else []):
        if not isinstance(pair, list | tuple) or len(pair) != 2 or pair[0] == pair[1]:
            problems.append(Problem(f"routes.allow.{i}", "must be two different exchanges"))
            continue
        problems += [
            Problem(f"routes.allow.{i}", f"unknown exchange '{ex}'")
            for ex in pair
            if ex_names and ex not in ex_names
        ]
    symbols = data.get("symbols")
    cap = routes.get("max_routes", 2000)
    if isinstance(symbols, Mapping) and _is_num(cap):
        total = sum(
            len(routes_of(list(m), allow)) for m in symbols.values() if isinstance(m, Mapping)
        )
        if total > cap:
            problems.append(
                Problem(
                    "routes.max_routes",
                    f"{total} routes configured (E(E-1) per symbol) exceed {cap}; list the "
                    "exchange pairs to evaluate in routes.allow, or raise the cap",
                )
            )
    return problems


def _check_shard(shard: Any) -> list[Problem]:
    if not isinstance(shard, Mapping):
        return []
    i, c = shard.get("index", 0), shard.get("count", 1)
    if _is_num(i) and _is_num(c) and i >= c:
        return [Problem("shard.index", "must be < shard.count")]
    return []


def _check_redis(redis: Any) -> list[Problem]:
    """``redis.mode: sentinel`` needs ``sentinel.master_name`` and HOST:PORT addresses."""
    if not isinstance(redis, Mapping) or redis.get("mode") != "sentinel":
        return []
    sentinel = redis.get("sentinel")
    if sentinel is None:
        sentinel = {}
    if not isinstance(sentinel, Mapping):
        return []  # pydantic reports the type
    problems: list[Problem] = []
    if not sentinel.get("master_name"):
        problems.append(
            Problem("redis.sentinel.master_name", "required when redis.mode is sentinel")
        )
    addresses = sentinel.get("addresses")
    if not addresses:
        problems.append(
            Problem(
                "redis.sentinel.addresses",
                'required when redis.mode is sentinel: a list of "host:port" sentinels',
            )
        )
    elif isinstance(addresses, list):
        for i, addr in enumerate(addresses):
            host, sep, port = str(addr).rpartition(":")
            if not (sep and host and port.isdigit() and 0 < int(port) <= 65535):
                problems.append(
                    Problem(f"redis.sentinel.addresses.{i}", f"expected HOST:PORT, got {addr!r}")
                )
    return problems


def _cross_check(data: Mapping[str, Any]) -> list[Problem]:
    """Checks that span sections; defensive on purpose: fields may be of the wrong type."""
    ex_names = _exchange_names(data)
    symbol_problems, quotes_needed = _check_symbols(data.get("symbols"), ex_names)
    return [
        *_check_exchanges(ex_names),
        *_check_exchange_depths(data.get("exchanges")),
        *symbol_problems,
        *_check_quote_conversion(data.get("quote_conversion") or {}, quotes_needed, ex_names),
        *_check_reference(data, ex_names),
        *_check_windows(data.get("windows")),
        *_check_backoff(data.get("feeds")),
        *_check_routes(data, ex_names),
        *_check_shard(data.get("shard")),
        *_check_redis(data.get("redis")),
    ]


def apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> list[Problem]:
    """Apply ``CRYPTOARB_<SECTION>_<KEY>=value`` overrides in place (value parsed as YAML)."""
    problems: list[Problem] = []
    sections = sorted(Config.model_fields, key=len, reverse=True)
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section = next((s for s in sections if rest.startswith(s + "_")), None)
        if section is None:
            problems.append(Problem(f"env {name}", "does not name a known SECTION_KEY"))
            continue
        key = rest[len(section) + 1 :]
        existing = data.get(section)
        if isinstance(existing, dict):
            # Keys such as quote currencies keep the file's spelling (USDT, not usdt).
            key = next((k for k in existing if str(k).lower() == key), key)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        target = data.setdefault(section, {})
        if not isinstance(target, dict):
            problems.append(Problem(f"env {name}", f"section `{section}` is not a mapping"))
            continue
        target[key] = value
    return problems


def parse(data: Any, source: str = "<config>", environ: Mapping[str, str] | None = None) -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [Problem("", "the top level must be a mapping")])
    data = copy.deepcopy(data)
    environ = os.environ if environ is None else environ
    problems = apply_env(data, environ)
    problems += _resolve_shard_index(data, environ)
    config: Config | None = None
    try:
        config = Config.model_validate(data)
    except ValidationError as err:
        problems += _pydantic_problems(err)
    problems += _cross_check(data)
    if problems or config is None:
        raise ConfigError(source, problems)
    return config


def read_yaml(path: Path) -> Any:
    """The parsed YAML document in ``path``; an unreadable or invalid file is a ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(str(path), [Problem("", f"cannot read file: {err.strerror}")]) from err
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(str(path), [Problem("", f"not valid YAML: {err}")]) from err


def load(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    p = Path(path)
    return parse(read_yaml(p), str(p), environ)

"""Redis state writer (docs/redis.md): conflating, bounded and batched.

Hot path: ``put_ticker``/``put_symbols``/``put_history``/``append_log`` are synchronous, O(1),
never await and never raise; they only touch in-memory buffers. ``run()`` flushes the buffers
on a timer with one ``EVALSHA`` of ``flush.lua`` per batch (one round trip, atomic on the
server). Reads go through :class:`~exporter.store.reader.StateReader` (``writer.reader``).

Delivery of stream entries (history rows and log entries) is exactly-once and in order while
the process lives: every entry gets a sequence number, buffers are only trimmed after the
server acknowledged a batch, and the Lua script keeps the last applied sequence per kind in a
per-writer hash ``writer:{id}``; a batch retried after an ambiguous failure (connection lost
after the server ran the script) skips what was already applied. ``dedupe_key`` entries are
checked and marked (``dedupe:{key}``, TTL 7 d) inside the same script.

Modes (``mode``): ``standalone`` (one client, one script call per batch), ``cluster``
(``RedisCluster``: each batch is split by hash slot, one script call per slot with only that
slot's keys; the guard hash and dedupe keys carry a hash tag of the slot they guard,
``writer:{<tag>}:<id>`` and ``dedupe:{<tag>}:<key>``) and ``sentinel`` (the master of
``sentinel_master`` found through the sentinels, re-resolved after a failover). In cluster and
sentinel modes a call that carries log entries is followed by ``WAIT 1 <wait_timeout>`` on the
same connection; the batch counts as written only when one replica confirmed it, otherwise it
is retried (the bookkeeping makes the retry safe).

Drop policy when ``queue_max`` pending entries are reached: tickers first (oldest key), then
history rows (oldest), then log entries (oldest; only when every pending entry is a log entry).
Symbol-set replacements are not counted (at most one is pending).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from itertools import islice
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import NoScriptError, RedisError

from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.store.codec import JSON_OPTS, flatten
from exporter.store.reader import LOG_STREAM, StateReader

log = logging.getLogger(__name__)

SYMBOLS_KEY = "symbols"
KINDS = ("ticker", "history", "log")
BATCH = 2000  # max tickers / history rows / log entries per script call
IDLE_PING = 5.0  # seconds without Redis contact before run() pings to refresh `up`

# The flush script: tickers, the symbol set, history rows and log entries in one call, with
# the exactly-once bookkeeping (KEYS/ARGV layout documented at its top).
_FLUSH_LUA = resources.files("exporter.store").joinpath("flush.lua").read_text(encoding="utf-8")


Mode = Literal["standalone", "cluster", "sentinel"]
ScriptCall = Callable[..., Awaitable[Any]]


class ReplicaWaitTimeout(RedisError):
    """``WAIT 1`` did not see a replica acknowledge a log batch within ``wait_timeout``."""


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"


@cache
def slot_tags() -> tuple[str, ...]:
    """For each cluster hash slot, the shortest base-36 string that hashes to it: the hash tag
    of the writer's internal keys placed in that slot (``writer:{<tag>}:<id>``)."""
    tags: list[str | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
    left = REDIS_CLUSTER_HASH_SLOTS
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    for i in itertools.count():
        n, out = i, ""
        while True:
            n, r = divmod(n, 36)
            out = digits[r] + out
            if not n:
                break
        slot = key_slot(out.encode())
        if tags[slot] is None:
            tags[slot] = out
            left -= 1
            if not left:
                break
    return tuple(t or "" for t in tags)


def parse_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass
class _Group:
    """The part of one batch that goes into one script call (one hash slot in cluster mode)."""

    guard: str
    tickers: list[tuple[str, str]] = field(default_factory=list)
    symbols: tuple[str, ...] | None = None
    history: list[tuple[int, str, list[str]]] = field(default_factory=list)
    log: list[tuple[int, str, list[str]]] = field(default_factory=list)


class StateWriter:
    def __init__(
        self,
        url: str | None,
        *,
        registry: CollectorRegistry,
        mode: Mode = "standalone",
        sentinel_master: str | None = None,
        sentinel_addresses: Sequence[str] = (),
        wait_timeout: float = 1.0,
        flush_interval: float = 0.25,
        queue_max: int = 100_000,
        ticker_ttl: float = 30.0,
        history_maxlen: int = 86_400,
        log_maxlen: int = 1_000_000,
        socket_timeout: float = 2.0,
        backoff_cap: float = 5.0,
        dedupe_ttl: float = 7 * 86_400.0,
        scan_max: int = 100_000,
        clock: Clock = SYSTEM_CLOCK,
        key_prefix: str = "",
    ) -> None:
        self._clock = clock
        # Prepended to every key written (``replay`` writes under ``replay.key_prefix``, so
        # it never touches a live exporter's keys).
        self._prefix = key_prefix
        self._log_key = key_prefix + LOG_STREAM
        self._symbols_key = key_prefix + SYMBOLS_KEY
        self._url = url
        self._flush_interval = flush_interval
        self._queue_max = max(1, queue_max)
        self._backoff_cap = max(backoff_cap, flush_interval)
        self._scan_max = scan_max
        self._args_head = [
            str(max(1, int(ticker_ttl * 1000))),
            str(history_maxlen),
            str(log_maxlen),
            str(max(1, int(dedupe_ttl))),
            str(7 * 86_400),
        ]
        self._mode: Mode = mode
        self._wait_ms = max(1, int(wait_timeout * 1000))
        self._id = uuid.uuid4().hex
        self._guard_key = f"{key_prefix}writer:{self._id}"
        self._seq = itertools.count(1)
        # Pending buffers. Tickers: key -> (payload,) (a fresh tuple per put: identity = version).
        self._tickers: dict[str, tuple[Mapping[str, Any]]] = {}
        self._symbols: tuple[str, ...] | None = None
        self._history: deque[tuple[int, str, list[str]]] = deque()
        self._log: deque[tuple[int, str, list[str]]] = deque()
        self._lock = asyncio.Lock()
        self._up = False
        self._closed = False
        self._down_since: float | None = None  # monotonic start of the current outage
        self._last_contact = 0.0
        self._client: Redis | RedisCluster | None = None
        self._name = _safe_url(url) if url else "disabled"
        if url is not None:
            try:
                self._client = self._connect(
                    url, socket_timeout, sentinel_master, sentinel_addresses
                )
            except Exception:  # bad URL: behave as disabled, say so once
                log.exception("redis: invalid %s config %r, state writes disabled", mode, url)
        # Standalone: the registered Script (EVALSHA, SCRIPT LOAD on NOSCRIPT). Cluster and
        # sentinel modes pipeline EVALSHA (+ WAIT) themselves; _script is then a marker.
        self._script: ScriptCall | None = None
        if isinstance(self._client, Redis) and mode == "standalone":
            self._script = self._client.register_script(_FLUSH_LUA)
        elif self._client is not None:
            self._script = self._pipelined
        self._sha = hashlib.sha1(_FLUSH_LUA.encode()).hexdigest()

        self._m_up = Gauge(
            "cryptoarb_redis_up", "1 when the last Redis operation succeeded", registry=registry
        )
        pending = Gauge(
            "cryptoarb_redis_pending_writes",
            "Writes buffered for Redis",
            ["kind"],
            registry=registry,
        )
        pending.labels(kind="ticker").set_function(lambda: len(self._tickers))
        pending.labels(kind="history").set_function(lambda: len(self._history))
        pending.labels(kind="log").set_function(lambda: len(self._log))
        dropped = Counter(
            "cryptoarb_redis_dropped_writes",
            "Writes dropped (buffer full)",
            ["kind"],
            registry=registry,
        )
        self._drop_ticker = dropped.labels(kind="ticker")
        self._drop_history = dropped.labels(kind="history")
        self._drop_log = dropped.labels(kind="log")
        self._m_errors = Counter(
            "cryptoarb_redis_write_errors", "Failed Redis flushes", registry=registry
        )
        self._m_duration = Histogram(
            "cryptoarb_redis_write_duration_seconds",
            "Duration of one Redis flush",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry,
        )

    def _connect(
        self,
        url: str,
        socket_timeout: float,
        sentinel_master: str | None,
        sentinel_addresses: Sequence[str],
    ) -> Redis | RedisCluster:
        if self._mode != "standalone":  # a reply may wait up to wait_timeout for WAIT
            socket_timeout += self._wait_ms / 1000
        opts: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_timeout,
            "retry": Retry(NoBackoff(), 0),  # the writer retries, on its own timer
        }
        if self._mode == "cluster":
            # A seed node; the client discovers the others and follows MOVED and failovers.
            cluster: RedisCluster = RedisCluster.from_url(url, **opts)
            return cluster
        if self._mode == "sentinel":
            if not sentinel_master or not sentinel_addresses:
                raise ValueError("sentinel mode needs a master name and sentinel addresses")
            parts = urlsplit(url)
            db = parts.path.strip("/")
            auth: dict[str, Any] = {"db": int(db) if db.isdigit() else 0}
            if parts.password:
                auth["password"] = unquote(parts.password)
            if parts.username:
                auth["username"] = unquote(parts.username)
            sentinel = Sentinel(  # type: ignore[no-untyped-call]
                [parse_address(a) for a in sentinel_addresses],
                sentinel_kwargs={
                    "socket_timeout": socket_timeout,
                    "socket_connect_timeout": socket_timeout,
                },
                **opts,
            )
            self._name = f"sentinel://{sentinel_master}"
            master: Redis = sentinel.master_for(sentinel_master, **opts, **auth)
            return master
        opts["health_check_interval"] = 0
        client: Redis = Redis.from_url(url, **opts)
        return client

    # ---------------------------------------------------------------- hot path (sync)
    @property
    def up(self) -> bool:
        return self._up

    def _full(self) -> bool:
        return len(self._tickers) + len(self._history) + len(self._log) >= self._queue_max

    def _evict_ticker(self) -> bool:
        if not self._tickers:
            return False
        del self._tickers[next(iter(self._tickers))]
        self._drop_ticker.inc()
        return True

    def put_ticker(self, exchange: str, symbol: str, payload: Mapping[str, Any]) -> None:
        """Latest payload per key wins; serialized at flush time, so do not mutate it later."""
        if self._script is None:
            return
        key = f"{self._prefix}ticker:{exchange}:{symbol}"
        if key not in self._tickers and self._full() and not self._evict_ticker():
            self._drop_ticker.inc()  # the bound is all history/log: the ticker yields
            return
        self._tickers[key] = (payload,)

    def put_value(self, key: str, payload: Mapping[str, Any]) -> None:
        """A JSON value SET at ``key`` (not a ticker key) with the ticker TTL, buffered and
        conflated like a ticker: e.g. ``shard:{i}:summary`` (exporter/store/summary.py)."""
        if self._script is None:
            return
        key = self._prefix + key
        if key not in self._tickers and self._full() and not self._evict_ticker():
            self._drop_ticker.inc()
            return
        self._tickers[key] = (payload,)

    def put_symbols(self, symbols: Iterable[str]) -> None:
        if self._script is None:
            return
        try:
            self._symbols = tuple(sorted(set(symbols)))
        except Exception:
            log.exception("redis: bad symbols value ignored")

    def put_history(self, symbol: str, row: Mapping[str, Any]) -> None:
        if self._script is None:
            return
        try:
            fields = flatten(row)
        except Exception:
            log.exception("redis: unencodable history row for %s dropped", symbol)
            self._drop_history.inc()
            return
        if not fields:
            return
        if self._full() and not self._evict_ticker():
            self._drop_history.inc()
            if not self._history:
                return  # the bound is all log entries: the new row yields
            self._history.popleft()
        self._history.append((next(self._seq), f"{self._prefix}history:{symbol}", fields))

    def append_log(self, entry: Mapping[str, Any], dedupe_key: str | None = None) -> None:
        """XADD to `windows`; with dedupe_key, written at most once per key (7 d)."""
        if self._script is None:
            return
        try:
            fields = flatten(entry)
        except Exception:
            log.exception("redis: unencodable log entry dropped: %r", entry)
            self._drop_log.inc()
            return
        if not fields:
            return
        if self._full() and not self._evict_ticker():
            if self._history:
                self._history.popleft()
                self._drop_history.inc()
            elif self._log:
                self._log.popleft()
                self._drop_log.inc()
        self._log.append((next(self._seq), dedupe_key or "", fields))

    # ---------------------------------------------------------------- flushing
    def _pending(self) -> int:
        return (
            len(self._tickers) + len(self._history) + len(self._log) + (self._symbols is not None)
        )

    def _slot_guard(self, slot: int) -> str:
        return f"{self._prefix}writer:{{{slot_tags()[slot]}}}:{self._id}"

    def _dedupe_name(self, key: str) -> str:
        if self._mode != "cluster":
            return f"{self._prefix}dedupe:{key}"
        tag = slot_tags()[key_slot(self._log_key.encode())]
        return f"{self._prefix}dedupe:{{{tag}}}:{key}"

    def _group(
        self,
        tickers: list[tuple[str, str]],
        symbols: tuple[str, ...] | None,
        hist: list[tuple[int, str, list[str]]],
        logs: list[tuple[int, str, list[str]]],
    ) -> list[_Group]:
        """One group (standalone, sentinel) or one per hash slot (cluster), in slot order
        except that the log's group comes last (its WAIT then covers the earlier writes on
        the same node)."""
        if self._mode != "cluster":
            return [_Group(self._guard_key, tickers, symbols, hist, logs)]
        groups: dict[int, _Group] = {}

        def at(key: str) -> _Group:
            slot = key_slot(key.encode())
            g = groups.get(slot)
            if g is None:
                g = groups[slot] = _Group(self._slot_guard(slot))
            return g

        for key, value in tickers:
            at(key).tickers.append((key, value))
        if symbols is not None:
            at(self._symbols_key).symbols = symbols
        for entry in hist:
            at(entry[1]).history.append(entry)
        if logs:
            at(self._log_key).log.extend(logs)
        return sorted(groups.values(), key=lambda g: bool(g.log))

    def _script_args(self, g: _Group) -> tuple[list[str], list[str | int]]:
        keys = [
            g.guard,
            self._log_key if g.log else g.guard,
            self._symbols_key if g.symbols is not None else g.guard,
        ]
        keys += [key for key, _ in g.tickers]
        ttl, hmax, lmax, dttl, gttl = self._args_head
        nsym = -1 if g.symbols is None else len(g.symbols)
        args: list[str | int] = [ttl, len(g.tickers), nsym, hmax, lmax, dttl, gttl]
        args += [value for _, value in g.tickers]
        args += g.symbols or ()
        hkeys: dict[str, int] = {}
        args.append(len(g.history))
        for seq, hkey, fields in g.history:
            idx = hkeys.get(hkey)
            if idx is None:
                idx = hkeys[hkey] = len(hkeys) + 1
                keys.append(hkey)
            args += [seq, idx, len(fields) // 2, *fields]
        args.append(len(g.log))
        for seq, dk, fields in g.log:
            di = 0
            if dk:
                keys.append(self._dedupe_name(dk))
                di = len(keys)
            args += [seq, di, len(fields) // 2, *fields]
        return keys, args

    async def _pipelined(self, calls: list[tuple[list[str], list[str | int], bool]]) -> list[Any]:
        """Cluster and sentinel modes: every script call (``EVALSHA``; ``EVAL`` once after
        NOSCRIPT, e.g. on a freshly promoted replica) and, after a call with log entries,
        ``WAIT 1 <wait_timeout>`` on that call's node and connection, in one pipeline (per node
        in cluster mode). Raises on any error and when WAIT saw no replica."""
        client = self._client
        assert client is not None
        cluster = isinstance(client, RedisCluster)
        if cluster:
            await client.initialize()
        for attempt in range(2):
            pipe: Any = client.pipeline(transaction=False)
            for keys, args, wait in calls:
                # execute_command: the cluster pipeline blocks its evalsha()/eval() methods.
                if attempt == 0:
                    pipe.execute_command("EVALSHA", self._sha, len(keys), *keys, *args)
                else:
                    pipe.execute_command("EVAL", _FLUSH_LUA, len(keys), *keys, *args)
                if wait:
                    target: dict[str, Any] = {}
                    if isinstance(client, RedisCluster):
                        target["target_nodes"] = client.get_node_from_key(keys[0])
                    pipe.execute_command("WAIT", 1, self._wait_ms, **target)
            if cluster:
                res = await pipe.execute(raise_on_error=False, allow_redirections=False)
            else:
                res = await pipe.execute(raise_on_error=False)
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in res):
                continue
            out: list[Any] = []
            i = 0
            for _keys, _args, wait in calls:
                r = res[i]
                if isinstance(r, Exception):
                    raise r
                out.append(r)
                i += 1
                if wait:
                    acked = res[i]
                    i += 1
                    if isinstance(acked, Exception):
                        raise acked
                    if int(acked) < 1:
                        raise ReplicaWaitTimeout(
                            f"no replica acknowledged the log batch within {self._wait_ms} ms"
                        )
            return out
        raise NoScriptError("flush script not loaded")  # pragma: no cover

    async def _flush_batch(self) -> int:
        assert self._script is not None
        items = list(islice(self._tickers.items(), BATCH))
        symbols = self._symbols
        hist = list(islice(self._history, BATCH))
        logs = list(islice(self._log, BATCH))
        tickers: list[tuple[str, str]] = []
        for key, item in items:
            try:
                value = orjson.dumps(item[0], default=str, option=JSON_OPTS).decode()
            except Exception:
                log.exception("redis: unencodable ticker %s dropped", key)
                value = "null"
            tickers.append((key, value))
        groups = self._group(tickers, symbols, hist, logs)
        if self._script == self._pipelined:
            calls = [(*self._script_args(g), bool(g.log)) for g in groups]
            results = await self._pipelined(calls)
        else:
            keys, args = self._script_args(groups[0])
            results = [await self._script(keys=keys, args=args)]
        # Acknowledged: trim what was sent, keeping anything newer put during the await.
        for key, item in items:
            if self._tickers.get(key) is item:
                del self._tickers[key]
        if symbols is not None and self._symbols is symbols:
            self._symbols = None
        if hist:
            last = hist[-1][0]
            while self._history and self._history[0][0] <= last:
                self._history.popleft()
        if logs:
            last = logs[-1][0]
            while self._log and self._log[0][0] <= last:
                self._log.popleft()
        skipped = sum(int(r[3]) for r in results if r)
        if skipped:
            log.warning("redis: %s stream entries skipped (key of the wrong type)", skipped)
        return len(items) + len(hist) + len(logs) + (symbols is not None)

    async def flush(self) -> bool:
        """One flush now (several batches if needed); True when nothing is left pending."""
        if self._script is None:
            return True
        async with self._lock:
            if not self._pending():
                return True
            rounds = 2 + self._pending() // BATCH  # bounded even under a firehose
            start = time.perf_counter()
            written = 0
            try:
                for _ in range(rounds):
                    written += await self._flush_batch()
                    if not self._pending():
                        break
            except Exception as exc:
                self._on_error(exc)
                await self._refresh_topology()
                return False
            finally:
                self._m_duration.observe(time.perf_counter() - start)
            self._on_success(written)
            return not self._pending()

    async def _ping(self) -> bool:
        assert self._client is not None
        try:
            await self._client.ping()
        except Exception as exc:
            self._on_error(exc)
            await self._refresh_topology()
            return False
        self._on_success(0)
        return True

    async def _refresh_topology(self) -> None:
        """Cluster mode: drop the node connections and slot map after an error, so the next
        call re-reads the topology (a failed-over master's slots now on its old replica)."""
        if isinstance(self._client, RedisCluster):
            try:
                await self._client.aclose()
            except Exception:
                log.debug("redis: error resetting the cluster client", exc_info=True)

    def _on_error(self, exc: BaseException) -> None:
        self._m_errors.inc()
        if self._down_since is None:
            self._down_since = self._clock.monotonic()
            log.warning(
                "redis %s unavailable (%s: %s); buffering writes and retrying",
                self._name,
                type(exc).__name__,
                exc,
            )
        self._up = False
        self._m_up.set(0)

    def _on_success(self, written: int) -> None:
        self._last_contact = self._clock.monotonic()
        if self._down_since is not None:
            log.info(
                "redis back after %.1f s, flushed %d entries",
                self._last_contact - self._down_since,
                written,
            )
            self._down_since = None
        self._up = True
        self._m_up.set(1)

    async def run(self) -> None:
        """Flush every flush_interval until cancelled; capped exponential backoff with jitter."""
        if self._script is None:
            await asyncio.Event().wait()
            return
        failures = 0
        delay = 0.0
        while not self._closed:
            await self._clock.sleep(delay)
            if self._pending():
                await self.flush()
            elif not self._up or self._clock.monotonic() - self._last_contact > IDLE_PING:
                await self._ping()
            if self._up:
                failures, delay = 0, self._flush_interval
            else:
                failures += 1
                cap = min(self._backoff_cap, self._flush_interval * 2.0 ** min(failures, 30))
                delay = cap * random.uniform(0.5, 1.0)

    async def close(self, timeout: float = 3.0) -> None:
        """Final flush attempt (bounded by timeout), then close the connection pool."""
        self._closed = True
        if self._client is None:
            return
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except TimeoutError:
            log.warning("redis: final flush timed out after %.1f s", timeout)
        left = len(self._history) + len(self._log)
        if left:
            log.warning(
                "redis: %d history/log entries not written at shutdown (history=%d log=%d)",
                left,
                len(self._history),
                len(self._log),
            )
        try:
            await self._client.aclose()
        except Exception:  # closing a dead pool must not fail shutdown
            log.debug("redis: error closing the pool", exc_info=True)
        self._up = False
        self._m_up.set(0)

    @property
    def client(self) -> Redis | RedisCluster | None:
        """The connection pool's client (None when disabled): the shard summaries' reads (a
        cluster client scans every primary) and the shared REST budget (one key per call)."""
        return self._client

    @property
    def reader(self) -> StateReader:
        """Reads of the window log and history over this writer's connection pool."""
        return StateReader(self._client, self._scan_max, self._prefix)

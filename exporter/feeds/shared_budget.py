"""One REST snapshot budget per exchange across shards (``feeds.shared_rate_limit``).

Each (re)subscription costs a depth snapshot (a REST request on most venues). The per-market
:class:`~exporter.feeds.guard.SnapshotBudget` bounds one market; with N shards resubscribing
at once (a venue-wide disconnect) the exchange would still see N times the requests. A
:class:`SharedBudget` is a token bucket per exchange kept in Redis (``ratelimit:{exchange}``:
``tokens`` and ``at``, refilled with the server's clock in one script, so every shard draws
from the same bucket); a feed takes a token from it after its own market budget allows it.

With Redis unreachable each shard falls back to a local bucket with 1/N of the rate and burst
(N = ``shard.count``), so the shards together still stay within the budget, and counts each
token taken that way (``cryptoarb_rest_budget_fallbacks_total{exchange}``); Redis is retried
after ``RETRY_AFTER`` seconds.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from exporter.feeds.guard import SnapshotBudget

log = logging.getLogger(__name__)

RETRY_AFTER = 5.0  # seconds on the local fallback before Redis is tried again

# KEYS[1] bucket hash; ARGV: 1 tokens per ms, 2 burst. Returns 0 (token taken) or the wait in
# ms until one is available (nothing taken). The server's TIME is the one clock of all shards.
BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(v[1]) or burst
local at = tonumber(v[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 - 1e-9 then
  tokens = math.max(0, tokens - 1)
else
  wait = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 60000)
return wait
"""


def fallback_counter(registry: CollectorRegistry) -> Counter:
    return Counter(
        "cryptoarb_rest_budget_fallbacks",
        "Snapshot tokens taken from the local 1/N fallback bucket while the shared "
        "(Redis) REST budget was unreachable",
        ["exchange"],
        registry=registry,
    )


class SharedBudget:
    """The exchange's shared snapshot bucket; :meth:`try_take` is called before a snapshot."""

    def __init__(
        self,
        client: Any,
        exchange: str,
        per_minute: float,
        burst: int,
        shards: int,
        fallbacks: Counter,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.exchange = exchange
        self.key = f"ratelimit:{exchange}"
        self.per_minute = per_minute
        self.burst = burst
        self._rate_ms = per_minute / 60_000.0
        self._clock = clock
        n = max(1, shards)
        self.fallback = SnapshotBudget(max(1, math.floor(burst / n)), per_minute / n, clock)
        self._fallbacks = fallbacks.labels(exchange=exchange)
        self._local_until = 0.0 if client is not None else math.inf

    @property
    def on_fallback(self) -> bool:
        return self._clock() < self._local_until

    async def try_take(self) -> float:
        """0 when a token was taken; otherwise seconds to wait before asking again."""
        if not self.on_fallback:
            try:
                wait_ms = await self._client.eval(
                    BUCKET_LUA, 1, self.key, repr(self._rate_ms), str(self.burst)
                )
                return max(0.0, float(wait_ms) / 1000.0)
            except Exception as exc:
                if self._local_until == 0.0 or self._clock() >= self._local_until:
                    log.warning(
                        "%s: shared REST budget unreachable (%s: %s); local 1/N budget for %g s",
                        self.exchange, type(exc).__name__, exc, RETRY_AFTER,
                    )  # fmt: skip
                self._local_until = self._clock() + RETRY_AFTER
        wait = self.fallback.delay()
        if wait > 0:
            return wait
        self.fallback.take()
        self._fallbacks.inc()
        return 0.0

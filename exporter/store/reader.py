"""Readers of the persistent ``windows`` log and the ``history:{symbol}`` streams
(docs/redis.md). They share the writer's connection pool (``StateWriter.reader``)."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from exporter.store.codec import decode_json, decode_number

LOG_STREAM = "windows"


class StateUnavailable(RuntimeError):
    """A reader could not reach Redis (or Redis is disabled); the API answers 503."""


class StateReader:
    def __init__(
        self, client: Redis | RedisCluster | None, scan_max: int = 100_000, key_prefix: str = ""
    ) -> None:
        self._client = client
        self._scan_max = scan_max
        self._prefix = key_prefix  # the writer's (``replay`` reads back its own keys)

    def _reader(self) -> Redis | RedisCluster:
        if self._client is None:
            raise StateUnavailable("redis is disabled")
        return self._client

    async def _range(
        self, key: str, since: float | None, limit: int, kind: str | None
    ) -> list[tuple[str, dict[str, str]]]:
        client = self._reader()
        low = "-" if since is None else str(max(0, int(since * 1000)))
        out: list[tuple[str, dict[str, str]]] = []
        high, scanned = "+", 0
        try:
            while len(out) < limit and scanned < self._scan_max:
                count = limit - len(out) if kind is None else min(1000, self._scan_max)
                rows = await client.xrevrange(key, max=high, min=low, count=count)
                for sid, fields in rows:
                    if kind is None or fields.get("kind") == kind:
                        out.append((sid, fields))
                        if len(out) >= limit:
                            break
                scanned += len(rows)
                if len(rows) < count:
                    break
                high = "(" + rows[-1][0]
        except Exception as exc:
            raise StateUnavailable(f"redis read failed: {type(exc).__name__}: {exc}") from exc
        return out

    async def read_log(
        self, *, since: float | None = None, limit: int = 100, kind: str | None = None
    ) -> list[dict[str, Any]]:
        """Newest first. Values are strings except JSON objects/arrays (decoded); each entry also
        carries `stream_id` and `logged_at` (unix s, when written to Redis; `since` uses it)."""
        out: list[dict[str, Any]] = []
        for sid, fields in await self._range(self._prefix + LOG_STREAM, since, limit, kind):
            entry: dict[str, Any] = {k: decode_json(v) for k, v in fields.items()}
            entry.setdefault("stream_id", sid)
            entry.setdefault("logged_at", int(sid.split("-", 1)[0]) / 1000)
            out.append(entry)
        return out

    async def read_history(
        self, symbol: str, *, since: float | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """The newest `limit` rows (stream time >= since), oldest first; numeric fields as float,
        empty as None; each row also carries `stream_id`."""
        rows = await self._range(f"{self._prefix}history:{symbol}", since, limit, None)
        out: list[dict[str, Any]] = []
        for sid, fields in reversed(rows):
            row: dict[str, Any] = {k: decode_number(v) for k, v in fields.items()}
            row.setdefault("stream_id", sid)
            out.append(row)
        return out

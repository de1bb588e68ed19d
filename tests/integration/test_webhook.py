"""POST /api/alertmanager against a real redis-server: auth (401/404), body limit (413), bad
bodies (400), and alert entries in the `windows` log de-duplicated on
(fingerprint, starts_at, status)."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from exporter.config import WebhookConfig
from exporter.http.server import HttpServer
from exporter.http.webhook import PATH, AlertWebhook
from exporter.store.writer import StateWriter
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token"

ALERT = {
    "status": "firing",
    "labels": {
        "alertname": "CryptoArbWindowOpen",
        "category": "arbitrage",
        "severity": "info",
        "symbol": "BTC/USD",
        "buy_exchange": "binance",
        "sell_exchange": "kraken",
        "notional": "10000",
    },
    "annotations": {"title": "BTC/USD binance→kraken ROI 0.213% · profit 21.30 USD"},
    "startsAt": "2026-01-02T03:04:05.123Z",
    "endsAt": "0001-01-01T00:00:00Z",
    "generatorURL": "http://prometheus/graph",
    "fingerprint": "0123456789abcdef",
}


def body(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": "{}:{}",
        "status": alerts[0]["status"],
        "receiver": "alert-log",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager",
        "alerts": list(alerts),
    }


class Harness:
    def __init__(self, writer: StateWriter, server: HttpServer) -> None:
        self.writer, self.server = writer, server
        self.url = f"http://127.0.0.1:{server.bound_port}{PATH}"

    async def post(self, payload: Any, token: str | None = TOKEN, raw: bytes | None = None) -> int:
        async with aiohttp.ClientSession() as s:
            return (await self.send(s, payload, token, raw))[0]

    async def send(
        self,
        session: aiohttp.ClientSession,
        payload: Any,
        token: str | None = TOKEN,
        raw: bytes | None = None,
    ) -> tuple[int, str, bytes]:
        """(status, Content-Type, body) of one POST on ``session`` (its keep-alive pool)."""
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        kw: dict[str, Any] = {"data": raw} if raw is not None else {"json": payload}
        async with session.post(self.url, headers=headers, **kw) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


@pytest.fixture
async def harness_factory(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[Any]:
    made: list[Harness] = []

    async def make(token: str | None = TOKEN, max_body: int = 4096) -> Harness:
        token_file = None
        if token is not None:
            token_file = tmp_path / f"token-{len(made)}"
            token_file.write_text(token + "\n")
        config = WebhookConfig(
            token_file=str(token_file) if token_file else None, max_body_bytes=max_body
        )
        reg = CollectorRegistry()
        writer = StateWriter(redis_server.url, registry=reg, flush_interval=0.05)
        hook = AlertWebhook(config, writer)
        server = HttpServer(
            reg, lambda: (True, {}), "127.0.0.1", 0, extra_routes=hook.routes(),
            client_max_size=max_body,
        )  # fmt: skip
        await server.start()
        h = Harness(writer, server)
        made.append(h)
        return h

    yield make
    for h in made:
        await h.server.stop()
        await h.writer.close(timeout=2)


async def log_entries(h: Harness) -> list[dict[str, Any]]:
    assert await h.writer.flush()
    return await h.writer.reader.read_log(limit=100)


async def test_alerts_land_in_the_log_once_per_fingerprint_start_and_status(
    harness_factory: Any,
) -> None:
    h = await harness_factory()
    assert await h.post(body(ALERT)) == 200
    assert await h.post(body(ALERT)) == 200  # Alertmanager re-sends the same group
    resolved = dict(ALERT, status="resolved", endsAt="2026-01-02T03:05:00Z")
    assert await h.post(body(resolved)) == 200
    assert await h.post(body(resolved)) == 200
    again = dict(ALERT, startsAt="2026-01-02T04:00:00Z")  # same alert fires again later
    assert await h.post(body(again)) == 200

    entries = await log_entries(h)
    assert [(e["status"], e["starts_at"]) for e in entries] == [
        ("firing", "2026-01-02T04:00:00Z"),
        ("resolved", "2026-01-02T03:04:05.123Z"),
        ("firing", "2026-01-02T03:04:05.123Z"),
    ]
    first = entries[-1]
    assert first["kind"] == "alert"
    assert first["alertname"] == "CryptoArbWindowOpen"
    assert first["fingerprint"] == "0123456789abcdef"
    assert first["labels"] == ALERT["labels"]
    assert (first["symbol"], first["buy_exchange"], first["sell_exchange"]) == (
        "BTC/USD", "binance", "kraken",
    )  # fmt: skip
    assert first["notional"] == "10000"
    assert first["title"].startswith("BTC/USD binance→kraken")
    assert entries[1]["ends_at"] == "2026-01-02T03:05:00Z"


async def test_one_notification_with_several_alerts(harness_factory: Any) -> None:
    h = await harness_factory()
    other = copy.deepcopy(ALERT)
    other["fingerprint"] = "fedcba9876543210"
    other["labels"]["symbol"] = "ETH/USD"
    assert await h.post(body(ALERT, other)) == 200
    entries = await log_entries(h)
    assert sorted(e["symbol"] for e in entries) == ["BTC/USD", "ETH/USD"]


async def test_missing_or_wrong_token_is_401_and_writes_nothing(harness_factory: Any) -> None:
    h = await harness_factory()
    assert await h.post(body(ALERT), token=None) == 401
    assert await h.post(body(ALERT), token="wrong") == 401
    assert await h.post(body(ALERT), token=TOKEN + "x") == 401
    assert await log_entries(h) == []


async def test_no_token_configured_is_404_with_one_log_line(
    harness_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="exporter.http.webhook"):
        h = await harness_factory(token=None)
    lines = [r.getMessage() for r in caplog.records if r.name == "exporter.http.webhook"]
    assert len(lines) == 1 and "404" in lines[0]
    assert await h.post(body(ALERT)) == 404
    assert await h.post(body(ALERT), token=None) == 404


def json_error(status: int, content_type: str, raw: bytes) -> str:
    """The ``error`` of a JSON error body (the server's error_middleware format)."""
    assert content_type.startswith("application/json"), (content_type, raw[:200])
    data = json.loads(raw)
    assert data["status"] == status and data["path"] == PATH and data["error"], data
    return str(data["error"])


async def test_body_limit_and_bad_bodies(harness_factory: Any) -> None:
    h = await harness_factory(max_body=2048)
    big = copy.deepcopy(ALERT)
    big["annotations"]["description"] = "x" * 4000
    no_labels = {k: v for k, v in ALERT.items() if k != "labels"}
    cases: list[tuple[Any, bytes | None, int, str]] = [
        (body(big), None, 413, "too large"),
        (None, b"not json", 400, "not JSON"),
        (None, b'{"alerts": [', 400, "not JSON"),  # truncated
        (None, b"\xff\xfe{}", 400, "not JSON"),  # not UTF-8
        ({"alerts": "nope"}, None, 400, "`alerts`"),
        ([ALERT], None, 400, "`alerts`"),  # a list, not a webhook body
        ({"alerts": [1]}, None, 400, "must be an object"),
        (body(no_labels), None, 400, "without labels"),
        (body(dict(ALERT, status="weird")), None, 400, "firing or resolved"),
        (body(dict(ALERT, fingerprint="")), None, 400, "without fingerprint"),
    ]
    async with aiohttp.ClientSession() as session:
        for payload, raw, status, message in cases:
            got, content_type, reply = await h.send(session, payload, raw=raw)
            assert got == status, (payload, raw, reply)
            assert message.lower() in json_error(status, content_type, reply).lower()
    assert await log_entries(h) == []


async def test_oversized_body_leaves_the_server_serving(harness_factory: Any) -> None:
    """A body far above the limit is refused with at most the limit buffered; the same client
    session (keep-alive pool) then gets /metrics and a valid notification through."""
    h = await harness_factory(max_body=4096)
    metrics_url = f"http://127.0.0.1:{h.server.bound_port}/metrics"
    async with aiohttp.ClientSession() as session:
        for size in (4097, 8 << 20):
            status, content_type, reply = await h.send(session, None, raw=b"{" + b" " * size)
            assert status == 413
            assert "webhook.max_body_bytes (4096)" in json_error(413, content_type, reply)
            async with session.get(metrics_url) as resp:
                assert resp.status == 200 and "cryptoarb_redis_up" in await resp.text()
        assert await log_entries(h) == []
        assert (await h.send(session, body(ALERT)))[0] == 200
    assert [e["fingerprint"] for e in await log_entries(h)] == [ALERT["fingerprint"]]

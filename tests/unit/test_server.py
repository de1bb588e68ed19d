"""HTTP surface: landing page, health, readiness, JSON errors for anything unexpected."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, Gauge

from exporter.http.server import HttpServer


async def client_for(ready: tuple[bool, dict[str, Any]], routes: list[web.RouteDef]) -> TestClient:
    registry = CollectorRegistry()
    Gauge("cryptoarb_test_value", "a test gauge", registry=registry).set(3)
    server = HttpServer(registry, lambda: ready, "127.0.0.1", 0, extra_routes=routes)
    client = TestClient(TestServer(server.app))
    await client.start_server()
    return client


async def boom(request: web.Request) -> web.Response:
    raise RuntimeError("bug")


async def test_endpoints_and_json_errors() -> None:
    client = await client_for((False, {"books": {"binance:BTC/USDT": "stale"}}), [
        web.get("/api/boom", boom),
    ])  # fmt: skip
    try:
        r = await client.get("/")
        assert r.status == 200 and "/metrics" in await r.text() and "/api/boom" in await r.text()
        r = await client.get("/metrics")
        assert r.status == 200 and "cryptoarb_test_value 3.0" in await r.text()
        assert r.headers["Content-Type"].startswith("text/plain")
        r = await client.get("/healthz")
        assert r.status == 200 and (await r.json())["status"] == "ok"
        r = await client.get("/readyz")
        body = await r.json()
        assert r.status == 503 and body["books"] == {"binance:BTC/USDT": "stale"}
        r = await client.get("/nope")
        assert r.status == 404 and (await r.json())["error"] == "Not Found"
        r = await client.post("/metrics")
        assert r.status == 405 and "error" in await r.json()
        r = await client.get("/api/boom")
        assert r.status == 500 and (await r.json()) == {
            "error": "internal error", "status": 500, "path": "/api/boom"
        }  # fmt: skip
    finally:
        await client.close()


async def test_ready_when_everything_is_live() -> None:
    client = await client_for((True, {"books": {}}), [])
    try:
        r = await client.get("/readyz")
        assert r.status == 200 and (await r.json())["status"] == "ready"
    finally:
        await client.close()

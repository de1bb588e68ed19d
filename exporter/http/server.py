"""HTTP surface (aiohttp): landing page, /metrics, /healthz, /readyz, JSON errors."""

from __future__ import annotations

import html
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from exporter import __version__
from exporter.http.exposition import Exposition

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ReadinessCheck = Callable[[], tuple[bool, dict[str, Any]]]
SEND_BUFFER_FLOOR = 64 << 10  # responses up to this size leave in one write anyway
SEND_BUFFER_MAX = 4 << 20  # Linux caps it at net.core.wmem_max (and doubles it)


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, "status": status, **extra}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as JSON; nothing a client sends crashes the server."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_error(exc.status, exc.reason or "error", path=request.path)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(500, "internal error", path=request.path)


LANDING = """<!doctype html>
<html><head><meta charset="utf-8"><title>cryptoarb exporter</title></head>
<body><h1>cryptoarb exporter {version}</h1>
<p>Cross-exchange crypto arbitrage exporter for Prometheus.</p>
<ul>
<li><a href="/metrics">/metrics</a> &mdash; Prometheus metrics</li>
<li><a href="/healthz">/healthz</a> &mdash; liveness</li>
<li><a href="/readyz">/readyz</a> &mdash; readiness (every book live, Redis answered)</li>
{extra}
</ul></body></html>
"""


def _room_for(request: web.Request, size: int) -> None:
    """Let the kernel take a large response in one write. With the default send buffer a
    1 MB body leaves the loop in several writes, one per loop iteration, and under saturated
    ingestion each iteration is a whole round of feed callbacks."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or size <= SEND_BUFFER_FLOOR:
        return
    try:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) < size:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, min(size, SEND_BUFFER_MAX))
    except OSError as exc:  # not a socket that takes it: the writes just take longer
        log.debug("SO_SNDBUF not set: %s", exc)


class HttpServer:
    def __init__(
        self,
        registry: CollectorRegistry,
        ready: ReadinessCheck,
        host: str,
        port: int,
        extra_routes: list[web.RouteDef] | None = None,
        client_max_size: int = 1 << 20,
        middlewares: list[Any] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.registry = registry
        self.exposition = Exposition(registry)  # same bytes as generate_latest, faster
        self._ready = ready
        self.host, self.port = host, port
        self.ssl_context = ssl_context
        self.app = web.Application(
            middlewares=[error_middleware, *(middlewares or [])], client_max_size=client_max_size
        )
        routes = [
            web.get("/", self.landing),
            web.get("/metrics", self.metrics),
            web.get("/healthz", self.healthz),
            web.get("/readyz", self.readyz),
            *(extra_routes or []),
        ]
        self.app.add_routes(routes)
        self._extra_paths = sorted(
            {
                r.path
                for r in (extra_routes or [])
                if isinstance(r, web.RouteDef) and r.method == "GET"
            }
        )
        self._runner: web.AppRunner | None = None
        self.bound_port: int | None = None

    async def landing(self, request: web.Request) -> web.Response:
        extra = "".join(
            f'<li><a href="{html.escape(p)}">{html.escape(p)}</a></li>' for p in self._extra_paths
        )
        return web.Response(
            text=LANDING.format(version=__version__, extra=extra), content_type="text/html"
        )

    async def metrics(self, request: web.Request) -> web.Response:
        body = await self.exposition.render()
        _room_for(request, len(body))
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": __version__})

    async def readyz(self, request: web.Request) -> web.Response:
        ok, detail = self._ready()
        return web.json_response(
            {"status": "ready" if ok else "not ready", **detail}, status=200 if ok else 503
        )

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=2.0
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.host, self.port, reuse_address=True, ssl_context=self.ssl_context
        )
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self.port
        scheme = "https" if self.ssl_context else "http"
        log.info("listening on %s://%s:%s", scheme, self.host, self.bound_port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.exposition.close()

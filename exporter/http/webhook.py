"""Alert-log webhook: ``POST /api/alertmanager`` receives Alertmanager notifications and appends
one ``kind=alert`` entry per alert to the Redis ``windows`` log.

- Bearer token read once at start from ``webhook.token_file``; a missing or wrong token -> 401.
- No token configured (or the file is unreadable or empty) -> 404, said once in the log at start.
- Bodies above ``webhook.max_body_bytes`` -> 413 (the HTTP server's ``client_max_size``).
- Alertmanager re-sends a group on every change and on ``repeat_interval``: entries are
  de-duplicated on (fingerprint, starts_at, status) through ``append_log(dedupe_key=...)``.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from exporter.config import WebhookConfig
from exporter.model import LogSink

log = logging.getLogger(__name__)

PATH = "/api/alertmanager"


def read_token(path: str | None) -> str | None:
    """The token in ``path`` (surrounding whitespace stripped), or None with one log line."""
    if not path:
        log.info("webhook: no webhook.token_file configured: %s answers 404", PATH)
        return None
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as err:
        log.error("webhook: cannot read webhook.token_file %s (%s): %s answers 404",
                  path, err.strerror, PATH)  # fmt: skip
        return None
    if not token:
        log.error("webhook: webhook.token_file %s is empty: %s answers 404", path, PATH)
        return None
    log.info("webhook: %s accepts Alertmanager notifications (bearer token)", PATH)
    return token


def alert_entry(alert: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """One Alertmanager alert -> (log entry, dedupe key). Raises ValueError when malformed."""
    labels = alert.get("labels")
    if not isinstance(labels, Mapping):
        raise ValueError("alert without labels")
    status, fingerprint = alert.get("status"), alert.get("fingerprint")
    if status not in ("firing", "resolved"):
        raise ValueError("alert status must be firing or resolved")
    if not isinstance(fingerprint, str) or not fingerprint:
        raise ValueError("alert without fingerprint")
    starts_at = str(alert.get("startsAt") or "")
    entry: dict[str, Any] = {
        "kind": "alert",
        "alertname": str(labels.get("alertname", "")),
        "status": str(status),
        "fingerprint": fingerprint,
        "starts_at": starts_at,
        "ends_at": str(alert.get("endsAt") or ""),
        "labels": {str(k): str(v) for k, v in sorted(labels.items())},
    }
    # Convenience copies for readers of the log (the window log table filters on them).
    for key in ("symbol", "buy_exchange", "sell_exchange", "notional"):
        if key in labels:
            entry[key] = str(labels[key])
    annotations = alert.get("annotations")
    if isinstance(annotations, Mapping) and annotations.get("title"):
        entry["title"] = str(annotations["title"])
    return entry, f"alert:{fingerprint}:{starts_at}:{status}"


class AlertWebhook:
    def __init__(self, config: WebhookConfig, sink: LogSink) -> None:
        self.token = read_token(config.token_file)
        self.max_body = config.max_body_bytes  # enforced by the server's client_max_size
        self.sink = sink

    def routes(self) -> list[web.RouteDef]:
        return [web.post(PATH, self.handle)]

    def _authorised(self, request: web.Request) -> bool:
        assert self.token is not None
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self.token.encode()
        )

    async def handle(self, request: web.Request) -> web.Response:
        if self.token is None:
            raise web.HTTPNotFound(reason="webhook disabled: no webhook.token_file")
        if not self._authorised(request):
            raise web.HTTPUnauthorized(
                reason="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )
        try:
            body = await request.json()
        except web.HTTPRequestEntityTooLarge as err:
            # aiohttp's reason names no setting; point the operator at the one to raise.
            raise web.HTTPRequestEntityTooLarge(
                max_size=self.max_body,
                reason=f"body too large: over webhook.max_body_bytes ({self.max_body})",
            ) from err
        except ValueError as err:
            raise web.HTTPBadRequest(reason="body is not JSON") from err
        alerts = body.get("alerts") if isinstance(body, dict) else None
        if not isinstance(alerts, list):
            raise web.HTTPBadRequest(reason="expected an Alertmanager webhook body with `alerts`")
        entries = []
        for alert in alerts:
            if not isinstance(alert, Mapping):
                raise web.HTTPBadRequest(reason="every alert must be an object")
            try:
                entries.append(alert_entry(alert))
            except ValueError as err:
                raise web.HTTPBadRequest(reason=str(err)) from err
        for entry, key in entries:
            self.sink.append_log(entry, dedupe_key=key)
        return web.json_response({"accepted": len(entries)})

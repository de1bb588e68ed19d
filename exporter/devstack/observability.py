"""Prometheus + Alertmanager on loopback with the repository's own rules, routes, inhibitions and
templates, plus loopback Slack and SMTP catchers: what ``arb-exporter demo`` starts next to the
exporter when the binaries and the repository's ``prometheus/`` and ``alertmanager/`` are
present, and what the end-to-end tests run.

The configs in the repository are written for docker compose (hostnames, ``/run/secrets``).
The overlays below load them and change only hosts, ports, secret file paths, intervals and
notification timings; everything else is used unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from exporter.devstack.procs import _terminate, free_port

log = logging.getLogger(__name__)

SECRETS_PREFIX = "/run/secrets/"
COMPOSE_EXPORTER = "exporter:9877"
COMPOSE_ALERTMANAGER = "alertmanager:9093"


def repo_root() -> Path | None:
    """The source checkout holding prometheus/ and alertmanager/ (None for a wheel install)."""
    root = Path(__file__).resolve().parents[2]
    ok = (root / "prometheus" / "prometheus.yml").is_file()
    return root if ok and (root / "alertmanager" / "alertmanager.yml").is_file() else None


def find_binary(*names: str) -> str | None:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def prometheus_overlay(
    root: Path, *, exporter: str, alertmanager: str, listen: str, interval: str = "1s"
) -> dict[str, Any]:
    """The repository's prometheus.yml with targets, rule paths and intervals overridden."""
    config: dict[str, Any] = yaml.safe_load((root / "prometheus" / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = interval
    config["global"]["evaluation_interval"] = interval
    config["rule_files"] = [str(root / "prometheus" / p) for p in config["rule_files"]]
    for am in config["alerting"]["alertmanagers"]:
        for sc in am["static_configs"]:
            sc["targets"] = [
                alertmanager if t == COMPOSE_ALERTMANAGER else t for t in sc["targets"]
            ]
    for job in config["scrape_configs"]:
        job.pop("dns_sd_configs", None)  # compose service discovery (the shards profile)
        for sc in job.get("static_configs", []):
            sc["targets"] = [
                exporter if t == COMPOSE_EXPORTER else listen if job["job_name"] == "prometheus"
                else t
                for t in sc["targets"]
            ]  # fmt: skip
    return config


def _walk_routes(route: dict[str, Any], timings: dict[str, str], root: bool = True) -> None:
    """Set timings on the root route and on every child route that sets its own."""
    for key, value in timings.items():
        if root or key in route:
            route[key] = value
    for child in route.get("routes", []):
        _walk_routes(child, timings, root=False)


def _rewrite_strings(node: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(node, dict):
        return {k: _rewrite_strings(v, fn) for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite_strings(v, fn) for v in node]
    return fn(node) if isinstance(node, str) else node


def alertmanager_overlay(
    root: Path,
    *,
    secrets_dir: Path,
    exporter: str,
    smtp: str,
    timings: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The repository's alertmanager.yml with hosts, secret paths and timings overridden.

    ``smtp_require_tls`` is turned off: the loopback SMTP catcher speaks plain SMTP.
    """
    am_dir = root / "alertmanager"
    config: dict[str, Any] = yaml.safe_load((am_dir / "alertmanager.yml").read_text())

    def rewrite(value: str) -> str:
        if value.startswith(SECRETS_PREFIX):
            return str(secrets_dir / value[len(SECRETS_PREFIX) :])
        return value.replace(f"http://{COMPOSE_EXPORTER}/", f"http://{exporter}/")

    config = _rewrite_strings(config, rewrite)
    config["global"]["smtp_smarthost"] = smtp
    config["global"]["smtp_require_tls"] = False
    config["templates"] = [str(am_dir / t) for t in config["templates"]]
    if timings:
        _walk_routes(config["route"], timings)
    return config


def write_secrets(secrets_dir: Path, *, slack_url: str, webhook_token: str) -> None:
    secrets_dir.mkdir(parents=True, exist_ok=True)
    for name, value in {
        "slack_api_url": slack_url,
        "webhook_token": webhook_token,
        "smtp_password": "loopback-catcher-accepts-anything",
    }.items():
        path = secrets_dir / name
        path.write_text(value + "\n")
        path.chmod(0o600)


# ----------------------------------------------------------------------------- catchers
@dataclass
class SlackMessage:
    channel: str
    title: str
    text: str
    payload: dict[str, Any]


class SlackCatcher:
    """A loopback stand-in for Slack's incoming webhook: records (and reports) each POST."""

    def __init__(self, on_message: Callable[[SlackMessage], None] | None = None) -> None:
        self.messages: list[SlackMessage] = []
        self.on_message = on_message
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        payload = await request.json()
        for att in payload.get("attachments") or [{}]:
            msg = SlackMessage(
                str(payload.get("channel", "")),
                str(att.get("title", "")),
                str(att.get("text", "")),
                payload,
            )
            self.messages.append(msg)
            if self.on_message:
                self.on_message(msg)
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/slack", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/slack"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@dataclass
class Email:
    to: list[str]
    subject: str
    text: str


@dataclass
class SmtpCatcher:
    """A loopback SMTP server (aiosmtpd) that records (and reports) each message."""

    on_message: Callable[[Email], None] | None = None
    messages: list[Email] = field(default_factory=list)
    address: str = ""
    _server: asyncio.AbstractServer | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        text = body.get_content().replace("\r\n", "\n") if body is not None else ""
        mail = Email(list(envelope.rcpt_tos), str(msg.get("Subject", "")), text)
        self.messages.append(mail)
        if self.on_message:
            self.on_message(mail)
        return "250 Message accepted for delivery"

    async def start(self) -> None:
        from aiosmtpd.smtp import SMTP

        port = free_port()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self, hostname="smtp.loopback"), "127.0.0.1", port
        )
        self.address = f"127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


# ---------------------------------------------------------------------------- processes
class ServiceProcess:
    """A Prometheus-family binary on loopback; ``start`` waits for ``/-/ready``."""

    def __init__(self, name: str, argv: list[str], listen: str, log_path: Path) -> None:
        self.name, self.argv, self.listen, self.log_path = name, argv, listen, log_path
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://{self.listen}"

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    async def start(self, timeout: float = 30.0) -> None:
        out = self.log_path.open("wb")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdout=out, stderr=out, start_new_session=True
            )
        finally:
            out.close()
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    break
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(f"{self.url}/-/ready") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        await self.stop()
        raise RuntimeError(f"{self.name} did not become ready:\n{self.log_tail()}")

    async def stop(self) -> None:
        if self.proc is not None:
            await _terminate(self.proc)
            self.proc = None


class ObservabilityStack:
    """Alertmanager + Prometheus + Slack/SMTP catchers for an exporter at ``exporter``."""

    def __init__(
        self,
        root: Path,
        exporter: str,
        webhook_token: str,
        *,
        interval: str = "1s",
        timings: dict[str, str] | None = None,
        on_slack: Callable[[SlackMessage], None] | None = None,
        on_email: Callable[[Email], None] | None = None,
        work_dir: Path | None = None,
    ) -> None:
        self.root, self.exporter, self.token = root, exporter, webhook_token
        self.interval = interval
        self.timings = timings if timings is not None else {"group_wait": "1s",
                                                            "group_interval": "2s"}  # fmt: skip
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if work_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="cryptoarb-obs-")
            work_dir = Path(self._tmp.name)
        self.dir: Path = work_dir
        self.slack = SlackCatcher(on_slack)
        self.smtp = SmtpCatcher(on_email)
        self.alertmanager: ServiceProcess | None = None
        self.prometheus: ServiceProcess | None = None

    async def start(self, with_prometheus: bool = True) -> None:
        prom_bin = find_binary("prometheus")
        am_bin = find_binary("prometheus-alertmanager", "alertmanager")
        if prom_bin is None or am_bin is None:
            raise RuntimeError("prometheus / alertmanager binaries not found (scripts/setup.sh)")
        try:
            await self.slack.start()
            await self.smtp.start()
            secrets = self.dir / "secrets"
            write_secrets(secrets, slack_url=self.slack.url, webhook_token=self.token)
            am_listen = f"127.0.0.1:{free_port()}"
            am_cfg = alertmanager_overlay(
                self.root, secrets_dir=secrets, exporter=self.exporter,
                smtp=self.smtp.address, timings=self.timings,
            )  # fmt: skip
            (self.dir / "alertmanager.yml").write_text(yaml.safe_dump(am_cfg, sort_keys=False))
            (self.dir / "am-data").mkdir(exist_ok=True)
            self.alertmanager = ServiceProcess(
                "alertmanager",
                [am_bin, f"--config.file={self.dir / 'alertmanager.yml'}",
                 f"--storage.path={self.dir / 'am-data'}", f"--web.listen-address={am_listen}",
                 "--cluster.listen-address=", "--log.level=warn"],
                am_listen, self.dir / "alertmanager.log",
            )  # fmt: skip
            await self.alertmanager.start()
            if not with_prometheus:
                return
            prom_listen = f"127.0.0.1:{free_port()}"
            prom_cfg = prometheus_overlay(
                self.root, exporter=self.exporter, alertmanager=am_listen, listen=prom_listen,
                interval=self.interval,
            )  # fmt: skip
            (self.dir / "prometheus.yml").write_text(yaml.safe_dump(prom_cfg, sort_keys=False))
            self.prometheus = ServiceProcess(
                "prometheus",
                [prom_bin, f"--config.file={self.dir / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.dir / 'prom-data'}",
                 f"--web.listen-address={prom_listen}", "--log.level=warn"],
                prom_listen, self.dir / "prometheus.log",
            )  # fmt: skip
            await self.prometheus.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for proc in (self.prometheus, self.alertmanager):
            if proc is not None:
                await proc.stop()
        await self.slack.stop()
        await self.smtp.stop()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()

    async def __aenter__(self) -> ObservabilityStack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def print_slack(msg: SlackMessage) -> None:
    print(f"[slack {msg.channel}] {msg.title}\n{msg.text}", flush=True)


def print_email(mail: Email) -> None:
    print(f"[email to {', '.join(mail.to)}] {mail.subject}\n{mail.text}", flush=True)


async def start_demo_stack(exporter: str, webhook_token: str) -> ObservabilityStack | None:
    """For ``arb-exporter demo``: the stack with catchers that print what they receive, or
    None (with one log line) when the repository configs or the binaries are missing."""
    root = repo_root()
    if root is None:
        log.warning("demo: prometheus/ and alertmanager/ not found (not a source checkout): "
                    "running without Prometheus and Alertmanager")  # fmt: skip
        return None
    if find_binary("prometheus") is None or find_binary("prometheus-alertmanager",
                                                        "alertmanager") is None:  # fmt: skip
        log.warning("demo: prometheus / alertmanager binaries not found (scripts/setup.sh): "
                    "running without them")  # fmt: skip
        return None
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        log.warning("demo: aiosmtpd missing (dev extra): running without Prometheus")
        return None
    stack = ObservabilityStack(
        root, exporter, webhook_token, on_slack=print_slack, on_email=print_email
    )
    await stack.start()
    return stack

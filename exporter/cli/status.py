"""``arb-exporter status``: a terminal view of a running exporter, read over its HTTP API.

Feeds (``/readyz``), the best live opportunities with their trend arrows
(``/api/opportunities``), insights (``/api/insights``) and the latest windows
(``/api/windows``) as rich tables; ``--watch`` redraws in place. ``--web.config.file`` (the
exporter's own) switches to https trusting its certificate; basic auth takes ``--web.user``
and a password from ``--web.password-file`` or ``$ARB_EXPORTER_WEB_PASSWORD`` (never argv, which
other local users can read). ``--redis.url URL`` shows the global view instead: every shard's
route summary read from the shared Redis (exporter/store/summary.py), the owner shard of each
symbol, and the shards whose summary is stale or missing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

LEVEL_STYLE = {"low": "green", "medium": "yellow", "high": "red"}
ARROW_STYLE = {"▲": "green", "▼": "red", "–": "dim"}
# Not CRYPTOARB_*: that prefix is reserved for config overrides (an unknown key is an error).
PASSWORD_ENV = "ARB_EXPORTER_WEB_PASSWORD"
_AUTH_HINT = f"check --web.user and --web.password-file / ${PASSWORD_ENV}"


class Unreachable(RuntimeError):
    """The API could not be read (connection, TLS or HTTP error); the message is one line."""


@dataclass(frozen=True)
class Client:
    """How to reach the exporter: https trust and the Authorization header, if any."""

    context: ssl.SSLContext | None = None
    headers: dict[str, str] = field(default_factory=dict)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("status", help="show a running exporter's feeds, opportunities, windows")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--url", help="exporter base URL (default http://127.0.0.1:9877)")
    src.add_argument("--config.file", dest="config_file", help="read web.listen_address from it")
    src.add_argument(
        "--redis.url",
        dest="redis_url",
        help="global view of every shard from the shared Redis (shard summaries), no HTTP",
    )
    p.add_argument(
        "--stale-after",
        dest="stale_after",
        type=float,
        default=5.0,
        help="with --redis.url: a shard summary older than this (s) is flagged stale",
    )
    p.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    p.add_argument("--notional", type=float, help="evaluate this size from the live books")
    p.add_argument("--top", type=int, default=10, help="opportunities shown")
    p.add_argument("--windows", type=int, default=10, help="latest log entries shown")
    p.add_argument(
        "--web.config.file",
        dest="web_config_file",
        help="the exporter's web-config file: https, trusting its certificate",
    )
    p.add_argument(
        "--web.ca-file",
        dest="web_ca_file",
        help="trust this CA for https instead (certificate signed by a CA)",
    )
    p.add_argument("--web.user", dest="web_user", help="basic auth user")
    p.add_argument(
        "--web.password-file",
        dest="web_password_file",
        help=f"file holding the basic auth password (default: ${PASSWORD_ENV})",
    )
    p.add_argument("--log.level", dest="log_level", default="warning",
                   choices=["debug", "info", "warning", "error"])  # fmt: skip


def base_url(url: str | None, config_file: str | None, scheme: str = "http") -> str:
    if url:
        return url.rstrip("/")
    if config_file:
        from exporter.config import load

        web = load(config_file).web
        host = web.host if web.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}:{web.port}"
    return f"{scheme}://127.0.0.1:9877"


def usage_error(args: argparse.Namespace) -> str | None:
    if args.notional is not None and not args.notional > 0:
        return "--notional must be > 0"
    if getattr(args, "redis_url", None) and args.notional is not None:
        return "--notional needs the live books (--url), not --redis.url"
    if not getattr(args, "stale_after", 5.0) > 0:
        return "--stale-after must be > 0"
    if args.web_password_file and not args.web_user:
        return "--web.password-file needs --web.user"
    if args.web_user and not args.web_password_file and PASSWORD_ENV not in os.environ:
        return f"--web.user needs --web.password-file or ${PASSWORD_ENV}"
    return None


def client(args: argparse.Namespace) -> tuple[str, Client]:
    """(base URL, Client) from the options; ConfigError (exit 2) on an unreadable or bad file.
    The password comes from a file or the environment, never from argv."""
    from exporter.config import ConfigError, Problem
    from exporter.http.webconfig import client_settings
    from exporter.http.webconfig import load as load_web_config

    password = os.environ.get(PASSWORD_ENV)
    if args.web_password_file:
        try:
            password = Path(args.web_password_file).read_text(encoding="utf-8").strip()
        except OSError as err:
            problem = Problem("", f"cannot read file: {err.strerror}")
            raise ConfigError(args.web_password_file, [problem]) from err
    web = load_web_config(args.web_config_file) if args.web_config_file else None
    try:
        settings = client_settings(web, args.web_user, password, args.web_ca_file)
        context = settings.ssl if isinstance(settings.ssl, ssl.SSLContext) else None
        if context is None and args.web_ca_file:  # --url https://... without the web config
            context = ssl.create_default_context(cafile=args.web_ca_file)
    except OSError as err:  # ssl.SSLError too: not a PEM certificate
        problem = Problem("", f"cannot use as a CA file: {err.strerror or err}")
        raise ConfigError(str(args.web_ca_file), [problem]) from err
    return base_url(args.url, args.config_file, settings.scheme), Client(context, settings.headers)


def _error_message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    return str(data.get("error", "")) if isinstance(data, dict) else ""


def get_json(url: str, timeout: float = 5.0, via: Client | None = None) -> Any:
    via = via or Client()
    request = urllib.request.Request(url, headers=via.headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=via.context) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        body = err.read()
        if err.code == 503:  # /readyz, and /api/windows without Redis: a useful JSON body
            try:
                return json.loads(body)
            except ValueError:
                pass
        detail = _error_message(body) or err.reason
        hint = f" ({_AUTH_HINT})" if err.code == 401 else ""
        raise Unreachable(f"{url}: HTTP {err.code} {detail}{hint}") from err
    except urllib.error.URLError as err:  # e.g. [SSL: CERTIFICATE_VERIFY_FAILED] ...
        raise Unreachable(f"exporter not reachable: {url}: {err.reason}") from err
    except (OSError, ValueError) as err:
        raise Unreachable(f"exporter not reachable: {url}: {err}") from err


def fetch(
    base: str, notional: float | None, windows: int, via: Client | None = None
) -> dict[str, Any]:
    q = f"?notional={notional:g}" if notional else ""
    data: dict[str, Any] = {
        "ready": get_json(base + "/readyz", via=via),
        "opportunities": get_json(base + "/api/opportunities" + q, via=via),
        "insights": get_json(base + "/api/insights", via=via),
    }
    data["windows"] = get_json(base + f"/api/windows?limit={windows}", via=via)
    return data


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:+.3f}%"


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{x * 1000:.1f} ms"


def _level(lvl: str | None) -> Text:
    return Text(lvl or "—", style=LEVEL_STYLE.get(lvl or "", ""))


def _arrow(trend: dict[str, Any]) -> Text:
    """The shortest trend window's arrow (the most reactive one)."""
    for _w, t in sorted(trend.items(), key=lambda kv: float(kv[0])):
        if t.get("arrow"):
            return Text(t["arrow"], style=ARROW_STYLE.get(t["arrow"], ""))
    return Text("·", style="dim")


def _time(ts: Any) -> str:
    try:
        return dt.datetime.fromtimestamp(float(ts)).strftime("%H:%M:%S")
    except (TypeError, ValueError, OverflowError):
        return "—"


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col)
    return table


def _feeds_table(base: str, ready: dict[str, Any]) -> Table:
    feeds = _table(f"Feeds — {base}", "exchange", "market", "state")
    for name, state in sorted(ready.get("books", {}).items()):
        ex, _, market = name.partition(":")
        feeds.add_row(ex, market, Text(state, style="green" if state == "live" else "red"))
    feeds.caption = f"redis up: {ready.get('redis_up')}"
    return feeds


def _opportunities_table(opp: dict[str, Any], top: int) -> Table:
    size = f" at {opp['notional']:g}" if opp.get("notional") else ""
    opps = Table(title=f"Best opportunities{size} (net of fees and slippage)", title_justify="left")
    for col in ("symbol", "buy → sell", "notional", "net ROI", "net profit", "gross", "trend"):
        opps.add_column(col, justify="right" if col not in ("symbol", "buy → sell") else "left")
    opps.add_column("risk")
    opps.add_column("window")
    for e in opp.get("opportunities", [])[:top]:
        risk = e.get("risk") or {}
        opps.add_row(
            e["symbol"],
            f"{e['buy_exchange']} → {e['sell_exchange']}",
            f"{e['notional']:g}",
            _pct(e.get("net_roi")) if e.get("fillable") else "not fillable",
            "—" if e.get("net_profit") is None else f"{e['net_profit']:+.2f}",
            _pct(e.get("gross_spread")),
            _arrow(e.get("trend", {})),
            _level(risk.get("level")),
            Text("OPEN", style="bold green") if e.get("window_open") else "",
        )
    return opps


def _latency_table(ins: dict[str, Any]) -> Table:
    lat = _table(
        "Latency audit",
        "exchange", "p50", "p99", "clock offset", "negative", "reconnects", "resyncs", "level",
    )  # fmt: skip
    for a in ins.get("latency", []):
        lat.add_row(
            a["exchange"], _ms(a["p50"]), _ms(a["p99"]), _ms(a["clock_offset"]),
            str(a["negative_latency"]), str(a["reconnects"]), str(a["resyncs"]),
            _level(a["level"]),
        )  # fmt: skip
    return lat


def _pressure_table(ins: dict[str, Any]) -> Table:
    pressure = _table(
        "Buying pressure (reference band)", "exchange", "symbol", "bid share", "level"
    )
    for p in ins.get("buying_pressure", []):
        pressure.add_row(p["exchange"], p["symbol"], f"{p['value']:.0%}", _level(p["level"]))
    return pressure


def _risk_table(ins: dict[str, Any]) -> Table:
    risks = _table("Highest execution risk", "symbol", "buy → sell", "notional", "score", "why")
    for r in ins.get("execution_risk", [])[:5]:
        risks.add_row(
            r["symbol"], f"{r['buy_exchange']} → {r['sell_exchange']}", f"{r['notional']:g}",
            Text(f"{r['score']:.2f}", style=LEVEL_STYLE.get(r["level"], "")), r["explanation"],
        )  # fmt: skip
    return risks


def _correlation_table(ins: dict[str, Any]) -> Table:
    corr = ins.get("correlation", {})
    title = f"Spread correlation ({corr.get('window_seconds', 0):g} s)"
    corr_t = _table(title, "symbol", "other", "r", "samples")
    for c in corr.get("pairs", []):
        corr_t.add_row(c["symbol"], c["other_symbol"], f"{c['ratio']:+.2f}", str(c["samples"]))
    return corr_t


def _windows_table(win: dict[str, Any]) -> Table:
    windows = _table(
        "Latest windows (Redis log)",
        "end", "kind", "symbol", "buy → sell", "notional", "duration", "peak ROI",
        "close / status",
    )  # fmt: skip
    if "error" in win:
        windows.caption = f"unavailable: {win['error']}"
    for w in win.get("windows", []):
        if w.get("kind") == "window":
            windows.add_row(
                _time(w.get("end")), "window", w.get("symbol", ""),
                f"{w.get('buy_exchange')} → {w.get('sell_exchange')}", str(w.get("notional")),
                f"{float(w.get('duration_seconds', 0)):.1f} s",
                _pct(float(w["peak_roi"])) if w.get("peak_roi") else "—",
                str(w.get("close_reason", "")),
            )  # fmt: skip
        else:
            windows.add_row(
                _time(w.get("logged_at")), str(w.get("kind")), str(w.get("alertname", "")),
                "", "", "", "", str(w.get("status", "")),
            )  # fmt: skip
    return windows


def render(base: str, data: dict[str, Any], top: int) -> RenderableType:
    """Every section, top to bottom: feeds, opportunities, insights, windows."""
    ready, opp, ins, win = data["ready"], data["opportunities"], data["insights"], data["windows"]
    return Group(
        _feeds_table(base, ready),
        _opportunities_table(opp, top),
        _latency_table(ins),
        _pressure_table(ins),
        _risk_table(ins),
        _correlation_table(ins),
        _windows_table(win),
    )


def fetch_global(redis_url: str, stale_after: float, timeout: float = 3.0) -> dict[str, Any]:
    """Every shard's summary from Redis, merged (``/api/opportunities?scope=global``)."""
    import redis

    from exporter.store.summary import SUMMARY_PATTERN, global_view, parse_summaries

    safe = redis_url.split("@")[-1]  # never print a password
    try:
        client = redis.Redis.from_url(
            redis_url, decode_responses=True, socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )  # fmt: skip
        try:
            keys = sorted(set(client.scan_iter(match=SUMMARY_PATTERN, count=1000)))
            values: dict[str, Any] = {str(k): client.get(k) for k in keys}
        finally:
            client.close()
    except (redis.RedisError, ValueError, OSError) as err:
        raise Unreachable(f"redis not reachable: {safe}: {err}") from err
    return global_view(parse_summaries(values), time.time(), stale_after)


SHARD_STYLE = {"ok": "green", "stale": "red", "missing": "red", "count_mismatch": "yellow"}


def render_global(source: str, view: dict[str, Any], top: int) -> RenderableType:
    """Shards (status, age), the owner shard of every symbol, the best routes of all shards."""
    shards = _table(
        f"Shards — {source} (stale after {view['stale_after']:g} s)",
        "shard", "status", "count", "age", "symbols", "routes",
    )  # fmt: skip
    for s in view["shards"]:
        age = "—" if s["age_seconds"] is None else f"{s['age_seconds']:.1f} s"
        shards.add_row(
            str(s["shard"]), Text(s["status"], style=SHARD_STYLE.get(s["status"], "")),
            str(s["count"] if s["count"] is not None else "—"), age, str(s["symbols"]),
            str(s["routes"]),
        )  # fmt: skip
    if view["flagged_shards"]:
        flagged = ", ".join(str(i) for i in view["flagged_shards"])
        shards.caption = f"flagged: shard {flagged} (stale, missing or another shard.count)"
    symbols = _table("Symbols by owner shard", "symbol", "shard", "status")
    for e in view["symbols"]:
        symbols.add_row(
            e["symbol"], str(e["shard"]), Text(e["status"], style=SHARD_STYLE.get(e["status"], ""))
        )
    opps = _table(
        "Best opportunities, all shards (net of fees and slippage)",
        "symbol", "shard", "buy → sell", "notional", "net ROI", "net profit", "window",
    )  # fmt: skip
    for e in view["opportunities"][:top]:
        opps.add_row(
            e["symbol"], f"{e['shard']}{' (stale)' if e.get('stale') else ''}",
            f"{e['buy_exchange']} → {e['sell_exchange']}", f"{e['notional']:g}",
            _pct(e.get("net_roi")) if e.get("fillable") else "not fillable",
            "—" if e.get("net_profit") is None else f"{e['net_profit']:+.2f}",
            Text("OPEN", style="bold green") if e.get("window_open") else "",
        )  # fmt: skip
    return Group(shards, symbols, opps)


def run_global(args: argparse.Namespace) -> int:
    source = args.redis_url.split("@")[-1]
    return _show(
        args,
        lambda: fetch_global(args.redis_url, args.stale_after),
        lambda data: render_global(source, data, args.top),
    )


def _show(
    args: argparse.Namespace,
    load: Callable[[], Any],
    draw: Callable[[Any], RenderableType],
) -> int:
    """Print one view (exit 1 when unreachable), or redraw it every ``--interval`` with
    ``--watch`` until Ctrl-C."""
    console = Console()

    def view() -> RenderableType:
        try:
            return draw(load())
        except Unreachable as err:
            return Text(str(err), style="red")

    if not args.watch:
        try:
            data = load()
        except Unreachable as err:
            print(f"status: {err}", file=sys.stderr)
            return 1
        console.print(draw(data))
        return 0
    try:
        with Live(view(), console=console, auto_refresh=False, screen=False) as live:
            while True:
                time.sleep(max(0.2, args.interval))
                live.update(view(), refresh=True)
    except KeyboardInterrupt:
        return 0


def run(args: argparse.Namespace) -> int:
    from exporter.config import ConfigError

    problem = usage_error(args)
    if problem:
        print(f"status: {problem}", file=sys.stderr)
        return 2
    if getattr(args, "redis_url", None):
        return run_global(args)
    try:
        base, via = client(args)
    except ConfigError as err:  # same message and exit code as `run`
        print(err, file=sys.stderr)
        return 2
    return _show(
        args,
        lambda: fetch(base, args.notional, args.windows, via),
        lambda data: render(base, data, args.top),
    )

"""``arb-exporter replay``: Tardis ``incremental_book_L2`` files through the live analytics on
recorded time (docs/replay.md).

Writes the closed windows (``--windows``, one JSON object per line: the Redis ``windows`` log
entry), the report (``--report``: JSON, or HTML with the ``report`` extra), optionally the
windows log, tickers and history under ``replay.key_prefix`` in ``--redis.url``, and prints a
summary table. Exit codes: 0, 1 when no row could be used, 2 on bad configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from exporter.config import Config, ConfigError, load
from exporter.replay.tardis import TardisFormatError
from exporter.replay.terms import ReplayInputError, missing_terms

log = logging.getLogger(__name__)

EXIT_NO_DATA = 1
EXIT_USAGE = 2


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "replay", help="replay Tardis incremental_book_L2 files through the analytics"
    )
    p.add_argument("--config.file", dest="config_file", required=True, help="YAML config")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE",
                   help="incremental_book_L2 CSV files (gzip or plain)")  # fmt: skip
    p.add_argument("--speed", type=float, default=0.0,
                   help="0: as fast as possible (default); X: X times the recorded pace, "
                        "serving /metrics and the JSON API")  # fmt: skip
    p.add_argument("--windows", type=Path, help="closed windows, one JSON object per line")
    p.add_argument("--report", type=Path, help="report: PATH.json, or PATH.html")
    p.add_argument("--web.listen-address", dest="listen_address",
                   help="with --speed > 0 (default: web.listen_address)")  # fmt: skip
    p.add_argument("--jobs", type=int, default=1, help="processes (split by symbol)")
    p.add_argument("--redis.url", dest="redis_url",
                   help="also write to this Redis, under replay.key_prefix")  # fmt: skip
    p.add_argument("--log.level", dest="log_level", default="info",
                   choices=["debug", "info", "warning", "error"])  # fmt: skip


def replay_notes(config: Config) -> list[str]:
    """check-config: what the config lacks to replay files without a markets sidecar."""
    return missing_terms(config)


def _usage(args: argparse.Namespace) -> str | None:
    if args.speed < 0:
        return "--speed must be >= 0"
    if args.jobs < 1:
        return "--jobs must be >= 1"
    if args.speed > 0 and args.jobs > 1:
        return "--speed > 0 replays in one process: drop --jobs"
    if args.report is not None and args.report.suffix.lower() not in (".json", ".html"):
        return "--report must end in .json or .html"
    if args.listen_address and args.speed <= 0:
        return "--web.listen-address needs --speed > 0 (only a paced replay serves HTTP)"
    missing = [str(p) for p in args.files if not p.is_file()]
    if missing:
        return f"no such file: {', '.join(missing)}"
    return None


def _listen(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--web.listen-address: expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _html_renderer() -> Callable[[Mapping[str, Any]], str]:
    """render_html, or ReplayInputError (one line, the install hint) when the optional
    ``report`` extra is missing: checked before the replay, not after it."""
    try:
        from exporter.replay import report_html

        report_html.require_extra()
    except ImportError as err:
        raise ReplayInputError(str(err)) from err
    return report_html.render_html


def write_outputs(
    args: argparse.Namespace, windows: Sequence[Mapping[str, Any]], report: Mapping[str, Any]
) -> None:
    if args.windows is not None:
        with args.windows.open("w", encoding="utf-8") as f:
            for entry in windows:
                f.write(json.dumps(entry, separators=(",", ":")) + "\n")
    if args.report is not None:
        if args.report.suffix.lower() == ".html":
            text = _html_renderer()(report)
        else:
            text = json.dumps(report, indent=1) + "\n"
        args.report.write_text(text, encoding="utf-8")


async def write_windows_to_redis(
    config: Config, url: str, windows: Sequence[Mapping[str, Any]]
) -> bool:
    """The windows log entries under the replay prefix, in log order; True when written."""
    from prometheus_client import CollectorRegistry

    from exporter.store.writer import StateWriter

    writer = StateWriter(
        url,
        registry=CollectorRegistry(),
        log_maxlen=config.windows.log_maxlen,
        socket_timeout=config.redis.socket_timeout,
        key_prefix=config.replay.key_prefix,
    )
    for entry in windows:
        writer.append_log(entry)
    done = await writer.flush()
    await writer.close(timeout=5.0)
    return done


SUMMARY_ROWS = 20


def summary_table(report: Mapping[str, Any], rows: int = SUMMARY_ROWS) -> Table:
    """The routes that had windows, most summed peak profit first, at most ``rows`` of them;
    the caption counts the others (every route is in ``--report``)."""
    span = report["span"]
    table = Table(
        title=f"replay: {report['rows']:,} rows, {report['updates']:,} updates, "
        f"{span['seconds']:,.1f} s recorded",
        title_justify="left",
    )
    table.add_column("route")
    for col in ("notional", "windows", "in window", "p50 s", "max s", "Σ peak profit",
                "fillable"):  # fmt: skip
        table.add_column(col, justify="right")
    paid = [r for r in report["routes"] if r["windows"]]
    paid.sort(key=lambda r: -r["peak_profit_sum"])  # stable: configuration order on ties
    for r in paid[:rows]:
        d = r["duration_seconds"]
        table.add_row(
            f"{r['symbol']} {r['buy_exchange']} → {r['sell_exchange']}",
            f"{r['notional']:g}",
            str(r["windows"]),
            f"{100 * r['time_in_window_ratio']:.2f}%",
            "-" if d["p50"] is None else f"{d['p50']:.2f}",
            "-" if d["max"] is None else f"{d['max']:.2f}",
            f"{r['peak_profit_sum']:.2f}",
            f"{100 * r['fillable_ratio']:.1f}%",
        )
    hidden = len(paid) - min(len(paid), rows)
    idle = len(report["routes"]) - len(paid)
    notes = [f"{hidden} more route(s) with windows"] if hidden else []
    notes.append(f"{idle} route(s) without a window")
    table.caption = "; ".join(notes) + " (every route: --report)"
    return table


def _log_rejected(report: Mapping[str, Any]) -> None:
    rej = report["rejected"]
    for u in rej["unknown"]:
        log.warning(
            "unknown exchange/symbol %s %s: %d rows skipped (not a watched book; map it with "
            "exchanges.<id>.tardis_exchange or markets.<market>.tardis_symbol)",
            u["exchange"], u["symbol"], u["rows"],
        )  # fmt: skip
    if rej["malformed"] or rej["truncated"]:
        log.warning(
            "%d malformed rows skipped, %d truncated files", rej["malformed"], rej["truncated"]
        )


async def _replay(args: argparse.Namespace, config: Config) -> int:
    # Imported here: the rest of the CLI does not pay for the analytics' imports.
    from exporter.replay.jobs import run_jobs
    from exporter.replay.report import finalize
    from exporter.replay.session import Options

    options = Options(
        speed=args.speed,
        listen=_listen(args.listen_address),
        redis_url=args.redis_url,
        progress=True,
    )
    # A file given twice would replay its rows twice.
    unique: dict[Path, Path] = {}
    for path in args.files:
        unique.setdefault(path.resolve(), path)
    files = list(unique.values())
    partials = await run_jobs(config, files, args.jobs, options)
    windows, report = finalize(config, partials)
    _log_rejected(report)
    try:
        write_outputs(args, windows, report)
    except OSError as err:
        log.error("cannot write an output: %s", err)
        return EXIT_USAGE
    if args.redis_url and not await write_windows_to_redis(config, args.redis_url, windows):
        log.error("redis: the windows log was not fully written to %s", args.redis_url)
    # Not cut to 80 columns when stdout is not a terminal (a log, a pipe).
    console = Console()
    Console(width=max(console.width, 120)).print(summary_table(report))
    if not any(p["used_updates"] for p in partials):
        log.error("no row of the input could be used (no watched book in it)")
        return EXIT_NO_DATA
    return 0


def run(args: argparse.Namespace) -> int:
    problem = _usage(args)
    if problem:
        print(f"replay: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = load(args.config_file)
        _listen(args.listen_address)
    except (ConfigError, ValueError) as err:
        print(err, file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.report is not None and args.report.suffix.lower() == ".html":
            _html_renderer()  # before the replay, not after it
        return asyncio.run(_replay(args, config))
    except (ReplayInputError, TardisFormatError) as err:
        print(f"replay: {err}", file=sys.stderr)
        return EXIT_USAGE

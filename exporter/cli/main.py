"""Command line: ``arb-exporter run | record | demo | simulate | check-config | status``.

Exit codes: 0 success, 2 bad configuration or usage, 1 runtime failure.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from exporter import __version__
from exporter.cli.replay import add_parser as add_replay_parser
from exporter.cli.replay import replay_notes
from exporter.cli.replay import run as cmd_replay
from exporter.cli.status import add_parser as add_status_parser
from exporter.cli.status import run as cmd_status
from exporter.config import Config, ConfigError, load, parse
from exporter.http.webconfig import WebConfigFile
from exporter.http.webconfig import load as load_web_config

if TYPE_CHECKING:
    from exporter.devstack.observability import ObservabilityStack

log = logging.getLogger("exporter")

EXIT_CONFIG = 2


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log.level", dest="log_level", default="info",
                   choices=["debug", "info", "warning", "error"])  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arb-exporter", description="Cross-exchange crypto arbitrage exporter for Prometheus"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="watch the configured (live) exchanges and serve /metrics")
    run.add_argument("--config.file", dest="config_file", required=True, help="YAML config")
    run.add_argument(
        "--web.listen-address", dest="listen_address", help="override web.listen_address"
    )
    run.add_argument(
        "--web.config.file",
        dest="web_config_file",
        help="TLS and basic auth (Prometheus exporter-toolkit web-config format)",
    )
    run.add_argument(
        "--record", dest="record_dir", metavar="DIR",
        help="also record the books to DIR (Tardis incremental_book_L2 files)",
    )  # fmt: skip
    _add_common(run)

    rec = sub.add_parser("record", help="record the configured books to Tardis files (no Redis)")
    rec.add_argument("--config.file", dest="config_file", required=True, help="YAML config")
    rec.add_argument("--out", dest="record_dir", required=True, metavar="DIR",
                     help="output directory (created if missing)")  # fmt: skip
    rec.add_argument("--duration", type=float, metavar="S",
                     help="stop after S seconds (default: until SIGINT/SIGTERM)")  # fmt: skip
    rec.add_argument(
        "--web.listen-address", dest="listen_address", help="override web.listen_address"
    )
    _add_common(rec)

    check = sub.add_parser("check-config", help="validate a config file; exit 2 on problems")
    check.add_argument("path", nargs="?", help="config file (or use --config.file)")
    check.add_argument("--config.file", dest="config_file")
    check.add_argument(
        "--replay", action="store_true", help="also require what a replay without sidecar needs"
    )
    _add_common(check)

    demo = sub.add_parser("demo", help="simulator + exporter (+ private redis-server) on loopback")
    demo.add_argument("--web.listen-address", dest="listen_address", help="default 127.0.0.1:9877")
    demo.add_argument(
        "--redis.url",
        dest="redis_url",
        help="use this Redis (default: CRYPTOARB_REDIS_URL, else a private server)",
    )
    demo.add_argument("--simulator.port", dest="sim_port", type=int, default=0)
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--record", dest="record_dir", metavar="DIR",
                      help="also record the books to DIR (Tardis files)")  # fmt: skip
    demo.add_argument("--webhook.token-file", dest="webhook_token_file",
                      help="alert-log webhook token (default: a generated one)")  # fmt: skip
    demo.add_argument("--no-observability", dest="observability", action="store_false",
                      help="do not start Prometheus + Alertmanager on loopback")  # fmt: skip
    _add_common(demo)

    sim = sub.add_parser("simulate", help="run the exchange simulator alone",
                         add_help=False)  # fmt: skip
    sim.add_argument("sim_args", nargs=argparse.REMAINDER)
    add_status_parser(sub)
    add_replay_parser(sub)
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # ccxt logs every ws hiccup at INFO; our own counters cover them.
    logging.getLogger("ccxt").setLevel(logging.WARNING)


def _load_or_report(path: str) -> Config | None:
    try:
        return load(path)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return None


def cmd_check_config(args: argparse.Namespace) -> int:
    path = args.config_file or args.path
    if not path:
        print("check-config: give a config file (positional or --config.file)", file=sys.stderr)
        return EXIT_CONFIG
    config = _load_or_report(path)
    if config is None:
        return EXIT_CONFIG
    books = sum(len(m) for m in config.symbols.values())
    print(
        f"{path}: OK ({len(config.exchanges)} exchanges, {len(config.symbols)} symbols, "
        f"{books} books, notionals {config.notionals}, reference pair "
        f"{'/'.join(config.reference_pair)} at {config.reference_notional:g})"
    )
    notes = replay_notes(config)
    for note in notes:
        print(f"{'problem' if args.replay else 'note'} for replay: {note}")
    return EXIT_CONFIG if args.replay and notes else 0


def _with_listen(config: Config, listen: str | None) -> Config:
    if not listen:
        return config
    data = config.model_dump(mode="python")
    data["web"]["listen_address"] = listen
    return parse(data, "command line", environ={})


async def _serve(
    config: Config,
    web_config: WebConfigFile | None = None,
    record_dir: Path | None = None,
    duration: float | None = None,
) -> int:
    from exporter.app import Exporter

    exporter = Exporter(config, web_config, record_dir=record_dir)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, exporter.stop)
    if duration is not None:
        loop.call_later(duration, exporter.stop)
    await exporter.run()
    # Windows are closed and Redis flushed by now. A library task that ignores cancellation
    # must not keep the process alive (asyncio.run would wait for it forever).
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in others:
        task.cancel()
    if others:
        _done, pending = await asyncio.wait(others, timeout=2.0)
        if pending:
            log.warning("exit: %d task(s) ignored cancellation; exiting anyway", len(pending))
            logging.shutdown()
            os._exit(0)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = _load_or_report(args.config_file)
    if config is None:
        return EXIT_CONFIG
    try:
        config = _with_listen(config, args.listen_address)
        web_config = load_web_config(args.web_config_file) if args.web_config_file else None
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EXIT_CONFIG
    record_dir = _record_dir(args.record_dir) if args.record_dir else None
    if args.record_dir and record_dir is None:
        return EXIT_CONFIG
    return asyncio.run(_serve(config, web_config, record_dir))


def _record_dir(path: str) -> Path | None:
    """The output directory, created; None (reported) when it cannot be."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        print(f"cannot create the record directory {out}: {err}", file=sys.stderr)
        return None
    return out


def cmd_record(args: argparse.Namespace) -> int:
    """The configured books to Tardis files, with the same feeds as ``run`` and no Redis."""
    config = _load_or_report(args.config_file)
    if config is None:
        return EXIT_CONFIG
    if args.duration is not None and not args.duration > 0:
        print("record: --duration must be > 0 seconds", file=sys.stderr)
        return EXIT_CONFIG
    try:
        config = _with_listen(config, args.listen_address)
        data = config.model_dump(mode="python")
        data["redis"]["url"] = None  # recording needs no Redis
        config = parse(data, "command line", environ={})
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EXIT_CONFIG
    record_dir = _record_dir(args.record_dir)
    if record_dir is None:
        return EXIT_CONFIG
    return asyncio.run(_serve(config, record_dir=record_dir, duration=args.duration))


def demo_config(
    base_url: str, redis_url: str | None, listen: str | None, webhook_token_file: str | None = None
) -> Config:
    """The packaged demo config pointed at a simulator at ``base_url``."""
    from exporter.simulator.endpoints import ccxt_config

    text = resources.files("exporter").joinpath("demo.yaml").read_text(encoding="utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    for ex in data["exchanges"]:
        data["exchanges"][ex]["ccxt"] = ccxt_config(ex, base_url)
    data["redis"] = {"url": redis_url}
    if listen:
        data["web"]["listen_address"] = listen
    if webhook_token_file:
        data["webhook"] = {"token_file": webhook_token_file}
    return parse(data, "demo config", environ={})


def _demo_token(path: str | None, tmp: tempfile.TemporaryDirectory[str]) -> tuple[str, str]:
    """The alert-log webhook token file and its token (generated unless given)."""
    if path:
        return path, Path(path).read_text(encoding="utf-8").strip()
    token = secrets.token_urlsafe(24)
    generated = Path(tmp.name) / "webhook_token"
    generated.write_text(token + "\n", encoding="utf-8")
    generated.chmod(0o600)
    return str(generated), token


async def _demo(args: argparse.Namespace) -> int:
    from exporter.devstack.procs import RedisProcess, SimulatorProcess

    record_dir = _record_dir(args.record_dir) if args.record_dir else None
    if args.record_dir and record_dir is None:
        return EXIT_CONFIG

    sim = SimulatorProcess(
        ["--seed", str(args.seed), "--port", str(args.sim_port), "--dislocation-every", "6"]
    )
    redis_proc: RedisProcess | None = None
    redis_url = args.redis_url or os.environ.get("CRYPTOARB_REDIS_URL")
    stack: ObservabilityStack | None = None
    tmp = tempfile.TemporaryDirectory(prefix="cryptoarb-demo-")
    try:
        await sim.start()
        if redis_url is None and shutil.which("redis-server"):
            redis_proc = RedisProcess()
            await redis_proc.start()
            redis_url = redis_proc.url
        elif redis_url is None:
            log.warning("no redis-server binary and no Redis configured: running without Redis")
        token_file, token = _demo_token(args.webhook_token_file, tmp)
        config = demo_config(sim.base_url, redis_url, args.listen_address, token_file)
        web = config.web.listen_address
        if args.observability:
            from exporter.devstack.observability import start_demo_stack

            exporter_addr = web.replace("0.0.0.0:", "127.0.0.1:")
            stack = await start_demo_stack(exporter_addr, token)
        print(
            f"\n  simulator : {sim.base_url}/control/health\n"
            f"  redis     : {redis_url or 'off'}\n"
            f"  metrics   : http://{web}/metrics\n"
            f"  readiness : http://{web}/readyz\n"
            + (f"  prometheus: {stack.prometheus.url}/alerts\n"
               f"  alertmgr  : {stack.alertmanager.url}\n"
               "  (Slack and email catchers print what they receive below)\n"
               if stack and stack.prometheus and stack.alertmanager else "")
            + "  Ctrl-C to stop\n",
            flush=True,
        )  # fmt: skip
        return await _serve(config, record_dir=record_dir)
    finally:
        if stack is not None:
            await stack.stop()
        tmp.cleanup()
        await sim.stop()
        if redis_proc is not None:
            await redis_proc.stop()


def cmd_demo(args: argparse.Namespace) -> int:
    return asyncio.run(_demo(args))


def cmd_simulate(argv: list[str]) -> int:
    from exporter.simulator.server import main as sim_main

    return sim_main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "simulate":
        _setup_logging("info")
        return cmd_simulate(argv[1:])
    args = _parser().parse_args(argv)
    _setup_logging(args.log_level)
    try:
        if args.command == "check-config":
            return cmd_check_config(args)
        if args.command == "run":
            return cmd_run(args)
        if args.command == "record":
            return cmd_record(args)
        if args.command == "demo":
            return cmd_demo(args)
        if args.command == "status":
            return cmd_status(args)
        if args.command == "replay":
            return cmd_replay(args)
    except KeyboardInterrupt:
        return 0
    return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())

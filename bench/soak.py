"""Soak: the exporter (a real ``arb-exporter run`` process) against the simulator at a high
message rate, with a private redis-server and periodic faults, for a configurable time.

Every minute it prints the exporter's RSS, the message rate, reconnects/resyncs, the feed
latency (exchange event -> local receive, mean and p99 over the minute) and the simulator's
send lag; at the end RSS growth from minute 2 to the last minute (must stay < 5 MB).

    .venv/bin/python bench/soak.py                       # 10 minutes, 200 updates/s per market
    .venv/bin/python bench/soak.py --minutes 2 --rate 100 --out /tmp/soak
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from exporter.devstack.procs import RedisProcess, SimulatorProcess, free_port  # noqa: E402
from exporter.simulator.endpoints import ccxt_config  # noqa: E402

SYMBOLS = {
    "BTC/USD": {"binance": "BTC/USDT", "kraken": "BTC/USD"},
    "ETH/USD": {"binance": "ETH/USDT", "kraken": "ETH/USD"},
    "SOL/USD": {"binance": "SOL/USDT", "kraken": "SOL/USD"},
}

# (exchange, fault body) rotated through, one every --fault-every seconds.
FAULTS: list[tuple[str, dict[str, Any]]] = [
    ("binance", {"kind": "close", "market": "BTC/USDT"}),
    ("kraken", {"kind": "abort", "market": "ETH/USD"}),
    ("binance", {"kind": "sequence_gap", "market": "ETH/USDT"}),
    ("kraken", {"kind": "bad_checksum", "market": "BTC/USD"}),
    ("kraken", {"kind": "drop_update", "market": "SOL/USD"}),
    ("binance", {"kind": "malformed_frame", "market": "SOL/USDT"}),
    ("kraken", {"kind": "stall", "market": "USDT/USD", "seconds": 3}),
    ("binance", {"kind": "rest_error", "endpoint": "depth", "status": 429, "retry_after": 1}),
    ("binance", {"kind": "sequence_gap", "market": "BTC/USDT"}),
    ("kraken", {"kind": "malformed_frame", "market": "ETH/USD"}),
]


PRINTED: list[str] = []  # what the run printed, for OUT.txt


def say(line: str) -> None:
    print(line, flush=True)
    PRINTED.append(line)


def config_data(base_url: str, redis_url: str | None, listen: str) -> dict[str, Any]:
    return {
        "exchanges": {ex: {"ccxt": ccxt_config(ex, base_url)} for ex in ("binance", "kraken")},
        "symbols": SYMBOLS,
        "quote_conversion": {"USDT": {"book": {"exchange": "kraken", "market": "USDT/USD"}}},
        "notionals": [1000, 10000, 100000],
        "feeds": {"stale_after": 2.0, "frozen_after": 30, "backoff": {"base": 0.2, "cap": 2.0}},
        "windows": {"open_threshold": 0.0, "close_threshold": -0.0002},
        "redis": {"url": redis_url, "flush_interval": 0.25},
        "web": {"listen_address": listen},
    }


def start_exporter(cfg: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "exporter.cli.main", "run", "--config.file", str(cfg)],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def parse_metrics(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {"messages": 0.0, "reconnects": 0.0, "resyncs": 0.0, "errors": {}}
    buckets: dict[float, float] = {}
    lat_sum = lat_count = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "cryptoarb_feed_messages_total":
                out["messages"] += s.value
            elif s.name == "cryptoarb_feed_reconnects_total":
                out["reconnects"] += s.value
            elif s.name == "cryptoarb_feed_resyncs_total":
                out["resyncs"] += s.value
            elif s.name == "cryptoarb_feed_errors_total":
                r = s.labels["reason"]
                out["errors"][r] = out["errors"].get(r, 0.0) + s.value
            elif s.name == "cryptoarb_feed_latency_seconds_bucket":
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
            elif s.name == "cryptoarb_feed_latency_seconds_sum":
                lat_sum += s.value
            elif s.name == "cryptoarb_feed_latency_seconds_count":
                lat_count += s.value
            elif s.name == "cryptoarb_redis_up":
                out["redis_up"] = s.value
            elif s.name == "cryptoarb_feed_up":
                out["feeds_up"] = out.get("feeds_up", 0.0) + s.value
    out["lat_buckets"], out["lat_sum"], out["lat_count"] = buckets, lat_sum, lat_count
    return out


def quantile(q: float, now: dict[float, float], before: dict[float, float]) -> float | None:
    delta = sorted((le, now[le] - before.get(le, 0.0)) for le in now)
    total = delta[-1][1] if delta else 0.0
    if total <= 0:
        return None
    for le, count in delta:
        if count >= q * total:
            return le
    return None


async def scrape(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url + "/metrics") as resp:
        return parse_metrics(await resp.text())


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    commit = _git("rev-parse", "HEAD")  # what the exporter process runs
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no", "--", "exporter"))
    sim = SimulatorProcess(["--mode", "fixed_rate", "--rate", str(args.rate), "--seed", "5"])
    redis_proc = RedisProcess()
    tmp = tempfile.TemporaryDirectory(prefix="cryptoarb-soak-")
    listen = f"127.0.0.1:{free_port()}"
    exporter: subprocess.Popen[bytes] | None = None
    rows: list[dict[str, Any]] = []
    faults_injected = 0
    try:
        await sim.start()
        await redis_proc.start()
        cfg = Path(tmp.name) / "config.yaml"
        cfg.write_text(yaml.safe_dump(config_data(sim.base_url, redis_proc.url, listen)))
        exporter = start_exporter(cfg, Path(tmp.name) / "exporter.log")
        url = f"http://{listen}"
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(url + "/readyz") as resp:
                        if resp.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise RuntimeError("exporter not ready in 30 s")
                await asyncio.sleep(0.5)
            say(
                f"soak: {args.minutes} min, {args.rate} updates/s per market, "
                f"fault every {args.fault_every:g} s; exporter pid {exporter.pid}"
            )
            header = (
                f"{'min':>3} {'rss_mib':>8} {'msg/s':>8} {'reconn':>6} {'resync':>6} "
                f"{'lat_mean_ms':>11} {'lat_p99_ms':>10} {'sim_lag_ms':>10} {'redis':>5}"
            )
            say(header)
            prev = await scrape(session, url)
            t_prev = time.monotonic()
            start = t_prev
            next_fault = start + args.fault_every
            redis_cycle = 0
            for minute in range(1, args.minutes + 1):
                end = start + 60 * minute
                while (now := time.monotonic()) < end:
                    if now >= next_fault:
                        ex, body = FAULTS[faults_injected % len(FAULTS)]
                        with contextlib.suppress(aiohttp.ClientError, OSError):
                            await session.post(
                                sim.base_url + "/control/fault", json={"exchange": ex, **body}
                            )
                        faults_injected += 1
                        next_fault += args.fault_every
                    await asyncio.sleep(min(0.5, max(0.0, end - now)))
                if args.redis_restart_every and minute % args.redis_restart_every == 0:
                    redis_cycle += 1  # a Redis outage of ~2 s, every few minutes
                    await redis_proc.stop()
                    await asyncio.sleep(2)
                    await redis_proc.start()
                cur = await scrape(session, url)
                t_cur = time.monotonic()
                dt = t_cur - t_prev
                async with session.get(sim.base_url + "/control/counters") as resp:
                    counters = await resp.json()
                n = cur["lat_count"] - prev["lat_count"]
                row = {
                    "minute": minute,
                    "rss_mib": round(rss_kib(exporter.pid) / 1024, 2),
                    "msg_per_s": round((cur["messages"] - prev["messages"]) / dt, 1),
                    "reconnects": int(cur["reconnects"] - prev["reconnects"]),
                    "resyncs": int(cur["resyncs"] - prev["resyncs"]),
                    "latency_mean_ms": round(1000 * (cur["lat_sum"] - prev["lat_sum"]) / n, 2)
                    if n
                    else None,
                    "latency_p99_le_ms": (lambda v: None if v is None else 1000 * v)(
                        quantile(0.99, cur["lat_buckets"], prev["lat_buckets"])
                    ),
                    "sim_send_lag_mean_ms": round(1000 * counters["send_lag_seconds"]["mean"], 2),
                    "redis_up": cur.get("redis_up"),
                    "feeds_up": cur.get("feeds_up"),
                    "errors_total": {k: int(v) for k, v in cur["errors"].items() if v},
                    "faults_injected": faults_injected,
                }
                rows.append(row)
                say(
                    f"{minute:>3} {row['rss_mib']:>8.2f} {row['msg_per_s']:>8.1f} "
                    f"{row['reconnects']:>6} {row['resyncs']:>6} "
                    f"{row['latency_mean_ms'] or 0:>11.2f} "
                    f"{row['latency_p99_le_ms'] or 0:>10.1f} "
                    f"{row['sim_send_lag_mean_ms']:>10.2f} {int(row['redis_up'] or 0):>5}"
                )
                prev, t_prev = cur, t_cur
        alive = exporter.poll() is None
    finally:
        if exporter is not None and exporter.poll() is None:
            exporter.terminate()
            try:
                exporter.wait(15)
            except subprocess.TimeoutExpired:
                exporter.kill()
        exit_code = exporter.returncode if exporter is not None else None
        await sim.stop()
        await redis_proc.stop()
        tmp.cleanup()
    first = 2 if len(rows) >= 2 else 1
    growth = rows[-1]["rss_mib"] - rows[first - 1]["rss_mib"] if rows else None
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": commit,
        "dirty": dirty,  # uncommitted changes under exporter/ when the run started
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "note": "2 cores shared with other test runs",
        },
        "settings": {
            "minutes": args.minutes,
            "rate_per_market": args.rate,
            "markets": 7,
            "fault_every_s": args.fault_every,
            "redis_restart_every_min": args.redis_restart_every,
        },
        "minutes": rows,
        "rss_growth_mib": None if growth is None else round(growth, 2),
        "rss_growth_from_minute": first,
        "rss_growth_limit_mib": 5.0,
        "exporter_alive_at_end": alive,
        "exporter_exit_code_after_sigterm": exit_code,
        "ok": growth is not None and growth < 5.0 and alive and exit_code == 0,
    }


def _git(*args: str) -> str:
    res = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return res.stdout.strip()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=int, default=10)
    p.add_argument("--rate", type=float, default=200.0, help="book updates/s per market")
    p.add_argument("--fault-every", type=float, default=15.0, help="seconds between faults")
    p.add_argument("--redis-restart-every", type=int, default=3, help="minutes; 0 = never")
    p.add_argument("--out", help="write OUT.json and OUT.txt (e.g. bench/results/soak)")
    args = p.parse_args()
    result = asyncio.run(soak(args))
    summary = (f"RSS growth minute {result['rss_growth_from_minute']} -> {args.minutes}: "
               f"{result['rss_growth_mib']} MiB (limit 5); exporter exit after SIGTERM "
               f"{result['exporter_exit_code_after_sigterm']}; ok={result['ok']}")  # fmt: skip
    say(summary)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        out.with_suffix(".txt").write_text("".join(f"{line}\n" for line in PRINTED))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

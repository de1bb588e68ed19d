"""N canonical symbols x 2 exchanges on one core (bench/README.md, "Scale").

    .venv/bin/python bench/bench_scale.py [--symbols 10 50 100 200] [--rate 10] [--measure 10]

For each N the simulator (``--symbols N``, fixed rate ``--rate`` updates/s per market, core 0)
serves N symbols on Binance and Kraken (+ the USDT/USD conversion book): 2N+1 markets, each with
its own ccxt client and socket in the exporter (bench/client.py exporter, core 1, Redis on,
/metrics scraped every ``--scrape-interval`` s, 5 by default as in prometheus/prometheus.yml).
After every feed is live and a warm-up, over ``--measure``
seconds: exporter CPU (share of one core), RSS, the simulator's send lag, and the client's
backlog (messages sent but not yet handled, in seconds of traffic).

``--rate 0`` (quiet): the books go live at 10 updates/s, then the simulator freezes every book
(it still answers pings and sends Kraken heartbeats) and the exporter's CPU is measured over
``--measure`` seconds (60 by default here) with nothing happening, including the reconnects a
silent market causes every ``feeds.stale_after`` (counted from /metrics); ``quiet.json``.

``--raw`` runs a bare ccxt.pro loop (bench/client.py raw) on the same markets instead: the
CPU that ccxt.pro alone needs, the floor under the exporter's figure (without
permessage-deflate, as the exporter's clients).

``--venues 5`` serves every symbol on all five simulated venues (Binance, Kraken, Bybit, OKX,
Coinbase: 5N+1 markets, 20 routes per symbol; ``scale_5venues.json``).
"""

from __future__ import annotations

import argparse
import re
import time
import urllib.request
from typing import Any

from common import (
    Client,
    Redis,
    Scraper,
    Sim,
    cpu_seconds,
    free_port,
    median,
    rss_mb,
    table,
    write_results,
)


def counter_sum(port: int, name: str) -> float:
    """Sum of every sample of ``name`` in the exporter's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
        body = resp.read().decode()
    return sum(float(v) for v in re.findall(rf"^{name}{{[^}}]*}} (\S+)$", body, re.M))


def measure_n(args: argparse.Namespace, n: int, redis: Redis) -> dict[str, Any]:
    venues = ["--venues", str(args.venues)]
    quiet = args.rate == 0
    sim = Sim(args.sim_cpus, n, 10.0 if quiet else args.rate, *venues)
    port = free_port()
    if args.raw:  # without permessage-deflate, as the exporter's clients
        cmd = ["raw", "--base-url", sim.base_url, "--symbols", str(n), "--no-compress", *venues]
    else:
        cmd = ["exporter", "--base-url", sim.base_url, "--symbols", str(n), "--redis", redis.url,
               "--port", str(port), "--stale-after", str(args.stale_after), *venues]  # fmt: skip
    client = Client(args.client_cpus, cmd)
    scraper = None
    try:
        t = time.time()
        client.wait_live(timeout=300)
        startup = time.time() - t
        if quiet:
            sim.post("/control/freeze")  # keepalives only from now on
        if not args.raw:
            scraper = Scraper(f"http://127.0.0.1:{port}/metrics", args.scrape_interval)
        time.sleep(args.warm)
        sim.post("/control/counters/reset")
        if quiet and not args.raw:
            reconnects0 = counter_sum(port, "cryptoarb_feed_reconnects_total")
        r0, c0, t0 = client.report(), cpu_seconds(client.pid), time.time()
        rss: list[float] = []
        while time.time() - t0 < args.measure:
            time.sleep(0.5)
            rss.append(rss_mb(client.pid))
        r1, c1, t1 = client.report(), cpu_seconds(client.pid), time.time()
        counters = sim.counters()
        extra: dict[str, Any] = {}
        if quiet and not args.raw:
            reconnects = counter_sum(port, "cryptoarb_feed_reconnects_total") - reconnects0
            extra = {"quiet": True, "reconnects": reconnects, "measure_s": round(t1 - t0, 1)}
        sent_rate = sim.sent(counters) / (t1 - t0)
        handled_rate = (r1["handled"] - r0["handled"]) / max(r1["t"] - r0["t"], 1e-9)
        # Kraken heartbeats (1/s per socket) are handled but not in messages_sent (and
        # Coinbase's, which the exporter subscribes).
        beats = n + 1 + (n if args.venues == 5 and not args.raw else 0)
        backlog = max(0.0, (sent_rate + beats - handled_rate) * args.measure) / max(sent_rate, 1)
        return {
            "symbols": n,
            "venues": args.venues,
            "markets": args.venues * n + 1,
            "offered_msgs_per_s": round(sent_rate, 1),
            "cpu_share_of_core": round((c1 - c0) / (t1 - t0), 3),
            "rss_mb": round(max(rss), 1),
            "send_lag_max_ms": round(counters["send_lag_seconds"]["max"] * 1000, 1),
            "backlog_ms": round(backlog * 1000, 1),
            "live": f"{r1['live']}/{r1['feeds']}",
            "startup_s": round(startup, 1),
            "scrape_ms_median": round(median(scraper.times) * 1000, 1)
            if scraper and scraper.times
            else None,
            "scrape_bytes": scraper.sizes[-1] if scraper and scraper.sizes else None,
            **extra,
        }
    finally:
        if scraper is not None:
            scraper.stop()
        client.stop()
        sim.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--symbols", type=int, nargs="+", default=[10, 50, 100, 200])
    p.add_argument("--rate", type=float, default=10.0, help="updates/s per market (0: quiet)")
    # past the exporter's one-off gc.freeze() 15 s after start (app.py), so it is not measured
    p.add_argument("--warm", type=float, default=25.0)
    p.add_argument("--measure", type=float, default=None, help="s (10; 60 with --rate 0)")
    p.add_argument(
        "--stale-after", type=float, default=10.0,
        help="exporter feeds.stale_after, s (a quiet market reconnects after it)",
    )  # fmt: skip
    p.add_argument("--sim-cpus", default="0")
    p.add_argument("--client-cpus", default="1")
    p.add_argument(
        "--raw", action="store_true",
        help="a bare ccxt.pro loop on the same markets instead (the floor; scale_raw.json)",
    )  # fmt: skip
    p.add_argument(
        "--scrape-interval", type=float, default=5.0, help="s (prometheus/prometheus.yml: 5)"
    )
    p.add_argument("--out", default=None, help="bench/results/<OUT>.json instead")
    p.add_argument(
        "--venues", type=int, choices=[2, 5], default=2,
        help="5: every symbol on Binance, Kraken, Bybit, OKX and Coinbase (scale_5venues.json)",
    )  # fmt: skip
    args = p.parse_args()
    if args.measure is None:
        args.measure = 60.0 if args.rate == 0 else 10.0
    started = time.time()
    redis = Redis()
    rows, figures = [], []
    try:
        for n in args.symbols:
            f = measure_n(args, n, redis)
            figures.append(f)
            ok = f["cpu_share_of_core"] < 0.85 and f["send_lag_max_ms"] + f["backlog_ms"] < 100
            print(f"  N={n}: {f}", flush=True)
            rows.append(
                [n, f["markets"], f["offered_msgs_per_s"], f"{f['cpu_share_of_core']:.0%}",
                 f["rss_mb"], f["send_lag_max_ms"], f["backlog_ms"], f["scrape_ms_median"],
                 f["startup_s"], "ok" if ok else "over"]
            )  # fmt: skip
    finally:
        redis.stop()
    print()
    headers = ["N", "markets", "msg/s", "CPU", "RSS MB", "send lag ms", "backlog ms",
               "scrape ms", "startup s", "<85% & <100ms"]  # fmt: skip
    print(table(headers, rows))
    settings = {"rate_per_market": args.rate, "scrape_interval_s": args.scrape_interval}
    settings["stale_after_s"] = args.stale_after
    settings["client"] = "raw ccxt.pro" if args.raw else "exporter"
    name = "scale_raw" if args.raw else "scale"
    if args.venues == 5:
        name = "scale_5venues_raw" if args.raw else "scale_5venues"
    if args.rate == 0:
        name = "quiet" if args.venues == 2 else f"quiet_{args.venues}venues"
        name += "_raw" if args.raw else ""
        if args.stale_after != 10.0:
            name += f"_stale{args.stale_after:g}"
    name = args.out or name
    path = write_results(name, {**settings, "venues": args.venues, "runs": figures}, started)
    print(f"results: {path}")


if __name__ == "__main__":
    main()

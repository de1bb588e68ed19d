"""Saturated ingestion: bare ccxt.pro vs the exporter, and /metrics latency meanwhile
(bench/README.md, "Firehose").

    .venv/bin/python bench/bench_firehose.py [--reps 3] [--measure 10] [--series 1000 10000]

The simulator (core 0, with this script and its scraper) runs in firehose mode limited to one
symbol on two venues, BTC/USDT on Binance and BTC/USD on Kraken: each sends the next update as
soon as its socket queue drains, so the client (core 1) is saturated and handles as many
messages as it can. Every other market steps once a second (quiet but live).

Part 1 (ratio): a bare ccxt.pro loop (bench/client.py raw) and the exporter (Redis on,
/metrics scraped every second) alternate ``--reps`` times on the same 7 markets (BTC, ETH,
SOL on both venues + Kraken USDT/USD); each reports the messages it handled per second over
``--measure`` seconds (ccxt handler calls, every frame) and its CPU share. The ratio exporter
/ raw is the median over the reps; ``ratio_saturated`` takes only phases whose client ran at
>= 90 % of its core (below that the feed or another job held it back). The scrape latency
p50/p99/max is over every exporter phase.

Part 2 (scrape under saturation): the exporter holds ``N`` symbols x 2 venues, BTC under the
firehose and the other N - 1 at one update a second, for N giving ~1k and ~10k series (113
series per symbol at the default 3 notionals x 3 bands), and /metrics is scraped every
second for ``--scrape-measure`` seconds by two scrapers half a second apart: one keeps its
connection between scrapes, as Prometheus does (the headline figure), the other connects
anew each time (its time includes the exporter accepting the connection). Each reports the
scrape's wall time p50/p99/max as the scraper sees it.

Every phase also reports the client's CPU share and the longest event-loop iteration of each
0.1 s interval (bench/client.py --loop-stats): under a firehose each iteration drains whatever
one socket read brought, and a scrape waits a few iterations. ``--drain-cap K`` caps that drain
at K frames per callback in both clients (a measurement of a feed-side change); ``--ops`` sets
the book changes per firehose update (2).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from common import (
    Client,
    Redis,
    Scraper,
    Sim,
    cpu_seconds,
    free_port,
    median,
    percentile,
    table,
    write_results,
)

FIREHOSE = [["binance", "BTC/USDT"], ["kraken", "BTC/USD"]]
SERIES_PER_SYMBOL = 113  # default config: books, feeds, pairs, windows, insights per symbol
QUIET_RATE = 1.0  # steps/s of every market outside the firehose
SATURATED = 0.9  # share of its core above which a client is saturated


def firehose(sim: Sim, ops: int) -> None:
    sim.post(
        "/control/mode",
        {"mode": "firehose", "rate": QUIET_RATE, "markets": FIREHOSE, "ops": ops},
    )


def calm(sim: Sim) -> None:
    sim.post("/control/mode", {"mode": "fixed_rate", "rate": QUIET_RATE})


def start_client(args: argparse.Namespace, sim: Sim, mode: str, symbols: int, redis: Redis) -> Any:
    cargs = ["--base-url", sim.base_url, "--symbols", str(symbols), "--loop-stats"]
    cargs += ["--drain-cap", str(args.drain_cap)] if args.drain_cap else []
    cargs += ["--read-size", str(args.read_size)] if args.read_size else []
    port = free_port()
    if mode == "exporter":
        cargs += ["--redis", redis.url, "--port", str(port)]
        cargs += ["--render-thread"] if args.render_thread else []
    else:
        cargs += ["--no-compress"]  # the exporter's clients read uncompressed frames
    client = Client(args.client_cpus, [mode, *cargs])
    client.wait_live(timeout=300)
    return client, port


def phase(
    args: argparse.Namespace, sim: Sim, client: Client, port: int | None, measure: float
) -> dict[str, Any]:
    """Firehose on, warm up, measure handled msg/s (and scrapes, for the exporter)."""
    scraper = fresh = None
    if port:
        url = f"http://127.0.0.1:{port}/metrics"
        scraper = Scraper(url, 1.0, keepalive=True)  # one connection, as Prometheus
        time.sleep(0.5)
        fresh = Scraper(url, 1.0)  # half a second later: a new connection per scrape
    try:
        firehose(sim, args.ops)
        time.sleep(args.warm)
        if scraper is not None and fresh is not None:
            scraper.times.clear()
            fresh.times.clear()
        r0, c0 = client.report(), cpu_seconds(client.pid)
        time.sleep(measure)
        r1, c1 = client.report(), cpu_seconds(client.pid)
        with client._lock:
            iters = [r["iter_max_ms"] for r in client.history if r0["t"] < r["t"] <= r1["t"]]
    finally:
        calm(sim)
        if scraper is not None and fresh is not None:
            scraper.stop()
            fresh.stop()
    span = max(r1["t"] - r0["t"], 1e-9)
    out: dict[str, Any] = {
        "msgs_per_s": round((r1["handled"] - r0["handled"]) / span, 1),
        "cpu_share_of_core": round((c1 - c0) / span, 3),
        "live_at_end": f"{r1['live']}/{r1['feeds']}",
        # longest event-loop iteration in each 0.1 s report interval
        "loop_iteration_max_ms": {
            "p50": round(median(iters), 1),
            "p99": round(percentile(iters, 99), 1),
            "max": round(max(iters, default=float("nan")), 1),
        },
    }
    if scraper is not None and fresh is not None:
        out["scrape_ms"] = [round(t * 1000, 1) for t in scraper.times]
        out["scrape_new_connection_ms"] = [round(t * 1000, 1) for t in fresh.times]
        out["scrape_errors"] = scraper.errors + fresh.errors
        out["series"] = scraper.series
    return out


def scrape_stats(times_ms: list[float]) -> dict[str, float]:
    return {
        "scrapes": len(times_ms),
        "p50_ms": round(median(times_ms), 1),
        "p99_ms": round(percentile(times_ms, 99), 1),
        "max_ms": round(max(times_ms, default=float("nan")), 1),
    }


def ratio_part(args: argparse.Namespace, sim: Sim, redis: Redis) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"raw": [], "exporter": []}
    for rep in range(args.reps):
        for mode in ("raw", "exporter"):
            client, port = start_client(args, sim, mode, 3, redis)
            try:
                if mode == "exporter":
                    time.sleep(args.settle)
                r = phase(args, sim, client, port if mode == "exporter" else None, args.measure)
            finally:
                client.stop()
            runs[mode].append(r)
            extra = ""
            if mode == "exporter":
                s = scrape_stats(r["scrape_ms"])
                extra = f"  scrape p50 {s['p50_ms']} p99 {s['p99_ms']} max {s['max_ms']} ms"
            it = r["loop_iteration_max_ms"]
            print(
                f"rep {rep + 1} {mode:8s} {r['msgs_per_s']:8.0f} msg/s  "
                f"CPU {r['cpu_share_of_core']:.0%}  loop iteration p99 {it['p99']} ms{extra}",
                flush=True,
            )
    raw = [r["msgs_per_s"] for r in runs["raw"]]
    exp = [r["msgs_per_s"] for r in runs["exporter"]]
    ratios = [e / a for a, e in zip(raw, exp, strict=True) if a]
    # a phase whose client is below SATURATED of its core was held back by the feed (or by
    # another job on the machine): only saturated phases measure what the client can take
    sat = {m: [r["msgs_per_s"] for r in rs if r["cpu_share_of_core"] >= SATURATED]
           for m, rs in runs.items()}  # fmt: skip
    scrapes = [t for r in runs["exporter"] for t in r["scrape_ms"]]
    fresh = [t for r in runs["exporter"] for t in r["scrape_new_connection_ms"]]
    return {
        "raw_msgs_per_s": raw,
        "exporter_msgs_per_s": exp,
        "ratio_per_rep": [round(x, 3) for x in ratios],
        "ratio_median": round(median(ratios), 3),
        "saturated_msgs_per_s": sat,
        "ratio_saturated": (
            round(median(sat["exporter"]) / median(sat["raw"]), 3)
            if sat["raw"] and sat["exporter"]
            else None
        ),
        "scrape": scrape_stats(scrapes),
        "scrape_new_connection": scrape_stats(fresh),
        "series": runs["exporter"][-1].get("series"),
        "runs": runs,
    }


def series_part(args: argparse.Namespace, sim: Sim, redis: Redis, target: int) -> dict[str, Any]:
    n = max(3, round(target / SERIES_PER_SYMBOL))
    client, port = start_client(args, sim, "exporter", n, redis)
    try:
        time.sleep(args.settle)
        r = phase(args, sim, client, port, args.scrape_measure)
    finally:
        client.stop()
    return {
        "target": target,
        "symbols": n,
        **r,
        "scrape": scrape_stats(r["scrape_ms"]),
        "scrape_new_connection": scrape_stats(r["scrape_new_connection_ms"]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--measure", type=float, default=10.0, help="s per ratio phase")
    p.add_argument("--warm", type=float, default=2.0, help="s of firehose before measuring")
    p.add_argument(
        "--settle", type=float, default=17.0,
        help="s after the exporter is live, past its one-off heap freeze (15 s after start)",
    )  # fmt: skip
    p.add_argument("--series", type=int, nargs="*", default=[1000, 10000])
    p.add_argument("--scrape-measure", type=float, default=60.0, help="s per series size")
    p.add_argument("--no-ratio", action="store_true", help="part 2 only")
    p.add_argument("--ops", type=int, default=2, help="book changes per firehose update")
    p.add_argument(
        "--read-size", type=int, default=0,
        help="both clients: bytes per socket read callback (asyncio's default 256 KiB)",
    )  # fmt: skip
    p.add_argument(
        "--drain-cap", type=int, default=0,
        help="both clients: ccxt handles at most K buffered frames per loop callback",
    )  # fmt: skip
    p.add_argument(
        "--render-thread", action="store_true",
        help="format /metrics in a worker thread (Exposition(render_thread=True))",
    )  # fmt: skip
    p.add_argument("--sim-cpus", default="0")
    p.add_argument("--client-cpus", default="1")
    p.add_argument("--out", default="firehose", help="bench/results/<OUT>.json")
    args = p.parse_args()
    started = time.time()
    if args.sim_cpus and hasattr(os, "sched_setaffinity"):
        # the scraper (this process) shares the feed's core, not the exporter's
        os.sched_setaffinity(0, {int(c) for c in args.sim_cpus.split(",")})
    top = max([3, *(max(3, round(t / SERIES_PER_SYMBOL)) for t in args.series)])
    sim = Sim(args.sim_cpus, top, QUIET_RATE)
    redis = Redis()
    figures: dict[str, Any] = {
        "firehose_markets": FIREHOSE,
        "quiet_rate_per_market": QUIET_RATE,
        "ops_per_update": args.ops,
        "drain_cap": args.drain_cap or None,
        "read_size": args.read_size or None,
        "scrape_interval_s": 1.0,
        "renderer": "worker thread" if args.render_thread else "event loop, 20 ms slices",
    }
    try:
        if not args.no_ratio:
            figures["ratio"] = ratio_part(args, sim, redis)
        figures["sizes"] = []
        for target in args.series:
            f = series_part(args, sim, redis, target)
            figures["sizes"].append(f)
            s, s2 = f["scrape"], f["scrape_new_connection"]
            print(
                f"{f['series']:6d} series ({f['symbols']} symbols): {f['msgs_per_s']:.0f} msg/s, "
                f"scrape p50 {s['p50_ms']} p99 {s['p99_ms']} max {s['max_ms']} ms "
                f"(new connection: {s2['p50_ms']} / {s2['p99_ms']} / {s2['max_ms']}) "
                f"({s['scrapes']} scrapes, {f['scrape_errors']} errors), CPU "
                f"{f['cpu_share_of_core']:.0%}, loop iteration p99 "
                f"{f['loop_iteration_max_ms']['p99']} ms",
                flush=True,
            )
    finally:
        sim.stop()
        redis.stop()
    print()
    if "ratio" in figures:
        rt = figures["ratio"]
        print(
            table(
                ["", *[f"rep {i + 1}" for i in range(args.reps)], "median"],
                [
                    ["raw ccxt.pro msg/s", *rt["raw_msgs_per_s"], median(rt["raw_msgs_per_s"])],
                    ["exporter msg/s", *rt["exporter_msgs_per_s"],
                     median(rt["exporter_msgs_per_s"])],
                    ["exporter / raw", *rt["ratio_per_rep"], rt["ratio_median"]],
                ],
            )
        )  # fmt: skip
        s = rt["scrape"]
        print(f"scrapes during exporter phases: p50 {s['p50_ms']} p99 {s['p99_ms']} max "
              f"{s['max_ms']} ms ({rt['series']} series)")  # fmt: skip
        print(f"saturated phases (CPU >= {SATURATED:.0%}): {rt['saturated_msgs_per_s']}, "
              f"ratio of medians {rt['ratio_saturated']}")  # fmt: skip
    rows = [
        [f["series"], f["symbols"], f["msgs_per_s"], f"{f['cpu_share_of_core']:.0%}",
         f["loop_iteration_max_ms"]["p99"], f["scrape"]["p50_ms"], f["scrape"]["p99_ms"],
         f["scrape"]["max_ms"],
         f"{f['scrape_new_connection']['p50_ms']} / {f['scrape_new_connection']['p99_ms']}",
         f["scrape"]["scrapes"], f["scrape_errors"]]
        for f in figures["sizes"]
    ]  # fmt: skip
    if rows:
        print()
        headers = ["series", "symbols", "msg/s", "CPU", "iteration p99 ms", "p50 ms", "p99 ms",
                   "max ms", "new conn p50 / p99", "scrapes", "errors"]  # fmt: skip
        print(table(headers, rows))
    path = write_results(args.out, figures, started)
    print(f"results: {path}")


if __name__ == "__main__":
    main()

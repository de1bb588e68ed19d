"""Send-to-publish latency at fixed offered rates (bench/README.md, "Targets").

    .venv/bin/python bench/bench_latency.py [--rates 500 1000 2000] [--measure 8]

The simulator (``--record-sends``, pinned to core 0) logs when it published each update
(market, last sequence, wall time); the exporter (bench/client.py exporter --trace, core 1)
logs when its in-memory state first reflects a Binance book (``MarketState.on_published``:
after book metrics and pair evaluation), with the book's nonce, which ccxt sets to the
simulator's sequence. Latency of an update = first publish time with nonce >= its sequence
minus its send time (an update coalesced by ccxt into a later wake-up counts until that one).
Both clocks are the same machine's ``time.time()``. Rates are total messages/s over the 7
markets; latencies are measured on the 3 Binance markets. /metrics is scraped every second.
"""

from __future__ import annotations

import argparse
import bisect
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from common import Client, Redis, Scraper, Sim, free_port, percentile, table, write_results


def latencies(sends: list[list[Any]], trace: list[list[Any]], t0: float, t1: float) -> list[float]:
    by_market: dict[str, tuple[list[int], list[float]]] = {}
    for _ex, market, nonce, t in trace:
        if nonce is None:
            continue
        seqs, times = by_market.setdefault(market, ([], []))
        seqs.append(nonce)
        times.append(t)
    out = []
    for ex, market, seq, sent in sends:
        if ex != "binance" or not t0 <= sent < t1 or market not in by_market:
            continue
        seqs, times = by_market[market]
        i = bisect.bisect_left(seqs, seq)  # nonces increase within one connection
        if i < len(seqs):
            out.append(times[i] - sent)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rates", type=float, nargs="+", default=[500, 1000, 2000])
    p.add_argument("--warm", type=float, default=2.0)
    p.add_argument("--measure", type=float, default=8.0)
    p.add_argument("--sim-cpus", default="0")
    p.add_argument("--client-cpus", default="1")
    p.add_argument("--uvloop", action="store_true")
    args = p.parse_args()
    started = time.time()
    markets = 7
    sim = Sim(args.sim_cpus, 3, 1.0, "--record-sends")
    redis = Redis()
    trace_file = Path(tempfile.mkdtemp(prefix="bench-latency-")) / "trace.json"
    port = free_port()
    extra = ["--uvloop"] if args.uvloop else []
    client = Client(
        args.client_cpus,
        ["exporter", "--base-url", sim.base_url, "--redis", redis.url, "--port", str(port),
         "--trace", str(trace_file), *extra],
    )  # fmt: skip
    windows: list[tuple[float, float, float]] = []
    scraper = None
    try:
        client.wait_live()
        scraper = Scraper(f"http://127.0.0.1:{port}/metrics", 1.0)
        sends: list[list[Any]] = []
        for rate in args.rates:
            sim.set_rate(rate / markets)
            time.sleep(args.warm)
            sends += sim.get("/control/sends")["sends"]
            t0 = time.time()
            time.sleep(args.measure)
            windows.append((rate, t0, time.time()))
            sends += sim.get("/control/sends")["sends"]
            print(f"  {rate:.0f} msg/s done", flush=True)
        sim.set_rate(1.0)
        time.sleep(1.0)
    finally:
        if scraper is not None:
            scraper.stop()
        client.stop()
        sim.stop()
        redis.stop()
    trace = json.loads(trace_file.read_text())
    rows, figures = [], []
    for rate, t0, t1 in windows:
        lat = latencies(sends, trace, t0, t1)
        p50, p99 = percentile(lat, 50) * 1000, percentile(lat, 99) * 1000
        mx = max(lat) * 1000 if lat else float("nan")
        rows.append([f"{rate:.0f}", len(lat), f"{p50:.2f}", f"{p99:.2f}", f"{mx:.1f}"])
        figures.append(
            {"rate": rate, "samples": len(lat), "p50_ms": p50, "p99_ms": p99, "max_ms": mx}
        )
    print()
    print(table(["offered msg/s", "updates", "p50 ms", "p99 ms", "max ms"], rows))
    at2k = next((f for f in figures if f["rate"] == 2000), None)
    if at2k:
        verdict = "met" if at2k["p99_ms"] < 10 else "MISSED"
        print(f"\ntarget: p99 < 10 ms at 2000 msg/s -> {at2k['p99_ms']:.2f} ms, {verdict}")
    name = "latency_uvloop" if args.uvloop else "latency"  # keep the default run's results
    path = write_results(
        name, {"rates": figures, "uvloop": args.uvloop, "target_p99_ms_at_2000": 10}, started
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()

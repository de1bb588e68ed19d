"""Pipeline vs raw ccxt.pro on the same feed, same run (bench/README.md, "Targets").

    .venv/bin/python bench/bench_throughput.py [--reps 3] [--measure 3] [--symbols 3]

The simulator runs in fixed-rate mode pinned to core 0, the client pinned to core 1. Run A is a
bare ccxt.pro loop (bench/client.py raw: one client per market, ``watch_order_book`` only);
run B is the full exporter (analytics, windows, Redis writes to a private redis-server,
/metrics scraped every second). A reads the same frames as B (no permessage-deflate, as the
exporter's clients) on the same event loop (``--uvloop``: both). Both watch the same 7
markets (3 symbols x 2 exchanges + the USDT/USD conversion book). Messages are ccxt handler
calls (every frame), not watch returns.

A trial offers R messages/s in total for ``--measure`` seconds after a short warm-up. It
passes when the simulator's send lag stays under 100 ms and the client keeps up: the backlog
it accumulates (sent - handled) stays under 100 ms worth of messages. Throughput is the
highest passing R (found by doubling, then bisecting to ~7 %). A and B alternate ``--reps``
times; medians and B/A are printed and written to bench/results/throughput.json.
"""

from __future__ import annotations

import argparse
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
    table,
    wait_until,
    write_results,
)

LAG_LIMIT = 0.1


def trial(
    sim: Sim, client: Client, total: float, markets: int, warm: float, measure: float
) -> dict[str, Any]:
    sim.set_rate(total / markets)
    time.sleep(warm)
    sim.post("/control/counters/reset")
    r0, t0, c0 = client.report(), time.time(), cpu_seconds(client.pid)
    time.sleep(measure)
    r1, counters, c1 = client.report(), sim.counters(), cpu_seconds(client.pid)
    t1 = time.time()
    sent = sim.sent(counters)
    sent_rate = sent / (t1 - t0)
    handled_rate = (r1["handled"] - r0["handled"]) / max(r1["t"] - r0["t"], 1e-9)
    backlog_s = max(0.0, (sent_rate - handled_rate) * measure) / max(sent_rate, 1.0)
    send_lag = counters["send_lag_seconds"]["max"]
    # the simulator must really offer the rate (a saturated or restarting one may not)
    ok = send_lag < LAG_LIMIT and backlog_s < LAG_LIMIT and sent_rate >= 0.95 * total
    drain(sim, client)
    per_msg = {}
    handled = max(r1["handled"] - r0["handled"], 1)
    for key in ("iters", "handles"):  # --loop-counts
        if key in r0 and key in r1:
            per_msg[f"loop_{key}_per_msg"] = round((r1[key] - r0[key]) / handled, 2)
    return {
        **per_msg,
        "offered": total,
        "sent_rate": round(sent_rate, 1),
        "handled_rate": round(handled_rate, 1),
        "backlog_s": round(backlog_s, 4),
        "send_lag_max_s": round(send_lag, 4),
        "client_cpu": round((c1 - c0) / (t1 - t0), 3),
        "cpu_us_per_msg": round((c1 - c0) / max(r1["handled"] - r0["handled"], 1) * 1e6, 1),
        "ok": ok,
    }


def drain(sim: Sim, client: Client) -> None:
    """Slow the feed to a trickle until the client has caught up (handled stops jumping)."""
    sim.drain_rate()
    last = [client.report()["handled"]]

    def settled() -> bool:
        now = client.report()["handled"]
        done = now - last[0] < 40
        last[0] = now
        return done

    wait_until(settled, 15, 0.3)


def search(
    sim: Sim,
    client: Client,
    markets: int,
    guess: float,
    warm: float,
    measure: float,
    log: list[Any],
    max_rate: float,
) -> float:
    def run(rate: float) -> bool:
        try:
            t = trial(sim, client, rate, markets, warm, measure)
        except OSError as exc:  # the simulator's control API timed out: it is saturated
            print(f"    {rate:8.0f} msg/s  simulator unresponsive ({exc}): FAIL", flush=True)
            log.append({"offered": rate, "ok": False, "error": str(exc)})
            drain(sim, client)
            return False
        log.append(t)
        print(
            f"    {rate:8.0f} msg/s  handled {t['handled_rate']:8.0f}/s  backlog "
            f"{t['backlog_s'] * 1000:6.1f} ms  send lag {t['send_lag_max_s'] * 1000:6.1f} ms  "
            f"{'ok' if t['ok'] else 'FAIL'}",
            flush=True,
        )
        return bool(t["ok"])

    lo, hi = guess / 1.25, guess * 1.25
    while not run(lo):
        hi, lo = lo, lo / 2
        if lo < 50:
            return 0.0
    hi = min(hi, max_rate)
    while run(hi):
        if hi >= max_rate:
            return hi  # the ceiling passed: a lower bound (the simulator cannot offer more)
        lo, hi = hi, min(hi * 2, max_rate)
    while hi / lo > 1.07:
        mid = (lo * hi) ** 0.5
        if run(mid):
            lo = mid
        else:
            hi = mid
    return lo


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warm", type=float, default=1.0)
    p.add_argument("--measure", type=float, default=3.0)
    p.add_argument("--symbols", type=int, default=3)
    p.add_argument("--guess", type=float, default=4000.0, help="first offered rate, msg/s")
    p.add_argument("--sim-cpus", default="0")
    p.add_argument("--client-cpus", default="1")
    p.add_argument("--uvloop", action="store_true", help="run A and B with uvloop")
    p.add_argument("--cost-rate", type=float, default=2500.0, help="msg/s for the CPU trial")
    p.add_argument("--no-search", action="store_true", help="CPU-cost trial only")
    p.add_argument(
        "--loop-counts", action="store_true",
        help="also count loop iterations and callbacks per message (adds ~1 µs per message)",
    )  # fmt: skip
    p.add_argument(
        "--max-rate", type=float, default=9000.0,
        help="search ceiling, msg/s (the simulator on one shared core offers ~9-12k reliably)",
    )  # fmt: skip
    args = p.parse_args()
    started = time.time()
    markets = 2 * args.symbols + 1
    sim = Sim(args.sim_cpus, args.symbols, 1.0)
    redis = Redis()
    results: dict[str, list[float]] = {"A": [], "B": []}
    costs: dict[str, list[float]] = {"A": [], "B": []}
    cost_trials: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
    trials: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
    guess = {"A": args.guess, "B": args.guess}
    try:
        for rep in range(args.reps):
            for variant in ("A", "B"):
                port = free_port()
                cargs = ["--base-url", sim.base_url, "--symbols", str(args.symbols)]
                cargs += ["--uvloop"] if args.uvloop else []  # the same loop on both sides
                cargs += ["--loop-counts"] if args.loop_counts else []
                if variant == "A":  # no permessage-deflate, as the exporter's clients
                    client = Client(args.client_cpus, ["raw", *cargs, "--no-compress"])
                else:
                    extra = ["--redis", redis.url, "--port", str(port)]
                    client = Client(args.client_cpus, ["exporter", *cargs, *extra])
                scraper = None
                try:
                    client.wait_live()
                    if variant == "B":
                        scraper = Scraper(f"http://127.0.0.1:{port}/metrics", 1.0)
                    print(f"rep {rep + 1} run {variant}", flush=True)
                    cost = trial(sim, client, args.cost_rate, markets, args.warm, args.measure)
                    costs[variant].append(cost["cpu_us_per_msg"])
                    cost_trials[variant].append(cost)
                    loop = (
                        f", {cost['loop_iters_per_msg']} loop iterations and "
                        f"{cost['loop_handles_per_msg']} callbacks per msg"
                        if "loop_iters_per_msg" in cost
                        else ""
                    )
                    print(
                        f"    CPU at {args.cost_rate:.0f} msg/s: {cost['client_cpu']:.0%} of a "
                        f"core, {cost['cpu_us_per_msg']} us/msg{loop}",
                        flush=True,
                    )
                    if args.no_search:
                        continue
                    best = search(
                        sim, client, markets, guess[variant], args.warm, args.measure,
                        trials[variant], args.max_rate,
                    )  # fmt: skip
                finally:
                    if scraper is not None:
                        scraper.stop()
                    client.stop()
                    sim.drain_rate()
                results[variant].append(best)
                guess[variant] = best or args.guess
                print(f"  -> {variant}: {best:,.0f} msg/s", flush=True)
    finally:
        sim.stop()
        redis.stop()
    a, b = median(results["A"]), median(results["B"])
    ca, cb = median(costs["A"]), median(costs["B"])

    def row(label: str, xs: list[float], med: float, ratio: str = "") -> list[Any]:
        return [label, *[f"{x:,.1f}" for x in xs], *[""] * (args.reps - len(xs)), med, ratio]

    cr = f"{args.cost_rate:.0f}"
    rows = [
        row("A raw ccxt.pro: saturation msg/s", results["A"], a),
        row("B exporter: saturation msg/s", results["B"], b, f"{b / a:.2f}" if a else "-"),
        row(f"A raw ccxt.pro: CPU us/msg at {cr}/s", costs["A"], ca),
        row(f"B exporter: CPU us/msg at {cr}/s", costs["B"], cb, f"{ca / cb:.2f}" if cb else "-"),
    ]
    headers = ["", *[f"rep {i + 1}" for i in range(args.reps)], "median", "B/A"]
    print()
    print(table(headers, rows))
    if a:
        print(f"\ntarget: B/A >= 0.80 -> saturation {b / a:.2f}, CPU-derived {ca / cb:.2f}")
    path = write_results(
        "throughput_uvloop" if args.uvloop else "throughput",  # keep the default run's results
        {
            "markets": markets,
            "criterion": "send lag < 100 ms and client backlog < 100 ms over the window",
            "A_raw_msgs_per_s": results["A"],
            "B_exporter_msgs_per_s": results["B"],
            "median_A": a,
            "median_B": b,
            "ratio_B_over_A": b / a if a else None,
            "cpu_us_per_msg_A": costs["A"],
            "cpu_us_per_msg_B": costs["B"],
            "cost_rate": args.cost_rate,
            "ratio_capacity_from_cpu": ca / cb if cb else None,
            "target_ratio": 0.8,
            "uvloop": args.uvloop,
            "trials": trials,
            "cost_trials": cost_trials,
        },
        started,
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()

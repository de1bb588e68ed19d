"""/metrics render time, size and ingestion stall (bench/README.md, "Scrape").

    .venv/bin/python bench/bench_scrape.py [--series 1000 10000 50000] [--scrapes 7]

A synthetic, fully populated market state (bench/synthetic.py: N symbols x 2 exchanges, every
book live and every pair evaluated) behind the real MarketCollector; before each scrape one
book moves to a new price, which must appear in that scrape. Compared, on the same registry:
``generate_latest`` and the lean exposition (exporter/http/exposition.py, what /metrics
serves); next to them ``generate_latest`` over module-level labelled Gauges holding
the same number of series. Stall: the longest gap seen by a task that wakes every 0.5 ms on the
same event loop while a scrape renders (what ingestion would wait). The lean output at each
size is checked with ``promtool check metrics`` when promtool is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

from common import median, table, write_results
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from synthetic import SyntheticState

from exporter.http.exposition import Exposition
from exporter.model import label_number

SERIES_PER_SYMBOL = 113  # measured: see SyntheticState.series()


async def stall_during(render: Callable[[], Awaitable[bytes]]) -> tuple[bytes, float, float]:
    """(body, render seconds, longest event-loop gap seen by a 0.5 ms ticker)."""
    gaps: list[float] = []
    stop = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(0.0005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.005)
    gaps.clear()
    t0 = time.perf_counter()
    body = await render()
    elapsed = time.perf_counter() - t0
    await asyncio.sleep(0.002)
    stop = True
    await task
    return body, elapsed, max(gaps, default=0.0)


def plain_registry(series: int) -> tuple[CollectorRegistry, Gauge]:
    reg = CollectorRegistry()
    g = Gauge("plain_value", "Module-level style gauge", ["exchange", "symbol", "k"], registry=reg)
    for i in range(series):
        g.labels("binance", f"S{i // 10}/USD", str(i % 10)).set(i * 1.5)
    return reg, g


async def run_size(target: int, scrapes: int) -> dict[str, Any]:
    n = max(1, round(target / SERIES_PER_SYMBOL))
    syn = SyntheticState(n)
    series = syn.series()
    gc.collect()
    gc.freeze()  # as the exporter does 15 s after startup (app.py)
    expo = Exposition(syn.registry)
    plain, gauge = plain_registry(series)
    out: dict[str, Any] = {"symbols": n, "series": series}
    runs: dict[str, list[tuple[float, float, int]]] = {
        "generate_latest": [],
        "lean": [],
        "plain": [],
    }
    missing = 0
    for i in range(scrapes):
        for kind in ("generate_latest", "lean", "plain"):
            _ex, sym, bid = syn.touch()
            gauge.labels("binance", "S0/USD", "0").set(float(i))
            if kind == "lean":
                body, t, stall = await stall_during(expo.render)
            else:
                reg = syn.registry if kind == "generate_latest" else plain

                async def sync_render(reg: CollectorRegistry = reg) -> bytes:
                    return generate_latest(reg)

                body, t, stall = await stall_during(sync_render)
            if kind != "plain":
                # the value set just before the scrape is in it (bid in the canonical quote)
                rate = syn.state.record("kraken", sym).rate or 1.0
                needle = f'exchange="kraken",symbol="{sym}"}} {bid * rate!r}'
                missing += needle not in body.decode()
            runs[kind].append((t, stall, len(body)))
    for kind, rows in runs.items():
        out[kind] = {
            "render_ms": round(median([r[0] for r in rows]) * 1000, 2),
            "stall_ms_max": round(max(r[1] for r in rows) * 1000, 2),
            "stall_ms_median": round(median([r[1] for r in rows]) * 1000, 2),
            "bytes": rows[-1][2],
        }
    out["lean_longest_step_ms"] = round(expo.longest_step_seconds * 1000, 2)
    out["latest_value_missing"] = missing
    out["promtool"] = promtool(expo, syn)
    return out


def promtool(expo: Exposition, syn: SyntheticState) -> str:
    exe = shutil.which("promtool")
    if exe is None:
        return "not installed"
    body = expo.renderer.render(syn.registry.collect())
    res = subprocess.run([exe, "check", "metrics"], input=body, capture_output=True)
    text = (res.stdout + res.stderr).decode().strip()
    return "ok" if res.returncode == 0 and not text else f"rc={res.returncode}: {text[:500]}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--series", type=int, nargs="+", default=[1000, 10000, 50000])
    p.add_argument("--scrapes", type=int, default=7)
    args = p.parse_args()
    started = time.time()
    figures = []
    rows = []
    for target in args.series:
        f = asyncio.run(run_size(target, args.scrapes))
        figures.append(f)
        g, lean, plain = f["generate_latest"], f["lean"], f["plain"]
        rows.append(
            [f["series"], g["render_ms"], g["stall_ms_max"], lean["render_ms"],
             f"{lean['stall_ms_median']} / {lean['stall_ms_max']}", f["lean_longest_step_ms"],
             plain["render_ms"],
             f"{lean['bytes'] / 1024:,.0f}", f["latest_value_missing"], f["promtool"][:20]]
        )  # fmt: skip
        print(f"  {label_number(target)} series done", flush=True)
    print()
    headers = ["series", "gen_latest ms", "stall ms", "lean ms", "lean stall med/max ms",
               "longest step ms", "plain gauges ms", "KiB", "stale", "promtool"]  # fmt: skip
    print(table(headers, rows))
    ten = next((f for f in figures if 5000 <= f["series"] <= 20000), None)
    if ten:
        lean = ten["lean"]
        print(
            f"\ntarget at {ten['series']} series: render < 50 ms -> {lean['render_ms']} ms; "
            f"stall < 20 ms -> median {lean['stall_ms_median']}, max {lean['stall_ms_max']} ms; "
            f"promtool -> {ten['promtool']}"
        )
    path = write_results("scrape", {"sizes": figures}, started)
    print(f"results: {path}")


if __name__ == "__main__":
    main()

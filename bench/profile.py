"""Where the client's CPU goes: py-spy samples of bench/client.py (raw ccxt.pro or the full
exporter) against the simulator at a fixed rate, grouped by component (bench/README.md,
"Profiles": where the time goes, and what explains a missed target).

    .venv/bin/python bench/profile.py [--mode exporter|raw] [--symbols 3] [--rate 300]
                                      [--seconds 30] [--cpus 1] [--sim-cpus 0]

Writes ``bench/results/profile_<mode>_<symbols>.json`` (component shares, top functions by
self time) and the raw collapsed stacks next to it (``.folded``, for flamegraph tools).
Needs ``py-spy`` (bench extra: ``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import RESULTS, Client, Redis, Sim, cpu_seconds, free_port, table, write_results

# py-spy shortens paths ("supervisor.py", "exporter/market/state.py", "ccxt/pro/kraken.py").
# The innermost frame that matches any pattern decides; patterns are tried in order.
_FEEDS = r"\((exporter/feeds/)?(supervisor|clients|levels|stats|guard|registry)\.py"
COMPONENTS: list[tuple[str, str]] = [
    ("integrity: Kraken checksum etc. (exporter)", r"\((exporter/feeds/)?integrity\.py"),
    ("frame guard (exporter)", r"\((exporter/feeds/)?guard\.py"),
    ("book copy + supervisor (exporter)", _FEEDS),
    (
        "intelligence (exporter)",
        r"\(exporter/(market/intelligence|analytics/(history|insights))\.py",
    ),
    ("analytics + windows (exporter)", r"\(exporter/(market/(state|status|fees)\.py|analytics/)"),
    ("Redis writer (exporter)", r"\(exporter/store/|\(redis/"),
    ("/metrics (exporter)", r"\(exporter/http/|\(prometheus_client/"),
    ("other exporter", r"\(exporter/"),
    ("ccxt order book + parsing", r"\(ccxt/"),
    ("aiohttp websocket + JSON", r"\((aiohttp|yarl|multidict|json)/"),
    ("asyncio loop + selectors", r"\(asyncio/|\(selectors\.py"),
]
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::\d+)?\)$")


def classify(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, pattern in COMPONENTS:
            if re.search(pattern, frame):
                return name
    return "other"


def short(frame: str) -> str:
    m = FRAME.match(frame)
    return f"{m['func']} ({m['file']})" if m else frame


def summarise(folded: Path) -> dict[str, Any]:
    total = 0
    by_component: collections.Counter[str] = collections.Counter()
    by_self: collections.Counter[str] = collections.Counter()
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        by_component[classify(frames)] += n
        by_self[short(frames[-1])] += n
    share = {k: round(v / total, 4) for k, v in by_component.most_common()} if total else {}
    top = [(f, round(n / total, 4)) for f, n in by_self.most_common(20)] if total else []
    return {"samples": total, "components": share, "top_self": top}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mode", choices=["exporter", "raw"], default="exporter")
    p.add_argument("--symbols", type=int, default=3)
    p.add_argument("--rate", type=float, default=300.0, help="updates/s per market")
    p.add_argument("--seconds", type=int, default=30)
    p.add_argument("--warm", type=float, default=20.0, help="seconds before sampling")
    p.add_argument("--cpus", default="1", help="client core (taskset)")
    p.add_argument("--sim-cpus", default="0", help="simulator core (taskset)")
    p.add_argument("--summarise", metavar="FOLDED", help="only summarise an existing file")
    args = p.parse_args()
    if args.summarise:
        print(json.dumps(summarise(Path(args.summarise)), indent=2))
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        sys.exit("py-spy not found: pip install -e '.[bench]'")
    started = time.time()
    redis = Redis() if args.mode == "exporter" else None
    sim = Sim(args.sim_cpus, args.symbols, args.rate)
    # the raw loop without permessage-deflate, as the exporter's clients
    extra = ["--redis", redis.url, "--port", str(free_port())] if redis else ["--no-compress"]
    client = Client(
        args.cpus, [args.mode, "--base-url", sim.base_url, "--symbols", str(args.symbols), *extra]
    )
    name = f"profile_{args.mode}_{args.symbols}"
    folded = RESULTS / f"{name}.folded"
    try:
        client.wait_live(timeout=300)
        time.sleep(args.warm)
        r0, c0 = client.report(), cpu_seconds(client.pid)
        subprocess.run(
            [spy, "record", "-p", str(client.pid), "-r", "200", "-d", str(args.seconds),
             "-f", "raw", "-o", str(folded), "--nonblocking"],
            check=True, capture_output=True,
        )  # fmt: skip
        r1, c1 = client.report(), cpu_seconds(client.pid)
    finally:
        client.stop()
        sim.stop()
        if redis:
            redis.stop()
    handled = r1["handled"] - r0["handled"]
    figures = {
        "mode": args.mode,
        "symbols": args.symbols,
        "rate_per_market": args.rate,
        "handled_per_s": round(handled / max(r1["t"] - r0["t"], 1e-9), 1),
        "cpu_us_per_handled": round((c1 - c0) / max(handled, 1) * 1e6, 1),
        **summarise(folded),
        "folded": str(folded.relative_to(RESULTS.parent.parent)),
    }
    print(
        f"{args.mode}: {figures['handled_per_s']} msg/s handled, "
        f"{figures['cpu_us_per_handled']} us CPU per message, {figures['samples']} samples"
    )
    components = figures["components"].items()
    print(table(["component", "share"], [[k, f"{v:.1%}"] for k, v in components]))
    print()
    top = figures["top_self"]
    print(table(["function (self time)", "share"], [[f, f"{v:.1%}"] for f, v in top]))
    path = write_results(name, figures, started)
    print(f"results: {path}")


if __name__ == "__main__":
    main()

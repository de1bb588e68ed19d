"""Shared benchmark plumbing: simulator / client / Redis subprocesses, CPU pinning, results.

Every benchmark script puts this checkout first on ``sys.path`` (the shared venv may point
its editable install at another checkout) and starts children with ``cwd`` = this checkout.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import platform
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
PY = sys.executable
LOAD_AT_START = os.getloadavg()  # when the benchmark script imported this module


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(cpus: str | None) -> list[str]:
    """``taskset -c CPUS`` prefix (nothing when unavailable or not asked for)."""
    if not cpus or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", cpus]


def http_json(url: str, body: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def _first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    q: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    out = proc.stdout
    threading.Thread(target=lambda: q.put(out.readline()), daemon=True).start()
    return q.get(timeout=timeout)


def _stop(proc: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Sim:
    """The exchange simulator as a child process (``python -m exporter.simulator``)."""

    def __init__(self, cpus: str | None, symbols: int = 3, rate: float = 1.0, *extra: str):
        cmd = [
            *pin(cpus), PY, "-m", "exporter.simulator", "--port", "0", "--seed", "7",
            "--mode", "fixed_rate", "--rate", str(rate), "--symbols", str(symbols), *extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        line = _first_line(self.proc, 60)
        if not line:
            raise RuntimeError("simulator did not start")
        self.base_url = json.loads(line)["base_url"]
        self.symbols = symbols

    def get(self, path: str) -> Any:
        return http_json(self.base_url + path)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return http_json(self.base_url + path, body or {})

    def set_rate(self, per_market: float) -> None:
        self.post("/control/mode", {"mode": "fixed_rate", "rate": per_market})

    def drain_rate(self) -> None:
        """Back to a trickle, retrying while an overloaded simulator catches up."""
        for _ in range(5):
            with contextlib.suppress(OSError):
                self.set_rate(1.0)
                return
            time.sleep(2)

    def counters(self) -> dict[str, Any]:
        return dict(self.get("/control/counters"))

    def sent(self, counters: dict[str, Any] | None = None) -> int:
        c = counters or self.counters()
        return sum(n for ex in c["messages_sent"].values() for n in ex.values())

    def stop(self) -> None:
        _stop(self.proc)


class Client:
    """``bench/client.py`` (raw ccxt.pro loop or the full exporter) as a child process.

    It prints one JSON line per report interval: ``{"t", "handled", "live", "feeds"}``.
    """

    def __init__(self, cpus: str | None, args: Sequence[str]) -> None:
        cmd = [*pin(cpus), PY, str(ROOT / "bench" / "client.py"), *args]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.latest: dict[str, Any] = {"t": time.time(), "handled": 0, "live": 0, "feeds": 1}
        self.history: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                row = json.loads(line)
                with self._lock:
                    self.latest = row
                    self.history.append(row)
                    del self.history[:-2000]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def report(self) -> dict[str, Any]:
        with self._lock:
            return dict(self.latest)

    def wait_live(self, timeout: float = 120.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = self.report()
            if r.get("feeds") and r["live"] >= r["feeds"]:
                return
            if self.proc.poll() is not None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise RuntimeError(f"client exited: {err[-3000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"client not live after {timeout}s: {self.report()}")

    def stop(self) -> None:
        _stop(self.proc, 20)


class Redis:
    """A private redis-server (no persistence) on a free port, or None when not installed."""

    def __init__(self) -> None:
        self.port = free_port()
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server not installed")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                break
            time.sleep(0.05)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        _stop(self.proc)


class Scraper:
    """GET /metrics every ``interval`` seconds in a thread (like Prometheus).

    ``keepalive``: reuse one HTTP connection between scrapes, as Prometheus does; otherwise
    each scrape connects anew (and its time includes the exporter accepting it)."""

    def __init__(self, url: str, interval: float = 1.0, keepalive: bool = False) -> None:
        self.url, self.interval, self.keepalive = url, interval, keepalive
        self.times: list[float] = []
        self.sizes: list[int] = []
        self.series = 0  # sample lines in the latest body
        self.errors = 0
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        conn: http.client.HTTPConnection | None = None
        while not self._stop.wait(self.interval):
            t0 = time.perf_counter()
            try:
                if self.keepalive:
                    if conn is None:
                        conn = http.client.HTTPConnection(parts.netloc, timeout=10)
                    conn.request("GET", parts.path)
                    resp = conn.getresponse()
                    body = resp.read()
                else:
                    with urllib.request.urlopen(self.url, timeout=10) as r:
                        body = r.read()
                self.times.append(time.perf_counter() - t0)
                self.sizes.append(len(body))
                self.series = body.count(b"\n") - body.count(b"\n#") - body.startswith(b"#")
            except (OSError, http.client.HTTPException):
                self.errors += 1
                if conn is not None:
                    conn.close()
                    conn = None
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        self._stop.set()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": LOAD_AT_START,
        "loadavg_at_end": os.getloadavg(),
        "note": "shared machine: other processes compete for the cores; trust ratios",
    }


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "exporter", "bench/*.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def write_results(name: str, figures: dict[str, Any], started: float) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    doc = {
        "benchmark": name,
        "commit": git_commit(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "duration_seconds": round(time.time() - started, 1),
        "machine": machine(),
        "figures": figures,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(c: Any) -> str:
    if isinstance(c, float):
        return f"{c:,.3g}" if abs(c) < 100 else f"{c:,.0f}"
    return str(c)


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def percentile(xs: Sequence[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False

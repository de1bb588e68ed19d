"""The README's backtest walk-through: `arb-exporter demo --record DIR` records the demo's
books while exporting, and `arb-exporter replay --config.file exporter/demo.yaml DIR/*.csv.gz`
replays them with the sidecars' fees and finds the demo's windows."""

from __future__ import annotations

import datetime
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.config import load
from exporter.devstack.procs import free_port
from exporter.replay.tardis import file_name, tardis_exchange, tardis_symbol
from tests.support.exporter import ROOT
from tests.support.recording import stop_once_recording

pytestmark = pytest.mark.integration


def test_demo_records_and_the_recording_replays(tmp_path: Path) -> None:
    out = tmp_path / "recordings"
    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "exporter.cli.main", "demo", "--record", str(out),
         "--no-observability", "--web.listen-address", f"127.0.0.1:{port}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    config = load(ROOT / "exporter" / "demo.yaml")
    day = datetime.datetime.now(datetime.UTC).date()
    expected = {
        file_name(tardis_exchange(config, ex), day, tardis_symbol(config, ex, m))
        for mapping in config.symbols.values()
        for ex, m in mapping.items()
    }
    # The simulator dislocates a price every 6 s: 14 s of books hold windows.
    output = stop_once_recording(
        demo,
        lambda: len(list(out.glob("*.csv.gz")) if out.exists() else []),
        len(expected),
        timeout=60,
        then=14,
        sig=signal.SIGINT,
        poll=0.5,
    )
    assert demo.returncode == 0, output.decode()[-3000:]
    files = sorted(out.glob("*.csv.gz"))
    if datetime.datetime.now(datetime.UTC).date() == day:  # not across midnight
        assert expected <= {p.name for p in files}
    assert len(list(out.glob("*_markets_*.json"))) == len(config.exchanges)

    report, windows = tmp_path / "report.json", tmp_path / "windows.jsonl"
    replay = subprocess.run(
        [sys.executable, "-m", "exporter.cli.main", "replay", "--config.file",
         str(ROOT / "exporter" / "demo.yaml"), *map(str, files),
         "--windows", str(windows), "--report", str(report)],
        cwd=ROOT, capture_output=True, timeout=120,
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr.decode()[-3000:]
    doc = json.loads(report.read_text())
    assert doc["rows"] > 0 and doc["updates"] > 0 and doc["rejected"]["malformed"] == 0
    assert doc["span"]["seconds"] >= 14
    logged = [json.loads(line) for line in windows.read_text().splitlines()]
    assert logged, "the demo's dislocations open windows; the replay found none"
    assert sum(r["windows"] for r in doc["routes"]) == len(logged)
    assert {w["symbol"] for w in logged} <= set(config.symbols)

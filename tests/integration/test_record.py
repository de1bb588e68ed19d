"""Recording against the simulator: ``run --record`` wiring in process (the files rebuild
every book the exporter computed on, a resync starts a new snapshot), and the CLI
(``arb-exporter record --duration``, ``run --record`` stopped by SIGTERM)."""

from __future__ import annotations

import asyncio
import gzip
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from exporter.config import parse
from exporter.model import BookSnapshot, FeedKey
from exporter.replay.tardis import (
    HEADER,
    ReadStats,
    find_sidecar,
    load_sidecar,
    market_index,
    read_updates,
)
from tests.support.exporter import ROOT, all_live, sim_config_data, wait_for
from tests.support.recording import Rebuilt, recording_exporter, stop_once_recording
from tests.support.simulator import SimulatorHarness

pytestmark = pytest.mark.integration

SIMULATOR = {"seed": 11, "rate": 20}
FILES = {
    "binance_incremental_book_L2_{day}_BTCUSDT.csv.gz",
    "binance_incremental_book_L2_{day}_ETHUSDT.csv.gz",
    "kraken_incremental_book_L2_{day}_XBT-USD.csv.gz",
    "kraken_incremental_book_L2_{day}_ETH-USD.csv.gz",
    "kraken_incremental_book_L2_{day}_USDT-USD.csv.gz",
}


def data_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*_incremental_book_L2_*.csv.gz"))


def check_files(directory: Path) -> None:
    """The five books' files, named by Tardis, header then a snapshot, complete gzip."""
    paths = data_files(directory)
    day = paths[0].name.split("_")[4]
    assert {p.name for p in paths} == {f.format(day=day) for f in FILES}
    for path in paths:
        lines = gzip.decompress(path.read_bytes()).decode().splitlines()  # trailer present
        assert lines[0] == HEADER
        assert lines[1].split(",")[4] == "true", path.name
        assert all(len(line.split(",")) == 8 for line in lines)
        sidecar = find_sidecar(path)
        assert sidecar is not None
        exchange, markets = load_sidecar(sidecar)
        assert exchange in ("binance", "kraken") and markets
        assert all(m.taker_fee > 0 and m.price_precision for m in markets.values())


async def test_recording_rebuilds_every_book_the_exporter_computed_on(
    sim: SimulatorHarness, tmp_path: Path
) -> None:
    data = sim_config_data(sim.base_url)
    data["exchanges"]["kraken"]["taker_fee"] = 0.00001  # the sidecar keeps ccxt's listing
    config = parse(data, "test", environ={})
    seen: dict[tuple[str, str, int], BookSnapshot] = {}

    def tap(snap: BookSnapshot) -> None:
        seen[(snap.exchange, snap.market, round(snap.received_at * 1e6))] = snap

    async with recording_exporter(config, tmp_path, tap) as exp:
        await wait_for(lambda: all_live(exp), timeout=20, what="every book live")
        assert exp.registry.get_sample_value("cryptoarb_record_up") == 1
        await asyncio.sleep(1.5)
        sim.fault("binance", "sequence_gap", "BTC/USDT")  # a resync: a new snapshot follows
        stats = exp.feed_stats[FeedKey(("binance", "BTC/USDT"))]
        await wait_for(lambda: stats.resyncs >= 1, timeout=10, what="a resync")
        await wait_for(lambda: all_live(exp), timeout=20, what="live again after the resync")
        await asyncio.sleep(1.5)
    final = {key: exp.state.snapshot(*key) for key in exp.feed_stats}
    check_files(tmp_path)
    sidecar = find_sidecar(data_files(tmp_path)[-1])
    assert sidecar is not None and sidecar.name.startswith("kraken_markets_")
    listed = load_sidecar(sidecar)[1]["BTC/USD"]
    assert listed.taker_fee != 0.00001
    held_terms = exp.fees.get("kraken", "BTC/USD")
    assert held_terms is not None and held_terms.taker_fee == 0.00001
    assert (listed.min_cost, listed.min_amount) == (held_terms.min_cost, held_terms.min_amount)

    index = market_index(config)
    rebuilt = Rebuilt()
    read_stats = ReadStats()
    snapshots: dict[tuple[str, str], int] = {}
    for update in read_updates(data_files(tmp_path), read_stats):
        rebuilt.apply(update)
        ex, market = index[(update.exchange, update.symbol)]
        snap = seen[(ex, market, update.local_timestamp_us)]
        assert rebuilt.book(update.exchange, update.symbol) == (snap.bids, snap.asks), update
        if update.is_snapshot:
            snapshots[(ex, market)] = snapshots.get((ex, market), 0) + 1
    assert read_stats.malformed == 0 and read_stats.truncated == 0 and read_stats.updates > 50
    assert snapshots[("binance", "BTC/USDT")] >= 2  # at start and after the resync
    # The last book of each file is the book MarketState held at shutdown.
    for (tex, tsym), (ex, market) in index.items():
        held = final[FeedKey((ex, market))]
        assert held is not None
        assert rebuilt.book(tex, tsym) == (held.bids, held.asks)
    rows = exp.registry.get_sample_value(
        "cryptoarb_record_rows_total", {"exchange": "kraken", "market": "USDT/USD"}
    )
    assert rows is not None and rows > 0
    assert exp.registry.get_sample_value("cryptoarb_record_up") == 0


def cli(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "exporter.cli.main", *args], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def write_config(sim: SimulatorHarness, path: Path) -> Path:
    # A Redis URL nobody listens on: `record` must not need it.
    data = sim_config_data(sim.base_url, redis_url="redis://127.0.0.1:1/0")
    path.write_text(yaml.safe_dump(data))
    return path


def test_record_command_for_a_duration(sim: SimulatorHarness, tmp_path: Path) -> None:
    config = write_config(sim, tmp_path / "config.yaml")
    out = tmp_path / "out"
    t0 = time.monotonic()
    proc = cli("record", "--config.file", str(config), "--out", str(out), "--duration", "3")
    output, _ = proc.communicate(timeout=40)
    assert proc.returncode == 0, output.decode()
    assert 3 <= time.monotonic() - t0 < 30
    assert b"redis off" in output
    check_files(out)


def test_run_with_record_closes_files_on_sigterm(sim: SimulatorHarness, tmp_path: Path) -> None:
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(sim_config_data(sim.base_url)))
    out = tmp_path / "rec"
    proc = cli("run", "--config.file", str(config_path), "--record", str(out))
    output = stop_once_recording(
        proc,
        lambda: len(data_files(out) if out.exists() else []),
        len(FILES),
        timeout=20,
        then=1.0,
        sig=signal.SIGTERM,
    )
    assert proc.returncode == 0, output.decode()
    check_files(out)
    stats = ReadStats()
    assert sum(1 for _ in read_updates(data_files(out), stats)) > 0
    assert stats.truncated == 0


def test_record_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from exporter.cli.main import main

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(sim_config_data("http://127.0.0.1:1")))
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    base = ["--config.file", str(config)]
    assert main(["record", *base, "--out", str(tmp_path / "o"), "--duration", "0"]) == 2
    assert "--duration must be > 0" in capsys.readouterr().err
    assert main(["record", *base, "--out", str(not_a_dir / "sub"), "--duration", "1"]) == 2
    assert main(["run", *base, "--record", str(not_a_dir / "sub")]) == 2
    assert capsys.readouterr().err.count("cannot create the record directory") == 2
    assert not (tmp_path / "o").exists()

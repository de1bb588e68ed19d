"""``arb-exporter replay`` end to end on the hand-written Tardis files in tests/data/tardis.

The two files (coinbase BTC-USD, kraken XBT/USD, 2024-12-04 from 00:00:00 UTC = T0):

  t (s)  book      rows                                   book after it
  0.0    coinbase  snapshot bids 100x5 99x10               bids 100x5 99x10 | asks 101x5 102x10
                            asks 101x5 102x10
  0.1    kraken    snapshot bids 100.5x5 99.5x10           bids 100.5x5 99.5x10 | asks 103.5x5 ..
                            asks 103.5x5 104.5x10
  1.0    kraken    bid 103x2 (new level)                   bids 103x2 100.5x5 99.5x10
  2.0    coinbase  ask 101 -> 0 (level deleted)            asks 102x10
  3.0    coinbase  bid 104x1: best bid 104 >= ask 102      crossed
  3.5    coinbase  bid 104 -> 0 (timestamp left empty)     live again (bids 100x5 99x10)
  3.8    kraken    bid 99.5 -> 12                          (below the walked levels)
  --     coinbase  silent until 7.0: stale at 3.5 + 3 = 6.5
  7.0    coinbase  ask 102 -> 10.5                         kraken is stale now (3.8 + 3 = 6.8)
  7.2    kraken    bid 103 -> 2.5                          both live
  8.0    kraken    bid 99.5 -> 11                          end of the data
"""

from __future__ import annotations

import gzip
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from exporter.cli.main import main
from tests.support.redis_server import RedisServer

DATA = Path(__file__).resolve().parents[1] / "data" / "tardis"
FILES = sorted(DATA.glob("*.csv"))
T0 = 1_733_270_400.0
FEE_CB, FEE_KR = 0.001, 0.002

CONFIG: dict[str, Any] = {
    "exchanges": {"coinbase": {"taker_fee": FEE_CB}, "kraken": {"taker_fee": FEE_KR}},
    "symbols": {"BTC/USD": {"coinbase": "BTC/USD", "kraken": "BTC/USD"}},
    "notionals": [150, 500],
    "feeds": {"depth": 10, "stale_after": 3.0, "max_book_skew": 2.0},
    "windows": {"open_threshold": 0.001, "close_threshold": 0.0005, "min_duration_seconds": 0.5},
    "redis": {"url": None},
}


def write_config(tmp: Path, data: dict[str, Any] | None = None) -> Path:
    path = tmp / "replay.yaml"
    path.write_text(yaml.safe_dump(data or CONFIG), encoding="utf-8")
    return path


def replay(tmp: Path, *extra: str, files: list[Path] | None = None, cfg: Path | None = None) -> int:
    cfg = cfg or write_config(tmp)
    args = ["replay", "--config.file", str(cfg), *map(str, files or FILES), *extra]
    return main(args)


def read_windows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def net(notional: float, asks: list[tuple[float, float]], bids: list[tuple[float, float]]) -> float:
    """Net profit by hand: buy ``notional`` on coinbase's asks, pay its fee in base, sell
    into kraken's bids, pay kraken's fee on the proceeds (docs/analytics.md, Opportunity)."""
    base, left = 0.0, notional
    for price, qty in asks:
        take = min(qty, left / price)
        base += take
        left -= take * price
    assert left < 1e-9, "the hand-written asks absorb the notional"
    base *= 1 - FEE_CB
    proceeds = 0.0
    for price, qty in bids:
        take = min(qty, base)
        proceeds += take * price
        base -= take
    assert base < 1e-12, "the hand-written bids absorb the base"
    return proceeds * (1 - FEE_KR) - notional


def test_hand_written_files_give_the_windows_worked_out_by_hand(tmp_path: Path) -> None:
    out = tmp_path / "windows.jsonl"
    assert replay(tmp_path, "--windows", str(out)) == 0
    got = read_windows(out)

    # t=1.0 kraken bids 103x2 100.5x5: coinbase -> kraken turns profitable.
    # 150: 150/101 = 1.48515 BTC at 101, x0.999 = 1.48366, all sold at 103: 152.817,
    #      x0.998 = 152.5117 -> +2.5117 (ROI 1.674%) >= open 0.1%: opens.
    p150_t1 = net(150, [(101, 5)], [(103, 2), (100.5, 5)])
    # 500: 500/101 = 4.95050 BTC, x0.999 = 4.94554; 2 at 103 = 206, 2.94554 at 100.5 =
    #      296.027; 502.027 x0.998 = 501.023 -> +1.0232 (ROI 0.2046%): opens.
    p500_t1 = net(500, [(101, 5)], [(103, 2), (100.5, 5)])
    assert p150_t1 == pytest.approx(2.5116920792079, abs=1e-9)
    assert p500_t1 == pytest.approx(1.0231732673267, abs=1e-9)
    # t=2.0 coinbase's 101 ask is deleted: buying at 102.
    # 150: 150/102 = 1.47059, x0.999 = 1.46912 at 103 = 151.319, x0.998 -> +1.0165 (0.678%)
    #      stays open (>= close 0.05%) with its t=1 peak.
    p150_t2 = net(150, [(102, 10)], [(103, 2), (100.5, 5)])
    # 500: 500/102 = 4.90196, x0.999 = 4.89706; 206 + 2.89706 x 100.5 = 497.154, x0.998 =
    #      496.160 -> -3.8399 (-0.768%) < close: closes below_threshold at 2.0.
    p500_t2 = net(500, [(102, 10)], [(103, 2), (100.5, 5)])
    assert p500_t2 < 0.0005 * 500
    # t=3.0 coinbase crosses (bid 104 >= ask 102): its windows close `crossed` at 3.0.
    # t=3.5 coinbase uncrosses, but kraken's last update (1.0) is 2.5 s older than coinbase's:
    #      beyond max_book_skew (2 s), no evaluation, no window.
    # t=3.8 kraken updates: skew 0.3 s, 150 opens again at the t=2 prices (+1.0165).
    # t=6.5 coinbase is stale (last update 3.5 + stale_after 3): the sweep at 6.75 (every
    #      0.75 s from T0) closes the window `stale` with end = the deadline, 6.5.
    # t=7.0 coinbase is back but kraken is stale (3.8 + 3 = 6.8 < 7.0): nothing opens.
    # t=7.2 kraken updates (bids 103x2.5): 150 opens at the same prices (+1.0165).
    # t=8.0 the data ends: the open window closes `shutdown` at 8.0.
    expected = [  # (notional, start, end, reason, peak profit), in log order (by end)
        (500, 1.0, 2.0, "below_threshold", p500_t1),
        (150, 1.0, 3.0, "crossed", p150_t1),
        (150, 3.8, 6.5, "stale", p150_t2),
        (150, 7.2, 8.0, "shutdown", p150_t2),
    ]
    # Numbered by (start, route in configuration order, end): the 150 of t=1 is first.
    seq = {(150, 1.0): 1, (500, 1.0): 2, (150, 3.8): 3, (150, 7.2): 4}
    assert len(got) == len(expected)
    for w, (notional, start, end, reason, profit) in zip(got, expected, strict=True):
        assert (w["symbol"], w["buy_exchange"], w["sell_exchange"]) == (
            "BTC/USD", "coinbase", "kraken"
        )  # fmt: skip
        assert w["kind"] == "window" and w["notional"] == str(notional)
        assert w["start"] == round(T0 + start, 3) and w["end"] == round(T0 + end, 3)
        assert w["duration_seconds"] == round(end - start, 3)
        assert w["close_reason"] == reason
        assert w["peak_profit"] == pytest.approx(profit, abs=1e-9)
        assert w["peak_roi"] == pytest.approx(profit / notional, abs=1e-12)
        assert w["threshold"] == 0.001
        assert w["id"] == f"{int((T0 + start) * 1000)}-{seq[(notional, start)]}"


def test_report_json_sums_the_windows_over_the_recorded_span(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    # A file given twice is replayed once.
    assert replay(tmp_path, "--report", str(report_path), files=[*FILES, FILES[0]]) == 0
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["span"] == {"start": T0, "end": T0 + 8.0, "seconds": 8.0}
    assert report["rows"] == 16 and report["updates"] == 10  # 8 rows per file; 5 updates each
    assert report["rejected"] == {"malformed": 0, "truncated": 0, "unknown": []}
    keys = [(r["buy_exchange"], r["sell_exchange"], r["notional"]) for r in report["routes"]]
    assert keys == [
        ("coinbase", "kraken", 150.0), ("coinbase", "kraken", 500.0),
        ("kraken", "coinbase", 150.0), ("kraken", "coinbase", 500.0),
    ]  # fmt: skip
    r150, r500, back150, back500 = report["routes"]
    # 150: windows of 2.0, 2.7 and 0.8 s.
    assert r150["windows"] == 3
    assert r150["time_in_window_seconds"] == pytest.approx(5.5)
    assert r150["time_in_window_ratio"] == pytest.approx(5.5 / 8.0)
    assert r150["duration_seconds"]["p50"] == pytest.approx(2.0)
    assert r150["duration_seconds"]["p90"] == pytest.approx(2.0 + 0.8 * (2.7 - 2.0))
    assert r150["duration_seconds"]["max"] == pytest.approx(2.7)
    p150_t1 = net(150, [(101, 5)], [(103, 2), (100.5, 5)])
    p150_t2 = net(150, [(102, 10)], [(103, 2), (100.5, 5)])
    assert r150["peak_profit_sum"] == pytest.approx(p150_t1 + 2 * p150_t2, abs=1e-9)
    assert r150["peak_profit_max"] == pytest.approx(p150_t1, abs=1e-9)
    assert r150["window_spans"] == [
        [T0 + 1.0, T0 + 3.0],
        [T0 + 3.8, T0 + 6.5],
        [T0 + 7.2, T0 + 8.0],
    ]
    # Evaluations with a window open: t=1.0, 2.0 (first window), 3.8 (second), 7.2, 8.0.
    rois = [p150_t1 / 150, p150_t2 / 150, p150_t2 / 150, p150_t2 / 150, p150_t2 / 150]
    assert r150["mean_net_roi_open"] == pytest.approx(sum(rois) / len(rois), abs=1e-12)
    # Every evaluation of live books was fillable (the books absorb 150 and 500).
    assert r150["fillable_ratio"] == 1.0 and r500["fillable_ratio"] == 1.0
    assert r500["windows"] == 1 and r500["window_spans"] == [[T0 + 1.0, T0 + 2.0]]
    for back in (back150, back500):  # kraken -> coinbase never pays
        assert back["windows"] == 0 and back["time_in_window_seconds"] == 0.0
        assert back["duration_seconds"] == {"p50": None, "p90": None, "max": None}
        assert back["mean_net_roi_open"] is None and back["window_spans"] == []
        assert all(v is None or v < 0 for _t, v in back["series"])
    # Series: one point per recorded second, the last evaluation of that second.
    series = dict((t, v) for t, v in r150["series"])
    assert series[T0 + 1.0] == pytest.approx(p150_t1 / 150)
    assert series[T0 + 3.0] == pytest.approx(p150_t2 / 150)  # 3.8 is the last in second 3
    assert series[T0 + 6.0] is None  # the sweep at 6.75 found coinbase stale
    assert series[T0 + 8.0] == pytest.approx(p150_t2 / 150)
    assert [t for t, _v in r150["series"]] == sorted({t for t, _v in r150["series"]})


def test_unknown_book_reported_once_and_bad_rows_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    extra = tmp_path / "binance_incremental_book_L2_2024-12-04_DOGEUSDT.csv.gz"
    rows = ["exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount"]
    rows += [f"binance,DOGEUSDT,,{int(T0 * 1e6) + k},false,bid,0.4,{k + 1}" for k in range(40)]
    rows[3] = "binance,DOGEUSDT,,not-a-time,false,bid,0.4,1"  # malformed: counted, skipped
    extra.write_bytes(gzip.compress(("\n".join(rows) + "\n").encode())[:-30])  # truncated
    report_path = tmp_path / "r.json"
    assert replay(tmp_path, "--report", str(report_path), files=[*FILES, extra]) == 0
    rejected = json.loads(report_path.read_text(encoding="utf-8"))["rejected"]
    assert rejected["truncated"] == 1 and rejected["malformed"] == 1
    (unknown,) = rejected["unknown"]
    assert unknown["exchange"] == "binance" and unknown["symbol"] == "DOGEUSDT"
    assert 0 < unknown["rows"] < 40  # the well-formed rows before the break
    said = [
        r
        for r in caplog.records
        if r.name == "exporter.cli.replay" and "DOGEUSDT" in r.getMessage()
    ]
    assert len(said) == 1 and f"{unknown['rows']} rows" in said[0].getMessage()


def test_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    only_unknown = tmp_path / "binance_incremental_book_L2_2024-12-04_DOGEUSDT.csv"
    only_unknown.write_text(
        "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n"
        f"binance,DOGEUSDT,,{int(T0 * 1e6)},true,bid,0.4,1\n",
        encoding="utf-8",
    )
    assert replay(tmp_path, files=[only_unknown]) == 1  # no row could be used
    no_fee = dict(CONFIG, exchanges={"coinbase": {"taker_fee": FEE_CB}, "kraken": {}})
    assert replay(tmp_path, cfg=write_config(tmp_path, no_fee)) == 2
    assert "exchanges.kraken.taker_fee" in capsys.readouterr().err
    assert replay(tmp_path, files=[tmp_path / "missing.csv.gz"]) == 2
    assert replay(tmp_path, "--jobs", "0") == 2
    assert replay(tmp_path, "--report", str(tmp_path / "r.txt")) == 2
    cfg = write_config(tmp_path, no_fee)
    assert main(["check-config", str(cfg)]) == 0  # a note only
    assert "note for replay: exchanges.kraken.taker_fee" in capsys.readouterr().out
    assert main(["check-config", "--replay", str(cfg)]) == 2


def _two_symbol_files(tmp: Path) -> tuple[Path, list[Path]]:
    """The hand files, plus the same rows as ETH/USD shifted by 0.05 s: two symbols."""
    files = list(FILES)
    for path in FILES:
        lines = path.read_text(encoding="utf-8").splitlines()
        out = [lines[0]]
        for line in lines[1:]:
            ex, sym, ts, lts, *rest = line.split(",")
            sym = {"BTC-USD": "ETH-USD", "XBT/USD": "ETH/USD"}[sym]
            ts = str(int(ts) + 50_000) if ts else ""
            out.append(",".join([ex, sym, ts, str(int(lts) + 50_000), *rest]))
        eth = tmp / path.name.replace("BTC-USD", "ETH-USD").replace("XBT-USD", "ETH-USD")
        eth.with_suffix(".csv.gz").write_bytes(gzip.compress(("\n".join(out) + "\n").encode()))
        files.append(eth.with_suffix(".csv.gz"))
    cfg = dict(CONFIG)
    cfg["symbols"] = {
        "BTC/USD": {"coinbase": "BTC/USD", "kraken": "BTC/USD"},
        "ETH/USD": {"coinbase": "ETH/USD", "kraken": "ETH/USD"},
    }
    return write_config(tmp, cfg), files


def test_jobs_2_gives_the_same_windows_and_report_as_jobs_1(tmp_path: Path) -> None:
    cfg, files = _two_symbol_files(tmp_path)
    outputs = {}
    for jobs in ("1", "2"):
        w, r = tmp_path / f"w{jobs}.jsonl", tmp_path / f"r{jobs}.json"
        assert replay(tmp_path, "--jobs", jobs, "--windows", str(w), "--report", str(r),
                      files=files, cfg=cfg) == 0  # fmt: skip
        outputs[jobs] = (w.read_text(encoding="utf-8"), r.read_text(encoding="utf-8"))
    assert outputs["1"] == outputs["2"]
    windows = [json.loads(x) for x in outputs["1"][0].splitlines()]
    assert sorted({w["symbol"] for w in windows}) == ["BTC/USD", "ETH/USD"]
    assert len(windows) == 8
    report = json.loads(outputs["1"][1])
    assert report["rows"] == 32 and [r["windows"] for r in report["routes"]] == [3, 1, 0, 0] * 2


def test_redis_writes_only_under_the_prefix(tmp_path: Path) -> None:
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        client.set("ticker:live:BTC/USD", "live value")  # a live exporter's key
        assert replay(tmp_path, "--redis.url", server.url) == 0
        keys = set(client.keys("*"))
        assert "ticker:live:BTC/USD" in keys and client.get("ticker:live:BTC/USD") == "live value"
        mine = keys - {"ticker:live:BTC/USD"}
        assert mine and all(k.startswith("replay:") for k in mine), sorted(mine)
        log = client.xrange("replay:windows")
        assert [e[1]["close_reason"] for e in log] == [
            "below_threshold", "crossed", "stale", "shutdown"
        ]  # fmt: skip
        assert "replay:ticker:coinbase:BTC/USD" in keys and "replay:history:BTC/USD" in keys
        client.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_speed_serves_metrics_at_the_recorded_pace(tmp_path: Path) -> None:
    port = _free_port()
    out = tmp_path / "w.jsonl"
    cmd = [sys.executable, "-m", "exporter.cli", "replay", "--config.file",
           str(write_config(tmp_path)), *map(str, FILES), "--speed", "2",
           "--web.listen-address", f"127.0.0.1:{port}", "--windows", str(out)]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = ""
        deadline = t0 + 20
        while time.monotonic() < deadline and "cryptoarb_window_open" not in seen:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    body = r.read().decode()
                if 'cryptoarb_orderbook_best_bid_price{exchange="kraken"' in body:
                    seen = body
            except OSError:
                time.sleep(0.05)
        assert 'cryptoarb_orderbook_best_bid_price{exchange="coinbase",symbol="BTC/USD"}' in seen
        assert "cryptoarb_window_open" in seen
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    # 8 recorded seconds at twice the pace: about 4 s, never as fast as possible.
    assert time.monotonic() - t0 >= 3.9
    assert len(read_windows(tmp_path / "w.jsonl")) == 4


def test_html_report_or_one_message_without_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "report.html"
    assert replay(tmp_path, "--report", str(page)) == 0
    text = page.read_text(encoding="utf-8")
    assert text.lstrip().lower().startswith("<!doctype html") and "BTC/USD" in text
    capsys.readouterr()

    from exporter.replay import report_html

    def missing() -> None:
        err = report_html.ReportExtraMissing(f"{report_html.INSTALL_HINT} (altair is missing)")
        raise err

    monkeypatch.setattr(report_html, "require_extra", missing)
    page.unlink()
    windows = tmp_path / "w.jsonl"
    assert replay(tmp_path, "--report", str(page), "--windows", str(windows)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'cryptoarb-exporter[report]'" in err
    assert not page.exists() and not windows.exists()  # refused before replaying

"""Bad exchange input, fuzzed: frame checks (what ccxt never sees), the message -> book ->
snapshot -> analytics path (never a NaN, never a crash), the snapshot budget, Retry-After
parsing, error classification and the rate-limited log."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import pytest
from ccxt.base import errors as ccxt_errors
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.analytics.arbitrage import Leg, evaluate_pair
from exporter.analytics.book import book_metrics
from exporter.feeds.clients import BadValueFrame, MalformedFrame, build_exchange
from exporter.feeds.guard import (
    SnapshotBudget,
    check_binance,
    check_kraken,
    retry_after_seconds,
)
from exporter.feeds.levels import copy_levels
from exporter.feeds.stats import RateLimitedLog
from exporter.feeds.supervisor import classify
from exporter.model import BookSnapshot, ErrorReason

SETTINGS = settings(max_examples=400, deadline=None)
MAX_PRICE, MAX_QTY = 1e9, 1e12
IDS = {"BTCUSDT", "ETHUSDT"}
SYMBOLS = {"BTC/USD", "ETH/USD"}

# Anything JSON (or Python's json module: NaN/Infinity literals) can carry as a number.
number = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**15), max_value=10**15),
    st.sampled_from(["nan", "inf", "-1", "0", "1e400", "abc", "", "1.5", "-0"]),
    st.none(),
    st.booleans(),
)


def _valid(x: Any, limit: float, allow_zero: bool) -> bool:
    if isinstance(x, bool) or x is None:
        return False
    try:
        v = float(x)
    except (TypeError, ValueError):
        return False
    return math.isfinite(v) and (v > 0 or (allow_zero and v == 0)) and v <= limit


@SETTINGS
@given(st.lists(st.tuples(number, number), max_size=5), st.sampled_from([*sorted(IDS), "XYZ"]))
def test_binance_check_accepts_exactly_the_valid_frames(levels: list[Any], sym: str) -> None:
    frame = {"e": "depthUpdate", "E": 1, "s": sym, "U": 1, "u": 2,
             "b": [list(lv) for lv in levels], "a": []}  # fmt: skip
    problem = check_binance(frame, IDS, MAX_PRICE, MAX_QTY)
    ok = all(_valid(p, MAX_PRICE, False) and _valid(q, MAX_QTY, True) for p, q in levels)
    if sym not in IDS:
        assert problem is not None and problem[0] is ErrorReason.UNKNOWN_SYMBOL
    elif ok:
        assert problem is None
    else:
        assert problem is not None
        assert problem[0] in (ErrorReason.BAD_VALUE, ErrorReason.MALFORMED_FRAME)


@SETTINGS
@given(st.lists(st.fixed_dictionaries({"price": number, "qty": number}), max_size=5))
def test_kraken_check_accepts_exactly_the_valid_frames(levels: list[dict[str, Any]]) -> None:
    item = {"symbol": "BTC/USD", "bids": levels, "asks": [], "checksum": 1}
    frame = {"channel": "book", "type": "update", "data": [item]}
    problem = check_kraken(frame, SYMBOLS, MAX_PRICE, MAX_QTY)
    ok = all(_valid(lv["price"], MAX_PRICE, False) and _valid(lv["qty"], MAX_QTY, True)
             for lv in levels)  # fmt: skip
    assert (problem is None) == ok, (levels, problem)


@pytest.mark.parametrize(("frame", "reason"), [
    ({"e": "depthUpdate", "s": "BTCUSDT", "U": 1, "b": [], "a": []}, ErrorReason.MALFORMED_FRAME),
    ({"e": "depthUpdate", "s": "BTCUSDT", "U": "1", "u": 2, "b": [], "a": []},
     ErrorReason.MALFORMED_FRAME),
    ({"e": "depthUpdate", "s": "BTCUSDT", "U": 1, "u": 2, "b": "x", "a": []},
     ErrorReason.MALFORMED_FRAME),
    ({"e": "depthUpdate", "s": "BTCUSDT", "U": 1, "u": 2, "b": [["1"]], "a": []},
     ErrorReason.MALFORMED_FRAME),
    ({"e": "depthUpdate", "s": "BTCUSDT", "U": 1, "u": 2, "b": [["NaN", "1"]], "a": []},
     ErrorReason.BAD_VALUE),
    ({"e": "depthUpdate", "s": "BTCUSDT", "U": 1, "u": 2, "b": [], "a": [["5", "-1"]]},
     ErrorReason.BAD_VALUE),
    ({"e": "depthUpdate", "s": "BTCUSDT", "U": 1, "u": 2, "b": [], "a": [["2e9", "1"]]},
     ErrorReason.BAD_VALUE),
    ({"e": "depthUpdate", "s": "DOGEUSDT", "U": 1, "u": 2, "b": [], "a": []},
     ErrorReason.UNKNOWN_SYMBOL),
    (["not", "a", "dict"], ErrorReason.MALFORMED_FRAME),
])  # fmt: skip
def test_binance_bad_frames_by_reason(frame: Any, reason: ErrorReason) -> None:
    problem = check_binance(frame, IDS, MAX_PRICE, MAX_QTY)
    assert problem is not None and problem[0] is reason


def test_other_binance_events_are_left_to_ccxt() -> None:
    assert check_binance({"result": None, "id": 1}, IDS, MAX_PRICE, MAX_QTY) is None
    assert check_kraken({"channel": "heartbeat"}, SYMBOLS, MAX_PRICE, MAX_QTY) is None
    item = {"symbol": "ETH/USD", "bids": [{"price": 1.5, "qty": 0}], "asks": []}
    ok = {"channel": "book", "type": "snapshot", "data": [item]}
    assert check_kraken(ok, SYMBOLS, MAX_PRICE, MAX_QTY) is None
    unknown = {**ok, "data": [{"symbol": "DOGE/USD", "bids": [], "asks": []}]}
    problem = check_kraken(unknown, SYMBOLS, MAX_PRICE, MAX_QTY)
    assert problem is not None and problem[0] is ErrorReason.UNKNOWN_SYMBOL


class FakeWs:
    """Stands in for ccxt's ws Client: records rejections."""

    def __init__(self) -> None:
        self.rejected: list[BaseException] = []

    def reject(self, exc: BaseException, message_hash: Any = None) -> None:
        self.rejected.append(exc)


@pytest.mark.parametrize("exchange", ["binance", "kraken"])
def test_guarded_client_skips_bad_frames_before_ccxt(exchange: str) -> None:
    seen: list[tuple[ErrorReason, str]] = []
    client = build_exchange(
        exchange, {}, on_frame=lambda: None, on_malformed=lambda e: None,
        on_rejected=lambda r, d: seen.append((r, d)),
    )  # fmt: skip
    client.markets_by_id = {"BTCUSDT": [{}]}
    client.markets = {"BTC/USD": {}}
    if exchange == "binance":
        bad = {"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 1, "u": 2,
               "b": [["Infinity", "1"]], "a": []}  # fmt: skip
        garbage = {**bad, "b": [["x", "1"]]}
        unknown = {**bad, "s": "LTCUSDT", "b": []}
    else:
        item = {"symbol": "BTC/USD", "bids": [{"price": -5, "qty": 1}], "asks": []}
        bad = {"channel": "book", "type": "update", "data": [item]}
        garbage = {**bad, "data": [{"symbol": "BTC/USD", "bids": [{"price": 5}], "asks": []}]}
        unknown = {**bad, "data": [{"symbol": "LTC/USD", "bids": [], "asks": []}]}
    ws = FakeWs()
    client.handle_message(ws, json.loads(json.dumps(bad)))
    client.handle_message(ws, garbage)
    client.handle_message(ws, unknown)
    assert [r for r, _ in seen] == [ErrorReason.BAD_VALUE, ErrorReason.MALFORMED_FRAME,
                                    ErrorReason.UNKNOWN_SYMBOL]  # fmt: skip
    # Bad values and garbage reject the watch (the book is rebuilt); an unknown symbol is
    # merely skipped.
    assert [type(e) for e in ws.rejected] == [BadValueFrame, MalformedFrame]
    assert classify(ws.rejected[0]) is ErrorReason.BAD_VALUE
    assert classify(ws.rejected[1]) is ErrorReason.MALFORMED_FRAME
    assert client.options["ws"]["compress"] == 0
    assert client.options["watchOrderBook"]["maxRetries"] == 1


# -- message -> snapshot -> analytics ---------------------------------------------------------

level = st.tuples(number, number)


@SETTINGS
@given(st.lists(level, max_size=8), st.lists(level, max_size=8),
       st.floats(min_value=1e-6, max_value=1e6))  # fmt: skip
def test_copied_books_and_analytics_are_finite(
    bids: list[Any], asks: list[Any], rate: float
) -> None:
    """Whatever a book holds, copy_levels either rejects it or the analytics are finite."""
    try:
        b = copy_levels(bids, 100, MAX_PRICE, MAX_QTY)
        a = copy_levels(asks, 100, MAX_PRICE, MAX_QTY)
    except (ValueError, TypeError):
        return
    b = tuple(sorted(b, key=lambda lv: -lv[0]))
    a = tuple(sorted(a, key=lambda lv: lv[0]))
    snap = BookSnapshot("x", "BTC/USD", "BTC/USD", b, a, None, 0.0, 0.0, None)
    metrics = book_metrics(snap, rate, [0.001, 0.01])
    if metrics is not None:
        values = [metrics.best_bid, metrics.best_ask, metrics.mid, metrics.spread_ratio]
        values += [v for pair in metrics.depth.values() for v in pair]
        values += [v for v in metrics.imbalance.values() if v is not None]
        assert all(math.isfinite(v) for v in values), metrics
    if a and b:
        result = evaluate_pair("BTC/USD", "x", "y", Leg(a, 0.001, rate), Leg(b, 0.002, 1.0),
                               [10.0, 1000.0], 0.0, 0.0, 0.0)  # fmt: skip
        assert math.isfinite(result.gross_spread)
        for fill in result.fills:
            for v in (fill.net_roi, fill.net_profit):
                assert v is None or math.isfinite(v)


# -- budget, Retry-After, classification, rate-limited log --------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=1, max_size=200))
def test_snapshot_budget_allows_at_most_12_per_minute(gaps: list[float]) -> None:
    """Attempts as fast as the budget allows, whatever the timing: never more than 12
    snapshots in any 60 s window (burst 4 + 8/min)."""
    clock = Clock()
    budget = SnapshotBudget(4, 8.0, clock)
    taken: list[float] = []
    for gap in gaps:
        clock.now += gap
        wait = budget.delay()
        clock.now += wait
        budget.take()
        taken.append(clock.now)
    for i, t in enumerate(taken):
        in_window = [x for x in taken[i:] if x < t + 60.0]
        assert len(in_window) <= 12


def test_snapshot_budget_is_free_for_a_single_fault() -> None:
    clock = Clock()
    budget = SnapshotBudget(4, 8.0, clock)
    for _ in range(4):
        assert budget.delay() == 0.0
        budget.take()
    assert budget.delay() == pytest.approx(7.5)
    with pytest.raises(RuntimeError):
        budget.take()


def test_retry_after_parsing() -> None:
    assert retry_after_seconds({"Retry-After": "7"}) == 7.0
    assert retry_after_seconds({"retry-after": "1.5"}) == 1.5
    assert retry_after_seconds({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"},
                               now=1445412470.0) == pytest.approx(10.0)  # fmt: skip
    assert retry_after_seconds({"Retry-After": "-3"}) == 0.0
    for bad in ({"Retry-After": "soon"}, {"Retry-After": "nan"}, {}, None, "x"):
        assert retry_after_seconds(bad) is None


@pytest.mark.parametrize(("exc", "reason"), [
    (ccxt_errors.DDoSProtection("binance 418"), ErrorReason.RATE_LIMIT),
    (ccxt_errors.RateLimitExceeded("binance 429"), ErrorReason.RATE_LIMIT),
    (ccxt_errors.ExchangeNotAvailable("503"), ErrorReason.NETWORK),
    (ccxt_errors.OperationFailed('binance {"code": -1000}'), ErrorReason.NETWORK),
    (ccxt_errors.ExchangeError("refused"), ErrorReason.NETWORK),
    (ccxt_errors.BadResponse("garbage"), ErrorReason.BAD_VALUE),
    (ccxt_errors.InvalidNonce("gap"), ErrorReason.SEQUENCE_GAP),
    (ccxt_errors.ChecksumError("crc"), ErrorReason.CHECKSUM),
    (ccxt_errors.BadSymbol("x"), ErrorReason.UNKNOWN_SYMBOL),
    (TimeoutError(), ErrorReason.TIMEOUT),
    (MalformedFrame("x"), ErrorReason.MALFORMED_FRAME),
    (BadValueFrame("x"), ErrorReason.BAD_VALUE),
    (KeyError("x"), ErrorReason.BAD_VALUE),
])  # fmt: skip
def test_classify(exc: BaseException, reason: ErrorReason) -> None:
    assert classify(exc) is reason


def test_rate_limited_log_one_line_per_key_per_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr("exporter.feeds.stats.time.monotonic", clock)
    logger = logging.getLogger("test.ratelimit")
    warn = RateLimitedLog(logger, interval=10.0)
    with caplog.at_level(logging.WARNING, logger="test.ratelimit"):
        for _ in range(50):
            warn.warning(("binance", "bad_value"), "bad %s", "frame")
            clock.now += 0.1
        warn.warning(("kraken", "bad_value"), "bad %s", "frame")  # another key: logged
        clock.now += 10.0
        warn.warning(("binance", "bad_value"), "bad %s", "frame")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["bad frame", "bad frame", "bad frame (49 similar suppressed)"]

"""Configuration: defaults, env overrides, every problem at once with its path, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exporter.config import ConfigError, parse

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = {
    "exchanges": {"binance": {}, "kraken": {}},
    "symbols": {"BTC/USD": {"binance": "BTC/USDT", "kraken": "BTC/USD"}},
    "quote_conversion": {"USDT": {"rate": 1.0}},
    "notionals": [10000, 1000, 100000],
}


def problems(data: object, environ: dict[str, str] | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse(data, "test", environ=environ or {})
    return {p.path: p.message for p in info.value.problems}


def test_minimal_config_gets_documented_defaults() -> None:
    c = parse(dict(MINIMAL), environ={})
    assert c.notionals == [1000, 10000, 100000]
    assert c.reference_notional == 1000  # smallest notional
    assert c.bands == [0.001, 0.005, 0.01]
    assert c.reference_band == 0.005  # middle band
    assert c.reference_pair == ("binance", "kraken")  # first two exchanges
    assert c.feeds.depth == 100 and c.feeds.stale_after == 10 and c.feeds.frozen_after == 30
    assert c.feeds.backoff.base == 0.5 and c.feeds.backoff.cap == 30
    assert c.windows.open_threshold == 0.0 and c.windows.close_threshold == -0.0002
    assert c.redis.url == "redis://127.0.0.1:6379/0"
    assert (c.web.host, c.web.port) == ("127.0.0.1", 9877)


def test_fee_and_staleness_overrides_resolve_per_market() -> None:
    data = dict(MINIMAL)
    data["exchanges"] = {
        "binance": {
            "taker_fee": 0.001,
            "stale_after": 4,
            "markets": {"BTC/USDT": {"taker_fee": 0.00075, "stale_after": 2}},
        },
        "kraken": {},
    }
    c = parse(data, environ={})
    assert c.taker_fee_override("binance", "BTC/USDT") == 0.00075
    assert c.taker_fee_override("binance", "ETH/USDT") == 0.001
    assert c.taker_fee_override("kraken", "BTC/USD") is None  # ccxt's market fee applies
    assert c.stale_after("binance", "BTC/USDT") == 2
    assert c.stale_after("binance", "ETH/USDT") == 4
    assert c.stale_after("kraken", "BTC/USD") == 10


def test_env_overrides_section_keys() -> None:
    env = {
        "CRYPTOARB_REDIS_URL": "redis://10.0.0.1:6380/1",
        "CRYPTOARB_WEB_LISTEN_ADDRESS": "0.0.0.0:9999",
        "CRYPTOARB_FEEDS_STALE_AFTER": "3.5",
        "CRYPTOARB_QUOTE_CONVERSION_USDT": "{rate: 0.999}",
        "UNRELATED": "x",
    }
    c = parse(dict(MINIMAL), environ=env)
    assert c.redis.url == "redis://10.0.0.1:6380/1"
    assert c.web.port == 9999
    assert c.feeds.stale_after == 3.5
    assert c.quote_conversion["USDT"].rate == 0.999


def test_env_override_with_bad_value_is_reported_with_path() -> None:
    found = problems(dict(MINIMAL), {"CRYPTOARB_FEEDS_DEPTH": "lots", "CRYPTOARB_NOPE_X": "1"})
    assert "feeds.depth" in found
    assert "env CRYPTOARB_NOPE_X" in found


def test_every_problem_is_reported_at_once_with_its_path() -> None:
    data = {
        "exchanges": {
            "binance": {"ccxt": {"apiKey": "k", "secret": "s"}, "taker_fee": 2},
            "notanexchange": {},
        },
        "symbols": {
            "BTC/USD": {"binance": "BTC/USDT", "kraken": "BTC/USD"},
            "ETH/USD": {"binance": "BTC/USDT"},
            "ETHUSD": {"binance": "ETH/USDT"},
        },
        "notionals": [1000, -5],
        "bands": [0.5, 2],
        "reference": {"notional": 777, "band": 0.3, "pair": ["binance", "binance"]},
        "feeds": {"stale_after": "abc", "bogus": 1},
        "windows": {"open_threshold": 0.001, "close_threshold": 0.002},
        "quote_conversion": {"EUR": {"rate": 1.1, "book": {"exchange": "kraken", "market": "X/Y"}}},
    }
    found = problems(data)
    expected = {
        "exchanges.binance.ccxt": "credential",
        "exchanges.binance.taker_fee": "less than 1",
        "exchanges.notanexchange": "not a ccxt.pro exchange",
        "symbols.BTC/USD.kraken": "not under `exchanges`",
        "symbols.ETH/USD.binance": "already mapped",
        "symbols.ETHUSD": "BASE/QUOTE",
        "notionals": "> 0",
        "bands": "(0, 1)",
        "reference.notional": "not among",
        "reference.pair": "two different",
        "feeds.stale_after": "valid number",
        "feeds.bogus": "unknown key",
        "windows.close_threshold": "hysteresis",
        "quote_conversion.EUR": "exactly one",
        "quote_conversion.EUR.book.market": "must contain EUR",
    }
    for path, fragment in expected.items():
        assert path in found, f"{path} not reported; got {sorted(found)}"
        assert fragment in found[path], (path, found[path])
    # USDT markets without a conversion: never assume USDT == USD
    assert any("USDT is never assumed" in m for m in found.values())


@pytest.mark.parametrize("missing", ["exchanges", "symbols", "notionals"])
def test_required_sections(missing: str) -> None:
    data = {k: v for k, v in MINIMAL.items() if k != missing}
    assert missing in problems(data)


def test_credentials_rejected_case_insensitively() -> None:
    data = dict(MINIMAL)
    data["exchanges"] = {"binance": {"ccxt": {"PRIVATEKEY": "x"}}, "kraken": {}}
    assert "credential" in problems(data)["exchanges.binance.ccxt"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_check_config_cli_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(MINIMAL))
    r = _cli("check-config", str(good))
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text("exchanges: {binance: {ccxt: {apiKey: x}}}\nnotionals: [0]\n")
    r = _cli("check-config", "--config.file", str(bad))
    assert r.returncode == 2
    assert (
        "exchanges.binance.ccxt" in r.stderr and "notionals" in r.stderr and "symbols" in r.stderr
    )

    r = _cli("run", "--config.file", str(bad))
    assert r.returncode == 2 and "invalid configuration" in r.stderr

    r = _cli("check-config", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "cannot read file" in r.stderr

    notyaml = tmp_path / "x.yaml"
    notyaml.write_text("exchanges: [unclosed\n")
    r = _cli("check-config", str(notyaml))
    assert r.returncode == 2 and "not valid YAML" in r.stderr


def test_example_config_passes_check_config() -> None:
    r = _cli("check-config", str(ROOT / "config.example.yaml"))
    assert r.returncode == 0, r.stderr


def test_demo_config_is_valid() -> None:
    from exporter.cli.main import demo_config

    c = demo_config("http://127.0.0.1:1", None, None)
    assert c.redis.url is None
    assert set(c.exchanges) == {"binance", "kraken", "bybit", "okx", "coinbase"}
    assert all(len(mapping) == 5 for mapping in c.symbols.values())
    assert c.quote_conversion["USDT"].book is not None


def test_routes_allow_list_and_cap_are_checked() -> None:
    data = dict(MINIMAL, routes={"allow": [["binance", "bitstamp"], ["kraken", "kraken"]]})
    found = problems(data)
    assert found["routes.allow.0"] == "unknown exchange 'bitstamp'"
    assert found["routes.allow.1"] == "must be two different exchanges"
    many = {f"A{i}/USD": {"binance": f"A{i}/USDT", "kraken": f"A{i}/USD"} for i in range(6)}
    found = problems(dict(MINIMAL, symbols=many, routes={"max_routes": 10}))
    assert found["routes.max_routes"].startswith("12 routes configured")
    assert "routes.allow" in found["routes.max_routes"]
    ok = parse(dict(MINIMAL, symbols=many, routes={"max_routes": 12}), environ={})
    assert ok.routes_for("A0/USD") == [("binance", "kraken"), ("kraken", "binance")]


def test_coinbase_usdc_markets_are_refused_as_merged_usd_books() -> None:
    data = dict(
        MINIMAL,
        exchanges={"binance": {}, "coinbase": {}},
        symbols={"BTC/USD": {"binance": "BTC/USDT", "coinbase": "BTC/USDC"}},
    )
    msg = problems(data)["symbols.BTC/USD.coinbase"]
    assert "merged its USDC and USD books" in msg and "map the USD market" in msg
    data["symbols"] = {"BTC/USD": {"binance": "BTC/USDT", "coinbase": "BTC/USD"}}
    assert parse(data, environ={}).symbols["BTC/USD"]["coinbase"] == "BTC/USD"

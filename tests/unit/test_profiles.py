"""Watch profiles: the ccxt limit chosen from feeds.depth, the depth checks of check-config,
the ccxt option defaults, and the table itself against the installed ccxt (each venue's
watch_order_book run offline: the subscription it would send is captured, nothing is
connected)."""

from __future__ import annotations

import asyncio
from typing import Any

import ccxt.pro
import pytest
from ccxt.base.errors import AuthenticationError, BadRequest, NotSupported

from exporter.config import ConfigError, parse
from exporter.feeds.profiles import PROFILES, ccxt_limit, client_config, depth_problem

from .test_config import MINIMAL


@pytest.mark.parametrize(("exchange", "depth", "limit"), [
    ("binance", 100, 100), ("binance", 7, 7), ("binance", 6000, 5000),
    ("kraken", 100, 100), ("kraken", 30, 100), ("kraken", 5, 10), ("kraken", 2000, 1000),
    ("bybit", 100, 200), ("bybit", 10, 50), ("bybit", 1, 1), ("bybit", 5000, 1000),
    ("okx", 100, 400), ("okx", 3, 3), ("okx", 10, 400), ("okx", 500, 400),
    ("coinbase", 100, None),  # level2 ignores the limit
    ("bitfinex", 100, None),  # not in the table: ccxt's default
])  # fmt: skip
def test_ccxt_limit_is_the_smallest_supported_value_at_or_above_the_depth(
    exchange: str, depth: int, limit: int | None
) -> None:
    assert ccxt_limit(exchange, depth) == limit


def test_an_exchange_depth_overrides_the_limit() -> None:
    assert ccxt_limit("okx", 100, 5) == 5
    assert ccxt_limit("bitfinex", 100, 25) == 25


def test_depth_problems_name_the_allowed_values() -> None:
    okx = depth_problem("okx", 50)
    assert okx is not None
    assert (
        "books50-l2-tbt" in okx and "VIP4" in okx and "allowed on public data: 1, 2-5, 400" in okx
    )
    bybit = depth_problem("bybit", 100)
    assert bybit is not None and "allowed on public data: 1, 50, 200, 1000" in bybit
    kraken = depth_problem("kraken", 50)
    assert kraken is not None and "10, 25, 100, 500, 1000" in kraken
    binance = depth_problem("binance", 6000)
    assert binance is not None and "1-5000" in binance
    coinbase = depth_problem("coinbase", 50)
    assert coinbase is not None and "ignores the depth" in coinbase
    for ok in [("okx", 400), ("okx", 4), ("bybit", 200), ("kraken", 25), ("binance", 100)]:
        assert depth_problem(*ok) is None
    assert depth_problem("bitfinex", 77) is None  # unverified: ccxt decides


def test_check_config_rejects_depths_that_cannot_work_on_public_data() -> None:
    data = dict(MINIMAL)
    data["exchanges"] = {"binance": {}, "kraken": {"depth": 50}}
    with pytest.raises(ConfigError) as info:
        parse(data, "test", environ={})
    found = {p.path: p.message for p in info.value.problems}
    assert "10, 25, 100, 500, 1000" in found["exchanges.kraken.depth"]
    data["exchanges"] = {"binance": {"depth": 1000}, "kraken": {"depth": 500}}
    config = parse(data, "test", environ={})
    assert config.exchanges["kraken"].depth == 500 and config.exchanges["binance"].depth == 1000


def test_profile_option_defaults_sit_under_the_users_ccxt_mapping() -> None:
    merged = client_config("bybit", {"options": {"ws": {"compress": 15}}, "rateLimit": 50})
    assert merged["options"]["fetchMarkets"] == {"types": ["spot"]}
    assert merged["options"]["ws"] == {"compress": 15} and merged["rateLimit"] == 50
    mine = client_config("okx", {"options": {"fetchMarkets": {"types": ["spot", "swap"]}}})
    assert mine["options"]["fetchMarkets"]["types"] == ["spot", "swap"]
    assert client_config("binance", {})["options"]["fetchMargins"] is False
    assert client_config("kraken", {"a": 1}) == {"a": 1}
    assert PROFILES["okx"].ccxt_options["fetchMarkets"] == {"types": ["spot"]}  # not mutated


# -- the table against the installed ccxt -----------------------------------------------------

MARKET = {
    "id": "BTCUSDT", "symbol": "BTC/USDT", "base": "BTC", "quote": "USDT", "baseId": "BTC",
    "quoteId": "USDT", "type": "spot", "spot": True, "margin": False, "swap": False,
    "future": False, "option": False, "contract": False, "linear": None, "inverse": None,
    "active": True, "settle": None, "settleId": None, "contractSize": None,
    "precision": {"price": 0.01, "amount": 0.0001}, "limits": {}, "info": {},
}  # fmt: skip


class _Captured(Exception):
    pass


def _client(exchange: str, **ids: str) -> Any:
    client = getattr(ccxt.pro, exchange)()
    client.set_markets([{**MARKET, **ids}])
    return client


def _run(client: Any, limit: int) -> Any:
    """``client.watch_order_book("BTC/USDT", limit)``, then close the client."""

    async def run() -> Any:
        try:
            return await client.watch_order_book("BTC/USDT", limit)
        finally:
            await client.close()

    return asyncio.run(run())


def _capture(client: Any, method: str) -> list[Any]:
    seen: list[Any] = []

    async def fake(*args: Any, **kwargs: Any) -> Any:
        seen.append(args)
        raise _Captured

    setattr(client, method, fake)
    return seen


@pytest.mark.parametrize("limit", [1, 2, 5, 400, 100])
def test_okx_limit_selects_the_channel_the_profile_names(limit: int) -> None:
    client = _client("okx", id="BTC-USDT")
    seen = _capture(client, "watch_multiple")
    with pytest.raises(_Captured):
        _run(client, limit)
    channel = seen[0][2]["args"][0]["channel"]
    assert channel == PROFILES["okx"].channel_of(limit)
    assert channel == {1: "bbo-tbt", 2: "books5", 5: "books5"}.get(limit, "books")


def test_okx_50_needs_credentials() -> None:
    with pytest.raises(AuthenticationError):
        _run(_client("okx", id="BTC-USDT"), 50)
    assert 50 not in PROFILES["okx"].depths and 50 in PROFILES["okx"].refused


@pytest.mark.parametrize("limit", [1, 50, 200, 1000, 100, 25])
def test_bybit_spot_accepts_exactly_the_profile_depths(limit: int) -> None:
    client = _client("bybit")
    seen = _capture(client, "watch_topics")
    if limit in PROFILES["bybit"].depths:
        with pytest.raises(_Captured):
            _run(client, limit)
        assert seen[0][2] == [f"orderbook.{limit}.BTCUSDT"]
    else:
        with pytest.raises(BadRequest):
            _run(client, limit)


@pytest.mark.parametrize("limit", [10, 25, 100, 500, 1000, 50, 20])
def test_kraken_accepts_exactly_the_profile_depths(limit: int) -> None:
    client = _client("kraken", id="XBTUSDT")
    seen = _capture(client, "watch_multi_helper")
    if limit in PROFILES["kraken"].depths:
        with pytest.raises(_Captured):
            _run(client, limit)
        assert seen[0][4]["depth"] == limit
    else:
        with pytest.raises(NotSupported):
            _run(client, limit)


def test_binance_passes_the_limit_to_the_rest_snapshot_and_coinbase_ignores_it() -> None:
    binance = _client("binance", lowercaseId="btcusdt")
    seen = _capture(binance, "watch_multiple")
    with pytest.raises(_Captured):
        _run(binance, 777)
    assert seen[0][4]["limit"] == 777  # the subscription's snapshot limit
    coinbase = _client("coinbase", id="BTC-USDT")
    seen = _capture(coinbase, "watch")
    with pytest.raises(_Captured):
        _run(coinbase, 5)
    request = seen[0][2]
    assert request["channel"] == "level2" and "limit" not in str(request)

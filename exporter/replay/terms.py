"""Trading terms of a replay (taker fee, minimum cost and amount per market): from the
recording's markets sidecar when there is one (as ccxt listed the markets, the config's fee
overrides applied by :class:`FeeTable` as live), else from the config (Tardis downloads).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from exporter.config import Config
from exporter.market.fees import FeeTable
from exporter.model import FeedKey, MarketInfo
from exporter.replay.tardis import find_sidecar, load_sidecar


class ReplayInputError(Exception):
    """The replay cannot start (missing trading terms, unreadable sidecar): exit 2."""


def symbol_books(config: Config) -> list[FeedKey]:
    return [FeedKey((ex, m)) for mapping in config.symbols.values() for ex, m in mapping.items()]


def config_terms(config: Config, exchange: str, market: str) -> MarketInfo | None:
    """Terms of a market from the config alone (files without a sidecar): the taker fee is
    required, the minimum cost and amount default to 0."""
    fee = config.taker_fee_override(exchange, market)
    if fee is None:
        return None
    override = config.exchanges[exchange].markets.get(market)
    min_cost = override.min_cost if override is not None else None
    min_amount = override.min_amount if override is not None else None
    return MarketInfo(fee, min_cost or 0.0, min_amount or 0.0)


def missing_terms(config: Config, listed: set[FeedKey] | None = None) -> list[str]:
    """What the config lacks to replay the books not in ``listed`` (books no sidecar lists):
    one line per market, naming the keys."""
    out = []
    for ex, market in symbol_books(config):
        if listed is not None and (ex, market) in listed:
            continue
        if config.taker_fee_override(ex, market) is None:
            out.append(
                f"exchanges.{ex}.taker_fee (or exchanges.{ex}.markets.{market}.taker_fee): "
                f"needed to replay {ex} {market} from files without a markets sidecar"
            )
    return out


def load_terms(config: Config, paths: Sequence[Path]) -> FeeTable:
    """The fee table a replay uses: each exchange's sidecar(s) next to the data files, as
    ccxt listed the markets when recorded (config overrides applied by FeeTable.load, as live),
    else the config. Raises ReplayInputError naming what is missing."""
    listed: dict[str, dict[str, MarketInfo]] = {}
    for sidecar in sorted({s for p in paths if (s := find_sidecar(p)) is not None}):
        try:
            exchange, markets = load_sidecar(sidecar)
        except (OSError, ValueError) as err:
            raise ReplayInputError(str(err)) from err
        if exchange in config.exchanges:
            # Several days: the later day's listing wins (sidecars sort by day).
            listed.setdefault(exchange, {}).update(markets)
    have = {FeedKey((ex, m)) for ex, markets in listed.items() for m in markets}
    missing = missing_terms(config, have)
    if missing:
        raise ReplayInputError(
            "trading terms missing for replay:\n" + "\n".join(f"  - {m}" for m in missing)
        )
    fees = FeeTable(config)
    for ex in config.exchanges:
        markets = dict(listed.get(ex, {}))
        for e, m in symbol_books(config):
            if e == ex and m not in markets:
                terms = config_terms(config, ex, m)
                if terms is not None:
                    markets[m] = terms
        if markets:
            fees.load(ex, markets)
    return fees

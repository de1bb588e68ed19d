"""Trading terms per market (taker fee, minimum cost and amount), resolved once.

ccxt's market listing never changes while a client lives, so the terms are resolved into a
table when an exchange's markets load (and again whenever they reload), with the config's
per-exchange and per-market fee overrides applied. The hot path reads one dict entry.
"""

from __future__ import annotations

from collections.abc import Mapping

from exporter.config import Config
from exporter.model import FeedKey, MarketInfo


class FeeTable:
    def __init__(self, config: Config) -> None:
        self._config = config
        self._terms: dict[FeedKey, MarketInfo] = {}
        # Bumped on every load, so holders of resolved terms know to refresh them.
        self.version = 0

    def load(self, exchange: str, markets: Mapping[str, MarketInfo]) -> None:
        """Replace ``exchange``'s terms with those of freshly loaded ``markets``."""
        for key in [k for k in self._terms if k[0] == exchange]:
            del self._terms[key]
        for market, info in markets.items():
            override = self._config.taker_fee_override(exchange, market)
            fee = override if override is not None else info.taker_fee
            self._terms[FeedKey((exchange, market))] = MarketInfo(
                fee, info.min_cost, info.min_amount
            )
        self.version += 1

    def get(self, exchange: str, market: str) -> MarketInfo | None:
        """Terms of a loaded market, the override applied; None before its markets load."""
        return self._terms.get(FeedKey((exchange, market)))

    def __len__(self) -> int:
        return len(self._terms)

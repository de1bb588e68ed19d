"""Which ccxt.pro exchanges the exporter can watch (config validation asks here)."""

from __future__ import annotations

import functools


@functools.cache
def watchable_exchanges() -> frozenset[str]:
    """ccxt.pro exchange ids whose ``describe()['has']['watchOrderBook']`` is true."""
    import ccxt.pro

    ids: set[str] = set()
    for exchange_id in ccxt.pro.exchanges:
        cls = getattr(ccxt.pro, exchange_id, None)
        # Instantiating does no I/O; the class-level `has` is only the base default.
        if cls is not None and cls().describe().get("has", {}).get("watchOrderBook"):
            ids.add(exchange_id)
    return frozenset(ids)

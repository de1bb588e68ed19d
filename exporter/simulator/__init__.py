"""Exchange simulator: fake Binance spot and Kraken spot (WS v2) on loopback for ccxt.pro.

Run ``python -m exporter.simulator --port 0``; see `server` for flags, `control` for the HTTP
control API and `endpoints.ccxt_config` for pointing a real ccxt.pro client at it.
"""

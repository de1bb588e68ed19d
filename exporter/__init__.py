"""Prometheus exporter for real-time cross-exchange crypto arbitrage."""

__version__ = "0.1.0"

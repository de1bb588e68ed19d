"""Feeds: supervised ccxt.pro order-book watches, per-venue watch profiles, frame checks and
integrity hooks (the only package that imports ccxt)."""

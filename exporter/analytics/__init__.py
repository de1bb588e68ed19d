"""Pure analytics over book snapshots: per-book metrics and cross-exchange arbitrage."""

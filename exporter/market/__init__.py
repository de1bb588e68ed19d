"""The single in-memory read model (MarketState), its fee table and the intelligence timer."""

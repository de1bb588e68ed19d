"""Pure analytics over book snapshots: per-book metrics and cross-exchange arbitrage."""


def build() -> str:
    """``compiled`` when the analytics run as mypyc extension modules
    (``scripts/compile_analytics.py``), else ``python``."""
    from exporter.analytics import arbitrage, book

    return (
        "compiled"
        if all(m.__file__ and not m.__file__.endswith(".py") for m in (book, arbitrage))
        else "python"
    )

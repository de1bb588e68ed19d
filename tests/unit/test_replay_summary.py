"""The replay's terminal summary: the routes that had windows, most profit first, capped;
the caption counts the rest."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from exporter.cli.replay import summary_table


def route(symbol: str, windows: int, profit: float) -> dict[str, Any]:
    return {
        "symbol": symbol, "buy_exchange": "binance", "sell_exchange": "kraken",
        "notional": 1000.0, "windows": windows, "time_in_window_ratio": 0.1 * windows,
        "duration_seconds": {"p50": 1.0 if windows else None, "p90": None,
                             "max": 2.0 if windows else None},
        "peak_profit_sum": profit, "fillable_ratio": 1.0,
    }  # fmt: skip


def render(report: dict[str, Any], rows: int) -> str:
    console = Console(width=200, record=True)
    console.print(summary_table(report, rows=rows))
    return console.export_text()


def test_only_routes_with_windows_most_profit_first_capped() -> None:
    routes = [route("A/USD", 1, 1.0), route("B/USD", 0, 0.0), route("C/USD", 2, 5.0),
              route("D/USD", 3, 3.0), route("E/USD", 0, 0.0)]  # fmt: skip
    report = {"rows": 10, "updates": 5, "span": {"seconds": 2.0}, "routes": routes}
    text = render(report, rows=2)
    lines = [line for line in text.splitlines() if "binance → kraken" in line]
    assert [line.split()[1] for line in lines] == ["C/USD", "D/USD"]
    assert "1 more route(s) with windows; 2 route(s) without a window" in text
    full = render(report, rows=10)
    assert [ln.split()[1] for ln in full.splitlines() if "→" in ln] == ["C/USD", "D/USD", "A/USD"]
    assert "more route" not in full and "2 route(s) without a window" in full

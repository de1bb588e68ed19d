"""Helpers shared by the dashboard tests and the end-to-end test: the PromQL of every panel
and variable, with Grafana variables replaced by real values."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "grafana" / "dashboards"
RULES = ROOT / "prometheus" / "rules"

# One real value per variable (the demo/e2e configuration has them), and the built-ins.
VALUES = {
    "symbol": "BTC/USD",
    "exchange": "binance",
    "notional": "10000",
}


@dataclass(frozen=True)
class Target:
    dashboard: str
    panel: str
    ref: str
    expr: str
    legend: str

    def labels(self) -> set[str]:
        """Labels the panel shows (its legend) - every series must carry them."""
        return set(re.findall(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}", self.legend))


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DASHBOARDS / name).read_text(encoding="utf-8"))
    return data


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: load(p.name) for p in sorted(DASHBOARDS.glob("*.json"))}


def prometheus_targets() -> list[Target]:
    out = []
    for name, dash in dashboards().items():
        for panel in dash["panels"]:
            for t in panel.get("targets") or []:
                if t.get("datasource", {}).get("type") == "prometheus":
                    out.append(
                        Target(name, panel["title"], t["refId"], t["expr"],
                               t.get("legendFormat", ""))
                    )  # fmt: skip
    return out


def variable_queries() -> list[str]:
    return [
        v["query"]
        for dash in dashboards().values()
        for v in dash["templating"]["list"]
        if v.get("type") == "query"
    ]


def substitute(expr: str, scrape_interval: float = 1.0) -> str:
    """Grafana's variables replaced: one real value each, $__rate_interval = 4 x scrape."""
    out = expr.replace("$__rate_interval", f"{int(4 * scrape_interval)}s")
    out = out.replace("$__range", "5m").replace("$__interval", f"{int(scrape_interval)}s")
    for name, value in VALUES.items():
        out = out.replace(f"${{{name}}}", value).replace(f"${name}", value)
    assert "$" not in out, f"unreplaced variable in {out}"
    return out


def recorded_names() -> set[str]:
    names = set()
    for path in RULES.glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names |= {r["record"] for r in group["rules"] if "record" in r}
    return names


def rule_exprs() -> list[str]:
    exprs = []
    for path in RULES.glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            exprs += [r["expr"] for r in group["rules"]]
    return exprs


NAME = re.compile(r"(?<![\w:\"'])([a-zA-Z_][a-zA-Z0-9_]*(?::[a-zA-Z0-9_]+)*)(?![\w:])")


def metric_names(expr: str) -> set[str]:
    """Metric names an expression reads: exporter metrics (cryptoarb_*, process_*) and
    recording-rule outputs (names with a colon). Label names, functions and keywords never
    match these shapes; strings are stripped first."""
    no_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    no_braces = re.sub(r"\{[^}]*\}", "{}", no_strings)
    names = set()
    for name in NAME.findall(no_braces):
        if name.startswith(("cryptoarb_", "process_")) or ":" in name:
            names.add(name)
    return names

"""Generate the Grafana dashboards with grafana-foundation-sdk (pinned ==0.0.21).

    python grafana/generate.py          # (re)write grafana/dashboards/*.json
    python grafana/generate.py --check  # exit 1 when the checked-in JSON differs

Datasources are provisioned with fixed UIDs (grafana/provisioning/datasources/): Prometheus
`prometheus`, Alertmanager `alertmanager`, and the exporter's JSON API through the Infinity
plugin `cryptoarb-api`. Dashboard and panel identities are fixed so links stay stable.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import (
    dashboard,
    heatmap,
    prometheus,
    stat,
    table,
    timeseries,
)
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import heatmap as hm
from grafana_foundation_sdk.models import prometheus as pm

OUT = Path(__file__).resolve().parent / "dashboards"

PROM = common.DataSourceRef(type_val="prometheus", uid="prometheus")
ALERTMANAGER = common.DataSourceRef(type_val="alertmanager", uid="alertmanager")
API = common.DataSourceRef(type_val="yesoreyeram-infinity-datasource", uid="cryptoarb-api")

LAST = cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False)
SYM = 'symbol=~"$symbol"'
EXC = 'exchange=~"$exchange"'
NOT = 'notional=~"$notional"'
REF_BAND = "* on (band) group_left () cryptoarb_reference_info"
DIRECTION = "{{symbol}} {{buy_exchange}}→{{sell_exchange}}"


# ------------------------------------------------------------------------------ helpers
def q(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False,
      fmt: pm.PromQueryFormat | None = None) -> prometheus.Dataquery:  # fmt: skip
    query = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(PROM)
    if legend:
        query = query.legend_format(legend)
    query = query.instant() if instant else query.range()
    if fmt is not None:
        query = query.format(fmt)
    return query


class InfinityQuery(cogvariants.Dataquery):
    """An Infinity plugin query (JSON from the exporter's API); no SDK builder exists for it."""

    def __init__(self, ref: str, url: str, root: str, columns: list[tuple[str, str, str]]):
        self.ref, self.url, self.root, self.columns = ref, url, root, columns

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref,
            "datasource": API.to_json(),
            "type": "json",
            "source": "url",
            "format": "table",
            "parser": "backend",
            "url": self.url,
            "url_options": {"method": "GET"},
            "root_selector": self.root,
            "columns": [{"selector": s, "text": t, "type": typ} for s, t, typ in self.columns],
        }


class Infinity(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(self, ref: str, url: str, root: str, columns: list[tuple[str, str, str]]):
        self._q = InfinityQuery(ref, url, root, columns)

    def build(self) -> cogvariants.Dataquery:
        return self._q


def thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=v, color=c) for v, c in steps])
    )


def up_down_mappings(up: str = "UP", down: str = "DOWN") -> list[dm.ValueMapping]:
    return [
        dm.ValueMap(
            options={
                "1": dm.ValueMappingResult(text=up, color="green", index=0),
                "0": dm.ValueMappingResult(text=down, color="red", index=1),
            }
        )
    ]


def trend_mappings(epsilon: float = 0.0001) -> list[dm.ValueMapping]:
    return [
        dm.RangeMap(dm.DashboardRangeMapOptions(
            from_val=epsilon, to=1e9, result=dm.ValueMappingResult(text="▲", color="green",
                                                                    index=0))),
        dm.RangeMap(dm.DashboardRangeMapOptions(
            from_val=-1e9, to=-epsilon, result=dm.ValueMappingResult(text="▼", color="red",
                                                                      index=1))),
        dm.RangeMap(dm.DashboardRangeMapOptions(
            from_val=-epsilon, to=epsilon, result=dm.ValueMappingResult(text="–", color="text",
                                                                         index=2))),
    ]  # fmt: skip


def variable(name: str, label: str, query: str, *, multi: bool = True) -> dashboard.QueryVariable:
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(PROM)
        .query(query)
        .definition(query)
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(multi)
        .include_all(multi)
    )


def base(uid: str, title: str, tags: list[str]) -> dashboard.Dashboard:
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .tags(["cryptoarb", *tags])
        .refresh("5s")
        .time("now-30m", "now")
        .timezone("browser")
        .editable()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .link(
            dashboard.DashboardLink("cryptoarb dashboards")
            .type(dm.DashboardLinkType.DASHBOARDS)
            .tags(["cryptoarb"])
            .as_dropdown(True)
        )
    )


def ts(title: str, *targets: prometheus.Dataquery, unit: str = "", h: int = 8,
       w: int = 12, desc: str = "") -> timeseries.Panel:  # fmt: skip
    panel = timeseries.Panel().title(title).datasource(PROM).height(h).span(w)
    panel = panel.targets(list(targets)).line_width(1).fill_opacity(10)
    if unit:
        panel = panel.unit(unit)
    return panel.description(desc) if desc else panel


# ---------------------------------------------------------------------- arbitrage overview
def overview() -> dashboard.Dashboard:
    d = base("cryptoarb-overview", "Arbitrage overview", ["arbitrage"])
    d = d.with_variable(
        variable("symbol", "Symbol", "label_values(cryptoarb_orderbook_best_bid_price, symbol)")
    )
    d = d.with_variable(
        variable("exchange", "Exchange", "label_values(cryptoarb_feed_up, exchange)")
    )
    d = d.with_variable(variable("notional", "Notional",
                                 "label_values(cryptoarb_net_roi_ratio, notional)"))  # fmt: skip

    d = d.with_row(dashboard.Row("Spreads and net ROI"))
    d = d.with_panel(
        stat.Panel().title("Live spreads (gross, top of book)").datasource(PROM).height(6).span(8)
        .description("Gross cross-exchange spread per direction; the arrow and percentage show "
                     "the change over the dashboard's time range.")
        .with_target(q(f"cryptoarb_cross_spread_ratio{{{SYM}}}", DIRECTION))
        .unit("percentunit").decimals(3)
        .reduce_options(LAST)
        .graph_mode(common.BigValueGraphMode.AREA)
        .color_mode(common.BigValueColorMode.VALUE)
        .show_percent_change(True)
        .thresholds(thresholds((None, "red"), (0, "green")))
    )  # fmt: skip
    d = d.with_panel(
        stat.Panel().title("Spread trend ▲/▼").datasource(PROM).height(6).span(8)
        .description("Change of the reference spread over each trend window: ▲ above "
                     "+epsilon, ▼ below -epsilon (cryptoarb_spread_change_ratio).")
        .with_target(q(f"cryptoarb_spread_change_ratio{{{SYM}}}", "{{symbol}} {{window}}s",
                       instant=True))
        .mappings(trend_mappings())
        .reduce_options(LAST)
        .graph_mode(common.BigValueGraphMode.NONE)
        .color_mode(common.BigValueColorMode.VALUE)
    )  # fmt: skip
    d = d.with_panel(
        stat.Panel().title("Spread change").datasource(PROM).height(6).span(8)
        .with_target(q(f"cryptoarb_spread_change_ratio{{{SYM}}}", "{{symbol}} {{window}}s"))
        .unit("percentunit").decimals(4)
        .reduce_options(LAST)
        .graph_mode(common.BigValueGraphMode.AREA)
        .thresholds(thresholds((None, "red"), (0, "green")))
    )  # fmt: skip
    d = d.with_panel(
        ts("Net ROI per notional and direction",
           q(f"cryptoarb_net_roi_ratio{{{SYM}, {NOT}}}", f"{DIRECTION} @ {{{{notional}}}}"),
           unit="percentunit", w=16,
           desc="After fees and slippage for each configured notional (VWAP walk).")
        .thresholds_style(cb.GraphThresholdsStyleConfig().mode(
            common.GraphThresholdsStyleMode.LINE))
        .thresholds(thresholds((None, "red"), (0, "green")))
    )  # fmt: skip
    d = d.with_panel(
        stat.Panel().title("Best net ROI (reference notional)").datasource(PROM).height(8).span(8)
        .with_target(q(f"symbol:cryptoarb_net_roi_ratio:max_reference{{{SYM}}}", "{{symbol}}"))
        .unit("percentunit").decimals(3)
        .reduce_options(LAST)
        .graph_mode(common.BigValueGraphMode.AREA)
        .thresholds(thresholds((None, "red"), (0, "green")))
    )  # fmt: skip
    d = d.with_panel(
        table.Panel().title("Top opportunities").datasource(PROM).height(8).span(24)
        .description("Top 10 by net profit now; ROI and fillability alongside.")
        .targets([
            q(f"topk(10, cryptoarb_net_profit_quote{{{SYM}, {NOT}}})", ref="A", instant=True,
              fmt=pm.PromQueryFormat.TABLE),
            q(f"cryptoarb_net_roi_ratio{{{SYM}, {NOT}}}", ref="B", instant=True,
              fmt=pm.PromQueryFormat.TABLE),
            q(f"cryptoarb_opportunity_fillable{{{SYM}, {NOT}}}", ref="C", instant=True,
              fmt=pm.PromQueryFormat.TABLE),
        ])
        .with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(dm.DataTransformerConfig(id_val="filterByValue", options={
            "filters": [{"fieldName": "Value #A", "config": {"id": "isNotNull"}}],
            "match": "all", "type": "include"}))
        .with_transformation(dm.DataTransformerConfig(id_val="organize", options={
            "excludeByName": {"Time": True, "__name__": True, "instance": True, "job": True},
            "renameByName": {"Value #A": "net profit", "Value #B": "net ROI",
                             "Value #C": "fillable"},
            "indexByName": {"symbol": 0, "buy_exchange": 1, "sell_exchange": 2, "notional": 3,
                            "Value #A": 4, "Value #B": 5, "Value #C": 6}}))
        .with_transformation(dm.DataTransformerConfig(id_val="sortBy", options={
            "sort": [{"field": "net profit", "desc": True}]}))
        .override_by_name("net ROI", [dm.DynamicConfigValue(id_val="unit", value="percentunit")])
        .override_by_name("fillable", [dm.DynamicConfigValue(
            id_val="mappings", value=[m.to_json() for m in up_down_mappings("yes", "no")])])
    )  # fmt: skip

    d = d.with_row(dashboard.Row("Correlation, liquidity, imbalance"))
    d = d.with_panel(
        table.Panel().title("Spread correlation").datasource(PROM).height(9).span(8)
        .description("Pearson correlation of the reference spread between symbols "
                     "(upper triangle), cells coloured from -1 (red) to +1 (green).")
        .with_target(q("cryptoarb_spread_correlation_ratio", instant=True,
                       fmt=pm.PromQueryFormat.TABLE))
        .with_transformation(dm.DataTransformerConfig(id_val="groupingToMatrix", options={
            "columnField": "other_symbol", "rowField": "symbol", "valueField": "Value",
            "emptyValue": "null"}))
        .min(-1).max(1).decimals(2)
        .color_scheme(dashboard.FieldColor().mode(dm.FieldColorModeId.CONTINUOUS_RD_YL_GR))
        .cell_options(common.TableColoredBackgroundCellOptions())
    )  # fmt: skip
    d = d.with_panel(
        ts("Liquidity flow (reference band depth)",
           q(f"sum by (symbol, side) (cryptoarb_orderbook_depth_quote{{{SYM}, {EXC}}} "
             f"{REF_BAND})", "{{symbol}} {{side}}"),
           unit="currencyUSD", w=8,
           desc="Bid and ask depth within the reference band, summed over exchanges.")
    )  # fmt: skip
    d = d.with_panel(
        ts("Order-book imbalance (reference band)",
           q(f"cryptoarb_orderbook_imbalance_ratio{{{SYM}, {EXC}}} {REF_BAND}",
             "{{exchange}} {{symbol}}"),
           unit="percentunit", w=8, desc="(bid - ask) / (bid + ask) depth, in [-1, 1].")
        .min(-1).max(1)
    )  # fmt: skip

    d = d.with_row(dashboard.Row("Latency"))
    d = d.with_panel(
        heatmap.Panel().title("Feed latency distribution").datasource(PROM).height(8).span(12)
        .with_target(q(f"sum by (le) (rate(cryptoarb_feed_latency_seconds_bucket{{{EXC}}}"
                       "[$__rate_interval]))", "{{le}}", fmt=pm.PromQueryFormat.HEATMAP))
        .calculate(False)
        .color(heatmap.HeatmapColorOptions().mode(hm.HeatmapColorMode.SCHEME)
               .scheme("Oranges").exponent(0.5).steps(64)
               .scale(hm.HeatmapColorScale.EXPONENTIAL).fill("dark-orange"))
        .y_axis(heatmap.YAxisConfig().unit("s"))
        .cell_gap(1)
    )  # fmt: skip
    d = d.with_panel(
        ts("Feed latency p50 / p99",
           q(f"exchange:cryptoarb_feed_latency_seconds:p99_5m{{{EXC}}}", "p99 {{exchange}}"),
           q(f"exchange:cryptoarb_feed_latency_seconds:p50_5m{{{EXC}}}", "p50 {{exchange}}",
             ref="B"),
           unit="s", w=12)
    )  # fmt: skip

    d = d.with_row(dashboard.Row("Insights"))
    d = d.with_panel(
        ts("Execution risk (reference notional)",
           q(f"cryptoarb_execution_risk_ratio{{{SYM}, {NOT}}}", f"{DIRECTION} @ {{{{notional}}}}"),
           unit="percentunit", w=8, desc="0 = safe, 1 = risky: fill, latency, ROI volatility, "
           "book age (docs/analytics.md).")
        .min(0).max(1)
    )  # fmt: skip
    d = d.with_panel(
        ts("Buying pressure",
           q(f"cryptoarb_buying_pressure_ratio{{{SYM}, {EXC}}}", "{{exchange}} {{symbol}}"),
           unit="percentunit", w=8, desc="(1 + depth-weighted imbalance) / 2: above 0.5 "
           "buyers dominate.")
        .min(0).max(1)
    )  # fmt: skip
    d = d.with_panel(
        table.Panel().title("Insights (exporter API)").datasource(API).height(8).span(8)
        .with_target(Infinity("A", "/api/insights", "execution_risk", [
            ("symbol", "symbol", "string"), ("buy_exchange", "buy", "string"),
            ("sell_exchange", "sell", "string"), ("score", "risk", "number"),
            ("level", "level", "string"), ("explanation", "why", "string")]))
    )  # fmt: skip

    d = d.with_row(dashboard.Row("Alerts and the window log"))
    d = d.with_panel(
        dashboard.Panel().type("alertlist").title("Arbitrage and feed alerts").height(8).span(8)
        .datasource(ALERTMANAGER)
        .options({
            "alertInstanceLabelFilter": "", "alertName": "CryptoArb",
            "dashboardAlerts": False, "groupMode": "default", "maxItems": 30,
            "sortOrder": 1, "viewMode": "list", "showInstances": True,
            "datasource": "alertmanager",
            "stateFilter": {"firing": True, "pending": True, "noData": False, "normal": False,
                            "error": True},
        })
    )  # fmt: skip
    d = d.with_panel(
        table.Panel().title("Window log (Redis, via /api/windows)").datasource(API)
        .height(8).span(16)
        .description("The persistent log: closed windows and Alertmanager alert entries.")
        .with_target(Infinity("A", "/api/windows?limit=200", "windows", [
            ("logged_at", "logged", "timestamp_epoch_s"), ("kind", "kind", "string"),
            ("symbol", "symbol", "string"), ("buy_exchange", "buy", "string"),
            ("sell_exchange", "sell", "string"), ("notional", "notional", "number"),
            ("duration_seconds", "duration s", "number"), ("peak_roi", "peak ROI", "number"),
            ("peak_profit", "peak profit", "number"), ("close_reason", "closed by", "string"),
            ("alertname", "alert", "string"), ("status", "status", "string")]))
        .override_by_name("peak ROI", [dm.DynamicConfigValue(id_val="unit", value="percentunit")])
    )  # fmt: skip
    d = d.with_panel(
        table.Panel().title("Windows in range (Prometheus fallback)").datasource(PROM)
        .height(8).span(12)
        .description("Works without the JSON plugin: windows opened in the time range.")
        .with_target(q(f"sum by (symbol, buy_exchange, sell_exchange, notional) "
                       f"(increase(cryptoarb_windows_total{{{SYM}, {NOT}}}[$__range]))",
                       instant=True, fmt=pm.PromQueryFormat.TABLE))
        .with_transformation(dm.DataTransformerConfig(id_val="organize", options={
            "excludeByName": {"Time": True}, "renameByName": {"Value": "windows"}}))
    )  # fmt: skip
    d = d.with_panel(
        table.Panel().title("Window alerts in range (Prometheus fallback)").datasource(PROM)
        .height(8).span(12)
        .with_target(q(
            'max by (alertname, alertstate, symbol, buy_exchange, sell_exchange, notional) '
            '(max_over_time(ALERTS{alertname=~"CryptoArbWindowOpen|CryptoArbLargeWindow", '
            f'{SYM}}}[$__range]))', instant=True, fmt=pm.PromQueryFormat.TABLE))
        .with_transformation(dm.DataTransformerConfig(id_val="organize", options={
            "excludeByName": {"Time": True, "Value": True}}))
    )  # fmt: skip
    return d


# ---------------------------------------------------------------------------- feed health
def feed_health() -> dashboard.Dashboard:
    d = base("cryptoarb-feed-health", "Feed health", ["feeds", "sre"])
    d = d.with_variable(variable("exchange", "Exchange",
                                 "label_values(cryptoarb_feed_up, exchange)"))  # fmt: skip
    d = d.with_variable(variable("symbol", "Symbol",
                                 "label_values(cryptoarb_feed_up, symbol)"))  # fmt: skip
    fs = f"{{{EXC}, {SYM}}}"

    d = d.with_row(dashboard.Row("Feeds"))
    d = d.with_panel(
        stat.Panel().title("Feed up").datasource(PROM).height(6).span(12)
        .with_target(q(f"cryptoarb_feed_up{fs}", "{{exchange}} {{symbol}}", instant=True))
        .mappings(up_down_mappings())
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .reduce_options(LAST)
        .graph_mode(common.BigValueGraphMode.NONE)
    )  # fmt: skip
    d = d.with_panel(
        stat.Panel().title("Book stale").datasource(PROM).height(6).span(12)
        .with_target(q(f"cryptoarb_orderbook_stale{fs}", "{{exchange}} {{symbol}}",
                       instant=True))
        .mappings(up_down_mappings("STALE", "fresh"))
        .thresholds(thresholds((None, "green"), (1, "red")))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .reduce_options(LAST)
        .graph_mode(common.BigValueGraphMode.NONE)
    )  # fmt: skip
    d = d.with_panel(
        ts("Messages per second",
           q(f"sum by (exchange, symbol) (rate(cryptoarb_feed_messages_total{fs}"
             "[$__rate_interval]))", "{{exchange}} {{symbol}}"), unit="ops")
    )  # fmt: skip
    d = d.with_panel(
        ts("Seconds since the last update",
           q(f"time() - cryptoarb_orderbook_last_update_timestamp_seconds{fs}",
             "{{exchange}} {{symbol}}"), unit="s")
    )  # fmt: skip
    d = d.with_panel(
        ts("Reconnects",
           q(f"sum by (exchange, symbol) (increase(cryptoarb_feed_reconnects_total{fs}"
             "[$__rate_interval]))", "{{exchange}} {{symbol}}"), w=8)
    )  # fmt: skip
    d = d.with_panel(
        ts("Resyncs",
           q(f"sum by (exchange, symbol) (increase(cryptoarb_feed_resyncs_total{fs}"
             "[$__rate_interval]))", "{{exchange}} {{symbol}}"), w=8)
    )  # fmt: skip
    d = d.with_panel(
        ts("Errors by reason",
           q(f"sum by (exchange, reason) (rate(cryptoarb_feed_errors_total{fs}"
             "[$__rate_interval]))", "{{exchange}} {{reason}}"), unit="ops", w=8)
    )  # fmt: skip
    d = d.with_panel(
        ts("Latency p50 / p99",
           q(f"exchange:cryptoarb_feed_latency_seconds:p99_5m{{{EXC}}}", "p99 {{exchange}}"),
           q(f"exchange:cryptoarb_feed_latency_seconds:p50_5m{{{EXC}}}", "p50 {{exchange}}",
             ref="B"), unit="s")
    )  # fmt: skip
    d = d.with_panel(
        ts("Clock offset and negative latencies",
           q(f"cryptoarb_feed_clock_offset_seconds{{{EXC}}}", "offset {{exchange}}"),
           q(f"sum by (exchange) (increase(cryptoarb_feed_negative_latency_total{{{EXC}}}"
             "[$__rate_interval]))", "negative {{exchange}}", ref="B"), unit="s")
    )  # fmt: skip

    d = d.with_row(dashboard.Row("Redis and exporter process"))
    d = d.with_panel(
        stat.Panel().title("Redis / exporter up").datasource(PROM).height(6).span(6)
        .targets([q("cryptoarb_redis_up", "redis {{instance}}", instant=True),
                  q('up{job="cryptoarb"}', "exporter {{instance}}", ref="B", instant=True)])
        .mappings(up_down_mappings())
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .reduce_options(LAST)
        .graph_mode(common.BigValueGraphMode.NONE)
    )  # fmt: skip
    d = d.with_panel(
        ts("Redis writer",
           q("cryptoarb_redis_pending_writes", "pending {{kind}}"),
           q("sum by (kind) (increase(cryptoarb_redis_dropped_writes_total[$__rate_interval]))",
             "dropped {{kind}}", ref="B"),
           q("increase(cryptoarb_redis_write_errors_total[$__rate_interval])",
             "errors {{instance}}", ref="C"), w=9)
    )  # fmt: skip
    d = d.with_panel(
        ts("Redis flush time p99",
           q("histogram_quantile(0.99, sum by (le, instance) "
             "(rate(cryptoarb_redis_write_duration_seconds_bucket[$__rate_interval])))",
             "p99 {{instance}}"), unit="s", w=9)
    )  # fmt: skip
    d = d.with_panel(
        ts("Exporter CPU",
           q('rate(process_cpu_seconds_total{job="cryptoarb"}[$__rate_interval])',
             "cpu {{instance}}"), unit="percentunit", w=8)
    )  # fmt: skip
    d = d.with_panel(
        ts("Exporter memory",
           q('process_resident_memory_bytes{job="cryptoarb"}', "rss {{instance}}"),
           unit="bytes", w=8)
    )  # fmt: skip
    d = d.with_panel(
        ts("Correlation compute time",
           q("cryptoarb_correlation_compute_duration_seconds", "{{instance}}"), unit="s", w=8)
    )  # fmt: skip
    d = d.with_panel(
        table.Panel().title("Build").datasource(PROM).height(4).span(24)
        .with_target(q("cryptoarb_build_info", instant=True, fmt=pm.PromQueryFormat.TABLE))
        .with_transformation(dm.DataTransformerConfig(id_val="organize", options={
            "excludeByName": {"Time": True, "Value": True, "__name__": True}}))
    )  # fmt: skip
    return d


DASHBOARDS = {"arbitrage-overview.json": overview, "feed-health.json": feed_health}


def render(build: Any) -> str:
    model = build().build()
    for number, panel in enumerate(model.panels or [], start=1):
        panel.id_val = number  # fixed panel ids: links and alert annotations stay stable
    return json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True,
                      ensure_ascii=False) + "\n"  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the files differ")
    args = parser.parse_args(argv)
    stale = []
    OUT.mkdir(exist_ok=True)
    for name, build in DASHBOARDS.items():
        text = render(build)
        path = OUT / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"out of date (run python grafana/generate.py): {', '.join(stale)}",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

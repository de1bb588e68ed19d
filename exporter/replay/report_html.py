"""The replay report as one self-contained HTML page (``arb-exporter replay --report PATH.html``).

Per route: net ROI over time with the logged windows shaded, a histogram of window durations,
and one summary table for all routes. The charts are Vega-Lite specs built with Altair and
drawn by Vega, Vega-Lite and vega-embed inlined from vl-convert-python's bundle: the page
loads nothing from the network.

A day of replay holds up to 86,400 series points per route, so the data is inlined as compact
parallel arrays (time as integer millisecond deltas, ROI in basis points) that Vega-Lite
flattens and accumulates in the browser, instead of one JSON object per point; the charts draw
on canvas. Both need the optional ``report`` extra, imported only here.
"""

from __future__ import annotations

import functools
import html
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import orjson

INSTALL_HINT = "the HTML report needs the 'report' extra: pip install 'cryptoarb-exporter[report]'"

ROI_WIDTH, HIST_WIDTH, CHART_HEIGHT = 760, 260, 220
# Chart names: Vega names each mark group "<name>_marks" (the browser test counts their items).
ROI_MARK, WINDOW_MARK, DURATION_MARK = "roi", "windows", "durations"


class ReportExtraMissing(RuntimeError, ImportError):
    """altair or vl-convert-python is not installed (the replay CLI exits 2 on it).

    Also an ImportError, so that callers guarding the optional import catch it as well.
    """


def _load_extra() -> tuple[ModuleType, ModuleType]:
    try:
        import altair
        import vl_convert
    except ImportError as exc:
        missing = ReportExtraMissing(f"{INSTALL_HINT} ({exc.name} is missing)")
        missing.name = exc.name
        raise missing from exc
    return altair, vl_convert


def require_extra() -> None:
    """Raise ReportExtraMissing now (before a long replay) rather than when rendering."""
    _load_extra()


@functools.cache
def _js_bundle() -> str:
    """vega, vega-lite and vega-embed in one script (built once per process: about 2 s)."""
    _, vl_convert = _load_extra()
    bundle: str = vl_convert.javascript_bundle()
    # Keep the HTML parser inside the script element whatever the bundle's strings hold.
    return bundle.replace("</script", "<\\/script")


def _json_script(value: Any) -> str:
    # "</" only occurs inside JSON strings, where "<\/" reads back the same.
    return orjson.dumps(value).decode().replace("</", "<\\/")


def _ms(t: float, origin: float) -> int:
    return round((t - origin) * 1000)


def compact_series(series: Sequence[Sequence[Any]], origin: float) -> dict[str, list[Any]]:
    """Time as millisecond deltas (the first from ``origin``), net ROI in basis points or None."""
    dt: list[int] = []
    bps: list[float | None] = []
    last = 0
    for t, roi in series:
        ms = _ms(float(t), origin)
        dt.append(ms - last)
        last = ms
        bps.append(None if roi is None else round(float(roi) * 1e4, 3))
    return {"dt": dt, "bps": bps}


def compact_spans(spans: Sequence[Sequence[float]], origin: float) -> dict[str, list[int]]:
    """Window [start, end] as millisecond offsets from ``origin``."""
    return {
        "s": [_ms(float(s), origin) for s, _ in spans],
        "e": [_ms(float(e), origin) for _, e in spans],
    }


# Per tick interval (Vega's time multi-format): a replay can span seconds or days.
_TIME_FORMAT = {
    "milliseconds": "%H:%M:%S.%L",
    "seconds": "%H:%M:%S",
    "minutes": "%H:%M",
    "hours": "%H:%M",
    "day": "%b %d",
    "date": "%b %d",
    "week": "%b %d",
    "month": "%b %Y",
    "year": "%Y",
}


def route_label(route: Mapping[str, Any]) -> str:
    return f"{route['symbol']} {route['buy_exchange']} → {route['sell_exchange']}"


def route_chart(route: Mapping[str, Any], span: tuple[float, float]) -> dict[str, Any]:
    """The route's Vega-Lite spec: ROI over time with windows shaded | duration histogram.

    Scale domains and the bin extent are set from the report (the replay span, the longest
    window) rather than computed in the browser: a route without windows, or without any
    fillable evaluation, then draws empty axes instead of warning about infinite extents.
    """
    alt, _ = _load_extra()
    origin, end = span
    base_ms = round(origin * 1000)
    series = route.get("series") or []
    spans = route.get("window_spans") or []
    fillable = any(roi is not None for _, roi in series)
    longest = max((float(e) - float(s) for s, e in spans), default=0.0)
    bin_extent = [0.0, longest if longest > 0 else 1.0]
    # The shared x scale's domain is set once, on the zoomable ROI line: set on the windows
    # layer too, or only there, Vega-Lite warns about conflicting domains.
    axis = alt.Axis(format=_TIME_FORMAT, title="UTC", tickCount=10)
    utc = alt.Scale(type="utc", domain=[base_ms, base_ms + _ms(end, origin)])
    windows = (
        alt.Chart(alt.NamedData(name="windows"), name=WINDOW_MARK)
        .transform_flatten(["s", "e"])
        .transform_calculate(
            start=f"{base_ms} + datum.s",
            end=f"{base_ms} + datum.e",
            seconds="(datum.e - datum.s) / 1000",
        )
    )
    shaded = windows.mark_rect(color="#f2a03d", opacity=0.3).encode(
        x=alt.X("start:T", axis=axis),
        x2="end:T",
        tooltip=[
            alt.Tooltip("start:T", title="window start", format="%H:%M:%S.%L", formatType="utc"),
            alt.Tooltip("seconds:Q", title="duration (s)", format=".3f"),
        ],
    )
    roi = (
        alt.Chart(alt.NamedData(name="series"), name=ROI_MARK)
        .transform_flatten(["dt", "bps"])
        # Cumulative sum of the deltas, in input order (the series is sorted by time).
        .transform_window(ms="sum(dt)", frame=[None, 0])
        .transform_calculate(time=f"{base_ms} + datum.ms")
        .mark_line(strokeWidth=1, invalid="break-paths-show-domains")
        .encode(
            x=alt.X("time:T", scale=utc, axis=axis),
            y=alt.Y(
                "bps:Q",
                title="net ROI (bps)",
                scale=alt.Undefined if fillable else alt.Scale(domain=[-1, 1]),
            ),
        )
    )
    zero = alt.Chart(alt.InlineData(values=[{}])).mark_rule(color="#888").encode(y=alt.datum(0))
    over_time = alt.layer(shaded, roi, zero).properties(
        width=ROI_WIDTH,
        height=CHART_HEIGHT,
        title="net ROI over time (windows shaded)"
        if fillable
        else "net ROI over time (no fillable evaluation)",
    )
    durations = (
        alt.Chart(alt.NamedData(name="windows"), name=DURATION_MARK)
        .transform_flatten(["s", "e"])
        .transform_calculate(seconds="(datum.e - datum.s) / 1000")
        .transform_bin("bin", "seconds", bin=alt.Bin(maxbins=30, extent=bin_extent))
        .transform_aggregate(count="count()", groupby=["bin", "bin_end"])
        .mark_bar()
        .encode(
            x=alt.X(
                "bin:Q",
                bin="binned",
                title="window duration (s)",
                scale=alt.Scale(domain=bin_extent),
            ),
            x2="bin_end:Q",
            y=alt.Y(
                "count:Q",
                title="windows",
                # Whole counts only: with a count of 1 or 2 the ticks fall on halves too.
                axis=alt.Axis(format="d", labelExpr="datum.value % 1 ? '' : datum.label"),
                stack=None,
                scale=alt.Scale(domain=[0, 1]) if not spans else alt.Undefined,
            ),
            tooltip=["bin:Q", "bin_end:Q", "count:Q"],
        )
        .properties(
            width=HIST_WIDTH,
            height=CHART_HEIGHT,
            title="window durations" if spans else "window durations (no window)",
        )
    )
    spec: dict[str, Any] = alt.hconcat(over_time, durations).to_dict()
    # Zoom and pan along x on the ROI line only: Altair would lift the param to every layer,
    # and two scale-bound intervals on one view declare the same Vega signal twice.
    spec["hconcat"][0]["layer"][1]["params"] = [
        {"name": "zoom", "select": {"type": "interval", "encodings": ["x"]}, "bind": "scales"}
    ]
    # Added after validation: Altair would walk every point of a day's arrays.
    spec.setdefault("datasets", {}).update(
        series=[compact_series(series, origin)],
        windows=[compact_spans(spans, origin)],
    )
    return spec


def _fmt(value: Any, fmt: Callable[[float], str]) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return fmt(float(value))


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


# (header, report key or duration quantile, formatter); data-value holds the raw number.
_COLUMNS: list[tuple[str, str, Callable[[float], str]]] = [
    ("notional", "notional", lambda v: f"{v:,.0f}"),
    ("windows", "windows", lambda v: f"{v:.0f}"),
    ("time in window (s)", "time_in_window_seconds", lambda v: f"{v:.3f}"),
    ("time in window", "time_in_window_ratio", lambda v: f"{v * 100:.2f}%"),
    ("duration p50 (s)", "p50", lambda v: f"{v:.3f}"),
    ("duration p90 (s)", "p90", lambda v: f"{v:.3f}"),
    ("duration max (s)", "max", lambda v: f"{v:.3f}"),
    ("peak profit sum", "peak_profit_sum", lambda v: f"{v:.2f}"),
    ("peak profit max", "peak_profit_max", lambda v: f"{v:.2f}"),
    ("mean net ROI open (bps)", "mean_net_roi_open", lambda v: f"{v * 1e4:.2f}"),
    ("fillable", "fillable_ratio", lambda v: f"{v * 100:.1f}%"),
]
_DURATION_KEYS = {"p50", "p90", "max"}


def summary_table(routes: Sequence[Mapping[str, Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h, _, _ in _COLUMNS)
    rows = []
    for i, route in enumerate(routes):
        durations = route.get("duration_seconds") or {}
        cells = [f'<th scope="row"><a href="#route-{i}">{html.escape(route_label(route))}</a></th>']
        for _, key, fmt in _COLUMNS:
            value = durations.get(key) if key in _DURATION_KEYS else route.get(key)
            raw = "" if value is None else html.escape(repr(value), quote=True)
            cells.append(f'<td data-key="{key}" data-value="{raw}">{_fmt(value, fmt)}</td>')
        rows.append(f'<tr data-route="{i}">{"".join(cells)}</tr>')
    return (
        f'<table class="summary"><thead><tr><th>route</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _header(report: Mapping[str, Any]) -> str:
    span = report.get("span") or {}
    rejected = report.get("rejected") or {}
    unknown = rejected.get("unknown") or []
    unknown_text = ", ".join(
        f"{html.escape(str(u.get('exchange')))} {html.escape(str(u.get('symbol')))} "
        f"({int(u.get('rows', 0))} rows)"
        for u in unknown
    )
    items = [
        f"span: {_utc(float(span['start']))} → {_utc(float(span['end']))} "
        f"({float(span.get('seconds', 0.0)):,.1f} s)"
        if "start" in span and "end" in span
        else "span: empty",
        f"rows: {int(report.get('rows', 0)):,}, book updates: {int(report.get('updates', 0)):,}",
        f"rejected rows: {int(rejected.get('malformed', 0))} malformed, "
        f"{int(rejected.get('truncated', 0))} truncated"
        + (f", unknown markets: {unknown_text}" if unknown_text else ""),
    ]
    return "<ul class=meta>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>"


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table.summary{border-collapse:collapse;font-size:13px}
table.summary th,table.summary td{border:1px solid #ccc;padding:3px 7px;text-align:right}
table.summary th[scope=row]{text-align:left}
section.route{margin-top:1.5em}
.meta{font-size:14px}
"""

# Renders one chart after the other; window.arbReport exposes each vega view (tests, debugging).
_RENDER_JS = """
(async () => {
  const state = (window.arbReport = {views: [], errors: [], done: false});
  for (const el of document.querySelectorAll('script[type="application/json"][data-chart]')) {
    const target = document.getElementById(el.dataset.chart);
    try {
      const result = await vegaEmbed(target, JSON.parse(el.textContent), {
        mode: "vega-lite", renderer: "canvas",
        actions: {export: true, source: false, compiled: false, editor: false},
      });
      state.views.push({route: Number(el.dataset.route), view: result.view, vega: result.vgSpec});
    } catch (err) {
      state.errors.push(String(err));
      console.error("chart", el.dataset.chart, err);
    }
  }
  state.done = true;
})();
"""


def render_html(report: Mapping[str, Any]) -> str:
    """The whole page; raises ReportExtraMissing without the ``report`` extra."""
    _load_extra()
    routes: Sequence[Mapping[str, Any]] = report.get("routes") or []
    span = report.get("span") or {}
    origin = float(span.get("start") or 0.0)
    end = float(span.get("end") or origin)
    sections, specs = [], []
    for i, route in enumerate(routes):
        label = html.escape(f"{route_label(route)} (notional {float(route['notional']):,.0f})")
        sections.append(
            f'<section class="route" id="route-{i}"><h2>{label}</h2>'
            f'<div class="chart" id="chart-{i}"></div></section>'
        )
        specs.append(
            f'<script type="application/json" data-chart="chart-{i}" data-route="{i}">'
            f"{_json_script(route_chart(route, (origin, end)))}</script>"
        )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            "<title>Replay report</title>",
            f"<style>{_CSS}</style></head><body>",
            "<h1>Replay report</h1>",
            _header(report),
            "<h2>Summary</h2>",
            summary_table(routes),
            *sections,
            f"<script>{_js_bundle()}</script>",
            *specs,
            f"<script>{_RENDER_JS}</script>",
            "</body></html>",
        ]
    )

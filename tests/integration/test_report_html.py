"""The HTML replay report in headless Chromium (Debian's chromium, driven by Playwright).

Opened offline (every request but the page's own file is refused and recorded), the page must
log no console error or warning and no page error, draw every route's chart, and each chart's
rendered Vega view must hold the report's rows: one line point per series point, one shaded
rect per window span, and the duration histogram's bars counting every window. Chromium
missing is a failure: scripts/setup.sh installs it.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import Browser, Request, Route, sync_playwright

from exporter.cli.main import main
from exporter.replay.report_html import render_html
from tests.support.reports import DEFAULT_ROUTES, START, build_report

TARDIS = sorted((Path(__file__).resolve().parents[1] / "data" / "tardis").glob("*.csv"))

# Per view: the mark items of the three charts (found by the chart names report_html gives
# them), the rows of the datasets Vega-Lite flattens out of the inline arrays (found in the
# compiled Vega spec), and the canvas drawn on.
_INSPECT = """
(withValues) => window.arbReport.views.map(({route, view, vega}) => {
  const marks = {};
  const walk = (node) => {
    if (node.marktype && node.name) marks[node.name] = node.items;
    for (const item of node.items || []) if (item.items) walk(item);
  };
  walk(view.scenegraph().root);
  const mark = (chart) => {
    const named = new RegExp(`^${chart}(_\\\\d+)?_marks$`);
    const found = Object.keys(marks).filter((n) => named.test(n));
    if (found.length !== 1) throw new Error(`route ${route}: marks of ${chart}: ${found}`);
    return marks[found[0]];
  };
  const flattened = (source) => vega.data
    .filter((d) => d.source === source && d.transform && d.transform[0].type === "flatten")
    .map((d) => view.data(d.name).length);
  const roi = mark("roi"), windows = mark("windows"), bars = mark("durations");
  const canvas = view.container().querySelector("canvas");
  return {
    route,
    canvas: canvas ? [canvas.width, canvas.height] : null,
    roi: roi.length,
    windows: windows.length,
    bars: bars.map((b) => [b.datum.bin, b.datum.bin_end, b.datum.count]),
    series_rows: flattened("series"),
    window_rows: flattened("windows"),
    values: withValues ? {
      time: roi.map((i) => i.datum.time),
      bps: roi.map((i) => i.datum.bps),
      spans: windows.map((i) => [i.datum.start, i.datum.end]),
    } : null,
  };
})
"""


@dataclass
class Rendered:
    charts: list[dict[str, Any]]
    seconds: float  # from navigation to the last chart drawn
    console: list[tuple[str, str]] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)  # requests other than the page's file
    failed: list[str] = field(default_factory=list)
    chart_errors: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed (bash scripts/setup.sh installs Debian's)")
    with sync_playwright() as pw:
        # Debian's chromium: Playwright's own browser builds are never downloaded.
        b = pw.chromium.launch(executable_path=chromium, headless=True)
        try:
            yield b
        finally:
            b.close()


def open_report(
    browser: Browser, report: dict[str, Any], path: Path, values: bool, *, write: bool = True
) -> Rendered:
    if write:
        path.write_text(render_html(report), encoding="utf-8")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        seen = Rendered(charts=[], seconds=0.0)
        page.on("console", lambda m: seen.console.append((m.type, m.text)))
        page.on("pageerror", lambda e: seen.page_errors.append(str(e)))
        page.on("requestfailed", lambda r: seen.failed.append(r.url))

        def offline(route: Route, request: Request) -> None:
            if request.url == path.as_uri():
                route.continue_()
            else:
                seen.outside.append(request.url)
                route.abort()

        context.route("**/*", offline)
        start = time.monotonic()
        page.goto(path.as_uri())
        page.wait_for_function("window.arbReport && window.arbReport.done", timeout=90_000)
        seen.seconds = time.monotonic() - start
        seen.chart_errors = page.evaluate("window.arbReport.errors")
        seen.charts = page.evaluate(_INSPECT, values)
        return seen
    finally:
        context.close()


def assert_clean(seen: Rendered) -> None:
    assert seen.page_errors == []
    assert seen.chart_errors == []
    assert [m for m in seen.console if m[0] in ("error", "warning", "assert")] == []
    assert seen.outside == [] and seen.failed == []


def assert_rows(seen: Rendered, report: dict[str, Any]) -> None:
    """Each route's view holds the route's series points, window spans and durations."""
    routes = report["routes"]
    assert [c["route"] for c in seen.charts] == list(range(len(routes)))
    for chart, route in zip(seen.charts, routes, strict=True):
        n_points, spans = len(route["series"]), route["window_spans"]
        assert chart["canvas"] is not None and min(chart["canvas"]) > 0
        assert chart["roi"] == n_points
        assert chart["series_rows"] and set(chart["series_rows"]) == {n_points}
        assert chart["windows"] == len(spans)
        assert chart["window_rows"] and set(chart["window_rows"]) == {len(spans)}
        assert sum(count for _, _, count in chart["bars"]) == len(spans)
        # The durations exactly as the page computes them (millisecond offsets), per bar.
        origin = report["span"]["start"]
        durations = [
            (round((e - origin) * 1000) - round((s - origin) * 1000)) / 1000 for s, e in spans
        ]
        last = max((hi for _, hi, _ in chart["bars"]), default=None)
        for lo, hi, count in chart["bars"]:
            inside = [d for d in durations if lo <= d < hi or (hi == last and d == hi)]
            assert len(inside) == count, (route["symbol"], lo, hi)


def test_report_renders_offline_with_every_row(browser: Browser, tmp_path: Path) -> None:
    report = build_report(900, DEFAULT_ROUTES[:4])
    assert len(report["routes"][0]["series"]) == 900
    assert [r["windows"] > 0 for r in report["routes"]] == [True, True, True, False]
    seen = open_report(browser, report, tmp_path / "report.html", values=True)
    assert_clean(seen)
    assert_rows(seen, report)
    origin = report["span"]["start"]
    for chart, route in zip(seen.charts, report["routes"], strict=True):
        values = chart["values"]
        assert values["time"] == pytest.approx([t * 1000 for t, _ in route["series"]], abs=1)
        expected = [None if r is None else r * 1e4 for _, r in route["series"]]
        assert [v is None for v in values["bps"]] == [e is None for e in expected]
        got = [v for v in values["bps"] if v is not None]
        assert got == pytest.approx([e for e in expected if e is not None], abs=1e-3)
        got_spans = [ms for span in values["spans"] for ms in span]
        spans = [t * 1000 for span in route["window_spans"] for t in span]
        assert got_spans == pytest.approx(spans, abs=1)
        assert all(origin * 1000 <= s < e for s, e in values["spans"])


def test_routes_without_data_draw_empty_charts(browser: Browser, tmp_path: Path) -> None:
    """No fillable evaluation, no evaluation at all, an empty span: empty axes, no warning."""
    report = build_report(60, DEFAULT_ROUTES[:3], windowless=None)
    report["routes"][0]["series"] = [[t, None] for t, _ in report["routes"][0]["series"]]
    report["routes"][1]["series"] = []
    for route in report["routes"][:2]:
        route["window_spans"] = []
    seen = open_report(browser, report, tmp_path / "sparse.html", values=True)
    assert_clean(seen)
    assert_rows(seen, report)
    assert seen.charts[0]["values"]["bps"] == [None] * 60
    assert seen.charts[2]["windows"] > 0  # the third route keeps its data
    span = {"start": START, "end": START, "seconds": 0.0}
    empty = {**report, "span": span, "routes": [report["routes"][1]]}
    seen = open_report(browser, empty, tmp_path / "empty.html", values=False)
    assert_clean(seen)
    assert_rows(seen, empty)


def test_a_day_of_six_routes_renders(browser: Browser, tmp_path: Path) -> None:
    report = build_report(86_400, DEFAULT_ROUTES[:6])
    seen = open_report(browser, report, tmp_path / "day.html", values=False)
    assert_clean(seen)
    assert_rows(seen, report)
    size = (tmp_path / "day.html").stat().st_size
    print(f"1 day x 6 routes: {size / 1e6:.1f} MB of HTML, drawn in {seen.seconds:.1f} s")
    assert size < 12e6  # compact arrays: ~13 bytes per point, not a JSON object each


def test_report_of_a_real_replay(browser: Browser, tmp_path: Path) -> None:
    """arb-exporter replay of the hand-written Tardis pair: the page it writes holds the rows
    of the JSON report the same replay writes."""
    config = tmp_path / "replay.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "exchanges": {"coinbase": {"taker_fee": 0.001}, "kraken": {"taker_fee": 0.002}},
                "symbols": {"BTC/USD": {"coinbase": "BTC/USD", "kraken": "BTC/USD"}},
                "notionals": [150, 500],
                "feeds": {"depth": 10, "stale_after": 3.0, "max_book_skew": 2.0},
                "windows": {
                    "open_threshold": 0.001,
                    "close_threshold": 0.0005,
                    "min_duration_seconds": 0.5,
                },
                "redis": {"url": None},
            }
        ),
        encoding="utf-8",
    )
    assert len(TARDIS) == 2
    base = ["replay", "--config.file", str(config), *map(str, TARDIS)]
    # In a thread of its own: Playwright's sync API keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        for out in ("report.json", "report.html"):
            assert pool.submit(main, [*base, "--report", str(tmp_path / out)]).result() == 0
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert len(report["routes"]) == 4
    assert any(r["window_spans"] for r in report["routes"])
    assert any(not r["window_spans"] for r in report["routes"])
    assert any(v is None for r in report["routes"] for _, v in r["series"])
    seen = open_report(browser, report, tmp_path / "report.html", values=False, write=False)
    assert_clean(seen)
    assert_rows(seen, report)

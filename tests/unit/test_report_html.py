"""The HTML replay report's pure parts: offline page, summary table, compact chart data.

The page is drawn in headless Chromium by tests/integration/test_report_html.py.
"""

from __future__ import annotations

import copy
import json
import math
import sys
from html.parser import HTMLParser
from itertools import accumulate
from typing import Any

import pytest

from exporter.replay.report_html import (
    ReportExtraMissing,
    compact_series,
    compact_spans,
    render_html,
    require_extra,
)
from tests.support.reports import START, build_report


class _Page(HTMLParser):
    """Script elements (attributes and text), URL attributes, and the summary table's cells."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.urls: list[str] = []
        self.rows: dict[int, dict[str, tuple[str | None, str]]] = {}
        self.labels: dict[int, str] = {}
        self._script: dict[str, str | None] | None = None
        self._text: list[str] = []
        self._row: int | None = None
        self._cell: tuple[str, str | None] | None = None
        self._label = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.urls += [v for k, v in attrs if k in ("src", "href", "srcset", "data") and v]
        if tag == "script":
            self._script, self._text = a, []
        elif tag == "tr" and a.get("data-route") is not None:
            self._row = int(a["data-route"] or "")
            self.rows[self._row] = {}
            self.labels[self._row] = ""
        elif tag == "td" and self._row is not None:
            self._cell, self._text = (a["data-key"] or "", a.get("data-value")), []
        elif tag == "th" and self._row is not None:
            self._label = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._script is not None:
            self.scripts.append((self._script, "".join(self._text)))
            self._script = None
        elif tag == "td" and self._cell is not None and self._row is not None:
            key, raw = self._cell
            self.rows[self._row][key] = (raw, "".join(self._text))
            self._cell = None
        elif tag == "th":
            self._label = False
        elif tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._script is not None or self._cell is not None:
            self._text.append(data)
        if self._label and self._row is not None:
            self.labels[self._row] += data


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    return parser


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return build_report(300)


@pytest.fixture(scope="module")
def page(report: dict[str, Any]) -> _Page:
    return _parse(render_html(report))


def test_page_loads_nothing_from_the_network(page: _Page, report: dict[str, Any]) -> None:
    assert page.urls == [f"#route-{i}" for i in range(len(report["routes"]))]
    assert all("src" not in attrs for attrs, _ in page.scripts)
    code = [text for attrs, text in page.scripts if "type" not in attrs]
    # The vega bundle (with vegaEmbed) and the loop that embeds the charts, both inline.
    assert len(code) == 2
    assert "vegaEmbed" in code[0] and len(code[0]) > 100_000
    for text in code:
        assert "import(" not in text.replace(" ", "")  # no dynamic module loading


def test_one_chart_spec_per_route_with_the_data_inline(page: _Page, report: dict[str, Any]) -> None:
    specs = [
        (attrs, json.loads(text))
        for attrs, text in page.scripts
        if attrs.get("type") == "application/json"
    ]
    assert [attrs["data-route"] for attrs, _ in specs] == [
        str(i) for i in range(len(report["routes"]))
    ]
    for (_, spec), route in zip(specs, report["routes"], strict=True):
        series = spec["datasets"]["series"][0]
        assert len(series["dt"]) == len(series["bps"]) == len(route["series"])
        assert len(spec["datasets"]["windows"][0]["s"]) == len(route["window_spans"])
        assert "url" not in json.dumps(spec["hconcat"])  # no data loaded from anywhere


def _close(text: str, value: float, scale: float, decimals: int) -> bool:
    return math.isclose(float(text) / scale, value, abs_tol=0.51 * 10**-decimals / scale)


def test_summary_table_matches_the_report(page: _Page, report: dict[str, Any]) -> None:
    assert sorted(page.rows) == list(range(len(report["routes"])))
    for i, route in enumerate(report["routes"]):
        assert page.labels[i] == (
            f"{route['symbol']} {route['buy_exchange']} → {route['sell_exchange']}"
        )
        cells = page.rows[i]
        for key in ("p50", "p90", "max"):
            assert key not in route
            route = {**route, key: route["duration_seconds"][key]}
        for key, (raw, text) in cells.items():
            value = route[key]
            if value is None:
                assert (raw, text) == ("", "—")
                continue
            assert float(raw or "nan") == value
            if text.endswith("%"):
                decimals = len(text[:-1].split(".")[1])
                assert _close(text[:-1], value, 100, decimals), (key, text, value)
            elif key == "mean_net_roi_open":
                assert _close(text, value, 1e4, 2), (key, text, value)
            else:
                number = text.replace(",", "")
                decimals = len(number.split(".")[1]) if "." in number else 0
                assert _close(number, value, 1, decimals), (key, text, value)
        assert len(cells) == 11
    windowless = [r for r in report["routes"] if r["windows"] == 0]
    assert len(windowless) == 1  # the dashes above were exercised


def test_compact_series_round_trips() -> None:
    series = [[START + 0.25, -0.0003], [START + 1.9994, None], [START + 2.0, 0.00123456]]
    compact = compact_series(series, START)
    times = [START + ms / 1000 for ms in accumulate(compact["dt"])]
    assert all(math.isclose(t, s[0], abs_tol=5e-4) for t, s in zip(times, series, strict=True))
    assert compact["bps"][1] is None
    assert [b for b in compact["bps"] if b is not None] == pytest.approx([-3.0, 12.346], abs=5e-4)
    assert all(isinstance(d, int) for d in compact["dt"])
    spans = compact_spans([[START + 1.5, START + 3.25]], START)
    assert spans == {"s": [1500], "e": [3250]}


def test_markup_in_names_stays_text(report: dict[str, Any]) -> None:
    hostile = copy.deepcopy(report)
    hostile["routes"] = hostile["routes"][:1]
    hostile["routes"][0]["symbol"] = "</script><script>alert(1)</script>"
    parsed = _parse(render_html(hostile))
    assert len(parsed.scripts) == 3  # bundle, one spec, the embedding loop: nothing injected
    assert parsed.labels[0].startswith("</script><script>alert(1)</script> ")


def test_empty_report_renders() -> None:
    empty = {
        "span": {"start": START, "end": START, "seconds": 0.0},
        "rows": 0,
        "updates": 0,
        "rejected": {"malformed": 0, "truncated": 0, "unknown": []},
        "routes": [],
    }
    parsed = _parse(render_html(empty))
    assert parsed.rows == {}
    assert len(parsed.scripts) == 2


def test_missing_extra_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vl_convert", None)  # import fails as if not installed
    with pytest.raises(ReportExtraMissing) as err:
        render_html(build_report(5))
    message = str(err.value)
    assert "\n" not in message
    assert "pip install 'cryptoarb-exporter[report]'" in message
    assert "vl_convert" in message
    with pytest.raises(ImportError):
        require_extra()

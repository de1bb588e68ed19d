"""Lean Prometheus text exposition (format 0.0.4) behind the standard Collector interface.

``prometheus_client.generate_latest`` costs ~12-17 µs per series and runs on the event loop,
so a 10k-series scrape stalls every feed for >100 ms (bench/README.md). This module
renders the same ``registry.collect()`` output to the same bytes, faster:

- the label part of a sample (``{a="x",b="y"}``: sort, escape, join) is formatted once per
  distinct label set and cached (label values come from configuration or fixed sets, so the
  cache is bounded by the series count; it is cleared if it ever grows past ``max_labelsets``);
- values are formatted with ``repr`` and fall back to prometheus_client's ``floatToGoString``
  only where Go's formatting differs (>= 1e6, NaN, infinities).

:class:`Exposition.render` walks ``registry.collect()`` lazily and formats in slices of at most
``slice_seconds``, yielding to the event loop between slices, so feeds keep being served during
a large scrape. A collector builds a group of families (books, feeds, pairs, windows) in one
uninterrupted step from immutable records, so each group is a consistent snapshot; groups may
be a few milliseconds apart, as separate collectors always are. Concurrent scrapes share one
render.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import escape_label_name, escape_metric_name
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

_TYPE_MAP = {
    "info": "gauge",
    "stateset": "gauge",
    "gaugehistogram": "histogram",
    "unknown": "untyped",
}
_OM_SUFFIXES = ("_created", "_gsum", "_gcount")
_INF = float("inf")
YIELD_SECONDS = 0.0002


def format_value(value: float) -> str:
    """Go-compatible float text, identical to ``floatToGoString``."""
    d = float(value)
    if not -_INF < d < 1e6:  # NaN, infinities, and where Go switches to exponents
        return str(floatToGoString(d))  # type: ignore[no-untyped-call]
    return repr(d)


def _escape_value(v: str) -> str:
    if "\\" in v or "\n" in v or '"' in v:
        return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return v


def _escape_help(doc: str) -> str:
    return doc.replace("\\", r"\\").replace("\n", r"\n")


class Renderer:
    """Formats metric families; keeps the label-set cache between scrapes."""

    def __init__(self, max_labelsets: int = 1_000_000) -> None:
        self.max_labelsets = max_labelsets
        self._labels: dict[tuple[tuple[str, str], ...], str] = {}

    def _labelstr(self, labels: dict[str, str]) -> str:
        key = tuple(labels.items())
        text = self._labels.get(key)
        if text is None:
            inner = ",".join(
                f'{escape_label_name(k)}="{_escape_value(v)}"' for k, v in sorted(labels.items())
            )
            text = "{" + inner + "}"
            if len(self._labels) >= self.max_labelsets:
                self._labels.clear()
            self._labels[key] = text
        return text

    def family(self, metric: Metric, out: list[str]) -> None:
        """Append the lines of one family to ``out`` (same text as ``generate_latest``)."""
        mname, mtype = metric.name, metric.type
        if mtype == "counter":
            mname += "_total"
        elif mtype == "info":
            mname += "_info"
        mtype = _TYPE_MAP.get(mtype, mtype)
        ename = escape_metric_name(mname)
        doc = _escape_help(metric.documentation)
        out.append(f"# HELP {ename} {doc}\n# TYPE {ename} {mtype}\n")
        om_names = {metric.name + suffix: suffix for suffix in _OM_SUFFIXES}
        om: dict[str, list[str]] = {}
        names: dict[str, str] = {}
        for s in metric.samples:
            line = self._line(s, names)
            suffix = om_names.get(s.name)
            if suffix is None:
                out.append(line)
            else:
                om.setdefault(suffix, []).append(line)
        for suffix, lines in sorted(om.items()):
            oname = escape_metric_name(metric.name + suffix)
            out.append(f"# HELP {oname} {doc}\n# TYPE {oname} gauge\n")
            out.extend(lines)

    def _line(self, s: Sample, names: dict[str, str]) -> str:
        name = names.get(s.name)
        if name is None:
            name = names[s.name] = escape_metric_name(s.name)
        labels = self._labelstr(s.labels) if s.labels else ""
        d = float(s.value)
        value = repr(d) if -_INF < d < 1e6 else format_value(d)
        if s.timestamp is not None:
            return f"{name}{labels} {value} {int(float(s.timestamp) * 1000):d}\n"
        return f"{name}{labels} {value}\n"

    def render(self, metrics: Iterable[Metric]) -> bytes:
        out: list[str] = []
        for metric in metrics:
            self.family(metric, out)
        return "".join(out).encode("utf-8")


def generate(registry: Collector, renderer: Renderer | None = None) -> bytes:
    """Drop-in for ``generate_latest(registry)`` (text format 0.0.4, same bytes)."""
    return (renderer or Renderer()).render(registry.collect())


class Exposition:
    """Renders a registry for /metrics without stalling the event loop for long."""

    def __init__(self, registry: Collector, slice_seconds: float = 0.003) -> None:
        self.registry = registry
        self.slice_seconds = slice_seconds
        self.renderer = Renderer()
        self._inflight: asyncio.Future[bytes] | None = None
        self.longest_step_seconds = 0.0  # longest stretch without yielding (benchmarks)

    async def render(self) -> bytes:
        """The current exposition; a scrape arriving mid-render shares that render."""
        if self._inflight is not None and not self._inflight.done():
            return await asyncio.shield(self._inflight)
        task = asyncio.ensure_future(self._render())
        self._inflight = task
        return await asyncio.shield(task)

    async def _render(self) -> bytes:
        out: list[str] = []
        longest = 0.0
        start = time.perf_counter()
        deadline = start + self.slice_seconds
        # Lazily: next() is where a collector reads the state and builds its next group.
        for metric in self.registry.collect():
            self.renderer.family(metric, out)
            now = time.perf_counter()
            if now > deadline:
                longest = max(longest, now - start)
                # Not sleep(0): a task woken by I/O or a timer needs two loop iterations
                # (future done, then task step) and would keep losing to our requeue.
                await asyncio.sleep(YIELD_SECONDS)
                start = time.perf_counter()
                deadline = start + self.slice_seconds
        self.longest_step_seconds = max(longest, time.perf_counter() - start)
        return "".join(out).encode("utf-8")

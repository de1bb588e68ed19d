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
``slice_seconds`` (20 ms: a 10k-series scrape is one step), yielding to the event loop between
slices, so feeds keep being served during a large scrape. Under saturated ingestion each yield
waits a whole loop iteration of websocket callbacks (tens of ms), so a scrape is answered
sooner the fewer steps it takes. A collector builds a group of families (books, feeds, pairs,
windows) in one uninterrupted step from immutable records, so each group is a consistent
snapshot; groups may be a few milliseconds apart, as separate collectors always are.
Concurrent scrapes share one render.

Off the loop (``render_thread=True``): only the collection (building the families from the
state's immutable records) runs on the event loop; formatting runs in one worker thread that
reads nothing but those freshly built families. It takes the formatting off the loop, but
the thread competes with a busy loop for the GIL and waking the scrape after it costs two
more loop iterations: measured under a saturated loop it answered later than one 20 ms step
on the loop (bench/README.md, "Scrape"), so it is not the default.

Precomputed labels: a collector may give a sample a :class:`LabelSet` (from a
:class:`LabelCache`) instead of a plain dict; it is one object per series, reused at every
scrape, and carries its rendered text once it has been formatted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import escape_label_name, escape_metric_name
from prometheus_client.registry import Collector
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


class LabelSet(dict[str, str]):
    """A series' labels, reused at every scrape; never mutated once built.

    The renderer stores the rendered ``{a="x",...}`` text on it the first time it formats
    it, so later scrapes skip sorting, escaping and the cache lookup."""

    __slots__ = ("text",)
    text: str


class LabelCache:
    """One :class:`LabelSet` per distinct tuple of label values for fixed label names (a
    collector keeps one per label schema; values come from configuration, so it is bounded
    by the series count)."""

    __slots__ = ("_names", "_sets")

    def __init__(self, names: Sequence[str]) -> None:
        self._names = tuple(names)
        self._sets: dict[tuple[str, ...], LabelSet] = {}

    def __call__(self, *values: str) -> LabelSet:
        ls = self._sets.get(values)
        if ls is None:
            ls = self._sets[values] = LabelSet(zip(self._names, values, strict=True))
        return ls


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
        # one pass per sample, inlined: this loop is most of a render
        append, om_suffix, labelstr = out.append, om_names.get, self._labelstr
        for s in metric.samples:
            sname = s.name
            name = names.get(sname)
            if name is None:
                name = names[sname] = escape_metric_name(sname)
            lab = s.labels
            if type(lab) is LabelSet:
                try:
                    labels = lab.text
                except AttributeError:
                    labels = lab.text = labelstr(lab) if lab else ""
            else:
                labels = labelstr(lab) if lab else ""
            d = float(s.value)
            value = repr(d) if -_INF < d < 1e6 else format_value(d)
            if s.timestamp is None:
                line = f"{name}{labels} {value}\n"
            else:
                line = f"{name}{labels} {value} {int(float(s.timestamp) * 1000):d}\n"
            suffix = om_suffix(sname)
            if suffix is None:
                append(line)
            else:
                om.setdefault(suffix, []).append(line)
        for suffix, lines in sorted(om.items()):
            oname = escape_metric_name(metric.name + suffix)
            out.append(f"# HELP {oname} {doc}\n# TYPE {oname} gauge\n")
            out.extend(lines)

    def render(self, metrics: Iterable[Metric]) -> bytes:
        out: list[str] = []
        for metric in metrics:
            self.family(metric, out)
        return "".join(out).encode("utf-8")


def generate(registry: Collector, renderer: Renderer | None = None) -> bytes:
    """Drop-in for ``generate_latest(registry)`` (text format 0.0.4, same bytes)."""
    return (renderer or Renderer()).render(registry.collect())


class Exposition:
    """Renders a registry for /metrics without stalling the event loop for long.

    On the loop in slices (default), or with ``render_thread``: collect on the loop, format
    in one worker thread (owned here; :meth:`close` shuts it down)."""

    def __init__(
        self,
        registry: Collector,
        slice_seconds: float = 0.02,
        render_thread: bool = False,
    ) -> None:
        self.registry = registry
        self.slice_seconds = slice_seconds
        self.renderer = Renderer()
        self.render_thread = render_thread
        self._executor: ThreadPoolExecutor | None = None  # started at the first render
        self._inflight: asyncio.Future[bytes] | None = None
        self.longest_step_seconds = 0.0  # longest stretch without yielding (benchmarks)

    async def render(self) -> bytes:
        """The current exposition; a scrape arriving mid-render shares that render.

        The first scrape renders in its own task: a separate render task would cost two more
        loop iterations to hand its result back, each a whole iteration of websocket
        callbacks under saturated ingestion."""
        while True:
            shared = self._inflight
            if shared is None or shared.done():
                break
            with contextlib.suppress(asyncio.CancelledError):
                return await asyncio.shield(shared)
            task = asyncio.current_task()
            if not shared.cancelled() or (task is not None and task.cancelling()):
                raise asyncio.CancelledError  # this waiter itself was cancelled
            # the scrape rendering it went away mid-render: render again
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._inflight = fut
        try:
            body = await self._render()
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters, if any, re-raise it
            raise
        fut.set_result(body)
        return body

    def close(self) -> None:
        """Stop the render thread (a render in progress finishes first); a later render
        starts a new one."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    async def _render(self) -> bytes:
        if not self.render_thread:
            return await self._render_on_loop()
        families = await self._collect()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrics-render")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.renderer.render, families)

    async def _collect(self) -> list[Metric]:
        """Every family, built on the loop (the thread must not read live state)."""
        families: list[Metric] = []
        await self._sliced(families.append)
        return families

    async def _render_on_loop(self) -> bytes:
        out: list[str] = []
        await self._sliced(lambda metric: self.renderer.family(metric, out))
        return "".join(out).encode("utf-8")

    async def _sliced(self, each: Callable[[Metric], None]) -> None:
        """``each`` over every family, yielding to the loop after each ``slice_seconds``."""
        longest = 0.0
        start = time.perf_counter()
        deadline = start + self.slice_seconds
        # Lazily: next() is where a collector reads the state and builds its next group.
        for metric in self.registry.collect():
            each(metric)
            now = time.perf_counter()
            if now > deadline:
                longest = max(longest, now - start)
                # Not sleep(0): a task woken by I/O or a timer needs two loop iterations
                # (future done, then task step) and would keep losing to our requeue.
                await asyncio.sleep(YIELD_SECONDS)
                start = time.perf_counter()
                deadline = start + self.slice_seconds
        self.longest_step_seconds = max(longest, time.perf_counter() - start)

"""/metrics formatted in a worker thread: the same bytes as on the loop and as generate_latest,
answered while the loop is busy, from a snapshot the loop's later changes do not reach."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from exporter.http.exposition import Exposition, LabelCache, LabelSet, Renderer, generate
from tests.unit.test_exposition import market_registry, registry


async def test_thread_render_equals_loop_render_and_generate_latest() -> None:
    for reg in (registry(), market_registry()[0]):
        threaded, on_loop = Exposition(reg, render_thread=True), Exposition(reg)
        try:
            for _ in range(2):  # cold, then with every label text cached
                a, b = await threaded.render(), await on_loop.render()
                assert a == b == generate_latest(reg)
        finally:
            threaded.close()


async def test_formatting_runs_off_the_loop_thread() -> None:
    seen: list[str] = []

    class Spy(Renderer):
        def render(self, metrics: object) -> bytes:
            seen.append(threading.current_thread().name)
            return super().render(metrics)  # type: ignore[arg-type]

    reg = registry()
    expo = Exposition(reg, render_thread=True)
    expo.renderer = Spy()
    try:
        assert await expo.render() == generate_latest(reg)
    finally:
        expo.close()
    assert seen and seen[0] != threading.current_thread().name
    assert seen[0].startswith("metrics-render")


async def test_changes_after_collection_do_not_reach_the_render() -> None:
    """The thread formats the families collected on the loop: a value set on the loop while
    the thread formats shows up in the next scrape, never half in this one."""
    reg = CollectorRegistry()
    g = Gauge("value", "V", ["i"], registry=reg)
    for i in range(2000):
        g.labels(str(i)).set(1.0)
    started = threading.Event()

    class Slow(Renderer):
        def render(self, metrics: object) -> bytes:
            started.set()
            time.sleep(0.05)  # the loop changes every gauge meanwhile
            return super().render(metrics)  # type: ignore[arg-type]

    expo = Exposition(reg, render_thread=True)
    expo.renderer = Slow()

    async def change_all() -> None:
        while not started.is_set():  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        for i in range(2000):
            g.labels(str(i)).set(2.0)

    try:
        body, _ = await asyncio.gather(expo.render(), change_all())
        text = body.decode()
        assert text.count(" 1.0\n") == 2000 and " 2.0\n" not in text
        assert (await expo.render()).decode().count(" 2.0\n") == 2000
    finally:
        expo.close()


async def test_scrape_is_answered_while_the_loop_is_busy() -> None:
    """Loop callbacks hog the loop back to back (each drains 20 ms of frames, as ccxt does
    under a firehose): the scrape is still answered, with the right bytes, and ingestion
    keeps running while the thread formats."""

    class Many(Collector):
        def collect(self) -> Iterator[Metric]:
            g = GaugeMetricFamily("many", "Many series", labels=["i", "j"])
            for i in range(10_000):
                g.add_metric([str(i), "x"], float(i))
            yield g

    reg = CollectorRegistry(auto_describe=False)
    reg.register(Many())
    steps = 0
    stop = False

    async def busy() -> None:
        nonlocal steps
        while not stop:
            t = time.perf_counter()
            while time.perf_counter() - t < 0.02:
                pass
            steps += 1
            await asyncio.sleep(0)

    expo = Exposition(reg, render_thread=True)
    task = asyncio.create_task(busy())
    try:
        await asyncio.sleep(0.05)
        before = steps
        body = await asyncio.wait_for(expo.render(), 10)
        during = steps - before
    finally:
        stop = True
        await task
        expo.close()
    assert body == generate_latest(reg)
    assert during >= 1  # the loop ran ingestion while the thread formatted


def test_label_sets_are_reused_and_carry_their_text() -> None:
    cache = LabelCache(["symbol", "exchange"])
    a = cache("BTC/USD", 'kra"ken')
    assert a is cache("BTC/USD", 'kra"ken')
    assert isinstance(a, LabelSet) and a == {"symbol": "BTC/USD", "exchange": 'kra"ken'}

    class One(Collector):
        def collect(self) -> Iterator[Metric]:
            g = GaugeMetricFamily("one", "One")
            g.samples.append(Sample("one", a, 2.5))
            yield g

    reg = CollectorRegistry(auto_describe=False)
    reg.register(One())
    r = Renderer()
    assert generate(reg, r) == generate_latest(reg)
    assert a.text == '{exchange="kra\\"ken",symbol="BTC/USD"}'
    assert generate(reg, r) == generate_latest(reg)  # from the stored text


async def test_close_then_render_starts_a_new_thread() -> None:
    reg = registry()
    expo = Exposition(reg, render_thread=True)
    try:
        first = await expo.render()
        expo.close()
        assert await expo.render() == first == generate_latest(reg)
    finally:
        expo.close()


async def test_one_step_scrape_does_not_wait_for_the_loop() -> None:
    """A scrape that fits in one slice is answered in the scraping task's own step: no loop
    iteration (a whole iteration of websocket callbacks under a firehose) runs before it."""
    reg = registry()
    expo = Exposition(reg)
    ran: list[bool] = []
    asyncio.get_running_loop().call_soon(ran.append, True)
    body = await expo.render()
    assert not ran
    assert body == generate_latest(reg)


async def test_a_waiter_renders_again_when_the_shared_render_is_cancelled() -> None:
    reg = CollectorRegistry()
    g = Gauge("value", "V", ["i"], registry=reg)
    for i in range(300):
        g.labels(str(i)).set(i)
    expo = Exposition(reg, slice_seconds=0.0)  # yields between families: can be cancelled
    first = asyncio.create_task(expo.render())
    await asyncio.sleep(0)  # first is rendering
    second = asyncio.create_task(expo.render())
    await asyncio.sleep(0)  # second waits for first's render
    first.cancel()
    assert await second == generate_latest(reg)
    assert first.cancelled()

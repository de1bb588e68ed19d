"""State writers under test: short timers, each run as a task, all closed after the test
(the ``h`` fixture; import it into a test module to use it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from exporter.store.writer import StateWriter


class Harness:
    def __init__(self) -> None:
        self.writers: list[StateWriter] = []
        self.tasks: list[asyncio.Task[None]] = []

    def writer(self, url: str | None, **kw: Any) -> tuple[StateWriter, CollectorRegistry]:
        reg = CollectorRegistry()
        kw.setdefault("flush_interval", 0.05)
        kw.setdefault("backoff_cap", 0.2)
        kw.setdefault("socket_timeout", 0.5)
        w = StateWriter(url, registry=reg, **kw)
        self.writers.append(w)
        return w, reg

    def run(self, w: StateWriter) -> asyncio.Task[None]:
        task = asyncio.create_task(w.run())
        self.tasks.append(task)
        return task


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    for t in harness.tasks:
        t.cancel()
    await asyncio.gather(*harness.tasks, return_exceptions=True)
    for w in harness.writers:
        await w.close(timeout=0.5)

"""The one clock every component reads: a monotonic clock for durations and deadlines, and
wall time for what is exported or stored.

Feeds, the market state, the collector, the intelligence timer and the Redis writer take a
:class:`Clock` instead of calling :mod:`time` themselves, so tests move time by hand
(:class:`FakeClock`) and a replay can drive it from recorded timestamps.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (staleness, deadlines, intervals)."""
        ...

    def time(self) -> float:
        """Wall time, seconds since the epoch (exported timestamps, window start and end)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The process's real clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


class FakeClock:
    """A clock that moves only when told to; both readings advance together.

    ``sleep`` advances the clock by the requested time and yields once to the event loop, so
    a timer loop under test runs one step per call without waiting."""

    def __init__(self, wall: float = 1_700_000_000.0, mono: float = 1_000.0) -> None:
        self._wall = wall
        self._mono = mono

    def monotonic(self) -> float:
        return self._mono

    def time(self) -> float:
        return self._wall

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._wall += seconds
        self._mono += seconds

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)

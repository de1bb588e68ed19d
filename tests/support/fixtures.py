"""Shared pytest fixtures; import them in tests/conftest.py:

from tests.support.fixtures import redis_server, redis_server_factory, ...  # noqa: F401

The simulator is one process per test module (``shared_simulator``), reset to its startup
state before each test that asks for ``sim``; a module picks its seed and rate with a
module-level ``SIMULATOR = {"seed": 7, "rate": 20}`` (`SimulatorHarness` arguments).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.redis_server import RedisServer
from tests.support.simulator import SimulatorHarness


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[..., RedisServer]]:
    """``make(started=True, **RedisServer kwargs)`` -> RedisServer; all cleaned up afterwards."""
    servers: list[RedisServer] = []

    def make(started: bool = True, **kwargs: object) -> RedisServer:
        server = RedisServer(**kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server.start() if started else server

    yield make
    for server in servers:
        server.cleanup()


@pytest.fixture
def redis_server(redis_server_factory: Callable[..., RedisServer]) -> RedisServer:
    """A started private redis-server (fresh per test); may be stopped/restarted by the test."""
    return redis_server_factory()


@pytest.fixture(scope="module")
def shared_simulator(request: pytest.FixtureRequest) -> Iterator[SimulatorHarness]:
    """The module's simulator process, started with its ``SIMULATOR`` settings."""
    settings: dict[str, Any] = getattr(request.module, "SIMULATOR", {})
    with SimulatorHarness(**settings) as sim:
        yield sim


@pytest.fixture
def sim(shared_simulator: SimulatorHarness) -> SimulatorHarness:
    """The module's simulator, reset (``POST /control/reset``) to the state right after its
    startup: books, sequences, faults, dislocations, freeze, mode, counters; sockets closed.
    Restarted (new port) if a test stopped it."""
    if not shared_simulator.running:
        shared_simulator.stop()
        shared_simulator.start()
    shared_simulator.reset()
    return shared_simulator

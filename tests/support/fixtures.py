"""Shared pytest fixtures; import them in tests/conftest.py:

from tests.support.fixtures import redis_server, redis_server_factory  # noqa: F401
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.redis_server import RedisServer


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

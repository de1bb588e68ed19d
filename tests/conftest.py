"""Shared fixtures: private redis-server, simulator subprocess, exporter subprocess."""

from tests.support.fixtures import (  # noqa: F401
    redis_server,
    redis_server_factory,
    shared_simulator,
    sim,
)

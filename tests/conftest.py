"""Shared fixtures: private redis-server, simulator subprocess, exporter subprocess."""

from tests.support.fixtures import redis_server, redis_server_factory  # noqa: F401

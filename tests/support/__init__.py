"""Shared test helpers (simulator subprocess, ...)."""

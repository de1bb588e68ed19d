"""The analytics build: what `cryptoarb_build_info{analytics}` reports is what is imported.

`make test-compiled` sets EXPECT_ANALYTICS_BUILD=compiled after building the mypyc extension
modules, so this fails if the unit tests there ran on the pure-Python modules (or the other
way round in `make test`, which CI runs on a clean checkout)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import exporter.analytics
from exporter.analytics import build

COMPILED = ["book", "arbitrage", "history", "insights"]  # scripts/compile_analytics.py
PACKAGE = Path(exporter.analytics.__file__).parent


def test_build_reports_what_is_imported() -> None:
    expected = os.environ.get("EXPECT_ANALYTICS_BUILD") or (
        "compiled" if any(PACKAGE.glob("*.so")) else "python"
    )
    assert build() == expected
    for name in COMPILED:
        module = importlib.import_module(f"exporter.analytics.{name}")
        assert module.__file__ is not None
        assert module.__file__.endswith(".so") == (expected == "compiled"), module.__file__

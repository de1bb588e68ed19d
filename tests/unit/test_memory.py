"""The minute timer collects cyclic garbage before trimming the heap."""

from __future__ import annotations

import gc
import weakref

from exporter.memory import collect_and_trim, malloc_trimmer


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic GC frees it


def test_collects_cycles_then_trims() -> None:
    calls: list[str] = []
    node = Node()
    ref = weakref.ref(node)
    del node
    gc.disable()  # no automatic collection may free it first
    try:
        assert ref() is not None
        collect_and_trim(lambda: calls.append("trim"))()
    finally:
        gc.enable()
    assert ref() is None and calls == ["trim"]


def test_without_malloc_trim_it_still_collects() -> None:
    node = Node()
    ref = weakref.ref(node)
    del node
    collect_and_trim(None)()
    assert ref() is None


def test_glibc_trimmer_runs() -> None:
    trim = malloc_trimmer()
    assert trim is not None  # Debian: glibc
    trim()

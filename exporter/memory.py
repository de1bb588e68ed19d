"""Give freed heap memory back to the OS (glibc ``malloc_trim``).

The soak (bench/soak.py) showed RSS creeping up ~3 MB/min under 1400 frames/s with periodic
reconnects while Python objects, asyncio tasks and tracemalloc's traced memory stayed flat:
glibc keeps freed chunks of the main heap (JSON frames, ccxt book dicts, reconnect churn)
instead of returning them. ``malloc_trim(0)`` once a minute returns them; elsewhere (musl,
macOS) it is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

TRIM_INTERVAL = 60.0


def malloc_trimmer() -> Callable[[], None] | None:
    """A function that trims the heap, or None when the C library has no ``malloc_trim``."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def malloc_trim() -> None:
        trim(0)

    return malloc_trim

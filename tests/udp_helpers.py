"""Shared helpers for the UDP tests: bounded waits, allocation counters."""

from __future__ import annotations

import socket
import time
from typing import Callable

from dtlspeer._binding import ffi, lib

DEADLINE_S = 3.0


def until(condition: Callable[[], bool], step: Callable[[], object] = lambda: None) -> bool:
    """Run ``step`` then test ``condition`` until it holds or DEADLINE_S passes."""
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        step()
        if condition():
            return True
        time.sleep(0.002)
    step()
    return condition()


def alloc_bytes() -> int:
    """Bytes the extension holds through dp_calloc right now."""
    b = ffi.new("int64_t *")
    n = ffi.new("int64_t *")
    lib.dp_alloc_stats(b, n)
    return int(b[0])


def has_ipv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False

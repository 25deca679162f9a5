"""The ``DTLSHost`` memory row with parking off (``park_after_ms=0``): what
an idle connection costs while it keeps its live Mbed TLS context. The
client is the same as for ``dtlspeer_host``."""

from __future__ import annotations

from typing import Any, Callable

from ..harness import Cfg, Result
from . import dtlspeer_host

memory_client = dtlspeer_host.memory_client


def memory_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    return dtlspeer_host.memory_server(cfg, ready, stop, park=False)

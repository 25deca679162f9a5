"""dtlspeer's ENet without DTLS: ``dtlspeer_enet``'s loops on a plain host
(what the DTLS layer costs, next to the pyenet baseline)."""

from __future__ import annotations

from typing import Any, Callable

from ..harness import Cfg, Result
from . import dtlspeer_enet


def enetpingpong_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    return dtlspeer_enet.pingpong_server(cfg, ready, stop, False)


def enetpingpong_client(cfg: Cfg, port: int, stop: Any) -> Result:
    return dtlspeer_enet.pingpong_client(cfg, port, stop, False)


def enetfanin_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    return dtlspeer_enet.fanin_server(cfg, ready, stop, False)


def enetfanin_client(cfg: Cfg, port: int, stop: Any) -> Result:
    return dtlspeer_enet.fanin_client(cfg, port, stop, False)

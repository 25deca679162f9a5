"""Plain Python UDP sockets: the ceiling every ratio is measured against.

Idiomatic, not handicapped: blocking ``recv`` with a timeout for ping-pong,
``select`` plus a non-blocking ``recvfrom_into`` drain and a dict keyed by
address for fan-in (what a hand-written Python game server does)."""

from __future__ import annotations

import socket
from typing import Any, Callable

from ..harness import (
    HOST,
    Cfg,
    FaninSink,
    PingClient,
    Result,
    Stop,
    blast,
    blast_prebuilt,
    payload,
    plain_server_socket,
    prebuilt_count,
)


def pingpong_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((HOST, 0))
    s.settimeout(0.05)
    ready(s.getsockname()[1])
    guard = Stop(stop, cfg.timeout)
    echoed = 0
    while True:
        try:
            data, src = s.recvfrom(2048)
        except socket.timeout:
            if guard.now():
                break
            continue
        s.sendto(data, src)
        echoed += 1
    s.close()
    return {"echoed": echoed}


def pingpong_client(cfg: Cfg, port: int, stop: Any) -> Result:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((HOST, port))

    s.settimeout(2.0)
    try:
        return PingClient(cfg).run(s.send, lambda _t: s.recv(2048))
    except socket.timeout:
        return {"error": "echo lost (2 s timeout)"}
    finally:
        s.close()


def fanin_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    s = plain_server_socket()
    ready(s.getsockname()[1])
    guard = Stop(stop, cfg.timeout)
    inbox: dict[tuple[str, int], list[bytes]] = {}
    buf = bytearray(2048)
    view = memoryview(buf)
    sink = FaninSink()
    got = 0
    import select

    while True:
        if not select.select([s], [], [], 0.05)[0]:
            if guard.now():
                break
            continue
        for _ in range(256):  # bounded batches: the sink marks batch times
            try:
                n, addr = s.recvfrom_into(buf)
            except BlockingIOError:
                break
            q = inbox.get(addr)
            if q is None:
                q = inbox[addr] = []
            q.append(bytes(view[:n]))
            got += 1
        sink.mark(got)
    s.close()
    return sink.result(list(inbox.values()), cfg.payload)


def fanin_client(cfg: Cfg, port: int, stop: Any) -> Result:
    socks = []
    for _ in range(cfg.clients):
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.connect((HOST, port))
        socks.append(c)
    bufs = [bytearray(payload(cfg.payload, i)) for i in range(cfg.clients)]
    return blast([c.send for c in socks], bufs, cfg, lambda: [c.close() for c in socks])


faninsrv_server = fanin_server


def faninsrv_client(cfg: Cfg, port: int, stop: Any) -> Result:
    socks = []
    for _ in range(cfg.clients):
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.connect((HOST, port))
        socks.append(c)
    per = prebuilt_count(cfg)
    msgs = [[payload(cfg.payload, i, k) for k in range(per)] for i in range(cfg.clients)]
    return blast_prebuilt([c.send for c in socks], msgs, cfg, lambda: [c.close() for c in socks])



# -- game tick (benchmarks/tick.py) ----------------------------------------------------


def tick_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    from .. import tick

    return tick.serve_parts(cfg, ready, stop, tick_parts)


def tick_parts(cfg: Cfg) -> Any:
    """``recvfrom_into`` drain into a list, then one ``sendto`` per client."""
    from .. import tick

    s = plain_server_socket()
    slots: dict[tuple[str, int], int] = {}
    targets: list[tuple[int, tuple[str, int]]] = []
    buf = bytearray(2048)
    view = memoryview(buf)
    make = tick.Snapshots(cfg).make
    recv_into, sendto = s.recvfrom_into, s.sendto

    def drain() -> list[bytes]:
        inputs = []
        while True:
            try:
                n, addr = recv_into(buf)
            except BlockingIOError:
                return inputs
            if addr not in slots:
                slots[addr] = len(targets)
                targets.append((len(targets), addr))
            inputs.append(bytes(view[:n]))

    def send(t: int) -> int:
        sent = 0
        for slot, addr in targets:
            try:
                sendto(make(slot, t), addr)
                sent += 1
            except OSError:  # a full buffer: lost, as on a real link
                pass
        return sent

    return tick.TickParts(s.getsockname()[1], drain, send, lambda: len(targets), s.close)


def tick_client(cfg: Cfg, port: int, stop: Any) -> Result:
    from .. import tick

    return tick.plain_client(cfg, port, stop)

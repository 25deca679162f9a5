"""dtlspeer's ENet (ENet 1.3.18 compiled in, ``dtlspeer.enet``) INSIDE DTLS
(``dtls_server_setup`` / ``dtls_client_setup``, the benchmark certificate,
clients verify it): the same loops as ``pyenet_enet`` (its baseline), with
``service_batch()``, ONE native call per tick returning every event.

``dtlspeer_enet_plain`` runs the same code without DTLS.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ..harness import HOST, Cfg, FaninSink, PingClient, Result, Stop, payload, stamp
from .dtlspeer_dtls import _materials

DTLS = True


def _server(cfg: Cfg, peers: int, dtls: bool) -> Any:
    from dtlspeer.enet import ENetConnection

    host = ENetConnection()
    host.create_host_bound(HOST, 0, peers, 2)
    if dtls:
        host.dtls_server_setup(_materials(cfg)[0])
    return host


def _connect(cfg: Cfg, port: int, count: int, dtls: bool, deadline: float
             ) -> tuple[list[Any], list[Any]]:  # fmt: skip
    from dtlspeer.enet import ENetConnection

    hosts, peers = [], []
    for _ in range(count):
        host = ENetConnection()
        host.create_host_bound(HOST, 0, 1, 2)
        if dtls:
            host.dtls_client_setup(HOST, _materials(cfg)[1])
        peers.append(host.connect_to_host(HOST, port, 2, 0))
        hosts.append(host)
    connected = [False] * count
    while not all(connected):
        if time.monotonic() > deadline:
            raise RuntimeError("dtlspeer ENet clients did not connect")
        for i, host in enumerate(hosts):
            for ev in host.service_batch(0):
                if ev.type == ENetConnection.EventType.EVENT_CONNECT:
                    connected[i] = True
        time.sleep(0.001)
    return hosts, peers


def pingpong_server(cfg: Cfg, ready: Callable[[int], None], stop: Any, dtls: bool) -> Result:
    host = _server(cfg, 4, dtls)
    ready(host.get_local_port())
    guard = Stop(stop, cfg.timeout)
    echoed = 0
    service = host.service_batch
    while True:
        events = service(50)
        if not events and guard.now():
            break
        for ev in events:
            if ev.type == 3:  # EVENT_RECEIVE
                ev.peer.send(0, ev.packet, 1)  # leaves at the end of the next service
                echoed += 1
        if events:
            host.flush()
    host.destroy()
    return {"echoed": echoed}


def pingpong_client(cfg: Cfg, port: int, stop: Any, dtls: bool) -> Result:
    (host,), (peer,) = _connect(cfg, port, 1, dtls, time.monotonic() + 30)
    inbox: list[bytes] = []
    service = host.service_batch

    def send(data: bytes) -> None:
        peer.send(0, data, 1)
        host.flush()

    def recv(timeout: float) -> bytes | None:
        end = time.monotonic() + timeout
        while not inbox:
            for ev in service(int(timeout * 1000)):
                if ev.type == 3:
                    inbox.append(ev.packet)
            if not inbox and time.monotonic() >= end:
                return None
        return inbox.pop(0)

    try:
        return PingClient(cfg).run(send, recv)
    finally:
        host.destroy()


def fanin_server(cfg: Cfg, ready: Callable[[int], None], stop: Any, dtls: bool) -> Result:
    host = _server(cfg, cfg.clients + 4, dtls)
    ready(host.get_local_port())
    guard = Stop(stop, cfg.timeout)
    inbox: dict[Any, list[bytes]] = {}
    sink = FaninSink()
    got = 0
    service = host.service_batch
    while True:
        events = service(50)
        if not events and guard.now():
            break
        for ev in events:
            if ev.type == 3:
                q = inbox.get(ev.peer)
                if q is None:
                    q = inbox[ev.peer] = []
                q.append(ev.packet)
                got += 1
        sink.mark(got)
    host.destroy()
    return sink.result(list(inbox.values()), cfg.payload)


def fanin_client(cfg: Cfg, port: int, stop: Any, dtls: bool) -> Result:
    hosts, peers = _connect(cfg, port, cfg.clients, dtls, time.monotonic() + 60)
    bufs = [bytearray(payload(cfg.payload, i)) for i in range(cfg.clients)]
    sent = 0
    seq = 0
    end = time.perf_counter() + cfg.seconds
    while time.perf_counter() < end:
        for i, peer in enumerate(peers):
            peer.send(0, bytes(stamp(bufs[i], i, seq)), 1)
            sent += 1
        seq += 1
        for host in hosts:
            host.service_batch(0)
    for _ in range(20):
        for host in hosts:
            host.service_batch(0)
        time.sleep(0.01)
    for host in hosts:
        host.destroy()
    return {"sent": sent}


def enetpingpong_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    return pingpong_server(cfg, ready, stop, DTLS)


def enetpingpong_client(cfg: Cfg, port: int, stop: Any) -> Result:
    return pingpong_client(cfg, port, stop, DTLS)


def enetfanin_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    return fanin_server(cfg, ready, stop, DTLS)


def enetfanin_client(cfg: Cfg, port: int, stop: Any) -> Result:
    return fanin_client(cfg, port, stop, DTLS)

"""pyenet (ENet 1.3.17's C library, plain ENet, no encryption): the baseline of
the ENet metrics. ``host.service(timeout)`` returns one event per call and
``check_events()`` the ones already queued, as pyenet's API is used.

Ping-pong: one client, one reliable 100-byte packet in flight on channel 0,
echoed reliably. Fan-in: ``cfg.clients`` ENet hosts in the client process,
each sending reliable 100-byte packets on channel 0, one per sender per
round, every host serviced after each round (ENet needs its acks).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ..harness import HOST, Cfg, FaninSink, PingClient, Result, Stop, payload, stamp


def available() -> str | None:
    try:
        import enet  # noqa: F401
    except ImportError:
        return "not installed (pip install pyenet)"
    return None


def _server_host(peers: int) -> Any:
    import enet

    return enet.Host(enet.Address(HOST.encode(), 0), peers, 2, 0, 0)


def _events(host: Any, timeout_ms: int = 0) -> list[Any]:
    import enet

    out = []
    ev = host.service(timeout_ms)
    while ev is not None and ev.type != enet.EVENT_TYPE_NONE:
        out.append(ev)
        ev = host.check_events()
    return out


def _connect(port: int, count: int, deadline: float) -> tuple[list[Any], list[Any]]:
    import enet

    hosts = [enet.Host(None, 1, 2, 0, 0) for _ in range(count)]
    peers = [h.connect(enet.Address(HOST.encode(), port), 2, 0) for h in hosts]
    connected = [False] * count
    while not all(connected):
        if time.monotonic() > deadline:
            raise RuntimeError("pyenet clients did not connect")
        for i, h in enumerate(hosts):
            for ev in _events(h, 0):
                if ev.type == enet.EVENT_TYPE_CONNECT:
                    connected[i] = True
        time.sleep(0.001)
    return hosts, peers


def enetpingpong_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    import enet

    host = _server_host(4)
    ready(host.address.port)
    guard = Stop(stop, cfg.timeout)
    echoed = 0
    receive = enet.EVENT_TYPE_RECEIVE
    while True:
        events = _events(host, 50)
        if not events and guard.now():
            break
        for ev in events:
            if ev.type == receive:
                ev.peer.send(0, enet.Packet(ev.packet.data, enet.PACKET_FLAG_RELIABLE))
                echoed += 1
        host.flush()
    return {"echoed": echoed}


def enetpingpong_client(cfg: Cfg, port: int, stop: Any) -> Result:
    import enet

    (host,), (peer,) = _connect(port, 1, time.monotonic() + 30)
    inbox: list[bytes] = []

    def send(data: bytes) -> None:
        peer.send(0, enet.Packet(data, enet.PACKET_FLAG_RELIABLE))
        host.flush()

    def recv(timeout: float) -> bytes | None:
        end = time.monotonic() + timeout
        while not inbox:
            for ev in _events(host, int(timeout * 1000)):
                if ev.type == enet.EVENT_TYPE_RECEIVE:
                    inbox.append(ev.packet.data)
            if not inbox and time.monotonic() >= end:
                return None
        return inbox.pop(0)

    return PingClient(cfg).run(send, recv)


def enetfanin_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    import enet

    host = _server_host(cfg.clients + 4)
    ready(host.address.port)
    guard = Stop(stop, cfg.timeout)
    receive = enet.EVENT_TYPE_RECEIVE
    inbox: dict[Any, list[bytes]] = {}
    sink = FaninSink()
    got = 0
    while True:
        events = _events(host, 50)
        if not events and guard.now():
            break
        for ev in events:
            if ev.type == receive:
                key = ev.peer.incomingPeerID
                q = inbox.get(key)
                if q is None:
                    q = inbox[key] = []
                q.append(ev.packet.data)
                got += 1
        sink.mark(got)
    return sink.result(list(inbox.values()), cfg.payload)


def enetfanin_client(cfg: Cfg, port: int, stop: Any) -> Result:
    import enet

    hosts, peers = _connect(port, cfg.clients, time.monotonic() + 60)
    bufs = [bytearray(payload(cfg.payload, i)) for i in range(cfg.clients)]
    sent = 0
    seq = 0
    end = time.perf_counter() + cfg.seconds
    flag = enet.PACKET_FLAG_RELIABLE
    while time.perf_counter() < end:
        for i, peer in enumerate(peers):
            peer.send(0, enet.Packet(bytes(stamp(bufs[i], i, seq)), flag))
            sent += 1
        seq += 1
        for h in hosts:
            _events(h, 0)
    for _ in range(20):  # let the acks and last packets through
        for h in hosts:
            _events(h, 0)
        time.sleep(0.01)
    return {"sent": sent}

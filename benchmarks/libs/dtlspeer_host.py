"""dtlspeer DTLS through the batch host (``DTLSHost``) on the server.

Server loop, as the class documents it: ``for event in host.service(t)``,
RECEIVE events carry the record, replies go out with ``peer.put_packet``
(queued, flushed with ``sendmmsg`` by the next ``service``). Same
certificate as every other row (the harness's self-signed P-256 key,
ECDHE-ECDSA); clients verify it.

Clients: ping-pong uses a ``DTLSHost`` client (one ``connect``); fan-in,
handshakes and memory use the Godot-style client of ``dtlspeer_dtls``
(``PacketPeerUDP`` + ``PacketPeerDTLS``, one socket per connection), since
a host has one socket and so one connection per server address.
"""

from __future__ import annotations

import collections
import gc
import os
import time
from typing import Any, Callable

from .. import flood
from ..harness import (
    HOST,
    RCVBUF,
    Cfg,
    FaninSink,
    PingClient,
    Result,
    Stop,
    rss_bytes,
    server_cpu,
)
from . import dtlspeer_dtls


def _options(cfg: Cfg) -> tuple[Any, Any]:
    return dtlspeer_dtls._materials(cfg)


def make_host(cfg: Cfg, **settings: Any) -> Any:
    """A DTLSHost server on 127.0.0.1 with the benchmark certificate."""
    from dtlspeer import DTLSHost, DTLSSettings

    return DTLSHost(
        HOST,
        0,
        server_options=_options(cfg)[0],
        settings=DTLSSettings(**settings) if settings else None,
        max_peers=max(4096, cfg.conns + 64),
        socket_buffer_size=RCVBUF,
    )


# -- ping-pong ---------------------------------------------------------------------


def pingpong_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    from dtlspeer import HostEventType

    host = make_host(cfg)
    ready(host.get_local_port())
    guard = Stop(stop, cfg.timeout)
    receive = HostEventType.RECEIVE
    echoed = 0
    service = host.service
    while True:
        events = service(0.05)
        if not events:
            if guard.now():
                break
            continue
        for event in events:
            if event.type == receive:
                event.peer.put_packet(event.data)  # leaves at the next service(), before it waits
                echoed += 1
    host.close()
    return {"echoed": echoed}


def pingpong_client(cfg: Cfg, port: int, stop: Any) -> Result:
    from dtlspeer import DTLSHost, HostEventType

    host = DTLSHost(HOST, 0, client_options=_options(cfg)[1])
    peer = host.connect(HOST, port)
    deadline = time.monotonic() + 30
    while True:
        events = host.service(0.05)
        if any(e.type == HostEventType.CONNECT for e in events):
            break
        if any(e.type != HostEventType.CONNECT for e in events) or time.monotonic() > deadline:
            host.close()
            return {"error": f"handshake failed: {peer.get_last_error()}"}
    receive = HostEventType.RECEIVE
    inbox: collections.deque[bytes] = collections.deque()
    service = host.service

    def recv(timeout: float) -> bytes | None:
        end = time.monotonic() + timeout
        while not inbox:
            for event in service(timeout):
                if event.type == receive:
                    inbox.append(event.data)
            if not inbox and time.monotonic() >= end:
                return None
        return inbox.popleft()

    try:
        # put_packet queues; recv's service() sends it before waiting for the echo.
        return PingClient(cfg).run(peer.put_packet, recv)
    finally:
        host.close()


# -- fan-in ---------------------------------------------------------------------------


def fanin_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    from dtlspeer import HostEventType

    host = make_host(cfg)
    ready(host.get_local_port())
    guard = Stop(stop, cfg.timeout)
    receive = HostEventType.RECEIVE
    inbox: dict[Any, list[bytes]] = {}
    sink = FaninSink()
    got = 0
    service = host.service
    while True:
        events = service(0.05)
        if not events:
            if guard.now():
                break
            continue
        for event in events:
            if event.type == receive:
                q = inbox.get(event.peer)
                if q is None:
                    q = inbox[event.peer] = []
                q.append(event.data)
                got += 1
        sink.mark(got)
    host.close()
    return sink.result(list(inbox.values()), cfg.payload)


fanin_client = dtlspeer_dtls.fanin_client


faninsrv_server = fanin_server


def faninsrv_client(cfg: Cfg, port: int, stop: Any) -> Result:
    from .pyopenssl_dtls import faninsrv_client as generator

    return generator(cfg, port, stop)


# -- handshakes -----------------------------------------------------------------------


def handshake_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    from dtlspeer import HostEventType

    host = make_host(cfg)
    ready(host.get_local_port())
    guard = Stop(stop, cfg.timeout)
    connected = ended = 0
    connect = HostEventType.CONNECT
    while True:
        events = host.service(0.02)
        if not events and guard.now():
            break
        for event in events:
            if event.type == connect:
                connected += 1
            else:
                ended += 1
    stats = host.get_stats()
    host.close()
    return {"established": connected, "closed": ended, "admitted": stats.get("admitted")}


handshake_client = dtlspeer_dtls.handshake_client


def hsserver_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    return server_cpu(handshake_server, cfg, ready, stop)


hsserver_client = dtlspeer_dtls.hsserver_client


# -- memory ---------------------------------------------------------------------------


def memory_server(cfg: Cfg, ready: Callable[[int], None], stop: Any, park: bool = True) -> Result:
    """N idle connections (each sent one record, see memory_client).
    ``park``: default settings (parked after 5 s without traffic), measured
    once the last connection had 5.5 s without traffic; else
    ``park_after_ms=0`` (never park), measured right after the last one."""
    from dtlspeer import HostEventType

    settings: dict[str, Any] = {"idle_timeout_ms": 3_600_000}  # keep them for the whole run
    if not park:
        settings["park_after_ms"] = 0
    host = make_host(cfg, **settings)
    ready(host.get_local_port())
    guard = Stop(stop, cfg.timeout)
    peers: list[Any] = []
    base = None
    connect, receive = HostEventType.CONNECT, HostEventType.RECEIVE
    lost = 0
    while len(peers) < cfg.conns:
        events = host.service(0.05)
        if not events and guard.now():
            return {"error": f"only {len(peers)} of {cfg.conns} connections established"}
        for event in events:
            if event.type == connect:
                peers.append(event.peer)
                if base is None:  # first connection: code paths are warm now
                    gc.collect()
                    base = rss_bytes()
            elif event.type != receive:  # DISCONNECT / ERROR
                lost += 1
    if park:
        end_idle = time.monotonic() + 5.5
        while time.monotonic() < end_idle:
            for event in host.service(0.1):  # timers run: idle connections park
                lost += event.type not in (connect, receive)
    else:
        time.sleep(0.3)
        host.service(0)
    gc.collect()
    end = rss_bytes()
    stats = host.get_stats()
    alive = stats.get("connected", len(peers))
    if base is None or end is None:
        return {"error": "RSS not available on this OS"}
    per = (end - base) / max(1, len(peers) - 1) / 1024
    res: Result = {"value": per, "conns": alive, "rss_base": base, "rss_end": end}
    if lost:
        res["note"] = f"{lost} peers ended during the run"
    host.close()
    return res


memory_client = dtlspeer_dtls.memory_client


# -- spoofed flood ----------------------------------------------------------------------


def flood_server(cfg: Cfg, ready: Callable[[Any], None], stop: Any) -> Result:
    """DTLSHost under a spoofed-hello flood (benchmarks/flood.py): the
    usual service loop, events ignored, at most ``flood.FRAME_HZ`` service
    calls per second (a game server's tick is far coarser)."""
    host = make_host(cfg)
    ready((host.get_local_port(), os.getpid(), True))
    guard = Stop(stop, cfg.timeout)
    frame = 1.0 / flood.FRAME_HZ
    while not guard.every(64):
        start = time.perf_counter()
        host.service(0.05)
        flood.sleep_rest_of_frame(start, frame)
    stats = host.get_stats()
    host.close()
    return {"hvr_sent": stats["hvr_sent"]}


flood_client = flood.flood_client


# -- game tick (benchmarks/tick.py) ---------------------------------------------------


def tick_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    from .. import tick

    return tick.serve_parts(cfg, ready, stop, tick_parts)


def tick_parts(cfg: Cfg, send_many: bool = True) -> Any:
    """``service(0)`` once per tick (RECEIVE data into a list, CONNECT adds
    a client), then every client's snapshot in one ``send_many`` (or, with
    ``send_many=False``, one ``put_packet`` each: benchmarks/tick_profile.py
    compares the two) and one ``flush()`` (``sendmmsg`` batches)."""
    from dtlspeer import HostEventType

    from .. import tick

    host = make_host(cfg, mtu=tick.dtls_mtu(cfg))
    receive, connect = HostEventType.RECEIVE, HostEventType.CONNECT
    peers: list[Any] = []  # slot = index
    make = tick.Snapshots(cfg).make
    service, flush = host.service, host.flush
    batch = host.send_many

    def drain() -> list[bytes]:
        inputs = []
        for event in service(0):
            kind = event.type
            if kind is receive:
                inputs.append(event.data)
            elif kind is connect:
                peers.append(event.peer)
        return inputs

    def send(t: int) -> int:
        sent = batch(peers, [make(slot, t) for slot in range(len(peers))])
        flush()
        return sent

    def send_each(t: int) -> int:
        for slot, peer in enumerate(peers):
            peer.put_packet(make(slot, t))
        flush()
        return len(peers)

    return tick.TickParts(host.get_local_port(), drain, send if send_many else send_each,
                          lambda: len(peers), host.close)


def tick_client(cfg: Cfg, port: int, stop: Any) -> Result:
    from .. import tick

    return tick.dtls_client(cfg, port, stop)

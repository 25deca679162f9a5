"""dtlspeer's ENet (ENet 1.3.18 compiled in, ``dtlspeer.enet``) INSIDE DTLS
(``dtls_server_setup`` / ``dtls_client_setup``, the benchmark certificate,
clients verify it): the same loops as ``pyenet_enet`` (its baseline), with
``service_batch()``, ONE native call per tick returning every event.

``dtlspeer_enet_plain`` runs the same code without DTLS.

The ``tick`` metric (benchmarks/tick.py) has an ENet-over-DTLS row too:
``tick_parts`` is the server, ``tick_generator`` its own load generator (real
ENet clients; the DTLS rows' engine generator does not speak ENet).
"""

from __future__ import annotations

import resource
import select
import socket
import time
from typing import Any, Callable

from ..harness import (
    HOST,
    RCVBUF,
    Cfg,
    FaninSink,
    PingClient,
    Result,
    Stop,
    loopback_source,
    payload,
    raise_fd_limit,
    stamp,
)
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


# -- game tick (benchmarks/tick.py) ---------------------------------------------------

# How a Godot 4 game sends, through ENetMultiplayerPeer's routing
# (dtlspeer.enet_multiplayer._route): unreliable modes on ENet channel 1.
# Snapshots: TRANSFER_MODE_UNRELIABLE = FLAG_UNSEQUENCED | FLAG_UNRELIABLE_FRAGMENT,
# what Godot's MultiplayerSynchronizer uses for state: a lost snapshot is
# superseded by the next one, the tick number inside orders them, so neither
# acks nor ENet's sequencing are worth paying for. Inputs:
# TRANSFER_MODE_UNRELIABLE_ORDERED = FLAG_UNRELIABLE_FRAGMENT (ENet drops an
# input older than one already delivered, so the server never applies a stale
# one), the usual mode for per-tick player input.
TICK_CHANNELS = 2
TICK_CHANNEL = 1
FLAG_UNSEQUENCED = 2  # ENetPacketPeer.FLAG_UNSEQUENCED
FLAG_UNRELIABLE_FRAGMENT = 8  # ENetPacketPeer.FLAG_UNRELIABLE_FRAGMENT
SNAPSHOT_FLAGS = FLAG_UNSEQUENCED | FLAG_UNRELIABLE_FRAGMENT
INPUT_FLAGS = FLAG_UNRELIABLE_FRAGMENT
DTLS_EVENTS = 64  # DTLS records one service_batch(0) reads (dp_enet.c DP_ENET_HOST_EVENTS)
ENET_MAX_PEERS = 4095  # ENet's peer id space (ENetConnection.create_host_bound)
_CONNECT, _DISCONNECT, _RECEIVE = 1, 2, 3  # ENetConnection.EventType
CLIENT_MAX_PACKET = 1 << 16  # the generator's client hosts (see tick_generator)


def tick_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    from .. import tick

    return tick.serve_parts(cfg, ready, stop, tick_parts)


def tick_parts(cfg: Cfg, dtls: bool = DTLS) -> Any:
    """An ``ENetConnection`` server (``dtls_server_setup`` unless ``dtls`` is
    False): ``drain`` = ``service_batch(0)`` (RECEIVE packets into a list,
    CONNECT gives the peer a slot, DISCONNECT takes it away) until a call
    returns nothing (one call reads at most 64 DTLS records: one call per
    tick would leave the rest of N > 64 inputs queued, growing every tick);
    ``send`` = one ``ENetPacketPeer.send`` per client (SNAPSHOT_FLAGS on
    TICK_CHANNEL) and one ``flush()``, so the tick's snapshots leave in the
    tick that built them, as DTLSHost's ``flush()`` does."""
    from dtlspeer.errors import DTLSPeerError

    from .. import tick

    if cfg.clients + 4 > ENET_MAX_PEERS:
        raise ValueError(f"ENet holds at most {ENET_MAX_PEERS - 4} clients here")
    host = _server(cfg, cfg.clients + 4, dtls)
    # Every tick server gets the same kernel receive buffer (harness.RCVBUF):
    # N inputs arrive between two drains. ENetConnection has no option for
    # it, so it is set on the host's own descriptor (which stays the host's).
    sock = socket.socket(fileno=host.fileno())
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    finally:
        sock.detach()
    make = tick.Snapshots(cfg).make
    service, flush = host.service_batch, host.flush
    targets: list[tuple[int, Any, Any]] = []  # (slot, peer, peer.send); slots never reused
    next_slot = [0]
    # service_batch(0) returns after one pass over what the socket layer
    # read: at most DTLS_EVENTS records (64) with DTLS (and never more than
    # 256 events). A game loop services until nothing is left (as
    # Godot's ``while service() has an event``); bounded at twice the calls
    # N inputs need, so a flood cannot keep the tick in here.
    drain_calls = 2 * (cfg.clients // DTLS_EVENTS + 2)

    def drain() -> list[bytes]:
        inputs: list[bytes] = []
        for _ in range(drain_calls):
            events = service(0)
            if not events:
                break
            for ev in events:
                kind = ev.type
                if kind == _RECEIVE:
                    inputs.append(ev.packet)
                elif kind == _CONNECT:
                    targets.append((next_slot[0], ev.peer, ev.peer.send))
                    next_slot[0] += 1
                elif kind == _DISCONNECT:
                    targets[:] = [t for t in targets if t[1] is not ev.peer]
        return inputs

    def send(t: int) -> int:
        sent = 0
        for slot, _, put in targets:
            try:
                put(TICK_CHANNEL, make(slot, t), SNAPSHOT_FLAGS)
                sent += 1
            except DTLSPeerError:  # the peer ended since the drain: lost, as on a real link
                pass
        flush()
        return sent

    return tick.TickParts(host.get_local_port(), drain, send, lambda: len(targets),
                          host.destroy)


def tick_client(cfg: Cfg, port: int, stop: Any) -> Result:
    return tick_generator(cfg, port, stop, DTLS)


def tick_generator(cfg: Cfg, port: int, stop: Any, dtls: bool) -> Result:
    """The ENet row's load generator: N real ENet clients in this process,
    one ``ENetConnection`` per client, each bound to its own socket on the
    tick rows' loopback addresses (two per 127.88.x.y): the DTLS server keys
    a session by the client's address and port, so one socket carries one
    DTLS session to a server and an ENet host cannot multiplex many DTLS
    clients over it (plain ENet could; Godot's clients have a host each).

    Connecting: HANDSHAKE_BATCH clients at a time (DTLS handshake, the
    benchmark certificate verified, then ENet's connect), serviced until
    connected; clients already connected are serviced when readable (their
    snapshots and ENet pings). Timed: per client-tick one ``send`` of its
    input (INPUT_FLAGS on TICK_CHANNEL) and one ``service_batch(0)``, which
    encrypts and sends it and reads (decrypts, acks) what arrived: unlike
    the DTLS rows' generator nothing can be prepared before the timed part
    (ENet numbers every datagram), so this generator's CPU grows with N and
    shows as ``generator lag`` when it falls behind its clock."""
    from dtlspeer.enet import ENetConnection
    from dtlspeer.errors import DTLSPeerError

    from .. import tick

    _, size, snapshot = tick.settings(cfg)
    n = cfg.clients
    raise_fd_limit(n + 256)
    client_options = _materials(cfg)[1] if dtls else None
    guard = Stop(stop, cfg.timeout)
    hosts: list[Any] = []
    peers: list[Any] = []
    received = [0] * n
    verifiers = [tick._Verifier(lambda d: [d], snapshot) for _ in range(min(tick.VERIFIED, n))]
    nverify = len(verifiers)
    ended = [0]  # clients disconnected after connecting

    def take(i: int, events: list[Any]) -> int:
        """Count client ``i``'s snapshots; the last CONNECT/DISCONNECT seen (0: none)."""
        kind = 0
        for ev in events:
            if ev.type == _RECEIVE:
                if len(ev.packet) >= snapshot:
                    received[i] += 1
                    if i < nverify:
                        verifiers[i].check(ev.packet)
            else:
                kind = ev.type
        return kind

    poller = select.poll()
    by_fd: dict[int, int] = {}
    try:
        for start in range(0, n, tick.HANDSHAKE_BATCH):
            waiting = set(range(start, min(n, start + tick.HANDSHAKE_BATCH)))
            for i in sorted(waiting):
                host = ENetConnection()
                # max_packet_size: snapshots are small, and the default (1 MiB) gives each
                # host a zeroed 1 MiB event buffer: 1 GB of generator memory at N=1000.
                host.create_host_bound(loopback_source(i, tick.CLIENTS_PER_ADDRESS) or HOST, 0,
                                       1, TICK_CHANNELS, max_packet_size=CLIENT_MAX_PACKET)
                if client_options is not None:
                    host.dtls_client_setup(HOST, client_options)
                peers.append(host.connect_to_host(HOST, port, TICK_CHANNELS, 0))
                hosts.append(host)
                by_fd[host.fileno()] = i
                poller.register(host.fileno(), select.POLLIN)
            while waiting:
                if guard.now():
                    return {"error": f"{len(hosts) - len(waiting)} of {n} ENet clients connected "
                            f"before the run's --timeout ({cfg.timeout:g} s) or stop"}
                for i in sorted(waiting):  # handshakes need their timers serviced too
                    kind = take(i, hosts[i].service_batch(0))
                    if kind == _CONNECT:
                        waiting.discard(i)
                    elif kind == _DISCONNECT:
                        return {"error": f"ENet client {i} could not connect: "
                                f"{peers[i].get_last_error() or 'disconnected'}"}
                for fd, _ in poller.poll(2):
                    i = by_fd[fd]
                    if i not in waiting and take(i, hosts[i].service_batch(0)) == _DISCONNECT:
                        ended[0] += 1

        hz = tick.settings(cfg)[0]
        period = 1.0 / hz
        tail = tick.body(size)
        pack = tick.HEAD.pack
        sends = [p.send for p in peers]
        services = [h.service_batch for h in hosts]
        sent = failed = lag_ticks = seq = 0
        cpu0 = _cpu()
        t_next = time.perf_counter()
        while not guard.every(8):
            for i in range(n):
                try:
                    sends[i](TICK_CHANNEL, pack(i, seq) + tail, INPUT_FLAGS)
                    sent += 1
                except DTLSPeerError:  # disconnected (counted below)
                    failed += 1
                events = services[i](0)
                if events and take(i, events) == _DISCONNECT:
                    ended[0] += 1
            seq += 1
            t_next += period
            left = t_next - time.perf_counter()
            if left < -period:
                lag_ticks += 1
            elif left > 0:
                time.sleep(left)
        cpu = _cpu() - cpu0
        end = time.perf_counter() + 0.3  # what is still in flight
        while time.perf_counter() < end:
            for i, service in enumerate(services):
                take(i, service(0))
            time.sleep(0.02)
        res: Result = {
            "inputs_sent": sent,
            "send_failed": failed,
            "snapshots_received": sum(received),
            "generator_ticks": seq,
            "generator_lag_ticks": lag_ticks,
            "generator_cpu_us": 1e6 * cpu / max(1, n * seq),
            "verified": sum(v.checked for v in verifiers),
            "bad": sum(v.bad for v in verifiers),
        }
        if ended[0]:
            res["note"] = f"{ended[0]} ENet clients disconnected during the run"
        return res
    finally:
        for host in hosts:
            host.destroy()


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

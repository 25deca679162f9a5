"""dtlspeer DTLS with the Godot-style classes (``UDPServer`` + ``DTLSServer``
on the server, ``PacketPeerUDP`` + ``PacketPeerDTLS`` on the client).

Server loop exactly as Godot documents it: ``udp_server.poll()``, take new
peers through ``dtls_server.take_connection``, ``peer.poll()`` each peer,
read its packets. One native call per peer per ``poll()``. Certificate:
the harness's self-signed P-256 key (ECDHE-ECDSA); the client verifies it
(``TLSOptions.client(cert)``, name 127.0.0.1)."""

from __future__ import annotations

import gc
import os
import select
import socket
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
    blast,
    loopback_source,
    payload,
    raise_fd_limit,
    rss_bytes,
    server_cpu,
    wait_readable,
)
from .dtlspeer_udp import server_socket


def _materials(cfg: Cfg) -> tuple[Any, Any]:
    from dtlspeer import CryptoKey, TLSOptions, X509Certificate

    key, cert = CryptoKey(), X509Certificate()
    key.load_from_string(cfg.key_pem)
    cert.load_from_string(cfg.cert_pem)
    return TLSOptions.server(key, cert), TLSOptions.client(cert)


class Server:
    """A Godot-style DTLS server on 127.0.0.1 (an ephemeral port)."""

    def __init__(self, cfg: Cfg, max_pending: int = 64, settings: Any = None) -> None:
        from dtlspeer import DTLSServer, PacketPeerDTLS, UDPServer

        self.HANDSHAKING = PacketPeerDTLS.STATUS_HANDSHAKING
        self.CONNECTED = PacketPeerDTLS.STATUS_CONNECTED
        self.udp = UDPServer()
        self.udp.max_pending_connections = max_pending
        self.udp.listen(0, HOST)
        self.sock = server_socket(self.udp)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        self.dtls = DTLSServer()
        self.dtls.setup(_materials(cfg)[0], settings=settings)
        self.peers: list[Any] = []

    @property
    def port(self) -> int:
        return int(self.udp.get_local_port())

    def accept(self) -> list[Any]:
        """poll() the UDPServer and take every new peer; returns the new DTLS peers."""
        self.udp.poll()
        new = []
        while self.udp.is_connection_available():
            peer = self.dtls.take_connection(self.udp.take_connection())
            if peer.get_status() == self.HANDSHAKING:  # the others: cookie exchange
                new.append(peer)
        self.peers.extend(new)
        return new

    def prune(self) -> None:
        ok = (self.HANDSHAKING, self.CONNECTED)
        self.peers = [p for p in self.peers if p.get_status() in ok]


class Client:
    """One client connection: a connected PacketPeerUDP plus PacketPeerDTLS."""

    def __init__(self, port: int, options: Any, source: str | None = None, *,
                 session: Any = None) -> None:
        """``source``: local address to bind first (see harness.loopback_source);
        ``session``: a saved session to offer (resumption)."""
        from dtlspeer import PacketPeerDTLS, PacketPeerUDP

        self.udp = PacketPeerUDP()
        if source is not None:
            self.udp.bind(0, source)
        self.udp.connect_to_host(HOST, port)
        self.sock = self.udp._ep.sock  # only to select() over many clients
        self.dtls = PacketPeerDTLS()
        self.dtls.connect_to_peer(self.udp, HOST, options, session=session)

    def fileno(self) -> int:
        return int(self.sock.fileno())

    def close(self) -> None:
        self.dtls.disconnect_from_peer()
        self.udp.close()


def _handshake_all(clients: list[Client], deadline: float) -> None:
    """Drive the clients until every one is connected; raise on failure."""
    from dtlspeer import PacketPeerDTLS

    waiting = list(clients)
    while waiting:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(waiting)} handshakes unfinished")
        wait_readable(waiting, 0.02)
        still = []
        for c in waiting:
            c.dtls.poll()
            st = c.dtls.get_status()
            if st == PacketPeerDTLS.STATUS_HANDSHAKING:
                still.append(c)
            elif st != PacketPeerDTLS.STATUS_CONNECTED:
                raise RuntimeError(f"handshake failed: {c.dtls.get_last_error()}")
        waiting = still


# -- ping-pong ---------------------------------------------------------------------


def pingpong_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    srv = Server(cfg)
    ready(srv.port)
    guard = Stop(stop, cfg.timeout)
    echoed = 0
    while True:
        if not wait_readable([srv.sock], 0.05):
            if guard.now():
                break
        srv.accept()
        for peer in srv.peers:
            peer.poll()
            while peer.get_available_packet_count():
                peer.put_packet(peer.get_packet())
                echoed += 1
    return {"echoed": echoed}


def pingpong_client(cfg: Cfg, port: int, stop: Any) -> Result:
    c = Client(port, _materials(cfg)[1])
    _handshake_all([c], time.monotonic() + 30)
    dtls, udp = c.dtls, c.udp

    def recv(timeout: float) -> Any:
        while True:
            if dtls.get_available_packet_count():
                return dtls.get_packet()
            if not udp.wait(timeout):
                return None
            dtls.poll()

    try:
        return PingClient(cfg).run(dtls.put_packet, recv)
    finally:
        c.close()


# -- fan-in ---------------------------------------------------------------------------


def fanin_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    srv = Server(cfg, max_pending=cfg.clients * 2)
    ready(srv.port)
    guard = Stop(stop, cfg.timeout)
    inbox: list[list[bytes]] = []
    sink = FaninSink()
    got = 0
    while True:
        if not wait_readable([srv.sock], 0.05):
            if guard.now():
                break
        for _ in srv.accept():
            inbox.append([])
        for peer, q in zip(srv.peers, inbox):
            peer.poll()
            for _ in range(peer.get_available_packet_count()):
                q.append(peer.get_packet())
                got += 1
        sink.mark(got)
    return sink.result(inbox, cfg.payload)


def fanin_client(cfg: Cfg, port: int, stop: Any) -> Result:
    options = _materials(cfg)[1]
    # Spread over loopback addresses: all 64 from one address overran the
    # UDPServer's 4 pending handshakes per address and timed out.
    clients = [Client(port, options, loopback_source(i)) for i in range(cfg.clients)]
    _handshake_all(clients, time.monotonic() + 60)
    bufs = [bytearray(payload(cfg.payload, i)) for i in range(cfg.clients)]
    return blast([c.dtls.put_packet for c in clients], bufs, cfg,
                 lambda: [c.close() for c in clients])


faninsrv_server = fanin_server


def faninsrv_client(cfg: Cfg, port: int, stop: Any) -> Result:
    from .pyopenssl_dtls import faninsrv_client as generator

    return generator(cfg, port, stop)


# -- handshakes -----------------------------------------------------------------------


def handshake_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    srv = Server(cfg, max_pending=cfg.concurrency * 4)
    ready(srv.port)
    guard = Stop(stop, cfg.timeout)
    done = 0
    while True:
        if not wait_readable([srv.sock], 0.02) and guard.now():
            break
        srv.accept()
        for peer in srv.peers:
            peer.poll()
        before = len(srv.peers)
        srv.prune()  # ended by the client's close_notify
        done += before - len(srv.peers)
    return {"closed": done, "gate": srv.dtls.get_stats()}


def handshake_client(cfg: Cfg, port: int, stop: Any, session: Any = None) -> Result:
    """``cfg.concurrency`` handshakes in flight for ``cfg.seconds``, each
    offering ``session`` if given: a handshake counts only if it connected,
    and (with a session) only if it resumed (others are counted lost)."""
    from dtlspeer import PacketPeerDTLS

    options = _materials(cfg)[1]
    slots = [Client(port, options, session=session) for _ in range(cfg.concurrency)]
    done = failed = 0
    reasons: list[str] = []
    start = time.perf_counter()
    end = start + cfg.seconds
    while time.perf_counter() < end:
        wait_readable(slots, 0.02)
        for i, c in enumerate(slots):
            c.dtls.poll()
            st = c.dtls.get_status()
            if st == PacketPeerDTLS.STATUS_HANDSHAKING:
                continue
            if st == PacketPeerDTLS.STATUS_CONNECTED and (
                session is None or c.dtls.is_session_resumed()
            ):
                done += 1
            else:
                failed += 1
                reasons.append(c.dtls.get_last_error() if st != PacketPeerDTLS.STATUS_CONNECTED
                               else "not resumed")
            c.close()
            slots[i] = Client(port, options, session=session)
    elapsed = time.perf_counter() - start
    for c in slots:
        c.close()
    res: Result = {"value": done / elapsed, "count": done, "lost": failed}
    if reasons:
        res["note"] = reasons[0]
    return res


def hsserver_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    return server_cpu(handshake_server, cfg, ready, stop)


def hsserver_client(cfg: Cfg, port: int, stop: Any) -> Result:
    from .pyopenssl_dtls import hsserver_client as generator

    return generator(cfg, port, stop)


# -- memory ---------------------------------------------------------------------------


def memory_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    """N idle connections behind Godot-style classes, as a Godot server runs
    them: every peer polled (here every 0.25 s once connected) and its
    packets read. Default settings, so a peer parks after 5 s without
    traffic; measured once the last connection had 5.5 s of quiet (each
    client sent one record after its handshake, see memory_client)."""
    srv = Server(cfg, max_pending=256)
    ready(srv.port)
    guard = Stop(stop, cfg.timeout)
    handshaking: list[Any] = []
    idle: list[Any] = []
    base = None
    last_idle_poll = time.monotonic()

    def poll_idle() -> None:
        for peer in idle:
            peer.poll()
            while peer.get_available_packet_count():
                peer.get_packet()

    while len(idle) < cfg.conns:
        if not wait_readable([srv.sock], 0.05) and guard.now():
            return {"error": f"only {len(idle)} of {cfg.conns} connections established"}
        handshaking.extend(srv.accept())
        srv.peers = []
        still = []
        for peer in handshaking:
            peer.poll()
            st = peer.get_status()
            if st == srv.CONNECTED:
                idle.append(peer)
                if base is None:  # first connection: code paths are warm now
                    gc.collect()
                    base = rss_bytes()
            elif st == srv.HANDSHAKING:
                still.append(peer)
        handshaking = still
        if time.monotonic() - last_idle_poll > 0.25:  # records, lost flights resent, timers
            poll_idle()
            last_idle_poll = time.monotonic()
    end_idle = time.monotonic() + 5.5
    while time.monotonic() < end_idle:
        time.sleep(0.25)
        poll_idle()  # timers run: idle connections park
    gc.collect()
    end = rss_bytes()
    alive = sum(1 for p in idle if p.get_status() == srv.CONNECTED)
    if base is None or end is None:
        return {"error": "RSS not available on this OS"}
    per = (end - base) / max(1, len(idle) - 1) / 1024
    stats = [p.get_stats() for p in idle]
    parked = sum(st.get("parks", 0) > st.get("unparks", 0) for st in stats)
    return {"value": per, "conns": alive, "parked": parked, "rss_base": base, "rss_end": end}


def memory_client(cfg: Cfg, port: int, stop: Any) -> Result:
    """N Godot-style client connections, each sending one 100 B record right
    after its handshake (what any game client sends first). DTLS 1.2 servers
    keep their last flight until the client's first record shows it arrived,
    and Mbed TLS cannot serialize (park) a connection that still holds it;
    without this the server rows would only measure that state."""
    raise_fd_limit(cfg.conns + 256)
    options = _materials(cfg)[1]
    deadline = time.monotonic() + cfg.timeout
    first = Client(port, options)
    _handshake_all([first], deadline)
    first.dtls.put_packet(payload(cfg.payload, 0))
    keep = [first]
    time.sleep(0.5)  # the server takes its baseline RSS now
    start = time.perf_counter()
    while len(keep) < cfg.conns:
        batch = [Client(port, options) for _ in range(min(32, cfg.conns - len(keep)))]
        _handshake_all(batch, deadline)
        for c in batch:
            c.dtls.put_packet(payload(cfg.payload, len(keep) & 0xFFFF))
        keep.extend(batch)
    rate = (len(keep) - 1) / max(1e-9, time.perf_counter() - start)
    stop.wait(cfg.timeout)  # stay connected until the server has measured
    return {"established": len(keep), "handshakes_per_s": rate}


# -- spoofed flood ----------------------------------------------------------------------


def flood_server(cfg: Cfg, ready: Callable[[Any], None], stop: Any) -> Result:
    """The Godot loop under a spoofed-hello flood (benchmarks/flood.py);
    Godot's default 16 pending connections. A frame loop: it sleeps until
    the socket is readable, at most ``flood.FRAME_HZ`` frames per second
    (Godot games poll in ``_process``, 60-240 times a second)."""
    srv = Server(cfg, max_pending=16)
    ready((srv.port, os.getpid(), True))
    guard = Stop(stop, cfg.timeout)
    poller = select.poll()
    poller.register(srv.sock.fileno(), select.POLLIN)
    frame = 1.0 / flood.FRAME_HZ
    while True:
        if not poller.poll(50) and guard.now():
            break
        start = time.perf_counter()
        srv.accept()
        for peer in srv.peers:
            peer.poll()
        srv.prune()
        if guard.every(256):
            break
        flood.sleep_rest_of_frame(start, frame)
    return {"peers": len(srv.peers)}


flood_client = flood.flood_client


# -- game tick (benchmarks/tick.py) ---------------------------------------------------


def tick_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    from .. import tick

    return tick.serve_parts(cfg, ready, stop, tick_parts)


def tick_parts(cfg: Cfg) -> Any:
    """The loop Godot documents, once per tick: ``udp_server.poll()``, take
    new connections, ``peer.poll()`` and read every peer's packets; then
    ``put_packet`` per client (each sent at once)."""
    from dtlspeer import DTLSSettings

    from .. import tick

    srv = Server(cfg, max_pending=64, settings=DTLSSettings(mtu=tick.dtls_mtu(cfg)))
    targets: list[tuple[int, Any]] = []  # connected: every tick sends them a snapshot
    pending: list[Any] = []  # handshaking: polled until connected
    make = tick.Snapshots(cfg).make
    connected, handshaking = srv.CONNECTED, srv.HANDSHAKING

    def drain() -> list[bytes]:
        pending.extend(srv.accept())
        if pending:
            for peer in pending:
                peer.poll()
                if peer.get_status() == connected:
                    targets.append((len(targets), peer))
            pending[:] = [p for p in pending if p.get_status() == handshaking]
        inputs = []
        for _, peer in targets:
            peer.poll()
            for _ in range(peer.get_available_packet_count()):
                inputs.append(peer.get_packet())
        return inputs

    def send(t: int) -> int:
        for slot, peer in targets:
            peer.put_packet(make(slot, t))
        return len(targets)

    return tick.TickParts(srv.port, drain, send, lambda: len(targets), srv.udp.stop)


def tick_client(cfg: Cfg, port: int, stop: Any) -> Result:
    from .. import tick

    return tick.dtls_client(cfg, port, stop)

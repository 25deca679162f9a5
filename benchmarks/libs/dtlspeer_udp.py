"""dtlspeer's UDP layer (``PacketPeerUDP`` / ``UDPServer``), no encryption.

Shows what the Godot-style UDP classes cost on top of plain sockets; the
DTLS rows (``dtlspeer_dtls``) sit on the same layer."""

from __future__ import annotations

import socket
from typing import Any, Callable

from ..harness import HOST, RCVBUF, Cfg, FaninSink, PingClient, Result, Stop, blast, payload


def server_socket(server: Any) -> socket.socket:
    """The UDPServer's socket, to ``select`` on it and size its buffer.

    dtlspeer has no public accessor for it yet (Godot's UDPServer has none
    either); the benchmark only waits on it and sets SO_RCVBUF."""
    return server._ep.sock  # type: ignore[no-any-return]


def pingpong_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    from dtlspeer import PacketPeerUDP

    p = PacketPeerUDP()
    p.bind(0, HOST)
    ready(p.get_local_port())
    guard = Stop(stop, cfg.timeout)
    connected = False
    echoed = 0
    while True:
        if not p.wait(0.05):
            if guard.now():
                break
            continue
        data = p.get_packet()
        if not connected:  # one client: reply over a connected socket from now on
            p.connect_to_host(p.get_packet_ip(), p.get_packet_port())
            connected = True
        p.put_packet(data)
        echoed += 1
    p.close()
    return {"echoed": echoed}


def pingpong_client(cfg: Cfg, port: int, stop: Any) -> Result:
    from dtlspeer import PacketPeerUDP

    p = PacketPeerUDP()
    p.connect_to_host(HOST, port)

    def recv(timeout: float) -> Any:
        if not p.wait(timeout):
            return None
        return p.get_packet()

    try:
        return PingClient(cfg).run(p.put_packet, recv)
    finally:
        p.close()


def fanin_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    import select

    from dtlspeer import UDPServer

    srv = UDPServer()
    srv.max_pending_connections = cfg.clients * 2
    srv.listen(0, HOST)
    sock = server_socket(srv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    ready(srv.get_local_port())
    guard = Stop(stop, cfg.timeout)
    peers: list[Any] = []
    inbox: list[list[bytes]] = []
    sink = FaninSink()
    got = 0
    while True:
        if not select.select([sock], [], [], 0.05)[0]:
            if guard.now():
                break
            continue
        srv.poll()
        while srv.is_connection_available():
            peers.append(srv.take_connection())
            inbox.append([])
        for peer, q in zip(peers, inbox):
            for _ in range(peer.get_available_packet_count()):
                q.append(peer.get_packet())
                got += 1
        sink.mark(got)
    srv.stop()
    return sink.result(inbox, cfg.payload)


def fanin_client(cfg: Cfg, port: int, stop: Any) -> Result:
    from dtlspeer import PacketPeerUDP

    peers = []
    for _ in range(cfg.clients):
        p = PacketPeerUDP()
        p.connect_to_host(HOST, port)
        peers.append(p)
    bufs = [bytearray(payload(cfg.payload, i)) for i in range(cfg.clients)]
    return blast([p.put_packet for p in peers], bufs, cfg, lambda: [p.close() for p in peers])

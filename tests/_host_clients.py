"""Many lightweight DTLS clients for host tests and benchmarks.

A DTLSHost has one socket, so N connections to it need N client (address,
port) pairs. Each client here is a plain non-blocking Python socket bound to
one of several loopback source addresses plus a sans-I/O engine
``Connection`` (the same C engine as everything else); one ``selectors``
loop drives them all. No per-client native endpoint or receive buffer, so
10 000 of them fit in memory next to the server.
"""

from __future__ import annotations

import selectors
import socket
import time

from dtlspeer._engine import Connection, EngineConfig, EngineStatus, Verify

PSK_IDENTITY = b"player"
PSK_KEY = bytes(range(32))
PSK_SUITE = "TLS-PSK-WITH-AES-128-GCM-SHA256"


def now_ms() -> int:
    return int(time.monotonic() * 1000)


def client_config(
    identity: bytes = PSK_IDENTITY, key: bytes = PSK_KEY, connection_id: bool = False
) -> EngineConfig:
    """A PSK client configuration (plain PSK: the cheapest handshake);
    ``connection_id``: offer a zero-length RFC 9146 CID."""
    return EngineConfig.client(
        verify=Verify.NONE,
        psk=(identity, key),
        ciphersuites=[PSK_SUITE],
        handshake_timeout_ms=(500, 8000),
        mtu=1200,
        connection_id=connection_id,
    )


class EngineClients:
    """``count`` DTLS clients of the server at 127.0.0.1:``port``, spread
    over ``sources`` loopback addresses (127.0.0.2, 127.0.0.3, ...)."""

    def __init__(
        self, count: int, port: int, sources: int = 4, connection_id: bool = False
    ) -> None:
        self.config = client_config(connection_id=connection_id)
        self.port = port
        self.selector = selectors.DefaultSelector()
        self.sockets: list[socket.socket] = []
        self.conns: list[Connection | None] = [None] * count
        self.received: list[list[bytes]] = [[] for _ in range(count)]
        self.handshaking: set[int] = set()
        for i in range(count):
            self.sockets.append(self._bind(i, f"127.0.0.{2 + i % sources}"))

    def _bind(self, i: int, source: str) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", self.port))
        self.selector.register(sock, selectors.EVENT_READ, i)
        return sock

    def rebind(self, i: int, source: str) -> tuple[str, int]:
        """Client i's NAT rebinds: the same session goes on from a new
        socket (a new port, on ``source``); returns the new address."""
        old = self.sockets[i]
        self.selector.unregister(old)
        old.close()
        self.sockets[i] = self._bind(i, source)
        host, port = self.sockets[i].getsockname()[:2]
        return host, int(port)

    def _send_out(self, i: int) -> None:
        conn = self.conns[i]
        assert conn is not None
        for datagram in conn.take_outgoing():
            try:
                self.sockets[i].send(datagram)
            except OSError:
                pass  # lost like any datagram; DTLS retransmits the handshake

    def start(self, first: int, last: int) -> None:
        """Begin the handshakes of clients first..last-1."""
        now = now_ms()
        for i in range(first, last):
            conn = Connection(self.config, now)
            self.conns[i] = conn
            conn.update(now)
            self._send_out(i)
            self.handshaking.add(i)

    def status(self, i: int) -> EngineStatus:
        conn = self.conns[i]
        return EngineStatus.DISCONNECTED if conn is None else conn.status

    def pump(self) -> None:
        """Read every readable socket, feed, run handshake timers, send."""
        now = now_ms()
        for key, _ in self.selector.select(0):
            i = key.data
            sock = self.sockets[i]
            conn = self.conns[i]
            for _ in range(64):
                try:
                    datagram = sock.recv(2048)
                except BlockingIOError:
                    break
                except OSError:
                    break  # ICMP error: the handshake timer retries
                if conn is not None:
                    conn.feed(datagram, now)
            if conn is not None:
                while (record := conn.read()) is not None:
                    self.received[i].append(record)
                self._send_out(i)
                if conn.status != EngineStatus.HANDSHAKING:
                    self.handshaking.discard(i)
        for i in list(self.handshaking):
            conn = self.conns[i]
            assert conn is not None
            due = conn.next_timeout()
            if due is not None and due <= now:
                conn.update(now)
                self._send_out(i)
            if conn.status != EngineStatus.HANDSHAKING:
                self.handshaking.discard(i)

    def write(self, i: int, data: bytes) -> None:
        conn = self.conns[i]
        assert conn is not None
        conn.write(data, now_ms())
        self._send_out(i)

    def close(self) -> None:
        for conn in self.conns:
            if conn is not None:
                conn.close()
        self.conns = [None] * len(self.conns)
        self.selector.close()
        for sock in self.sockets:
            sock.close()
        self.sockets = []

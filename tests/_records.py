"""DTLS record surgery for tests that play a client by hand: cookieless
ClientHellos, the cookie a gate expects, a hello carrying a cookie, stray
epoch-0 records, a half-open handshake (cookie exchange done, then
silence), and a client whose address can be forged."""

from __future__ import annotations

import socket
import struct
import time
from typing import Callable, Optional

from dtlspeer._engine import Connection, CookieGate, EngineConfig, EngineStatus, GateVerdict, Verify
from udp_helpers import until

SECRET = b"takeover test secret, 32 bytes.."


def wall_ms() -> int:
    return int(time.time() * 1000)


def client_config(connection_id: bool = False) -> EngineConfig:
    return EngineConfig.client(
        verify=Verify.NONE,
        handshake_timeout_ms=(200, 4000),
        mtu=1200,
        connection_id=connection_id,
    )


def transport_id(ip: str, port: int) -> bytes:
    """dp_addr_transport_id: IPv6(-mapped) address, port, scope id."""
    mapped = socket.inet_pton(socket.AF_INET6, "::ffff:" + ip)
    return mapped + struct.pack(">HI", port, 0)


def cookie_for(ip: str, port: int, hello: bytes) -> bytes:
    """The cookie the server's gate expects from (ip, port) right now."""
    verdict, reply = CookieGate(SECRET).check(transport_id(ip, port), hello, wall_ms())
    assert verdict == GateVerdict.REPLY
    return reply[13 + 12 + 3 : 13 + 12 + 3 + reply[13 + 12 + 2]]


def with_cookie(hello: bytes, cookie: bytes, message_seq: int = 1) -> bytes:
    """A ClientHello record (first record of ``hello``) carrying ``cookie``."""
    body = hello[13 + 12 :]
    pos = 2 + 32
    pos += 1 + body[pos]  # session id
    old_cookie_len = body[pos]
    new_body = body[:pos] + bytes([len(cookie)]) + cookie + body[pos + 1 + old_cookie_len :]
    n = len(new_body)
    hs = bytes([1]) + n.to_bytes(3, "big") + message_seq.to_bytes(2, "big") + b"\0\0\0"
    hs += n.to_bytes(3, "big") + new_body
    return hello[:11] + len(hs).to_bytes(2, "big") + hs


def ccs_epoch0(seq: int = 7) -> bytes:
    """A ChangeCipherSpec record of epoch 0 (what Mbed TLS skipped before
    looking at the next record, the ClientHello, with the reconnect check)."""
    return bytes([20, 0xFE, 0xFD, 0, 0]) + seq.to_bytes(6, "big") + b"\x00\x01\x01"


def first_hello(config: EngineConfig | None = None) -> bytes:
    """A client's first (cookieless) ClientHello; certificate suites unless
    ``config`` says otherwise (a PSK-only server refuses those)."""
    conn = Connection(config if config is not None else client_config(), 0)
    conn.update(0)
    (hello,) = conn.take_outgoing()
    conn.close()
    return hello


def hvr_cookie(reply: bytes) -> bytes:
    """The cookie of a HelloVerifyRequest datagram."""
    assert reply[0] == 22 and reply[13] == 3, reply[:16]
    return reply[28 : 28 + reply[27]]


def half_open(
    sock: socket.socket,
    port: int,
    step: Callable[[], object],
    config: EngineConfig | None = None,
) -> bool:
    """Play the cookie exchange from ``sock`` and send the ClientHello with
    the cookie, then go silent (the server's flight is never answered).
    True once the cookie'd hello left."""
    hello = first_hello(config)
    sock.sendto(hello, ("127.0.0.1", port))
    replies: list[bytes] = []

    def poll() -> None:
        step()
        try:
            replies.append(sock.recv(65535))
        except BlockingIOError:
            pass

    if not until(lambda: bool(replies), poll):
        return False
    sock.sendto(with_cookie(hello, hvr_cookie(replies[0])), ("127.0.0.1", port))
    return True


class SpoofableClient:
    """An engine client on a SO_REUSEPORT socket connected to the server,
    plus an unconnected socket on the same address and port for forgeries."""

    def __init__(self, port: int, connection_id: bool = False) -> None:
        self.port = port
        self.connection_id = connection_id  # offer a zero-length RFC 9146 CID
        self._bind("127.0.0.1")
        self.conn: Optional[Connection] = None
        self.received: list[bytes] = []
        self.sent: list[bytes] = []  # every datagram sent, in order
        self.rewrite: Optional[Callable[[bytes], bytes]] = None

    def _bind(self, source: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.sock.setblocking(False)
        self.sock.bind((source, 0))
        self.sock.connect(("127.0.0.1", self.port))
        self.addr = self.sock.getsockname()
        self.forger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.forger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.forger.bind(self.addr)

    def rebind(self, source: str = "127.0.0.1") -> None:
        """The NAT rebinds: the same session goes on from a new socket (a
        new port on ``source``)."""
        self.sock.close()
        self.forger.close()
        self._bind(source)

    def now(self) -> int:
        return int(time.monotonic() * 1000)

    def start(self) -> None:
        """A new session from the same socket (the game restarted)."""
        if self.conn is not None:
            self.conn.close()
        self.conn = Connection(client_config(connection_id=self.connection_id), self.now())
        self.conn.update(self.now())
        self._send()

    def _send(self) -> None:
        assert self.conn is not None
        for datagram in self.conn.take_outgoing():
            if self.rewrite is not None:
                datagram = self.rewrite(datagram)
            if datagram:  # b"": held back
                self.sent.append(datagram)
                self.sock.send(datagram)

    def pump(self) -> None:
        assert self.conn is not None
        now = self.now()
        for _ in range(64):
            try:
                self.conn.feed(self.sock.recv(65535), now)
            except (BlockingIOError, ConnectionRefusedError):
                break
        while (record := self.conn.read()) is not None:
            self.received.append(record)
        due = self.conn.next_timeout()
        if due is not None and due <= now:
            self.conn.update(now)
        self._send()

    def write(self, data: bytes) -> None:
        assert self.conn is not None
        self.conn.write(data, self.now())
        self._send()

    def forge(self, datagram: bytes) -> None:
        self.forger.sendto(datagram, ("127.0.0.1", self.port))

    def connected(self) -> bool:
        return self.conn is not None and self.conn.status == EngineStatus.CONNECTED

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.sock.close()
        self.forger.close()

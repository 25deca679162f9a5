"""DTLS record surgery for tests that play a client by hand: cookieless
ClientHellos, the cookie a gate expects, a hello carrying a cookie, stray
epoch-0 records, and a half-open handshake (cookie exchange done, then
silence)."""

from __future__ import annotations

import socket
import struct
import time
from typing import Callable

from dtlspeer._engine import Connection, CookieGate, EngineConfig, GateVerdict, Verify
from udp_helpers import until

SECRET = b"takeover test secret, 32 bytes.."


def wall_ms() -> int:
    return int(time.time() * 1000)


def client_config() -> EngineConfig:
    return EngineConfig.client(verify=Verify.NONE, handshake_timeout_ms=(200, 4000), mtu=1200)


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

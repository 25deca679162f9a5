"""dtlspeer's side of the interop tests, written the way a Godot script is:
a ``UDPServer`` + ``DTLSServer`` echo loop, and a ``PacketPeerUDP`` +
``PacketPeerDTLS`` client. Every wait is bounded by a :class:`Deadline`."""

from __future__ import annotations

import re
import time
from typing import Any, Callable, Optional

from peers import Deadline

from dtlspeer import PacketPeerUDP, TLSOptions, UDPServer
from dtlspeer.crypto import CryptoKey, X509Certificate
from dtlspeer.dtls import DTLSServer, PacketPeerDTLS

Status = type(PacketPeerDTLS.STATUS_CONNECTED)  # the Status enum

HANDSHAKE_TIMEOUT = 30.0
ECHO_TIMEOUT = 20.0


class EchoServer:
    """Our DTLS echo server on 127.0.0.1 (free port), driven like a Godot
    script: ``UDPServer.poll()``, ``DTLSServer.take_connection`` for every
    pending peer (keeping the HANDSHAKING ones; the others are the cookie
    exchange), ``poll()`` every peer, echo every packet with ``put_packet``.
    Everything received is kept, in order, in :attr:`received`."""

    def __init__(self, key: CryptoKey, cert: X509Certificate,
                 options: Optional[TLSOptions] = None, **setup: Any) -> None:
        self.udp = UDPServer()
        self.udp.listen(0, "127.0.0.1")
        self.port = self.udp.get_local_port()
        self.dtls = DTLSServer()
        self.dtls.setup(options or TLSOptions.server(key, cert), **setup)
        self.peers: list[PacketPeerDTLS] = []
        self.refused = 0  # take_connection results that were not HANDSHAKING
        self.received: list[bytes] = []

    def step(self) -> None:
        """One iteration of the Godot-style loop (never blocks)."""
        self.udp.poll()
        while self.udp.is_connection_available():
            peer = self.dtls.take_connection(self.udp.take_connection())
            if peer.get_status() == PacketPeerDTLS.STATUS_HANDSHAKING:
                self.peers.append(peer)
            else:
                self.refused += 1
        for peer in self.peers:
            self._serve(peer)

    def _serve(self, peer: PacketPeerDTLS) -> None:
        """Poll one peer and echo what it received."""
        peer.poll()
        if peer.get_status() == PacketPeerDTLS.STATUS_CONNECTED:
            while peer.get_available_packet_count() > 0:
                data = peer.get_packet()
                self.received.append(data)
                peer.put_packet(data)

    def connected(self) -> list[PacketPeerDTLS]:
        return [p for p in self.peers if p.get_status() == PacketPeerDTLS.STATUS_CONNECTED]

    def pump(self) -> None:
        """A step then a short sleep: the ``pump`` handed to peer-output waits."""
        self.step()
        time.sleep(0.001)

    def run_until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        """Step until ``done()`` is true; fail after ``timeout`` seconds."""
        deadline = Deadline(timeout)
        while not done():
            if deadline.expired():
                raise AssertionError(f"our DTLS server: {what} not reached within {timeout:.0f} s; "
                                     f"{self.describe()}")
            self.pump()

    def describe(self) -> str:
        states = ", ".join(f"{p.get_status().name} ({p.get_last_error()!r})" for p in self.peers)
        return f"peers: [{states}], refused {self.refused}, received {len(self.received)}"

    def close(self) -> None:
        for p in self.peers:
            p.disconnect_from_peer()
        self.udp.stop()


class ConnectedEchoServer(EchoServer):
    """The same echo server over ONE connected ``PacketPeerUDP`` (one end of
    a NAT punch: bound, then ``connect_to_host`` to the client's address),
    the way a Godot script serves it: when datagrams are queued and no
    session is in progress, ``DTLSServer.take_connection(udp)``; a result
    that is not HANDSHAKING was the cookie exchange, so the next hello is
    taken again from the same UDP peer."""

    def __init__(self, key: CryptoKey, cert: X509Certificate, client_port: int) -> None:
        self.socket = PacketPeerUDP()
        self.socket.bind(0, "127.0.0.1")
        self.socket.connect_to_host("127.0.0.1", client_port)
        self.port = self.socket.get_local_port()
        self.dtls = DTLSServer()
        self.dtls.setup(TLSOptions.server(key, cert))
        self.peers = []
        self.refused = 0
        self.received = []

    def step(self) -> None:
        live = [p for p in self.peers if p.get_status() in (
            PacketPeerDTLS.STATUS_HANDSHAKING, PacketPeerDTLS.STATUS_CONNECTED)]
        if not live and self.socket.get_available_packet_count() > 0:
            peer = self.dtls.take_connection(self.socket)
            if peer.get_status() == PacketPeerDTLS.STATUS_HANDSHAKING:
                self.peers.append(peer)
            else:
                self.refused += 1
        for peer in live:
            self._serve(peer)

    def close(self) -> None:
        for p in self.peers:
            p.disconnect_from_peer()
        self.socket.close()


def start_client(port: int, hostname: str, options: Optional[TLSOptions],
                 session: Any = None) -> tuple[PacketPeerUDP, PacketPeerDTLS]:
    """Our client's first step: UDP ``connect_to_host`` + ``connect_to_peer``
    (offering a saved ``session`` if given)."""
    udp = PacketPeerUDP()
    udp.connect_to_host("127.0.0.1", port)
    dtls = PacketPeerDTLS()
    dtls.connect_to_peer(udp, hostname, options, session=session)
    return udp, dtls


def finish_handshake(udp: PacketPeerUDP, dtls: PacketPeerDTLS,
                     timeout: float = HANDSHAKE_TIMEOUT) -> Status:
    """Poll until the status leaves HANDSHAKING (bounded); the final status."""
    deadline = Deadline(timeout)
    while dtls.get_status() == PacketPeerDTLS.STATUS_HANDSHAKING:
        if deadline.expired():
            raise AssertionError(f"our client still handshaking after {timeout:.0f} s: "
                                 f"{dtls.get_last_error()!r} {dtls.get_stats()}")
        udp.wait(0.01)
        dtls.poll()
    return dtls.get_status()


def connect_client(port: int, hostname: str, options: Optional[TLSOptions],
                   timeout: float = HANDSHAKE_TIMEOUT) -> tuple[PacketPeerUDP, PacketPeerDTLS]:
    """Our client, connected (fails the test with the reason otherwise)."""
    udp, dtls = start_client(port, hostname, options)
    status = finish_handshake(udp, dtls, timeout)
    assert status == PacketPeerDTLS.STATUS_CONNECTED, \
        f"our client ended {status.name}: {dtls.get_last_error()}"
    return udp, dtls


def receive(udp: PacketPeerUDP, dtls: PacketPeerDTLS, timeout: float = ECHO_TIMEOUT) -> bytes:
    """The next packet our client receives (bounded wait; fails if the
    connection ends meanwhile)."""
    deadline = Deadline(timeout)
    while True:
        dtls.poll()
        if dtls.get_available_packet_count() > 0:
            return dtls.get_packet()
        status = dtls.get_status()
        assert status == PacketPeerDTLS.STATUS_CONNECTED, \
            f"our client went {status.name} while waiting: {dtls.get_last_error()}"
        if deadline.expired():
            raise AssertionError(f"our client: no packet within {timeout:.0f} s")
        udp.wait(0.01)


def echo_all(udp: PacketPeerUDP, dtls: PacketPeerDTLS, messages: list[bytes]) -> None:
    """Send each message and check its echo byte for byte before the next."""
    for i, msg in enumerate(messages):
        dtls.put_packet(msg)
        got = receive(udp, dtls)
        assert got == msg, (
            f"echo {i}: sent {len(msg)} bytes {msg[:40]!r}..., "
            f"got {len(got)} bytes {got[:40]!r}..."
        )


# -- suite names -----------------------------------------------------------------

def mbedtls_suite_from_openssl(name: str) -> str:
    """OpenSSL's name of a DTLS 1.2 ECDHE AEAD suite in Mbed TLS's spelling,
    e.g. ECDHE-ECDSA-AES256-GCM-SHA384 -> TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384."""
    m = re.fullmatch(r"ECDHE-(ECDSA|RSA)-(AES(128|256)-(GCM|CCM8?)-SHA(256|384)|CHACHA20-POLY1305)",
                     name)
    if m is None:
        raise AssertionError(f"unexpected OpenSSL suite {name!r} (not ECDHE + AEAD)")
    auth = m.group(1)
    if m.group(2) == "CHACHA20-POLY1305":
        return f"TLS-ECDHE-{auth}-WITH-CHACHA20-POLY1305-SHA256"
    return f"TLS-ECDHE-{auth}-WITH-AES-{m.group(3)}-{m.group(4)}-SHA{m.group(5)}"

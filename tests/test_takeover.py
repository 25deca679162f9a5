"""Session takeover from a known address (issue 11 item 1, RFC 6347 4.2.8).

A new handshake from an established peer's address must never reset the live
association: the old one lives until the new handshake's Finished is
verified, then the application sees the old peer end and a NEW peer object.
Every epoch-0 ClientHello record goes to the cookie gate, wherever it sits in
the datagram. Both APIs run the same scenarios through a small adapter.

Spoofing the peer's address: the client socket is connected to the server
and bound with SO_REUSEPORT; the "attacker" binds the same address and port
(SO_REUSEPORT) unconnected, so the kernel delivers the server's replies to
the connected client socket, as an off-path attacker would see it. Cookies
are computed with a CookieGate holding the server's shared secret (the
attacker is assumed to have read one, the worst case for the gate).
"""

from __future__ import annotations

import time

import pytest

from _godot_server import GodotServer
from _records import SECRET, SpoofableClient, ccs_epoch0, cookie_for, first_hello, with_cookie
from dtlspeer import (
    DisconnectReason,
    DTLSHost,
    HostEventType,
    HostPeer,
    PacketPeerDTLS,
    TLSOptions,
)
from identities import Identity, make_identity
from udp_helpers import until

Status = PacketPeerDTLS.Status


@pytest.fixture(scope="module")
def ec_identity() -> Identity:
    return make_identity("ec")


def add_ccs_before_cookie_hello(datagram: bytes) -> bytes:
    """The takeover datagram: [epoch-0 CCS][ClientHello with a cookie]."""
    if datagram[0] == 22 and datagram[13] == 1 and len(datagram) > 13 + 12 + 35:
        body = datagram[13 + 12 :]
        sid = body[34]
        if body[35 + sid] != 0:  # carries a cookie
            return ccs_epoch0() + datagram
    return datagram


# ---- the two server APIs behind one adapter ----------------------------------------


class HostSide:
    """DTLSHost server: peers are the HostPeer objects of CONNECT events."""

    def __init__(self, identity: Identity) -> None:
        self.host = DTLSHost(
            "127.0.0.1", 0, server_options=TLSOptions.server(*identity), cookie_secret=SECRET
        )
        self.port = self.host.get_local_port()
        self.connects: list[HostPeer] = []
        self.disconnects: list[tuple[HostPeer, DisconnectReason]] = []
        self.received: dict[int, list[bytes]] = {}

    def step(self) -> None:
        for event in self.host.service(0):
            if event.type == HostEventType.CONNECT:
                self.connects.append(event.peer)
            elif event.type == HostEventType.DISCONNECT:
                self.disconnects.append((event.peer, DisconnectReason(event.reason)))
            elif event.type == HostEventType.RECEIVE:
                self.received.setdefault(id(event.peer), []).append(event.data)

    def received_by(self, peer: PacketPeerDTLS) -> list[bytes]:
        return self.received.get(id(peer), [])

    def ended(self, peer: PacketPeerDTLS) -> bool:
        return any(p is peer and r == DisconnectReason.RECONNECT for p, r in self.disconnects)

    def close(self) -> None:
        self.host.close()


class GodotSide(GodotServer):
    """UDPServer + DTLSServer + PacketPeerDTLS, run like a Godot script."""

    def __init__(self, identity: Identity) -> None:
        super().__init__(identity, cookie_secret=SECRET)

    def ended(self, peer: PacketPeerDTLS) -> bool:
        return peer.get_status() == Status.STATUS_DISCONNECTED

    def close(self) -> None:
        self.stop()


Side = HostSide | GodotSide


def make_side(api: str, identity: Identity) -> Side:
    return HostSide(identity) if api == "host" else GodotSide(identity)


def connected(side: Side) -> list[PacketPeerDTLS]:
    if isinstance(side, HostSide):
        return [p for p in side.connects if p.get_status() == Status.STATUS_CONNECTED]
    return side.connected_peers()


def establish(side: Side) -> tuple[SpoofableClient, PacketPeerDTLS]:
    client = SpoofableClient(side.port)
    client.start()

    def step() -> None:
        side.step()
        client.pump()

    assert until(lambda: client.connected() and len(connected(side)) == 1, step)
    return client, connected(side)[0]


def exchange(side: Side, client: SpoofableClient, peer: PacketPeerDTLS, tag: bytes) -> None:
    """Both directions of the session between ``client`` and ``peer`` work."""
    client.write(b"up " + tag)

    def step() -> None:
        side.step()
        client.pump()

    assert until(lambda: b"up " + tag in side.received_by(peer), step), "server side got nothing"
    peer.put_packet(b"down " + tag)
    assert until(lambda: b"down " + tag in client.received, step), "client got nothing"


APIS = ["host", "godot"]


@pytest.mark.parametrize("api", APIS)
def test_multi_record_hello_does_not_reset_the_live_session(
    api: str, ec_identity: Identity
) -> None:
    """A forged [epoch-0 CCS][ClientHello with a valid cookie] from an
    established peer's address: the live session is untouched (same status,
    records both ways), no new peer appears, nothing reports a reconnect."""
    side = make_side(api, ec_identity)
    client, peer = establish(side)
    try:
        hello = first_hello()
        cookie = cookie_for(client.addr[0], client.addr[1], hello)
        client.forge(ccs_epoch0() + with_cookie(hello, cookie))
        for _ in range(20):
            side.step()
            time.sleep(0.002)
        assert peer.get_status() == Status.STATUS_CONNECTED
        exchange(side, client, peer, b"after forgery")
        assert connected(side) == [peer]
        assert not side.ended(peer)
        # The forged handshake never completes: the old session still lives
        # on, whatever the successor did in the meantime.
        exchange(side, client, peer, b"still")
    finally:
        client.close()
        side.close()


@pytest.mark.parametrize("api", APIS)
def test_reconnect_in_a_multi_record_datagram_is_a_new_peer(
    api: str, ec_identity: Identity
) -> None:
    """The client restarts from the same port and sends its cookie'd hello
    behind an epoch-0 CCS record. The old peer lives until the new Finished
    is verified, then ends (RECONNECT / STATUS_DISCONNECTED) and the new
    session is a NEW peer object."""
    side = make_side(api, ec_identity)
    client, old = establish(side)
    try:
        client.rewrite = add_ccs_before_cookie_hello
        client.start()

        def step() -> None:
            side.step()
            client.pump()

        assert until(lambda: client.connected() and len(connected(side)) == 1
                     and connected(side)[0] is not old, step)
        new = connected(side)[0]
        assert new is not old
        assert until(lambda: side.ended(old), step)
        assert old.get_status() == Status.STATUS_DISCONNECTED
        exchange(side, client, new, b"new session")
        assert side.received_by(old) == []
    finally:
        client.close()
        side.close()


@pytest.mark.parametrize("api", APIS)
def test_old_session_lives_until_the_new_finished(api: str, ec_identity: Identity) -> None:
    """While a reconnecting client's handshake is in flight (its flights are
    held back after the cookie'd hello), the old peer stays CONNECTED."""
    side = make_side(api, ec_identity)
    client, old = establish(side)
    try:
        sent: list[bytes] = []

        def hold_after_hello(datagram: bytes) -> bytes:
            sent.append(datagram)
            return datagram if len(sent) <= 2 else b""

        client.rewrite = hold_after_hello
        client.start()

        def step() -> None:
            side.step()
            client.pump()

        # cookieless hello, cookie'd hello; then the server's flight arrives
        # and the client's answer (its key exchange and Finished) is held.
        assert until(lambda: len(sent) >= 3, step)
        for _ in range(10):
            step()
        assert old.get_status() == Status.STATUS_CONNECTED
        assert not side.ended(old)
        assert connected(side) == [old]
    finally:
        client.close()
        side.close()

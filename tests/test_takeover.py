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

import gc
import time

import pytest

from _godot_server import GodotServer
from _records import SECRET, SpoofableClient, ccs_epoch0, cookie_for, first_hello, with_cookie
from dtlspeer import (
    DisconnectReason,
    DTLSHost,
    DTLSSettings,
    HostEventType,
    HostPeer,
    PacketPeerDTLS,
    TLSOptions,
)
from identities import Identity, make_identity
from udp_helpers import alloc_bytes, until

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

    def __init__(self, identity: Identity, settings: DTLSSettings | None = None) -> None:
        self.host = DTLSHost(
            "127.0.0.1",
            0,
            server_options=TLSOptions.server(*identity),
            cookie_secret=SECRET,
            settings=settings,
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

    def __init__(self, identity: Identity, settings: DTLSSettings | None = None) -> None:
        super().__init__(identity, cookie_secret=SECRET, settings=settings)

    def ended(self, peer: PacketPeerDTLS) -> bool:
        return peer.get_status() == Status.STATUS_DISCONNECTED

    def close(self) -> None:
        self.stop()


Side = HostSide | GodotSide


def make_side(api: str, identity: Identity, settings: DTLSSettings | None = None) -> Side:
    return HostSide(identity, settings) if api == "host" else GodotSide(identity, settings)


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


def is_client_hello(datagram: bytes) -> bool:
    return len(datagram) > 13 and datagram[0] == 22 and datagram[13] == 1


ENDINGS = ["idle_timeout", "closed_locally"]


def end_old_session(side: Side, old: PacketPeerDTLS, ending: str) -> None:
    """The server ends ``old`` by itself (``ending``) and we check it did."""
    if ending == "closed_locally":
        old.disconnect_from_peer()
    assert until(lambda: old.get_status() != Status.STATUS_CONNECTED, side.step)
    if isinstance(side, HostSide):
        reason = (
            DisconnectReason.IDLE_TIMEOUT if ending == "idle_timeout" else DisconnectReason.LOCAL
        )
        assert until(lambda: side.disconnects != [], side.step)
        assert side.disconnects == [(old, reason)]
    elif ending == "idle_timeout":
        assert old.get_status() == Status.STATUS_ERROR
        assert "idle" in old.get_last_error()
    else:
        assert old.get_status() == Status.STATUS_DISCONNECTED


@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize("api", APIS)
def test_reconnect_survives_the_old_session_ending_first(
    api: str, ending: str, ec_identity: Identity
) -> None:
    """The soak's lost reconnect: client A goes silent; B (same address and
    port) gets its cookie'd hello to the server (a successor exists) before
    the server ends A (idle timeout, or the application closes it) while B's
    key exchange is still on its way. B's handshake must go on as an
    ordinary handshaking peer of the address: B connects, the server has a
    NEW peer, A keeps its own reason. Nothing stays allocated."""
    gc.collect()
    baseline = alloc_bytes()
    reconnect_after_the_old_session_ended(api, ending, ec_identity)
    gc.collect()
    assert alloc_bytes() == baseline


def reconnect_after_the_old_session_ended(api: str, ending: str, ec_identity: Identity) -> None:
    idle_ms = 500 if ending == "idle_timeout" else 60_000
    side = make_side(api, ec_identity, DTLSSettings(idle_timeout_ms=idle_ms))
    client, old = establish(side)  # A, silent from now on
    held: list[bytes] = []
    holding = True

    def hold_after_hello(datagram: bytes) -> bytes:
        if holding and not is_client_hello(datagram):
            held.append(datagram)
            return b""
        return datagram

    try:
        client.rewrite = hold_after_hello
        client.start()  # B: a new session from A's address and port

        def step() -> None:
            side.step()
            client.pump()

        # B's cookie'd hello reached the server and its flight came back:
        # the successor exists, B's key exchange is held.
        assert until(lambda: len(held) >= 1, step)
        if isinstance(side, HostSide):
            assert side.host.get_stats()["successors"] == 1
            assert side.disconnects == [], "A ended before B's hello arrived"
        else:
            assert side.udp.get_stats()["successors"] == 1
        assert old.get_status() == Status.STATUS_CONNECTED, "A ended before B's hello arrived"
        end_old_session(side, old, ending)
        # Now B's flight (and its retransmissions) may go.
        holding = False
        for datagram in held:
            client.sock.send(datagram)
        assert until(lambda: client.connected() and len(connected(side)) == 1, step), (
            f"B did not connect: {side.host.get_stats() if isinstance(side, HostSide) else ''}"
        )
        new = connected(side)[0]
        assert new is not old
        exchange(side, client, new, b"after the orphaned handshake")
        assert old.get_status() != Status.STATUS_CONNECTED
        if isinstance(side, HostSide):
            assert [p for p in side.connects if p is not old] == [new]
            assert len(side.disconnects) == 1  # A's, with its own reason
            stats = side.host.get_stats()
            assert stats["successors"] == 1
            assert stats["successors_failed"] == 0
            assert stats["successors_orphaned"] == 1
            assert stats["reconnects"] == 0  # A ended by itself, not by B
    finally:
        client.close()
        side.close()

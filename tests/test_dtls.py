"""PacketPeerDTLS and DTLSServer on loopback sockets, driven the way Godot
scripts drive them (UDPServer.poll, is_connection_available,
take_connection, DTLSServer.take_connection, check HANDSHAKING, poll).

Waits are real time but bounded (udp_helpers.DEADLINE_S); no test asserts
on durations. References are to shared/reference/godot-api.md sections."""

from __future__ import annotations

import gc
import socket
from typing import Any, Callable, Optional

import pytest

from dtlspeer import (
    DTLSServer,
    DTLSSettings,
    PacketPeerDTLS,
    PacketPeerUDP,
    TLSOptions,
    UDPServer,
    errors,
)
from dtlspeer._binding import lib
from identities import Identity, make_identity
from udp_helpers import alloc_bytes, can_inject_icmp, has_ipv6, inject_icmp, until

Status = PacketPeerDTLS.Status
BADCERT_CN_MISMATCH = 0x04
BADCERT_NOT_TRUSTED = 0x08


@pytest.fixture(scope="module")
def ec_identity() -> Identity:
    return make_identity("ec")


@pytest.fixture(scope="module")
def rsa_identity() -> Identity:
    return make_identity("rsa")


class EchoServer:
    """UDPServer + DTLSServer run exactly like a Godot server script."""

    def __init__(
        self,
        identity: Identity,
        bind: str = "127.0.0.1",
        echo: bool = True,
        settings: Optional[DTLSSettings] = None,
        options: Optional[TLSOptions] = None,
        **setup_options: Any,
    ) -> None:
        self.udp = UDPServer()
        self.udp.listen(0, bind)
        self.dtls = DTLSServer()
        self.dtls.setup(options or TLSOptions.server(*identity), settings=settings,
                        **setup_options)
        self.port = self.udp.get_local_port()
        self.peers: list[PacketPeerDTLS] = []
        self.rejected: list[PacketPeerDTLS] = []
        self.echo = echo
        self.received: list[bytes] = []

    def step(self) -> None:
        self.udp.poll()
        while self.udp.is_connection_available():
            udp_peer = self.udp.take_connection()
            assert udp_peer is not None
            peer = self.dtls.take_connection(udp_peer)
            if peer.get_status() == Status.STATUS_HANDSHAKING:
                self.peers.append(peer)
            else:
                self.rejected.append(peer)
        for peer in self.peers:
            peer.poll()
            if self.echo:
                while peer.get_available_packet_count() > 0:
                    data = peer.get_packet()
                    self.received.append(data)
                    peer.put_packet(data)

    def stop(self) -> None:
        for peer in self.peers:
            peer.disconnect_from_peer()
        self.udp.stop()


def connect_client(
    port: int,
    hostname: str = "game.test",
    options: Optional[TLSOptions] = None,
    host: str = "127.0.0.1",
    settings: Optional[DTLSSettings] = None,
) -> PacketPeerDTLS:
    udp = PacketPeerUDP()
    udp.connect_to_host(host, port)
    client = PacketPeerDTLS()
    client.connect_to_peer(udp, hostname, options, settings=settings)
    return client


def run(condition: Callable[[], bool], *parties: object) -> bool:
    """Poll every party (EchoServer or PacketPeerDTLS) until condition holds (bounded)."""

    def step() -> None:
        for party in parties:
            if isinstance(party, EchoServer):
                party.step()
            else:
                party.poll()  # type: ignore[attr-defined]

    return until(condition, step)


def run_handshake(server: EchoServer, client: PacketPeerDTLS) -> PacketPeerDTLS:
    """Run until both sides left HANDSHAKING (either way); the server's peer."""
    assert run(
        lambda: (
            client.get_status() != Status.STATUS_HANDSHAKING
            and len(server.peers) > 0
            and server.peers[-1].get_status() != Status.STATUS_HANDSHAKING
        ),
        server,
        client,
    )
    return server.peers[-1]


def handshake(server: EchoServer, client: PacketPeerDTLS) -> PacketPeerDTLS:
    run_handshake(server, client)
    assert client.get_status() == Status.STATUS_CONNECTED, client.get_last_error()
    peer = server.peers[-1]
    assert peer.get_status() == Status.STATUS_CONNECTED, peer.get_last_error()
    return peer


def test_status_enum_has_godot_names_and_values() -> None:
    """§1.4: enum Status DISCONNECTED 0 .. ERROR_HOSTNAME_MISMATCH 4, also as class attributes."""
    assert [(s.name, int(s)) for s in PacketPeerDTLS.Status] == [
        ("STATUS_DISCONNECTED", 0),
        ("STATUS_HANDSHAKING", 1),
        ("STATUS_CONNECTED", 2),
        ("STATUS_ERROR", 3),
        ("STATUS_ERROR_HOSTNAME_MISMATCH", 4),
    ]
    assert PacketPeerDTLS.STATUS_CONNECTED is Status.STATUS_CONNECTED
    assert PacketPeerDTLS().get_status() == PacketPeerDTLS.STATUS_DISCONNECTED


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_handshake_and_echo_many_messages(
    kind: str, ec_identity: Identity, rsa_identity: Identity
) -> None:
    """§1.4/§1.5: client connect_to_peer + server take_connection; every
    record is delivered (Godot: one per poll, fixed here)."""
    identity = ec_identity if kind == "ec" else rsa_identity
    server = EchoServer(identity)
    client = connect_client(server.port, options=TLSOptions.client(identity[1]))
    peer = handshake(server, client)
    assert ("ECDSA" if kind == "ec" else "RSA") in client.get_ciphersuite()
    assert client.get_ciphersuite() == peer.get_ciphersuite()
    sent = [b"message %d " % i + bytes(i % 50) for i in range(300)]
    received: list[bytes] = []
    for start in range(0, len(sent), 30):  # bursts: several records per poll
        for data in sent[start : start + 30]:
            client.put_packet(data)

        def drain(target: int = start + 30) -> bool:
            while client.get_available_packet_count() > 0:
                received.append(client.get_packet())
            return len(received) >= target

        assert run(drain, server, client), (len(received), client.get_stats())
    assert received == sent  # loopback: nothing lost or reordered
    assert server.received == sent
    assert client.get_stats()["records_out"] == 300
    assert peer.get_stats()["records_in"] == 300
    client.disconnect_from_peer()
    server.stop()


@pytest.mark.parametrize(
    "count, size",
    [(150, 20), (100, 400)],  # above one poll's 64 records; above its 17 KiB buffer
    ids=["many-records", "many-bytes"],
)
def test_one_poll_delivers_a_burst_above_its_share_in_order(
    count: int, size: int, ec_identity: Identity
) -> None:
    """poll() hands over records in batches (dp_link_poll): a burst larger
    than one batch still arrives whole, in order, after ONE poll, with
    get_available_packet_count() exact and get_packet() draining it."""
    server = EchoServer(ec_identity, echo=False)
    client = connect_client(server.port, options=TLSOptions.client(ec_identity[1]))
    peer = handshake(server, client)
    udp_peer = peer._udp
    assert udp_peer is not None
    sent = [b"%04d" % i + bytes(size - 4) for i in range(count)]
    for data in sent:
        client.put_packet(data)
    assert until(lambda: udp_peer.get_available_packet_count() >= count, server.udp.poll)
    peer.poll()
    assert peer.get_available_packet_count() == count
    assert [peer.get_packet() for _ in range(count)] == sent
    assert peer.get_available_packet_count() == 0
    with pytest.raises(errors.WouldBlockError):
        peer.get_packet()
    client.disconnect_from_peer()
    server.stop()


def test_records_poll_moved_out_still_count_against_the_receive_limit(
    ec_identity: Identity,
) -> None:
    """poll() moves records into Python; an application that polls but does
    not read (paused, or one get_packet per frame) must still hold at most
    the 64 KiB receive queue of unread records, the rest dropped and counted
    (README "records not yet read"), not an unbounded deque."""
    server = EchoServer(ec_identity, echo=False)
    client = connect_client(server.port, options=TLSOptions.client(ec_identity[1]))
    peer = handshake(server, client)
    udp_peer = peer._udp
    assert udp_peer is not None
    size, burst = 1000, 40  # 40 KB per burst: two bursts pass the limit
    for _ in range(5):
        for i in range(burst):
            client.put_packet(bytes([i]) * size)
        assert until(lambda: udp_peer.get_available_packet_count() >= burst, server.udp.poll)
        peer.poll()  # never read
    held = peer.get_available_packet_count()
    assert held * (size + 16) <= 64 * 1024, held
    assert peer.get_stats()["dropped_in_full"] == 5 * burst - held
    assert [len(peer.get_packet()) for _ in range(held)] == [size] * held
    client.disconnect_from_peer()
    server.stop()


def test_a_put_packet_racing_disconnect_keeps_the_connection_alive(
    ec_identity: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    """disconnect_from_peer() on another thread between put_packet's checks
    and its native call: the call still holds the connection it passes to C
    (the last other reference is dropped by the disconnect), and the
    disconnect's outcome stands."""
    from dtlspeer import dtls as dtls_module

    server = EchoServer(ec_identity, echo=False)
    client = connect_client(server.port, options=TLSOptions.client(ec_identity[1]))
    handshake(server, client)
    real = dtls_module._link_send

    def racing_send(link: Any, data: bytes, size: int) -> int:
        client.disconnect_from_peer()  # "the other thread", right before the call
        gc.collect()
        return int(real(link, data, size))

    monkeypatch.setattr(dtls_module, "_link_send", racing_send)
    with pytest.raises(errors.StateError):
        client.put_packet(b"x" * 100)  # the connection ended under it: not connected
    assert client.get_status() == Status.STATUS_DISCONNECTED
    assert client.get_last_error() == "closed locally"
    server.stop()


def test_a_poll_racing_disconnect_does_not_overwrite_its_outcome(
    ec_identity: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server peer's poll() whose native call runs after a disconnect on
    another thread released the UDP slot: the peer stays DISCONNECTED,
    "closed locally", with no records (not STATUS_ERROR "socket error")."""
    from dtlspeer import dtls as dtls_module

    server = EchoServer(ec_identity, echo=False)
    client = connect_client(server.port, options=TLSOptions.client(ec_identity[1]))
    peer = handshake(server, client)
    client.put_packet(b"before the close")
    udp_peer = peer._udp
    assert udp_peer is not None
    assert until(lambda: udp_peer.get_available_packet_count() >= 1, server.udp.poll)
    real = dtls_module._link_poll

    def racing_poll(*args: Any) -> int:
        peer.disconnect_from_peer()
        gc.collect()
        return int(real(*args))

    monkeypatch.setattr(dtls_module, "_link_poll", racing_poll)
    peer.poll()
    assert peer.get_status() == Status.STATUS_DISCONNECTED
    assert peer.get_last_error() == "closed locally"
    assert peer.get_available_packet_count() == 0
    client.disconnect_from_peer()
    server.stop()


def test_a_status_change_is_reported_again_until_the_binding_applied_it(
    ec_identity: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If applying a poll's outcome fails once (an exception in _absorb),
    the next poll reports the same change again instead of leaving the
    peer in its old status for good."""
    server = EchoServer(ec_identity)
    client = connect_client(server.port, options=TLSOptions.client(ec_identity[1]))
    real = PacketPeerDTLS._absorb
    failed: list[bool] = []

    def absorb_once_failing(self: PacketPeerDTLS, res: Any) -> None:
        if self is client and res.status == lib.DP_STATUS_CONNECTED and not failed:
            failed.append(True)
            raise RuntimeError("interrupted while applying the status")
        real(self, res)

    monkeypatch.setattr(PacketPeerDTLS, "_absorb", absorb_once_failing)

    def step() -> None:
        server.step()
        try:
            client.poll()
        except RuntimeError:
            pass

    assert until(lambda: client.get_status() == Status.STATUS_CONNECTED, step)
    assert failed == [True]
    client.disconnect_from_peer()
    server.stop()


def test_cookie_exchange_flow_as_godot_scripts_see_it(ec_identity: Identity) -> None:
    """§2.3/§2.4 "50% of connections invalid due to cookie": the first
    take_connection is STATUS_ERROR (HelloVerifyRequest sent, no TLS state),
    its UDP peer is released, and the cookied ClientHello arrives as a new
    pending connection that take_connection returns HANDSHAKING."""
    udp_server = UDPServer()
    udp_server.listen(0, "127.0.0.1")
    dtls = DTLSServer()
    dtls.setup(TLSOptions.server(*ec_identity))
    client = connect_client(udp_server.get_local_port(), options=TLSOptions.client(ec_identity[1]))
    statuses: list[Status] = []
    udp_peers: list[PacketPeerUDP] = []
    peers: list[PacketPeerDTLS] = []

    def step() -> None:
        udp_server.poll()
        if udp_server.is_connection_available():
            udp_peer = udp_server.take_connection()
            assert udp_peer is not None
            udp_peers.append(udp_peer)
            peer = dtls.take_connection(udp_peer)
            statuses.append(peer.get_status())
            if peer.get_status() == Status.STATUS_HANDSHAKING:
                peers.append(peer)
        client.poll()
        for peer in peers:
            peer.poll()

    assert until(
        lambda: (
            client.get_status() == Status.STATUS_CONNECTED
            and peers[0].get_status() == Status.STATUS_CONNECTED
        ),
        step,
    )
    assert statuses == [Status.STATUS_ERROR, Status.STATUS_HANDSHAKING]
    assert not udp_peers[0].is_bound()  # released: the address was unknown again
    assert udp_peers[1].is_bound()
    stats = dtls.get_stats()
    assert stats["cookies_sent"] == 1
    assert stats["admitted"] == 1
    assert stats["connections_created"] == 1
    udp_server.stop()


def test_hostname_mismatch_is_reported_as_such(ec_identity: Identity) -> None:
    """§2.4: Godot reports a real name mismatch as plain STATUS_ERROR
    (-9984); we report STATUS_ERROR_HOSTNAME_MISMATCH with the reason."""
    server = EchoServer(ec_identity)
    client = connect_client(
        server.port, hostname="other.test", options=TLSOptions.client(ec_identity[1])
    )
    assert run(lambda: client.get_status() != Status.STATUS_HANDSHAKING, server, client)
    assert client.get_status() == Status.STATUS_ERROR_HOSTNAME_MISMATCH
    assert client.get_verify_flags() & BADCERT_CN_MISMATCH
    assert "certificate verification failed" in client.get_last_error()
    assert "CN" in client.get_last_error() or "name" in client.get_last_error().lower()
    # common_name_override fixes it (§1.6).
    fixed = connect_client(
        server.port,
        hostname="other.test",
        options=TLSOptions.client(ec_identity[1], common_name_override="game.test"),
    )
    handshake(server, fixed)
    server.stop()


def test_untrusted_certificate_fails_with_readable_reason(ec_identity: Identity) -> None:
    """§3 (#59080, godot-proposals#3590): verification errors are readable."""
    server = EchoServer(ec_identity)
    _, stranger = make_identity("ec")
    client = connect_client(server.port, options=TLSOptions.client(stranger))
    assert run(lambda: client.get_status() != Status.STATUS_HANDSHAKING, server, client)
    assert client.get_status() == Status.STATUS_ERROR
    assert client.get_verify_flags() & BADCERT_NOT_TRUSTED
    reason = client.get_last_error()
    assert "certificate verification failed" in reason and "trusted" in reason.lower()
    assert client.get_error_code() == -0x2700
    # Nothing stale: no packets, put_packet refused, status stays.
    assert client.get_available_packet_count() == 0
    with pytest.raises(errors.StateError):
        client.put_packet(b"x")
    server.stop()


def test_client_unsafe_accepts_any_certificate_and_name(ec_identity: Identity) -> None:
    """§2.5 client_unsafe(): VERIFY_NONE without a chain, no name check with one."""
    server = EchoServer(ec_identity)
    handshake(server, connect_client(server.port, hostname="", options=TLSOptions.client_unsafe()))
    handshake(
        server,
        connect_client(
            server.port, hostname="wrong.name", options=TLSOptions.client_unsafe(ec_identity[1])
        ),
    )
    _, stranger = make_identity("ec")
    bad = connect_client(server.port, hostname="", options=TLSOptions.client_unsafe(stranger))
    assert run(lambda: bad.get_status() != Status.STATUS_HANDSHAKING, server, bad)
    assert bad.get_status() == Status.STATUS_ERROR  # a chain given is still verified
    server.stop()


def test_close_notify_from_client_and_from_server(ec_identity: Identity) -> None:
    """§2.4 Closing: disconnect_from_peer sends close_notify; the other side
    becomes DISCONNECTED. Records sent before the close stay readable."""
    server = EchoServer(ec_identity, echo=False)
    client = connect_client(server.port, options=TLSOptions.client(ec_identity[1]))
    peer = handshake(server, client)
    client.put_packet(b"last words")
    client.disconnect_from_peer()
    assert client.get_status() == Status.STATUS_DISCONNECTED
    assert run(lambda: peer.get_status() == Status.STATUS_DISCONNECTED, server)
    assert "close_notify" in peer.get_last_error()
    assert peer.get_available_packet_count() == 1
    assert peer.get_packet() == b"last words"
    with pytest.raises(errors.StateError):
        peer.get_packet()  # not connected and nothing left (Godot: ERR_UNCONFIGURED)
    with pytest.raises(errors.StateError):
        peer.put_packet(b"too late")

    client2 = connect_client(server.port, options=TLSOptions.client(ec_identity[1]))
    peer2 = handshake(server, client2)
    peer2.disconnect_from_peer()
    assert run(lambda: client2.get_status() == Status.STATUS_DISCONNECTED, client2)
    assert "close_notify" in client2.get_last_error()
    server.stop()


def test_records_after_close_are_not_delivered(ec_identity: Identity) -> None:
    """After a local disconnect nothing more is received; the server's slot is
    released, so a datagram from that address is a new (rejected) peer."""
    server = EchoServer(ec_identity, echo=False)
    client = connect_client(server.port, options=TLSOptions.client(ec_identity[1]))
    peer = handshake(server, client)
    udp = client._udp
    assert udp is not None
    peer.disconnect_from_peer()
    assert peer.get_available_packet_count() == 0
    client.put_packet(b"after close")  # the client has not seen the close yet
    assert run(lambda: client.get_status() == Status.STATUS_DISCONNECTED, server, client)
    assert peer.get_available_packet_count() == 0
    assert server.received == []
    server.stop()


def test_put_packet_limits(ec_identity: Identity) -> None:
    """§2.4 put_packet: one record per call, empty sends nothing, too large
    raises (Godot: fails above ~16 KB; we enforce the real MTU limit)."""
    server = EchoServer(ec_identity)
    client = connect_client(server.port, options=TLSOptions.client(ec_identity[1]))
    handshake(server, client)
    limit = client.get_max_packet_size()
    assert 1000 < limit < 1200  # MTU 1200 minus the record expansion
    before = client.get_stats()["records_out"]
    client.put_packet(b"")
    assert client.get_stats()["records_out"] == before
    with pytest.raises(errors.InvalidArgumentError):
        client.put_packet(bytes(limit + 1))
    client.put_packet(bytes(limit))
    assert run(lambda: client.get_available_packet_count() == 1, server, client)
    assert client.get_packet() == bytes(limit)
    with pytest.raises(errors.WouldBlockError):
        client.get_packet()
    with pytest.raises(errors.ArgumentTypeError):
        client.put_packet("text")  # type: ignore[arg-type]
    capped = connect_client(
        server.port,
        options=TLSOptions.client(ec_identity[1]),
        settings=DTLSSettings(max_packet_size=100),
    )
    handshake(server, capped)
    assert capped.get_max_packet_size() == 100
    with pytest.raises(errors.InvalidArgumentError):
        capped.put_packet(bytes(101))
    server.stop()


def test_icmp_port_unreachable_becomes_an_error_status() -> None:
    """§2.4: ICMP port unreachable ends the handshake (Godot: STATUS_ERROR via
    a socket error); we add a readable reason and never raise."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = connect_client(port, options=TLSOptions.client_unsafe())
    assert run(lambda: client.get_status() != Status.STATUS_HANDSHAKING, client)
    assert client.get_status() == Status.STATUS_ERROR
    assert "unreachable" in client.get_last_error()


@pytest.mark.skipif(not can_inject_icmp(), reason="forging ICMP needs a raw socket (root)")
@pytest.mark.parametrize("kind", ["port unreachable", "protocol unreachable", "host isolated"])
def test_forged_icmp_after_the_handshake_is_only_counted(ec_identity: Identity, kind: str) -> None:
    """Issue 11.3: ICMP is unauthenticated. After the handshake a forged
    port unreachable (or any other ICMP error) is counted and shown in
    get_last_error(); the session lives on (Godot ends it: STATUS_ERROR)."""
    server = EchoServer(ec_identity)
    client = connect_client(server.port, options=TLSOptions.client_unsafe())
    handshake(server, client)
    udp = client._udp
    assert udp is not None and udp._ep is not None
    me = udp._ep.sock.getsockname()
    for _ in range(2):
        before = udp.get_stats()["recv_errors"]
        inject_icmp(me, ("127.0.0.1", server.port), kind)
        assert run(lambda: udp.get_stats()["recv_errors"] > before, server, client)  # noqa: B023
        client.poll()
        assert client.get_status() == Status.STATUS_CONNECTED, client.get_last_error()
    assert client.get_stats()["icmp_ignored"] == 2
    assert "ICMP" in client.get_last_error() and kind in client.get_last_error()
    client.put_packet(b"still talking")
    assert run(lambda: client.get_available_packet_count() > 0, server, client)
    assert client.get_packet() == b"still talking"
    assert client.get_status() == Status.STATUS_CONNECTED
    server.stop()


def test_handshake_gives_up_on_a_silent_server() -> None:
    """§2.4: Godot retries for ~123 s; our retransmission timers are settings."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        client = connect_client(
            silent.getsockname()[1],
            options=TLSOptions.client_unsafe(),
            settings=DTLSSettings(handshake_timeout_min_ms=20, handshake_timeout_max_ms=80),
        )
        assert run(lambda: client.get_status() != Status.STATUS_HANDSHAKING, client)
        assert client.get_status() == Status.STATUS_ERROR
        assert "timed out" in client.get_last_error()
        assert client.get_stats()["datagrams_out"] > 1  # retransmitted first


@pytest.mark.parametrize("cookie_secret", [None, bytes(range(32))], ids=["random", "shared"])
def test_idle_connected_peer_times_out(
    ec_identity: Identity, cookie_secret: Optional[bytes]
) -> None:
    """§3 (#98358): Godot never times out a connected peer; idle_timeout_ms
    does, also when a shared cookie secret puts the server on the wall clock."""
    server = EchoServer(ec_identity)
    server.dtls.setup(
        TLSOptions.server(*ec_identity),
        settings=DTLSSettings(idle_timeout_ms=200),
        cookie_secret=cookie_secret,
    )
    client = connect_client(server.port, options=TLSOptions.client(ec_identity[1]))
    peer = handshake(server, client)
    # Issue 11: connection timers run on the monotonic clock even with a
    # shared secret (only the cookie gate reads the wall clock).
    assert peer._conn is not None
    due = peer._conn.next_timeout()
    assert due is not None and 0 <= due - int(lib.dp_clock_ms(0)) <= 200, due
    assert run(lambda: peer.get_status() != Status.STATUS_CONNECTED, server)
    assert peer.get_status() == Status.STATUS_ERROR
    assert "idle timeout" in peer.get_last_error()
    server.stop()


@pytest.mark.parametrize("park_after_ms", [0, 50], ids=["active", "parked"])
def test_server_idle_timeout_tells_the_client(ec_identity: Identity, park_after_ms: int) -> None:
    """Issue 11 (dead peers): when the server's idle timeout ends a peer it
    sends close_notify (a parked peer gets its keys back for it), so the
    Godot-style client sees STATUS_DISCONNECTED at once instead of waiting
    for its own idle timeout (60 s by default)."""
    server = EchoServer(ec_identity)
    server.dtls.setup(
        TLSOptions.server(*ec_identity),
        settings=DTLSSettings(idle_timeout_ms=300, park_after_ms=park_after_ms),
    )
    client = connect_client(server.port, options=TLSOptions.client(ec_identity[1]))
    peer = handshake(server, client)
    client.put_packet(b"one record, then silence")  # lets the server park
    assert run(lambda: peer.get_status() != Status.STATUS_CONNECTED, server, client)
    assert run(lambda: client.get_status() != Status.STATUS_CONNECTED, server, client)
    assert client.get_status() == Status.STATUS_DISCONNECTED
    assert "close_notify" in client.get_last_error()
    assert "idle timeout" in peer.get_last_error() and "close_notify" in peer.get_last_error()
    server.stop()


def test_client_learns_that_its_server_vanished(ec_identity: Identity) -> None:
    """Issue 11 (dead peers): clients have an idle timeout too (the same
    DTLSSettings default, 60 s): a server that disappears without a word is
    noticed (Godot: never)."""
    server = EchoServer(ec_identity)
    client = connect_client(
        server.port,
        options=TLSOptions.client(ec_identity[1]),
        settings=DTLSSettings(idle_timeout_ms=300),
    )
    handshake(server, client)
    assert DTLSSettings().idle_timeout_ms == 60_000  # on by default, both roles
    server.udp.stop()  # gone: no close_notify, no ICMP (nothing polls)
    assert run(lambda: client.get_status() != Status.STATUS_CONNECTED, client)
    assert client.get_status() == Status.STATUS_ERROR
    assert "idle timeout" in client.get_last_error()


def test_idle_server_peer_parks_and_wakes_transparently(ec_identity: Identity) -> None:
    """Ours (no Godot equivalent): park_after_ms serializes an idle server
    connection (~1 KB instead of ~36 KB) and the next record wakes it; the
    client notices nothing and the echo continues."""
    server = EchoServer(ec_identity)
    server.dtls.setup(TLSOptions.server(*ec_identity), settings=DTLSSettings(park_after_ms=50))
    client = connect_client(server.port, options=TLSOptions.client(ec_identity[1]))
    peer = handshake(server, client)
    trims = lib.dp_trim_count()
    for round_no in range(3):
        message = f"before park {round_no}".encode()
        client.put_packet(message)
        assert run(lambda: client.get_available_packet_count() == 1, server, client)
        assert client.get_packet() == message
        parks = peer.get_stats()["parks"]
        # The server parks once the peer has been silent for 50 ms.
        assert run(lambda parks=parks: peer.get_stats()["parks"] > parks, server, client)
        assert peer.get_status() == Status.STATUS_CONNECTED
    assert peer.get_stats()["unparks"] >= 2
    # The freed context goes back to the system from this (Godot-style) path
    # too, not only from DTLSHost: polls trim after parks, at most once a second.
    assert run(lambda: lib.dp_trim_count() > trims, server, client)
    with pytest.raises(errors.InvalidArgumentError):
        DTLSSettings(park_after_ms=-1)
    with pytest.raises(errors.ArgumentTypeError):
        DTLSSettings(park_after_ms=1.5)  # type: ignore[arg-type]
    server.stop()


@pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback on this machine")
def test_ipv6_loopback(ec_identity: Identity) -> None:
    """IPv4 and IPv6: a handshake and echo over ::1, name = IP SAN."""
    server = EchoServer(ec_identity, bind="::1")
    client = connect_client(
        server.port, hostname="::1", host="::1", options=TLSOptions.client(ec_identity[1])
    )
    handshake(server, client)
    client.put_packet(b"v6")
    assert run(lambda: client.get_available_packet_count() == 1, server, client)
    assert client.get_packet() == b"v6"
    assert client.get_peer_address() == ("::1", server.port)
    server.stop()


def test_local_misuse_raises(ec_identity: Identity) -> None:
    """§1.4/§1.5 errors: unconnected UDP peer and wrong option kinds are
    ERR_INVALID_PARAMETER in Godot: InvalidArgumentError here."""
    client = PacketPeerDTLS()
    with pytest.raises(errors.InvalidArgumentError):
        client.connect_to_peer(PacketPeerUDP(), "game.test", TLSOptions.client_unsafe())
    udp = PacketPeerUDP()
    udp.connect_to_host("127.0.0.1", 9)
    with pytest.raises(errors.InvalidArgumentError):
        client.connect_to_peer(udp, "game.test", TLSOptions.server(*ec_identity))
    with pytest.raises(errors.InvalidArgumentError):
        client.connect_to_peer(udp, "", TLSOptions.client(ec_identity[1]))
    with pytest.raises(errors.ArgumentTypeError):
        client.connect_to_peer("udp", "game.test")  # type: ignore[arg-type]
    with pytest.raises(errors.StateError):
        client.put_packet(b"x")
    with pytest.raises(errors.StateError):
        client.get_packet()
    assert client.get_available_packet_count() == 0
    assert client.get_max_packet_size() == 0
    client.disconnect_from_peer()  # harmless when not connected
    udp.close()

    dtls = DTLSServer()
    with pytest.raises(errors.StateError):
        dtls.take_connection(PacketPeerUDP())
    with pytest.raises(errors.InvalidArgumentError):
        dtls.setup(TLSOptions.client_unsafe())
    with pytest.raises(errors.InvalidArgumentError):
        dtls.setup(None)  # type: ignore[arg-type]
    dtls.setup(TLSOptions.server(*ec_identity))
    with pytest.raises(errors.InvalidArgumentError):
        dtls.take_connection(PacketPeerUDP())  # not from a UDPServer
    with pytest.raises(errors.InvalidArgumentError):
        DTLSSettings(mtu=10)
    with pytest.raises(errors.InvalidArgumentError):
        dtls.setup(TLSOptions.server(*ec_identity), cookie_secret=b"short")


def test_second_setup_replaces_the_configuration(
    ec_identity: Identity, rsa_identity: Identity
) -> None:
    """§2.3 "Setting up twice" fails in Godot; here it replaces the config for
    new connections while live ones keep theirs."""
    server = EchoServer(ec_identity)
    first = connect_client(server.port, options=TLSOptions.client(ec_identity[1]))
    old_peer = handshake(server, first)
    server.dtls.setup(TLSOptions.server(*rsa_identity))
    second = connect_client(server.port, options=TLSOptions.client(rsa_identity[1]))
    handshake(server, second)
    assert "RSA" in second.get_ciphersuite()
    first.put_packet(b"still here")
    assert run(lambda: first.get_available_packet_count() == 1, server, first)
    assert old_peer.get_status() == Status.STATUS_CONNECTED
    server.stop()


def test_client_port_reuse_is_a_new_authenticated_connection(ec_identity: Identity) -> None:
    """A client restarting from the same address and port (RFC 6347 4.2.8):
    the old server peer ends DISCONNECTED with a reason, and the new session
    arrives as a new connection on the UDPServer after a full handshake."""
    server = EchoServer(ec_identity)
    client = connect_client(server.port, options=TLSOptions.client(ec_identity[1]))
    old_peer = handshake(server, client)
    assert client._udp is not None
    local_port = client._udp.get_local_port()
    client._udp.close()  # the client process "crashes": no close_notify
    udp = PacketPeerUDP()
    udp.bind(local_port, "127.0.0.1")
    udp.connect_to_host("127.0.0.1", server.port)
    again = PacketPeerDTLS()
    again.connect_to_peer(udp, "game.test", TLSOptions.client(ec_identity[1]))
    # Its cookieless ClientHello only earns a HelloVerifyRequest from the
    # endpoint's gate (stateless, in C): anyone could send that from a
    # spoofed address, so the session lives on.
    assert run(lambda: server.udp.get_stats()["hvr_sent"] == 1, server)
    assert old_peer.get_status() == Status.STATUS_CONNECTED
    new_peer = handshake(server, again)
    assert new_peer is not old_peer
    # The old peer ends on its next poll after the new Finished was verified.
    assert run(lambda: old_peer.get_status() == Status.STATUS_DISCONNECTED, server)
    assert "new session" in old_peer.get_last_error()
    again.put_packet(b"fresh")
    assert run(lambda: again.get_available_packet_count() == 1, server, again)
    assert again.get_packet() == b"fresh"
    assert server.dtls.get_stats()["connections_created"] == 2
    server.stop()


# ---- bad input on the server port ----------------------------------------------


def capture_client_hello() -> bytes:
    """The first datagram a PacketPeerDTLS client sends (a cookieless ClientHello)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fake:
        fake.bind(("127.0.0.1", 0))
        fake.settimeout(3)
        client = connect_client(fake.getsockname()[1], options=TLSOptions.client_unsafe())
        hello, _ = fake.recvfrom(65535)
        client.disconnect_from_peer()
    assert hello[0] == 22 and hello[13] == 1
    return hello


def drain_server(server: EchoServer) -> None:
    for _ in range(20):
        if server.udp.poll() == 0 and not server.udp.is_connection_available():
            return
        server.step()


@pytest.mark.parametrize("kind", ["garbage", "truncated", "oversized"])
def test_bad_datagrams_create_no_connection(kind: str, ec_identity: Identity) -> None:
    """Bad input: garbage, truncated hellos and an oversized
    ClientHello are dropped by the gate; take_connection still returns an
    object (STATUS_ERROR); the server keeps working."""
    server = EchoServer(ec_identity)
    hello = capture_client_hello()
    payloads = {
        "garbage": [b"\x00", b"\xff" * 100, bytes(range(256)) * 4],
        "truncated": [hello[:n] for n in (1, 5, 13, 14, 20, len(hello) // 2, len(hello) - 1)],
        "oversized": [
            hello[:11] + (60000).to_bytes(2, "big") + hello[13:] + bytes(60000 - len(hello) + 13),
            hello + bytes(30000),
        ],
    }[kind]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
        attacker.bind(("127.0.0.1", 0))
        for data in payloads:
            attacker.sendto(data, ("127.0.0.1", server.port))
            assert run(
                lambda: len(server.rejected) > 0 or server.udp.get_stats()["packets_in"] > 0, server
            )
            drain_server(server)
    assert server.peers == []
    assert server.dtls.get_stats()["connections_created"] == 0
    assert all(p.get_status() == Status.STATUS_ERROR for p in server.rejected)
    handshake(server, connect_client(server.port, options=TLSOptions.client(ec_identity[1])))
    server.stop()


def test_spoofed_client_hello_flood_costs_no_memory(ec_identity: Identity) -> None:
    """The cookie gate: thousands of ClientHellos from distinct loopback
    addresses/ports each get a HelloVerifyRequest; no TLS connection is
    created and the native heap stays flat. A real client still gets in."""
    server = EchoServer(ec_identity)
    server.udp.max_pending_connections = 256
    hello = capture_client_hello()

    def flood(sources: int, first_octet: int) -> None:
        sent = 0
        for i in range(sources):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((f"127.{first_octet}.{i // 250}.{1 + i % 250}", 0))
                s.sendto(hello, ("127.0.0.1", server.port))
                sent += 1
            if sent % 100 == 0:
                drain_server(server)
        drain_server(server)

    flood(300, 1)  # warm-up: lazy allocations (hash table, queues) happen here
    gc.collect()
    baseline = alloc_bytes()
    flood(2000, 2)
    server.rejected.clear()
    gc.collect()
    assert alloc_bytes() <= baseline
    stats = server.dtls.get_stats()
    assert stats["connections_created"] == 0
    assert stats["cookies_sent"] >= 1000  # (the kernel may drop some under load)
    assert server.peers == []
    handshake(server, connect_client(server.port, options=TLSOptions.client(ec_identity[1])))
    server.stop()


def test_no_native_memory_left_after_a_session(ec_identity: Identity) -> None:
    """Every allocation is owned and freed: a full session (handshake, data,
    close, server stop) returns dp_alloc_stats to its baseline."""

    def session() -> None:
        server = EchoServer(ec_identity)
        client = connect_client(server.port, options=TLSOptions.client(ec_identity[1]))
        handshake(server, client)
        client.put_packet(b"ping")
        assert run(lambda: client.get_available_packet_count() == 1, server, client)
        client.disconnect_from_peer()
        server.stop()

    session()  # warm-up (per-process caches)
    gc.collect()
    baseline = alloc_bytes()
    session()
    gc.collect()
    assert alloc_bytes() == baseline


def test_cookie_is_bound_to_the_client_address(ec_identity: Identity) -> None:
    """§2.3 client transport ID: a ClientHello with a valid cookie replayed
    from other addresses is rejected and creates no connection."""
    server = EchoServer(ec_identity)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as proxy:
        proxy.bind(("127.0.0.1", 0))
        proxy.setblocking(False)
        client = connect_client(proxy.getsockname()[1], options=TLSOptions.client(ec_identity[1]))
        client_addr: list[tuple[str, int]] = []
        hellos: list[bytes] = []

        def relay() -> None:  # client <-> proxy <-> server, recording ClientHellos
            for _ in range(64):
                try:
                    data, addr = proxy.recvfrom(65535)
                except BlockingIOError:
                    return
                if addr[1] == server.port:
                    proxy.sendto(data, client_addr[0])
                else:
                    client_addr[:] = [addr]
                    if data[0] == 22 and data[13] == 1:
                        hellos.append(data)
                    proxy.sendto(data, ("127.0.0.1", server.port))

        assert run(
            lambda: (relay(), client.get_status() == Status.STATUS_CONNECTED)[1], server, client
        )
    assert len(hellos) >= 2  # cookieless, then with the cookie
    rejected = len(server.rejected)
    pending = server.udp.get_stats()["pending_created"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as replayer:
        replayer.bind(("127.0.0.3", 0))
        replayer.sendto(hellos[-1], ("127.0.0.1", server.port))
        # Judged by the endpoint's gate before any pending peer exists.
        assert run(lambda: server.dtls.get_stats()["cookies_rejected"] == 1, server)
    stats = server.dtls.get_stats()
    assert stats["connections_created"] == 1
    assert len(server.rejected) == rejected
    assert server.udp.get_stats()["pending_created"] == pending
    server.stop()


def test_server_peer_put_packet_after_its_udp_server_stopped(ec_identity: Identity) -> None:
    """A server-side peer whose UDPServer stopped cannot send: StateError and
    STATUS_ERROR with a reason, never a write through a closed socket (the
    per-packet path checks the endpoint on every call)."""
    server = EchoServer(ec_identity, echo=False)
    client = connect_client(server.port, options=TLSOptions.client(ec_identity[1]))
    handshake(server, client)
    peer = server.peers[0]
    peer.put_packet(b"before")
    assert run(lambda: client.get_available_packet_count() == 1, server, client)
    server.udp.stop()
    with pytest.raises(errors.StateError):
        peer.put_packet(b"after")
    assert peer.get_status() == Status.STATUS_ERROR
    assert "closed" in peer.get_last_error()
    client.disconnect_from_peer()

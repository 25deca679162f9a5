"""Session resumption (RFC 5077 tickets, issue 14 section 1) between our own
clients and servers, over the Godot-style classes, DTLSHost and aio: shared
and foreign ticket keys, rotation, expiry, forged tickets from the network
and malformed sessions from the user. Interop with OpenSSL and GnuTLS is in
tests/interop/test_sessions.py."""

from __future__ import annotations

import asyncio
import pickle
import threading

import pytest

from _dtls_sim import Link
from _host_clients import PSK_IDENTITY, PSK_KEY
from dtlspeer import (
    DTLSHost,
    HostEventType,
    PacketPeerDTLS,
    PacketPeerUDP,
    Session,
    SessionTicketKeys,
    TLSOptions,
    aio,
    errors,
)
from dtlspeer._engine import CookieGate, EngineConfig, EngineStatus, Verify
from dtlspeer.host import HostPeer
from identities import Identity, make_identity
from test_dtls import EchoServer, handshake, run
from test_host import Recorder

Status = PacketPeerDTLS.Status


@pytest.fixture(scope="module")
def identity() -> Identity:
    return make_identity("ec")


def client_options(identity: Identity) -> TLSOptions:
    return TLSOptions.client(identity[1])


def godot_connect(server: EchoServer, identity: Identity,
                  session: Session | bytes | None = None) -> tuple[PacketPeerDTLS, PacketPeerDTLS]:
    """Our Godot-style client connected to ``server``: (client, server peer)."""
    udp = PacketPeerUDP()
    udp.connect_to_host("127.0.0.1", server.port)
    client = PacketPeerDTLS()
    client.connect_to_peer(udp, "game.test", client_options(identity), session=session)
    peer = handshake(server, client)
    return client, peer


def echo_once(server: EchoServer, client: PacketPeerDTLS, payload: bytes) -> None:
    client.put_packet(payload)
    got: list[bytes] = []

    def received() -> bool:
        while client.get_available_packet_count() > 0:
            got.append(client.get_packet())
        return payload in got

    assert run(received, server, client)


def first_session(server: EchoServer, identity: Identity) -> Session:
    client, _ = godot_connect(server, identity)
    assert not client.is_session_resumed()
    session = client.get_session()
    assert session is not None
    client.disconnect_from_peer()
    return session


# ---- our client <-> our server ---------------------------------------------------


def test_godot_style_client_resumes_and_both_sides_report_it(identity: Identity) -> None:
    """A full handshake, then a resumed one with its session: both peers say
    resumed, data flows both ways, the server's keys count one accepted."""
    server = EchoServer(identity)
    try:
        session = first_session(server, identity)
        client, peer = godot_connect(server, identity, session=session)
        assert client.is_session_resumed() and peer.is_session_resumed()
        echo_once(server, client, b"after resumption")
        stats = server.dtls._tickets.get_stats()  # type: ignore[union-attr]
        assert stats["issued"] >= 1 and stats["accepted"] == 1 and stats["rejected"] == 0
        client.disconnect_from_peer()
        # The session stays readable after the end, and resumes again.
        again, peer2 = godot_connect(server, identity, session=client.get_session())
        assert again.is_session_resumed() and peer2.is_session_resumed()
    finally:
        server.stop()


def test_session_round_trips_through_bytes_and_pickle(identity: Identity) -> None:
    server = EchoServer(identity)
    try:
        session = first_session(server, identity)
        restored = Session.from_bytes(session.to_bytes())
        assert pickle.loads(pickle.dumps(session)).to_bytes() == session.to_bytes()
        client, _ = godot_connect(server, identity, session=restored.to_bytes())
        assert client.is_session_resumed()
    finally:
        server.stop()


def test_server_without_tickets_runs_a_full_handshake(identity: Identity) -> None:
    """ticket_keys=False: no ticket is issued; an offered session is not resumed."""
    with_tickets = EchoServer(identity)
    without = EchoServer(identity, ticket_keys=False)
    try:
        session = first_session(with_tickets, identity)
        client, peer = godot_connect(without, identity, session=session)
        assert not client.is_session_resumed() and not peer.is_session_resumed()
        assert without.dtls._tickets is None
    finally:
        with_tickets.stop()
        without.stop()


def test_host_client_resumes(identity: Identity) -> None:
    """DTLSHost.connect(session=...) against a DTLSHost server; HostPeer reports it."""
    server = DTLSHost("127.0.0.1", 0, server_options=TLSOptions.server(*identity))
    client = DTLSHost("127.0.0.1", 0, client_options=client_options(identity))
    rec = Recorder(server, client)
    try:
        first = client.connect("127.0.0.1", server.get_local_port(), "game.test")
        assert rec.run(lambda: len(rec.of(server, HostEventType.CONNECT)) == 1)
        assert rec.run(lambda: first.get_status() == Status.STATUS_CONNECTED)
        session = first.get_session()
        assert session is not None and not first.is_session_resumed()
        first.disconnect_from_peer()
        assert rec.run(lambda: len(rec.of(server, HostEventType.DISCONNECT)) == 1
                       and len(rec.of(client, HostEventType.DISCONNECT)) == 1)
        rec.step()  # the ended entry is released: the address is free again
        assert first.get_session() is not None  # kept after the end
        second = client.connect("127.0.0.1", server.get_local_port(), "game.test",
                                session=session)
        assert rec.run(lambda: len(rec.of(server, HostEventType.CONNECT)) == 2)
        assert rec.run(lambda: second.get_status() == Status.STATUS_CONNECTED)
        assert second.is_session_resumed()
        assert rec.of(server, HostEventType.CONNECT)[-1].peer.is_session_resumed()
    finally:
        client.close()
        server.close()


def test_psk_host_client_resumes() -> None:
    """PSK servers issue tickets too; a PSK client resumes (no key exchange)."""
    server = DTLSHost("127.0.0.1", 0, server_psk={PSK_IDENTITY: PSK_KEY})
    client = DTLSHost("127.0.0.1", 0, client_psk=(PSK_IDENTITY, PSK_KEY))
    rec = Recorder(server, client)
    try:
        first = client.connect("127.0.0.1", server.get_local_port())
        assert rec.run(lambda: first.get_status() == Status.STATUS_CONNECTED)
        session = first.get_session()
        first.disconnect_from_peer()
        assert rec.run(lambda: len(rec.of(client, HostEventType.DISCONNECT)) == 1)
        rec.step()
        second = client.connect("127.0.0.1", server.get_local_port(), session=session)
        assert rec.run(lambda: second.get_status() == Status.STATUS_CONNECTED)
        assert second.is_session_resumed()
    finally:
        client.close()
        server.close()


def test_host_peer_getters_never_raise_for_a_released_entry() -> None:
    """Like the other HostPeer getters, the session, resumed and certificate
    getters answer from what the peer kept when its native entry is gone
    (they raised StateError before)."""
    host = DTLSHost("127.0.0.1", 0, server_psk={b"id": b"k" * 16})
    try:
        for outgoing in (False, True):
            peer = HostPeer(host, 12345, outgoing)  # an id the host never had
            assert peer.get_session() is None
            assert peer.is_session_resumed() is False
            assert peer.get_peer_certificate() is None
    finally:
        host.close()


def test_aio_connect_resumes(identity: Identity) -> None:
    async def main() -> None:
        async def handler(conn: aio.Connection) -> None:
            async for packet in conn:
                conn.send_nowait(packet)

        server = await aio.serve(handler, "127.0.0.1", 0, TLSOptions.server(*identity))
        try:
            first = await aio.connect("127.0.0.1", server.port, client_options(identity),
                                      hostname="game.test")
            session = first.get_session()
            assert session is not None and not first.resumed
            first.close()
            second = await aio.connect("127.0.0.1", server.port, client_options(identity),
                                       hostname="game.test", session=session)
            assert second.resumed
            await second.send(b"ping")
            assert await second.recv() == b"ping"
            second.close()
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(asyncio.wait_for(main(), 60))


# ---- shared, foreign, rotated and expired keys -----------------------------------


def test_ticket_from_server_a_opens_on_server_b_with_shared_keys_only(identity: Identity) -> None:
    """Worker A's ticket resumes on worker B given A's exported keys; a server
    with other keys refuses it and runs a full handshake (still connects)."""
    keys_a = SessionTicketKeys(lifetime=600)
    keys_b = SessionTicketKeys.from_bytes(keys_a.to_bytes())  # another process's copy
    a = EchoServer(identity, ticket_keys=keys_a)
    b = EchoServer(identity, ticket_keys=keys_b)
    other = EchoServer(identity, ticket_keys=SessionTicketKeys(lifetime=600))
    try:
        session = first_session(a, identity)
        client, peer = godot_connect(b, identity, session=session)
        assert client.is_session_resumed() and peer.is_session_resumed()
        client, peer = godot_connect(other, identity, session=session)
        assert client.get_status() == Status.STATUS_CONNECTED
        assert not client.is_session_resumed() and not peer.is_session_resumed()
        assert other.dtls._tickets.get_stats()["rejected"] == 1  # type: ignore[union-attr]
    finally:
        a.stop()
        b.stop()
        other.stop()


def test_rotation_keeps_the_previous_key_for_one_lifetime(identity: Identity) -> None:
    """Keys rotate every lifetime; a ticket minted late in its period still
    opens in the next one (previous key kept) and not in the one after."""
    lifetime = 600
    keys = SessionTicketKeys(b"k" * 32, lifetime=lifetime)
    period_start = 1_800_000_000 // lifetime * lifetime
    keys._set_time(period_start + lifetime - 1)  # last second of period n
    server = EchoServer(identity, ticket_keys=keys)
    try:
        session = first_session(server, identity)
        keys._set_time(period_start + lifetime + 1)  # period n + 1: key n is the previous one
        client, _ = godot_connect(server, identity, session=session)
        assert client.is_session_resumed()
        keys._set_time(period_start + 2 * lifetime + 1)  # period n + 2: key n is gone
        client, peer = godot_connect(server, identity, session=session)
        assert client.get_status() == Status.STATUS_CONNECTED
        assert not client.is_session_resumed() and not peer.is_session_resumed()
        # A server process started in period n + 1 with the same secret also
        # opens period n's tickets (it installs the previous key at once).
        late = SessionTicketKeys(b"k" * 32, lifetime=lifetime)
        late._set_time(period_start + lifetime + 5)
        late_server = EchoServer(identity, ticket_keys=late)
        try:
            client, _ = godot_connect(late_server, identity, session=session)
            assert client.is_session_resumed()
        finally:
            late_server.stop()
    finally:
        server.stop()


def test_ticket_keys_export_import_and_bad_input() -> None:
    keys = SessionTicketKeys(b"s" * 20, lifetime=120)
    data = keys.to_bytes()
    copy = SessionTicketKeys.from_bytes(data)
    assert copy.lifetime == 120 and copy.to_bytes() == data
    assert pickle.loads(pickle.dumps(keys)).to_bytes() == data
    assert len(SessionTicketKeys().to_bytes()) == 10 + 32  # header + random secret
    with pytest.raises(errors.InvalidArgumentError, match="bad magic"):
        SessionTicketKeys.from_bytes(b"nonsense")
    with pytest.raises(errors.InvalidArgumentError, match="format 9"):
        SessionTicketKeys.from_bytes(data[:4] + b"\x09" + data[5:])
    with pytest.raises(errors.InvalidArgumentError, match="wrong length"):
        SessionTicketKeys.from_bytes(data + b"x")
    with pytest.raises(errors.InvalidArgumentError, match=r"16\.\.64"):
        SessionTicketKeys(b"short")
    with pytest.raises(errors.InvalidArgumentError, match="lifetime"):
        SessionTicketKeys(lifetime=10)
    with pytest.raises(errors.ArgumentTypeError):
        DTLSHost("127.0.0.1", 0, server_psk={b"id": b"k" * 16}, ticket_keys="yes")  # type: ignore[arg-type]


# ---- hostile input ----------------------------------------------------------------


def _ticket_span(blob: bytes) -> tuple[int, int]:
    """Where the server's ticket sits in a saved TLS 1.2 client session: Mbed
    TLS writes ticket_len (3 bytes), the ticket, its lifetime (4 bytes), then
    the max fragment length code (1 byte) at the end."""
    for start in range(len(blob) - 3):
        length = int.from_bytes(blob[start:start + 3], "big")
        if length >= 32 and start + 3 + length + 4 + 1 == len(blob):
            return start + 3, length
    raise AssertionError("no ticket in the saved session")


def test_forged_ticket_from_the_network_falls_back_to_a_full_handshake(identity: Identity) -> None:
    """A ticket altered in transit (here by the client itself) does not open:
    the server counts it rejected and completes a full handshake."""
    server = EchoServer(identity)
    try:
        blob = bytearray(first_session(server, identity).to_bytes())
        start, length = _ticket_span(bytes(blob))
        blob[start + length // 2] ^= 0x40  # inside the sealed state
        client, peer = godot_connect(server, identity, session=bytes(blob))
        assert client.get_status() == Status.STATUS_CONNECTED
        assert not client.is_session_resumed() and not peer.is_session_resumed()
        stats = server.dtls._tickets.get_stats()  # type: ignore[union-attr]
        assert stats["rejected"] == 1 and stats["accepted"] == 0
        echo_once(server, client, b"full handshake works")
    finally:
        server.stop()


def test_malformed_session_from_the_user_is_a_clear_error(identity: Identity) -> None:
    server = EchoServer(identity)
    try:
        blob = first_session(server, identity).to_bytes()
        with pytest.raises(errors.InvalidArgumentError, match="bad magic"):
            Session.from_bytes(b"not a session")
        with pytest.raises(errors.InvalidArgumentError, match="format 7"):
            Session.from_bytes(blob[:4] + b"\x07" + blob[5:])
        udp = PacketPeerUDP()
        udp.connect_to_host("127.0.0.1", server.port)
        client = PacketPeerDTLS()
        # Mbed TLS's own header: its version and build options.
        other_build = blob[:6] + bytes([blob[6] ^ 0x01]) + blob[7:]
        with pytest.raises(errors.InvalidArgumentError, match="another Mbed TLS version"):
            client.connect_to_peer(udp, "game.test", client_options(identity),
                                   session=other_build)
        with pytest.raises(errors.InvalidArgumentError, match="corrupt"):
            client.connect_to_peer(udp, "game.test", client_options(identity),
                                   session=blob[:40])
        with pytest.raises(errors.ArgumentTypeError):
            client.connect_to_peer(udp, "game.test", client_options(identity),
                                   session=42)  # type: ignore[arg-type]
        assert client.get_status() == Status.STATUS_DISCONNECTED
        host = DTLSHost("127.0.0.1", 0, client_options=client_options(identity))
        try:
            with pytest.raises(errors.InvalidArgumentError, match="corrupt"):
                host.connect("127.0.0.1", server.port, "game.test", session=blob[:40])
            assert host.get_stats()["peers"] == 0
        finally:
            host.close()
    finally:
        server.stop()


def test_unverified_session_is_not_resumed_by_a_verifying_client(identity: Identity) -> None:
    """A session saved by client_unsafe (certificate not verified) resumes for
    an unsafe client, but a verifying client refuses it: resumption would
    skip the certificate check."""
    server = EchoServer(identity)
    try:
        udp = PacketPeerUDP()
        udp.connect_to_host("127.0.0.1", server.port)
        unsafe = PacketPeerDTLS()
        unsafe.connect_to_peer(udp, "game.test", TLSOptions.client_unsafe())
        handshake(server, unsafe)
        session = unsafe.get_session()
        assert session is not None
        udp2 = PacketPeerUDP()
        udp2.connect_to_host("127.0.0.1", server.port)
        again = PacketPeerDTLS()
        again.connect_to_peer(udp2, "game.test", TLSOptions.client_unsafe(), session=session)
        handshake(server, again)
        assert again.is_session_resumed()
        udp3 = PacketPeerUDP()  # udp2 carries `again`: one DTLS session per UDP peer
        udp3.connect_to_host("127.0.0.1", server.port)
        verifying = PacketPeerDTLS()
        with pytest.raises(errors.InvalidArgumentError, match="not verified as strictly"):
            verifying.connect_to_peer(udp3, "game.test", client_options(identity),
                                      session=session)
    finally:
        server.stop()


def test_resumed_handshake_waiting_for_the_client_counts_as_half_open(identity: Identity) -> None:
    """A server in a resumed handshake that sent its flight and waits for the
    client's Finished has seen nothing but a cookie and a ticket, and tickets
    can be replayed: it must stay evictable as a half-open handshake (the
    host's and DTLSServer's bounds evict those without progress), as a full
    handshake waiting for the key exchange is. Before, a resumed one counted
    as progressed, so one ticket could pin handshake slots until the deadline."""
    key, cert = identity
    gate = CookieGate()
    with key._mutex, cert._mutex:
        server_cfg = EngineConfig.server(gate=gate, key=key._handle, certificate=cert._handle,
                                         ticket_keys=SessionTicketKeys()._ptr)
        client_cfg = EngineConfig.client(verify=Verify.FULL, trusted_chain=cert._handle)
    first = Link(client_cfg, server_cfg, gate, hostname="game.test")
    first.handshake()
    session = first.client.get_session()
    first.close()
    for offer in (None, session):
        link = Link(client_cfg, server_cfg, gate, hostname="game.test", session=offer)
        # Step until the server answered the cookie'd hello with its flight
        # (the gate's HelloVerifyRequest was its first datagram), no further.
        for _ in range(100):
            if link.server is not None and link.sent["server"] >= 2:
                break
            assert link.step()
        assert link.server is not None
        assert link.server.status == EngineStatus.HANDSHAKING
        assert not link.server.handshake_progressed, "resumed" if offer else "full"
        link.close()


# ---- threads ----------------------------------------------------------------------


def test_shared_keys_rotating_under_concurrent_handshakes(identity: Identity) -> None:
    """Two threads run resumed handshakes (engine level, no sockets) against
    two server configurations sharing one SessionTicketKeys while a third
    thread moves the key period back and forth, forcing rotations between
    their ticket writes and parses: every handshake completes (resumed or,
    when its ticket's key was rotated out, full), nothing crashes (the ASan
    pass runs this too), and the counters add up."""
    key, cert = identity
    lifetime = 600
    keys = SessionTicketKeys(b"t" * 32, lifetime=lifetime)
    base = 1_800_000_000 // lifetime * lifetime
    keys._set_time(base + 1)
    gates = [CookieGate(), CookieGate()]
    with key._mutex, cert._mutex:
        servers = [EngineConfig.server(gate=g, key=key._handle, certificate=cert._handle,
                                       ticket_keys=keys._ptr) for g in gates]
        client_cfg = EngineConfig.client(verify=Verify.FULL, trusted_chain=cert._handle)

    def handshake(server_cfg: EngineConfig, gate: CookieGate, offer: bytes | None
                  ) -> tuple[bool, bytes | None]:
        link = Link(client_cfg, server_cfg, gate, hostname="game.test", session=offer)
        link.handshake()
        assert link.server is not None
        resumed, session = link.client.resumed(), link.client.get_session()
        link.close()
        return resumed, session

    _, first = handshake(servers[0], gates[0], None)
    assert first is not None
    stop = threading.Event()
    results: list[tuple[int, int]] = []
    failures: list[BaseException] = []

    def worker(index: int) -> None:
        session, resumed, full = first, 0, 0
        try:
            for _ in range(40):
                was_resumed, saved = handshake(servers[index], gates[index], session)
                resumed += was_resumed
                full += not was_resumed
                session = saved or session
        except BaseException as exc:  # reported below
            failures.append(exc)
        results.append((resumed, full))

    def rotate() -> None:
        step = 0
        while not stop.is_set():
            keys._set_time(base + 1 + (step % 3) * lifetime)  # periods n, n+1, n+2, n, ...
            step += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in (0, 1)]
    rotator = threading.Thread(target=rotate)
    rotator.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    stop.set()
    rotator.join(30)
    assert not failures, failures
    assert len(results) == 2 and sum(r + f for r, f in results) == 80
    stats = keys.get_stats()
    assert stats["accepted"] + stats["rejected"] == 80
    assert stats["accepted"] == sum(r for r, _ in results)
    assert stats["rotations"] > 2

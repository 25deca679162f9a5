"""RFC 9146 Connection ID and NAT rebinding (issue 14 section 2).

Engine level (in memory, injected time): negotiation, the record format of
clients that do not ask (Godot's), parked connections woken by CID records,
the "newer than every record before" test address moves rely on.

Both server APIs over loopback (real sockets, bounded waits): a client whose
socket is rebound to a new port, then to another loopback address, keeps
its session and peer object; records forged, replayed or sent with unknown
CIDs from a third address move nothing and allocate nothing.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from typing import Callable

import pytest

from _dtls_sim import PSK_ID, PSK_KEY, Link
from _records import SpoofableClient
from dtlspeer import (
    DTLSHost,
    DTLSSettings,
    HostEventType,
    HostPeer,
    PacketPeerDTLS,
    TLSOptions,
    aio,
    errors,
)
from dtlspeer._engine import CookieGate, EngineConfig, EngineStatus
from identities import Identity, make_identity
from test_takeover import GodotSide, HostSide, connected, exchange
from udp_helpers import alloc_bytes, until

Status = PacketPeerDTLS.Status
CID_TYPE = 25


@pytest.fixture(scope="module")
def ec_identity() -> Identity:
    return make_identity("ec")


# ---- engine --------------------------------------------------------------------


def engine_link(
    server_cid: dict[str, object] | None = None, client_cid: dict[str, object] | None = None,
    **server_common: object,
) -> tuple[Link, list[tuple[str, bytes]]]:
    """A PSK client and server joined in memory; every datagram is logged."""
    gate = CookieGate()
    server = EngineConfig.server(
        gate=gate, psks={PSK_ID: PSK_KEY}, **(server_cid or {}), **server_common
    )
    client = EngineConfig.client(psk=(PSK_ID, PSK_KEY), **(client_cid or {}))
    link = Link(client, server, gate)
    log: list[tuple[str, bytes]] = []

    def tap(dst: str, data: bytes) -> bytes:
        log.append((dst, data))
        return data

    link.tap = tap
    link.handshake()
    return link, log


def exchange_in_memory(link: Link, tag: bytes) -> None:
    assert link.server is not None
    link.client.write(b"up " + tag, link.now)
    link.pump()
    assert link.run_until(lambda: link.server.pending_count() > 0, 2000)  # type: ignore[union-attr]
    assert link.server.read() == b"up " + tag
    link.server.write(b"down " + tag, link.now)
    link.pump()
    assert link.run_until(lambda: link.client.pending_count() > 0, 2000)
    assert link.client.read() == b"down " + tag


def test_zero_length_client_cid_is_negotiated() -> None:
    """Our client offers a zero-length CID; the server answers with its own
    (6 random bytes by default). The client writes the server's CID into
    every record (type 25), the server sends plain records."""
    link, log = engine_link(client_cid={"connection_id": True})
    assert link.server is not None
    server_own, server_peer = link.server.connection_id or (b"", b"")
    assert len(server_own) == 6 and server_peer == b""
    assert link.client.connection_id == (b"", server_own)
    log.clear()
    exchange_in_memory(link, b"a")
    to_server = [d for dst, d in log if dst == "server"]
    to_client = [d for dst, d in log if dst == "client"]
    assert to_server and all(d[0] == CID_TYPE and d[11:17] == server_own for d in to_server)
    assert to_client and all(d[0] == 23 for d in to_client)
    link.close()


def test_client_chosen_cid_and_worker_prefix() -> None:
    """A client may choose a CID of its own (then both directions carry
    one); a server's CID starts with its prefix (a worker id)."""
    link, log = engine_link(
        server_cid={"connection_id_prefix": b"\x07", "connection_id_length": 4},
        client_cid={"connection_id": True, "connection_id_length": 3},
    )
    assert link.server is not None
    server_own, client_own = link.server.connection_id or (b"", b"")
    assert len(server_own) == 4 and server_own[0] == 7 and len(client_own) == 3
    assert link.client.connection_id == (client_own, server_own)
    log.clear()
    exchange_in_memory(link, b"b")
    assert all(d[0] == CID_TYPE for _, d in log)
    link.close()


def test_server_can_turn_cid_off() -> None:
    link, _ = engine_link(server_cid={"connection_id": False}, client_cid={"connection_id": True})
    assert link.server is not None
    assert link.server.connection_id is None and link.client.connection_id is None
    exchange_in_memory(link, b"c")
    link.close()


def test_clients_that_do_not_ask_see_the_same_records() -> None:
    """Godot clients never offer a CID. A server with CID on (the default)
    and one with it off produce datagrams of the same sizes and record
    types for such a client, in both directions, and no CID record."""

    def shapes(server_cid: dict[str, object]) -> list[tuple[str, int, int]]:
        link, log = engine_link(server_cid=server_cid)
        assert link.server is not None and link.server.connection_id is None
        exchange_in_memory(link, b"same")
        link.close()
        return [(dst, len(d), d[0]) for dst, d in log]

    with_cid = shapes({})
    without = shapes({"connection_id": False})
    assert with_cid == without
    assert all(kind != CID_TYPE for _, _, kind in with_cid)


def test_parked_connection_wakes_for_its_cid_records_only() -> None:
    """The parked read guard authenticates CID records (RFC 9146 additional
    data) before restoring the connection: an authentic one wakes it, a
    forged one (bad tag) or another CID does not."""
    link, _ = engine_link(client_cid={"connection_id": True}, park_after_ms=1000)
    server = link.server
    assert server is not None
    exchange_in_memory(link, b"before")
    link.now += 2000
    server.update(link.now)
    assert server.parked
    link.client.write(b"wake", link.now)
    datagram = link.client.take_outgoing()[0]
    assert datagram[0] == CID_TYPE
    forged = datagram[:-1] + bytes([datagram[-1] ^ 1])
    other_cid = datagram[:11] + bytes([datagram[11] ^ 0xFF]) + datagram[12:]
    bad_before = server.stats()["bad_mac"]
    for fake in (forged, other_cid):
        server.feed(fake, link.now)
        assert server.parked and server.pending_count() == 0
    assert server.stats()["bad_mac"] == bad_before + 1  # the forged tag; the other CID is not ours
    assert server.stats()["unparks"] == 0
    server.feed(datagram, link.now)
    assert not server.parked and server.read() == b"wake"
    link.close()


def test_rx_newest_grows_only_for_new_authentic_records() -> None:
    """What an address move requires (dp_conn_rx_newest): a new authentic
    record raises it; the same record replayed, or a forged one, does not."""
    link, _ = engine_link(client_cid={"connection_id": True})
    server = link.server
    assert server is not None
    link.client.write(b"one", link.now)
    first = link.client.take_outgoing()[0]
    link.client.write(b"two", link.now)
    second = link.client.take_outgoing()[0]
    before = server.rx_newest
    server.feed(second, link.now)
    after_second = server.rx_newest
    assert after_second > before
    server.feed(second, link.now)  # replay
    assert server.rx_newest == after_second
    server.feed(first, link.now)  # authentic, not a replay, but older
    assert server.rx_newest == after_second
    assert server.read_all() == [b"two", b"one"]
    server.feed(second[:-1] + bytes([second[-1] ^ 1]), link.now)  # forged
    assert server.rx_newest == after_second
    link.close()


# ---- both server APIs over loopback ---------------------------------------------------


class CidHostSide(HostSide):
    """HostSide that also keeps ADDRESS_CHANGED events."""

    def __init__(self, identity: Identity, settings: DTLSSettings | None = None) -> None:
        super().__init__(identity, settings)
        self.moves: list[tuple[HostPeer, tuple[str, int]]] = []

    def step(self) -> None:
        for event in self.host.service(0):
            if event.type == HostEventType.CONNECT:
                self.connects.append(event.peer)
            elif event.type == HostEventType.ADDRESS_CHANGED:
                self.moves.append((event.peer, event.peer.get_peer_address()))
            elif event.type == HostEventType.RECEIVE:
                self.received.setdefault(id(event.peer), []).append(event.data)

    def address_changes(self, peer: PacketPeerDTLS) -> int:
        return sum(1 for p, _ in self.moves if p is peer)

    def stats(self) -> dict[str, int]:
        return self.host.get_stats()


class CidGodotSide(GodotSide):
    def address_changes(self, peer: PacketPeerDTLS) -> int:
        return peer.get_stats()["address_changes"]

    def stats(self) -> dict[str, int]:
        return {}


CidSide = CidHostSide | CidGodotSide
APIS = ["host", "godot"]


def make_cid_side(api: str, identity: Identity) -> CidSide:
    return CidHostSide(identity) if api == "host" else CidGodotSide(identity)


def establish_cid(side: CidSide) -> tuple[SpoofableClient, PacketPeerDTLS]:
    client = SpoofableClient(side.port, connection_id=True)
    client.start()
    assert until(lambda: client.connected() and len(connected(side)) == 1,
                 lambda: (side.step(), client.pump()))
    return client, connected(side)[0]


def settle(side: CidSide, rounds: int = 20) -> None:
    for _ in range(rounds):
        side.step()
        time.sleep(0.002)


@pytest.mark.parametrize("api", APIS)
def test_rebound_client_keeps_its_session(api: str, ec_identity: Identity) -> None:
    """The client's socket moves to a new port, then to another loopback
    address: the same peer object keeps the session, traffic goes both
    ways, the server reports each move and the peer's new address."""
    side = make_cid_side(api, ec_identity)
    client, peer = establish_cid(side)
    try:
        own, _ = peer.get_connection_id() or (b"", b"")
        assert len(own) == 6
        exchange(side, client, peer, b"first")
        for n, source in enumerate(("127.0.0.1", "127.0.0.2"), start=1):
            old = client.addr
            client.rebind(source)
            assert client.addr != old
            exchange(side, client, peer, b"after move %d" % n)
            assert peer.get_peer_address() == (client.addr[0], client.addr[1])
            assert side.address_changes(peer) == n
            assert connected(side) == [peer]
        cid = peer.get_connection_id()
        peer.disconnect_from_peer()
        settle(side, 3)
        assert peer.get_status() == Status.STATUS_DISCONNECTED
        assert peer.get_connection_id() == cid  # kept after the end, like the suite
    finally:
        client.close()
        side.close()


@pytest.mark.parametrize("api", APIS)
def test_forged_and_replayed_cid_records_move_nothing(api: str, ec_identity: Identity) -> None:
    """From a third address: an authentic record already delivered
    (replayed), the same record with a flipped tag bit (forged), a record
    header with the peer's CID and garbage, and one with an unknown CID.
    None reaches the application, none moves the peer, the session goes on
    at its own address."""
    side = make_cid_side(api, ec_identity)
    client, peer = establish_cid(side)
    third = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    third.bind(("127.0.0.3", 0))
    try:
        exchange(side, client, peer, b"one")
        authentic = next(d for d in reversed(client.sent) if d[0] == CID_TYPE)
        own, _ = peer.get_connection_id() or (b"", b"")
        garbage = authentic[:19] + os.urandom(len(authentic) - 19)
        unknown = authentic[:11] + bytes(6) + authentic[17:]
        home = peer.get_peer_address()
        received_before = list(side.received_by(peer))
        for fake in (authentic, authentic[:-1] + bytes([authentic[-1] ^ 1]), garbage, unknown):
            third.sendto(fake, ("127.0.0.1", side.port))
        settle(side)
        assert authentic[11:17] == own
        assert peer.get_peer_address() == home
        assert side.address_changes(peer) == 0
        assert side.received_by(peer) == received_before
        if api == "host":
            assert side.stats()["address_unmoved"] == 3  # the unknown CID never reached it
            assert side.stats()["address_changes"] == 0
        exchange(side, client, peer, b"two")
        assert peer.get_peer_address() == home
    finally:
        third.close()
        client.close()
        side.close()


def test_unknown_cids_allocate_nothing(ec_identity: Identity) -> None:
    """CID records with random CIDs from many ports create no peer, no
    index entry, no memory (the index only grows when a handshake
    completes)."""
    side = CidHostSide(ec_identity)
    client, peer = establish_cid(side)
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(16)]
    try:
        for s in socks:
            s.bind(("127.0.0.4", 0))
        exchange(side, client, peer, b"x")
        datagram = next(d for d in reversed(client.sent) if d[0] == CID_TYPE)
        settle(side, 5)
        before = alloc_bytes()
        peers_before = side.stats()["peers"]
        for i in range(800):
            forged = datagram[:11] + os.urandom(6) + datagram[17:]
            socks[i % len(socks)].sendto(forged, ("127.0.0.1", side.port))
            if i % 100 == 99:
                settle(side, 3)
        settle(side)
        assert alloc_bytes() == before
        assert side.stats()["peers"] == peers_before
        assert peer.get_status() == Status.STATUS_CONNECTED
    finally:
        for s in socks:
            s.close()
        client.close()
        side.close()


def test_host_clients_negotiate_when_asked(ec_identity: Identity) -> None:
    """A DTLSHost client with ``connection_id=True`` gets a CID from a
    DTLSHost server; one with the default settings (like Godot) does not."""
    server = DTLSHost("127.0.0.1", 0, server_options=TLSOptions.server(*ec_identity))
    clients = [
        DTLSHost(client_options=TLSOptions.client_unsafe(),
                 settings=DTLSSettings(connection_id=True)),
        DTLSHost(client_options=TLSOptions.client_unsafe()),
    ]
    try:
        peers = [c.connect("127.0.0.1", server.get_local_port()) for c in clients]
        server_peers: list[HostPeer] = []

        def step() -> None:
            for event in server.service(0):
                if event.type == HostEventType.CONNECT:
                    server_peers.append(event.peer)
            for c in clients:
                c.service(0)

        assert until(lambda: len(server_peers) == 2
                     and all(p.get_status() == Status.STATUS_CONNECTED for p in peers), step)
        asked, plain = peers
        own, theirs = asked.get_connection_id() or (b"?", b"")
        assert own == b"" and len(theirs) == 6
        assert plain.get_connection_id() is None
        by_cid = {p.get_connection_id() is not None: p for p in server_peers}
        assert set(by_cid) == {True, False}
        assert by_cid[True].get_connection_id() == (theirs, b"")
    finally:
        for c in clients:
            c.close()
        server.close()


def test_settings_are_checked() -> None:
    with pytest.raises(errors.InvalidArgumentError):
        DTLSSettings(connection_id_length=33)
    with pytest.raises(errors.ArgumentTypeError):
        DTLSSettings(connection_id=1)  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgumentError):
        DTLSHost(server_psk={b"a": b"b" * 16}, worker_id=1,
                 settings=DTLSSettings(connection_id=False))
    with pytest.raises(errors.InvalidArgumentError):
        DTLSHost(server_psk={b"a": b"b" * 16}, worker_id=256)


def mutations(datagram: bytes, count: int, seed: int) -> list[bytes]:
    """Seeded mutations of a CID datagram that keep it a CID record for our
    CID most of the time (the header up to the CID is kept in half of them)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        d = bytearray(datagram)
        kind = rng.randrange(4)
        if kind == 0:  # flip bits after the CID
            for _ in range(rng.randrange(1, 4)):
                i = rng.randrange(17, len(d))
                d[i] ^= 1 << rng.randrange(8)
        elif kind == 1:  # truncate
            d = d[: rng.randrange(1, len(d))]
        elif kind == 2:  # lengths, epoch and sequence number
            i = rng.choice([3, 4, 5, 9, 10, 17, 18])
            d[i] = rng.randrange(256)
        else:  # append junk, or a second record header
            d += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        out.append(bytes(d))
    return out


def test_mutated_cid_records_never_move_or_end_a_session() -> None:
    """Engine: 400 mutations of an authentic CID datagram, fed to an active
    and to a parked server connection: the connection stays CONNECTED,
    delivers nothing new and its newest record never grows."""
    link, _ = engine_link(client_cid={"connection_id": True}, park_after_ms=1000)
    server = link.server
    assert server is not None
    link.client.write(b"seed", link.now)
    datagram = link.client.take_outgoing()[0]
    server.feed(datagram, link.now)
    assert server.read() == b"seed"
    newest = server.rx_newest
    for parked in (False, True):
        if parked:
            link.now += 2000
            server.update(link.now)
            assert server.parked
        for fake in mutations(datagram, 200, seed=int(parked)):
            server.feed(fake, link.now)
            assert server.status == EngineStatus.CONNECTED
            assert server.pending_count() == 0
        assert server.rx_newest == newest
    assert server.stats()["unparks"] == 0
    exchange_in_memory(link, b"after")
    link.close()


def test_mutated_cid_datagrams_from_a_third_address(ec_identity: Identity) -> None:
    """DTLSHost: 300 mutations of an authentic, delivered CID datagram from
    a third address: no RECEIVE, no move, no allocation kept; the session
    goes on."""
    side = CidHostSide(ec_identity)
    client, peer = establish_cid(side)
    third = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    third.bind(("127.0.0.5", 0))
    try:
        exchange(side, client, peer, b"x")
        datagram = next(d for d in reversed(client.sent) if d[0] == CID_TYPE)
        home = peer.get_peer_address()
        received = list(side.received_by(peer))
        settle(side, 3)
        before = alloc_bytes()
        for i, fake in enumerate(mutations(datagram, 300, seed=7)):
            third.sendto(fake, ("127.0.0.1", side.port))
            if i % 50 == 49:
                settle(side, 2)
        settle(side)
        assert alloc_bytes() == before
        assert peer.get_peer_address() == home and side.address_changes(peer) == 0
        assert side.received_by(peer) == received
        exchange(side, client, peer, b"y")
    finally:
        third.close()
        client.close()
        side.close()


def test_aio_connection_follows_a_rebound_client(ec_identity: Identity) -> None:
    """dtlspeer.aio: the server's Connection keeps serving a CID client whose
    socket moved, and its ``peer_address`` follows it."""

    async def main() -> None:
        seen: list[aio.Connection] = []

        async def handler(conn: aio.Connection) -> None:
            seen.append(conn)
            while True:
                await conn.send(b"echo " + await conn.recv())

        server = await aio.serve(handler, "127.0.0.1", 0, TLSOptions.server(*ec_identity))
        client = SpoofableClient(server.port, connection_id=True)
        try:
            client.start()

            async def until_async(condition: Callable[[], bool]) -> None:
                for _ in range(3000):
                    client.pump()
                    if condition():
                        return
                    await asyncio.sleep(0.001)
                assert condition()

            await until_async(lambda: client.connected() and len(seen) == 1)
            for tag in (b"before", b"after"):
                if tag == b"after":
                    client.rebind("127.0.0.2")
                client.write(tag)
                await until_async(lambda tag=tag: b"echo " + tag in client.received)  # type: ignore[misc]
                assert seen[0].peer_address == (client.addr[0], client.addr[1])
        finally:
            client.close()
            server.close()
            await server.wait_closed()

    asyncio.run(asyncio.wait_for(main(), 60))


@pytest.mark.parametrize("api", APIS)
def test_parked_peer_moves_when_it_wakes(api: str, ec_identity: Identity) -> None:
    """A parked server connection (its keys serialized, the read guard in
    front) woken by the first record from the rebound client's new address:
    the guard authenticates the CID record, the peer moves and answers."""
    settings = DTLSSettings(park_after_ms=50)
    side: CidSide = (CidHostSide(ec_identity, settings) if api == "host"
                     else CidGodotSide(ec_identity, settings))
    client, peer = establish_cid(side)
    try:
        exchange(side, client, peer, b"before")
        assert until(lambda: peer.get_stats()["parks"] >= 1,
                     lambda: (side.step(), client.pump(), time.sleep(0.01)))
        client.rebind("127.0.0.2")
        exchange(side, client, peer, b"after")
        assert peer.get_stats()["unparks"] >= 1
        assert peer.get_peer_address() == (client.addr[0], client.addr[1])
        assert side.address_changes(peer) == 1
    finally:
        client.close()
        side.close()

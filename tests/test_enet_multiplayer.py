"""ENetMultiplayerPeer's Godot conventions, checked on the wire with raw
ENetConnection peers (what a Godot peer would see), in both generations:
ids in CONNECT data, silent resets, the 4.x channel/flag mapping both ways,
target routing, disconnects; Godot 3's config channel, 8-byte header and relay.
"""

from __future__ import annotations

import struct
import time
from typing import Any, Callable

import pytest

from dtlspeer import errors
from dtlspeer.enet import ENetConnection
from dtlspeer.enet_multiplayer import ENetMultiplayerPeer

MP = ENetMultiplayerPeer
RELIABLE, UNRELIABLE, ORDERED = 2, 0, 1
CONNECT, DISCONNECT, RECEIVE = 1, 2, 3


class Raw:
    """A raw ENet client (what a Godot client puts on the wire, by hand)."""

    def __init__(self, port: int, data: int, channels: int = 255) -> None:
        self.conn = ENetConnection()
        self.conn.create_host(1)
        self.peer = self.conn.connect_to_host("127.0.0.1", port, channels, data)
        self.events: list[Any] = []

    def step(self) -> None:
        self.events += self.conn.service_batch(0)

    def types(self) -> list[int]:
        return [e.type for e in self.events]

    def received(self) -> list[tuple[int, int, bytes]]:
        return [(e.channel, e.flags, e.packet) for e in self.events if e.type == RECEIVE]


def run(server: MP, raws: list[Raw], until: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    for _ in range(20_000):
        if until() or time.monotonic() > deadline:
            break
        server.poll()
        for raw in raws:
            raw.step()
        time.sleep(0.001)
    assert until(), "condition not reached in time"


@pytest.fixture
def server() -> Any:
    mp = MP()
    mp.set_bind_ip("127.0.0.1")
    mp.create_server(0, 8)
    yield mp
    mp.close()


def joined(server: MP) -> list[int]:
    ids: list[int] = []
    server.peer_connected.connect(ids.append)
    return ids


def test_ids_below_2_duplicates_and_refused_clients_are_reset_silently(server: MP) -> None:
    ids = joined(server)
    port = server.host.get_local_port()
    good = Raw(port, 1000)
    run(server, [good], lambda: ids == [1000])
    bad = [Raw(port, 0), Raw(port, 1), Raw(port, 1000), Raw(port, 2**31 + 5)]
    # ENet finishes its handshake first, so each bad client sees CONNECT: then nothing.
    run(server, bad, lambda: all(CONNECT in r.types() for r in bad))
    server.refuse_new_connections = True
    late = Raw(port, 1001)
    run(server, [late], lambda: CONNECT in late.types())
    for _ in range(50):
        server.poll()
    assert ids == [1000]
    with pytest.raises(errors.InvalidArgumentError):
        server.get_peer(1)
    assert server.get_peer(1000).is_active()


def test_transfer_modes_map_to_godot4_channels_and_flags(server: MP) -> None:
    ids = joined(server)
    raw = Raw(server.host.get_local_port(), 4242)
    run(server, [raw], lambda: ids == [4242])
    server.set_target_peer(4242)
    table = [  # (mode, script channel) -> (ENet channel, flags the receiver sees)
        ((RELIABLE, 0), (0, 1)),
        ((UNRELIABLE, 0), (1, 2)),
        ((ORDERED, 0), (1, 0)),
        ((RELIABLE, 3), (4, 1)),
        ((UNRELIABLE, 2), (3, 2)),
        ((ORDERED, 5), (6, 0)),
    ]
    for i, ((mode, channel), _) in enumerate(table):
        server.transfer_mode, server.transfer_channel = mode, channel
        server.put_packet(bytes([i]))
    run(server, [raw], lambda: len(raw.received()) == len(table))
    got = {packet[0]: (channel, flags) for channel, flags, packet in raw.received()}
    assert got == {i: want for i, (_, want) in enumerate(table)}


def test_received_packets_report_godot4_mode_channel_and_sender(server: MP) -> None:
    ids = joined(server)
    raw = Raw(server.host.get_local_port(), 777)
    run(server, [raw], lambda: ids == [777])
    sends = [(0, 1, b"a"), (1, 2, b"b"), (1, 0, b"c"), (4, 1, b"d"), (2, 10, b"e")]
    for channel, flags, data in sends:
        raw.peer.send(channel, data, flags)
    raw.conn.flush()
    run(server, [raw], lambda: server.get_available_packet_count() == len(sends))
    seen = []
    while server.get_available_packet_count():
        seen.append((server.get_packet_peer(), server.get_packet_mode(),
                     server.get_packet_channel(), server.get_packet()))  # fmt: skip
    assert sorted(seen) == sorted([
        (777, RELIABLE, 0, b"a"), (777, UNRELIABLE, 0, b"b"), (777, ORDERED, 0, b"c"),
        (777, RELIABLE, 3, b"d"), (777, UNRELIABLE, 1, b"e")])  # fmt: skip
    with pytest.raises(errors.WouldBlockError):
        server.get_packet()


def test_targets_broadcast_exclude_one_and_unknown(server: MP) -> None:
    ids = joined(server)
    port = server.host.get_local_port()
    a, b = Raw(port, 10), Raw(port, 11)
    run(server, [a, b], lambda: sorted(ids) == [10, 11])
    for target, data in ((0, b"all"), (-10, b"not-a"), (11, b"b-only")):
        server.set_target_peer(target)
        server.put_packet(data)
    run(server, [a, b], lambda: len(a.received()) == 1 and len(b.received()) == 3)
    assert [p for _, _, p in a.received()] == [b"all"]
    assert sorted(p for _, _, p in b.received()) == [b"all", b"b-only", b"not-a"]
    for target in (12, -12):
        server.set_target_peer(target)
        with pytest.raises(errors.InvalidArgumentError):
            server.put_packet(b"x")


def test_disconnect_peer_graceful_signals_force_does_not(server: MP) -> None:
    ids = joined(server)
    gone: list[int] = []
    server.peer_disconnected.connect(gone.append)
    port = server.host.get_local_port()
    a, b = Raw(port, 20), Raw(port, 21)
    run(server, [a, b], lambda: sorted(ids) == [20, 21])
    server.disconnect_peer(20)
    server.disconnect_peer(21, force=True)
    run(server, [a, b], lambda: DISCONNECT in a.types() and DISCONNECT in b.types())
    run(server, [a, b], lambda: gone == [20])
    assert [e.data for e in a.events if e.type == DISCONNECT] == [0]
    assert [e.data for e in b.events if e.type == DISCONNECT] == [0]


def test_our_client_and_server_end_to_end(server: MP) -> None:
    ids = joined(server)
    left: list[int] = []
    server.peer_disconnected.connect(left.append)
    client = MP()
    client.create_client("127.0.0.1", server.host.get_local_port(), 2)
    client_joined: list[int] = []
    client.peer_connected.connect(client_joined.append)
    assert client.get_connection_status() == MP.ConnectionStatus.CONNECTION_CONNECTING

    def both() -> None:
        client.poll()

    deadline = time.monotonic() + 5
    while not (ids and client_joined) and time.monotonic() < deadline:
        server.poll()
        both()
        time.sleep(0.001)
    assert client_joined == [1] and ids == [client.get_unique_id()]
    assert client.host.get_peers()[0].get_channels() == 4  # channel_count + 2
    client.transfer_mode, client.transfer_channel = UNRELIABLE, 1
    client.put_packet(b"hello")
    while not server.get_available_packet_count() and time.monotonic() < deadline:
        server.poll()
        both()
    assert server.get_packet_peer() == client.get_unique_id()
    assert (server.get_packet_mode(), server.get_packet_channel()) == (UNRELIABLE, 1)
    assert server.get_packet() == b"hello"
    client.close()
    assert client.get_connection_status() == MP.ConnectionStatus.CONNECTION_DISCONNECTED
    while not left and time.monotonic() < deadline:
        server.poll()
    assert left == ids


# ---- Godot 3 mode -------------------------------------------------------------------------

HEADER = struct.Struct("<Ii")
SYSMSG = struct.Struct("<II")


@pytest.fixture
def g3server() -> Any:
    mp = MP(godot=3)
    mp.set_bind_ip("127.0.0.1")
    mp.create_server(0, 8)
    yield mp
    mp.close()


def test_godot3_add_remove_peer_on_the_config_channel(g3server: MP) -> None:
    ids = joined(g3server)
    port = g3server.host.get_local_port()
    a = Raw(port, 2001, 3)
    run(g3server, [a], lambda: ids == [2001])
    b = Raw(port, 2002, 3)
    run(g3server, [a, b], lambda: len(a.received()) == 1 and len(b.received()) == 1)
    assert a.received() == [(0, 1, SYSMSG.pack(0, 2002))]
    assert b.received() == [(0, 1, SYSMSG.pack(0, 2001))]
    b.peer.peer_disconnect(2002)
    run(g3server, [a, b], lambda: len(a.received()) == 2)
    assert a.received()[1] == (0, 1, SYSMSG.pack(1, 2002))


def test_godot3_header_relay_and_forged_source(g3server: MP) -> None:
    ids = joined(g3server)
    port = g3server.host.get_local_port()
    a, b, c = Raw(port, 2001, 3), Raw(port, 2002, 3), Raw(port, 2003, 3)
    run(g3server, [a, b, c], lambda: sorted(ids) == [2001, 2002, 2003])
    run(g3server, [a, b, c], lambda: len(c.received()) == 2)  # ADD_PEER x2 for c
    base = {r: len(r.received()) for r in (a, b, c)}
    a.peer.send(1, HEADER.pack(2001, 0) + b"\x04all", 1)  # broadcast: server + relay
    a.peer.send(2, HEADER.pack(2001, -2002) + b"\x04nb", 2)  # all but 2002
    a.peer.send(1, HEADER.pack(2001, 2003) + b"\x04c", 1)  # to 2003 only
    a.peer.send(1, HEADER.pack(9999, 0) + b"\x04forged", 1)  # wrong source: dropped
    a.peer.send(1, b"short", 1)  # < 8 bytes: dropped
    a.peer.send(0, SYSMSG.pack(0, 5), 1)  # config channel to a server: dropped
    a.conn.flush()

    def new(r: Raw) -> list[bytes]:
        return [p for _, _, p in r.received()[base[r] :]]

    run(g3server, [a, b, c], lambda: len(new(c)) == 3 and len(new(b)) == 1)
    assert new(b) == [HEADER.pack(2001, 0) + b"\x04all"]
    assert sorted(new(c)) == sorted([HEADER.pack(2001, 0) + b"\x04all",
                                     HEADER.pack(2001, -2002) + b"\x04nb",
                                     HEADER.pack(2001, 2003) + b"\x04c"])  # fmt: skip
    local = []
    while g3server.get_available_packet_count():
        local.append((g3server.get_packet_peer(), g3server.get_packet()))
    assert sorted(local) == [(2001, b"\x04all"), (2001, b"\x04nb")]
    assert new(a) == []


def test_godot3_server_sends_header_and_channels(g3server: MP) -> None:
    ids = joined(g3server)
    a = Raw(g3server.host.get_local_port(), 2001, 3)
    run(g3server, [a], lambda: ids == [2001])
    g3server.set_target_peer(2001)
    g3server.transfer_mode = RELIABLE
    g3server.put_packet(b"\x04r")
    g3server.transfer_mode = UNRELIABLE
    g3server.put_packet(b"\x04u")
    g3server.transfer_mode = ORDERED
    g3server.put_packet(b"\x04o")
    run(g3server, [a], lambda: len(a.received()) == 3)
    assert sorted(a.received()) == sorted([(1, 1, HEADER.pack(1, 2001) + b"\x04r"),
                                           (2, 2, HEADER.pack(1, 2001) + b"\x04u"),
                                           (2, 0, HEADER.pack(1, 2001) + b"\x04o")])  # fmt: skip


def test_refused_client_that_leaves_at_once_does_not_break_poll(server: MP) -> None:
    """A client with a refused id (1) that disconnects right behind its ACK:
    the server's reset meets a peer ENet already ended in the same poll."""
    ids = joined(server)
    raw = Raw(server.host.get_local_port(), 1, 2)
    deadline = time.monotonic() + 5
    while CONNECT not in raw.types():
        assert time.monotonic() < deadline
        server.host.service_batch(0)  # VERIFY_CONNECT only: no poll() yet
        raw.events += raw.conn.service_batch(2)
        time.sleep(0.002)
    raw.peer.peer_disconnect_now(0)
    for _ in range(20):
        server.poll()  # must not raise
        time.sleep(0.002)
    assert ids == []


# ---- SceneMultiplayer framing -----------------------------------------------------------------


def test_scene_multiplayer_framing_matches_godot_captures() -> None:
    from dtlspeer.enet_multiplayer import parse_scene_packet, scene_raw, scene_relay, scene_sys

    # godot-wire.md §5 rt4 captures
    assert scene_raw(b"B") == bytes.fromhex("0342")
    assert scene_relay(0, scene_raw(b"A")) == bytes.fromhex("0703000000000341")
    assert scene_relay(-5, scene_raw(b"F")) == bytes.fromhex("0703fbffffff0346")
    assert scene_sys(1, 1002) == bytes.fromhex("0701ea030000")
    assert parse_scene_packet(bytes.fromhex("0703e9030000" + "0372")) == ("relay", 1001, b"\x03r")
    assert parse_scene_packet(bytes.fromhex("0702ea030000")) == ("del_peer", 1002, b"")
    assert parse_scene_packet(bytes.fromhex("070068656c6c6f")) == ("auth", 0, b"hello")
    assert parse_scene_packet(bytes.fromhex("f3" + "41")) == ("raw", 0, b"A")  # flags ignored
    assert parse_scene_packet(b"\x00rpc") == ("other", 0, b"\x00rpc")
    for bad in (b"", b"\x03", b"\x07\x01\x00", b"\x07\x03\x00\x00\x00\x00", b"\x07\x09\0\0\0\0"):
        with pytest.raises(errors.InvalidArgumentError):
            parse_scene_packet(bad)
    with pytest.raises(errors.InvalidArgumentError):
        scene_raw(b"")

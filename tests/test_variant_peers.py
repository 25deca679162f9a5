"""PacketPeer.put_var/get_var/encode_buffer_max_size on every peer class and
HostEvent.var(), over real loopback sockets (UDP, a DTLS pair, a DTLSHost
pair). Facts: shared/reference/godot-wire.md §3."""

from __future__ import annotations

from typing import Any

import pytest

from dtlspeer import HostEventType, PacketPeerUDP, TLSOptions, UDPServer, errors
from dtlspeer.variant import (
    ContainerType,
    EncodedObject,
    PackedVector2Array,
    TypedArray,
    VariantDecodeError,
    VariantType,
    Vector2,
    Vector3i,
    var_to_bytes,
)
from identities import Identity, make_identity
from test_dtls import EchoServer, connect_client, handshake, run
from test_host import Recorder, connected_pair, psk_client, psk_server
from udp_helpers import until

MESSAGE: dict[str, Any] = {
    "id": 7,
    "pos": Vector2(1.5, -2.0),
    "hp": 0.1,
    "alive": True,
    "name": "bob",
    "cell": Vector3i(1, 2, 3),
    "path": PackedVector2Array([Vector2(0, 0), Vector2(1, 1)]),
    "ids": TypedArray(ContainerType.of(VariantType.INT), [1, 2, 3]),
}


@pytest.fixture(scope="module")
def ec_identity() -> Identity:
    return make_identity("ec")


def udp_pair() -> tuple[PacketPeerUDP, PacketPeerUDP]:
    a = PacketPeerUDP()
    a.bind(0, "127.0.0.1")
    b = PacketPeerUDP()
    b.bind(0, "127.0.0.1")
    a.set_dest_address("127.0.0.1", b.get_local_port())
    b.set_dest_address("127.0.0.1", a.get_local_port())
    return a, b


def test_put_var_is_one_unframed_packet_over_udp() -> None:
    a, b = udp_pair()
    try:
        a.put_var(42)
        a.put_var("hi")
        assert until(lambda: b.get_available_packet_count() >= 2)
        # rt4 over a PacketPeerUDP loopback: exactly var_to_bytes, no prefix.
        assert b.get_packet().hex() == "020000002a000000"
        assert b.get_packet().hex() == "040000000200000068690000"
        a.put_var(MESSAGE)
        a.put_var([1, "x"], godot=3)
        assert until(lambda: b.get_available_packet_count() >= 2)
        assert b.get_var() == MESSAGE
        assert b.get_var(godot=3) == [1, "x"]
        with pytest.raises(errors.WouldBlockError):
            b.get_var()
    finally:
        a.close()
        b.close()


def test_get_var_failures_consume_the_packet_and_leave_packet_error_alone() -> None:
    a, b = udp_pair()
    try:
        a.put_var(EncodedObject("Node", {"name": "x"}), full_objects=True)
        a.put_packet(b"\x02\x00\x00")  # 3 bytes: not a Variant
        a.put_var(EncodedObject("Node", {"name": "x"}), True)
        a.put_var(5)
        assert until(lambda: b.get_available_packet_count() >= 4)
        with pytest.raises(VariantDecodeError, match="allow_objects"):
            b.get_var()
        assert b.get_packet_error() is None  # as rt4: get_var leaves it at OK
        with pytest.raises(VariantDecodeError):
            b.get_var()
        assert b.get_var(allow_objects=True) == EncodedObject("Node", {"name": "x"})
        assert b.get_var() == 5
        assert b.get_available_packet_count() == 0
    finally:
        a.close()
        b.close()


def test_encode_buffer_max_size_as_godot() -> None:
    a, b = udp_pair()
    try:
        assert a.encode_buffer_max_size == 8_388_608
        with pytest.raises(errors.InvalidArgumentError):
            a.encode_buffer_max_size = 1000
        with pytest.raises(errors.InvalidArgumentError):
            a.encode_buffer_max_size = 256 * 1024 * 1024 + 1
        with pytest.raises(errors.ArgumentTypeError):
            a.encode_buffer_max_size = 4096.0  # type: ignore[assignment]
        assert a.encode_buffer_max_size == 8_388_608
        a.encode_buffer_max_size = 3000
        assert a.encode_buffer_max_size == 4096  # rounded up to a power of two
        assert b.encode_buffer_max_size == 8_388_608  # per peer
        # rt4 with 4096: a 4108-byte encoding fails, exactly 4096 bytes is fine.
        with pytest.raises(errors.LimitError):
            a.put_var(bytes(4100))  # 4 + 4 + 4100 = 4108
        assert len(var_to_bytes(bytes(4088))) == 4096
        a.put_var(bytes(4088))
        assert until(lambda: b.get_available_packet_count() >= 1)
        assert b.get_var() == bytes(4088)
        a.put_packet(bytes(5000))  # the limit is put_var's only
    finally:
        a.close()
        b.close()


def test_udp_server_peer_has_put_var_and_get_var() -> None:
    server = UDPServer()
    server.listen(0, "127.0.0.1")
    client = PacketPeerUDP()
    client.connect_to_host("127.0.0.1", server.get_local_port())
    try:
        client.put_var({"hello": Vector2(1, 2)})
        assert until(lambda: (server.poll(), server.is_connection_available())[1])
        peer = server.take_connection()
        assert peer is not None
        assert peer.get_var() == {"hello": Vector2(1, 2)}
        peer.put_var([True, None])
        assert until(lambda: client.get_available_packet_count() > 0)
        assert client.get_var() == [True, None]
    finally:
        client.close()
        server.stop()


def test_put_var_and_get_var_over_dtls_both_ways(ec_identity: Identity) -> None:
    server = EchoServer(ec_identity, echo=False)
    client = connect_client(server.port, options=TLSOptions.client(ec_identity[1]))
    peer = handshake(server, client)
    try:
        client.put_var(MESSAGE)
        assert run(lambda: peer.get_available_packet_count() > 0, server, client)
        assert peer.get_var() == MESSAGE
        peer.put_var([MESSAGE, {"n": 1}])
        assert run(lambda: client.get_available_packet_count() > 0, server, client)
        assert client.get_var() == [MESSAGE, {"n": 1}]
    finally:
        client.disconnect_from_peer()
        server.stop()


def test_dtlshost_put_var_and_event_var() -> None:
    server, client = psk_server(), psk_client()
    rec = Recorder(server, client)
    try:
        server_peer, client_peer = connected_pair(rec, server, client)
        client_peer.put_var(MESSAGE)
        client_peer.put_packet(b"\xff\x00\x00\x00")  # not a Variant
        assert rec.run(lambda: len(rec.of(server, HostEventType.RECEIVE)) >= 2)
        good, bad = rec.of(server, HostEventType.RECEIVE)[:2]
        assert good.var() == MESSAGE
        with pytest.raises(VariantDecodeError):
            bad.var()
        with pytest.raises(errors.StateError):
            rec.of(server, HostEventType.CONNECT)[0].var()
        server_peer.put_var({"ack": 1})
        assert rec.run(lambda: len(rec.of(client, HostEventType.RECEIVE)) >= 1)
        assert rec.of(client, HostEventType.RECEIVE)[0].var() == {"ack": 1}
        assert server_peer.encode_buffer_max_size == 8_388_608
    finally:
        client.close()
        server.close()


def test_dtlshost_variant_is_decoded_straight_from_event_data() -> None:
    # No copy: decode_var works on the event's bytes object itself.
    server, client = psk_server(), psk_client()
    rec = Recorder(server, client)
    try:
        _, client_peer = connected_pair(rec, server, client)
        client_peer.put_var("x" * 100)
        assert rec.run(lambda: len(rec.of(server, HostEventType.RECEIVE)) >= 1)
        event = rec.of(server, HostEventType.RECEIVE)[0]
        assert type(event.data) is bytes
        assert event.var() == "x" * 100
    finally:
        client.close()
        server.close()

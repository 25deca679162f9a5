"""Godot 4 parity gaps of issue 12 §4: behaviours a GDScript port relies on.

Each test names the Godot source behaviour it checks (Godot 4.6-dev
core/io/packet_peer.cpp, packet_peer_udp.cpp, udp_server.cpp,
modules/mbedtls/dtls_server_mbedtls.cpp, packet_peer_mbed_dtls.cpp).
"""

from __future__ import annotations

import socket

import pytest

from dtlspeer import (
    DTLSServer,
    PacketPeerDTLS,
    PacketPeerUDP,
    TLSOptions,
    UDPServer,
    errors,
)
from identities import Identity, make_identity
from udp_helpers import until

LOCAL = "127.0.0.1"
Status = PacketPeerDTLS.Status


@pytest.fixture(scope="module")
def ec_identity() -> Identity:
    return make_identity("ec")


# ---- packet address of a peer taken from a UDPServer -------------------------


def test_taken_udp_peer_reports_the_client_address_at_once() -> None:
    """Godot UDPServer.poll() makes each pending peer with
    connect_shared_socket(), which sets packet_ip/packet_port to the client's
    address: get_packet_ip()/get_packet_port() answer before any get_packet()."""
    server = UDPServer()
    server.listen(0, LOCAL)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind((LOCAL, 0))
        client.sendto(b"hello", (LOCAL, server.get_local_port()))
        assert until(server.is_connection_available, server.poll)
        peer = server.take_connection()
        assert peer is not None
        assert (peer.get_packet_ip(), peer.get_packet_port()) == (LOCAL, client.getsockname()[1])
        assert peer.get_packet() == b"hello"
        assert (peer.get_packet_ip(), peer.get_packet_port()) == (LOCAL, client.getsockname()[1])
    server.stop()


# ---- get_packet_error() after a get_packet() that raised ------------------------


def test_get_packet_error_follows_a_get_packet_on_a_closed_peer() -> None:
    """Godot PacketPeer::_get_packet stores the result of every get_packet call
    (last_get_error), also when the peer is closed (_poll returns FAILED): a
    get_packet() that raised StateError must not leave the previous, stale
    result in get_packet_error()."""
    peer = PacketPeerUDP()
    peer.bind(0, LOCAL)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.sendto(b"ok", (LOCAL, peer.get_local_port()))
        assert peer.wait(2.0)
    assert peer.get_packet() == b"ok"
    assert peer.get_packet_error() is None
    peer.close()
    with pytest.raises(errors.StateError) as info:
        peer.get_packet()
    assert peer.get_packet_error() is info.value
    with pytest.raises(errors.StateError) as info:
        peer.get_packet_into(bytearray(16))
    assert peer.get_packet_error() is info.value


def test_get_packet_error_follows_a_get_packet_after_the_server_stopped() -> None:
    """A peer taken from a UDPServer that stopped is detached (Godot:
    disconnect_shared_socket closes it): get_packet() raises StateError and
    get_packet_error() is that exception, not the earlier success."""
    server = UDPServer()
    server.listen(0, LOCAL)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.sendto(b"one", (LOCAL, server.get_local_port()))
        assert until(server.is_connection_available, server.poll)
    peer = server.take_connection()
    assert peer is not None and peer.get_packet() == b"one"
    assert peer.get_packet_error() is None
    server.stop()
    with pytest.raises(errors.StateError) as info:
        peer.get_packet()
    assert peer.get_packet_error() is info.value

"""Bad input and limits for the UDP layer: odd datagram sizes, floods, misuse."""

from __future__ import annotations

import errno
import gc
import socket
import time

import pytest

from dtlspeer import PacketPeerUDP, UDPServer
from dtlspeer.errors import (
    AlreadyInUseError,
    ArgumentTypeError,
    InvalidArgumentError,
    ResolveError,
    SocketError,
    StateError,
)
from udp_helpers import ICMP_ERRORS, alloc_bytes, can_inject_icmp, inject_icmp, until

LOCAL = "127.0.0.1"
MAX_V4 = 65507


def sender() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LOCAL, 0))
    return s


def test_zero_length_datagrams_are_packets():
    """Godot accepts empty datagrams as packets; a new sender with one becomes a peer."""
    srv = UDPServer()
    srv.listen(0, LOCAL)
    s = sender()
    s.sendto(b"", (LOCAL, srv.get_local_port()))
    s.sendto(b"", (LOCAL, srv.get_local_port()))
    assert until(lambda: srv.get_stats()["packets_in"] == 2, srv.poll)
    peer = srv.take_connection()
    assert peer.get_available_packet_count() == 2
    assert peer.get_packet() == b"" and peer.get_packet() == b""
    srv.stop()
    s.close()


def test_maximum_size_ipv4_datagram_round_trip():
    """A 65507-byte datagram (IPv4 maximum) is queued whole and sent whole."""
    peer = PacketPeerUDP()
    peer.bind(0, LOCAL)
    s = sender()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
    payload = bytes(range(256)) * (MAX_V4 // 256) + b"z" * (MAX_V4 % 256)
    s.sendto(payload, (LOCAL, peer.get_local_port()))
    assert peer.wait(2.0)
    assert peer.get_packet() == payload
    peer.set_dest_address(LOCAL, s.getsockname()[1])
    peer.put_packet(payload)
    s.settimeout(2)
    assert s.recvfrom(70000)[0] == payload
    with pytest.raises(SocketError) as info:
        peer.put_packet(b"x" * (MAX_V4 + 1))
    assert info.value.errno == errno.EMSGSIZE
    with pytest.raises(InvalidArgumentError):
        peer.put_packet(b"x" * 70000)
    peer.close()
    s.close()


def test_datagram_larger_than_peer_queue_is_dropped():
    """Godot drops a packet that does not fit the ring; ours counts it and creates no
    empty pending peer for a first datagram that cannot be queued."""
    srv = UDPServer()
    srv.peer_recv_buf_size = 1024
    srv.listen(0, LOCAL)
    s = sender()
    s.sendto(b"x" * 2000, (LOCAL, srv.get_local_port()))
    assert until(lambda: srv.get_stats()["packets_in"] == 1, srv.poll)
    assert not srv.is_connection_available()
    assert srv.get_stats()["drop_queue_full"] == 1
    s.sendto(b"small", (LOCAL, srv.get_local_port()))
    peer = None
    assert until(srv.is_connection_available, srv.poll)
    peer = srv.take_connection()
    s.sendto(b"y" * 2000, (LOCAL, srv.get_local_port()))
    assert until(lambda: peer.get_stats()["drop_queue_full"] == 1, srv.poll)
    assert peer.get_available_packet_count() == 1 and peer.get_packet() == b"small"
    srv.stop()
    s.close()


def test_client_queue_smaller_than_one_datagram():
    """recv_buf_size smaller than a datagram: every datagram is dropped and counted."""
    peer = PacketPeerUDP()
    peer.bind(0, LOCAL, recv_buf_size=10)
    s = sender()
    s.sendto(b"too big for ten", (LOCAL, peer.get_local_port()))
    assert until(lambda: peer.get_stats()["drop_queue_full"] == 1, peer.get_available_packet_count)
    assert peer.get_available_packet_count() == 0
    peer.close()
    s.close()


def test_flood_from_100000_sources_keeps_memory_bounded():
    """100 000 distinct (address, port) senders: only max_pending_connections peers are
    kept, the rest are dropped and counted, and the extension's heap stays bounded."""
    srv = UDPServer()
    srv.pending_timeout = None
    srv.listen(0, LOCAL)
    srv._ep.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    port = srv.get_local_port()
    srv.poll()
    baseline = alloc_bytes()
    peak = baseline
    sent = 0
    addresses = [f"127.0.{a}.{b}" for a in range(1, 3) for b in range(2, 6)]
    per_address = 100_000 // len(addresses)
    for host in addresses:
        for src_port in range(20000, 20000 + per_address):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind((host, src_port))
            except OSError:
                s.close()
                continue  # port busy on this machine: skip it
            s.sendto(b"hello", (LOCAL, port))
            s.close()
            sent += 1
            if sent % 64 == 0:
                srv.poll()
                peak = max(peak, alloc_bytes())
    until(lambda: srv.get_stats()["packets_in"] >= sent, srv.poll)
    peak = max(peak, alloc_bytes())
    stats = srv.get_stats()
    assert sent > 99_000
    assert stats["packets_in"] == sent  # nothing lost in the kernel: all routed
    assert srv.get_pending_count() == 16
    assert stats["pending_created"] == 16
    assert stats["drop_pending_full"] == sent - 16
    # Bound: 16 pending slots, each with its 512-byte initial queue, plus slot
    # array and hash table growth (a few KiB). Independent of the sender count.
    growth = peak - baseline
    print(f"flood: {sent} senders, heap growth {growth} bytes")
    assert growth <= 16 * 1024 + 16 * 512 + 8192
    srv.stop()
    gc.collect()


def test_stop_releases_all_native_memory():
    """Every native allocation of a server and its peers is freed by stop() + collection."""
    gc.collect()
    before = alloc_bytes()
    srv = UDPServer()
    srv.listen(0, LOCAL)
    s = sender()
    for i in range(50):
        s.sendto(b"x" * i, (LOCAL, srv.get_local_port()))
    # srv bound as a default, not a closure over the name deleted below (ruff F821).
    assert until(lambda srv=srv: srv.get_stats()["packets_in"] == 50, srv.poll)
    peer = srv.take_connection()
    assert peer.get_available_packet_count() == 50
    srv.stop()
    del srv, peer
    gc.collect()
    assert alloc_bytes() == before
    s.close()


def test_port_already_in_use():
    """Godot bind on a busy port fails (ERR_UNAVAILABLE); ours SocketError(EADDRINUSE)."""
    a = PacketPeerUDP()
    a.bind(0, LOCAL)
    b = PacketPeerUDP()
    with pytest.raises(SocketError) as info:
        b.bind(a.get_local_port(), LOCAL)
    assert info.value.errno == errno.EADDRINUSE
    assert not b.is_bound()
    with pytest.raises(AlreadyInUseError):
        a.bind(0, LOCAL)  # Godot ERR_ALREADY_IN_USE
    a.close()


@pytest.mark.parametrize("port", [-1, 65536, 1 << 40])
def test_bad_ports(port):
    """Godot: port outside 0-65535 is ERR_INVALID_PARAMETER (connect: 1-65535)."""
    with pytest.raises(InvalidArgumentError):
        PacketPeerUDP().bind(port, LOCAL)
    with pytest.raises(InvalidArgumentError):
        UDPServer().listen(port, LOCAL)
    with pytest.raises(InvalidArgumentError):
        PacketPeerUDP().connect_to_host(LOCAL, port)


def test_connect_port_zero_rejected():
    """Godot connect_to_host requires port 1-65535."""
    with pytest.raises(InvalidArgumentError):
        PacketPeerUDP().connect_to_host(LOCAL, 0)
    with pytest.raises(InvalidArgumentError):
        PacketPeerUDP().set_dest_address(LOCAL, 0)


@pytest.mark.parametrize("address", ["localhost", "300.1.1.1", "", "::g", "1.2.3.4%lo"])
def test_bind_requires_literal_ip(address):
    """Godot bind/listen accept only literal IPs (or "*"): others are invalid."""
    with pytest.raises(InvalidArgumentError):
        PacketPeerUDP().bind(0, address)
    with pytest.raises(InvalidArgumentError):
        UDPServer().listen(0, address)


def test_unresolvable_host():
    """Godot set_dest_address: resolution failure is ERR_CANT_RESOLVE (ours ResolveError)."""
    peer = PacketPeerUDP()
    with pytest.raises(ResolveError):
        peer.set_dest_address("no-such-host.invalid", 9)
    with pytest.raises(InvalidArgumentError):
        peer.connect_to_host("", 9)
    assert not peer.is_bound()


def test_ipv6_destination_on_ipv4_socket():
    """An IPv6 destination on an IPv4-bound socket is an invalid argument, not a crash."""
    peer = PacketPeerUDP()
    peer.bind(0, LOCAL)
    with pytest.raises(InvalidArgumentError):
        peer.set_dest_address("::1", 9)
    peer.close()


def test_wrong_types():
    """Wrong argument types raise ArgumentTypeError (a TypeError)."""
    peer = PacketPeerUDP()
    with pytest.raises(TypeError):
        peer.bind("80", LOCAL)
    with pytest.raises(ArgumentTypeError):
        peer.bind(0, 127)
    with pytest.raises(ArgumentTypeError):
        peer.bind(True, LOCAL)
    with pytest.raises(ArgumentTypeError):
        peer.bind(0, LOCAL, recv_buf_size=1.5)
    with pytest.raises(InvalidArgumentError):
        peer.bind(0, LOCAL, recv_buf_size=0)
    with pytest.raises(ArgumentTypeError):
        peer.set_dest_address(None, 9)
    peer.set_dest_address(LOCAL, 9)
    with pytest.raises(ArgumentTypeError):
        peer.put_packet("text")
    with pytest.raises(ArgumentTypeError):
        peer.put_packet(None)
    peer.bind(0, LOCAL)
    with pytest.raises(ArgumentTypeError):
        peer.get_packet_into(b"immutable")
    with pytest.raises(ArgumentTypeError):
        peer.wait("1")
    with pytest.raises(InvalidArgumentError):
        peer.wait(-1)
    with pytest.raises(ArgumentTypeError):
        peer.set_broadcast_enabled(1)
    with pytest.raises(InvalidArgumentError):
        peer.join_multicast_group("10.0.0.1", "")
    with pytest.raises(InvalidArgumentError):
        peer.join_multicast_group("239.1.1.1", "no-such-interface0")
    peer.close()
    srv = UDPServer()
    with pytest.raises(ArgumentTypeError):
        srv.max_pending_connections = "16"
    with pytest.raises(InvalidArgumentError):
        srv.max_pending_connections = -1  # Godot rejects negative values
    with pytest.raises(InvalidArgumentError):
        srv.pending_timeout = -1.0
    with pytest.raises(InvalidArgumentError):
        srv.peer_recv_buf_size = 0


def test_server_misuse_before_listen():
    """Godot poll() on a non-listening server is ERR_UNCONFIGURED (ours StateError)."""
    srv = UDPServer()
    assert not srv.is_listening() and not srv.is_connection_available()
    with pytest.raises(StateError):
        srv.poll()
    assert srv.take_connection() is None  # Godot: null (is_connection_available is false)
    with pytest.raises(StateError):
        srv.get_local_port()
    srv.stop()  # harmless


def test_connection_refused_is_counted_not_raised():
    """A remote ICMP port-unreachable never raises (ours; Godot reports an error)."""
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind((LOCAL, 0))
    dead_port = dead.getsockname()[1]
    dead.close()
    peer = PacketPeerUDP()
    peer.connect_to_host(LOCAL, dead_port)
    peer.put_packet(b"anyone?")
    assert until(lambda: peer.get_stats()["recv_errors"] >= 1, peer.get_available_packet_count)
    assert peer.get_available_packet_count() == 0
    assert peer.wait(0.01) in (True, False)
    peer.close()


def test_stale_handle_cannot_reach_reused_slot():
    """A closed peer's handle is stale: even when its slot is reused by another sender,
    the old object cannot read or send through it (generation counters)."""
    srv = UDPServer()
    srv.listen(0, LOCAL)
    port = srv.get_local_port()
    a, b = sender(), sender()
    a.sendto(b"a", (LOCAL, port))
    assert until(srv.is_connection_available, srv.poll)
    first = srv.take_connection()
    old_handle = first._handle
    from dtlspeer._binding import ffi, lib

    assert lib.dp_endpoint_slot_close(srv._ep.ptr, old_handle) == 0
    b.sendto(b"b", (LOCAL, port))
    assert until(srv.is_connection_available, srv.poll)
    second = srv.take_connection()
    assert second._handle & 0xFFFFFFFF == old_handle & 0xFFFFFFFF  # same slot index
    assert second._handle != old_handle
    buf = ffi.new("char[]", 16)
    assert lib.dp_endpoint_recv(srv._ep.ptr, old_handle, buf, 16, ffi.NULL) == lib.DP_ERR_CLOSED
    assert lib.dp_endpoint_send(srv._ep.ptr, old_handle, ffi.NULL, b"x", 1) == lib.DP_ERR_CLOSED
    assert second.get_packet() == b"b"
    srv.stop()
    a.close()
    b.close()


@pytest.mark.skipif(not can_inject_icmp(), reason="forging ICMP needs a raw socket (root)")
@pytest.mark.parametrize("kind", sorted(ICMP_ERRORS))
def test_every_icmp_error_is_counted_not_raised(kind):
    """Issue 11.3: each ICMP error Linux turns into an errno (ENOPROTOOPT, EHOSTDOWN,
    ENONET, EPROTO, EMSGSIZE, EACCES...) is remote, unauthenticated news: receiving
    and sending go on, the error is counted. 127.0.0.77: the kernel caches what a
    forged "fragmentation needed" says per destination; keep it off 127.0.0.1."""
    target = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target.bind(("127.0.0.77", 0))
    peer = PacketPeerUDP()
    peer.connect_to_host("127.0.0.77", target.getsockname()[1])
    peer.put_packet(b"hello")
    assert target.recvfrom(100)[0] == b"hello"
    assert peer._ep is not None
    me = peer._ep.sock.getsockname()
    inject_icmp(me, target.getsockname(), kind)
    assert until(lambda: peer.get_stats()["recv_errors"] >= 1, peer.get_available_packet_count)
    inject_icmp(me, target.getsockname(), kind)  # now consumed by the next send
    time.sleep(0.05)
    peer.put_packet(b"still here")  # sent, not lost to the pending error
    assert target.recvfrom(100)[0] == b"still here"
    target.sendto(b"answer", me)
    assert until(lambda: peer.get_available_packet_count() == 1)
    assert peer.get_packet() == b"answer"
    assert peer.get_stats()["recv_errors"] == 2
    peer.close()
    target.close()

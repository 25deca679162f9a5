"""Godot semantics of PacketPeerUDP and UDPServer, over loopback sockets.

Each test's docstring names the Godot behaviour it checks (reference:
godot-api.md §1.1-1.3, §2.1-2.2).
"""

from __future__ import annotations

import gc
import socket

import pytest

from dtlspeer import PacketPeerUDP, UDPServer
from dtlspeer.errors import StateError, WouldBlockError
from udp_helpers import has_ipv6, until

LOCAL = "127.0.0.1"


@pytest.fixture
def server():
    srv = UDPServer()
    srv.listen(0, LOCAL)
    yield srv
    srv.stop()


def plain_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LOCAL, 0))
    s.settimeout(2.0)
    return s


def take(srv: UDPServer) -> PacketPeerUDP:
    assert until(srv.is_connection_available, srv.poll)
    peer = srv.take_connection()
    assert peer is not None
    return peer


# ---- PacketPeerUDP ---------------------------------------------------------


def test_bind_receive_and_packet_source():
    """Godot bind() + get_packet(): get_packet_ip/port are those of the last packet read."""
    peer = PacketPeerUDP()
    peer.bind(0, LOCAL)
    assert peer.is_bound() and not peer.is_socket_connected()
    a, b = plain_socket(), plain_socket()
    a.sendto(b"from-a", (LOCAL, peer.get_local_port()))
    b.sendto(b"from-b", (LOCAL, peer.get_local_port()))
    assert until(lambda: peer.get_available_packet_count() == 2)
    assert peer.get_packet() == b"from-a"
    assert (peer.get_packet_ip(), peer.get_packet_port()) == (LOCAL, a.getsockname()[1])
    assert peer.get_packet() == b"from-b"
    assert peer.get_packet_port() == b.getsockname()[1]
    assert peer.get_available_packet_count() == 0
    peer.close()
    a.close()
    b.close()


def test_put_packet_opens_socket_and_set_dest_resolves_names():
    """Godot put_packet opens an ephemeral socket on demand; set_dest_address resolves names."""
    rx = plain_socket()
    peer = PacketPeerUDP()
    peer.set_dest_address("localhost", rx.getsockname()[1])
    assert not peer.is_bound()
    peer.put_packet(b"hello")
    data, src = rx.recvfrom(100)
    assert data == b"hello"
    assert peer.is_bound() and peer.get_local_port() == src[1]
    rx.sendto(b"reply", src)
    assert peer.wait(2.0)
    assert peer.get_packet() == b"reply"
    assert peer.get_stats()["packets_out"] == 1
    peer.close()
    rx.close()


def test_empty_put_packet_sends_nothing():
    """Godot PacketPeer.put_packet: an empty buffer returns OK and sends nothing."""
    rx = plain_socket()
    rx.settimeout(0.2)
    peer = PacketPeerUDP()
    peer.set_dest_address(LOCAL, rx.getsockname()[1])
    peer.put_packet(b"")
    peer.put_packet(bytearray())
    assert not peer.is_bound()  # nothing needed a socket
    peer.put_packet(memoryview(b"x"))
    assert rx.recvfrom(10)[0] == b"x"
    with pytest.raises(socket.timeout):
        rx.recvfrom(10)
    peer.close()
    rx.close()


def test_connect_to_host_filters_and_flushes():
    """Godot connect_to_host: afterwards only that address is received, sends go there,
    and packets queued before are flushed."""
    peer = PacketPeerUDP()
    peer.bind(0, LOCAL)
    good, other = plain_socket(), plain_socket()
    good.sendto(b"before", (LOCAL, peer.get_local_port()))
    assert until(lambda: peer.get_available_packet_count() == 1)
    peer.connect_to_host(LOCAL, good.getsockname()[1])
    assert peer.is_socket_connected()
    assert peer.get_available_packet_count() == 0  # flushed
    other.sendto(b"intruder", (LOCAL, peer.get_local_port()))
    good.sendto(b"after", (LOCAL, peer.get_local_port()))
    assert peer.wait(2.0)
    assert until(lambda: peer.get_available_packet_count() >= 1)
    assert peer.get_packet() == b"after"
    assert peer.get_available_packet_count() == 0
    peer.put_packet(b"to-good")
    assert good.recvfrom(100)[0] == b"to-good"
    with pytest.raises(StateError):
        peer.set_dest_address(LOCAL, 9)  # Godot: refused on a connected socket
    peer.close()
    assert not peer.is_socket_connected()
    good.close()
    other.close()


def test_connect_to_host_accepts_names_and_opens_socket():
    """Godot connect_to_host opens the socket if needed (ours also accepts host names)."""
    rx = plain_socket()
    peer = PacketPeerUDP()
    peer.connect_to_host("localhost", rx.getsockname()[1])
    assert peer.is_bound() and peer.is_socket_connected()
    peer.put_packet(b"named")
    assert rx.recvfrom(100)[0] == b"named"
    peer.close()
    rx.close()


def test_recv_buf_size_is_queue_bytes_and_drops_new_packets():
    """Godot recv_buf_size: the userland queue in bytes (payload + 24 per packet);
    a new packet that does not fit is dropped (ours: counted; exact bytes, no rounding)."""
    peer = PacketPeerUDP()
    peer.bind(0, LOCAL, recv_buf_size=3 * (100 + 24))
    tx = plain_socket()
    for i in range(5):
        tx.sendto(bytes([i]) * 100, (LOCAL, peer.get_local_port()))
    assert until(lambda: peer.get_stats()["packets_in"] == 5, peer.get_available_packet_count)
    assert peer.get_available_packet_count() == 3
    assert peer.get_stats()["drop_queue_full"] == 2
    assert [peer.get_packet()[0] for _ in range(3)] == [0, 1, 2]  # the oldest kept
    peer.close()
    tx.close()


def test_get_packet_on_empty_queue_sets_packet_error():
    """Godot get_packet on an empty queue fails with ERR_UNAVAILABLE, readable with
    get_packet_error() (ours raises WouldBlockError and keeps it there)."""
    peer = PacketPeerUDP()
    peer.bind(0, LOCAL)
    with pytest.raises(WouldBlockError) as info:
        peer.get_packet()
    assert peer.get_packet_error() is info.value
    tx = plain_socket()
    tx.sendto(b"ok", (LOCAL, peer.get_local_port()))
    assert peer.wait(2.0)
    assert peer.get_packet() == b"ok"
    assert peer.get_packet_error() is None
    peer.close()
    tx.close()


def test_get_packet_into_reuses_a_buffer():
    """Ours (no Godot equivalent): get_packet_into fills a caller buffer; too small keeps it
    queued."""
    peer = PacketPeerUDP()
    peer.bind(0, LOCAL)
    tx = plain_socket()
    tx.sendto(b"0123456789", (LOCAL, peer.get_local_port()))
    assert peer.wait(2.0)
    small = bytearray(4)
    with pytest.raises(Exception) as info:
        peer.get_packet_into(small)
    assert peer.get_packet_error() is info.value
    assert peer.peek_packet_size() == 10
    buf = bytearray(64)
    n = peer.get_packet_into(buf)
    assert bytes(buf[:n]) == b"0123456789"
    assert peer.get_packet_port() == tx.getsockname()[1]
    peer.close()
    tx.close()


def test_wait_timeout_returns_false():
    """Godot wait() blocks until readable; ours takes a timeout and returns False when it ends."""
    peer = PacketPeerUDP()
    peer.bind(0, LOCAL)
    assert peer.wait(0.01) is False
    assert peer.wait(0) is False
    peer.close()


def test_double_close_and_use_after_close():
    """Godot close() closes the socket; ours: idempotent, later use raises StateError."""
    peer = PacketPeerUDP()
    peer.bind(0, LOCAL)
    peer.close()
    peer.close()
    assert not peer.is_bound()
    for call in (peer.get_available_packet_count, peer.get_packet, peer.get_local_port):
        with pytest.raises(StateError):
            call()
    with pytest.raises(StateError):
        peer.wait(0)
    with pytest.raises(StateError):
        peer.put_packet(b"x")  # no destination: Godot ERR_UNCONFIGURED
    peer.bind(0, LOCAL)  # reusable after close, as in Godot
    assert peer.is_bound()
    peer.close()


def test_broadcast_flag():
    """Godot set_broadcast_enabled: off by default, required for broadcast sends."""
    peer = PacketPeerUDP()
    peer.bind(0, "0.0.0.0")
    sock = peer._ep.sock  # the flag must reach the OS socket
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 0
    peer.set_broadcast_enabled(True)
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) != 0
    peer.set_broadcast_enabled(False)
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 0
    peer.close()


def test_multicast_join_leave_on_loopback():
    """Godot join/leave_multicast_group: join a group, receive a datagram sent to it, leave."""
    group = "239.255.77.77"
    rx = PacketPeerUDP()
    rx.bind(0, "0.0.0.0")
    try:
        rx.join_multicast_group(group, "lo")
    except OSError as exc:
        rx.close()
        pytest.skip(f"multicast join on lo not possible here: {exc}")
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(LOCAL))
    tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    try:
        tx.sendto(b"mcast", (group, rx.get_local_port()))
    except OSError as exc:
        pytest.skip(f"loopback cannot send multicast here: {exc}")
    if not rx.wait(1.0):
        pytest.skip("loopback does not deliver multicast here (join/leave still succeeded)")
    assert rx.get_packet() == b"mcast"
    rx.leave_multicast_group(group, "lo")
    with pytest.raises(OSError):
        rx.leave_multicast_group(group, "lo")  # not a member any more
    rx.close()
    tx.close()


@pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback")
def test_dual_stack_star_bind_receives_ipv4_and_ipv6():
    """Godot bind("*"): an IPv6 dual-stack socket; IPv4 senders show as dotted IPv4."""
    peer = PacketPeerUDP()
    peer.bind(0, "*")
    port = peer.get_local_port()
    v4 = plain_socket()
    v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    v6.bind(("::1", 0))
    v4.sendto(b"four", (LOCAL, port))
    assert peer.wait(2.0)
    assert peer.get_packet() == b"four" and peer.get_packet_ip() == LOCAL
    v6.sendto(b"six", ("::1", port))
    assert peer.wait(2.0)
    assert peer.get_packet() == b"six" and peer.get_packet_ip() == "::1"
    peer.set_dest_address(LOCAL, v4.getsockname()[1])  # IPv4 target on a dual-stack socket
    peer.put_packet(b"back4")
    v4.settimeout(2)
    assert v4.recvfrom(10)[0] == b"back4"
    peer.close()
    v4.close()
    v6.close()


@pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback")
def test_ipv6_server_round_trip():
    """Godot UDPServer over IPv6: listen on ::1, take the peer, reply to it."""
    srv = UDPServer()
    srv.listen(0, "::1")
    client = PacketPeerUDP()
    client.connect_to_host("::1", srv.get_local_port())
    client.put_packet(b"v6")
    peer = take(srv)
    assert peer.get_packet() == b"v6" and peer.get_packet_ip() == "::1"
    peer.put_packet(b"ack")
    assert client.wait(2.0) and client.get_packet() == b"ack"
    srv.stop()
    client.close()


# ---- UDPServer -------------------------------------------------------------


def test_take_connection_fifo_with_first_packets(server):
    """Godot take_connection: FIFO by first packet; the peer is connected and already
    holds its first packet(s)."""
    port = server.get_local_port()
    clients = [plain_socket() for _ in range(3)]
    for i, c in enumerate(clients):
        c.sendto(b"first-%d" % i, (LOCAL, port))
        assert until(lambda n=i + 1: server.get_pending_count() == n, server.poll)
    clients[0].sendto(b"second-0", (LOCAL, port))
    assert until(lambda: server.get_stats()["packets_in"] == 4, server.poll)
    peers = [server.take_connection() for _ in range(3)]
    assert server.take_connection() is None
    assert not server.is_connection_available()
    for i, (peer, c) in enumerate(zip(peers, clients)):
        assert peer.is_socket_connected() and peer.is_bound()
        assert peer.get_local_port() == port
        assert peer.get_packet() == b"first-%d" % i
        assert peer.get_packet_port() == c.getsockname()[1]
    assert peers[0].get_available_packet_count() == 1
    assert peers[0].get_packet() == b"second-0"
    for c in clients:
        c.close()


def test_is_connection_available_does_not_read_socket(server):
    """Godot 4 is_connection_available() does not poll the socket: poll() comes first."""
    c = plain_socket()
    c.sendto(b"x", (LOCAL, server.get_local_port()))
    assert not server.is_connection_available()
    assert until(server.is_connection_available, server.poll)
    c.close()


def test_server_peer_sends_through_shared_socket(server):
    """Godot: server peers send with sendto on the shared socket (source = the server port)."""
    c = plain_socket()
    c.sendto(b"hi", (LOCAL, server.get_local_port()))
    peer = take(server)
    peer.put_packet(b"hello back")
    data, src = c.recvfrom(100)
    assert data == b"hello back" and src == (LOCAL, server.get_local_port())
    assert peer.get_stats()["packets_out"] == 1
    assert server.get_stats()["packets_out"] == 1
    c.close()


def test_taken_peer_stays_routed_until_closed(server):
    """Godot: the server routes a taken peer's datagrams to it until close() detaches it;
    then the address is a new pending connection (Godot #86921 behaviour, by design)."""
    c = plain_socket()
    port = server.get_local_port()
    c.sendto(b"one", (LOCAL, port))
    peer = take(server)
    c.sendto(b"two", (LOCAL, port))
    assert until(lambda: peer.get_available_packet_count() == 2, server.poll)
    assert not server.is_connection_available()
    peer.close()
    assert not peer.is_bound() and not peer.is_socket_connected()
    assert server.is_listening()  # the shared socket stays open
    c.sendto(b"three", (LOCAL, port))
    again = take(server)
    assert again.get_packet() == b"three"
    c.close()


def test_collected_peer_is_unrouted(server):
    """Godot: dropping the last reference to a taken peer closes it (its destructor), so
    the sender becomes pending again. Ours does it through a finalizer."""
    c = plain_socket()
    port = server.get_local_port()
    c.sendto(b"a", (LOCAL, port))
    peer = take(server)
    del peer
    gc.collect()
    c.sendto(b"b", (LOCAL, port))
    assert until(server.is_connection_available, server.poll)
    assert server.take_connection().get_packet() == b"b"
    c.close()


def test_stop_detaches_peers_and_drops_pending():
    """Godot stop(): closes the socket, frees pending peers, detaches taken ones; a
    detached peer's put_packet opens a new ephemeral socket to the same address."""
    srv = UDPServer()
    srv.listen(0, LOCAL)
    port = srv.get_local_port()
    a, b = plain_socket(), plain_socket()
    a.sendto(b"a", (LOCAL, port))
    peer = take(srv)
    b.sendto(b"b", (LOCAL, port))
    assert until(srv.is_connection_available, srv.poll)
    srv.stop()
    srv.stop()  # idempotent
    assert not srv.is_listening() and not srv.is_connection_available()
    assert not peer.is_bound() and not peer.is_socket_connected()
    with pytest.raises(StateError):
        peer.get_packet()
    with pytest.raises(StateError):
        srv.poll()
    assert srv.take_connection() is None  # Godot: null, no error
    peer.put_packet(b"after-stop")
    data, src = a.recvfrom(100)
    assert data == b"after-stop" and src[1] != port
    peer.close()
    a.close()
    b.close()


def test_max_pending_connections_limits_and_zero_refuses(server):
    """Godot max_pending_connections: default 16, new senders beyond it are dropped,
    0 refuses every new peer (ENet's toggle)."""
    assert server.max_pending_connections == 16
    server.max_pending_connections = 2
    port = server.get_local_port()
    clients = [plain_socket() for _ in range(4)]
    for c in clients:
        c.sendto(b"x", (LOCAL, port))
    assert until(lambda: server.get_stats()["packets_in"] == 4, server.poll)
    assert server.get_pending_count() == 2
    assert server.get_stats()["drop_pending_full"] == 2
    server.max_pending_connections = 1  # ours: trims the newest beyond the limit
    assert server.get_pending_count() == 1
    taken = server.take_connection()
    assert taken is not None
    assert taken.get_packet_port() == clients[0].getsockname()[1]  # the oldest kept
    server.max_pending_connections = 0
    clients[3].sendto(b"y", (LOCAL, port))
    assert until(lambda: server.get_stats()["packets_in"] == 5, server.poll)
    assert not server.is_connection_available()
    assert server.get_stats()["drop_pending_full"] == 3
    for c in clients:
        c.close()


def test_pending_peers_expire(server, monkeypatch):
    """Godot pending peers never expire (a defect); ours expire after pending_timeout."""
    import dtlspeer.udp as udp

    now = [1_000_000]
    monkeypatch.setattr(udp, "_monotonic_ms", lambda: now[0])
    server.pending_timeout = 5.0
    c = plain_socket()
    c.sendto(b"x", (LOCAL, server.get_local_port()))
    assert until(server.is_connection_available, server.poll)
    now[0] += 4_999
    server.poll()
    assert server.is_connection_available()
    now[0] += 1
    server.poll()
    assert not server.is_connection_available()
    assert server.get_stats()["pending_expired"] == 1
    c.sendto(b"y", (LOCAL, server.get_local_port()))  # comes back as a new pending peer
    assert until(server.is_connection_available, server.poll)
    c.close()


def test_listen_refuses_twice_and_never_sets_reuseaddr(server):
    """A second listen is ERR_ALREADY_IN_USE. Godot's listen sets SO_REUSEADDR;
    ours does not (another local user could take the port over on Linux)."""
    from dtlspeer.errors import AlreadyInUseError

    assert server._ep.sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
    with pytest.raises(AlreadyInUseError):
        server.listen(0, LOCAL)


def test_server_peer_refuses_socket_changes(server):
    """Godot: server peers return ERR_LOCKED for connect_to_host and socket options."""
    c = plain_socket()
    c.sendto(b"x", (LOCAL, server.get_local_port()))
    peer = take(server)
    with pytest.raises(StateError):
        peer.connect_to_host(LOCAL, 9)
    with pytest.raises(StateError):
        peer.set_broadcast_enabled(True)
    with pytest.raises(StateError):
        peer.join_multicast_group("239.1.1.1", "")
    with pytest.raises(StateError):
        peer.set_dest_address(LOCAL, 9)
    c.close()


def test_server_wait_on_shared_socket(server):
    """Godot wait() on a server peer waits on the shared server socket."""
    c = plain_socket()
    port = server.get_local_port()
    c.sendto(b"x", (LOCAL, port))
    peer = take(server)
    assert peer.wait(0) is True  # already holds a packet
    peer.get_packet()
    assert peer.wait(0.01) is False
    c.sendto(b"y", (LOCAL, port))
    assert peer.wait(2.0) is True  # the socket became readable
    assert until(lambda: peer.get_available_packet_count() == 1, server.poll)
    c.close()

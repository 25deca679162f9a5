"""Issue 11 items 5 and 6: per-peer state only after the cookie gate, and
bounded half-open handshakes.

Item 5: once a DTLSServer took a connection from a UDPServer, the endpoint
judges unknown senders in C before any pending slot exists: spoofed
cookieless hellos are answered statelessly, garbage is dropped, and only
cookie-verified senders become pending connections (the flood benchmark,
``python -m benchmarks --only flood``, measures the latency part).

Item 6: admitted handshakes are bounded per IP address and in total; when
the table is full, a new verified client evicts the oldest handshake that
made no progress; connected peers are never evicted.
"""

from __future__ import annotations

import socket
from contextlib import ExitStack

import pytest

from _godot_server import GodotServer
from _host_clients import PSK_IDENTITY, PSK_KEY, EngineClients, client_config
from _records import SECRET, SpoofableClient, cookie_for, first_hello, half_open, with_cookie
from dtlspeer import DTLSHost, HostEventType, PacketPeerDTLS, TLSOptions
from identities import Identity, make_identity
from udp_helpers import until

Status = PacketPeerDTLS.Status


@pytest.fixture(scope="module")
def ec_identity() -> Identity:
    return make_identity("ec")


def udp_socket(stack: ExitStack, ip: str) -> socket.socket:
    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    sock.setblocking(False)
    sock.bind((ip, 0))
    return sock


def connect_one(server: GodotServer) -> None:
    """A client connects (and leaves): asserts the server still admits one."""
    client = server.connect_client()

    def step() -> None:
        server.step()
        client.poll()

    assert until(lambda: client.get_status() == Status.STATUS_CONNECTED, step)
    client.disconnect_from_peer()


def install_gate(server: GodotServer) -> None:
    """A first client connects: DTLSServer.take_connection installs its gate."""
    connect_one(server)


def test_spoofed_hellos_take_no_pending_slot(ec_identity: Identity) -> None:
    """Cookieless hellos from 64 unknown sources and garbage: answered or
    dropped in C, no pending slot; a legitimate client still becomes a
    pending connection and connects (Godot: every datagram takes a slot)."""
    server = GodotServer(ec_identity)
    install_gate(server)
    before = server.udp.get_stats()
    hello = first_hello()
    with ExitStack() as stack:
        for i in range(64):
            sock = udp_socket(stack, f"127.0.{10 + i // 16}.{1 + i % 16}")
            sock.sendto(hello, ("127.0.0.1", server.port))
            sock.sendto(b"\x17garbage" * 4, ("127.0.0.1", server.port))
        assert until(lambda: server.udp.get_stats()["packets_in"] >= before["packets_in"] + 128,
                     lambda: server.step(take=False))
    stats = server.udp.get_stats()
    assert stats["pending_created"] == before["pending_created"]
    assert not server.udp.is_connection_available()
    assert stats["hvr_sent"] - before["hvr_sent"] == 64
    assert stats["gate_dropped"] - before["gate_dropped"] == 64
    taken = server.taken
    client = server.connect_client()

    def step() -> None:
        server.step()
        client.poll()

    assert until(lambda: client.get_status() == Status.STATUS_CONNECTED, step)
    assert server.taken == taken + 1  # only the cookie-verified hello was pending
    assert server.peers[-1].get_status() == Status.STATUS_CONNECTED
    client.disconnect_from_peer()
    server.stop()


def test_godot_pending_slots_per_address_and_eviction(ec_identity: Identity) -> None:
    """Verified senders: at most 4 pending slots per IP address; when the 16
    pending slots are full, the oldest makes room for a newcomer."""
    server = GodotServer(ec_identity)
    install_gate(server)
    created = server.udp.get_stats()["pending_created"]

    def step() -> None:
        server.step(take=False)

    with ExitStack() as stack:
        for _ in range(6):
            assert half_open(udp_socket(stack, "127.0.0.9"), server.port, step)
        assert until(lambda: server.udp.get_stats()["drop_pending_per_address"] == 2, step)
        assert server.udp.get_stats()["pending_created"] == created + 4
        for ip in range(4):
            for _ in range(4):
                assert half_open(udp_socket(stack, f"127.0.9.{ip + 1}"), server.port, step)
        assert until(lambda: server.udp.get_stats()["pending_evicted"] == 4, step)
    assert server.udp.get_stats()["drop_pending_full"] == 0
    server.stop()


def psk_host(**kwargs: object) -> DTLSHost:
    return DTLSHost(
        "127.0.0.1", 0, server_psk={PSK_IDENTITY: PSK_KEY}, **kwargs  # type: ignore[arg-type]
    )


def test_half_open_handshakes_per_address_are_bounded() -> None:
    """One IP with 24 source ports completes the cookie exchange and goes
    silent: 16 are admitted, 8 dropped (counted); other clients connect."""
    host = psk_host()

    def step() -> None:
        host.service(0)

    try:
        with ExitStack() as stack:
            for _ in range(24):
                assert half_open(
                    udp_socket(stack, "127.0.0.7"), host.get_local_port(), step, client_config()
                )
            assert until(lambda: host.get_stats()["dropped_handshake_per_address"] == 8, step)
            assert host.get_stats()["handshaking"] == 16
            clients = EngineClients(1, host.get_local_port(), sources=1)
            try:
                clients.start(0, 1)
                connected: list[object] = []

                def pump() -> None:
                    for event in host.service(0):
                        if event.type == HostEventType.CONNECT:
                            connected.append(event.peer)
                    clients.pump()

                assert until(lambda: len(connected) == 1, pump)
            finally:
                clients.close()
    finally:
        host.close()


def test_full_table_evicts_the_oldest_stalled_handshake_never_a_connected_peer() -> None:
    """max_peers 6: one connected peer plus 5 half-open handshakes (2 IPs)
    fill the table; a legitimate client evicts the oldest stalled
    handshake and connects; the connected peer is untouched."""
    host = psk_host(max_peers=6)
    events: list[tuple[HostEventType, object]] = []

    def step() -> None:
        events.extend((e.type, e.peer) for e in host.service(0))

    clients = EngineClients(2, host.get_local_port(), sources=2)
    try:
        clients.start(0, 1)

        def pump() -> None:
            step()
            clients.pump()

        assert until(lambda: sum(t == HostEventType.CONNECT for t, _ in events) == 1, pump)
        first = events[0][1]
        with ExitStack() as stack:
            for i in range(5):
                assert half_open(
                    udp_socket(stack, f"127.0.8.{1 + i % 2}"),
                    host.get_local_port(),
                    step,
                    client_config(),
                )
            assert until(lambda: host.get_stats()["peers"] == 6, step)
            clients.start(1, 2)
            assert until(lambda: sum(t == HostEventType.CONNECT for t, _ in events) == 2, pump)
        stats = host.get_stats()
        assert stats["evicted_handshakes"] == 1
        assert stats["dropped_peer_limit"] == 0
        assert first.get_status() == Status.STATUS_CONNECTED  # type: ignore[attr-defined]
        assert all(t != HostEventType.ERROR for t, _ in events)  # evictions are silent
    finally:
        clients.close()
        host.close()


def test_godot_handshakes_in_progress_per_address_are_bounded(ec_identity: Identity) -> None:
    """One IP, 20 source ports, each completes the cookie exchange and goes
    silent; the script takes every connection: 16 handshakes in progress,
    the rest refused without TLS state (counted); other clients connect."""
    server = GodotServer(ec_identity)
    install_gate(server)
    created = server.dtls.get_stats()["connections_created"]
    with ExitStack() as stack:
        for _ in range(20):
            assert half_open(udp_socket(stack, "127.0.0.11"), server.port, server.step)
        assert until(
            lambda: server.dtls.get_stats()["handshakes_refused_per_address"] == 4, server.step
        )
        assert server.dtls.get_stats()["connections_created"] - created == 16
        connect_one(server)
    server.stop()


def test_godot_full_handshake_table_evicts_the_oldest_stalled(ec_identity: Identity) -> None:
    """max_handshaking 4: four half-open handshakes (two IPs) fill it; a
    legitimate client ends the oldest (STATUS_ERROR, evicted) and connects;
    a connected peer is never touched."""
    server = GodotServer(ec_identity)
    server.dtls.setup(TLSOptions.server(*ec_identity), max_handshaking=4)
    install_gate(server)
    keeper = server.connect_client()

    def keep() -> None:
        server.step()
        keeper.poll()

    assert until(lambda: keeper.get_status() == Status.STATUS_CONNECTED, keep)
    first = server.peers[-1]
    assert until(lambda: first.get_status() == Status.STATUS_CONNECTED, keep)
    with ExitStack() as stack:
        for i in range(4):
            assert half_open(udp_socket(stack, f"127.0.12.{1 + i % 2}"), server.port, keep)
        assert until(lambda: len(server.peers) == 6, keep)
        stalled = server.peers[2]
        client = server.connect_client()

        def step() -> None:
            keep()
            client.poll()

        assert until(lambda: client.get_status() == Status.STATUS_CONNECTED, step)
        client.disconnect_from_peer()
    stats = server.dtls.get_stats()
    assert stats["handshakes_evicted"] == 1
    assert stats["handshakes_refused_limit"] == 0
    assert stalled.get_status() == Status.STATUS_ERROR
    assert "evicted" in stalled.get_last_error()
    assert first.get_status() == Status.STATUS_CONNECTED
    server.stop()


def test_a_full_table_keeps_a_connected_peers_successor(ec_identity: Identity) -> None:
    """max_peers 3: a connected peer with a (stalled) successor handshake
    from its address, plus two half-open handshakes, fill the table. A new
    client needs a peer entry: exactly one half-open entry is evicted; the
    successor (which holds no entry, so dropping it frees nothing) stays."""
    host = DTLSHost(
        "127.0.0.1", 0, server_options=TLSOptions.server(*ec_identity), cookie_secret=SECRET,
        max_peers=3,
    )
    port = host.get_local_port()
    live = SpoofableClient(port)
    try:
        live.start()

        def step() -> None:
            host.service(0)
            live.pump()

        assert until(lambda: live.connected() and host.get_stats()["connected"] == 1, step)
        hello = first_hello()
        live.forge(with_cookie(hello, cookie_for(live.addr[0], live.addr[1], hello)))
        assert until(lambda: host.get_stats()["successors"] == 1, step)
        with ExitStack() as stack:
            for i in range(2):
                assert half_open(udp_socket(stack, f"127.0.13.{1 + i}"), port, step)
            assert until(lambda: host.get_stats()["peers"] == 3, step)
            newcomer = SpoofableClient(port)
            try:
                newcomer.start()

                def both() -> None:
                    step()
                    newcomer.pump()

                assert until(newcomer.connected, both)
            finally:
                newcomer.close()
        stats = host.get_stats()
        assert stats["evicted_handshakes"] == 1
        assert stats["successors_failed"] == 0
        assert stats["dropped_peer_limit"] == 0
    finally:
        live.close()
        host.close()

"""DTLSHost.send_many: per-peer records in one native call (issue 15 §2).

Every record reaches its own peer, in order, with the same drops and errors
as put_packet; a refused call queues nothing."""

from __future__ import annotations

import pytest

from dtlspeer import DTLSHost, DTLSSettings, HostEventType, errors
from test_host import Recorder, psk_client, psk_server


def _connected(count: int, **server_kwargs: object) -> tuple[DTLSHost, list[DTLSHost], Recorder]:
    server = psk_server(**server_kwargs)
    clients = [psk_client() for _ in range(count)]
    rec = Recorder(server, *clients)
    for c in clients:
        c.connect("127.0.0.1", server.get_local_port())
    assert rec.run(lambda: len(server.peers) == count and all(
        rec.of(c, HostEventType.CONNECT) for c in clients))
    return server, clients, rec


def _received(rec: Recorder, client: DTLSHost) -> list[bytes]:
    return [e.data for e in rec.of(client, HostEventType.RECEIVE)]


def _client_of(server_peer: object, clients: list[DTLSHost]) -> DTLSHost:
    port = server_peer.get_peer_address()[1]  # type: ignore[attr-defined]
    return next(c for c in clients if c.get_local_port() == port)


def test_each_peer_gets_its_own_records_in_order() -> None:
    server, clients, rec = _connected(12)
    try:
        peers = server.peers
        for tick in range(3):
            payloads = [f"tick {tick} for {i}".encode() * (1 + i) for i in range(len(peers))]
            assert server.send_many(peers, payloads) == len(peers)
        # bytearray, memoryview and empty payloads: bytes-like as put_packet's
        assert server.send_many(peers[:3], [bytearray(b"ba"), memoryview(b"mv"), b""]) == 3
        assert rec.run(lambda: sum(len(_received(rec, c)) for c in clients) == 3 * 12 + 2)
        for i, peer in enumerate(peers):
            got = _received(rec, _client_of(peer, clients))
            want = [f"tick {t} for {i}".encode() * (1 + i) for t in range(3)]
            want += [[b"ba"], [b"mv"], []][i] if i < 3 else []
            assert got == want, (i, got)
        assert server.get_stats()["records_out"] == 3 * 12 + 2
    finally:
        server.close()
        for c in clients:
            c.close()


def test_refused_calls_queue_nothing() -> None:
    server, clients, _rec = _connected(3)
    try:
        peers = server.peers
        ok = [b"a", b"b", b"c"]
        with pytest.raises(errors.InvalidArgumentError):
            server.send_many(peers, ok[:2])  # lengths differ
        with pytest.raises(errors.ArgumentTypeError):
            server.send_many(peers, [b"a", "text", b"c"])  # type: ignore[list-item]
        with pytest.raises(errors.ArgumentTypeError):
            server.send_many(peers, [b"a", memoryview(bytes(8)).cast("I"), b"c"])
        with pytest.raises(errors.ArgumentTypeError):
            server.send_many([peers[0], object(), peers[2]], ok)  # type: ignore[list-item]
        too_large = bytes(peers[1].get_max_packet_size() + 1)  # above one record at MTU 1200
        with pytest.raises(errors.InvalidArgumentError, match=r"payloads\[1\]"):
            server.send_many(peers, [b"a", too_large, b"c"])
        assert server.get_stats()["records_out"] == 0
        # a peer disconnected locally: StateError, nothing queued
        peers[2].disconnect_from_peer()
        with pytest.raises(errors.StateError, match=r"peers\[2\]"):
            server.send_many(peers, ok)
        assert server.get_stats()["records_out"] == 0
        assert server.send_many(peers[:2], ok[:2]) == 2
        server.close()
        with pytest.raises(errors.StateError):
            server.send_many(peers[:2], ok[:2])
    finally:
        server.close()
        for c in clients:
            c.close()


def test_settings_max_packet_size_applies() -> None:
    server, clients, _rec = _connected(2, settings=DTLSSettings(max_packet_size=600))
    try:
        with pytest.raises(errors.InvalidArgumentError, match="max_packet_size=600"):
            server.send_many(server.peers, [b"a", bytes(601)])
        assert server.get_stats()["records_out"] == 0
        assert server.send_many(server.peers, [b"a", bytes(600)]) == 2
    finally:
        server.close()
        for c in clients:
            c.close()


def test_a_foreign_peer_is_refused_not_sent_to_a_namesake() -> None:
    """Peer ids repeat across hosts: another host's peer with the same id
    must not make the record go to this host's peer of that id."""
    server_a, clients_a, _rec_a = _connected(1)
    server_b, clients_b, _rec_b = _connected(1)
    try:
        (peer_a,), (peer_b,) = server_a.peers, server_b.peers
        assert peer_a.peer_id == peer_b.peer_id  # the collision this guards against
        with pytest.raises(errors.ForeignPeerError):
            server_a.send_many([peer_b], [b"not yours"])
        assert server_a.get_stats()["records_out"] == 0
    finally:
        for h in (server_a, server_b, *clients_a, *clients_b):
            h.close()


def test_peers_ended_by_the_remote_side_are_skipped_and_counted() -> None:
    server, clients, rec = _connected(3)
    try:
        peers = server.peers
        gone = _client_of(peers[1], clients)
        gone.disconnect(gone.peers[0])  # close_notify to the server
        assert rec.run(lambda: any(e.type == HostEventType.DISCONNECT for e in rec.events[server]))
        before = server.get_stats()["send_to_ended"]
        assert server.send_many(peers, [b"x", b"y", b"z"]) == 2
        assert server.get_stats()["send_to_ended"] == before + 1
        assert rec.run(lambda: _received(rec, _client_of(peers[2], clients)) == [b"z"])
        assert _received(rec, _client_of(peers[0], clients)) == [b"x"]
    finally:
        server.close()
        for c in clients:
            c.close()


def test_a_handshaking_peer_is_refused() -> None:
    server = psk_server()
    client = psk_client()
    try:
        peer = client.connect("127.0.0.1", server.get_local_port())  # handshaking
        with pytest.raises(errors.StateError, match="not connected"):
            client.send_many([peer], [b"early"])
        assert client.send_many([], []) == 0
    finally:
        server.close()
        client.close()

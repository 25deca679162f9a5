"""The receive-size limit (DTLSSettings.max_receive_size): records larger than
it are dropped in C where records are read (dp_conn) and counted in the
connection's ``dropped_over_limit``; DTLSHost, the Godot-style classes and
aio share it. Loopback, bounded waits."""

from __future__ import annotations

import asyncio

import pytest

from _godot_server import GodotServer
from _host_clients import PSK_IDENTITY, PSK_KEY
from dtlspeer import (
    DTLSHost,
    DTLSSettings,
    HostEventType,
    PacketPeerDTLS,
    PacketPeerUDP,
    TLSOptions,
    aio,
    errors,
)
from identities import Identity, make_identity
from udp_helpers import until

SERVER_PSK = {PSK_IDENTITY: PSK_KEY}
CLIENT_PSK = (PSK_IDENTITY, PSK_KEY)
# A sender without an MTU can send records up to 16 KiB.
BIG_SENDER = DTLSSettings(mtu=0)


@pytest.fixture(scope="module")
def ec_identity() -> Identity:
    return make_identity("ec")


def test_default_and_validation() -> None:
    assert DTLSSettings().max_receive_size == 1392
    assert DTLSSettings(max_receive_size=0).max_receive_size == 0  # 0: any record (16 KiB)
    for bad in (-1, 16385, 2**32):
        with pytest.raises(errors.InvalidArgumentError):
            DTLSSettings(max_receive_size=bad)
    with pytest.raises(errors.ArgumentTypeError):
        DTLSSettings(max_receive_size=1.5)  # type: ignore[arg-type]


def _host_pair(server_settings: DTLSSettings | None) -> tuple[DTLSHost, DTLSHost, list]:
    server = DTLSHost("127.0.0.1", 0, server_psk=SERVER_PSK, settings=server_settings)
    client = DTLSHost("127.0.0.1", 0, client_psk=CLIENT_PSK, settings=BIG_SENDER)
    events: list = []
    to_server = client.connect("127.0.0.1", server.get_local_port())

    def step() -> None:
        events.extend(server.service(0))
        client.service(0)

    assert until(lambda: to_server.get_status() == PacketPeerDTLS.STATUS_CONNECTED
                 and any(e.type == HostEventType.CONNECT for e in events), step)
    return server, client, [to_server, events, step]


def test_host_drops_and_counts_records_above_the_limit() -> None:
    server, client, (to_server, events, step) = _host_pair(None)
    for size in (2000, 1392, 1393, 16384, 10):
        to_server.put_packet(bytes([size % 251]) * size)
    received = lambda: [e.data for e in events if e.type == HostEventType.RECEIVE]  # noqa: E731
    assert until(lambda: len(received()) == 2, step)
    assert [len(d) for d in received()] == [1392, 10]
    peer = next(e.peer for e in events if e.type == HostEventType.CONNECT)
    assert until(lambda: peer.get_stats()["dropped_over_limit"] == 3, step)
    assert server.get_stats()["dropped_over_limit"] == 3  # the host's total
    assert peer.get_status() == PacketPeerDTLS.STATUS_CONNECTED  # dropped, not failed
    server.close()
    client.close()


def test_host_limit_is_a_setting() -> None:
    server, client, (to_server, events, step) = _host_pair(DTLSSettings(max_receive_size=0))
    to_server.put_packet(bytes(16384))
    assert until(lambda: any(e.type == HostEventType.RECEIVE for e in events), step)
    server.close()
    client.close()
    server, client, (to_server, events, step) = _host_pair(DTLSSettings(max_receive_size=100))
    to_server.put_packet(bytes(101))
    to_server.put_packet(bytes(100))
    assert until(lambda: any(e.type == HostEventType.RECEIVE for e in events), step)
    assert [len(e.data) for e in events if e.type == HostEventType.RECEIVE] == [100]
    server.close()
    client.close()


def test_godot_style_server_drops_records_above_the_limit(ec_identity: Identity) -> None:
    got: list[bytes] = []
    server = GodotServer(ec_identity, on_packet=lambda peer, data: got.append(data))
    peers = server.peers
    udp = PacketPeerUDP()
    udp.connect_to_host("127.0.0.1", server.port)
    client = PacketPeerDTLS()
    client.connect_to_peer(udp, "game.test", TLSOptions.client(ec_identity[1]),
                          settings=BIG_SENDER)

    def step() -> None:
        server.step()
        client.poll()

    assert until(lambda: client.get_status() == PacketPeerDTLS.STATUS_CONNECTED and peers, step)
    client.put_packet(bytes(5000))
    client.put_packet(b"small")
    assert until(lambda: got == [b"small"], step)
    assert peers[0].get_stats()["dropped_over_limit"] == 1
    assert peers[0].get_status() == PacketPeerDTLS.STATUS_CONNECTED
    client.disconnect_from_peer()
    server.stop()


def test_aio_server_drops_records_above_the_limit() -> None:
    async def main() -> None:
        got: list[bytes] = []
        done = asyncio.Event()

        async def handler(conn: aio.Connection) -> None:
            async for packet in conn:
                got.append(packet)
                done.set()

        server = await aio.serve(handler, "127.0.0.1", 0, psk=SERVER_PSK,
                                 settings=DTLSSettings(max_receive_size=500))
        async with server:
            conn = await aio.connect("127.0.0.1", server.port, psk=CLIENT_PSK,
                                     settings=BIG_SENDER)
            await conn.send(bytes(501))
            await conn.send(bytes(500))
            await asyncio.wait_for(done.wait(), 5)
            await asyncio.sleep(0.05)
            assert [len(p) for p in got] == [500]
            stats = server.connections[0].peer.get_stats()
            assert stats["dropped_over_limit"] == 1
            conn.close()

    asyncio.run(main())

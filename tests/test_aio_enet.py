"""dtlspeer.aio.serve_enet: an asyncio ENet server (plain and inside DTLS),
driven by the loop (socket readiness + a tick), one handler task per peer.
The clients are raw ENetConnections serviced from the same loop."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import pytest

from dtlspeer import Crypto, TLSOptions, aio
from dtlspeer.enet import ENetConnection, ENetPacketPeer

CONNECT, DISCONNECT, RECEIVE = 1, 2, 3


def identity() -> tuple[Any, Any]:
    crypto = Crypto()
    key = crypto.generate_ec("P-256")
    cert = crypto.generate_self_signed_certificate(
        key, "CN=localhost", "20240101000000", "20440101000000", dns_names=["localhost"]
    )
    return key, cert


async def drive(client: ENetConnection, until: Callable[[], bool], events: list[Any],
                seconds: float = 10.0) -> None:  # fmt: skip
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while not until():
        assert loop.time() < end, "condition not reached in time"
        events += client.service_batch(0)
        await asyncio.sleep(0.002)


@pytest.mark.parametrize("dtls", [False, True], ids=["plain", "dtls"])
def test_echo_on_several_channels_and_disconnect_data(dtls: bool) -> None:
    async def main() -> None:
        key, cert = identity()
        seen: list[aio.ENetPacket] = []
        ended: list[int] = []

        async def handler(conn: aio.ENetPeerConnection) -> None:
            assert conn.connect_data == 42
            async for packet in conn:
                seen.append(packet)
                conn.send(packet.data.upper(), packet.channel, packet.flags)
            ended.append(conn.disconnect_data)

        options = TLSOptions.server(key, cert) if dtls else None
        async with await aio.serve_enet(handler, "127.0.0.1", 0, options) as server:
            client = ENetConnection()
            client.create_host(1)
            if dtls:
                client.dtls_client_setup("localhost", TLSOptions.client(cert))
            peer = client.connect_to_host("127.0.0.1", server.port, 4, 42)
            events: list[Any] = []
            await drive(client, lambda: CONNECT in [e.type for e in events], events)
            sends = [(0, 1, b"a"), (1, 2, b"b"), (3, 1, b"c" * 5000)]
            for channel, flags, data in sends:
                peer.send(channel, data, flags)
            await drive(client, lambda: len([e for e in events if e.type == RECEIVE]) == 3, events)
            got = sorted((e.channel, e.flags, e.packet) for e in events if e.type == RECEIVE)
            assert got == sorted((c, f, d.upper()) for c, f, d in sends)
            peer.peer_disconnect(9)
            await drive(client, lambda: bool(ended), events)
            assert ended == [9]
            client.destroy()
        assert sorted((p.channel, p.flags, p.data) for p in seen) == sorted(sends)

    asyncio.run(main())


def test_handler_failure_disconnects_only_its_peer_and_close_ends_the_rest() -> None:
    async def main() -> None:
        async def handler(conn: aio.ENetPeerConnection) -> None:
            packet = await conn.recv()
            if packet.data == b"boom":
                raise RuntimeError("handler bug")
            await conn.wait_closed()

        server = await aio.serve_enet(handler, "127.0.0.1", 0)
        clients, peers, events = [], [], []
        for i in range(2):
            client = ENetConnection()
            client.create_host(1)
            peers.append(client.connect_to_host("127.0.0.1", server.port, 2, i))
            clients.append(client)
            events.append([])
        for client, evs in zip(clients, events):
            await drive(client, lambda evs=evs: CONNECT in [e.type for e in evs], evs)
        peers[0].send(0, b"boom", ENetPacketPeer.FLAG_RELIABLE)
        peers[1].send(0, b"fine", ENetPacketPeer.FLAG_RELIABLE)
        await drive(clients[0], lambda: DISCONNECT in [e.type for e in events[0]], events[0])
        for _ in range(20):
            events[1] += clients[1].service_batch(0)
            await asyncio.sleep(0.005)
        assert DISCONNECT not in [e.type for e in events[1]]
        server.close()
        await drive(clients[1], lambda: DISCONNECT in [e.type for e in events[1]], events[1])
        await server.wait_closed()
        for client in clients:
            client.destroy()

    asyncio.run(main())


def test_receive_queue_is_bounded() -> None:
    async def main() -> None:
        conns: list[aio.ENetPeerConnection] = []

        async def handler(conn: aio.ENetPeerConnection) -> None:
            conns.append(conn)
            await conn.wait_closed()  # never reads

        async with await aio.serve_enet(handler, "127.0.0.1", 0, max_queue=10) as server:
            client = ENetConnection()
            client.create_host(1)
            peer = client.connect_to_host("127.0.0.1", server.port, 1, 0)
            events: list[Any] = []
            await drive(client, lambda: CONNECT in [e.type for e in events], events)
            for i in range(50):
                peer.send(0, bytes([i]), ENetPacketPeer.FLAG_RELIABLE)
            await drive(client, lambda: bool(conns) and conns[0].dropped_packets == 40, events)
            client.destroy()

    asyncio.run(main())

"""dtlspeer.aio: asyncio servers and clients on the batch host.

Loopback sockets only. Every test runs under ``asyncio.run`` with an overall
bound (``run``); waits are for events, never for durations, and no test
asserts on timing."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Coroutine
from typing import Any, Callable, TypeVar

import pytest

from _godot_server import GodotServer
from _host_clients import PSK_IDENTITY, PSK_KEY
from dtlspeer import (
    DisconnectReason,
    DTLSSettings,
    PacketPeerDTLS,
    PacketPeerUDP,
    TLSOptions,
    aio,
    errors,
)
from identities import Identity, make_identity

Status = PacketPeerDTLS.Status
SERVER_PSK = {PSK_IDENTITY: PSK_KEY}
CLIENT_PSK = (PSK_IDENTITY, PSK_KEY)
BOUND_S = 60.0
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run with an overall bound, so a bug fails instead of hanging."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, BOUND_S)

    return asyncio.run(bounded())


async def eventually(condition: Callable[[], bool], rounds: int = 2000) -> None:
    """Yield to the loop (1 ms naps) until ``condition`` holds; bounded."""
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0.001)
    assert condition()


@pytest.fixture(scope="module")
def identity() -> Identity:
    return make_identity("ec")


async def echo(conn: aio.Connection) -> None:
    async for packet in conn:
        await conn.send(b"echo " + packet)


async def psk_server(handler: Callable[[aio.Connection], Awaitable[Any]], **kw: Any) -> aio.Server:
    return await aio.serve(handler, "127.0.0.1", 0, psk=SERVER_PSK, **kw)


async def psk_client(server: aio.Server, **kw: Any) -> aio.Connection:
    return await aio.connect("127.0.0.1", server.port, psk=CLIENT_PSK, **kw)


# ---- basics --------------------------------------------------------------------------------


def test_echo_with_certificates_and_clean_close(identity: Identity) -> None:
    """A certificate handshake, records both ways in order, and a client
    close that ends the handler's ``async for`` quietly (PEER_CLOSED)."""
    ended: list[aio.Connection] = []

    async def handler(conn: aio.Connection) -> None:
        await echo(conn)
        ended.append(conn)

    async def main() -> None:
        async with await aio.serve(handler, "127.0.0.1", 0, TLSOptions.server(*identity)) as server:
            assert server.is_serving() and server.port > 0
            conn = await aio.connect(
                "127.0.0.1", server.port, TLSOptions.client(identity[1]), hostname="game.test"
            )
            assert not conn.closed and conn.close_reason is None
            assert conn.peer_address == ("127.0.0.1", server.port)
            assert conn.peer.get_status() == Status.STATUS_CONNECTED
            assert conn.get_max_packet_size() > 1000
            for i in range(20):
                await conn.send(b"msg %d" % i)
            replies = [await conn.recv() for _ in range(20)]
            assert replies == [b"echo msg %d" % i for i in range(20)]
            assert len(server.connections) == 1
            conn.close()
            await conn.wait_closed()
            assert conn.closed and conn.close_reason == DisconnectReason.LOCAL
            await eventually(lambda: len(ended) == 1)
            assert ended[0].close_reason == DisconnectReason.PEER_CLOSED
            assert server.connections == []
        assert not server.is_serving()

    run(main())


def test_ip_address_is_the_default_hostname(identity: Identity) -> None:
    """Without ``hostname`` the certificate must be valid for the address
    itself (the certificate has an IP SAN for 127.0.0.1)."""

    async def main() -> None:
        async with await aio.serve(echo, "127.0.0.1", 0, TLSOptions.server(*identity)) as server:
            async with await aio.connect(
                "127.0.0.1", server.port, TLSOptions.client(identity[1])
            ) as conn:
                await conn.send(b"x")
                assert await conn.recv() == b"echo x"
            assert conn.closed

    run(main())


def test_many_concurrent_clients() -> None:
    """60 clients connect, exchange records and close at the same time; each
    gets exactly its own replies, in order."""
    handled: list[int] = []

    async def handler(conn: aio.Connection) -> None:
        count = 0
        async for packet in conn:
            count += 1
            await conn.send(packet[::-1])
        handled.append(count)

    async def client(server: aio.Server, n: int) -> list[bytes]:
        conn = await psk_client(server)
        try:
            for i in range(5):
                await conn.send(b"client %03d packet %d" % (n, i))
            return [await conn.recv() for _ in range(5)]
        finally:
            conn.close()

    async def main() -> None:
        async with await psk_server(handler) as server:
            results = await asyncio.gather(*(client(server, n) for n in range(60)))
            for n, replies in enumerate(results):
                assert replies == [(b"client %03d packet %d" % (n, i))[::-1] for i in range(5)]
            await eventually(lambda: len(handled) == 60)
            assert handled == [5] * 60
            assert server.host.get_stats()["peers"] <= 60

    run(main())


def test_server_close_with_live_connections() -> None:
    """close() sends close_notify to every client, closes each connection and
    cancels the handlers; wait_closed() returns once they ended."""
    started: list[aio.Connection] = []
    cancelled: list[aio.Connection] = []

    async def handler(conn: aio.Connection) -> None:
        started.append(conn)
        try:
            await conn.recv()
        except asyncio.CancelledError:
            cancelled.append(conn)
            raise

    async def main() -> None:
        server = await psk_server(handler)
        clients = [await psk_client(server) for _ in range(3)]
        await eventually(lambda: len(started) == 3)
        server.close()
        assert not server.is_serving()
        await server.wait_closed()
        assert sorted(map(id, cancelled)) == sorted(map(id, started))
        assert all(c.closed and c.close_reason == DisconnectReason.LOCAL for c in started)
        for conn in clients:
            with pytest.raises(aio.ConnectionClosedOK) as info:
                await conn.recv()
            assert info.value.reason == DisconnectReason.PEER_CLOSED
            assert isinstance(info.value, ConnectionError)
        server.close()  # idempotent
        await server.wait_closed()

    run(main())


def test_serve_forever_cancelled_closes_the_server() -> None:
    async def main() -> None:
        server = await psk_server(echo)
        conn = await psk_client(server)
        task = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not server.is_serving()
        with pytest.raises(aio.ConnectionClosedOK):
            await conn.recv()

    run(main())


def test_broadcast_reaches_every_connection_but_the_excluded() -> None:
    async def main() -> None:
        async with await psk_server(echo) as server:
            clients = [await psk_client(server) for _ in range(4)]
            await eventually(lambda: len(server.connections) == 4)
            by_port = {c.peer_address[1]: c for c in server.connections}
            excluded = by_port[clients[0].local_port]
            assert server.broadcast(b"state 1", exclude=excluded) == 3
            assert server.broadcast(b"state 2") == 4
            assert [await c.recv() for c in clients[1:]] == [b"state 1"] * 3
            assert [await c.recv() for c in clients] == [b"state 2"] * 4
            with pytest.raises(errors.ArgumentTypeError):
                server.broadcast(b"x", exclude=[clients[0].peer])  # type: ignore[list-item]
            with pytest.raises(errors.InvalidArgumentError):
                server.broadcast(b"x" * 20000)
        with pytest.raises(errors.StateError):
            server.broadcast(b"closed")

    run(main())


# ---- handlers ------------------------------------------------------------------------------


def test_handler_exception_is_logged_and_the_server_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(conn: aio.Connection) -> None:
        packet = await conn.recv()
        if packet == b"boom":
            raise ValueError("handler bug")
        await conn.send(b"fine")
        await conn.recv()

    async def main() -> None:
        async with await psk_server(handler) as server:
            bad = await psk_client(server)
            await bad.send(b"boom")
            with pytest.raises(aio.ConnectionClosedOK) as info:
                await bad.recv()  # the server closed the connection after the handler
            assert info.value.reason == DisconnectReason.PEER_CLOSED
            good = await psk_client(server)
            await good.send(b"hello")
            assert await good.recv() == b"fine"
            good.close()

    with caplog.at_level(logging.ERROR, logger="dtlspeer.aio"):
        run(main())
    failures = [r for r in caplog.records if "handler failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None and failures[0].exc_info[0] is ValueError


def test_handler_cancelled_closes_only_its_connection() -> None:
    """A handler task that is cancelled (here: by itself) ends its
    connection; the server and the other connections go on."""

    async def handler(conn: aio.Connection) -> None:
        packet = await conn.recv()
        if packet == b"cancel me":
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            await asyncio.sleep(3600)
        await conn.send(b"still here")
        await conn.recv()

    async def main() -> None:
        async with await psk_server(handler) as server:
            other = await psk_client(server)
            victim = await psk_client(server)
            await victim.send(b"cancel me")
            with pytest.raises(aio.ConnectionClosedOK):
                await victim.recv()
            await other.send(b"hi")
            assert await other.recv() == b"still here"
            assert len(server.connections) == 1

    run(main())


def test_idle_timeout_fires_from_the_loop_timer() -> None:
    """No traffic at all: only the call_at timer from next_timeout() can end
    the connection; the handler's recv() raises ConnectionClosedError."""
    outcome: list[BaseException] = []

    async def handler(conn: aio.Connection) -> None:
        try:
            await conn.recv()
        except aio.ConnectionClosed as exc:
            outcome.append(exc)

    async def main() -> None:
        settings = DTLSSettings(idle_timeout_ms=150)
        async with await psk_server(handler, settings=settings) as server:
            client = await psk_client(server)
            await eventually(lambda: len(outcome) == 1, rounds=5000)
            exc = outcome[0]
            assert isinstance(exc, aio.ConnectionClosedError)
            assert exc.reason == DisconnectReason.IDLE_TIMEOUT
            client.close()

    run(main())


# ---- clients ---------------------------------------------------------------------------------


def test_client_cancelled_mid_recv_loses_nothing() -> None:
    async def main() -> None:
        async with await psk_server(echo) as server:
            conn = await psk_client(server)
            waiting = asyncio.ensure_future(conn.recv())
            await asyncio.sleep(0)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(conn.recv(), 0.01)
            await conn.send(b"after")
            assert await conn.recv() == b"echo after"
            assert not conn.closed
            conn.close()

    run(main())


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_connect_to_a_silent_port_times_out_and_cancel_frees_the_socket() -> None:
    settings = DTLSSettings(handshake_timeout_min_ms=20, handshake_timeout_max_ms=80)

    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind(("127.0.0.1", 0))
            port = silent.getsockname()[1]
            before = open_fds()
            with pytest.raises(aio.HandshakeError) as info:
                await aio.connect("127.0.0.1", port, psk=CLIENT_PSK, settings=settings)
            exc = info.value
            assert exc.reason == DisconnectReason.HANDSHAKE_TIMEOUT
            assert "handshake_timeout" in str(exc) and exc.message
            assert not isinstance(exc, aio.CertificateVerifyError)
            assert open_fds() == before
            # Cancelled mid-handshake (default timers: it would take seconds).
            task = asyncio.ensure_future(aio.connect("127.0.0.1", port, psk=CLIENT_PSK))
            await eventually(lambda: open_fds() > before)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert open_fds() == before

    run(main())


def test_connect_to_a_closed_port_fails_at_once() -> None:
    """Issue 16.8: ICMP port unreachable during the handshake fails connect()
    at once (it took the whole handshake timeout, ~16 s by default)."""

    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
        with pytest.raises(aio.HandshakeError) as info:
            await aio.connect("127.0.0.1", port, psk=CLIENT_PSK)
        assert info.value.reason == DisconnectReason.HANDSHAKE_FAILED
        assert "unreachable" in str(info.value)

    run(main())


def test_hostname_mismatch_is_a_readable_certificate_error(identity: Identity) -> None:
    async def main() -> None:
        async with await aio.serve(echo, "127.0.0.1", 0, TLSOptions.server(*identity)) as server:
            with pytest.raises(aio.CertificateVerifyError) as info:
                await aio.connect(
                    "127.0.0.1", server.port, TLSOptions.client(identity[1]), hostname="other.test"
                )
            exc = info.value
            assert exc.hostname_mismatch and exc.status == Status.STATUS_ERROR_HOSTNAME_MISMATCH
            assert isinstance(exc, errors.CertificateError) and isinstance(exc, aio.HandshakeError)
            assert exc.reason == DisconnectReason.HANDSHAKE_FAILED and exc.verify_flags
            assert "certificate" in str(exc).lower()
            # The server is unharmed.
            async with await aio.connect(
                "127.0.0.1", server.port, TLSOptions.client(identity[1]), hostname="game.test"
            ) as conn:
                await conn.send(b"ok")
                assert await conn.recv() == b"echo ok"

    run(main())


def test_wrong_psk_is_a_handshake_failure() -> None:
    async def main() -> None:
        async with await psk_server(echo) as server:
            with pytest.raises(aio.HandshakeError) as info:
                await aio.connect("127.0.0.1", server.port, psk=(PSK_IDENTITY, bytes(32)))
            assert info.value.reason == DisconnectReason.HANDSHAKE_FAILED
            assert not isinstance(info.value, aio.CertificateVerifyError)

    run(main())


def test_name_resolution_and_errors() -> None:
    async def main() -> None:
        async with await psk_server(echo) as server:
            async with await aio.connect("localhost", server.port, psk=CLIENT_PSK) as conn:
                await conn.send(b"name")
                assert await conn.recv() == b"echo name"
        with pytest.raises(errors.ResolveError):
            await aio.connect("no-such-host.invalid", 4433, psk=CLIENT_PSK)

    run(main())


# ---- backpressure ----------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["drop_newest", "drop_oldest", "close"])
def test_receive_queue_overflow_policy(policy: str) -> None:
    """20 records reach a handler that reads nothing; its queue holds 4."""
    results: list[tuple[list[bytes], aio.Connection, BaseException | None]] = []

    async def handler(conn: aio.Connection) -> None:
        await eventually(lambda: conn.peer.get_stats()["records_in"] == 20 or conn.closed)
        got: list[bytes] = []
        error: BaseException | None = None
        try:
            while True:
                got.append(conn.recv_nowait())
        except errors.WouldBlockError:
            pass
        except aio.ConnectionClosed as exc:
            error = exc
        results.append((got, conn, error))
        if error is None:
            await conn.recv()

    async def main() -> None:
        async with await psk_server(handler, max_queue=4, overflow=policy) as server:
            conn = await psk_client(server)
            for i in range(20):
                conn.send_nowait(b"%d" % i)
            await eventually(lambda: len(results) == 1)
            got, server_conn, error = results[0]
            if policy != "close":
                assert server_conn.dropped_packets == 16
            if policy == "drop_newest":
                assert got == [b"0", b"1", b"2", b"3"] and error is None
                assert not server_conn.closed
            elif policy == "drop_oldest":
                assert got == [b"16", b"17", b"18", b"19"] and error is None
            else:
                assert got == [b"0", b"1", b"2", b"3"]
                assert server_conn.dropped_packets == 1  # the fifth; then it closed
                assert isinstance(error, aio.ConnectionClosedError)
                assert "overflow" in str(error)
                with pytest.raises(aio.ConnectionClosedOK):
                    await conn.recv()  # the client got close_notify
            conn.close()

    run(main())


def test_send_yields_at_the_write_limit() -> None:
    """A producer that only awaits send() still lets other tasks run."""

    async def main() -> None:
        async with await psk_server(echo) as server:
            conn = await psk_client(server, write_limit=8)
            ticks = 0
            ticks_at_end = -1

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0)

            async def producer() -> None:
                nonlocal ticks_at_end
                start = ticks
                for i in range(100):
                    await conn.send(b"%d" % i)
                ticks_at_end = ticks - start

            tick_task = asyncio.ensure_future(ticker())
            await producer()
            tick_task.cancel()
            assert ticks_at_end >= 100 // 8 - 1
            replies = 0
            while replies < 100:
                try:
                    await asyncio.wait_for(conn.recv(), 2)
                except asyncio.TimeoutError:
                    break
                replies += 1
            assert replies > 0  # loopback rarely loses any; some echoes must arrive
            conn.close()

    run(main())


def test_send_waits_while_the_socket_refuses_datagrams(monkeypatch: pytest.MonkeyPatch) -> None:
    """On EAGAIN senders wait for writability (loopback never returns EAGAIN
    for UDP, so the blocked state is entered directly and the writer
    callback is captured)."""

    async def main() -> None:
        async with await psk_server(echo) as server:
            conn = await psk_client(server)
            loop = asyncio.get_running_loop()
            writers: list[Callable[[], object]] = []
            monkeypatch.setattr(loop, "add_writer", lambda fd, cb: writers.append(cb))
            monkeypatch.setattr(loop, "remove_writer", lambda fd: True)
            endpoint = conn._endpoint
            endpoint._block()
            sending = asyncio.ensure_future(conn.send(b"waits"))
            for _ in range(20):
                await asyncio.sleep(0)
            assert not sending.done() and len(writers) == 1
            writers[0]()  # the socket became writable
            await sending
            assert await conn.recv() == b"echo waits"
            conn.close()

    run(main())


# ---- misuse and closed connections --------------------------------------------------------------


def test_send_and_recv_after_close_raise() -> None:
    async def main() -> None:
        async with await psk_server(echo) as server:
            conn = await psk_client(server)
            conn.close()
            conn.close()  # idempotent
            with pytest.raises(aio.ConnectionClosedOK):
                await conn.send(b"x")
            with pytest.raises(aio.ConnectionClosedOK):
                conn.send_nowait(b"x")
            with pytest.raises(aio.ConnectionClosedOK):
                await conn.recv()
            assert [p async for p in conn] == []
            assert conn.local_port == 0

    run(main())


def test_local_misuse_raises() -> None:
    async def main() -> None:
        async with await psk_server(echo) as server:
            conn = await psk_client(server)
            with pytest.raises(errors.InvalidArgumentError):
                await conn.send(b"x" * (conn.get_max_packet_size() + 1))
            with pytest.raises(errors.ArgumentTypeError):
                conn.send_nowait("text")  # type: ignore[arg-type]
            first = asyncio.ensure_future(conn.recv())
            await asyncio.sleep(0)
            with pytest.raises(errors.StateError):
                await conn.recv()
            first.cancel()
            with pytest.raises(errors.WouldBlockError):
                conn.recv_nowait()
            conn.close()
        with pytest.raises(errors.InvalidArgumentError):
            await aio.serve(echo, "127.0.0.1", 0)  # no credentials
        with pytest.raises(errors.InvalidArgumentError):
            await aio.serve(echo, "127.0.0.1", 0, psk=SERVER_PSK, overflow="block")
        with pytest.raises(errors.InvalidArgumentError):
            await aio.serve(echo, "127.0.0.1", 0, psk=SERVER_PSK, max_queue=0)
        with pytest.raises(errors.ArgumentTypeError):
            await aio.connect(b"127.0.0.1", 1, psk=CLIENT_PSK)  # type: ignore[arg-type]
        with pytest.raises(errors.InvalidArgumentError):
            await aio.connect("127.0.0.1", 0, psk=CLIENT_PSK)
        with pytest.raises(errors.ArgumentTypeError):
            await aio.connect("127.0.0.1", "4433", psk=CLIENT_PSK)  # type: ignore[arg-type]

    run(main())


# ---- interop with the Godot-style classes ----------------------------------------------


def test_aio_client_against_a_godot_style_dtlsserver(identity: Identity) -> None:
    async def main() -> None:
        server = GodotServer(identity, on_packet=lambda peer, data: peer.put_packet(b"re:" + data))
        udp_server, peers = server.udp, server.peers

        async def godot_server() -> None:
            while True:
                server.step()
                await asyncio.sleep(0.002)

        serving = asyncio.ensure_future(godot_server())
        try:
            conn = await aio.connect(
                "127.0.0.1",
                udp_server.get_local_port(),
                TLSOptions.client(identity[1]),
                hostname="game.test",
            )
            for word in (b"a", b"b", b"c"):
                await conn.send(word)
            assert [await conn.recv() for _ in range(3)] == [b"re:a", b"re:b", b"re:c"]
            conn.close()
            await eventually(lambda: peers[0].get_status() == Status.STATUS_DISCONNECTED)
        finally:
            serving.cancel()
            udp_server.stop()

    run(main())


def test_godot_style_client_against_an_aio_server(identity: Identity) -> None:
    closed: list[aio.Connection] = []

    async def handler(conn: aio.Connection) -> None:
        async for packet in conn:
            await conn.send(packet.upper())
        closed.append(conn)

    async def main() -> None:
        async with await aio.serve(handler, "127.0.0.1", 0, TLSOptions.server(*identity)) as server:
            udp = PacketPeerUDP()
            udp.connect_to_host("127.0.0.1", server.port)
            client = PacketPeerDTLS()
            client.connect_to_peer(udp, "game.test", TLSOptions.client(identity[1]))

            async def polled(condition: Callable[[], bool]) -> None:
                def step() -> bool:
                    client.poll()
                    return condition()

                await eventually(step)

            await polled(lambda: client.get_status() == Status.STATUS_CONNECTED)
            for word in (b"alpha", b"beta"):
                client.put_packet(word)
            replies: list[bytes] = []

            def drain() -> bool:
                while client.get_available_packet_count() > 0:
                    replies.append(client.get_packet())
                return len(replies) == 2

            await polled(drain)
            assert replies == [b"ALPHA", b"BETA"]
            client.disconnect_from_peer()
            await eventually(lambda: len(closed) == 1)
            assert closed[0].close_reason == DisconnectReason.PEER_CLOSED

    run(main())

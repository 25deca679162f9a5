"""Issue 16: one careless call or one remote peer must not take the Python
layer down. Peer ownership, aio log levels, aio byte-bounded queues, the aio
Connection finalizer, port ranges and setting messages. Loopback only,
bounded waits."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import warnings

import pytest

from _host_clients import PSK_IDENTITY, PSK_KEY
from dtlspeer import DTLSHost, DTLSSettings, aio, errors
from udp_helpers import until

SERVER_PSK = {PSK_IDENTITY: PSK_KEY}
CLIENT_PSK = (PSK_IDENTITY, PSK_KEY)


def _connected(server: DTLSHost, n: int) -> list[DTLSHost]:
    clients = [DTLSHost("127.0.0.1", 0, client_psk=CLIENT_PSK) for _ in range(n)]
    for c in clients:
        c.connect("127.0.0.1", server.get_local_port())

    def step() -> None:
        server.service(0)
        for c in clients:
            c.service(0)

    assert until(lambda: len(server.peers) == n, step)
    return clients


# ---- item 5: peers of another host ---------------------------------------------------------


def test_broadcast_and_disconnect_refuse_another_hosts_peer() -> None:
    host_a = DTLSHost("127.0.0.1", 0, server_psk=SERVER_PSK)
    host_b = DTLSHost("127.0.0.1", 0, server_psk=SERVER_PSK)
    clients = _connected(host_a, 1) + _connected(host_b, 1)
    peer_a, peer_b = host_a.peers[0], host_b.peers[0]
    assert peer_a.peer_id == peer_b.peer_id  # ids start at the same value on every host
    with pytest.raises(errors.ForeignPeerError):
        host_a.broadcast(b"x", exclude=peer_b)
    with pytest.raises(errors.ForeignPeerError):
        host_a.broadcast(b"x", exclude=[peer_b])
    assert host_a.get_stats()["records_out"] == 0
    with pytest.raises(errors.ForeignPeerError):
        host_a.disconnect(peer_b)
    assert peer_b.get_status() == peer_a.get_status()  # both still connected
    assert host_a.broadcast(b"x", exclude=peer_a) == 0
    host_a.disconnect(peer_a)
    host_a.disconnect(peer_a)  # idempotent for its own peer
    for h in (host_a, host_b, *clients):
        h.close()


def test_aio_broadcast_refuses_another_servers_connection() -> None:
    async def main() -> None:
        conns: list[aio.Connection] = []

        async def handler(conn: aio.Connection) -> None:
            conns.append(conn)
            await conn.wait_closed()

        async with await aio.serve(handler, "127.0.0.1", 0, psk=SERVER_PSK) as s1, \
                await aio.serve(handler, "127.0.0.1", 0, psk=SERVER_PSK) as s2:
            c1 = await aio.connect("127.0.0.1", s1.port, psk=CLIENT_PSK)
            c2 = await aio.connect("127.0.0.1", s2.port, psk=CLIENT_PSK)
            while len(conns) < 2:
                await asyncio.sleep(0.01)
            of_s2 = next(c for c in conns if c in s2.connections)
            with pytest.raises(errors.ForeignPeerError):
                s1.broadcast(b"x", exclude=of_s2)
            with pytest.raises(errors.ForeignPeerError):
                s1.broadcast(b"x", exclude=c1)  # a client connection is not the server's
            c1.close()
            c2.close()

    asyncio.run(asyncio.wait_for(main(), 30))


# ---- item 6: aio log levels ----------------------------------------------------------------


class LogRecords(logging.Handler):
    """Keeps every record at ``level`` or above."""

    def __init__(self, level: int = logging.DEBUG) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_aio_remote_closes_are_debug_and_handler_bugs_are_errors() -> None:
    records = LogRecords()
    log = logging.getLogger("dtlspeer.aio")
    log.addHandler(records)
    old_level = log.level
    log.setLevel(logging.DEBUG)

    async def handler(conn: aio.Connection) -> None:
        data = await conn.recv()  # silent clients time out here: a remote close
        if data == b"boom":
            raise RuntimeError("application bug")
        await conn.recv()

    async def main() -> None:
        settings = DTLSSettings(idle_timeout_ms=300)
        async with await aio.serve(handler, "127.0.0.1", 0, psk=SERVER_PSK,
                                   settings=settings) as server:
            silent = [await aio.connect("127.0.0.1", server.port, psk=CLIENT_PSK)
                      for _ in range(5)]
            closing = await aio.connect("127.0.0.1", server.port, psk=CLIENT_PSK)
            closing.close()  # close_notify: also the remote side's doing
            buggy = await aio.connect("127.0.0.1", server.port, psk=CLIENT_PSK)
            await buggy.send(b"boom")
            for _ in range(300):
                if not server.connections:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            for c in (*silent, buggy):
                c.close()

    try:
        asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        log.removeHandler(records)
        log.setLevel(old_level)
    loud = [r for r in records.records if r.levelno >= logging.WARNING]
    assert len(loud) == 1, [r.getMessage() for r in loud]
    assert loud[0].exc_info is not None and "application bug" in str(loud[0].exc_info[1])
    quiet = [r for r in records.records
             if r.levelno == logging.DEBUG and "closed" in r.getMessage()]
    assert len(quiet) >= 6
    assert all(r.exc_info is None for r in quiet)


# ---- item 3: aio receive queues bounded in bytes ---------------------------------------------


def test_aio_receive_queue_is_bounded_in_bytes_with_each_policy() -> None:
    async def run(policy: str) -> aio.Connection:
        held: list[aio.Connection] = []

        async def handler(conn: aio.Connection) -> None:
            held.append(conn)
            await conn.wait_closed()  # never reads

        async with await aio.serve(handler, "127.0.0.1", 0, psk=SERVER_PSK,
                                   max_queue_bytes=10_000, overflow=policy) as server:
            client = await aio.connect("127.0.0.1", server.port, psk=CLIENT_PSK)
            for i in range(40):
                await client.send(bytes([i]) * 1000)
            for _ in range(300):
                if held and (held[0].dropped_packets or held[0].closed):
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            client.close()
            return held[0]

    newest = asyncio.run(asyncio.wait_for(run("drop_newest"), 30))
    assert newest.queued_bytes <= 10_000 and newest.dropped_packets > 0
    assert newest.recv_nowait()[0] == 0  # the oldest stayed
    oldest = asyncio.run(asyncio.wait_for(run("drop_oldest"), 30))
    assert oldest.queued_bytes <= 10_000 and oldest.dropped_packets > 0
    assert oldest.recv_nowait()[0] != 0  # the oldest made room
    closed = asyncio.run(asyncio.wait_for(run("close"), 30))
    assert closed.closed and "overflow" in closed.close_message


def test_aio_max_queue_bytes_is_checked() -> None:
    async def main() -> None:
        async def handler(conn: aio.Connection) -> None:
            pass

        for bad in (0, -1):
            with pytest.raises(errors.InvalidArgumentError):
                await aio.serve(handler, "127.0.0.1", 0, psk=SERVER_PSK, max_queue_bytes=bad)
        with pytest.raises(errors.ArgumentTypeError):
            await aio.serve(handler, "127.0.0.1", 0, psk=SERVER_PSK,
                            max_queue_bytes=1.5)  # type: ignore[arg-type]

    asyncio.run(main())


# ---- item 8: a Connection dropped without close() -----------------------------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts fds through /proc")
def test_aio_connection_dropped_without_close_warns_and_frees_its_socket() -> None:
    async def handler(conn: aio.Connection) -> None:
        await conn.wait_closed()

    async def main() -> None:
        async with await aio.serve(handler, "127.0.0.1", 0, psk=SERVER_PSK) as server:
            warm = await aio.connect("127.0.0.1", server.port, psk=CLIENT_PSK)
            await warm.send(b"hi")
            gc.collect()
            before = _open_fds()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                for _ in range(20):  # each one replaces (drops) the previous one
                    conn = await aio.connect("127.0.0.1", server.port, psk=CLIENT_PSK)
                    await conn.send(b"hi")
                del conn
                gc.collect()
            assert _open_fds() <= before, (before, _open_fds())
            leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
            assert len(leaks) == 20, [str(w.message) for w in caught]
            assert "unclosed" in str(leaks[0].message)
            warm.close()
            for _ in range(300):  # their close_notify reached the server
                if not server.connections:
                    break
                await asyncio.sleep(0.01)
            assert not server.connections

    asyncio.run(asyncio.wait_for(main(), 60))


# ---- item 9: smaller rough edges ----------------------------------------------------------------


@pytest.mark.parametrize("port", [-1, 65536, 70000, 2**70])
def test_out_of_range_ports_are_invalid_arguments(port: int) -> None:
    with pytest.raises(errors.InvalidArgumentError, match="port"):
        DTLSHost("127.0.0.1", port, server_psk=SERVER_PSK)

    async def main() -> None:
        async def handler(conn: aio.Connection) -> None:
            pass

        with pytest.raises(errors.InvalidArgumentError, match="port"):
            await aio.serve(handler, "127.0.0.1", port, psk=SERVER_PSK)

    asyncio.run(main())


def test_setting_out_of_range_says_the_range() -> None:
    with pytest.raises(errors.InvalidArgumentError, match=r"0 \.\. 4294967295"):
        DTLSSettings(idle_timeout_ms=10**13)


def test_cli_serve_idle_timeout_too_large_is_a_usage_error() -> None:
    from test_cli import dtlspeer_cli

    proc = dtlspeer_cli("serve", "--bind", "127.0.0.1", "--port", "0", "--idle-timeout", "1e10")
    assert proc.returncode == 2, proc.stderr
    assert "at most" in proc.stderr and ">= 0" not in proc.stderr, proc.stderr


def test_cli_bench_errors_name_the_command_used() -> None:
    from _bench_runner import installed_bench_runner
    from test_cli import dtlspeer_cli

    if installed_bench_runner() is None:
        pytest.skip("`dtlspeer bench` needs the installed runner (dtlspeer runs from src/)")
    proc = dtlspeer_cli("bench", "--no-such-option")
    assert proc.returncode == 2, proc.stderr
    assert "python -m dtlspeer bench" in proc.stderr and "-m benchmarks" not in proc.stderr


def test_no_listener_takes_over_a_bound_port() -> None:
    """Linux lets any local user bind a port that every holder opened with
    SO_REUSEADDR, and the newest socket then gets the datagrams; neither
    UDPServer (unlike Godot) nor DTLSHost sets it."""
    import socket

    from dtlspeer import UDPServer

    first = UDPServer()
    first.listen(0, "127.0.0.1")
    port = first.get_local_port()
    second = UDPServer()
    with pytest.raises(errors.SocketError):
        second.listen(port, "127.0.0.1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as thief:
        thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with pytest.raises(OSError):
            thief.bind(("127.0.0.1", port))
    first.stop()
    host = DTLSHost("127.0.0.1", 0, server_psk=SERVER_PSK)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as thief:
        thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with pytest.raises(OSError):
            thief.bind(("127.0.0.1", host.get_local_port()))
    host.close()


@pytest.mark.skipif(not hasattr(os, "fork") or os.name != "posix" or os.geteuid() != 0,
                    reason="needs root to switch to another uid")
def test_another_local_user_cannot_take_over_a_listening_port() -> None:
    """As uid 65534 (nobody), bind the port of a UDPServer and of a DTLSHost
    with SO_REUSEADDR: Linux allows it when every socket on the port set the
    option (Godot's listen does), so ours must not set it."""
    import socket

    from dtlspeer import UDPServer

    server = UDPServer()
    server.listen(0, "127.0.0.1")
    host = DTLSHost("127.0.0.1", 0, server_psk=SERVER_PSK)
    try:
        for port in (server.get_local_port(), host.get_local_port()):
            pid = os.fork()
            if pid == 0:  # the child only binds and exits
                code = 3
                try:
                    os.setgid(65534)
                    os.setuid(65534)
                    thief = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    thief.bind(("127.0.0.1", port))
                    code = 1  # bound: the port could be taken over
                except OSError:
                    code = 0
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, port
    finally:
        server.stop()
        host.close()

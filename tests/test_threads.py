"""Objects that share native state, used from several threads.

The rule stays "one object, one thread at a time", but a UDPServer and the
peers it hands out (or a DTLSHost and its HostPeers) are different objects
over one native endpoint, and cffi releases the GIL around every native call:
they must be safe from different threads. Closing from another thread is the
normal shutdown pattern: it must never free what a call in flight uses, and
it must wake a call blocked in service()/wait().

Every loop is bounded in count and time; the hammer tests are meant for the
ASan build (CI runs the suite under it), where a use-after-free is a report.
A hang is a failure through a bounded join, never a timing assertion.
"""

from __future__ import annotations

import gc
import os
import random
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Callable

import pytest

from dtlspeer import (
    DTLSHost,
    HostEventType,
    PacketPeerDTLS,
    PacketPeerUDP,
    TLSOptions,
    UDPServer,
    errors,
)
from identities import Identity, make_identity
from test_dtls import EchoServer, connect_client, handshake
from udp_helpers import until

PSK = (b"threads", b"k" * 32)
JOIN_S = 10.0  # a thread that is not done by then hangs: the test fails


@pytest.fixture(scope="module")
def ec_identity() -> Identity:
    return make_identity("ec")


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch the GIL every microsecond, so native calls of two threads overlap often."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def start(target: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    """A daemon thread running target; its exception lands in the list."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # reported by the test
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, failures


def joined(thread: threading.Thread, failures: list[BaseException]) -> None:
    thread.join(JOIN_S)
    assert not thread.is_alive(), "the thread is still blocked: close() did not wake it"
    assert not failures, failures


def psk_pair() -> tuple[DTLSHost, DTLSHost, list[object]]:
    """A PSK server host and a client host connected to it; returns the
    server's peer list (CONNECT events seen by the server)."""
    server = DTLSHost("127.0.0.1", 0, server_psk={PSK[0]: PSK[1]})
    client = DTLSHost("127.0.0.1", 0, client_psk=PSK)
    to_server = client.connect("127.0.0.1", server.get_local_port())
    server_peers: list[object] = []
    client_up: list[bool] = []

    def step() -> None:
        for event in server.service(0):
            if event.type == HostEventType.CONNECT:
                server_peers.append(event.peer)
        for event in client.service(0):
            if event.type == HostEventType.CONNECT and event.peer is to_server:
                client_up.append(True)

    assert until(lambda: bool(server_peers) and bool(client_up), step)
    return server, client, server_peers


# ---- 11.2: a UDPServer and its peers on two threads --------------------------


def test_server_poll_and_peer_reads_on_two_threads(fast_switching: None) -> None:
    """Thread A only polls the server (routing datagrams into the peers'
    queues, which grow and shrink), thread B only reads the peers and drops
    some (their finalizer unroutes the slot on thread B). Before the
    endpoint lock: ASan heap-use-after-free (ring_put/ring_get vs
    queue_grow/queue_release)."""
    server = UDPServer()
    server.listen(0, "127.0.0.1")
    port = server.get_local_port()
    senders = []
    for _ in range(4):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("127.0.0.1", port))
        senders.append(s)
    for s in senders:
        s.send(b"hello")
    assert until(lambda: server.poll() >= 0 and server.get_pending_count() == len(senders))
    peers: list[PacketPeerUDP | None] = [server.take_connection() for _ in senders]
    deadline = time.monotonic() + 2.5

    def poller() -> None:
        while time.monotonic() < deadline:
            server.poll()

    def reader() -> None:
        buf = bytearray(65536)
        rounds = 0
        while time.monotonic() < deadline and rounds < 2_000_000:
            rounds += 1
            for i, peer in enumerate(peers):
                if peer is None:
                    continue
                try:
                    peer.get_packet_into(buf)
                except errors.WouldBlockError:
                    pass
                if i == 3 and rounds == 20_000:  # dropped here: the finalizer runs here
                    peers[i] = None
                    del peer

    a, a_failures = start(poller)
    b, b_failures = start(reader)
    messages = [os.urandom(n) for n in (9000, 200, 1400, 12000)]
    sent = 0
    while time.monotonic() < deadline and sent < 2_000_000:
        try:
            senders[0].send(messages[sent % 4])
        except OSError:
            pass  # the socket buffer is full
        sent += 1
    joined(a, a_failures)
    joined(b, b_failures)
    server.stop()
    for s in senders:
        s.close()


# ---- 11.7: the host's socket after garbage collection ------------------------


class _FdReuser:
    """Part of the host's reference cycle; finalized after the host's socket
    object (created later), it takes over the freed descriptor number with a
    connected TCP socket, as any new file of the process could."""

    def __init__(self, host: DTLSHost, fd: int, tcp_peer_port: int) -> None:
        self.host = host
        self.fd = fd
        self.port = tcp_peer_port
        self.took: list[socket.socket] = []

    def __del__(self) -> None:
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", self.port))
            _REUSERS.append(s)
            if s.fileno() == self.fd:
                self.took.append(s)
                _TOOK.append(s)
                return


_REUSERS: list[socket.socket] = []
_TOOK: list[socket.socket] = []


def test_a_collected_host_cycle_never_writes_to_a_closed_or_reused_fd() -> None:
    """DTLSHost <-> HostPeer is a reference cycle. Collected by gc, the host
    must send its close_notify while the descriptor is its own; no byte may
    leave through a descriptor the process has since reused. Before: the
    socket object was finalized first and dp_host_free then sent on its fd
    (EBADF, or a reused fd got the bytes)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    gc.disable()
    try:
        server, client, server_peers = psk_pair()
        server_peer = server_peers[0]
        fd = server.fileno()
        server.reuser = _FdReuser(server, fd, listener.getsockname()[1])  # type: ignore[attr-defined]
        assert server_peer.host is server  # type: ignore[attr-defined]
        del server, server_peer, server_peers
        gc.collect()
    finally:
        gc.enable()
    accepted = []
    listener.settimeout(0.2)
    try:
        while True:
            accepted.append(listener.accept()[0])
    except OSError:
        pass
    received = b""
    for conn in accepted:
        conn.settimeout(0.2)
        try:
            received += conn.recv(65536)
        except OSError:
            pass
        conn.close()
    for s in _REUSERS:
        s.close()
    _REUSERS.clear()
    _TOOK.clear()
    listener.close()
    assert received == b"", "the host wrote its close_notify into a reused descriptor"
    events: list[object] = []
    assert until(
        lambda: any(e.type == HostEventType.DISCONNECT for e in events),
        lambda: events.extend(client.service(0)),
    ), "the collected host sent no close_notify"
    client.close()


# ---- 16.1: close() from another thread ---------------------------------------


def test_close_wakes_a_thread_blocked_in_service_none() -> None:
    """The normal shutdown of a network thread: close() from the main thread
    wakes service(None), which returns no events; no later call runs."""
    host = DTLSHost("127.0.0.1", 0, server_psk={PSK[0]: PSK[1]})
    results: list[object] = []

    def network() -> None:
        while host.is_open():
            try:
                results.append(host.service(None))
            except errors.StateError:
                break  # closed between is_open() and service(): as documented

    thread, failures = start(network)
    time.sleep(0.1)  # let it block (not a timing assertion: either way it must wake)
    host.close()
    joined(thread, failures)
    assert results == [] or results[-1] == []


def test_close_wakes_service_with_live_peers_and_timers() -> None:
    """With a connected peer (timers armed, close_notify to send) and a long
    timeout: close() wakes the wait and the client still gets close_notify."""
    server, client, _ = psk_pair()

    def network() -> None:
        while server.is_open():
            try:
                server.service(30.0)
            except errors.StateError:
                break  # closed between is_open() and service()

    thread, failures = start(network)
    time.sleep(0.1)
    server.close()
    joined(thread, failures)
    events: list[object] = []
    assert until(
        lambda: any(e.type == HostEventType.DISCONNECT for e in events),
        lambda: events.extend(client.service(0)),
    )
    client.close()


def test_close_wakes_a_client_peer_blocked_in_wait_none() -> None:
    peer = PacketPeerUDP()
    peer.bind(0, "127.0.0.1")
    woke: list[bool] = []
    thread, failures = start(lambda: woke.append(peer.wait(None)))
    time.sleep(0.1)
    peer.close()
    joined(thread, failures)
    assert woke == [False]


def test_close_and_stop_wake_server_peers_blocked_in_wait_none() -> None:
    server = UDPServer()
    server.listen(0, "127.0.0.1")
    senders = []
    for _ in range(2):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("127.0.0.1", server.get_local_port()))
        s.send(b"hi")
        senders.append(s)
    assert until(lambda: server.poll() >= 0 and server.get_pending_count() == 2)
    first, second = server.take_connection(), server.take_connection()
    assert first is not None and second is not None
    first.get_packet()
    second.get_packet()
    woke: list[bool] = []
    t1, f1 = start(lambda: woke.append(first.wait(None)))
    t2, f2 = start(lambda: woke.append(second.wait(None)))
    time.sleep(0.1)
    first.close()  # detaches this peer only: its waiter wakes, the other waits on
    joined(t1, f1)
    assert t2.is_alive()
    server.stop()  # wakes the rest
    joined(t2, f2)
    assert woke == [False, False]
    for s in senders:
        s.close()


def test_close_racing_service_never_frees_what_service_uses() -> None:
    """Hammer (ASan): close() lands at random points of service() calls
    running on another thread, with traffic in flight."""
    rng = random.Random(11)
    for round_no in range(12):
        server, client, _ = psk_pair()
        peer = client.peers[0]
        timeout = (0, 0.001, 0.05, None)[round_no % 4]

        def network(host: DTLSHost = server, wait: object = timeout) -> None:
            for _ in range(100_000):
                if not host.is_open():
                    return
                try:
                    host.service(wait)  # type: ignore[arg-type]
                except errors.StateError:
                    return

        thread, failures = start(network)
        for _ in range(rng.randrange(1, 50)):
            peer.put_packet(b"x" * rng.randrange(1, 1000))
            client.service(0)
        time.sleep(rng.random() * 0.01)
        server.close()
        joined(thread, failures)
        client.close()


def test_host_peer_calls_from_another_thread_while_servicing() -> None:
    """HostPeer methods on thread B while thread A services the host."""
    server, client, server_peers = psk_pair()
    peer = server_peers[0]
    stop = threading.Event()
    deadline = time.monotonic() + 1.5

    def network() -> None:
        while not stop.is_set() and time.monotonic() < deadline:
            server.service(0.001)

    thread, failures = start(network)
    to_server = client.peers[0]
    rounds = 0
    while time.monotonic() < deadline and rounds < 20_000:
        rounds += 1
        peer.put_packet(b"ping")  # type: ignore[attr-defined]
        peer.get_stats()  # type: ignore[attr-defined]
        peer.get_status()  # type: ignore[attr-defined]
        to_server.put_packet(b"pong")
        client.service(0)
    stop.set()
    joined(thread, failures)
    server.close()
    client.close()


def _godot_pair(identity: Identity) -> tuple[UDPServer, PacketPeerDTLS, PacketPeerDTLS]:
    """(UDPServer, its connected server peer, the client), run as Godot scripts do."""
    server = EchoServer(identity, echo=False)
    client = connect_client(server.port, options=TLSOptions.client_unsafe())
    return server.udp, handshake(server, client), client


def test_godot_disconnect_and_stop_racing_poll_on_another_thread(ec_identity: Identity) -> None:
    """Thread A runs the Godot loop (server poll + peer poll + get_packet);
    the main thread disconnects the peer, then stops the server (ASan)."""
    for round_no in range(4):
        udp_server, server_peer, client = _godot_pair(ec_identity)
        stop = threading.Event()
        deadline = time.monotonic() + 1.0

        def loop(
            srv: UDPServer = udp_server,
            p: PacketPeerDTLS = server_peer,
            stop: threading.Event = stop,
            deadline: float = deadline,
        ) -> None:
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    srv.poll()
                except errors.StateError:
                    return  # stopped
                p.poll()
                try:
                    p.get_packet()
                except (errors.WouldBlockError, errors.StateError):
                    pass

        thread, failures = start(loop)
        for i in range(200):
            client.put_packet(b"data %d" % i)
            client.poll()
        if round_no % 2 == 0:
            server_peer.disconnect_from_peer()
        udp_server.stop()
        time.sleep(0.01)
        stop.set()
        joined(thread, failures)
        client.disconnect_from_peer()


# ---- fork ---------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_fork_while_a_network_thread_waits_in_service() -> None:
    """The documented fork rule: a thread blocked in service()/wait() holds
    no native lock, so a child forked meanwhile can use dtlspeer (new
    objects: RNG, handshakes). The child exits with 0 on success; a
    deadlock is caught by the bounded wait."""
    host = DTLSHost("127.0.0.1", 0, server_psk={PSK[0]: PSK[1]})
    thread, failures = start(lambda: [host.service(None) for _ in range(1) if host.is_open()])
    time.sleep(0.1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # the child: only this thread exists
        code = 1
        try:
            server, client, server_peers = psk_pair()
            code = 0 if server_peers else 2
            server.close()
            client.close()
        finally:
            os._exit(code)
    deadline = time.monotonic() + 20
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child deadlocked")
    host.close()
    joined(thread, failures)
    assert os.waitstatus_to_exitcode(status) == 0  # type: ignore[arg-type]


if sys.platform == "win32":  # pragma: no cover
    pytestmark = pytest.mark.skip("POSIX sockets in the helpers")

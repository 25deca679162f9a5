"""PacketPeerUDP.wait() fast path (Linux: a CLIENT wait of >= 40 ms or
forever blocks in recvmmsg itself, after clearing O_NONBLOCK once). Godot's
``wait()`` blocks until a packet is readable; these tests check that the
blocking path keeps every other call non-blocking, drains bursts, survives
signals and still times out. No timing assertions: every blocking call is
bounded by a timeout or released by a datagram another thread sends."""

from __future__ import annotations

import signal
import socket
import threading

import pytest

from dtlspeer import PacketPeerUDP
from dtlspeer._binding import lib
from dtlspeer.errors import WouldBlockError
from udp_helpers import until

LOCAL = "127.0.0.1"


def _bound() -> PacketPeerUDP:
    peer = PacketPeerUDP()
    peer.bind(0, LOCAL)
    return peer


def _sender() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LOCAL, 0))
    return s


def _send_later(sock: socket.socket, data: bytes, port: int, delay: float) -> threading.Timer:
    t = threading.Timer(delay, lambda: sock.sendto(data, (LOCAL, port)))
    t.start()
    return t


def test_blocking_wait_times_out_then_other_calls_stay_non_blocking():
    """After a blocking wait timed out, get_packet still raises WouldBlockError
    at once (Godot: empty queue, ERR_UNAVAILABLE) instead of blocking. A
    watchdog datagram (5 s) would be returned instead if it blocked."""
    peer = _bound()
    tx = _sender()
    assert peer.wait(0.05) is False  # blocking path (>= 40 ms), nothing sent
    watchdog = _send_later(tx, b"watchdog", peer.get_local_port(), 5.0)
    try:
        with pytest.raises(WouldBlockError):
            peer.get_packet()
        assert peer.get_available_packet_count() == 0
        assert peer.wait(0) is False
    finally:
        watchdog.cancel()
    peer.close()
    tx.close()


def test_blocking_wait_wakes_on_datagram_from_other_thread():
    """wait(timeout) and wait() (forever) return True as soon as a datagram arrives."""
    peer = _bound()
    tx = _sender()
    port = peer.get_local_port()
    for timeout in (2.0, None, 2.0):  # SO_RCVTIMEO changes between calls
        t = _send_later(tx, b"hello", port, 0.02)
        assert peer.wait(timeout) is True
        assert peer.get_packet() == b"hello"
        assert peer.get_packet_port() == tx.getsockname()[1]
        t.join()
    peer.close()
    tx.close()


def test_blocking_wait_drains_a_burst_in_order():
    """A burst larger than one recvmmsg batch is fully queued by one wait(), in order."""
    peer = _bound()
    tx = _sender()
    for i in range(10):
        tx.sendto(b"%d" % i, (LOCAL, peer.get_local_port()))
    assert peer.wait(2.0) is True
    ptr = peer._ep.ptr
    assert until(lambda: lib.dp_endpoint_queued(ptr, 0) == 10)  # loopback delivers at once
    assert [peer.get_packet() for _ in range(10)] == [b"%d" % i for i in range(10)]
    peer.close()
    tx.close()


def test_connect_after_blocking_wait_and_reply():
    """The benchmark's echo pattern: bound peer waits, learns the sender, connects, replies."""
    peer = _bound()
    tx = _sender()
    tx.settimeout(2.0)
    t = _send_later(tx, b"ping", peer.get_local_port(), 0.02)
    assert peer.wait(2.0)
    assert peer.get_packet() == b"ping"
    peer.connect_to_host(peer.get_packet_ip(), peer.get_packet_port())
    peer.put_packet(b"pong")
    assert tx.recv(64) == b"pong"
    t.join()
    tx.sendto(b"again", (LOCAL, peer.get_local_port()))
    assert peer.wait(2.0) and peer.get_packet() == b"again"
    peer.close()
    tx.close()


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")
def test_signal_during_blocking_wait_runs_handler_and_keeps_waiting():
    """A signal interrupts the blocking receive (EINTR): its Python handler runs
    and wait() resumes with the time left. The handler itself sends the
    datagram the resumed wait then receives."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals need the main thread")
    peer = _bound()
    tx = _sender()
    port = peer.get_local_port()
    calls = []

    def handler(signum, frame):
        calls.append(signum)
        tx.sendto(b"after-signal", (LOCAL, port))

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        assert peer.wait(5.0) is True
        assert peer.get_packet() == b"after-signal"
        assert calls == [signal.SIGALRM]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    peer.close()
    tx.close()


def test_refused_during_blocking_wait_is_counted_not_raised():
    """An ICMP port-unreachable while blocked never raises (ours; Godot reports an error)."""
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind((LOCAL, 0))
    dead_port = dead.getsockname()[1]
    dead.close()
    peer = PacketPeerUDP()
    peer.connect_to_host(LOCAL, dead_port)
    peer.put_packet(b"anyone?")
    assert peer.wait(0.2) in (True, False)  # True once the error was read and skipped
    assert until(lambda: peer.get_stats()["recv_errors"] >= 1, peer.get_available_packet_count)
    with pytest.raises(WouldBlockError):
        peer.get_packet()
    peer.close()


@pytest.mark.parametrize("timeout", [float("inf"), 1e12])
def test_huge_timeouts_are_clamped(timeout):
    """Very large timeouts are accepted (clamped to ~24.8 days); a datagram ends the wait."""
    peer = _bound()
    tx = _sender()
    t = _send_later(tx, b"x", peer.get_local_port(), 0.02)
    assert peer.wait(timeout) is True
    t.join()
    peer.close()
    tx.close()

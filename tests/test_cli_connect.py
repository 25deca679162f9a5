"""``python -m dtlspeer connect`` against an in-process DTLSHost server: a
server's records never reach the terminal as control sequences (unless
--raw), stdin without newlines is bounded, SIGTERM/SIGINT send close_notify.
Every wait is bounded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from dtlspeer import DisconnectReason, DTLSHost, HostEvent, HostEventType
from test_cli import PSK_ARGS
from udp_helpers import until

posix_only = pytest.mark.skipif(os.name != "posix", reason="signals and /proc")
PSK = {PSK_ARGS[1].encode(): bytes.fromhex(PSK_ARGS[3])}
HOSTILE = b"\x1b]0;pwned\x07\x1b[2J\x9b31m\xe2\x80\xaeevil\r\x00tail"


class EchoServer:
    """A DTLSHost server serviced from the test; replies with ``reply(data)``."""

    def __init__(self) -> None:
        self.host = DTLSHost("127.0.0.1", 0, server_psk=PSK)
        self.events: list[HostEvent] = []
        self.reply = lambda data: data

    def step(self) -> None:
        for event in self.host.service(0):
            self.events.append(event)
            if event.type == HostEventType.RECEIVE:
                event.peer.put_packet(self.reply(event.data))

    def of(self, kind: HostEventType) -> list[HostEvent]:
        return [e for e in self.events if e.type == kind]


@pytest.fixture
def server() -> Iterator[EchoServer]:
    s = EchoServer()
    yield s
    s.host.close()


def start_connect(server: EchoServer, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "dtlspeer", "connect", "127.0.0.1",
         str(server.host.get_local_port()), *PSK_ARGS, "--linger", "5", *extra],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run_until_exit(server: EchoServer, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < end:
        server.step()
        time.sleep(0.002)
    assert proc.poll() is not None, "connect did not end"


def connected(server: EchoServer, proc: subprocess.Popen[bytes]) -> None:
    end = time.monotonic() + 30  # the child interpreter starts first
    while not server.of(HostEventType.CONNECT) and time.monotonic() < end:
        server.step()
        time.sleep(0.002)
    assert server.of(HostEventType.CONNECT), proc.stderr.read() if proc.poll() is not None else ""


def test_records_never_reach_the_terminal_as_control_sequences(server: EchoServer) -> None:
    server.reply = lambda data: HOSTILE
    proc = start_connect(server)
    connected(server, proc)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"hello\n")
    proc.stdin.close()
    run_until_exit(server, proc)
    out = proc.stdout.read()
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    for byte in (b"\x1b", b"\x07", b"\x9b", b"\x00", b"\r", "\u202e".encode()):
        assert byte not in out, out
    assert out == b"\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\u202eevil\\r\\x00tail\n", out


def test_raw_prints_the_bytes_as_received(server: EchoServer) -> None:
    server.reply = lambda data: HOSTILE
    proc = start_connect(server, "--raw")
    connected(server, proc)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"hello\n")
    proc.stdin.close()
    run_until_exit(server, proc)
    assert proc.stdout.read() == HOSTILE + b"\n"


@posix_only
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_with_close_notify(server: EchoServer, signum: int) -> None:
    proc = start_connect(server)
    connected(server, proc)
    proc.send_signal(signum)
    assert until(lambda: bool(server.of(HostEventType.DISCONNECT)), server.step)
    assert server.of(HostEventType.DISCONNECT)[0].reason == DisconnectReason.PEER_CLOSED
    run_until_exit(server, proc)
    assert proc.returncode == 128 + signum
    assert proc.stdin is not None
    proc.stdin.close()


def peak_rss_of_connect(server: EchoServer, mib_without_newline: int) -> tuple[int, str]:
    """(peak RSS in KiB, stderr) of a ``connect`` fed that many MiB without a
    newline, then ``ok``. A wrapper process streams the input and reads the
    child's peak RSS (a forked child starts with its parent's resident
    pages: the wrapper stays small itself)."""
    port = str(server.host.get_local_port())
    wrapper = (
        "import resource, subprocess, sys\n"
        "proc = subprocess.Popen([sys.executable, '-m', 'dtlspeer', 'connect', '127.0.0.1', "
        f"{port!r}, *{PSK_ARGS!r}, '--linger', '1'], stdin=subprocess.PIPE, "
        "stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)\n"
        "chunk = b'x' * (1 << 20)\n"
        f"for _ in range({mib_without_newline}):\n"
        "    proc.stdin.write(chunk)\n"
        "proc.stdin.write(b'\\nok\\n')\n"
        "proc.stdin.close()\n"
        "sys.stderr.write(proc.stderr.read().decode())\n"
        "print(proc.wait(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    # Under ASan, freed chunks sit in its quarantine (RSS grows with every
    # read); without one the measure is about our buffers only.
    asan = os.environ.get("ASAN_OPTIONS", "")
    env = dict(os.environ, ASAN_OPTIONS=f"{asan}:quarantine_size_mb=0" if asan else
               "quarantine_size_mb=0")
    proc = subprocess.Popen([sys.executable, "-c", wrapper], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    run_until_exit(server, proc, timeout=120)
    assert proc.stdout is not None and proc.stderr is not None
    code, max_rss_kib = map(int, proc.stdout.read().split())
    stderr = proc.stderr.read().decode()
    assert code == 0, stderr
    return max_rss_kib, stderr


@posix_only
def test_stdin_without_newlines_is_bounded(server: EchoServer) -> None:
    """32 MiB without a newline: skipped as too long, memory stays flat
    (compared with the same client fed one short line)."""
    baseline, _ = peak_rss_of_connect(server, 0)
    peak, stderr = peak_rss_of_connect(server, 32)
    assert "longer than" in stderr, stderr
    assert [e.data for e in server.of(HostEventType.RECEIVE)] == [b"ok", b"ok"]
    assert peak - baseline < 16 * 1024, (baseline, peak)  # the input alone is 32 MiB

"""Worker processes on one port (issue 14 section 4).

Hosts bound to one port with ``reuse_port=True`` form a SO_REUSEPORT group;
the kernel spreads clients by a hash of the address. They share the cookie
secret, so a cookie one minted is valid at the other. With ``worker_id``
each writes its id as the first byte of its Connection IDs and (Linux) the
classic-BPF reuseport program sends CID records to the socket with that
index: a client whose NAT rebinds stays with the worker holding its session.

Hosts in one process behave as worker processes do for the kernel (one
socket each); the CLI test runs real ``serve --workers 2`` processes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from _host_clients import PSK_IDENTITY, PSK_KEY, EngineClients
from dtlspeer import DTLSHost, HostEvent, HostEventType, PacketPeerDTLS, SessionTicketKeys
from dtlspeer._engine import EngineStatus
from udp_helpers import until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="SO_ATTACH_REUSEPORT_CBPF is Linux only")

SECRET = bytes(range(32))
ROOT = Path(__file__).resolve().parents[1]


class Workers:
    """``count`` hosts on one port, bound in order (worker i = socket i)."""

    def __init__(self, count: int, secrets: list[bytes] | None = None,
                 ticket_keys: SessionTicketKeys | None = None) -> None:
        self.hosts: list[DTLSHost] = []
        self.events: list[list[HostEvent]] = []
        self.ticket_keys = ticket_keys
        for i in range(count):
            self.add(i, (secrets or [SECRET] * count)[i])

    def add(self, worker_id: int, secret: bytes = SECRET) -> DTLSHost:
        port = self.hosts[0].get_local_port() if self.hosts else 0
        host = DTLSHost("127.0.0.1", port, server_psk={PSK_IDENTITY: PSK_KEY},
                        cookie_secret=secret, reuse_port=True, worker_id=worker_id,
                        ticket_keys=self.ticket_keys)
        self.hosts.append(host)
        self.events.append([])
        return host

    @property
    def port(self) -> int:
        return self.hosts[0].get_local_port()

    def step(self) -> None:
        """Service every worker; echo every record."""
        for host, log in zip(self.hosts, self.events):
            for event in host.service(0):
                log.append(event)
                if event.type == HostEventType.RECEIVE:
                    event.peer.put_packet(event.data)

    def count(self, worker: int, kind: HostEventType) -> int:
        return sum(1 for e in self.events[worker] if e.type == kind)

    def close(self) -> None:
        for host in self.hosts:
            host.close()


def drive(workers: Workers, clients: EngineClients) -> None:
    workers.step()
    clients.pump()


def test_fifty_clients_spread_over_two_workers() -> None:
    workers = Workers(2)
    clients = EngineClients(50, workers.port, sources=4, connection_id=True)
    try:
        clients.start(0, 50)
        assert until(lambda: all(clients.status(i) == EngineStatus.CONNECTED for i in range(50)),
                     lambda: drive(workers, clients))
        connects = [workers.count(w, HostEventType.CONNECT) for w in (0, 1)]
        assert sum(connects) == 50 and min(connects) > 0, connects
        for i in range(50):
            clients.write(i, b"ping %d" % i)
        assert until(lambda: all(b"ping %d" % i in clients.received[i] for i in range(50)),
                     lambda: drive(workers, clients))
    finally:
        clients.close()
        workers.close()


@pytest.mark.parametrize("shared", [True, False])
def test_a_cookie_from_one_worker_is_valid_at_the_other(shared: bool) -> None:
    """Worker 0 alone answers 24 hellos with HelloVerifyRequests; then worker
    1 joins the group, so the kernel hashes about half of the clients' next
    hellos (with worker 0's cookies) to it. With the shared secret worker 1
    admits them as they are; with a secret of its own it refuses them and
    answers with new HelloVerifyRequests (the control: one more round trip
    per client, and a flood of them when workers come and go)."""
    workers = Workers(1)
    clients = EngineClients(24, workers.port, sources=4)
    try:
        clients.start(0, 24)
        assert until(lambda: workers.hosts[0].get_stats()["hvr_sent"] >= 24, workers.step)
        second = workers.add(1, SECRET if shared else os.urandom(32))
        assert until(
            lambda: all(clients.status(i) == EngineStatus.CONNECTED for i in range(24)),
            lambda: drive(workers, clients))
        stats = second.get_stats()
        assert stats["admitted"] > 0, stats
        if shared:
            assert stats["hvr_sent"] == 0, stats  # worker 0's cookies were valid here
        else:
            assert stats["hvr_sent"] > 0, stats  # refused: each client needed a new cookie
    finally:
        clients.close()
        workers.close()


def test_rebound_cid_client_reaches_the_worker_with_its_session() -> None:
    """One CID client rebinds 12 times (new port, three source addresses):
    every time the steering program sends its records to the worker that
    holds the session (the kernel's hash alone would pick the other worker
    about half of the time, which drops them): the session and peer go on,
    the owner reports each move, the other worker sees nothing."""
    workers = Workers(2)
    clients = EngineClients(1, workers.port, sources=1, connection_id=True)
    try:
        clients.start(0, 1)
        assert until(lambda: clients.status(0) == EngineStatus.CONNECTED,
                     lambda: drive(workers, clients))
        owner = 0 if workers.count(0, HostEventType.CONNECT) else 1
        other = 1 - owner
        peer = next(e.peer for e in workers.events[owner] if e.type == HostEventType.CONNECT)
        cid = peer.get_connection_id()
        assert cid is not None and cid[0][0] == owner
        other_before = workers.hosts[other].get_stats()
        for n in range(1, 13):
            address = clients.rebind(0, f"127.0.0.{2 + n % 3}")
            clients.write(0, b"move %d" % n)
            assert until(lambda n=n: b"move %d" % n in clients.received[0],  # type: ignore[misc]
                         lambda: drive(workers, clients)), f"lost after rebind {n}"
            assert peer.get_peer_address() == address
            assert workers.count(owner, HostEventType.ADDRESS_CHANGED) == n
        other_after = workers.hosts[other].get_stats()
        assert other_after["datagrams_in"] == other_before["datagrams_in"]
        assert workers.count(other, HostEventType.CONNECT) == 0
    finally:
        clients.close()
        workers.close()


def _connect_via(workers: Workers, worker: int, session: object = None
                 ) -> tuple[DTLSHost, object] | None:
    """Connect one PSK client (a fresh socket: a new 4-tuple for the kernel's
    hash) and return (client host, its peer) if it landed on ``worker``;
    None (closed) if the kernel picked the other one."""
    client = DTLSHost("127.0.0.1", 0, client_psk=(PSK_IDENTITY, PSK_KEY))
    before = [workers.count(i, HostEventType.CONNECT) for i in range(len(workers.hosts))]
    peer = client.connect("127.0.0.1", workers.port, session=session)  # type: ignore[arg-type]
    def step() -> None:
        workers.step()
        client.service(0)

    until(lambda: peer.get_status() == PacketPeerDTLS.STATUS_CONNECTED, step)
    after = [workers.count(i, HostEventType.CONNECT) for i in range(len(workers.hosts))]
    assert peer.get_status() == PacketPeerDTLS.STATUS_CONNECTED
    if after[worker] == before[worker] + 1:
        return client, peer
    client.close()
    return None


def test_a_session_from_one_worker_resumes_at_the_other() -> None:
    """Workers sharing ticket keys (as ``serve --workers`` does): a client's
    session from worker 0 resumes when its reconnect hashes to worker 1; a
    worker with keys of its own runs a full handshake instead (the control)."""
    for shared in (True, False):
        keys = SessionTicketKeys()
        workers = Workers(1, ticket_keys=keys)
        workers.ticket_keys = keys if shared else SessionTicketKeys()
        workers.add(1)
        clients: list[DTLSHost] = []
        try:
            first = None
            for _ in range(40):  # the kernel's hash decides: bounded retries
                first = _connect_via(workers, 0)
                if first is not None:
                    break
            assert first is not None, "no client landed on worker 0 in 40 tries"
            clients.append(first[0])
            session = first[1].get_session()  # type: ignore[attr-defined]
            assert session is not None
            second = None
            for _ in range(40):
                second = _connect_via(workers, 1, session)
                if second is not None:
                    break
            assert second is not None, "no client landed on worker 1 in 40 tries"
            clients.append(second[0])
            assert second[1].is_session_resumed() is shared  # type: ignore[attr-defined]
        finally:
            for client in clients:
                client.close()
            workers.close()


def test_serve_workers_cli() -> None:
    """``dtlspeer serve --workers 2``: both workers take clients on one port
    and echo; SIGTERM stops them all with exit status 0."""
    # The environment as inherited: the installed dtlspeer in CI, PYTHONPATH=src
    # in a checkout with the extension built in place (src/ alone has no
    # extension in a clean clone).
    proc = subprocess.Popen(
        [sys.executable, "-m", "dtlspeer", "serve", "--workers", "2", "--bind", "127.0.0.1",
         "--port", "0", "--psk-identity", PSK_IDENTITY.decode(), "--psk-hex", PSK_KEY.hex()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    clients = None
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+) .* 2 workers", first)
        if m is None:
            proc.kill()
            assert m, first + proc.communicate(timeout=10)[1]
        clients = EngineClients(16, int(m.group(1)), sources=4, connection_id=True)
        clients.start(0, 16)
        assert until(lambda: all(clients.status(i) == EngineStatus.CONNECTED
                                 for i in range(16)), clients.pump)
        for i in range(16):
            clients.write(i, b"echo %d" % i)
        assert until(lambda: all(b"echo %d" % i in clients.received[i] for i in range(16)),
                     clients.pump)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        text = first + out
        for worker in (0, 1):
            assert f"worker {worker}: stopped (SIGTERM)" in text, text
        connects = [text.count(f"worker {w}: connect ") for w in (0, 1)]
        assert sum(connects) == 16 and min(connects) > 0, connects
    finally:
        if clients is not None:
            clients.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)

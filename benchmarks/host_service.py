"""DTLSHost batch path: events per second of service() CPU, idle-tick cost, handshakes/s.

The clients are lightweight engine clients in the same process
(tests/_host_clients.py: one Python socket + one C engine connection each,
8 loopback source addresses); only the SERVER's work is timed, with thread
CPU time around its calls, so the client driver's Python cost is excluded.

1. ``--peers`` (1000) connected PSK peers each send one 100-byte record per
   round; the server services until it has every record (receive only), then
   the same with an echo (put_packet per event + the sendmmsg flush).
   Printed: events per second of server CPU, events per service call, and
   the ratio against a plain-Python ``recvfrom_into`` + dict routing loop
   receiving the same number of plaintext datagrams from as many sockets.
2. ``--idle`` (10000) connected peers, nobody sends: CPU per service(0)
   call (a game tick). With the timer heap this is independent of the
   number of peers.
3. Handshakes/s while connecting the ``--idle`` peers in waves of 1000:
   server CPU per handshake (cookie round included) and wall clock.

Run: ``python benchmarks/host_service.py [--peers 1000] [--idle 10000] [--rounds 30]``.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from _host_clients import PSK_IDENTITY, PSK_KEY, PSK_SUITE, EngineClients  # noqa: E402
from dtlspeer import DTLSHost, DTLSSettings, HostEventType  # noqa: E402


def make_server(peers: int) -> DTLSHost:
    return DTLSHost(
        "127.0.0.1",
        0,
        server_psk={PSK_IDENTITY: PSK_KEY},
        ciphersuites=[PSK_SUITE],
        max_peers=peers + 16,
        settings=DTLSSettings(handshake_timeout_min_ms=1000, idle_timeout_ms=600_000),
    )


def connect_all(server: DTLSHost, count: int) -> tuple[EngineClients, float, float]:
    """Connect count clients; returns (clients, server CPU s, wall s)."""
    clients = EngineClients(count, server.get_local_port(), sources=8)
    connected = 0
    cpu = 0.0
    wall_start = time.perf_counter()
    deadline = time.monotonic() + 300
    for first in range(0, count, 1000):
        last = min(count, first + 1000)
        clients.start(first, last)
        while connected < last and time.monotonic() < deadline:
            t0 = time.thread_time()
            events = server.service(0)
            cpu += time.thread_time() - t0
            connected += sum(1 for e in events if e.type == HostEventType.CONNECT)
            clients.pump()
    if connected != count:
        raise SystemExit(f"only {connected}/{count} connected: {server.get_stats()}")
    return clients, cpu, time.perf_counter() - wall_start


def rounds_of_traffic(
    server: DTLSHost, clients: EngineClients, count: int, rounds: int, echo: bool
) -> tuple[int, float, int]:
    """Returns (events, server CPU s, service calls)."""
    payload = b"x" * 100
    events_total, cpu, calls = 0, 0.0, 0
    for _ in range(rounds):
        for i in range(count):
            clients.write(i, payload)
        got = 0
        deadline = time.monotonic() + 10
        while got < count and time.monotonic() < deadline:
            t0 = time.thread_time()
            events = server.service(0)
            if echo:
                for e in events:
                    if e.type == HostEventType.RECEIVE:
                        e.peer.put_packet(e.data)
                server.flush()
            cpu += time.thread_time() - t0
            calls += 1 if events else 0
            got += sum(1 for e in events if e.type == HostEventType.RECEIVE)
            clients.pump()
        if got < count:
            raise SystemExit(f"lost records: {got}/{count}")
        events_total += got
        for r in clients.received:
            r.clear()
    return events_total, cpu, calls


def plain_python_baseline(count: int, rounds: int) -> tuple[int, float]:
    """Plain sockets: count senders, one receiver with recvfrom_into + dict."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    addr = receiver.getsockname()
    senders = []
    for i in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.0.0.{2 + i % 8}", 0))
        s.connect(addr)
        senders.append(s)
    buf = bytearray(2048)
    view = memoryview(buf)
    inbox: dict[tuple[str, int], list[bytes]] = {}
    total, cpu = 0, 0.0
    payload = b"x" * 137  # the size of a 100-byte record on the wire (AES-GCM)
    for _ in range(rounds):
        for s in senders:
            s.send(payload)
        got = 0
        deadline = time.monotonic() + 10
        while got < count and time.monotonic() < deadline:
            t0 = time.thread_time()
            while True:
                try:
                    n, src = receiver.recvfrom_into(buf)
                except BlockingIOError:
                    break
                inbox.setdefault(src, []).append(bytes(view[:n]))
                got += 1
            cpu += time.thread_time() - t0
        total += got
        inbox.clear()
    for s in senders:
        s.close()
    receiver.close()
    return total, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--idle", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--ticks", type=int, default=2000)
    args = parser.parse_args()

    server = make_server(args.peers)
    clients, _, _ = connect_all(server, args.peers)
    rounds_of_traffic(server, clients, args.peers, 2, echo=False)  # warm-up
    events, cpu, calls = rounds_of_traffic(server, clients, args.peers, args.rounds, False)
    eps = events / cpu
    print(
        f"[{args.peers} peers] receive: {eps:,.0f} events/s of service() CPU, "
        f"{events / max(calls, 1):.0f} events per call"
    )
    events, cpu_echo, _ = rounds_of_traffic(server, clients, args.peers, args.rounds, True)
    print(
        f"[{args.peers} peers] receive + echo (put_packet + flush): "
        f"{events / cpu_echo:,.0f} events/s of server CPU"
    )
    base_n, base_cpu = plain_python_baseline(args.peers, args.rounds)
    base = base_n / base_cpu
    print(
        f"[{args.peers} senders] plain Python recvfrom_into + dict, no crypto: "
        f"{base:,.0f} datagrams/s -> DTLSHost/plain = {eps / base:.2f}x"
    )
    clients.close()
    server.close()

    server = make_server(args.idle)
    clients, hs_cpu, hs_wall = connect_all(server, args.idle)
    print(
        f"[{args.idle} PSK handshakes, cookie round included] "
        f"server CPU {hs_cpu * 1000 / args.idle:.3f} ms "
        f"each = {args.idle / hs_cpu:,.0f}/s of server CPU; wall {args.idle / hs_wall:,.0f}/s "
        "(includes the Python client driver)"
    )
    for _ in range(50):
        server.service(0)
    t0 = time.thread_time()
    for _ in range(args.ticks):
        server.service(0)
    per_tick = (time.thread_time() - t0) / args.ticks
    stats = server.get_stats()
    print(
        f"[{args.idle} idle peers] CPU per service(0) tick: {per_tick * 1e6:.1f} us "
        f"(timer heap: {stats['timers']} entries, timer runs so far {stats['timer_runs']})"
    )
    small = make_server(10)
    few, _, _ = connect_all(small, 10)
    t0 = time.thread_time()
    for _ in range(args.ticks):
        small.service(0)
    small_tick = (time.thread_time() - t0) / args.ticks
    print(
        f"[10 idle peers] CPU per service(0) tick: {small_tick * 1e6:.1f} us "
        f"-> 10000/10 peers tick ratio {per_tick / small_tick:.2f}x"
    )
    few.close()
    small.close()
    clients.close()
    server.close()


if __name__ == "__main__":
    main()

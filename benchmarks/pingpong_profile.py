"""Instructions (callgrind) or CPU time per ping-pong round trip, both ends
in one process, deterministic: ``python -m benchmarks.pingpong_profile``.

The runner's ``pingpong`` metric times one message in flight between two
processes, so its ratio mixes what each end computes with how fast the
kernel wakes them. This takes the waits out: one thread plays client and
server in turn over loopback, and one round trip is exactly the calls each
end of the runner makes once the datagram is there (plain sockets:
``send``/``recvfrom``/``sendto``/``recv``; DTLSHost: ``put_packet``, the
service that sends and reads it, the echo's ``put_packet``, ...; Godot-style
classes: ``put_packet``, ``UDPServer.poll``, ``poll``, the reads and the
echo). 100-byte messages, as in the runner.

* ``--callgrind``: instructions per round trip, both ends together (user
  space: the kernel's share is outside callgrind's view), and the top
  functions;
* otherwise: process CPU time per round trip (kernel included), min of
  ``--repeat`` rounds.
"""

from __future__ import annotations

import argparse
import resource
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any, Callable

from . import callgrind
from .harness import HOST, Cfg, make_certificate

MESSAGE = b"x" * 100
ROWS = ("plain", "dtlspeer-host", "dtlspeer")


def _plain(cfg: Cfg) -> Callable[[], bytes]:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind((HOST, 0))
    server.settimeout(0.05)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.connect(server.getsockname())
    client.settimeout(2.0)

    def round_trip() -> bytes:
        client.send(MESSAGE)
        data, src = server.recvfrom(2048)
        server.sendto(data, src)
        return client.recv(2048)

    return round_trip


def _host(cfg: Cfg) -> Callable[[], bytes]:
    from dtlspeer import DTLSHost, HostEventType

    from .libs import dtlspeer_host

    server = dtlspeer_host.make_host(cfg)
    client = DTLSHost(HOST, 0, client_options=dtlspeer_host._options(cfg)[1])
    peer = client.connect(HOST, server.get_local_port())
    receive, connect = HostEventType.RECEIVE, HostEventType.CONNECT
    deadline = time.monotonic() + 30
    while not any(e.type == connect for e in client.service(0.001)):
        server.service(0)
        if time.monotonic() > deadline:
            raise SystemExit(f"handshake failed: {peer.get_last_error()}")

    def round_trip() -> bytes:
        peer.put_packet(MESSAGE)
        client.flush()  # the client's next service() sends it (before it would wait)
        for event in server.service(0):
            if event.type is receive:
                event.peer.put_packet(event.data)
        server.flush()  # likewise the server's next service()
        echo = b""
        for event in client.service(0):
            if event.type is receive:
                echo = event.data
        return echo

    return round_trip


def _godot(cfg: Cfg) -> Callable[[], bytes]:
    from .libs import dtlspeer_dtls

    server = dtlspeer_dtls.Server(cfg)
    client = dtlspeer_dtls.Client(server.port, dtlspeer_dtls._materials(cfg)[1])
    deadline = time.monotonic() + 30
    while client.dtls.get_status() != client.dtls.STATUS_CONNECTED:
        client.dtls.poll()
        server.accept()
        for p in server.peers:
            p.poll()
        if time.monotonic() > deadline:
            raise SystemExit(f"handshake failed: {client.dtls.get_last_error()}")
    dtls = client.dtls

    def round_trip() -> bytes:
        dtls.put_packet(MESSAGE)
        server.accept()
        for peer in server.peers:
            peer.poll()
            while peer.get_available_packet_count():
                peer.put_packet(peer.get_packet())
        dtls.poll()
        return dtls.get_packet() if dtls.get_available_packet_count() else b""

    return round_trip


def run(row: str, cfg: Cfg, trips: int, warmup: int, repeat: int,
        measure: Callable[[], Any] | None) -> list[float]:
    """CPU seconds per round of ``trips`` round trips (``measure``: the
    callgrind toggle, called around the measured trips)."""
    make = {"plain": _plain, "dtlspeer-host": _host, "dtlspeer": _godot}[row]
    round_trip = make(cfg)
    for _ in range(warmup):
        if round_trip() != MESSAGE:
            raise SystemExit("warm-up echo lost or wrong")
    rounds = []
    for _ in range(repeat):
        if measure is not None:
            measure()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        bad = 0
        for _ in range(trips):
            bad += round_trip() != MESSAGE
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        if measure is not None:
            measure()
        if bad:
            print(f"{bad} echoes lost or wrong", file=sys.stderr)
        rounds.append((r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime))
    return rounds


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pingpong_profile",
                                description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--lib", default="dtlspeer-host", choices=ROWS)
    p.add_argument("--trips", type=int, default=5000, help="round trips per round")
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--repeat", type=int, default=5, help="rounds (CPU mode: min is printed)")
    callgrind.add_options(p, top_default=20)
    args = p.parse_args(argv)
    if args.callgrind and not args.under_valgrind:
        out = args.out or tempfile.mktemp(prefix="callgrind.pingpong.")
        count = callgrind.rerun("benchmarks.pingpong_profile",
                                list(sys.argv[1:] if argv is None else argv),
                                {"--callgrind": 0, "--repeat": 1}, ["--repeat", "1"], out)
        if count is None:
            return 1
        per = count.get("Ir", 0) / args.trips
        print(f"{args.lib}: {per:,.0f} instructions per round trip (both ends, user space; "
              f"{args.trips} trips)  [{out}]")
        for line in callgrind.top(out, args.top):
            print("   " + line)
        return 0
    key, cert = make_certificate()
    cfg = Cfg(key_pem=key, cert_pem=cert, timeout=60)
    measure = callgrind.toggle() if args.under_valgrind else None
    rounds = run(args.lib, cfg, args.trips, args.warmup, args.repeat, measure)
    if not args.under_valgrind:
        per = [1e6 * r / args.trips for r in rounds]
        print(f"{args.lib}: {min(per):.2f} us CPU per round trip (both ends; min of "
              f"{len(rounds)} rounds of {args.trips}: {', '.join(f'{x:.2f}' for x in per)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

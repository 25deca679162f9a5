"""PacketPeerUDP ping-pong vs plain-socket ping-pong (100-byte datagrams).

Each run: an echo process and a client process-local loop, both sides using
the same API, one datagram in flight, fixed duration. Variants:

* ``plain``: ``socket`` with ``settimeout`` on both sides (the client
  ``settimeout(2)`` gives up on a lost echo, exactly what ``wait(2)`` does
  in the PacketPeerUDP client). The reference for the target.
* ``blocking``: ``socket`` in plain blocking mode, no timeout at all (the
  fastest a Python user can write, but it hangs forever on a lost datagram).
* ``dtlspeer``: ``PacketPeerUDP`` on both sides (Godot API: ``put_packet``,
  ``wait``, ``get_packet``).

The variants are interleaved within every run (order rotated per run) so
machine load hits them alike; the summary is the median of the runs.
Run: ``python benchmarks/udp_pingpong.py [--seconds 1.0] [--runs 5]``,
``--quick`` for a short check (3 runs of 0.3 s).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

PAYLOAD = b"x" * 100
HOST = "127.0.0.1"
TARGET = 0.9
VARIANTS = ("plain", "blocking", "dtlspeer")
LABELS = {
    "plain": "plain socket (settimeout)",
    "blocking": "plain socket (blocking) ",
    "dtlspeer": "PacketPeerUDP            ",
}


def echo_plain(port_q: mp.Queue, stop_after: float, blocking: bool) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((HOST, 0))
    if not blocking:
        s.settimeout(0.5)
    port_q.put(s.getsockname()[1])
    end = time.monotonic() + stop_after
    while time.monotonic() < end:
        try:
            data, src = s.recvfrom(2048)
        except socket.timeout:
            continue
        if data == b"stop":
            break
        s.sendto(data, src)
    s.close()


def echo_dtlspeer(port_q: mp.Queue, stop_after: float, blocking: bool) -> None:
    from dtlspeer import PacketPeerUDP

    p = PacketPeerUDP()
    p.bind(0, HOST)
    port_q.put(p.get_local_port())
    end = time.monotonic() + stop_after
    connected = False
    while time.monotonic() < end:
        if not p.wait(0.5):
            continue
        data = p.get_packet()
        if data == b"stop":
            break
        if not connected:  # one client: reply over a connected socket from now on
            p.connect_to_host(p.get_packet_ip(), p.get_packet_port())
            connected = True
        p.put_packet(data)
    p.close()


def client_plain(port: int, seconds: float, blocking: bool) -> float:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((HOST, port))
    if not blocking:
        s.settimeout(2)
    n = 0
    end = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        s.send(PAYLOAD)
        s.recv(2048)
        n += 1
    elapsed = time.perf_counter() - start
    s.send(b"stop")
    s.close()
    return n / elapsed


def client_dtlspeer(port: int, seconds: float, blocking: bool) -> float:
    from dtlspeer import PacketPeerUDP

    p = PacketPeerUDP()
    p.connect_to_host(HOST, port)
    n = 0
    end = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        p.put_packet(PAYLOAD)
        if not p.wait(2):
            raise RuntimeError("echo lost")
        p.get_packet()
        n += 1
    elapsed = time.perf_counter() - start
    p.put_packet(b"stop")
    p.close()
    return n / elapsed


def run(kind: str, seconds: float) -> float:
    """Round trips/s of one variant: echo in a child process, client here."""
    q: mp.Queue = mp.Queue()
    blocking = kind == "blocking"
    echo = echo_dtlspeer if kind == "dtlspeer" else echo_plain
    proc = mp.Process(target=echo, args=(q, seconds + 10, blocking))
    proc.start()
    port = q.get(timeout=10)
    try:
        client = client_dtlspeer if kind == "dtlspeer" else client_plain
        return client(port, seconds, blocking)
    finally:
        proc.join(timeout=15)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=1.0, help="duration of each measurement")
    ap.add_argument("--runs", type=int, default=5, help="runs (each measures every variant once)")
    ap.add_argument("--quick", action="store_true", help="short check: 3 runs of 0.3 s")
    ap.add_argument("--no-blocking", action="store_true", help="skip the blocking-socket variant")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.seconds = 3, 0.3
    variants = [v for v in VARIANTS if not (args.no_blocking and v == "blocking")]
    rates: dict[str, list[float]] = {v: [] for v in variants}
    for i in range(args.runs):
        order = variants[i % len(variants):] + variants[: i % len(variants)]
        for kind in order:
            rates[kind].append(run(kind, args.seconds))
        got = ", ".join(f"{k} {rates[k][-1]:.0f}" for k in variants)
        print(f"  run {i + 1}: {got} round trips/s", flush=True)
    print(f"{args.runs} runs of {args.seconds:g} s, 100-byte datagrams, 1 in flight, medians:")
    for kind in variants:
        print(f"  {LABELS[kind]}: {statistics.median(rates[kind]):9.0f} round trips/s "
              f"(per run: {', '.join(f'{r:.0f}' for r in rates[kind])})")
    for base in (v for v in variants if v != "dtlspeer"):
        ratios = [o / b for o, b in zip(rates["dtlspeer"], rates[base])]
        med = statistics.median(ratios)
        verdict = "" if base != "plain" else (" MET" if med >= TARGET else " MISSED")
        print(f"ratio PacketPeerUDP/{base}: {med:.2f}x (target >= {TARGET}x vs plain){verdict}; "
              f"per run: {', '.join(f'{r:.2f}' for r in ratios)}")


if __name__ == "__main__":
    main()

"""PacketPeerUDP ping-pong vs plain-socket ping-pong (100-byte datagrams).

Each run: an echo process and a client, both using the same API (plain
``socket`` or ``PacketPeerUDP``), one datagram in flight, fixed duration.
Prints round trips/s for both and their ratio (median of several runs).
Run: ``python benchmarks/udp_pingpong.py [--seconds 1.0] [--runs 5]``.
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


def echo_plain(port_q: mp.Queue, stop_after: float) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((HOST, 0))
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


def echo_dtlspeer(port_q: mp.Queue, stop_after: float) -> None:
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


def client_plain(port: int, seconds: float) -> float:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((HOST, port))
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


def client_dtlspeer(port: int, seconds: float) -> float:
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
    q: mp.Queue = mp.Queue()
    echo = echo_plain if kind == "plain" else echo_dtlspeer
    proc = mp.Process(target=echo, args=(q, seconds + 10))
    proc.start()
    port = q.get(timeout=10)
    try:
        client = client_plain if kind == "plain" else client_dtlspeer
        return client(port, seconds)
    finally:
        proc.join(timeout=15)
        if proc.is_alive():
            proc.terminate()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    ratios, plain, ours = [], [], []
    for _ in range(args.runs):
        a = run("plain", args.seconds)
        b = run("dtlspeer", args.seconds)
        plain.append(a)
        ours.append(b)
        ratios.append(b / a)
    print(f"plain socket  : {statistics.median(plain):9.0f} round trips/s (median of {args.runs})")
    print(f"PacketPeerUDP : {statistics.median(ours):9.0f} round trips/s")
    print(f"ratio PacketPeerUDP/plain: {statistics.median(ratios):.2f}x (target >= 0.9x); "
          f"per run: {', '.join(f'{r:.2f}' for r in ratios)}")


if __name__ == "__main__":
    main()

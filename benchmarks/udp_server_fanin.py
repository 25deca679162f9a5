"""UDPServer fan-in from 256 clients vs a plain-Python receive loop routing with a dict.

A separate process sends 100-byte datagrams from 256 client sockets in
rounds; the receiver either uses ``UDPServer`` (poll(), take_connection(),
then per-peer get_packet) or a plain non-blocking socket with
``recvfrom_into`` and a dict {address: list of packets}. Both receivers
deliver every packet as ``bytes`` to a per-client list. Prints datagrams/s
delivered for both and the ratio (median of several runs).
Run: ``python benchmarks/udp_server_fanin.py [--packets 200000] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import select
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

HOST = "127.0.0.1"
CLIENTS = 256
PAYLOAD = b"y" * 100


def blast(port: int, total: int, go: mp.Event) -> None:
    socks = []
    for _ in range(CLIENTS):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((HOST, 0))
        s.connect((HOST, port))
        socks.append(s)
    go.wait(10)
    sent = 0
    while sent < total:
        for s in socks:
            try:
                s.send(PAYLOAD)
            except OSError:
                time.sleep(0.0005)
            sent += 1
        time.sleep(0)  # let the receiver run on a 2-core machine
    for s in socks:
        s.close()


def receive_plain(total: int, seconds: float) -> tuple[int, float]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    go = mp.Event()
    proc = mp.Process(target=blast, args=(sock.getsockname()[1], total, go))
    proc.start()
    peers: dict[tuple[str, int], list[bytes]] = {}
    buf = bytearray(65536)
    view = memoryview(buf)
    got = 0
    time.sleep(0.3)
    go.set()
    start = time.perf_counter()
    end = start + seconds
    while got < total and time.perf_counter() < end:
        select.select([sock], [], [], 0.05)
        while True:
            try:
                n, addr = sock.recvfrom_into(buf)
            except BlockingIOError:
                break
            q = peers.get(addr)
            if q is None:
                q = peers[addr] = []
            q.append(bytes(view[:n]))
            got += 1
    elapsed = time.perf_counter() - start
    proc.join(10)
    sock.close()
    return got, elapsed


def receive_dtlspeer(total: int, seconds: float) -> tuple[int, float]:
    from dtlspeer import UDPServer

    srv = UDPServer()
    srv.max_pending_connections = CLIENTS
    srv.listen(0, HOST)
    srv._ep.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    go = mp.Event()
    proc = mp.Process(target=blast, args=(srv.get_local_port(), total, go))
    proc.start()
    peers = []
    inbox: list[list[bytes]] = []
    got = 0
    sock = srv._ep.sock
    time.sleep(0.3)
    go.set()
    start = time.perf_counter()
    end = start + seconds
    while got < total and time.perf_counter() < end:
        select.select([sock], [], [], 0.05)
        srv.poll()
        while srv.is_connection_available():
            peers.append(srv.take_connection())
            inbox.append([])
        for peer, q in zip(peers, inbox):
            for _ in range(peer.get_available_packet_count()):
                q.append(peer.get_packet())
                got += 1
    elapsed = time.perf_counter() - start
    proc.join(10)
    srv.stop()
    return got, elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0, help="cap per run")
    args = ap.parse_args()
    plain, ours, ratios = [], [], []
    for _ in range(args.runs):
        g1, t1 = receive_plain(args.packets, args.seconds)
        g2, t2 = receive_dtlspeer(args.packets, args.seconds)
        plain.append(g1 / t1)
        ours.append(g2 / t2)
        ratios.append(ours[-1] / plain[-1])
        print(f"  run: plain {g1} pkts in {t1:.2f}s, UDPServer {g2} pkts in {t2:.2f}s", flush=True)
    print(f"plain dict loop: {statistics.median(plain):9.0f} datagrams/s (median of {args.runs})")
    print(f"UDPServer      : {statistics.median(ours):9.0f} datagrams/s")
    print(f"ratio UDPServer/plain: {statistics.median(ratios):.2f}x (target >= 1.0x); "
          f"per run: {', '.join(f'{r:.2f}' for r in ratios)}")


if __name__ == "__main__":
    main()

"""Per-packet cost of the native calls that take a lock (issue 11 item 2).

Every native object shared by several Python objects (a UDP endpoint and its
peers, a DTLSHost and its HostPeers) takes one mutex per call. This measures
the per-packet paths in one thread (the lock is never contended), in one
process, on loopback:

* ``plain``: a Python ``socket.send`` + ``recv`` of 100 bytes (the baseline);
* ``udp``: ``PacketPeerUDP.put_packet`` + ``get_packet`` (endpoint lock);
* ``dtls``: Godot-style ``PacketPeerDTLS.put_packet`` on a client, then the
  server's ``UDPServer.poll`` + ``PacketPeerDTLS.poll`` + ``get_packet``
  (endpoint lock through ``dp_link``);
* ``host``: ``HostPeer.put_packet`` + ``DTLSHost.flush`` on a client host,
  ``DTLSHost.service(0)`` on the server host (host lock);
* ``call``: the cheapest locked native call, ``dp_endpoint_queued``, alone
  (cffi's call overhead + the lock): the difference between two builds is
  the price of one uncontended lock/unlock, which the per-packet rows are
  too noisy to show on a shared machine.

Printed: ns per packet (median of ``--runs``) and the ratio to ``plain``
measured in the same run. Compare the ratios of two builds (before/after a
change) to see what the change costs. Bounded: ``--packets`` per run.

Run: ``python benchmarks/per_packet_lock.py [--packets 20000] [--runs 5]``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from dtlspeer import (  # noqa: E402
    Crypto,
    CryptoKey,
    DTLSHost,
    DTLSServer,
    HostEventType,
    PacketPeerDTLS,
    PacketPeerUDP,
    TLSOptions,
    UDPServer,
    X509Certificate,
)

HOST = "127.0.0.1"
PAYLOAD = b"x" * 100
PSK = (b"bench", b"k" * 32)
PSK_SUITE = "TLS-PSK-WITH-AES-128-GCM-SHA256"


def plain_pair() -> Callable[[int], None]:
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b.bind((HOST, 0))
    a.connect(b.getsockname())

    def run(n: int) -> None:
        send, recv = a.send, b.recv
        for _ in range(n):
            send(PAYLOAD)
            recv(2048)

    return run


def udp_pair() -> Callable[[int], None]:
    receiver = PacketPeerUDP()
    receiver.bind(0, HOST)
    sender = PacketPeerUDP()
    sender.connect_to_host(HOST, receiver.get_local_port())

    def run(n: int) -> None:
        put, get = sender.put_packet, receiver.get_packet
        for _ in range(n):
            put(PAYLOAD)
            get()

    return run


def _until(condition: Callable[[], bool], step: Callable[[], None]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("handshake did not finish in 10 s")
        step()


def dtls_pair() -> Callable[[int], None]:
    crypto = Crypto()
    key = crypto.generate_ec()
    cert = crypto.generate_self_signed_certificate(key, "CN=127.0.0.1")
    assert isinstance(key, CryptoKey) and isinstance(cert, X509Certificate)
    udp_server = UDPServer()
    udp_server.listen(0, HOST)
    dtls_server = DTLSServer()
    dtls_server.setup(TLSOptions.server(key, cert))
    udp = PacketPeerUDP()
    udp.connect_to_host(HOST, udp_server.get_local_port())
    client = PacketPeerDTLS()
    client.connect_to_peer(udp, "127.0.0.1", TLSOptions.client_unsafe())
    peers: list[PacketPeerDTLS] = []

    def step() -> None:
        udp_server.poll()
        while udp_server.is_connection_available():
            conn = udp_server.take_connection()
            assert conn is not None
            peer = dtls_server.take_connection(conn)
            if peer.get_status() == PacketPeerDTLS.STATUS_HANDSHAKING:
                peers.append(peer)
        for peer in peers:
            peer.poll()
        client.poll()
        time.sleep(0.001)

    _until(lambda: client.get_status() == PacketPeerDTLS.STATUS_CONNECTED and bool(peers)
           and peers[-1].get_status() == PacketPeerDTLS.STATUS_CONNECTED, step)
    server = peers[-1]

    def run(n: int) -> None:
        put, poll = client.put_packet, udp_server.poll
        server_poll, get = server.poll, server.get_packet
        for _ in range(n):
            put(PAYLOAD)
            poll()
            server_poll()
            get()

    run.keep = (udp_server, dtls_server, udp, client, server)  # type: ignore[attr-defined]
    return run


def host_pair() -> Callable[[int], None]:
    server = DTLSHost(HOST, 0, server_psk={PSK[0]: PSK[1]}, ciphersuites=[PSK_SUITE])
    client = DTLSHost(HOST, 0, client_psk=PSK, ciphersuites=[PSK_SUITE])
    peer = client.connect(HOST, server.get_local_port())
    connected: list[bool] = []

    def step() -> None:
        for host in (client, server):
            for event in host.service(0.001):
                if event.type == HostEventType.CONNECT and host is client:
                    connected.append(True)

    _until(lambda: bool(connected), step)
    for _ in range(20):  # let the server see the client's Finished
        step()

    def run(n: int) -> None:
        put, flush, service = peer.put_packet, client.flush, server.service
        got = 0
        for _ in range(n):
            put(PAYLOAD)
            flush()
            got += len(service(0))
        assert got >= n * 0.9, f"lost too many records: {got} of {n}"

    run.keep = (server, client, peer)  # type: ignore[attr-defined]
    return run


def native_call() -> Callable[[int], None]:
    from dtlspeer._binding import lib

    peer = PacketPeerUDP()
    peer.bind(0, HOST)
    ep = peer._ep
    assert ep is not None
    ptr = ep.ptr

    def run(n: int) -> None:
        queued = lib.dp_endpoint_queued
        for _ in range(n):
            queued(ptr, 0)

    run.keep = peer  # type: ignore[attr-defined]
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    cases = {"plain": plain_pair(), "udp": udp_pair(), "dtls": dtls_pair(), "host": host_pair(),
             "call": native_call()}
    samples: dict[str, list[float]] = {name: [] for name in cases}
    ratios: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):
        per_run = {}
        for name, run in cases.items():
            count = args.packets * (20 if name == "call" else 1)  # a call is ~50x cheaper
            run(200)  # warm up
            start = time.perf_counter()
            run(count)
            per_run[name] = (time.perf_counter() - start) / count * 1e9
            samples[name].append(per_run[name])
        for name in cases:
            ratios[name].append(per_run[name] / per_run["plain"])
    print(f"per-packet cost, {args.packets} packets x {args.runs} runs (median)")
    print(f"{'path':8} {'ns/packet':>10} {'x plain':>8}")
    for name in cases:
        print(f"{name:8} {statistics.median(samples[name]):10.0f} "
              f"{statistics.median(ratios[name]):8.2f}")


if __name__ == "__main__":
    main()

"""Memory per idle established DTLS connection, engine level (issue #5).

Establishes N server connections (default 10 000) over the sans-I/O engine
(cookie round included, lossless, injected clock), lets each exchange one
record each way (so the server drops its retransmission flight), frees the
client side and keeps the server ``Connection`` objects alive. Then prints,
per connection:

- heap/conn: bytes counted by dp_alloc_stats (every Mbed TLS and dtlspeer
  allocation, requested sizes, no malloc overhead);
- RSS/conn: growth of the process's resident set divided by N, so Python
  objects (the Connection wrapper, its cdata, the list slot) and malloc
  overhead are included.

Each mode runs in its own interpreter so one mode's freed memory does not
hide the next one's growth:

- ``active``: parking disabled (what every connection cost before parking);
- ``parked``: the server default, time advanced past ``park_after_ms`` so
  every connection parks right after its first exchange.

Usage: PYTHONPATH=src python benchmarks/memory_per_connection.py [--n 10000]
       [--suite psk|ecdsa] [--mode both|active|parked]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from typing import Any

from dtlspeer._binding import check, ffi, lib
from dtlspeer._engine import Connection, CookieGate, EngineConfig, EngineStatus, GateVerdict

PSK_ID = b"player"
PSK_KEY = bytes(range(32))
PARK_AFTER_MS = 5000  # the server default, stated explicitly here


def heap_bytes() -> int:
    b = ffi.new("int64_t *")
    lib.dp_alloc_stats(b, ffi.NULL)
    return int(b[0])


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def configs(suite: str, park_after_ms: int) -> tuple[EngineConfig, EngineConfig, CookieGate, Any]:
    gate = CookieGate()
    if suite == "psk":
        suites = ["TLS-PSK-WITH-AES-128-GCM-SHA256"]
        server = EngineConfig.server(
            gate=gate, psks={PSK_ID: PSK_KEY}, ciphersuites=suites, park_after_ms=park_after_ms
        )
        client = EngineConfig.client(psk=(PSK_ID, PSK_KEY), ciphersuites=suites)
        return client, server, gate, None
    key = ffi.gc(lib.dp_key_new(), lib.dp_key_free)
    check(lib.dp_key_generate_ec(key, lib.DP_CURVE_P256))
    cert = ffi.gc(lib.dp_cert_new(), lib.dp_cert_free)
    dns = b"game.example"
    san = bytes([lib.DP_SAN_DNS, 0, len(dns)]) + dns
    check(
        lib.dp_cert_generate_self_signed(
            cert, key, b"CN=game.example", b"20240101000000", b"20991231235959", san, len(san)
        )
    )
    server = EngineConfig.server(gate=gate, key=key, certificate=cert, park_after_ms=park_after_ms)
    client = EngineConfig.client(trusted_chain=cert)
    return client, server, gate, (key, cert)


def establish(
    client_cfg: EngineConfig,
    server_cfg: EngineConfig,
    gate: CookieGate,
    tid: bytes,
    now: int,
    hostname: str | None,
    server_cpu: list[float] | None = None,
) -> Connection:
    """One server connection, handshake completed in memory. With
    ``server_cpu``, the thread CPU time of every server-side call (cookie
    gate, connection set-up, feeds, outgoing flights) is appended to it,
    one entry per call (``engine_handshake.py``)."""

    def server_side(call: Any, *args: Any) -> Any:
        if server_cpu is None:
            return call(*args)
        start = time.thread_time()
        try:
            return call(*args)
        finally:
            server_cpu.append(time.thread_time() - start)

    client = Connection(client_cfg, now, hostname=hostname)
    client.update(now)
    server: Connection | None = None
    for _ in range(16):
        for datagram in client.take_outgoing():
            if server is None:
                verdict, reply = server_side(gate.check, tid, datagram, now)
                if verdict == GateVerdict.REPLY:
                    client.feed(reply, now)
                elif verdict == GateVerdict.ADMIT:
                    server = server_side(
                        lambda: Connection(server_cfg, now, transport_id=tid)
                    )
                    server_side(server.feed, datagram, now)
            else:
                server_side(server.feed, datagram, now)
        if server is not None:
            for datagram in server_side(server.take_outgoing):
                client.feed(datagram, now)
        if server is not None and server.status == client.status == EngineStatus.CONNECTED:
            break
    assert server is not None and server.status == EngineStatus.CONNECTED, "handshake failed"
    # One record each way: the server frees the flight it kept for
    # retransmission only once the client's first record arrives.
    client.write(b"hello", now)
    for datagram in client.take_outgoing():
        server.feed(datagram, now)
    assert server.read_all() == [b"hello"]
    server.write(b"welcome", now)
    for datagram in server.take_outgoing():
        client.feed(datagram, now)
    client.close()
    return server


def run(mode: str, n: int, suite: str) -> dict[str, Any]:
    park_after = 0 if mode == "active" else PARK_AFTER_MS
    client_cfg, server_cfg, gate, keep = configs(suite, park_after)
    hostname = None if suite == "psk" else "game.example"
    # Warm up allocator pools, caches and lazy imports before the baseline.
    for i in range(20):
        establish(client_cfg, server_cfg, gate, b"warm%d" % i, 0, hostname).close()
    gc.collect()
    heap0, rss0 = heap_bytes(), rss_bytes()
    servers = []
    now = 0
    for i in range(n):
        server = establish(client_cfg, server_cfg, gate, i.to_bytes(6, "big"), now, hostname)
        if mode == "parked":
            server.update(now + PARK_AFTER_MS)  # what the driver does at next_timeout()
            assert server.parked
        servers.append(server)
    gc.collect()
    heap1, rss1 = heap_bytes(), rss_bytes()
    stats = servers[-1].stats()
    result = {
        "mode": mode,
        "suite": suite,
        "n": n,
        "heap_per_conn": (heap1 - heap0) / n,
        "rss_per_conn": (rss1 - rss0) / n,
        "parks": stats["parks"],
    }
    # Every parked connection still works: wake one and talk.
    if mode == "parked":
        servers[0].write(b"still there", now + PARK_AFTER_MS)
        assert not servers[0].parked and servers[0].stats()["unparks"] == 1
    for server in servers:
        server.close()
    del keep
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--suite", choices=["psk", "ecdsa"], default="psk")
    parser.add_argument("--mode", choices=["both", "active", "parked"], default="both")
    parser.add_argument("--json", action="store_true", help="print one JSON line per mode")
    args = parser.parse_args()
    if args.mode != "both":
        print(json.dumps(run(args.mode, args.n, args.suite)))
        return
    rows = []
    for mode in ("active", "parked"):
        out = subprocess.run(
            [sys.executable, __file__, "--n", str(args.n), "--suite", args.suite, "--mode", mode],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    print(f"idle established server connections, N={args.n}, suite={args.suite}")
    print(f"{'mode':<8} {'heap/conn (B)':>14} {'RSS/conn (B)':>13}   (RSS includes Python objects)")
    for row in rows:
        print(f"{row['mode']:<8} {row['heap_per_conn']:>14.0f} {row['rss_per_conn']:>13.0f}")


if __name__ == "__main__":
    main()

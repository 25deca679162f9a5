"""Server CPU per DTLS handshake over the sans-I/O engine, per key exchange.

No sockets, no second process: a client and a server ``Connection`` joined in
memory (``memory_per_connection.establish``: cookie round included, lossless,
injected clock), the server's calls timed with ``time.thread_time`` (so the
Python driver's share of those calls is included, the client's work is not).
Rows: PSK (no key exchange), ECDHE-PSK with X25519, and ECDHE-ECDSA with a
P-256 certificate over X25519 and over P-256 (secp256r1); ratios against the
PSK row of the same run. Also prints the native heap of one established,
idle client + server pair and of a fresh client connection (dp_alloc_stats).

It was ``tests/test_engine.py::test_measure_handshake_cpu_and_idle_heap``,
which printed these numbers from the test suite and asserted nothing.

Run: ``PYTHONPATH=$PWD/src python -m benchmarks.engine_handshake [--rounds 10]``
(about 5 s on an idle core).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
from collections.abc import Sequence
from typing import Any, Callable

from dtlspeer._binding import check, ffi, lib
from dtlspeer._engine import Connection, CookieGate, EngineConfig, Group

from .memory_per_connection import PSK_ID, PSK_KEY, establish, heap_bytes

HOSTNAME = "game.example"
Configs = tuple[EngineConfig, EngineConfig, CookieGate, "str | None"]


def psk(ciphersuites: Sequence[str] | None = None) -> Configs:
    gate = CookieGate()
    extra: dict[str, Any] = {"ciphersuites": list(ciphersuites)} if ciphersuites else {}
    server = EngineConfig.server(gate=gate, psks={PSK_ID: PSK_KEY}, **extra)
    client = EngineConfig.client(psk=(PSK_ID, PSK_KEY), **extra)
    return client, server, gate, None


def certificate(group: Group, keep: list[Any]) -> Configs:
    key = ffi.gc(lib.dp_key_new(), lib.dp_key_free)
    check(lib.dp_key_generate_ec(key, lib.DP_CURVE_P256))
    cert = ffi.gc(lib.dp_cert_new(), lib.dp_cert_free)
    dns = HOSTNAME.encode()
    san = bytes([lib.DP_SAN_DNS, 0, len(dns)]) + dns
    check(lib.dp_cert_generate_self_signed(cert, key, f"CN={HOSTNAME}".encode(),
                                           b"20240101000000", b"20991231235959", san, len(san)))
    keep.extend((key, cert))
    gate = CookieGate()
    groups = [group, Group.SECP256R1]
    server = EngineConfig.server(gate=gate, key=key, certificate=cert, groups=groups)
    client = EngineConfig.client(trusted_chain=cert, groups=groups)
    return client, server, gate, HOSTNAME


def server_ms_per_handshake(configs: Configs, rounds: int) -> float:
    """Median over ``rounds`` handshakes of the server's CPU milliseconds."""
    client_cfg, server_cfg, gate, hostname = configs
    per_handshake = []
    for i in range(rounds):
        cpu: list[float] = []
        establish(client_cfg, server_cfg, gate, b"hs%d" % i, 0, hostname, cpu).close()
        per_handshake.append(sum(cpu) * 1000)
    return statistics.median(per_handshake)


def idle_heap() -> tuple[int, int]:
    """Native heap of one established pair (records exchanged, so the server's
    retransmission flight is gone) and of a fresh client connection."""
    client_cfg, server_cfg, gate, _ = psk(["TLS-PSK-WITH-AES-128-GCM-SHA256"])
    gc.collect()
    base = heap_bytes()
    client = Connection(client_cfg, 0)
    fresh_client = heap_bytes() - base
    client.close()
    gc.collect()
    base = heap_bytes()
    server = establish(client_cfg, server_cfg, gate, b"idle", 0, None)
    server_only = heap_bytes() - base  # establish() closes its client
    server.close()
    return server_only, fresh_client


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engine_handshake",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="handshakes per row (default 10)")
    args = parser.parse_args(argv)
    keep: list[Any] = []
    rows: list[tuple[str, Callable[[], Configs]]] = [
        ("PSK-AES128-GCM (baseline)", lambda: psk(["TLS-PSK-WITH-AES-128-GCM-SHA256"])),
        ("ECDHE-PSK (X25519)", lambda: psk()),
        ("ECDHE-ECDSA P-256 cert, X25519", lambda: certificate(Group.X25519, keep)),
        ("ECDHE-ECDSA P-256 cert, secp256r1", lambda: certificate(Group.SECP256R1, keep)),
    ]
    # One warm-up handshake per row: lazy imports, first-use tables.
    measured = []
    for name, make in rows:
        configs = make()
        server_ms_per_handshake(configs, 1)
        measured.append((name, server_ms_per_handshake(configs, args.rounds)))
    base = measured[0][1]
    print(f"server CPU per handshake over the engine (cookie round and the server's share of "
          f"the Python driver included), median of {args.rounds}")
    for name, ms in measured:
        print(f"  {name:<36} {ms:8.3f} ms  {ms / base:6.2f}x")
    server_only, fresh_client = idle_heap()
    print(f"native heap: one idle established server connection {server_only} B "
          f"(parking not reached), a fresh client connection {fresh_client} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())

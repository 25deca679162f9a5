"""Cost of a forged record to a parked vs an unparked server connection (issue 11.4).

A spoofer who knows a peer's address can send it records with a plausible
header and random bytes. An unparked (active) connection rejects one with a
failed AEAD check. A parked one must not cost much more: the issue asks for
at most 2x. Before the fix a header alone unparked the connection (a fresh
~34 KB context, load, failed MAC, save, re-park) and every 256 re-parks
forced an immediate ``malloc_trim(0)``.

Over the sans-I/O engine (no sockets, no Python per datagram beyond one
``feed`` call each), for each suite:

- N established server connections that never park (``park_after_ms=0``),
  and N that are parked (the default ``park_after_ms``, time advanced);
- the same forged datagrams (one application-data record of the current
  epoch, fresh sequence numbers, random ciphertext) fed round-robin to each
  group for ``--seconds``; CPU time per forged record (process time) and
  the ratio parked / unparked, measured in the same run;
- then the batch path end to end: a DTLSHost server with 64 peers, parked
  or never parking, flooded over loopback with forged records from each
  peer's own address and port; server time inside ``service(0)`` per forged
  record, ``dp_trim_count()`` growth (malloc_trim calls) and the parks /
  unparks the flood caused.

Usage: PYTHONPATH=src python benchmarks/parked_forgery.py [--n 200] [--seconds 2]
"""

from __future__ import annotations

import argparse
import os
import time

from dtlspeer._binding import lib
from dtlspeer._engine import Connection, CookieGate, EngineConfig, EngineStatus, GateVerdict

PSK_ID = b"player"
PSK_KEY = bytes(range(32))
PARK_AFTER_MS = 5000
SUITES = {
    "AES-128-GCM": "TLS-PSK-WITH-AES-128-GCM-SHA256",
    "AES-256-CCM": "TLS-PSK-WITH-AES-256-CCM",
    "CHACHA20-POLY1305": "TLS-PSK-WITH-CHACHA20-POLY1305-SHA256",
}


def establish(
    client_cfg: EngineConfig, server_cfg: EngineConfig, gate: CookieGate, tid: bytes
) -> Connection:
    client = Connection(client_cfg, 0)
    client.update(0)
    server: Connection | None = None
    for _ in range(16):
        for datagram in client.take_outgoing():
            if server is None:
                verdict, reply = gate.check(tid, datagram, 0)
                if verdict == GateVerdict.REPLY:
                    client.feed(reply, 0)
                elif verdict == GateVerdict.ADMIT:
                    server = Connection(server_cfg, 0, transport_id=tid)
                    server.feed(datagram, 0)
            else:
                server.feed(datagram, 0)
        if server is not None:
            for datagram in server.take_outgoing():
                client.feed(datagram, 0)
        if server is not None and server.status == client.status == EngineStatus.CONNECTED:
            break
    assert server is not None and server.status == EngineStatus.CONNECTED, "handshake failed"
    client.write(b"hello", 0)  # the server drops its last flight once a record arrives
    for datagram in client.take_outgoing():
        server.feed(datagram, 0)
    assert server.read_all() == [b"hello"]
    client.close()
    return server


def forged_records(count: int, payload: int) -> list[bytes]:
    """Application-data records of epoch 1 with fresh sequence numbers and
    random bytes where the explicit nonce, ciphertext and tag go."""
    out = []
    for i in range(count):
        seq = (1000 + i).to_bytes(6, "big")
        body = os.urandom(payload)
        out.append(bytes([23, 0xFE, 0xFD, 0, 1]) + seq + len(body).to_bytes(2, "big") + body)
    return out


def flood(conns: list[Connection], records: list[bytes], seconds: float, now: int) -> float:
    """CPU seconds per forged record, feeding round-robin for ``seconds``."""
    feed = lib.dp_conn_feed
    ptrs = [c._conn for c in conns]
    n_conns, n_rec = len(ptrs), len(records)
    done = 0
    start_cpu = time.process_time()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(1000):
            feed(ptrs[done % n_conns], records[done % n_rec], len(records[done % n_rec]), now)
            done += 1
    return (time.process_time() - start_cpu) / done


def host_flood(n_peers: int, count: int, payload: int, park: bool) -> dict[str, float]:
    """A DTLSHost server with n_peers connected peers (parked, or never
    parking), flooded over loopback with forged records from each peer's own
    address and port (sent through the client host's socket, which is not
    serviced meanwhile). The server runs ``service(0)`` once per 64
    datagrams; the time inside those calls is the server's cost. Counts
    malloc_trim calls and parks/unparks."""
    from dtlspeer import DTLSHost, DTLSSettings, HostEventType, PacketPeerDTLS

    status = PacketPeerDTLS.Status
    settings = DTLSSettings(park_after_ms=100 if park else 0, idle_timeout_ms=600_000)
    server = DTLSHost("127.0.0.1", 0, server_psk={PSK_ID: PSK_KEY}, settings=settings)
    clients = [DTLSHost("127.0.0.1", 0, client_psk=(PSK_ID, PSK_KEY)) for _ in range(n_peers)]
    port = server.get_local_port()
    to_server = [c.connect("127.0.0.1", port) for c in clients]
    peers = []
    end = time.monotonic() + 10
    while time.monotonic() < end and len(peers) < n_peers:
        peers += [e.peer for e in server.service(0) if e.type == HostEventType.CONNECT]
        for c in clients:
            c.service(0)
    for p in to_server:
        p.put_packet(b"hello")  # the server drops its last flight once a record arrives
    for c in clients:
        c.flush()
    end = time.monotonic() + 10
    while time.monotonic() < end and not all(
        p.get_stats()["records_in"] >= 1 and (p.get_stats()["parks"] >= 1 or not park)
        for p in peers
    ):
        server.service(0.01)
    assert len(peers) == n_peers, "not every client connected"
    records = forged_records(count, payload)
    socks = [c._sock for c in clients]
    trims0 = int(lib.dp_trim_count())
    parks0 = sum(p.get_stats()["parks"] for p in peers)
    unparks0 = sum(p.get_stats()["unparks"] for p in peers)
    inside = 0.0
    for i, rec in enumerate(records):
        sock = socks[i % n_peers]
        assert sock is not None
        sock.sendto(rec, ("127.0.0.1", port))
        if i % 64 == 63:
            t0 = time.perf_counter()
            server.service(0)
            inside += time.perf_counter() - t0
    t0 = time.perf_counter()
    server.service(0)
    inside += time.perf_counter() - t0
    result = {
        "us_per_forged": inside / count * 1e6,
        "trims": int(lib.dp_trim_count()) - trims0,
        "parks": sum(p.get_stats()["parks"] for p in peers) - parks0,
        "unparks": sum(p.get_stats()["unparks"] for p in peers) - unparks0,
        "connected": sum(p.get_status() == status.STATUS_CONNECTED for p in peers),
    }
    for c in clients:
        c.close()
    server.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="connections per group")
    parser.add_argument("--seconds", type=float, default=1.5, help="per group and suite")
    parser.add_argument("--payload", type=int, default=100, help="forged record body bytes")
    parser.add_argument("--suite", choices=["all", *SUITES], default="all")
    args = parser.parse_args()
    suites = SUITES if args.suite == "all" else {args.suite: SUITES[args.suite]}
    print(f"forged records, {args.n} connections per group, {args.payload}-byte bodies")
    print(f"{'suite':<18} {'unparked us':>11} {'parked us':>10} {'ratio':>6}   (target <= 2.0)")
    for name, suite in suites.items():
        gate = CookieGate()
        client_cfg = EngineConfig.client(psk=(PSK_ID, PSK_KEY), ciphersuites=[suite])
        active_cfg = EngineConfig.server(
            gate=gate, psks={PSK_ID: PSK_KEY}, ciphersuites=[suite], park_after_ms=0
        )
        parking_cfg = EngineConfig.server(
            gate=gate, psks={PSK_ID: PSK_KEY}, ciphersuites=[suite], park_after_ms=PARK_AFTER_MS
        )
        active = [establish(client_cfg, active_cfg, gate, b"a%05d" % i) for i in range(args.n)]
        parked = [establish(client_cfg, parking_cfg, gate, b"p%05d" % i) for i in range(args.n)]
        now = PARK_AFTER_MS
        for conn in parked:
            conn.update(now)
            assert conn.parked
        records = forged_records(4096, args.payload)
        unparked_cost = flood(active, records, args.seconds, now)
        parked_cost = flood(parked, records, args.seconds, now)
        assert all(c.status == EngineStatus.CONNECTED for c in active + parked)
        print(
            f"{name:<18} {unparked_cost * 1e6:>11.2f} {parked_cost * 1e6:>10.2f} "
            f"{parked_cost / unparked_cost:>6.2f}"
        )
        for conn in active + parked:
            conn.close()
    print("DTLSHost (default suite), 64 peers, 20 000 forged records over loopback,")
    print("server time inside service(0) (called once per 64 datagrams):")
    rows = {
        kind: host_flood(64, 20_000, args.payload, kind == "parked")
        for kind in ("unparked", "parked")
    }
    for kind, row in rows.items():
        print(
            f"  {kind:<9} {row['us_per_forged']:6.2f} us/forged record, trims {row['trims']}, "
            f"parks {row['parks']}, unparks {row['unparks']}, connected {row['connected']}/64"
        )
    ratio = rows["parked"]["us_per_forged"] / rows["unparked"]["us_per_forged"]
    print(f"  ratio parked/unparked: {ratio:.2f}")


if __name__ == "__main__":
    main()

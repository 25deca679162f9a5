"""Server CPU per handshake, resumed (RFC 5077 ticket) vs full, over the
sans-I/O engine (issue 14 section 1).

The runner's ``resume`` metric (``python -m benchmarks --only resume``)
measures a DTLSHost server over loopback: sockets, the event loop and the
Python per connection are included, and they cost the same for both kinds
of handshake. This script isolates what TLS itself costs the server: one
client and one server ``Connection`` joined in memory, the cookie gate in
front of the server as in the host, ECDHE-ECDSA P-256 (the benchmark
certificate) with X25519; thread CPU time of the server-side calls only
(gate check, connection creation, every ``feed``, the final free), for
``--count`` handshakes of each kind, alternating in rounds so both see the
same machine load. The resumed handshakes offer the session of one earlier
full handshake, and every one is checked to have resumed.

Usage: PYTHONPATH=src python benchmarks/resumption_engine.py [--count 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Optional

from dtlspeer import Crypto, SessionTicketKeys
from dtlspeer._engine import Connection, CookieGate, EngineConfig, EngineStatus, GateVerdict, Verify

ADDRESS = bytes([10, 0, 0, 7, 0x30, 0x39])
HOSTNAME = "game.test"


class Pair:
    """A server configuration (gate, ticket keys) and a client configuration."""

    def __init__(self) -> None:
        crypto = Crypto()
        key = crypto.generate_ec("P-256")
        cert = crypto.generate_self_signed_certificate(
            key, f"CN={HOSTNAME}", "20240101000000", "20991231235959", dns_names=[HOSTNAME])
        self.gate = CookieGate()
        self.keys = SessionTicketKeys()
        with key._mutex, cert._mutex:
            self.server = EngineConfig.server(gate=self.gate, key=key._handle,
                                              certificate=cert._handle,
                                              ticket_keys=self.keys._ptr)
            self.client = EngineConfig.client(verify=Verify.FULL, trusted_chain=cert._handle)

    def handshake(self, session: Optional[bytes]) -> tuple[float, bool, Optional[bytes]]:
        """One handshake: (server CPU seconds, resumed, the client's session)."""
        now = 1000
        client = Connection(self.client, now, hostname=HOSTNAME)
        if session is not None:
            client.set_session(session)
        client.update(now)
        server: Optional[Connection] = None
        cpu = 0.0
        for _ in range(32):
            outgoing = client.take_outgoing()
            if not outgoing:
                break
            replies: list[bytes] = []
            t0 = time.thread_time()
            for datagram in outgoing:
                if server is None:
                    verdict, reply = self.gate.check(ADDRESS, datagram, now)
                    if verdict == GateVerdict.REPLY:
                        replies.append(reply)
                    elif verdict == GateVerdict.ADMIT:
                        server = Connection(self.server, now, transport_id=ADDRESS)
                        server.feed(datagram, now)
                else:
                    server.feed(datagram, now)
            if server is not None:
                replies += server.take_outgoing()
            cpu += time.thread_time() - t0
            for datagram in replies:
                client.feed(datagram, now)
        if server is None or server.status != EngineStatus.CONNECTED \
                or client.status != EngineStatus.CONNECTED:
            raise RuntimeError(f"handshake failed: {client.reason}")
        resumed = client.resumed() and server.resumed()
        saved = client.get_session()
        t0 = time.thread_time()
        server.close()
        cpu += time.thread_time() - t0
        client.close()
        return cpu, resumed, saved


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300, help="handshakes per kind per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    pair = Pair()
    _, _, session = pair.handshake(None)
    assert session is not None
    per: dict[str, list[float]] = {"full": [], "resumed": []}
    for _ in range(args.rounds):
        for kind, offer in (("full", None), ("resumed", session)):
            total = 0.0
            for _ in range(args.count):
                cpu, resumed, _ = pair.handshake(offer)
                if resumed != (offer is not None):
                    raise RuntimeError(f"{kind} handshake resumed={resumed}")
                total += cpu
            per[kind].append(total / args.count * 1e6)
    full, resumed = statistics.median(per["full"]), statistics.median(per["resumed"])
    print(f"server CPU per handshake (engine, median of {args.rounds} rounds x {args.count}):")
    print(f"  full ECDHE-ECDSA P-256: {full:8.1f} us   rounds {[round(v) for v in per['full']]}")
    print(f"  resumed (ticket):       {resumed:8.1f} us   "
          f"rounds {[round(v) for v in per['resumed']]}")
    ratios = [f / r for f, r in zip(per["full"], per["resumed"])]
    print(f"  ratio full / resumed:   {statistics.median(ratios):8.2f}x  "
          f"(per round {[round(v, 2) for v in ratios]})")
    print(f"  ticket keys: {pair.keys.get_stats()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

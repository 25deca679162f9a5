"""Test helpers: an in-memory datagram link between a client and a server
engine with injected time, optional loss, duplication and reordering
(seeded), plus certificate helpers over the native crypto API."""

from __future__ import annotations

import random
from typing import Any, Callable, Optional

from dtlspeer._binding import check, ffi, lib
from dtlspeer._engine import Connection, CookieGate, EngineConfig, EngineStatus, GateVerdict

PSK_ID = b"player-1"
PSK_KEY = bytes(range(32))
CLIENT_ADDR = bytes([10, 0, 0, 7, 0x30, 0x39])


def alloc_stats() -> tuple[int, int]:
    """(bytes, blocks) currently allocated through the native allocator."""
    b = ffi.new("int64_t *")
    n = ffi.new("int64_t *")
    lib.dp_alloc_stats(b, n)
    return int(b[0]), int(n[0])


class Link:
    """Client <-> server through a cookie gate, like a server endpoint would
    route: unknown address -> gate, admitted -> a server Connection."""

    def __init__(
        self,
        client_cfg: EngineConfig,
        server_cfg: EngineConfig,
        gate: CookieGate,
        *,
        hostname: Optional[str] = None,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder_ms: int = 0,
        latency_ms: int = 5,
        seed: int = 1,
        start_ms: int = 0,
        session: Optional[bytes] = None,
    ) -> None:
        self.now = start_ms
        self.gate = gate
        self.server_cfg = server_cfg
        self.client = Connection(client_cfg, self.now, hostname=hostname)
        if session is not None:  # a saved session to offer (resumption)
            self.client.set_session(session)
        self.server: Optional[Connection] = None
        self.rng = random.Random(seed)
        self.loss, self.duplicate = loss, duplicate
        self.reorder_ms, self.latency_ms = reorder_ms, latency_ms
        self.in_flight: list[tuple[int, int, str, bytes]] = []
        self.sequence = 0
        self.sent = {"client": 0, "server": 0}
        self.tap: Optional[Callable[[str, bytes], Optional[bytes]]] = None
        self.client.update(self.now)
        self.pump()

    def _send(self, dst: str, data: bytes) -> None:
        self.sent["server" if dst == "client" else "client"] += 1
        if self.tap is not None:
            replaced = self.tap(dst, data)
            if replaced is None:
                return
            data = replaced
        copies = 1
        if self.rng.random() < self.loss:
            copies = 0
        elif self.rng.random() < self.duplicate:
            copies = 2
        for _ in range(copies):
            jitter = self.rng.randrange(self.reorder_ms + 1) if self.reorder_ms else 0
            delay = self.latency_ms + jitter
            self.sequence += 1
            self.in_flight.append((self.now + delay, self.sequence, dst, data))

    def pump(self) -> None:
        """Move every queued outgoing datagram onto the link."""
        for data in self.client.take_outgoing():
            self._send("server", data)
        if self.server is not None:
            for data in self.server.take_outgoing():
                self._send("client", data)

    def _deliver(self, dst: str, data: bytes) -> None:
        if dst == "client":
            self.client.feed(data, self.now)
            return
        if self.server is None:
            verdict, reply = self.gate.check(CLIENT_ADDR, data, self.now)
            if verdict == GateVerdict.REPLY:
                self._send("client", reply)
            elif verdict == GateVerdict.ADMIT:
                self.server = Connection(self.server_cfg, self.now, transport_id=CLIENT_ADDR)
                self.server.feed(data, self.now)
        else:
            self.server.feed(data, self.now)

    def step(self) -> bool:
        """Advance to the next event (delivery or timer); False if none."""
        times = [t for t, _, _, _ in self.in_flight]
        for conn in (self.client, self.server):
            if conn is not None and conn.next_timeout() is not None:
                times.append(conn.next_timeout())
        if not times:
            return False
        self.now = max(self.now, min(times))
        due = sorted(p for p in self.in_flight if p[0] <= self.now)
        self.in_flight = [p for p in self.in_flight if p[0] > self.now]
        for _, _, dst, data in due:
            self._deliver(dst, data)
        for conn in (self.client, self.server):
            if conn is not None:
                timeout = conn.next_timeout()
                if timeout is not None and timeout <= self.now:
                    conn.update(self.now)
        self.pump()
        return True

    def run_until(self, done: Callable[[], bool], max_ms: int) -> bool:
        """Step until done() or max_ms of simulated time passed."""
        deadline = self.now + max_ms
        while not done() and self.now <= deadline:
            if not self.step():
                break
        return done()

    def connected(self) -> bool:
        """Both ends connected."""
        return (
            self.client.status == EngineStatus.CONNECTED
            and self.server is not None
            and self.server.status == EngineStatus.CONNECTED
        )

    def handshake(self, max_ms: int = 30_000) -> None:
        """Run the handshake to completion or fail the test."""
        assert self.run_until(self.connected, max_ms), (
            self.client.status, self.client.reason,
            None if self.server is None else (self.server.status, self.server.reason),
        )

    def close(self) -> None:
        """Free both connections."""
        self.client.close()
        if self.server is not None:
            self.server.close()


def psk_configs(**common: Any) -> tuple[EngineConfig, EngineConfig, CookieGate]:
    """A PSK client config, a server config and its gate."""
    gate = CookieGate()
    server = EngineConfig.server(gate=gate, psks={PSK_ID: PSK_KEY}, **common)
    client = EngineConfig.client(psk=(PSK_ID, PSK_KEY), **common)
    return client, server, gate


# ---- certificates through the native crypto API -----------------------------


def native_key(kind: str) -> Any:
    """A fresh EC P-256 ("ec") or RSA-2048 ("rsa") key handle."""
    key = ffi.gc(lib.dp_key_new(), lib.dp_key_free)
    if kind == "ec":
        check(lib.dp_key_generate_ec(key, lib.DP_CURVE_P256))
    else:
        check(lib.dp_key_generate_rsa(key, 2048))
    return key


def native_self_signed(key: Any, name: str, not_before: str = "20240101000000",
                       not_after: str = "20991231235959") -> Any:
    """A self-signed certificate for DNS name `name`."""
    cert = ffi.gc(lib.dp_cert_new(), lib.dp_cert_free)
    dns = name.encode("ascii")
    san = bytes([lib.DP_SAN_DNS, len(dns) >> 8, len(dns) & 0xFF]) + dns
    check(lib.dp_cert_generate_self_signed(cert, key, f"CN={name}".encode(), not_before.encode(),
                                           not_after.encode(), san, len(san)))
    return cert

"""Seed corpus: real datagrams and real key/certificate bytes.

Every datagram here was produced by the engine itself, captured on the
in-memory link of ``_dtls_sim`` (no hand-made packets): ClientHellos with and
without a cookie, HelloVerifyRequests, every handshake flight of both sides,
application records and close_notify alerts, for a PSK session, an
ECDHE-ECDSA session and an ECDHE-ECDSA session at a small MTU (fragmented
handshake messages, several records per datagram).

The gate uses a fixed secret and the sessions start at :data:`FUZZ_NOW`, so
a captured ClientHello with a cookie is admitted by :func:`fuzz_gate` for
:data:`FUZZ_ADDR` at any time in the same or the next cookie slot: replaying
it creates a handshaking server connection without a live client.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Optional

from _dtls_sim import Link, native_key, native_self_signed
from dtlspeer._binding import check, ffi, lib
from dtlspeer._engine import CookieGate, EngineConfig, Verify

FUZZ_SECRET = b"dtlspeer fuzz cookie secret, 32B"
FUZZ_ADDR = bytes([10, 0, 0, 7, 0x30, 0x39])  # _dtls_sim.CLIENT_ADDR
FUZZ_NOW = 1_000
FUZZ_HOST = "fuzz.test"
PSK_ID = b"fuzz-player"
PSK_KEY = bytes(range(1, 33))
APP_PAYLOADS = (b"ping", b"x" * 200, b"")


def fuzz_gate() -> CookieGate:
    """A gate whose cookies for FUZZ_ADDR are the same in every process."""
    return CookieGate(secret=FUZZ_SECRET)


@dataclass
class Identity:
    """An EC P-256 key and its self-signed certificate for FUZZ_HOST."""

    key: Any
    cert: Any


def make_identity() -> Identity:
    """A fresh server identity (native handles)."""
    key = native_key("ec")
    return Identity(key, native_self_signed(key, FUZZ_HOST))


@dataclass
class Transcript:
    """The datagrams of one session, in the order they were sent."""

    name: str
    to_server: list[bytes] = field(default_factory=list)
    to_client: list[bytes] = field(default_factory=list)

    def all(self) -> list[bytes]:
        """Every datagram of both directions."""
        return [*self.to_server, *self.to_client]


def server_config(kind: str, gate: CookieGate, identity: Optional[Identity],
                  **common: Any) -> EngineConfig:
    """Server config for "psk" or "ecdhe" (needs identity)."""
    if kind == "psk":
        return EngineConfig.server(gate=gate, psks={PSK_ID: PSK_KEY}, **common)
    assert identity is not None
    return EngineConfig.server(gate=gate, key=identity.key, certificate=identity.cert, **common)


def client_config(kind: str, identity: Optional[Identity], **common: Any) -> EngineConfig:
    """Client config for "psk" or "ecdhe" (trusts identity's certificate)."""
    if kind == "psk":
        return EngineConfig.client(psk=(PSK_ID, PSK_KEY), **common)
    assert identity is not None
    return EngineConfig.client(verify=Verify.FULL, trusted_chain=identity.cert, **common)


def new_link(kind: str, identity: Optional[Identity], *, gate: Optional[CookieGate] = None,
             seed: int = 1, **common: Any) -> Link:
    """A client/server link (not yet handshaken) starting at FUZZ_NOW."""
    gate = gate if gate is not None else fuzz_gate()
    return Link(
        client_config(kind, identity, **common),
        server_config(kind, gate, identity, **common),
        gate,
        hostname=FUZZ_HOST if kind != "psk" else None,
        start_ms=FUZZ_NOW,
        seed=seed,
    )


def capture(kind: str, identity: Optional[Identity], *, mtu: int = 0) -> Transcript:
    """Run one complete session on the in-memory link and record every datagram."""
    transcript = Transcript(f"{kind}-mtu{mtu}" if mtu else kind)
    common: dict[str, Any] = {"mtu": mtu} if mtu else {}
    link = new_link(kind, identity, **common)
    # Link() already put the first ClientHello on the wire: record it, then
    # tap everything that follows.
    tap_log = [(dst, data) for _, _, dst, data in link.in_flight]

    def tap(dst: str, data: bytes) -> bytes:
        tap_log.append((dst, data))
        return data

    link.tap = tap
    link.handshake()
    assert link.server is not None
    for payload in APP_PAYLOADS:
        link.client.write(payload, link.now)
        link.server.write(payload[::-1], link.now)
        link.pump()
    link.run_until(lambda: False, 100)
    link.client.disconnect(link.now)
    link.pump()
    link.run_until(lambda: False, 100)
    link.close()
    for dst, data in tap_log:
        (transcript.to_server if dst == "server" else transcript.to_client).append(data)
    return transcript


def capture_all(identity: Identity) -> list[Transcript]:
    """PSK, ECDHE-ECDSA and ECDHE-ECDSA at MTU 300 (fragmented flights)."""
    return [capture("psk", None), capture("ecdhe", identity), capture("ecdhe", identity, mtu=300)]


def hello_with_cookie(transcript: Transcript) -> bytes:
    """The second ClientHello (cookie for FUZZ_ADDR, admitted by fuzz_gate)."""
    return transcript.to_server[1]


# ---- keys and certificates ---------------------------------------------------


def _write_key(key: Any, der: bool, public_only: bool) -> bytes:
    buf = ffi.new("unsigned char[]", 16384)
    needed = ffi.new("size_t *")
    n = check(lib.dp_key_write(key, lib.DP_FORMAT_DER if der else lib.DP_FORMAT_PEM,
                               int(public_only), buf, 16384, needed))
    return bytes(ffi.buffer(buf, n))


def _cert_der(cert: Any) -> bytes:
    buf = ffi.new("unsigned char[]", 16384)
    needed = ffi.new("size_t *")
    n = check(lib.dp_cert_der(cert, 0, buf, 16384, needed))
    return bytes(ffi.buffer(buf, n))


def pem(label: str, der: bytes) -> bytes:
    """PEM armour with 64-column base64 lines."""
    b64 = base64.b64encode(der)
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return b"-----BEGIN %s-----\n%s\n-----END %s-----\n" % (
        label.encode(), b"\n".join(lines), label.encode())


def key_seeds(identity: Identity, rsa: Optional[Any] = None) -> list[bytes]:
    """The identity's EC key (and an RSA key if given) as private and public
    PEM and DER."""
    keys = [identity.key] if rsa is None else [identity.key, rsa]
    out: list[bytes] = []
    for key in keys:
        for der in (False, True):
            for public_only in (False, True):
                out.append(_write_key(key, der, public_only))
    return out


def cert_seeds(identity: Identity, other: Identity) -> list[bytes]:
    """DER, PEM and a two-certificate PEM bundle."""
    der = _cert_der(identity.cert)
    other_der = _cert_der(other.cert)
    return [der, pem("CERTIFICATE", der), pem("CERTIFICATE", der) + pem("CERTIFICATE", other_der)]

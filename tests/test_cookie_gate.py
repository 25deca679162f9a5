"""The stateless cookie gate: spoofed floods cost no memory, cookies are bound
to the address and a time slot, shared secrets work across processes."""

from __future__ import annotations

import gc
import random

import pytest

from _dtls_sim import PSK_ID, PSK_KEY, alloc_stats
from dtlspeer import errors
from dtlspeer._engine import Connection, CookieGate, EngineConfig, GateVerdict

ADDR = bytes([192, 0, 2, 1, 0x1F, 0x90])
SECRET = b"cluster-wide cookie secret 32 B!"


def _client_hello(now_ms: int = 0) -> tuple[Connection, bytes]:
    client = Connection(EngineConfig.client(psk=(PSK_ID, PSK_KEY)), now_ms)
    client.update(now_ms)
    (hello,) = client.take_outgoing()
    return client, hello


def _hello_with_cookie(gate: CookieGate, addr: bytes, now_ms: int) -> bytes:
    client, hello = _client_hello(now_ms)
    verdict, reply = gate.check(addr, hello, now_ms)
    assert verdict == GateVerdict.REPLY
    client.feed(reply, now_ms)
    (second,) = client.take_outgoing()
    client.close()
    return second


def test_cookieless_hello_gets_small_hello_verify_request() -> None:
    gate = CookieGate()
    _, hello = _client_hello()
    verdict, reply = gate.check(ADDR, hello, 0)
    assert verdict == GateVerdict.REPLY
    assert 0 < len(reply) <= len(hello)
    assert reply[0] == 22 and reply[13] == 3  # handshake record, HelloVerifyRequest
    assert reply[3:11] == hello[3:11]  # echoes the hello's epoch and sequence number
    assert gate.stats()["cookies_sent"] == 1


def test_valid_cookie_admitted_and_bound_to_address() -> None:
    gate = CookieGate()
    second = _hello_with_cookie(gate, ADDR, 1000)
    assert gate.check(ADDR, second, 1000)[0] == GateVerdict.ADMIT
    other = bytes([192, 0, 2, 1, 0x1F, 0x91])  # same IP, other port
    assert gate.check(other, second, 1000)[0] == GateVerdict.REPLY
    stats = gate.stats()
    assert stats["admitted"] == 1 and stats["cookies_rejected"] == 1


def test_tampered_cookie_rejected() -> None:
    gate = CookieGate()
    second = bytearray(_hello_with_cookie(gate, ADDR, 0))
    # The cookie follows version(2) random(32) session_id(1+n) in the body.
    body = 13 + 12
    sid_len = second[body + 34]
    cookie_at = body + 35 + sid_len + 1
    assert second[cookie_at - 1] == 17
    second[cookie_at + 5] ^= 0xFF
    assert gate.check(ADDR, bytes(second), 0)[0] == GateVerdict.REPLY
    assert gate.stats()["cookies_rejected"] == 1


def test_cookie_expires_after_two_slots() -> None:
    gate = CookieGate(slot_ms=10_000)
    second = _hello_with_cookie(gate, ADDR, 5_000)  # made in slot 0
    assert gate.check(ADDR, second, 9_999)[0] == GateVerdict.ADMIT
    assert gate.check(ADDR, second, 19_999)[0] == GateVerdict.ADMIT  # previous slot
    assert gate.check(ADDR, second, 20_000)[0] == GateVerdict.REPLY  # expired
    assert gate.stats()["cookies_rejected"] == 1


def test_shared_secret_lets_another_process_accept_the_cookie() -> None:
    now = 1_764_000_000_000  # wall-clock ms, as gates sharing a secret must use
    first_process = CookieGate(secret=SECRET)
    second_process = CookieGate(secret=SECRET)
    stranger = CookieGate(secret=b"some other secret of 32 bytes!!!")
    second = _hello_with_cookie(first_process, ADDR, now)
    assert second_process.check(ADDR, second, now + 500)[0] == GateVerdict.ADMIT
    assert stranger.check(ADDR, second, now + 500)[0] == GateVerdict.REPLY
    with pytest.raises(errors.InvalidArgumentError):
        CookieGate(secret=b"short")


def test_admitted_hello_starts_a_server_connection() -> None:
    gate = CookieGate()
    server_cfg = EngineConfig.server(gate=gate, psks={PSK_ID: PSK_KEY})
    second = _hello_with_cookie(gate, ADDR, 0)
    assert gate.check(ADDR, second, 0)[0] == GateVerdict.ADMIT
    server = Connection(server_cfg, 0, transport_id=ADDR)
    server.feed(second, 0)
    flight = server.take_outgoing()
    assert flight and flight[0][13] == 2  # ServerHello, not another HelloVerifyRequest
    server.close()


def test_spoofed_hello_flood_allocates_nothing() -> None:
    gate = CookieGate()
    _, hello = _client_hello()
    rng = random.Random(42)
    gc.collect()
    before = alloc_stats()
    admitted = 0  # checked for both loops below
    for i in range(5000):
        addr = bytes([10, (i >> 16) & 0xFF, (i >> 8) & 0xFF, i & 0xFF]) + rng.randbytes(2)
        verdict, reply = gate.check(addr, hello, i)
        admitted += verdict == GateVerdict.ADMIT
        assert len(reply) <= len(hello)
    assert alloc_stats() == before
    # Forged cookies too: right length, random bytes.
    second = bytearray(_hello_with_cookie(gate, ADDR, 0))
    gc.collect()
    before = alloc_stats()
    cookie_at = 13 + 12 + 35 + second[13 + 12 + 34] + 1
    for _i in range(2000):
        second[cookie_at:cookie_at + 17] = rng.randbytes(17)
        admitted += gate.check(ADDR, bytes(second), 0)[0] == GateVerdict.ADMIT
    assert alloc_stats() == before
    assert admitted == 0
    stats = gate.stats()
    assert stats["hellos_seen"] >= 7000 and stats["cookies_rejected"] == 2000


def test_garbage_and_truncated_hellos_dropped_and_counted() -> None:
    gate = CookieGate()
    _, hello = _client_hello()
    for n in range(len(hello)):
        assert gate.check(ADDR, hello[:n], 0)[0] == GateVerdict.DROP
    rng = random.Random(3)
    for _ in range(500):
        assert gate.check(ADDR, rng.randbytes(rng.randrange(0, 300)), 0)[0] == GateVerdict.DROP
    application_data = b"\x17\xfe\xfd\x00\x01" + bytes(6) + b"\x00\x04" + b"abcd"
    assert gate.check(ADDR, application_data, 0)[0] == GateVerdict.DROP
    stats = gate.stats()
    assert stats["dropped_malformed"] >= len(hello) + 400
    assert stats["dropped_not_hello"] >= 1
    assert stats["hellos_seen"] == 0 and stats["cookies_sent"] == 0


def test_gate_misuse_raises() -> None:
    gate = CookieGate()
    with pytest.raises(errors.InvalidArgumentError):
        gate.check(b"", b"\x16", 0)
    with pytest.raises(errors.ArgumentTypeError):
        gate.check(ADDR, "text", 0)  # type: ignore[arg-type]
    gate.close()
    with pytest.raises(errors.StateError):
        gate.check(ADDR, b"\x16", 0)

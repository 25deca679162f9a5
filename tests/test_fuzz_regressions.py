"""Regression tests for the bugs the fuzzers found (tests/test_fuzz.py,
tools/fuzz.py): each one a single forged datagram that ended an established
DTLS connection. Fixed in dp_conn_feed (src/native/dp_conn.c)."""

from __future__ import annotations

import pytest

from dtlspeer._engine import EngineStatus
from fuzz.seeds import capture, hello_with_cookie
from fuzz.targets import EstablishedTarget, feed_checked

CONNECTED = EngineStatus.CONNECTED


def _established(side: str) -> EstablishedTarget:
    return EstablishedTarget("psk", None, side=side)


# An empty epoch-0 ChangeCipherSpec record: Mbed TLS skips it as unexpected.
_STALE_RECORD = bytes.fromhex("14fefd0000000000000009" "0001" "01")


@pytest.mark.parametrize("side", ["server", "client"])
@pytest.mark.parametrize("junk", [1, 12])
def test_trailing_bytes_after_a_record_do_not_end_the_connection(side: str, junk: int) -> None:
    """Finding 1: a datagram holding a record Mbed TLS skips (old epoch,
    replay) or a valid one, followed by 1..12 bytes (less than a record
    header), ended an established connection with MBEDTLS_ERR_SSL_INTERNAL_ERROR
    (Mbed TLS 3.6 treats the partial header as a record split across
    datagrams). Anyone able to spoof the peer's address could do it."""
    target = _established(side)
    conn = target.target
    replayed = target.authentic_datagram()
    assert feed_checked(conn, replayed, target.link.now, server=side == "server",
                        authentic=target.sent, delivered=target.delivered) == CONNECTED
    fresh = target.authentic_datagram()
    for datagram in (_STALE_RECORD + bytes(junk), replayed + b"\x16" * junk, fresh + bytes(junk)):
        status = feed_checked(conn, datagram, target.link.now, server=side == "server",
                              authentic=target.sent, delivered=target.delivered)
        assert status == CONNECTED, conn.reason
    assert target.delivered == target.sent  # the fresh record still arrived, once
    target.run([])  # and the session carries data afterwards
    assert conn.status == CONNECTED
    target.close()


def _hello_record(body: bytes, fragment_offset: int = 0) -> bytes:
    hs = bytes([1]) + len(body).to_bytes(3, "big") + b"\x00\x00" + \
        fragment_offset.to_bytes(3, "big") + len(body).to_bytes(3, "big") + body
    return bytes.fromhex("16fefd0000000000000000") + len(hs).to_bytes(2, "big") + hs


@pytest.mark.parametrize("datagram", [
    _hello_record(b""),  # shorter than Mbed TLS's 61-byte minimum
    _hello_record(bytes(60), fragment_offset=1),  # a fragment
    _hello_record(b"\xfe\xfd" + bytes(32) + b"\x20"),  # session id past the end
    bytes.fromhex("16fefd0000000000000000" "0000") + b"\x01" + bytes(70),  # empty record, then 0x01
], ids=["short", "fragment", "sid-overflow", "empty-record"])
def test_malformed_client_hello_does_not_end_an_established_server(datagram: bytes) -> None:
    """Finding 2: an epoch-0 record that starts like a ClientHello but is
    malformed reached Mbed TLS's reconnect check (RFC 6347 4.2.8), whose
    MBEDTLS_ERR_SSL_DECODE_ERROR ended the established server connection.
    No key or cookie needed: one spoofed datagram did it."""
    target = _established("server")
    status = feed_checked(target.target, datagram, target.link.now, server=True,
                          authentic=target.sent, delivered=target.delivered)
    assert status == CONNECTED, target.target.reason
    assert target.target.stats()["discarded"] == 1
    target.run([])
    assert target.target.status == CONNECTED
    target.close()


def test_well_formed_hello_with_valid_cookie_is_discarded_too() -> None:
    """A live connection never restarts in place (issue 11 item 1): even a
    well-formed hello with a valid cookie is discarded; reconnects are a
    successor connection above the engine (tests/test_takeover.py)."""
    transcript = capture("psk", None)
    target = _established("server")
    status = feed_checked(target.target, hello_with_cookie(transcript), target.link.now,
                          server=True, authentic=target.sent, delivered=target.delivered,
                          unauthenticated=True)
    assert status == CONNECTED
    assert target.target.stats()["discarded"] == 1
    target.close()

"""The TLS surface stays what it was before the Crypto classes brought MD5 and
the CBC mode into the Mbed TLS build (issue 12 section 3).

The lists below were read from main's build before that configuration change
(``dtlspeer.ciphersuites()`` and our own ClientHellos, parsed here byte by
byte). Enabling ``MBEDTLS_CIPHER_MODE_CBC`` compiles every CBC ciphersuite's
definition into Mbed TLS; ``MBEDTLS_SSL_CIPHERSUITES`` and dp_config's check
keep them out of what we offer, select or accept. The same surface seen from
OpenSSL (refused suites and signature algorithms) is in
``tests/interop/test_tls_surface_openssl.py``.
"""

from __future__ import annotations

import pytest

import dtlspeer
from _dtls_sim import native_key, native_self_signed
from _records import first_hello
from dtlspeer import errors
from dtlspeer._engine import CookieGate, EngineConfig, Verify

#: dtlspeer.ciphersuites() on main before the Crypto family (default preference order).
PINNED_SUITE_NAMES = [
    "TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256",
    "TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256",
    "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384",
    "TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384",
    "TLS-ECDHE-ECDSA-WITH-AES-256-CCM",
    "TLS-ECDHE-ECDSA-WITH-AES-256-CCM-8",
    "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256",
    "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256",
    "TLS-ECDHE-ECDSA-WITH-AES-128-CCM",
    "TLS-ECDHE-ECDSA-WITH-AES-128-CCM-8",
    "TLS-ECDHE-PSK-WITH-CHACHA20-POLY1305-SHA256",
    "TLS-PSK-WITH-CHACHA20-POLY1305-SHA256",
    "TLS-PSK-WITH-AES-256-GCM-SHA384",
    "TLS-PSK-WITH-AES-256-CCM",
    "TLS-PSK-WITH-AES-256-CCM-8",
    "TLS-PSK-WITH-AES-128-GCM-SHA256",
    "TLS-PSK-WITH-AES-128-CCM",
    "TLS-PSK-WITH-AES-128-CCM-8",
]
#: Our certificate client's ClientHello cipher_suites (the last is the
#: renegotiation SCSV, 0x00ff), on main before the change.
PINNED_CERT_HELLO_SUITES = [0xC02B, 0xCCA9, 0xC02C, 0xC02F, 0xCCA8, 0xC030, 0x00FF]
#: ... and a PSK client's.
PINNED_PSK_HELLO_SUITES = [0xCCAC, 0x00A8, 0xCCAB, 0x00A9, 0x00FF]
#: signature_algorithms (extension 13) of both: ecdsa/rsa_pkcs1 with SHA-512,
#: SHA-384, SHA-256. No SHA-1, SHA-224, MD5 or RSA-PSS entry.
PINNED_SIG_ALGS = [0x0603, 0x0601, 0x0503, 0x0501, 0x0403, 0x0401]
EXT_SIGNATURE_ALGORITHMS = 13
EXT_ENCRYPT_THEN_MAC = 22

#: Suites Mbed TLS defines once CBC is built (and a few that never were):
#: none may be configured.
REFUSED_SUITES = [
    "TLS-ECDHE-ECDSA-WITH-AES-128-CBC-SHA256",
    "TLS-ECDHE-ECDSA-WITH-AES-256-CBC-SHA384",
    "TLS-ECDHE-ECDSA-WITH-AES-128-CBC-SHA",
    "TLS-ECDHE-ECDSA-WITH-AES-256-CBC-SHA",
    "TLS-ECDHE-RSA-WITH-AES-128-CBC-SHA256",
    "TLS-ECDHE-RSA-WITH-AES-256-CBC-SHA384",
    "TLS-ECDHE-RSA-WITH-AES-128-CBC-SHA",
    "TLS-ECDHE-PSK-WITH-AES-128-CBC-SHA256",
    "TLS-ECDHE-PSK-WITH-AES-256-CBC-SHA",
    "TLS-PSK-WITH-AES-128-CBC-SHA256",
    "TLS-PSK-WITH-AES-256-CBC-SHA384",
    "TLS-PSK-WITH-AES-128-CBC-SHA",
    "TLS-RSA-WITH-AES-128-CBC-SHA",
    "TLS-RSA-WITH-AES-128-GCM-SHA256",
    "TLS-ECDHE-ECDSA-WITH-NULL-SHA",
    "TLS-PSK-WITH-NULL-SHA256",
]


def parse_client_hello(datagram: bytes) -> tuple[list[int], dict[int, bytes]]:
    """(cipher suites, extensions by type) of a one-record, unfragmented
    DTLS ClientHello datagram."""
    assert datagram[0] == 22 and datagram[13] == 1, datagram[:16].hex()
    length = int.from_bytes(datagram[14:17], "big")
    assert int.from_bytes(datagram[22:25], "big") == length  # not fragmented
    body = datagram[25 : 25 + length]
    pos = 2 + 32  # version, random
    pos += 1 + body[pos]  # session id
    pos += 1 + body[pos]  # cookie
    n = int.from_bytes(body[pos : pos + 2], "big")
    pos += 2
    suites = [int.from_bytes(body[pos + i : pos + i + 2], "big") for i in range(0, n, 2)]
    pos += n
    pos += 1 + body[pos]  # compression methods
    end = pos + 2 + int.from_bytes(body[pos : pos + 2], "big")
    pos += 2
    extensions: dict[int, bytes] = {}
    while pos < end:
        kind = int.from_bytes(body[pos : pos + 2], "big")
        size = int.from_bytes(body[pos + 2 : pos + 4], "big")
        extensions[kind] = body[pos + 4 : pos + 4 + size]
        pos += 4 + size
    assert pos == end == len(body)
    return suites, extensions


def sig_algs(extension: bytes) -> list[int]:
    n = int.from_bytes(extension[:2], "big")
    assert n == len(extension) - 2
    return [int.from_bytes(extension[2 + i : 4 + i], "big") for i in range(0, n, 2)]


def test_negotiable_suites_are_the_pinned_list() -> None:
    assert dtlspeer.ciphersuites() == PINNED_SUITE_NAMES


@pytest.mark.parametrize(
    ("config", "expected_suites"),
    [
        (lambda: EngineConfig.client(verify=Verify.NONE), PINNED_CERT_HELLO_SUITES),
        (lambda: EngineConfig.client(verify=Verify.NONE, psk=(b"id", b"k" * 16)),
         PINNED_PSK_HELLO_SUITES),
    ],
    ids=["certificate", "psk"],
)
def test_client_hello_offers_the_pinned_suites_and_signature_algorithms(
    config: object, expected_suites: list[int]
) -> None:
    suites, extensions = parse_client_hello(first_hello(config()))  # type: ignore[operator]
    assert suites == expected_suites
    assert sig_algs(extensions[EXT_SIGNATURE_ALGORITHMS]) == PINNED_SIG_ALGS
    assert EXT_ENCRYPT_THEN_MAC not in extensions


@pytest.mark.parametrize("suite", REFUSED_SUITES)
def test_cbc_and_other_removed_suites_cannot_be_configured(suite: str) -> None:
    with pytest.raises(errors.UnsupportedError):
        EngineConfig.client(ciphersuites=[suite])
    key = native_key("ec")
    with pytest.raises(errors.UnsupportedError):
        EngineConfig.server(gate=CookieGate(), key=key,
                            certificate=native_self_signed(key, "game.example"),
                            ciphersuites=[suite])


def test_every_pinned_suite_can_still_be_configured() -> None:
    for suite in PINNED_SUITE_NAMES:
        EngineConfig.client(ciphersuites=[suite]).close()

"""Interop with OpenSSL's command-line tools (``openssl s_server`` and
``openssl s_client``, DTLS 1.2).

How the tools are driven (OpenSSL 3.0):

* ``s_server -dtls1_2 -listen -accept 127.0.0.1:P -naccept 1`` (not
  ``-quiet``/``-brief``, which would silence it): prints ``ACCEPT`` once its
  socket is bound, then after the handshake the session parameters (PEM, it
  holds the protocol version), ``CIPHER is <suite>``, and then every
  application record it receives, raw, on stdout. Every line the test writes
  to its stdin goes out as one record. ``-listen`` makes it answer a
  cookieless ClientHello with a HelloVerifyRequest (``DTLSv1_listen``).
  ``-rev`` does not work with DTLS (it uses a stream socket BIO).
* ``s_client -dtls1_2 -brief``: prints ``CONNECTION ESTABLISHED``,
  ``Protocol version:`` and ``Ciphersuite:`` on stderr; stdout carries only
  the records it receives; each stdin line goes out as one record.

So an "echo" through a tool is relayed by the test: the tool prints what it
received, the test checks it byte for byte and writes the same line back to
the tool's stdin, and the other side checks what comes back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import pytest
from conftest import HOSTNAME, ServerCert
from exchange import DTLS1_2_VERSION, session_protocol, text_messages
from ours import (
    EchoServer,
    connect_client,
    finish_handshake,
    mbedtls_suite_from_openssl,
    receive,
    start_client,
)
from peers import PeerProcess, PeerSet, Pump, RecordProperty

from dtlspeer import PacketPeerUDP, TLSOptions
from dtlspeer.dtls import PacketPeerDTLS

pytestmark = pytest.mark.interop

MESSAGES = 120
# Mbed TLS X.509 verify flags (x509.h).
BADCERT_CN_MISMATCH = 0x04
BADCERT_NOT_TRUSTED = 0x08


# -- driving the tools ---------------------------------------------------------

def start_s_server(peers: PeerSet, openssl: str, cert: ServerCert,
                   extra: Sequence[str] = ()) -> tuple[PeerProcess, int]:
    """``openssl s_server`` with cookie exchange on a free 127.0.0.1 port, ready."""
    def argv(port: int) -> Sequence[str]:
        return [openssl, "s_server", "-dtls1_2", "-listen", "-accept", f"127.0.0.1:{port}",
                "-cert", str(cert.cert_path), "-key", str(cert.key_path), "-naccept", "1",
                *extra]
    return peers.start_server("openssl s_server", argv, ready=rb"^ACCEPT\b")


def s_server_handshake(srv: PeerProcess) -> tuple[int, str]:
    """Wait for s_server's post-handshake report: (protocol version, suite)."""
    srv.expect(rb"^-----BEGIN SSL SESSION PARAMETERS-----")
    body = b""
    while True:
        line = srv.next_line()
        if line.startswith(b"-----END SSL SESSION PARAMETERS-----"):
            break
        body += line.strip()
    suite = srv.expect(rb"^CIPHER is (\S+)").group(1).decode()
    return session_protocol(body), suite


_S_SERVER_INFO = re.compile(rb"^(Secure Renegotiation|Reused session-id|Shared |Signature Alg"
                            rb"|Supported |CIPHER is|Peer signing|Client certificate|No client)")


def s_server_record(srv: PeerProcess) -> bytes:
    """The next application record s_server printed (info lines skipped)."""
    while True:
        line = srv.next_line()
        if not _S_SERVER_INFO.match(line):
            return line


def echo_with_s_server(srv: PeerProcess, udp: PacketPeerUDP, dtls: PacketPeerDTLS,
                       count: int, seed: int) -> None:
    """Our client sends ``count`` records; s_server must print each one and
    its reply (the same text) must arrive back at our client."""
    for msg in text_messages(count, seed=seed):
        dtls.put_packet(msg)
        assert s_server_record(srv) == msg
        srv.write(msg)
        assert receive(udp, dtls) == msg


def start_s_client(peers: PeerSet, openssl: str, port: int, ca: Optional[Path],
                   hostname: str = HOSTNAME, extra: Sequence[str] = ()) -> PeerProcess:
    """``openssl s_client -brief`` to 127.0.0.1:port; with ``ca`` it verifies the
    server's chain and ``hostname`` and aborts the handshake on failure."""
    argv = [openssl, "s_client", "-dtls1_2", "-connect", f"127.0.0.1:{port}", "-brief", *extra]
    if ca is not None:
        argv += ["-CAfile", str(ca), "-verify_hostname", hostname, "-verify_return_error"]
    return peers.start("openssl s_client", argv)


def s_client_handshake(cli: PeerProcess, pump: Optional[Pump] = None) -> tuple[str, str, str]:
    """Wait for s_client's brief report: (protocol, suite, verification), calling
    ``pump`` meanwhile (to drive our server)."""
    cli.expect(rb"^CONNECTION ESTABLISHED", "stderr", pump=pump)
    protocol = cli.expect(rb"^Protocol version: (\S+)", "stderr", pump=pump).group(1).decode()
    suite = cli.expect(rb"^Ciphersuite: (\S+)", "stderr", pump=pump).group(1).decode()
    verification = cli.expect(rb"^Verification(?: error)?: (.+)$", "stderr",
                              pump=pump).group(1).decode().strip()
    return protocol, suite, verification


def _expected_kx(cert: ServerCert) -> str:
    return "ECDHE-ECDSA-" if cert.algorithm.startswith("ECDSA") else "ECDHE-RSA-"


# -- harness check: openssl against openssl with our certificates --------------

def test_harness_openssl_vs_openssl(peers: PeerSet, openssl_bin: str, server_cert: ServerCert,
                                    record_property: RecordProperty) -> None:
    """Harness self-check, no dtlspeer on the wire: openssl s_client -> openssl
    s_server (cookie exchange), DTLS 1.2, with each server certificate of the
    matrix. Proves the process harness and that OpenSSL's verifier accepts the
    certificate (chain and hostname "localhost"), 40 lines relayed both ways."""
    srv, port = start_s_server(peers, openssl_bin, server_cert)
    cli = start_s_client(peers, openssl_bin, port, server_cert.cert_path)
    protocol, suite, verification = s_client_handshake(cli)
    assert protocol == "DTLSv1.2"
    assert verification == "OK"
    assert suite.startswith(_expected_kx(server_cert))
    srv_protocol, srv_suite = s_server_handshake(srv)
    assert srv_protocol == DTLS1_2_VERSION
    assert srv_suite == suite
    record_property("suite", suite)
    for msg in text_messages(40, seed=1):
        cli.write(msg)
        assert s_server_record(srv) == msg
        srv.write(msg)
        assert cli.next_line() == msg


# -- dtlspeer client -> openssl s_server -----------------------------------------

def test_our_client_to_s_server(peers: PeerSet, openssl_bin: str, server_cert: ServerCert,
                                record_property: RecordProperty) -> None:
    """dtlspeer PacketPeerDTLS client -> openssl s_server -listen (cookie
    exchange), DTLS 1.2, each server certificate; our client verifies it
    (TLSOptions.client(trusted_chain=cert), hostname "localhost"). 120 text
    records up, each relayed back down by s_server and checked byte for byte
    on both sides; s_server's suite equals ours; our close_notify ends
    s_server's session cleanly."""
    srv, port = start_s_server(peers, openssl_bin, server_cert)
    _key, cert = server_cert.load()
    udp, dtls = connect_client(port, HOSTNAME, TLSOptions.client(trusted_chain=cert))
    protocol, suite = s_server_handshake(srv)
    assert protocol == DTLS1_2_VERSION
    assert suite.startswith(_expected_kx(server_cert))
    assert dtls.get_ciphersuite() == mbedtls_suite_from_openssl(suite)
    record_property("suite", f"{suite} = {dtls.get_ciphersuite()}")
    echo_with_s_server(srv, udp, dtls, MESSAGES, seed=3)
    dtls.disconnect_from_peer()
    srv.expect(rb"^CONNECTION CLOSED")
    assert srv.wait(20) == 0  # -naccept 1: exits after our session closed


@pytest.mark.parametrize("hostname, expected", [
    ("localhost", "STATUS_CONNECTED"),  # SAN dNSName
    ("127.0.0.1", "STATUS_CONNECTED"),  # SAN iPAddress
    ("wrong.example.test", "STATUS_ERROR_HOSTNAME_MISMATCH"),
])
def test_our_client_hostname_check_against_s_server(
        peers: PeerSet, openssl_bin: str, openssl_cert: ServerCert, hostname: str,
        expected: str) -> None:
    """dtlspeer client -> openssl s_server presenting the openssl-made ECDSA
    certificate (SAN DNS:localhost, IP:127.0.0.1), verifying with
    TLSOptions.client(trusted_chain=cert): the right DNS name or IP connects
    (and exchanges 20 records), a wrong name ends STATUS_ERROR_HOSTNAME_MISMATCH
    with a reason naming the mismatch, and s_server sees the alert."""
    srv, port = start_s_server(peers, openssl_bin, openssl_cert)
    _key, cert = openssl_cert.load()
    udp, dtls = start_client(port, hostname, TLSOptions.client(trusted_chain=cert))
    status = finish_handshake(udp, dtls)
    assert status.name == expected, dtls.get_last_error()
    if expected == "STATUS_CONNECTED":
        s_server_handshake(srv)
        echo_with_s_server(srv, udp, dtls, 20, seed=4)
        dtls.disconnect_from_peer()
    else:
        assert dtls.get_verify_flags() == BADCERT_CN_MISMATCH, dtls.get_last_error()
        assert "does not match" in dtls.get_last_error(), dtls.get_last_error()
        # Our client aborted the handshake with a bad_certificate alert (42).
        srv.expect(rb"alert bad certificate.*SSL alert number 42", "stderr")


def test_our_client_rejects_untrusted_s_server(peers: PeerSet, openssl_bin: str,
                                               openssl_cert: ServerCert,
                                               server_certs: dict[str, ServerCert]) -> None:
    """dtlspeer client -> openssl s_server whose certificate does not chain to
    the one our client trusts (a different self-signed certificate with the
    same name): STATUS_ERROR (not a hostname mismatch), verify flags
    NOT_TRUSTED, and s_server receives an unknown_ca alert (48)."""
    srv, port = start_s_server(peers, openssl_bin, openssl_cert)
    _key, other = server_certs["ecdsa-p256/ours"].load()
    udp, dtls = start_client(port, HOSTNAME, TLSOptions.client(trusted_chain=other))
    assert finish_handshake(udp, dtls) == PacketPeerDTLS.STATUS_ERROR
    assert dtls.get_verify_flags() == BADCERT_NOT_TRUSTED, dtls.get_last_error()
    assert "not correctly signed by the trusted CA" in dtls.get_last_error()
    srv.expect(rb"alert unknown ca.*SSL alert number 48", "stderr")


# -- openssl s_client -> dtlspeer server -----------------------------------------

def test_s_client_to_our_server(peers: PeerSet, openssl_bin: str, server_cert: ServerCert,
                                record_property: RecordProperty) -> None:
    """openssl s_client -> dtlspeer UDPServer + DTLSServer (Godot-style loop,
    cookie exchange), DTLS 1.2, each server certificate; s_client verifies
    our certificate and hostname "localhost" (-verify_return_error). 120 text
    records up and echoed back by our server, each checked byte for byte on
    both sides; the suite s_client prints equals ours; s_client's
    close_notify (stdin EOF) disconnects our peer cleanly."""
    key, cert = server_cert.load()
    server = EchoServer(key, cert)
    try:
        cli = start_s_client(peers, openssl_bin, server.port, server_cert.cert_path)
        protocol, suite, verification = s_client_handshake(cli, pump=server.pump)
        assert protocol == "DTLSv1.2"
        assert verification == "OK"
        assert suite.startswith(_expected_kx(server_cert))
        server.run_until(lambda: len(server.connected()) == 1, 10, "one connected peer")
        assert server.refused >= 1  # the cookieless first ClientHello
        assert server.connected()[0].get_ciphersuite() == mbedtls_suite_from_openssl(suite)
        record_property("suite", f"{suite} = {server.connected()[0].get_ciphersuite()}")
        messages = text_messages(MESSAGES, seed=5)
        for msg in messages:
            cli.write(msg)
            assert cli.next_line(pump=server.pump) == msg
        assert server.received == messages
        cli.close_stdin()
        peer = server.connected()[0]
        server.run_until(lambda: peer.get_status() != PacketPeerDTLS.STATUS_CONNECTED, 20,
                         "peer disconnect after close_notify")
        assert peer.get_status() == PacketPeerDTLS.STATUS_DISCONNECTED, peer.get_last_error()
        assert cli.wait(20) == 0
    finally:
        server.close()


# -- P-256 ECDHE (X25519 is negotiated first by default) ----------------------

def test_p256_ecdhe_both_directions(peers: PeerSet, openssl_bin: str,
                                    server_certs: dict[str, ServerCert],
                                    record_property: RecordProperty) -> None:
    """With OpenSSL limited to the P-256 group (``-groups P-256``) the ECDHE
    is P-256 on both sides: Mbed TLS's P-256 ECDH runs in the key exchange,
    not only its ECDSA P-256 signature (X25519 alone is covered elsewhere).
    s_client -> our server, then our client -> s_server, a few records each way."""
    cert = server_certs["ecdsa-p256/ours"]
    key, x509 = cert.load()
    server = EchoServer(key, x509)
    try:
        cli = start_s_client(peers, openssl_bin, server.port, cert.cert_path,
                             extra=["-groups", "P-256"])
        protocol, suite, verification = s_client_handshake(cli, pump=server.pump)
        assert (protocol, verification) == ("DTLSv1.2", "OK")
        assert suite.startswith("ECDHE-ECDSA-")
        server.run_until(lambda: len(server.connected()) == 1, 10, "one connected peer")
        for msg in text_messages(5, seed=8):
            cli.write(msg)
            assert cli.next_line(pump=server.pump) == msg
        cli.close_stdin()
        assert cli.wait(20) == 0
    finally:
        server.close()

    srv, port = start_s_server(peers, openssl_bin, cert, extra=["-groups", "P-256"])
    udp, dtls = connect_client(port, HOSTNAME, TLSOptions.client(trusted_chain=x509))
    protocol_v, suite = s_server_handshake(srv)
    assert protocol_v == DTLS1_2_VERSION
    assert suite.startswith("ECDHE-ECDSA-")
    record_property("suite", suite)
    echo_with_s_server(srv, udp, dtls, 5, seed=9)
    dtls.disconnect_from_peer()
    srv.expect(rb"^CONNECTION CLOSED")
    assert srv.wait(20) == 0

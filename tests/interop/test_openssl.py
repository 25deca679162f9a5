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
from peers import PeerProcess, PeerSet, Pump

pytestmark = pytest.mark.interop

MESSAGES = 120


# -- driving the tools ---------------------------------------------------------

def start_s_server(peers: PeerSet, openssl: str, cert: ServerCert) -> tuple[PeerProcess, int]:
    """``openssl s_server`` with cookie exchange on a free 127.0.0.1 port, ready."""
    def argv(port: int) -> Sequence[str]:
        return [openssl, "s_server", "-dtls1_2", "-listen", "-accept", f"127.0.0.1:{port}",
                "-cert", str(cert.cert_path), "-key", str(cert.key_path), "-naccept", "1"]
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


def start_s_client(peers: PeerSet, openssl: str, port: int, ca: Optional[Path],
                   hostname: str = HOSTNAME) -> PeerProcess:
    """``openssl s_client -brief`` to 127.0.0.1:port; with ``ca`` it verifies the
    server's chain and ``hostname`` and aborts the handshake on failure."""
    argv = [openssl, "s_client", "-dtls1_2", "-connect", f"127.0.0.1:{port}", "-brief"]
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

def test_harness_openssl_vs_openssl(peers: PeerSet, openssl_bin: str,
                                    server_cert: ServerCert) -> None:
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
    for msg in text_messages(40, seed=1):
        cli.write(msg)
        assert s_server_record(srv) == msg
        srv.write(msg)
        assert cli.next_line() == msg

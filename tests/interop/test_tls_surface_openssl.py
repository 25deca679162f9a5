"""The TLS surface seen from OpenSSL stays what it was before the Crypto
classes brought MD5 and the CBC mode into our Mbed TLS build (issue 12
section 3). Unit-level pins (suite list, our ClientHello bytes) are in
``tests/test_tls_surface.py``.

Observed on main before the change, and pinned here:

* ``openssl s_client -cipher <a CBC suite>`` gets a handshake_failure alert
  (40) from our server: no shared suite. So does a client that offers only
  SHA-1 or SHA-224 signature algorithms (``-sigalgs``): our server signs its
  ServerKeyExchange only with SHA-256/384/512.
* With OpenSSL's default offer our server signs with SHA-256 (ECDSA or
  RSA PKCS#1 v1.5); offered only ECDSA+SHA384 it signs with SHA-384.
* Our client refuses an ``s_server`` limited to a CBC suite, or one that can
  only sign with SHA-1.
* A certificate signed with MD5 (parseable now that MD5 is built) is still
  refused by our client's verification (Mbed TLS's default X.509 profile).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from conftest import HOSTNAME, ServerCert
from ours import EchoServer, finish_handshake, start_client
from peers import Deadline, PeerProcess, PeerSet

from dtlspeer import TLSOptions, X509Certificate
from dtlspeer.dtls import PacketPeerDTLS

pytestmark = pytest.mark.interop

ECDSA, RSA = "ecdsa-p256/ours", "rsa2048/ours"
# OpenSSL 3 offers SHA-1 suites and signatures only at security level 0.
LEVEL0 = "DEFAULT:@SECLEVEL=0"

REFUSED_CLIENT_OFFERS = [
    (ECDSA, ["-cipher", "ECDHE-ECDSA-AES128-SHA256"]),
    (ECDSA, ["-cipher", "ECDHE-ECDSA-AES256-SHA384"]),
    (ECDSA, ["-cipher", "ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0"]),
    (RSA, ["-cipher", "ECDHE-RSA-AES128-SHA256"]),
    (RSA, ["-cipher", "ECDHE-RSA-AES256-SHA:@SECLEVEL=0"]),
    (RSA, ["-cipher", "AES128-SHA256"]),
    (RSA, ["-cipher", "AES128-GCM-SHA256"]),  # RSA key transport
    (ECDSA, ["-sigalgs", "ECDSA+SHA1", "-cipher", LEVEL0]),
    (ECDSA, ["-sigalgs", "ECDSA+SHA224"]),
    (RSA, ["-sigalgs", "RSA+SHA1", "-cipher", LEVEL0]),
    (RSA, ["-sigalgs", "RSA+SHA224"]),
    (RSA, ["-sigalgs", "RSA-PSS+SHA256"]),
]


@contextlib.contextmanager
def our_server(cert: ServerCert) -> Iterator[EchoServer]:
    """Our Godot-style echo server with ``cert``, closed afterwards."""
    key, x509 = cert.load()
    server = EchoServer(key, x509)
    try:
        yield server
    finally:
        server.close()


def s_client(peers: PeerSet, openssl: str, port: int, extra: Sequence[str]) -> PeerProcess:
    return peers.start("openssl s_client", [
        openssl, "s_client", "-dtls1_2", "-connect", f"127.0.0.1:{port}", "-brief", *extra])


@pytest.mark.parametrize(("label", "extra"), REFUSED_CLIENT_OFFERS,
                         ids=[f"{c}:{' '.join(e)}" for c, e in REFUSED_CLIENT_OFFERS])
def test_our_server_refuses_removed_suites_and_signature_algorithms(
    peers: PeerSet, openssl_bin: str, server_certs: dict[str, ServerCert], label: str,
    extra: list[str],
) -> None:
    with our_server(server_certs[label]) as server:
        cli = s_client(peers, openssl_bin, server.port, extra)
        cli.expect(rb"alert handshake failure|SSL alert number 40", "stderr", pump=server.pump)
        deadline = Deadline(20)
        while cli.returncode() is None and not deadline.expired():
            server.pump()
        assert cli.returncode() not in (None, 0), cli.transcript()
        assert not server.connected()
        assert cli.find(rb"CONNECTION ESTABLISHED", "stderr") is None


@pytest.mark.parametrize(
    ("label", "extra", "signature", "digest"),
    [(ECDSA, [], "ECDSA", "SHA256"), (RSA, [], "RSA", "SHA256"),
     (ECDSA, ["-sigalgs", "ECDSA+SHA384"], "ECDSA", "SHA384"),
     (RSA, ["-sigalgs", "RSA+SHA512"], "RSA", "SHA512")],
    ids=["ecdsa-default", "rsa-default", "ecdsa-sha384", "rsa-sha512"],
)
def test_our_server_signs_with_the_pinned_algorithms(
    peers: PeerSet, openssl_bin: str, server_certs: dict[str, ServerCert], label: str,
    extra: list[str], signature: str, digest: str,
) -> None:
    with our_server(server_certs[label]) as server:
        cli = s_client(peers, openssl_bin, server.port, extra)
        cli.expect(rb"^CONNECTION ESTABLISHED", "stderr", pump=server.pump)
        assert cli.expect(rb"^Hash used: (\S+)", "stderr", pump=server.pump
                          ).group(1).decode() == digest
        assert cli.expect(rb"^Signature type: (\S+)", "stderr", pump=server.pump
                          ).group(1).decode() == signature
        server.run_until(lambda: len(server.connected()) == 1, 10, "one connected peer")
        cli.close_stdin()
        assert cli.wait(20) == 0


def our_client_fails(port: int, trusted: X509Certificate) -> str:
    udp, dtls = start_client(port, HOSTNAME, TLSOptions.client(trusted_chain=trusted))
    try:
        status = finish_handshake(udp, dtls)
        assert status != PacketPeerDTLS.STATUS_CONNECTED
        return str(dtls.get_last_error())
    finally:
        dtls.disconnect_from_peer()
        udp.close()


@pytest.mark.parametrize(
    ("label", "extra"),
    [(ECDSA, ["-cipher", "ECDHE-ECDSA-AES128-SHA256"]),
     (RSA, ["-cipher", "ECDHE-RSA-AES128-SHA:@SECLEVEL=0"]),
     (ECDSA, ["-sigalgs", "ECDSA+SHA1", "-cipher", LEVEL0]),
     (RSA, ["-sigalgs", "RSA+SHA1", "-cipher", LEVEL0])],
    ids=["ecdsa-cbc", "rsa-cbc-sha1", "ecdsa-sha1-signature", "rsa-sha1-signature"],
)
def test_our_client_refuses_a_server_limited_to_removed_algorithms(
    peers: PeerSet, openssl_bin: str, server_certs: dict[str, ServerCert], label: str,
    extra: list[str],
) -> None:
    cert = server_certs[label]
    srv, port = peers.start_server("openssl s_server", lambda p: [
        openssl_bin, "s_server", "-dtls1_2", "-listen", "-accept", f"127.0.0.1:{p}",
        "-cert", str(cert.cert_path), "-key", str(cert.key_path), "-naccept", "1", *extra],
        ready=rb"^ACCEPT\b")
    _key, x509 = cert.load()
    our_client_fails(port, x509)
    assert srv.find(rb"CIPHER is") is None


def test_md5_signed_certificate_is_still_refused(
    peers: PeerSet, openssl_bin: str, tmp_path: Path
) -> None:
    key_path, cert_path = tmp_path / "md5.key", tmp_path / "md5.crt"
    subprocess.run(
        [openssl_bin, "req", "-x509", "-md5", "-newkey", "rsa:2048", "-nodes",
         "-keyout", str(key_path), "-out", str(cert_path), "-days", "30",
         "-subj", f"/CN={HOSTNAME}", "-addext", f"subjectAltName=DNS:{HOSTNAME}"],
        check=True, capture_output=True, timeout=60)
    trusted = X509Certificate()
    trusted.load(str(cert_path))  # parses now that MD5 is built...
    _srv, port = peers.start_server("openssl s_server", lambda p: [
        openssl_bin, "s_server", "-dtls1_2", "-listen", "-accept", f"127.0.0.1:{p}",
        "-cert", str(cert_path), "-key", str(key_path), "-naccept", "1", "-cipher", LEVEL0],
        ready=rb"^ACCEPT\b")
    error = our_client_fails(port, trusted)  # ...but is not trusted
    assert "unacceptable hash" in error, error

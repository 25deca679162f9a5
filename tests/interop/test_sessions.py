"""Issue 14 against peers we did not write: session resumption (RFC 5077
tickets) with ``openssl s_client -sess_out/-sess_in``, ``gnutls-cli --resume``
and ``openssl s_server``, and client certificates with ``openssl s_client -cert/-key``,
``gnutls-cli --x509certfile/--x509keyfile`` and ``openssl s_server
-Verify``. Certificates for the client side are made by openssl: a CA and a
client leaf it signed (SAN with a DNS name and a URI), plus a self-signed
stranger."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import HOSTNAME, ServerCert
from ours import EchoServer, connect_client, finish_handshake, start_client
from peers import Deadline, PeerProcess, PeerSet
from test_gnutls import start_gnutls_cli
from test_openssl import start_s_server

from dtlspeer import CryptoKey, PacketPeerDTLS, TLSOptions, X509Certificate

pytestmark = pytest.mark.interop

Status = PacketPeerDTLS.Status


@dataclass(frozen=True)
class ClientCerts:
    ca: Path
    leaf: Path
    leaf_key: Path
    stranger: Path
    stranger_key: Path
    fingerprint: bytes  # SHA-256 of the leaf's DER, as openssl prints it

    def ca_chain(self) -> X509Certificate:
        cert = X509Certificate()
        cert.load(str(self.ca))
        return cert

    def ours(self, stranger: bool = False) -> tuple[CryptoKey, X509Certificate]:
        key, cert = CryptoKey(), X509Certificate()
        key.load(str(self.stranger_key if stranger else self.leaf_key))
        cert.load(str(self.stranger if stranger else self.leaf))
        return key, cert


def _openssl(openssl: str, *args: str, cwd: Path) -> str:
    done = subprocess.run([openssl, *args], cwd=cwd, check=True, capture_output=True,
                          timeout=60, text=True)
    return done.stdout


@pytest.fixture(scope="module")
def client_certs(tmp_path_factory: pytest.TempPathFactory) -> ClientCerts:
    from peers import require_tool

    openssl = require_tool("openssl")
    d = tmp_path_factory.mktemp("client-certs")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(openssl, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "30",
             "-subj", "/CN=dtlspeer test client CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign", cwd=d)
    _openssl(openssl, "req", *ec, "-keyout", "client.key", "-out", "client.csr",
             "-subj", "/CN=player-7/O=dtlspeer interop", cwd=d)
    (d / "ext.cnf").write_text(
        "subjectAltName=DNS:player-7.example,URI:spiffe://game/player/7\n"
        "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n"
        "keyUsage=critical,digitalSignature\n")
    _openssl(openssl, "x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "client.crt", "-days", "30", "-extfile", "ext.cnf", cwd=d)
    _openssl(openssl, "req", "-x509", *ec, "-keyout", "stranger.key", "-out", "stranger.crt",
             "-days", "30", "-subj", "/CN=stranger", cwd=d)
    text = _openssl(openssl, "x509", "-in", "client.crt", "-noout", "-fingerprint", "-sha256",
                    cwd=d)
    fingerprint = bytes.fromhex(text.strip().split("=", 1)[1].replace(":", ""))
    return ClientCerts(d / "ca.crt", d / "client.crt", d / "client.key", d / "stranger.crt",
                       d / "stranger.key", fingerprint)


@pytest.fixture
def server_cert(server_certs: dict[str, ServerCert]) -> ServerCert:
    return server_certs["ecdsa-p256/ours"]


def wait_exit(proc: PeerProcess, server: EchoServer, timeout: float = 20.0) -> None:
    """Drive our server until ``proc`` exited (bounded)."""
    deadline = Deadline(timeout)
    while proc.running():
        assert not deadline.expired(), f"{proc} did not exit: {proc.transcript()}"
        server.pump()


def s_client(peers: PeerSet, openssl: str, port: int, cert: ServerCert,
             extra: Sequence[str] = ()) -> PeerProcess:
    """``openssl s_client`` (full output: "New," / "Reused," lines) verifying our server."""
    return peers.start("openssl s_client", [
        openssl, "s_client", "-dtls1_2", "-connect", f"127.0.0.1:{port}",
        "-CAfile", str(cert.cert_path), "-verify_hostname", HOSTNAME, "-verify_return_error",
        *extra])


# ---- resumption -----------------------------------------------------------------------


def test_s_client_resumes_with_our_server(peers: PeerSet, openssl_bin: str,
                                          server_cert: ServerCert, tmp_path: Path) -> None:
    """s_client gets a ticket from our server (-sess_out), then resumes with
    it (-sess_in): s_client prints "Reused", our server peer reports it, and
    a record still goes both ways."""
    server = EchoServer(*server_cert.load())
    sess = tmp_path / "session.pem"
    try:
        first = s_client(peers, openssl_bin, server.port, server_cert, ["-sess_out", str(sess)])
        first.expect(rb"^New, TLSv1\.2", pump=server.pump)
        server.run_until(lambda: len(server.connected()) == 1, 10, "first connection")
        first.close_stdin()  # s_client sends close_notify, writes the session, exits
        wait_exit(first, server)
        assert sess.exists()
        second = s_client(peers, openssl_bin, server.port, server_cert, ["-sess_in", str(sess)])
        second.expect(rb"^Reused, TLSv1\.2", pump=server.pump)
        server.run_until(lambda: any(p.is_session_resumed() for p in server.connected()), 10,
                         "a resumed connection")
        second.write(b"resumed hello\n")
        second.expect(rb"^resumed hello", pump=server.pump)
        assert server.received[-1] == b"resumed hello\n"
        assert server.dtls._tickets.get_stats()["accepted"] == 1  # type: ignore[union-attr]
    finally:
        server.close()


def test_our_client_resumes_with_s_server(peers: PeerSet, openssl_bin: str,
                                          server_cert: ServerCert) -> None:
    """Our client's session from an openssl s_server (its own tickets) resumes
    on the next connection to the same s_server. s_server's socket stays
    connected to its first client's address (DTLSv1_listen connects it), so
    the second connection comes from the same UDP socket."""
    srv, port = start_s_server(peers, openssl_bin, server_cert, ["-naccept", "2"])
    options = TLSOptions.client(server_cert.load()[1])
    udp, dtls = connect_client(port, HOSTNAME, options)
    assert not dtls.is_session_resumed()
    session = dtls.get_session()
    assert session is not None
    dtls.disconnect_from_peer()
    srv.expect(rb"^DONE")
    # The same UDP socket: s_server's socket stays connected to its first
    # client's address, and a closed port would answer its close_notify
    # with an ICMP error that can wedge it.
    again = PacketPeerDTLS()
    again.connect_to_peer(udp, HOSTNAME, options, session=session)
    assert finish_handshake(udp, again) == Status.STATUS_CONNECTED, \
        (again.get_last_error(), again.get_stats(), srv.transcript())
    assert again.is_session_resumed()
    srv.expect(rb"^Reused session-id")
    again.put_packet(b"after resumption\n")
    srv.expect(rb"^after resumption")


def test_gnutls_cli_resumes_with_our_server(peers: PeerSet, gnutls_cli_bin: str,
                                            server_cert: ServerCert) -> None:
    """gnutls-cli --resume: a full handshake, then a second connection resuming
    its session (with our server's ticket); gnutls-cli and our peer agree."""
    server = EchoServer(*server_cert.load())
    try:
        cli = start_gnutls_cli(peers, gnutls_cli_bin, server.port, server_cert,
                               extra=["--resume"])
        cli.expect(rb"^\*\*\* This is a resumed session", pump=server.pump)
        server.run_until(lambda: any(p.is_session_resumed() for p in server.connected()), 10,
                         "a resumed connection")
        assert server.dtls._tickets.get_stats()["accepted"] == 1  # type: ignore[union-attr]
    finally:
        server.close()


# ---- client certificates ---------------------------------------------------------------


def failed_peer(server: EchoServer) -> PacketPeerDTLS:
    """Drive our server until one of its peers failed (bounded); that peer."""
    server.run_until(lambda: any(p.get_status() == Status.STATUS_ERROR for p in server.peers),
                     10, "the failed peer")
    return next(p for p in server.peers if p.get_status() == Status.STATUS_ERROR)


def mtls_server(server_cert: ServerCert, certs: ClientCerts, mode: str = "required"
                ) -> EchoServer:
    key, cert = server_cert.load()
    return EchoServer(key, cert, TLSOptions.server(key, cert, client_ca=certs.ca_chain(),
                                                   client_auth=mode))


def test_s_client_certificate_is_verified_and_exposed(
    peers: PeerSet, openssl_bin: str, server_cert: ServerCert, client_certs: ClientCerts
) -> None:
    server = mtls_server(server_cert, client_certs)
    try:
        cli = s_client(peers, openssl_bin, server.port, server_cert,
                       ["-cert", str(client_certs.leaf), "-key", str(client_certs.leaf_key)])
        cli.expect(rb"^New, TLSv1\.2", pump=server.pump)
        server.run_until(lambda: len(server.connected()) == 1, 10, "a connected peer")
        cert = server.connected()[0].get_peer_certificate()
        assert cert is not None
        assert cert.subject == "CN=player-7, O=dtlspeer interop"
        assert cert.san == ("DNS:player-7.example", "URI:spiffe://game/player/7")
        assert cert.fingerprint == client_certs.fingerprint
    finally:
        server.close()


@pytest.mark.parametrize("variant", ["missing", "untrusted"])
def test_s_client_without_a_trusted_certificate_is_refused(
    peers: PeerSet, openssl_bin: str, server_cert: ServerCert, client_certs: ClientCerts,
    variant: str
) -> None:
    """s_client sees the alert; our server's peer says why in words."""
    server = mtls_server(server_cert, client_certs)
    extra: list[str] = []
    if variant == "untrusted":
        extra = ["-cert", str(client_certs.stranger), "-key", str(client_certs.stranger_key)]
    try:
        cli = s_client(peers, openssl_bin, server.port, server_cert, extra)
        alert = rb"alert handshake failure" if variant == "missing" else rb"alert (bad|unknown)"
        cli.expect(alert, "stderr", pump=server.pump)
        failed = failed_peer(server)
        expected = ("no client certificate" if variant == "missing"
                    else "certificate verification failed")
        assert expected in failed.get_last_error()
    finally:
        server.close()


def test_gnutls_cli_certificate_is_verified_and_exposed(
    peers: PeerSet, gnutls_cli_bin: str, server_cert: ServerCert, client_certs: ClientCerts
) -> None:
    server = mtls_server(server_cert, client_certs)
    try:
        cli = start_gnutls_cli(peers, gnutls_cli_bin, server.port, server_cert,
                               extra=[f"--x509certfile={client_certs.leaf}",
                                      f"--x509keyfile={client_certs.leaf_key}"])
        cli.expect(rb"^- Handshake was completed", pump=server.pump)
        server.run_until(lambda: len(server.connected()) == 1, 10, "a connected peer")
        cert = server.connected()[0].get_peer_certificate()
        assert cert is not None and cert.fingerprint == client_certs.fingerprint
        assert cert.subject == "CN=player-7, O=dtlspeer interop"
    finally:
        server.close()


def test_gnutls_cli_without_certificate_is_refused(
    peers: PeerSet, gnutls_cli_bin: str, server_cert: ServerCert, client_certs: ClientCerts
) -> None:
    server = mtls_server(server_cert, client_certs)
    try:
        cli = start_gnutls_cli(peers, gnutls_cli_bin, server.port, server_cert)
        cli.expect(rb"(?i)handshake failed|alert", "stderr", pump=server.pump)
        failed = failed_peer(server)
        assert "no client certificate" in failed.get_last_error()
    finally:
        server.close()


def test_our_client_certificate_against_s_server_verify(
    peers: PeerSet, openssl_bin: str, server_cert: ServerCert, client_certs: ClientCerts
) -> None:
    """s_server -Verify 1 -CAfile CA accepts our client's certificate and prints
    its subject; a second s_server refuses our client without one, and our
    client says why."""
    verify = ["-Verify", "1", "-CAfile", str(client_certs.ca)]
    srv, port = start_s_server(peers, openssl_bin, server_cert, verify)
    key, cert = client_certs.ours()
    server_chain = server_cert.load()[1]
    _, dtls = connect_client(port, HOSTNAME, TLSOptions.client(server_chain, key=key,
                                                               certificate=cert))
    srv.expect(rb"^subject=CN ?= ?player-7, ?O ?= ?dtlspeer interop")
    dtls.put_packet(b"mutual\n")
    srv.expect(rb"^mutual")
    dtls.disconnect_from_peer()
    srv2, port2 = start_s_server(peers, openssl_bin, server_cert, verify)
    udp, bare = start_client(port2, HOSTNAME, TLSOptions.client(server_chain))
    assert finish_handshake(udp, bare) == Status.STATUS_ERROR
    assert bare.get_last_error().startswith(
        "fatal alert received from peer: handshake_failure (40); if the server requires a "
        "client certificate: none was configured"), bare.get_last_error()
    srv2.expect(rb"peer did not return a certificate", "stderr")

"""Client certificates (mutual authentication, issue 14 section 3) between
our own clients and servers: what the server exposes, required and optional
modes, missing and untrusted certificates (a readable reason on both
sides), resumed sessions. Interop with OpenSSL and GnuTLS is in
tests/interop/test_sessions.py."""

from __future__ import annotations

import base64
import hashlib

import pytest

from dtlspeer import (
    DTLSHost,
    HostEventType,
    PacketPeerDTLS,
    PacketPeerUDP,
    SessionTicketKeys,
    TLSOptions,
    X509Certificate,
    errors,
)
from identities import Identity, make_identity
from test_dtls import EchoServer, handshake, run_handshake
from test_host import Recorder

Status = PacketPeerDTLS.Status


@pytest.fixture(scope="module")
def server_id() -> Identity:
    return make_identity("ec")


@pytest.fixture(scope="module")
def player() -> Identity:
    """A client identity; its self-signed certificate is also the client CA."""
    return make_identity("ec", "player1.example")


@pytest.fixture(scope="module")
def stranger() -> Identity:
    return make_identity("ec", "stranger.example")


def der_sha256(cert: X509Certificate) -> bytes:
    pem = cert.save_to_string()
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    return hashlib.sha256(base64.b64decode(body)).digest()


def mtls_server(server_id: Identity, ca: X509Certificate, mode: str = "required",
                **setup: object) -> EchoServer:
    options = TLSOptions.server(*server_id, client_ca=ca, client_auth=mode)
    return EchoServer(server_id, options=options, **setup)  # type: ignore[arg-type]


def start(server: EchoServer, options: TLSOptions, session: object = None) -> PacketPeerDTLS:
    udp = PacketPeerUDP()
    udp.connect_to_host("127.0.0.1", server.port)
    client = PacketPeerDTLS()
    client.connect_to_peer(udp, "game.test", options, session=session)  # type: ignore[arg-type]
    return client


def test_required_client_certificate_is_verified_and_exposed(
    server_id: Identity, player: Identity
) -> None:
    """The server peer exposes subject, SAN and the SHA-256 of the leaf's DER."""
    server = mtls_server(server_id, player[1])
    try:
        client = start(server, TLSOptions.client(server_id[1], key=player[0],
                                                 certificate=player[1]))
        peer = handshake(server, client)
        cert = peer.get_peer_certificate()
        assert cert is not None
        assert cert.subject == "CN=player1.example, O=dtlspeer, C=IT"
        assert cert.san == ("DNS:player1.example", "IP:127.0.0.1", "IP:0:0:0:0:0:0:0:1")
        assert cert.fingerprint == der_sha256(player[1])
        assert len(cert.fingerprint_hex) == 32 * 3 - 1
        assert client.get_peer_certificate() is None  # clients expose nothing (ours: servers)
        peer.disconnect_from_peer()
        assert peer.get_peer_certificate() == cert  # kept after the end
    finally:
        server.stop()


def test_missing_client_certificate_fails_with_a_reason_on_both_sides(
    server_id: Identity, player: Identity
) -> None:
    server = mtls_server(server_id, player[1])
    try:
        client = start(server, TLSOptions.client(server_id[1]))
        peer = run_handshake(server, client)
        assert peer.get_status() == Status.STATUS_ERROR
        assert "no client certificate" in peer.get_last_error()
        assert client.get_status() == Status.STATUS_ERROR
        assert client.get_last_error().startswith(
            "fatal alert received from peer: handshake_failure (40); if the server requires "
            "a client certificate: none was configured")
    finally:
        server.stop()


def test_untrusted_client_certificate_fails_with_a_reason_on_both_sides(
    server_id: Identity, player: Identity, stranger: Identity
) -> None:
    server = mtls_server(server_id, player[1])
    try:
        client = start(server, TLSOptions.client(server_id[1], key=stranger[0],
                                                 certificate=stranger[1]))
        peer = run_handshake(server, client)
        assert peer.get_status() == Status.STATUS_ERROR
        reason = peer.get_last_error()
        assert reason.startswith("certificate verification failed"), reason
        assert "not correctly signed by the trusted CA" in reason
        assert peer.get_peer_certificate() is None
        assert client.get_status() == Status.STATUS_ERROR
        assert "the server rejected our client certificate" in client.get_last_error()
    finally:
        server.stop()


def test_optional_mode_admits_clients_without_a_valid_certificate(
    server_id: Identity, player: Identity, stranger: Identity
) -> None:
    server = mtls_server(server_id, player[1], "optional")
    try:
        for options in (TLSOptions.client(server_id[1]),
                        TLSOptions.client(server_id[1], key=stranger[0],
                                          certificate=stranger[1])):
            peer = handshake(server, start(server, options))
            assert peer.get_peer_certificate() is None
            assert peer.get_verify_flags() != 0
        peer = handshake(server, start(server, TLSOptions.client(
            server_id[1], key=player[0], certificate=player[1])))
        cert = peer.get_peer_certificate()
        assert cert is not None and cert.fingerprint == der_sha256(player[1])
        assert peer.get_verify_flags() == 0
    finally:
        server.stop()


def test_resumed_session_keeps_the_fingerprint_only(server_id: Identity, player: Identity) -> None:
    server = mtls_server(server_id, player[1])
    options = TLSOptions.client(server_id[1], key=player[0], certificate=player[1])
    try:
        client = start(server, options)
        handshake(server, client)
        session = client.get_session()
        client.disconnect_from_peer()
        resumed = start(server, options, session)
        peer = handshake(server, resumed)
        assert peer.is_session_resumed()
        cert = peer.get_peer_certificate()
        assert cert is not None
        assert cert.fingerprint == der_sha256(player[1])
        assert cert.subject == "" and cert.san == ()
    finally:
        server.stop()


def test_host_server_exposes_the_client_certificate(server_id: Identity, player: Identity) -> None:
    server = DTLSHost("127.0.0.1", 0, server_options=TLSOptions.server(
        *server_id, client_ca=player[1], client_auth="required"))
    client = DTLSHost("127.0.0.1", 0, client_options=TLSOptions.client(
        server_id[1], key=player[0], certificate=player[1]))
    rec = Recorder(server, client)
    try:
        client.connect("127.0.0.1", server.get_local_port(), "game.test")
        assert rec.run(lambda: len(rec.of(server, HostEventType.CONNECT)) == 1)
        cert = rec.of(server, HostEventType.CONNECT)[0].peer.get_peer_certificate()
        assert cert is not None and cert.subject.startswith("CN=player1.example")
    finally:
        client.close()
        server.close()


def test_options_are_checked(server_id: Identity, player: Identity) -> None:
    with pytest.raises(errors.InvalidArgumentError, match="needs client_ca"):
        TLSOptions.server(*server_id, client_auth="required")
    with pytest.raises(errors.InvalidArgumentError, match="client_auth must be"):
        TLSOptions.server(*server_id, client_ca=player[1], client_auth="yes")
    with pytest.raises(errors.InvalidArgumentError, match="go together"):
        TLSOptions.client(key=player[0])
    with pytest.raises(errors.KeyMismatchError):
        TLSOptions.client(key=server_id[0], certificate=player[1])
    options = TLSOptions.server(*server_id, client_ca=player[1], client_auth="optional")
    assert options.get_client_auth() == "optional"
    assert options.get_client_ca() is player[1]
    assert options.get_trusted_ca_chain() is None
    assert TLSOptions.server(*server_id).get_client_auth() == "none"


def test_ticket_without_client_certificate_does_not_resume_where_one_is_required(
    server_id: Identity, player: Identity
) -> None:
    """Servers sharing ticket keys but not the client certificate policy: a
    session from a server that asked for no certificate must not let a
    client into one that requires it (a resumed handshake checks none). The
    ticket is refused, the full handshake asks for the certificate, and the
    client without one fails."""
    keys = SessionTicketKeys()
    open_server = EchoServer(server_id, ticket_keys=keys)
    strict = mtls_server(server_id, player[1], ticket_keys=keys)
    try:
        client = start(open_server, TLSOptions.client(server_id[1]))
        handshake(open_server, client)
        session = client.get_session()
        assert session is not None
        sneaky = start(strict, TLSOptions.client(server_id[1]), session)
        peer = run_handshake(strict, sneaky)
        assert peer.get_status() == Status.STATUS_ERROR, peer.get_last_error()
        assert "no client certificate" in peer.get_last_error()
        assert not peer.is_session_resumed()
        # A client that did present its certificate resumes on the strict server.
        options = TLSOptions.client(server_id[1], key=player[0], certificate=player[1])
        first = start(strict, options)
        handshake(strict, first)
        again = start(strict, options, first.get_session())
        assert handshake(strict, again).is_session_resumed()
    finally:
        open_server.stop()
        strict.stop()

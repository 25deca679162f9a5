"""Interop with a real Godot runtime: Godot 3.2.3 headless (``godot3-server``,
its bundled Mbed TLS 2.16) running the scripts in ``godot/``:

* ``dtls_echo_client.gd``: PacketPeerUDP + PacketPeerDTLS, validating the
  server certificate (``connect_to_peer(udp, true, host, cert)``), sends
  ``msg <i>`` one at a time, checks each echo, prints ``PASS <n>``/``FAIL``.
* ``dtls_echo_server.gd``: UDPServer + DTLSServer (cookie exchange), echoes
  every packet; prints ``READY`` once listening, ``PASS <n>`` after n echoes.

Both are run as ``godot3-server --no-window -s <script> --port=.. ...`` with
HOME in the test's directory (Godot writes its user data there).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import HOSTNAME, ServerCert
from exchange import binary_messages
from ours import EchoServer, connect_client, echo_all
from peers import PeerProcess, PeerSet, RecordProperty

from dtlspeer import TLSOptions
from dtlspeer.dtls import PacketPeerDTLS

pytestmark = pytest.mark.interop

SCRIPTS = Path(__file__).parent / "godot"
MESSAGES = 150
GODOT_TIMEOUT_MS = 60_000  # the scripts' own deadline; our waits are longer


def godot_argv(godot: str, script: str, **args: object) -> list[str]:
    return [godot, "--no-window", "-s", str(SCRIPTS / script),
            *(f"--{k}={v}" for k, v in args.items())]


def godot_env(peers: PeerSet) -> dict[str, str]:
    return {"HOME": str(peers.workdir)}


def start_godot_server(peers: PeerSet, godot: str, cert: ServerCert, count: int
                       ) -> tuple[PeerProcess, int]:
    """The Godot echo server on a free 127.0.0.1 port, after it printed READY."""
    def argv(port: int) -> Sequence[str]:
        return godot_argv(godot, "dtls_echo_server.gd", port=port, key=cert.key_path,
                          cert=cert.cert_path, count=count, timeout_ms=GODOT_TIMEOUT_MS)
    return peers.start_server("godot echo server", argv, ready=rb"^(READY|FAIL)",
                              env=godot_env(peers))


def test_godot_client_to_our_server(peers: PeerSet, godot_bin: str, server_cert: ServerCert,
                                    record_property: RecordProperty) -> None:
    """Godot 3.2 PacketPeerDTLS client (certificate and hostname "localhost"
    validated) -> dtlspeer UDPServer + DTLSServer in the Godot-style loop
    (cookie exchange), each server certificate. 150 messages: each one our
    server receives is checked byte for byte, each echo is checked by the
    Godot script, which must print PASS 150 and exit 0."""
    key, cert = server_cert.load()
    server = EchoServer(key, cert)
    try:
        godot = peers.start("godot echo client", godot_argv(
            godot_bin, "dtls_echo_client.gd", port=server.port, cert=server_cert.cert_path,
            host=HOSTNAME, count=MESSAGES, timeout_ms=GODOT_TIMEOUT_MS), env=godot_env(peers))
        verdict = godot.expect(rb"^(PASS|FAIL)\b(.*)", pump=server.pump,
                               timeout=GODOT_TIMEOUT_MS / 1000 + 30)
        assert verdict.group(1) == b"PASS", godot.transcript()
        assert verdict.group(2).strip() == str(MESSAGES).encode()
        assert server.received == [f"msg {i}".encode() for i in range(MESSAGES)]
        assert server.refused >= 1  # the Godot client's cookieless ClientHello
        sessions = [p for p in server.peers if p.get_ciphersuite()]
        assert len(sessions) == 1, server.describe()  # one handshake completed
        peer = sessions[0]
        record_property("suite", peer.get_ciphersuite())
        assert peer.get_ciphersuite().startswith(
            "TLS-ECDHE-ECDSA-" if server_cert.algorithm.startswith("ECDSA") else "TLS-ECDHE-RSA-")
        # The script ends with disconnect_from_peer(): its close_notify arrives.
        server.run_until(lambda: peer.get_status() != PacketPeerDTLS.STATUS_CONNECTED, 20,
                         "the Godot client's close_notify")
        assert peer.get_status() == PacketPeerDTLS.STATUS_DISCONNECTED, peer.get_last_error()
        assert godot.wait(30) == 0
    finally:
        server.close()


def test_our_client_to_godot_server(peers: PeerSet, godot_bin: str, server_cert: ServerCert,
                                    record_property: RecordProperty) -> None:
    """dtlspeer PacketPeerDTLS client (TLSOptions.client(trusted_chain=cert),
    hostname "localhost") -> Godot 3.2 UDPServer + DTLSServer script (cookie
    exchange), each server certificate. 150 binary records of 4 bytes up to
    our largest payload, every echo checked byte for byte; the Godot script
    must count 150 echoes, print PASS and exit 0."""
    godot, port = start_godot_server(peers, godot_bin, server_cert, MESSAGES)
    assert godot.find(rb"^FAIL") is None, godot.transcript()
    _key, cert = server_cert.load()
    udp, dtls = connect_client(port, HOSTNAME, TLSOptions.client(trusted_chain=cert))
    assert dtls.get_ciphersuite().startswith(
        "TLS-ECDHE-ECDSA-" if server_cert.algorithm.startswith("ECDSA") else "TLS-ECDHE-RSA-")
    record_property("suite", dtls.get_ciphersuite())
    echo_all(udp, dtls, binary_messages(MESSAGES, seed=8, max_len=dtls.get_max_packet_size()))
    verdict = godot.expect(rb"^(PASS|FAIL)\b(.*)", timeout=30)
    assert verdict.group(1) == b"PASS", godot.transcript()
    assert verdict.group(2).strip() == str(MESSAGES).encode()
    assert godot.wait(30) == 0
    dtls.disconnect_from_peer()

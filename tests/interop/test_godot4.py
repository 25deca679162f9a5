"""Raw DTLS interop with the Godot 4.8-dev runtime (``../shared/tools/godot4``,
its bundled Mbed TLS 4.1.1), beside Godot 3.2.3 (``test_godot.py``), in both
roles, on both of our APIs, with every server certificate of the matrix:

* ``godot4/dtls_echo_client.gd``: PacketPeerUDP + PacketPeerDTLS with
  ``TLSOptions.client(cert)`` and the name ``localhost`` (certificate and
  name verified), sends ``msg <i>`` one at a time, checks each echo, ends
  with ``disconnect_from_peer()``; prints ``PASS <n>``/``FAIL``.
* ``godot4/dtls_echo_server.gd``: UDPServer + DTLSServer
  (``TLSOptions.server``, the cookie exchange of Godot's documented loop),
  echoes every packet; prints ``READY`` once listening and ``PASS <n>`` only
  after it echoed n packets and our close_notify turned its peer
  ``STATUS_DISCONNECTED``.

Our side verifies too: ``TLSOptions.client(trusted_chain=cert)`` with the
name ``localhost``. Skipped, saying so, when the runtime is absent.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import pytest
from conftest import HOSTNAME, ServerCert, godot4_env, godot4_project
from exchange import binary_messages
from ours import ConnectedEchoServer, EchoServer, connect_client, echo_all
from peers import Deadline, PeerProcess, PeerSet, Pump, RecordProperty, free_udp_port

from dtlspeer import DTLSHost, HostEventType, TLSOptions
from dtlspeer.dtls import PacketPeerDTLS

pytestmark = pytest.mark.interop

SCRIPTS = Path(__file__).parent / "godot4"
MESSAGES = 60
GODOT_TIMEOUT_MS = 60_000  # the scripts' own deadline; our waits are longer


def suite_prefix(cert: ServerCert) -> str:
    return "TLS-ECDHE-ECDSA-" if cert.algorithm.startswith("ECDSA") else "TLS-ECDHE-RSA-"


def godot4_argv(binary: Path, project: Path, script: str, *args: object) -> list[str]:
    return [str(binary), "--headless", "--path", str(project), "--script", f"res://{script}",
            "--", *(str(a) for a in args)]


def start_godot4_client(peers: PeerSet, godot4: Path, port: int, cert: ServerCert
                        ) -> PeerProcess:
    project = godot4_project(peers.workdir, SCRIPTS / "dtls_echo_client.gd")
    return peers.start("godot4 echo client", godot4_argv(
        godot4, project, "dtls_echo_client.gd", port, cert.cert_path, MESSAGES,
        GODOT_TIMEOUT_MS), env=godot4_env(peers.workdir))


def start_godot4_server(peers: PeerSet, godot4: Path, cert: ServerCert
                        ) -> tuple[PeerProcess, int]:
    project = godot4_project(peers.workdir, SCRIPTS / "dtls_echo_server.gd")

    def argv(port: int) -> Sequence[str]:
        return godot4_argv(godot4, project, "dtls_echo_server.gd", port, cert.key_path,
                           cert.cert_path, MESSAGES, GODOT_TIMEOUT_MS)
    godot, port = peers.start_server("godot4 echo server", argv, ready=rb"^(READY|FAIL)",
                                     env=godot4_env(peers.workdir))
    assert godot.find(rb"^FAIL") is None, godot.transcript()
    return godot, port


def expect_pass(godot: PeerProcess, pump: Optional[Pump] = None) -> None:
    """The script's verdict line must be ``PASS <MESSAGES>``; ``pump`` drives
    our side while waiting."""
    verdict = godot.expect(rb"^(PASS|FAIL)\b(.*)", pump=pump,
                           timeout=GODOT_TIMEOUT_MS / 1000 + 30)
    assert verdict.group(1) == b"PASS", godot.transcript()
    assert verdict.group(2).strip() == str(MESSAGES).encode()


# -- Godot 4 client -> our servers ----------------------------------------------------


def check_godot4_echo_session(godot: PeerProcess, server: EchoServer, cert: ServerCert,
                              record_property: RecordProperty) -> PacketPeerDTLS:
    """Serve until the Godot client's verdict: PASS, every message received
    in order, the cookie exchange seen, ONE session with the suite of the
    certificate's key type, ended DISCONNECTED by the client's close_notify."""
    expect_pass(godot, server.pump)
    assert server.received == [f"msg {i}".encode() for i in range(MESSAGES)]
    assert server.refused >= 1  # the cookieless ClientHello
    sessions = [p for p in server.peers if p.get_ciphersuite()]
    assert len(sessions) == 1, server.describe()
    peer = sessions[0]
    record_property("suite", peer.get_ciphersuite())
    assert peer.get_ciphersuite().startswith(suite_prefix(cert))
    server.run_until(lambda: peer.get_status() != PacketPeerDTLS.STATUS_CONNECTED, 20,
                     "the Godot 4 client's close_notify")
    assert peer.get_status() == PacketPeerDTLS.STATUS_DISCONNECTED, peer.get_last_error()
    assert godot.wait(30) == 0
    return peer


def test_godot4_client_to_our_dtls_server(peers: PeerSet, godot4: Path, server_cert: ServerCert,
                                          record_property: RecordProperty) -> None:
    """Godot 4 PacketPeerDTLS (verifying) -> our UDPServer + DTLSServer in the
    Godot-style loop: the cookie exchange, every message checked on both
    ends, and the Godot client's close_notify ends our peer DISCONNECTED."""
    key, cert = server_cert.load()
    server = EchoServer(key, cert)
    try:
        godot = start_godot4_client(peers, godot4, server.port, server_cert)
        check_godot4_echo_session(godot, server, server_cert, record_property)
    finally:
        server.close()


def test_godot4_client_to_our_dtls_host(peers: PeerSet, godot4: Path, server_cert: ServerCert,
                                        record_property: RecordProperty) -> None:
    """Godot 4 PacketPeerDTLS (verifying) -> our DTLSHost echo server: one
    CONNECT, every RECEIVE checked and echoed, then DISCONNECT with reason
    PEER_CLOSED (the Godot client's close_notify)."""
    key, cert = server_cert.load()
    received: list[bytes] = []
    events: list[HostEventType] = []
    reasons = []
    suites: list[str] = []
    with DTLSHost("127.0.0.1", 0, server_options=TLSOptions.server(key, cert)) as host:
        def pump() -> None:
            for event in host.service(0.001):
                events.append(event.type)
                if event.type == HostEventType.CONNECT:
                    suites.append(event.peer.get_ciphersuite())
                elif event.type == HostEventType.RECEIVE:
                    received.append(event.data)
                    event.peer.put_packet(event.data)
                elif event.type == HostEventType.DISCONNECT:
                    reasons.append(event.reason)

        godot = start_godot4_client(peers, godot4, host.get_local_port(), server_cert)
        expect_pass(godot, pump)
        deadline = Deadline(20)
        while not reasons and not deadline.expired():
            pump()
        assert received == [f"msg {i}".encode() for i in range(MESSAGES)]
        assert events.count(HostEventType.CONNECT) == 1, events
        assert len(suites) == 1 and suites[0].startswith(suite_prefix(server_cert))
        record_property("suite", suites[0])
        assert [r.name for r in reasons] == ["PEER_CLOSED"], reasons
        assert godot.wait(30) == 0


# -- our clients -> Godot 4 server ----------------------------------------------------


def test_our_client_to_godot4_server(peers: PeerSet, godot4: Path, server_cert: ServerCert,
                                     record_property: RecordProperty) -> None:
    """Our PacketPeerDTLS (TLSOptions.client(trusted_chain=cert), name
    localhost) -> Godot 4 UDPServer + DTLSServer: binary records of 4 bytes
    up to our largest payload, each echo checked byte for byte; our
    close_notify must end the Godot peer DISCONNECTED before it prints PASS."""
    godot, port = start_godot4_server(peers, godot4, server_cert)
    _key, cert = server_cert.load()
    udp, dtls = connect_client(port, HOSTNAME, TLSOptions.client(trusted_chain=cert))
    assert dtls.get_ciphersuite().startswith(suite_prefix(server_cert))
    assert dtls.get_verify_flags() == 0
    record_property("suite", dtls.get_ciphersuite())
    echo_all(udp, dtls, binary_messages(MESSAGES, seed=4, max_len=dtls.get_max_packet_size()))
    dtls.disconnect_from_peer()
    expect_pass(godot)
    assert godot.wait(30) == 0
    udp.close()


def test_our_dtls_host_client_to_godot4_server(peers: PeerSet, godot4: Path,
                                               server_cert: ServerCert,
                                               record_property: RecordProperty) -> None:
    """Our DTLSHost client (verifying, name localhost) -> Godot 4 UDPServer +
    DTLSServer: CONNECT, then the messages one at a time, each echo checked
    byte for byte; host.disconnect sends close_notify, which the Godot
    script must see before it prints PASS."""
    godot, port = start_godot4_server(peers, godot4, server_cert)
    _key, cert = server_cert.load()
    messages = binary_messages(MESSAGES, seed=5, max_len=1000)
    with DTLSHost(client_options=TLSOptions.client(trusted_chain=cert)) as host:
        peer = host.connect("127.0.0.1", port, hostname=HOSTNAME)
        deadline = Deadline(60)
        echoes: list[bytes] = []
        connected = False
        while len(echoes) < len(messages) and not deadline.expired():
            for event in host.service(0.01):
                assert event.type != HostEventType.DISCONNECT, (event.reason, event.message)
                if event.type == HostEventType.CONNECT:
                    connected = True
                    assert event.peer.get_verify_flags() == 0
                    record_property("suite", event.peer.get_ciphersuite())
                    assert event.peer.get_ciphersuite().startswith(suite_prefix(server_cert))
                    peer.put_packet(messages[0])
                elif event.type == HostEventType.RECEIVE:
                    i = len(echoes)
                    assert event.data == messages[i], f"echo {i}"
                    echoes.append(event.data)
                    if i + 1 < len(messages):
                        peer.put_packet(messages[i + 1])
        assert connected and echoes == messages, (len(echoes), peer.get_last_error())
        host.disconnect(peer)
        host.flush()

        def keep_serving() -> None:
            host.service(0.001)  # a retransmitted close_notify, if any

        expect_pass(godot, keep_serving)
    assert godot.wait(30) == 0


def test_godot4_client_refuses_a_certificate_it_does_not_trust(
        peers: PeerSet, godot4: Path, server_certs: dict[str, ServerCert]) -> None:
    """The Godot 4 client above really verifies: trusting the ECDSA
    certificate while our server presents the RSA one, its handshake fails
    (STATUS_ERROR) and it never sends a message."""
    key, cert = server_certs["rsa2048/ours"].load()
    server = EchoServer(key, cert)
    try:
        godot = start_godot4_client(peers, godot4, server.port, server_certs["ecdsa-p256/ours"])
        verdict = godot.expect(rb"^(PASS|FAIL)\b(.*)", pump=server.pump,
                               timeout=GODOT_TIMEOUT_MS / 1000 + 30)
        assert verdict.group(1) == b"FAIL", godot.transcript()
        assert b"handshake ended with status 3" in verdict.group(2), godot.transcript()
        assert server.received == []
        assert godot.wait(30) == 1
    finally:
        server.close()


def test_godot4_client_to_our_server_on_a_connected_socket(
        peers: PeerSet, godot4: Path, server_cert: ServerCert,
        record_property: RecordProperty) -> None:
    """Both ends of a NAT punch: the Godot 4 client binds a known port and
    connects its PacketPeerUDP to ours; our DTLSServer serves our one
    connected PacketPeerUDP (take_connection of a connected peer, as Godot
    allows): the cookie exchange, every message checked on both ends, and
    the Godot client's close_notify ends our peer DISCONNECTED."""
    key, cert = server_cert.load()
    client_port = free_udp_port()
    server = ConnectedEchoServer(key, cert, client_port)
    try:
        project = godot4_project(peers.workdir, SCRIPTS / "dtls_echo_client.gd")
        godot = peers.start("godot4 echo client (bound)", godot4_argv(
            godot4, project, "dtls_echo_client.gd", server.port, server_cert.cert_path, MESSAGES,
            GODOT_TIMEOUT_MS, client_port), env=godot4_env(peers.workdir))
        peer = check_godot4_echo_session(godot, server, server_cert, record_property)
        assert server.peers == [peer]  # on our one socket, connected to the Godot port
    finally:
        server.close()

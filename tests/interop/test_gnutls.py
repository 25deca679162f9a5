"""Interop with GnuTLS's command-line tools (``gnutls-serv --udp`` and
``gnutls-cli --udp``, DTLS 1.2).

How the tools are driven (GnuTLS 3.7):

* ``gnutls-serv --udp --echo --crlf -p P``: a DTLS echo server with a cookie
  exchange (on by default; ``--nocookie`` turns it off). It prints
  ``UDP Echo Server listening on IPv4 0.0.0.0 port P...done`` on stderr
  (when not on a terminal) once bound
  (it has no bind-address option: it listens on 0.0.0.0 and ::, our traffic
  uses 127.0.0.1 only), and echoes what it receives: binary-safe (NUL
  included) with ``--crlf`` (without it, CRLF becomes LF), but in chunks of
  at most 254 bytes, so a larger record comes back as several records. It
  does not print the negotiated suite in echo mode.
* ``gnutls-cli --udp -p P --x509cafile CA --verify-hostname NAME 127.0.0.1``:
  prints ``- Description: (DTLS1.2-X.509)-(kx)-(sig)-(cipher)`` and
  ``- Handshake was completed`` on stdout, then everything it receives.
  It sends what it reads from stdin as one record per read, so the test
  writes one line at a time and waits for its echo.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Optional

import pytest
from conftest import HOSTNAME, ServerCert
from exchange import binary_messages, text_messages
from ours import EchoServer, connect_client, echo_all, receive
from peers import PeerProcess, PeerSet, Pump, RecordProperty

from dtlspeer import TLSOptions

pytestmark = pytest.mark.interop

MESSAGES = 120
#: gnutls-serv --udp --echo reads records into a buffer of this many bytes and
#: echoes each read as one record (a tool fact found by these tests).
GNUTLS_SERV_ECHO_CHUNK = 254


def start_gnutls_serv(
    peers: PeerSet, gnutls_serv: str, cert: ServerCert
) -> tuple[PeerProcess, int]:
    """``gnutls-serv`` DTLS echo server (cookie exchange on) on a free port, ready."""
    def argv(port: int) -> Sequence[str]:
        return [gnutls_serv, "--udp", "--echo", "--crlf", "-p", str(port),
                "--x509keyfile", str(cert.key_path), "--x509certfile", str(cert.cert_path)]
    return peers.start_server("gnutls-serv", argv,
                              ready=rb"^UDP Echo Server listening on IPv4 .*done", stream="stderr")


def start_gnutls_cli(peers: PeerSet, gnutls_cli: str, port: int, ca: Optional[ServerCert],
                     hostname: str = HOSTNAME, extra: Sequence[str] = ()) -> PeerProcess:
    """``gnutls-cli --udp`` to 127.0.0.1:port, verifying the chain against
    ``ca`` and the name ``hostname`` (``ca=None``: ``--insecure``), plus
    ``extra`` options."""
    argv = [gnutls_cli, "--udp", "-p", str(port), *extra]
    if ca is None:
        argv.append("--insecure")
    else:
        argv += ["--x509cafile", str(ca.cert_path), f"--verify-hostname={hostname}"]
    return peers.start("gnutls-cli", [*argv, "127.0.0.1"])


_DESCRIPTION = re.compile(rb"^- Description: \((DTLS[0-9.]+)-X\.509\)-\(([^)]+)\)-\(([^)]+)\)"
                          rb"-\(([^)]+)\)")


def gnutls_cli_handshake(cli: PeerProcess, pump: Optional[Pump] = None
                         ) -> tuple[str, str, str, str]:
    """Wait for gnutls-cli's handshake report: (protocol, key exchange,
    signature, cipher), calling ``pump`` meanwhile. Fails on a verification
    error (the tool then exits)."""
    cli.expect(rb"^- Status: The certificate is trusted", pump=pump)
    m = cli.expect(_DESCRIPTION, pump=pump)
    cli.expect(rb"^- Handshake was completed", pump=pump)
    cli.expect(rb"^- Simple Client Mode:", pump=pump)
    protocol, kx, sig, cipher = (g.decode() for g in m.groups())
    return protocol, kx, sig, cipher


def gnutls_cli_record(cli: PeerProcess, pump: Optional[Pump] = None) -> bytes:
    """The next non-empty line gnutls-cli printed (a received record)."""
    while True:
        line = cli.next_line(pump=pump)
        if line != b"\n":
            return line


def _expected_sig(cert: ServerCert) -> str:
    return "ECDSA" if cert.algorithm.startswith("ECDSA") else "RSA"


def test_harness_gnutls_vs_gnutls(peers: PeerSet, gnutls_serv_bin: str, gnutls_cli_bin: str,
                                  server_cert: ServerCert, record_property: RecordProperty,
                                  ) -> None:
    """Harness self-check, no dtlspeer on the wire: gnutls-cli -> gnutls-serv
    --echo (cookie exchange), DTLS 1.2, with each server certificate of the
    matrix. Proves the harness and that GnuTLS's verifier accepts the
    certificate for "localhost"; 40 lines echoed and checked."""
    _srv, port = start_gnutls_serv(peers, gnutls_serv_bin, server_cert)
    cli = start_gnutls_cli(peers, gnutls_cli_bin, port, server_cert)
    protocol, kx, sig, cipher = gnutls_cli_handshake(cli)
    record_property("suite", f"({protocol})-({kx})-({sig})-({cipher})")
    assert protocol == "DTLS1.2"
    assert sig.startswith(_expected_sig(server_cert))
    for msg in text_messages(40, seed=2):
        cli.write(msg)
        assert gnutls_cli_record(cli) == msg


# -- dtlspeer client -> gnutls-serv ------------------------------------------------

def test_our_client_to_gnutls_serv(peers: PeerSet, gnutls_serv_bin: str,
                                   server_cert: ServerCert, record_property: RecordProperty,
                                   ) -> None:
    """dtlspeer PacketPeerDTLS client -> gnutls-serv --udp --echo (cookie
    exchange), DTLS 1.2, each server certificate, verified by our client
    (TLSOptions.client(trusted_chain=cert), hostname "localhost"). 150 binary
    records of 4..254 bytes (every byte value, NUL/CR/LF included) echoed
    one for one and checked byte for byte, then 10 records up to our largest
    payload (get_max_packet_size(): 1163 with the default 1200-byte MTU),
    whose echo gnutls-serv splits into 254-byte records, reassembled and
    checked; our negotiated suite uses the certificate's key."""
    _srv, port = start_gnutls_serv(peers, gnutls_serv_bin, server_cert)
    _key, cert = server_cert.load()
    udp, dtls = connect_client(port, HOSTNAME, TLSOptions.client(trusted_chain=cert))
    suite = dtls.get_ciphersuite()
    assert suite.startswith(f"TLS-ECDHE-{_expected_sig(server_cert)}-WITH-"), suite
    record_property("suite", suite)
    # gnutls-serv echoes what one read of its 254-byte buffer returns: records
    # up to 254 bytes come back whole, one record each...
    echo_all(udp, dtls, binary_messages(150, seed=6, max_len=GNUTLS_SERV_ECHO_CHUNK))
    # ...a larger one comes back as several records of at most 254 bytes.
    for i, msg in enumerate(binary_messages(10, seed=7, max_len=dtls.get_max_packet_size())):
        dtls.put_packet(msg)
        echoed = b""
        while len(echoed) < len(msg):
            record = receive(udp, dtls)
            assert 0 < len(record) <= GNUTLS_SERV_ECHO_CHUNK
            echoed += record
        assert echoed == msg, f"large echo {i}"
    dtls.disconnect_from_peer()


# -- gnutls-cli -> dtlspeer server ---------------------------------------------------

def test_gnutls_cli_to_our_server(peers: PeerSet, gnutls_cli_bin: str,
                                  server_cert: ServerCert, record_property: RecordProperty,
                                  ) -> None:
    """gnutls-cli --udp -> dtlspeer UDPServer + DTLSServer (Godot-style loop,
    cookie exchange), DTLS 1.2, each server certificate, which gnutls-cli
    verifies for "localhost". 120 text records sent, echoed by our server and
    checked byte for byte on both sides; the suite gnutls-cli prints (key
    exchange, signature, cipher) is the one our peer negotiated."""
    key, cert = server_cert.load()
    server = EchoServer(key, cert)
    try:
        cli = start_gnutls_cli(peers, gnutls_cli_bin, server.port, server_cert)
        protocol, kx, sig, cipher = gnutls_cli_handshake(cli, pump=server.pump)
        assert protocol == "DTLS1.2"
        assert kx.startswith("ECDHE-")
        assert sig.startswith(_expected_sig(server_cert))
        server.run_until(lambda: len(server.connected()) == 1, 10, "one connected peer")
        assert server.refused >= 1  # the cookieless first ClientHello
        ours = server.connected()[0].get_ciphersuite()
        assert ours.startswith(f"TLS-ECDHE-{_expected_sig(server_cert)}-WITH-{cipher}-"), \
            (ours, cipher)
        record_property("suite", f"({protocol})-({kx})-({sig})-({cipher}) = {ours}")
        messages = text_messages(MESSAGES, seed=7)
        for msg in messages:
            cli.write(msg)
            assert gnutls_cli_record(cli, pump=server.pump) == msg
        assert server.received == messages
    finally:
        server.close()

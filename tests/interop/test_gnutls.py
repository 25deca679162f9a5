"""Interop with GnuTLS's command-line tools (``gnutls-serv --udp`` and
``gnutls-cli --udp``, DTLS 1.2).

How the tools are driven (GnuTLS 3.7):

* ``gnutls-serv --udp --echo --crlf -p P``: a DTLS echo server with a cookie
  exchange (on by default; ``--nocookie`` turns it off). It prints
  ``UDP Echo Server listening on IPv4 0.0.0.0 port P...done`` once bound
  (it has no bind-address option: it listens on 0.0.0.0 and ::, our traffic
  uses 127.0.0.1 only), and echoes every record back as one record. Without
  ``--crlf`` it rewrites CRLF to LF; with it the echo is byte-exact. It does
  not print the negotiated suite in echo mode.
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
from exchange import text_messages
from peers import PeerProcess, PeerSet, Pump

pytestmark = pytest.mark.interop

MESSAGES = 120


def start_gnutls_serv(peers: PeerSet, gnutls_serv: str, cert: ServerCert) -> tuple[PeerProcess, int]:
    """``gnutls-serv`` DTLS echo server (cookie exchange on) on a free port, ready."""
    def argv(port: int) -> Sequence[str]:
        return [gnutls_serv, "--udp", "--echo", "--crlf", "-p", str(port),
                "--x509keyfile", str(cert.key_path), "--x509certfile", str(cert.cert_path)]
    return peers.start_server("gnutls-serv", argv,
                              ready=rb"^UDP Echo Server listening on IPv4 .*done", stream="stderr")


def start_gnutls_cli(peers: PeerSet, gnutls_cli: str, port: int, ca: Optional[ServerCert],
                     hostname: str = HOSTNAME) -> PeerProcess:
    """``gnutls-cli --udp`` to 127.0.0.1:port, verifying the chain against
    ``ca`` and the name ``hostname`` (``ca=None``: ``--insecure``)."""
    argv = [gnutls_cli, "--udp", "-p", str(port)]
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
                                  server_cert: ServerCert) -> None:
    """Harness self-check, no dtlspeer on the wire: gnutls-cli -> gnutls-serv
    --echo (cookie exchange), DTLS 1.2, with each server certificate of the
    matrix. Proves the harness and that GnuTLS's verifier accepts the
    certificate for "localhost"; 40 lines echoed and checked."""
    _srv, port = start_gnutls_serv(peers, gnutls_serv_bin, server_cert)
    cli = start_gnutls_cli(peers, gnutls_cli_bin, port, server_cert)
    protocol, _kx, sig, _cipher = gnutls_cli_handshake(cli)
    assert protocol == "DTLS1.2"
    assert sig.startswith(_expected_sig(server_cert))
    for msg in text_messages(40, seed=2):
        cli.write(msg)
        assert gnutls_cli_record(cli) == msg

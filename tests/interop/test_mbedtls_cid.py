"""RFC 9146 Connection ID against Mbed TLS's own test programs (issue 14 §2).

``ssl_client2`` and ``ssl_server2`` are built by the ``mbedtls_programs``
fixture from the pinned, hash-verified release tarball (vendor/, the same
one the extension is built from) with Mbed TLS's default configuration
(MBEDTLS_SSL_DTLS_CONNECTION_ID on, RFC 9146 format): a CID peer we did not
write. Built once into a temporary directory, cached under build/ by the
tarball's SHA-256; skipped with the reason when the tarball, cmake or a
compiler is missing or the build fails.

Both roles: our DTLSHost server against ssl_client2 (which chooses its own
CID, so both directions carry one), and our DTLSHost client (zero-length
CID, as our clients offer by default when enabled) against ssl_server2 with
a chosen CID. Each side must report the other's CID value.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import pytest
from peers import Deadline, PeerSet

from dtlspeer import DTLSHost, DTLSSettings, HostEventType, HostPeer, PacketPeerDTLS

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]
PSK_IDENTITY = b"Client_identity"
PSK_KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
SUITE = "TLS-PSK-WITH-AES-128-GCM-SHA256"
Status = PacketPeerDTLS.Status


def _tarball() -> Path | None:
    found = sorted((ROOT / "vendor").glob("mbedtls-*.tar.bz2"))
    return found[-1] if found else None


@pytest.fixture(scope="session")
def mbedtls_programs() -> Path:
    """Directory holding ssl_client2 and ssl_server2 (see the module notes)."""
    tarball = _tarball()
    if tarball is None:
        pytest.skip("no Mbed TLS release tarball in vendor/ (python build_mbedtls.py fetches it)")
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()[:16]
    cache = ROOT / "build" / "interop-mbedtls-programs" / digest
    if (cache / "ssl_client2").exists() and (cache / "ssl_server2").exists():
        return cache
    cmake, cc = shutil.which("cmake"), shutil.which("cc") or shutil.which("gcc")
    if cmake is None or cc is None:
        pytest.skip("building ssl_client2/ssl_server2 needs cmake and a C compiler")
    with tempfile.TemporaryDirectory(prefix="mbedtls-programs-") as tmp:
        work = Path(tmp)
        with tarfile.open(tarball, "r:bz2") as tar:
            tar.extractall(work, filter="data")
        src = next(p for p in work.iterdir() if p.is_dir())
        try:
            subprocess.run(
                [cmake, "-S", str(src), "-B", str(work / "b"), "-DCMAKE_BUILD_TYPE=Release",
                 "-DENABLE_TESTING=OFF", "-DMBEDTLS_FATAL_WARNINGS=OFF"],
                check=True, capture_output=True, timeout=300)
            subprocess.run(
                [cmake, "--build", str(work / "b"), "-j2", "--target", "ssl_client2",
                 "ssl_server2"],
                check=True, capture_output=True, timeout=900)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            out = getattr(exc, "stderr", b"") or b""
            pytest.skip(f"could not build Mbed TLS's programs: {exc}: {out[-500:]!r}")
        cache.mkdir(parents=True, exist_ok=True)
        for name in ("ssl_client2", "ssl_server2"):
            shutil.copy2(work / "b" / "programs" / "ssl" / name, cache / name)
    return cache


def test_our_server_with_mbedtls_client(mbedtls_programs: Path, peers: PeerSet) -> None:
    """ssl_client2 (cid=1, its own 4-byte CID) against a DTLSHost server:
    CIDs negotiated both ways, the request arrives, our reply arrives."""
    host = DTLSHost("127.0.0.1", 0, server_psk={PSK_IDENTITY: PSK_KEY})
    port = host.get_local_port()
    connected: list[HostPeer] = []
    requests: list[bytes] = []

    def pump() -> None:
        for event in host.service(0):
            if event.type == HostEventType.CONNECT:
                connected.append(event.peer)
            elif event.type == HostEventType.RECEIVE:
                requests.append(event.data)
                event.peer.put_packet(b"HTTP/1.0 200 OK\r\n\r\ncid interop reply\r\n")
                host.flush()

    try:
        client = peers.start("ssl_client2", [
            str(mbedtls_programs / "ssl_client2"), "dtls=1", "server_addr=127.0.0.1",
            f"server_port={port}", f"psk={PSK_KEY.hex()}", f"psk_identity={PSK_IDENTITY.decode()}",
            f"force_ciphersuite={SUITE}", "cid=1", "cid_val=c1d2c3d4", "exchanges=1",
            "hs_timeout=250-4000", "read_timeout=5000", "auth_mode=none",
        ])
        m = client.expect(rb"Peer CID \(length (\d+) Bytes\): ([0-9a-f ]*)", pump=pump)
        assert int(m.group(1)) == 6
        server_cid = bytes.fromhex(m.group(2).decode())
        client.expect(rb"cid interop reply", pump=pump)
        assert connected and requests and requests[0].startswith(b"GET ")
        assert connected[0].get_connection_id() == (server_cid, bytes.fromhex("c1d2c3d4"))
        assert client.wait(10) == 0, client.transcript()
    finally:
        host.close()


def test_our_client_with_mbedtls_server(mbedtls_programs: Path, peers: PeerSet) -> None:
    """A DTLSHost client asking for a (zero-length) CID against ssl_server2
    (cid=1 with its own CID): negotiated, records both ways."""
    server, port = peers.start_server(
        "ssl_server2",
        lambda p: [
            str(mbedtls_programs / "ssl_server2"), "dtls=1", "server_addr=127.0.0.1",
            f"server_port={p}", f"psk={PSK_KEY.hex()}", f"psk_identity={PSK_IDENTITY.decode()}",
            f"force_ciphersuite={SUITE}", "cid=1", "cid_val=5e5e5e5e5e", "exchanges=1",
            "hs_timeout=250-4000", "read_timeout=5000", "auth_mode=none",
        ],
        ready=rb"Bind on udp://.* ok",
    )
    client = DTLSHost(client_psk=(PSK_IDENTITY, PSK_KEY),
                      settings=DTLSSettings(connection_id=True))
    try:
        peer = client.connect("127.0.0.1", port)
        replies: list[bytes] = []

        def pump() -> None:
            for event in client.service(0):
                if event.type == HostEventType.CONNECT:
                    peer.put_packet(b"GET / HTTP/1.0\r\n\r\n")
                elif event.type == HostEventType.RECEIVE:
                    replies.append(event.data)

        server.expect(rb"Use of Connection ID has been negotiated", pump=pump)
        m = server.expect(rb"Peer CID \(length (\d+) Bytes\)", pump=pump)
        assert int(m.group(1)) == 0  # our zero-length CID
        deadline = Deadline(10)
        while not replies and not deadline.expired():  # (the server's Finished may still fly)
            pump()
            time.sleep(0.002)
        assert peer.get_connection_id() == (b"", bytes.fromhex("5e5e5e5e5e"))
        assert replies and b"Mbed TLS Test Server" in b"".join(replies)
        assert peer.get_status() in (Status.STATUS_CONNECTED, Status.STATUS_DISCONNECTED)
    finally:
        client.close()

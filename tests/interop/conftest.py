"""Fixtures for the interop tests: the peer-process set (always stopped in a
finalizer), the tool binaries (skip only when absent) and the server
certificates every matrix row uses."""

from __future__ import annotations

import hashlib
import lzma
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from peers import PeerSet, require_tool

from dtlspeer import Crypto, CryptoKey, X509Certificate

#: The name every server certificate carries (CN and SAN), plus SAN IP 127.0.0.1.
HOSTNAME = "localhost"
SUBJECT = "CN=localhost,O=dtlspeer interop,C=IT"


@dataclass(frozen=True)
class ServerCert:
    """A server key + self-signed certificate on disk (PEM)."""

    label: str  # matrix label, e.g. "ecdsa-p256/ours"
    algorithm: str  # "ECDSA P-256" or "RSA-2048"
    maker: str  # "dtlspeer Crypto" or "openssl"
    key_path: Path
    cert_path: Path

    def load(self) -> tuple[CryptoKey, X509Certificate]:
        """Fresh dtlspeer objects loaded from the PEM files."""
        key = CryptoKey()
        key.load(str(self.key_path))
        cert = X509Certificate()
        cert.load(str(self.cert_path))
        return key, cert


def _ours(d: Path, label: str, algorithm: str) -> ServerCert:
    crypto = Crypto()
    key = crypto.generate_ec("P-256") if algorithm == "ECDSA P-256" else crypto.generate_rsa(2048)
    cert = crypto.generate_self_signed_certificate(
        key, SUBJECT, "20240101000000", "20440101000000",
        dns_names=[HOSTNAME], ip_addresses=["127.0.0.1"])
    stem = label.replace("/", "-")
    key_path, cert_path = d / f"{stem}.key", d / f"{stem}.crt"
    key.save(str(key_path))
    cert.save(str(cert_path))
    return ServerCert(label, algorithm, "dtlspeer Crypto", key_path, cert_path)


def _openssl(d: Path, openssl: str) -> ServerCert:
    key_path, cert_path = d / "ecdsa-p256-openssl.key", d / "ecdsa-p256-openssl.crt"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key_path), "-out", str(cert_path), "-days", "30",
         "-subj", "/CN=localhost/O=dtlspeer interop (openssl)",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-addext", "basicConstraints=critical,CA:FALSE",
         "-addext", "keyUsage=critical,digitalSignature",
         "-addext", "extendedKeyUsage=serverAuth"],
        check=True, capture_output=True, timeout=60)
    return ServerCert("ecdsa-p256/openssl", "ECDSA P-256", "openssl", key_path, cert_path)


@pytest.fixture(scope="session")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("interop-certs")


@pytest.fixture(scope="session")
def server_certs(cert_dir: Path) -> dict[str, ServerCert]:
    """The certificates dtlspeer's Crypto makes, by label (the openssl-made one
    is the ``openssl_cert`` fixture: it needs the openssl binary)."""
    return {
        "ecdsa-p256/ours": _ours(cert_dir, "ecdsa-p256/ours", "ECDSA P-256"),
        "rsa2048/ours": _ours(cert_dir, "rsa2048/ours", "RSA-2048"),
    }


@pytest.fixture(scope="session")
def openssl_cert(cert_dir: Path) -> ServerCert:
    """ECDSA P-256 key (PKCS#8) and CA:FALSE serverAuth leaf made by openssl."""
    return _openssl(cert_dir, require_tool("openssl"))


CERT_LABELS = ["ecdsa-p256/ours", "rsa2048/ours", "ecdsa-p256/openssl"]


@pytest.fixture(params=CERT_LABELS)
def server_cert(request: pytest.FixtureRequest, server_certs: dict[str, ServerCert]) -> ServerCert:
    """Each server certificate of the matrix in turn."""
    label: str = request.param
    if label == "ecdsa-p256/openssl":
        cert: ServerCert = request.getfixturevalue("openssl_cert")
        return cert
    return server_certs[label]


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[PeerSet]:
    """The processes this test starts; all stopped by pid when it ends."""
    ps = PeerSet(tmp_path)
    try:
        yield ps
    finally:
        ps.stop_all()


@pytest.fixture(scope="session")
def openssl_bin() -> str:
    return require_tool("openssl")


@pytest.fixture(scope="session")
def gnutls_serv_bin() -> str:
    return require_tool("gnutls-serv")


@pytest.fixture(scope="session")
def gnutls_cli_bin() -> str:
    return require_tool("gnutls-cli")


@pytest.fixture(scope="session")
def godot_bin() -> str:
    return require_tool("godot3-server")


# -- Godot 4 (the headless 4.8-dev runtime of ../shared/tools/godot4) ------------

GODOT4_DIR = Path(__file__).resolve().parents[3] / "shared" / "tools" / "godot4"


def _godot4_sha(name: str) -> str:
    for line in (GODOT4_DIR / "SHA256SUMS").read_text().splitlines():
        digest, _, file = line.partition("  ")
        if file.strip() == name:
            return digest
    raise AssertionError(f"{name} not in SHA256SUMS")


@pytest.fixture(scope="session")
def godot4() -> Path:
    """The Godot 4 runtime, unpacked once into ~/.cache/dtlspeer-tests after
    checking its SHA-256; skips when ../shared/tools/godot4 is absent (a
    user's clone has no ../shared)."""
    packed = GODOT4_DIR / "godot4-headless.xz"
    if not packed.is_file():
        pytest.skip(f"no Godot 4 runtime at {GODOT4_DIR}")
    want = _godot4_sha("godot4-headless")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dtlspeer-tests"
    binary = cache / f"godot4-{want[:16]}"
    if not binary.is_file() or hashlib.sha256(binary.read_bytes()).hexdigest() != want:
        cache.mkdir(parents=True, exist_ok=True)
        data = lzma.decompress(packed.read_bytes())
        assert hashlib.sha256(data).hexdigest() == want, "godot4-headless checksum mismatch"
        partial = binary.with_suffix(".partial")
        partial.write_bytes(data)
        partial.chmod(0o755)
        partial.replace(binary)
    return binary


def godot4_project(tmp_path: Path, script: Path) -> Path:
    """A throw-away Godot 4 project holding ``script`` (README of the runtime)."""
    project = tmp_path / "project"
    (project / ".godot").mkdir(parents=True)
    (project / "project.godot").write_text("config_version=5\n")
    (project / ".godot" / "global_script_class_cache.cfg").write_text("list=[]\n")
    shutil.copy(script, project / script.name)
    return project


def godot4_env(tmp_path: Path) -> dict[str, str]:
    """Godot writes user:// data under HOME/XDG_*: keep it in the test's directory."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = dict(os.environ, HOME=str(home), XDG_DATA_HOME=str(home), XDG_CONFIG_HOME=str(home),
               XDG_CACHE_HOME=str(home))  # fmt: skip
    env.pop("LD_PRELOAD", None)  # not our process: no sanitizer runtime
    return env

"""Keys and certificates made by the real ``openssl`` CLI, for the crypto tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


def openssl(*args: str, cwd: Path, input: bytes | None = None) -> bytes:
    """Run openssl in cwd; fail the test with its stderr if it fails."""
    proc = subprocess.run([OPENSSL, *args], cwd=cwd, input=input, capture_output=True,
                          timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"openssl {' '.join(args)} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def make_material(d: Path) -> Path:
    """Create every openssl-made file the tests use in ``d`` and return it."""
    o = lambda *a: openssl(*a, cwd=d)  # noqa: E731
    o("genrsa", "-traditional", "-out", "rsa_pkcs1.pem", "2048")
    o("pkcs8", "-topk8", "-nocrypt", "-in", "rsa_pkcs1.pem", "-out", "rsa_pkcs8.pem")
    o("rsa", "-traditional", "-in", "rsa_pkcs1.pem", "-outform", "DER", "-out", "rsa_pkcs1.der")
    o("pkcs8", "-topk8", "-nocrypt", "-in", "rsa_pkcs1.pem", "-outform", "DER", "-out",
      "rsa_pkcs8.der")
    o("pkey", "-in", "rsa_pkcs1.pem", "-pubout", "-out", "rsa_pub.pem")
    o("pkey", "-in", "rsa_pkcs1.pem", "-pubout", "-outform", "DER", "-out", "rsa_pub.der")
    o("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ec256_sec1.pem")
    o("pkcs8", "-topk8", "-nocrypt", "-in", "ec256_sec1.pem", "-out", "ec256_pkcs8.pem")
    o("ec", "-in", "ec256_sec1.pem", "-outform", "DER", "-out", "ec256_sec1.der")
    o("pkey", "-in", "ec256_sec1.pem", "-pubout", "-outform", "DER", "-out", "ec256_pub.der")
    o("ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", "ec384_sec1.pem")
    o("pkey", "-in", "ec384_sec1.pem", "-pubout", "-outform", "DER", "-out", "ec384_pub.der")
    # Unsupported and encrypted keys.
    o("genpkey", "-algorithm", "ed25519", "-out", "ed25519.pem")
    o("ecparam", "-name", "secp256k1", "-genkey", "-noout", "-out", "secp256k1.pem")
    o("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-passout", "pass:secret", "-in",
      "ec256_sec1.pem", "-out", "enc_pkcs8.pem")
    o("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-passout", "pass:secret", "-in",
      "ec256_sec1.pem", "-outform", "DER", "-out", "enc_pkcs8.der")
    o("rsa", "-traditional", "-aes256", "-passout", "pass:secret", "-in", "rsa_pkcs1.pem",
      "-out", "enc_legacy.pem")
    # A three-certificate chain: root CA -> intermediate CA -> leaf with SANs.
    (d / "ca.ext").write_text(
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")
    (d / "leaf.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "subjectAltName=DNS:game.example.test,DNS:*.example.test,IP:127.0.0.1,IP:::1\n")
    o("req", "-x509", "-new", "-key", "rsa_pkcs1.pem", "-subj", "/CN=Test Root/O=dtlspeer",
      "-days", "30", "-addext", "basicConstraints=critical,CA:TRUE",
      "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", "root.pem")
    o("req", "-new", "-key", "ec384_sec1.pem", "-subj", "/CN=Test Intermediate/O=dtlspeer",
      "-out", "inter.csr")
    o("x509", "-req", "-in", "inter.csr", "-CA", "root.pem", "-CAkey", "rsa_pkcs1.pem",
      "-set_serial", "4660", "-days", "30", "-extfile", "ca.ext", "-out", "inter.pem")
    o("req", "-new", "-key", "ec256_sec1.pem", "-subj", "/CN=game.example.test/O=dtlspeer/C=IT",
      "-out", "leaf.csr")
    o("x509", "-req", "-in", "leaf.csr", "-CA", "inter.pem", "-CAkey", "ec384_sec1.pem",
      "-set_serial", "0x0123456789abcdef", "-days", "30", "-extfile", "leaf.ext",
      "-out", "leaf.pem")
    o("x509", "-in", "leaf.pem", "-outform", "DER", "-out", "leaf.der")
    chain = b"".join((d / n).read_bytes() for n in ("leaf.pem", "inter.pem", "root.pem"))
    (d / "chain.pem").write_bytes(chain)
    return d

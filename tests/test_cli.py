"""The command line: ``python -m dtlspeer info`` and ``gen-cert``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dtlspeer import CryptoKey, X509Certificate, ciphersuites


def dtlspeer_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dtlspeer", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_info_reports_the_pinned_mbedtls_and_the_suites() -> None:
    proc = dtlspeer_cli("info")
    assert proc.returncode == 0, proc.stderr
    assert "Mbed TLS 3.6.7" in proc.stdout
    for suite in ciphersuites():
        assert suite in proc.stdout
    assert "threading:" in proc.stdout


@pytest.mark.parametrize(
    ("host", "san"), [("game.example", ("DNS", "game.example")), ("::1", ("IP Address", "::1"))]
)
def test_gen_cert_writes_a_key_and_a_matching_certificate(
    tmp_path: Path, host: str, san: tuple[str, str]
) -> None:
    key_path, cert_path = tmp_path / "k.pem", tmp_path / "c.pem"
    proc = dtlspeer_cli("gen-cert", host, "--key-out", str(key_path), "--cert-out", str(cert_path))
    assert proc.returncode == 0, proc.stderr
    assert key_path.stat().st_mode & 0o077 == 0  # private key not readable by others
    cert = X509Certificate()
    cert.load(cert_path)
    key = CryptoKey()
    key.load(key_path)
    assert san in cert.subject_alt_names
    assert f"CN={host}" in cert.subject
    assert cert.public_key.save_to_string(public_only=True) == key.save_to_string(public_only=True)
    openssl = shutil.which("openssl")
    if openssl:
        check = subprocess.run([openssl, "verify", "-CAfile", str(cert_path), str(cert_path)],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr


def test_gen_cert_defaults_to_host_named_files(tmp_path: Path) -> None:
    proc = dtlspeer_cli("gen-cert", "127.0.0.1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "127.0.0.1.key").is_file() and (tmp_path / "127.0.0.1.crt").is_file()


@pytest.mark.parametrize(
    "args",
    [
        ["gen-cert", "h", "--days", "0"],
        ["gen-cert", "h", "--key-type", "dsa"],
        ["gen-cert"],
        ["bogus"],
        [],
    ],
)
def test_bad_command_lines_fail_with_usage(args: list[str]) -> None:
    proc = dtlspeer_cli(*args)
    assert proc.returncode == 2
    assert "usage:" in proc.stderr


def test_unwritable_output_is_a_clear_error(tmp_path: Path) -> None:
    proc = dtlspeer_cli("gen-cert", "h", "--key-out", str(tmp_path / "missing" / "k.pem"))
    assert proc.returncode == 1
    assert proc.stderr.startswith("error:") and "No such file or directory" in proc.stderr


def test_demo_echoes_and_passes() -> None:
    proc = dtlspeer_cli("demo", "--clients", "3", "--messages", "20", "--timeout", "60")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1].startswith("PASS 3 clients x 20 messages")
    assert any("handshakes/s" in line for line in lines)
    assert any("60 round trips" in line and "round trips/s" in line for line in lines)


def test_demo_rejects_zero_clients() -> None:
    proc = dtlspeer_cli("demo", "--clients", "0")
    assert proc.returncode == 2
    assert "must be at least 1" in proc.stderr

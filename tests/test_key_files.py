"""Private key files (CryptoKey.save, ``gen-cert``): created 0600 through a
temporary file in the target's directory and renamed in (never through a
symlink, never widening an existing file's permissions), the CLI refusing
to overwrite without --force and to write key and certificate to one file;
``gen-cert`` date and name arguments; RDN strings of the Python API."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dtlspeer import Crypto, CryptoKey, X509Certificate, errors
from test_cli import dtlspeer_cli

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions and symlinks")


@pytest.fixture(scope="module")
def key() -> CryptoKey:
    return Crypto().generate_ec("P-256")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@posix_only
def test_save_over_a_world_readable_file_leaves_the_key_private(
    key: CryptoKey, tmp_path: Path
) -> None:
    path = tmp_path / "server.key"
    path.write_text("old")
    path.chmod(0o644)
    key.save(path)
    assert mode(path) == 0o600
    assert CryptoKey().load(path) is None  # a key, whole
    assert [p.name for p in tmp_path.iterdir()] == ["server.key"]  # no temporary left behind


@posix_only
def test_save_replaces_a_symlink_instead_of_writing_through_it(
    key: CryptoKey, tmp_path: Path
) -> None:
    target = tmp_path / "elsewhere.txt"
    target.write_text("not yours")
    target.chmod(0o644)
    link = tmp_path / "server.key"
    link.symlink_to(target)
    key.save(link)
    assert target.read_text() == "not yours"
    assert not link.is_symlink() and mode(link) == 0o600


@posix_only
def test_public_files_keep_their_usual_mode(key: CryptoKey, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        key.save(tmp_path / "pub.pem", public_only=True)
    finally:
        os.umask(old)
    assert mode(tmp_path / "pub.pem") == 0o644


def test_save_into_a_missing_directory_is_an_oserror(key: CryptoKey, tmp_path: Path) -> None:
    with pytest.raises(OSError):
        key.save(tmp_path / "missing" / "k.pem")
    assert not (tmp_path / "missing").exists()


# ---- gen-cert ---------------------------------------------------------------------------------


def test_gen_cert_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    key_path, cert_path = tmp_path / "k.pem", tmp_path / "c.pem"
    args = ["gen-cert", "127.0.0.1", "--key-out", str(key_path), "--cert-out", str(cert_path)]
    assert dtlspeer_cli(*args).returncode == 0
    first_key = key_path.read_bytes()
    proc = dtlspeer_cli(*args)
    assert proc.returncode == 1 and "--force" in proc.stderr, proc.stderr
    assert key_path.read_bytes() == first_key
    proc = dtlspeer_cli(*args, "--force")
    assert proc.returncode == 0, proc.stderr
    assert key_path.read_bytes() != first_key


@pytest.mark.parametrize("same", ["k.pem", "./k.pem", "sub/../k.pem"])
def test_gen_cert_rejects_one_file_for_key_and_certificate(tmp_path: Path, same: str) -> None:
    (tmp_path / "sub").mkdir()
    proc = dtlspeer_cli("gen-cert", "127.0.0.1", "--key-out", "k.pem", "--cert-out", same,
                        cwd=tmp_path)
    assert proc.returncode == 2 and "same file" in proc.stderr, proc.stderr
    assert not (tmp_path / "k.pem").exists()


@posix_only
def test_gen_cert_rejects_a_symlink_to_the_other_output(tmp_path: Path) -> None:
    (tmp_path / "alias.pem").symlink_to(tmp_path / "k.pem")
    proc = dtlspeer_cli("gen-cert", "127.0.0.1", "--key-out", "k.pem", "--cert-out", "alias.pem",
                        cwd=tmp_path)
    assert proc.returncode == 2 and "same file" in proc.stderr, proc.stderr


@pytest.mark.parametrize("days", ["3000000", "0", "-5", "1e3"])
def test_gen_cert_days_out_of_range_is_a_usage_error(tmp_path: Path, days: str) -> None:
    proc = dtlspeer_cli("gen-cert", "127.0.0.1", "--days", days, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "--days" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_gen_cert_escapes_rdn_specials(tmp_path: Path) -> None:
    proc = dtlspeer_cli("gen-cert", "game.example", "--organization", "a,CN=evil",
                        "--country", "IT+CN=x", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cert = X509Certificate()
    cert.load(tmp_path / "game.example.crt")
    # One CN, escaped specials inside the values (Mbed TLS's rendering).
    assert cert.subject == "CN=game.example, O=a\\,CN\\=evil, C=IT\\+CN\\=x", cert.subject


def test_gen_cert_refuses_control_characters_in_names(tmp_path: Path) -> None:
    proc = dtlspeer_cli("gen-cert", "game.example", "--organization", "a\x01b", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr


# ---- the Python API's RDN string ----------------------------------------------------------------


def test_api_issuer_name_keeps_multi_rdn_strings_and_escapes(key: CryptoKey) -> None:
    crypto = Crypto()
    cert = crypto.generate_self_signed_certificate(key, "CN=x,O=y,OU=z,C=IT")
    assert cert.subject == "CN=x, O=y, OU=z, C=IT"
    cert = crypto.generate_self_signed_certificate(key, "CN=x, O=a\\,CN=evil,C=IT")
    assert cert.subject == "CN=x, O=a\\,CN\\=evil, C=IT"
    cert = crypto.generate_self_signed_certificate(key, "CN=x,O=a\\2CCN=evil")
    assert cert.subject == "CN=x, O=a\\,CN\\=evil"


@pytest.mark.parametrize("name", [
    "CN=x,O=a,CN=evil",  # Mbed TLS keeps one value per type: the first CN would vanish
    "CN=x,O=a\\\\,CN=evil",  # an escaped backslash before a comma: Mbed TLS misreads it
])
def test_api_refuses_names_mbedtls_would_silently_change(key: CryptoKey, name: str) -> None:
    with pytest.raises(errors.InvalidArgumentError):
        Crypto().generate_self_signed_certificate(key, name)

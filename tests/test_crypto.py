"""Crypto, CryptoKey and X509Certificate against the real openssl CLI."""

from __future__ import annotations

import datetime
import gc
import ipaddress
import re
import ssl
from pathlib import Path

import pytest

from crypto_material import make_material, openssl
from dtlspeer import Crypto, CryptoKey, X509Certificate, errors
from dtlspeer._binding import ffi, lib

UTC = datetime.timezone.utc


@pytest.fixture(scope="module")
def mat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_material(tmp_path_factory.mktemp("openssl"))


@pytest.fixture(scope="module")
def rsa_key() -> CryptoKey:
    """The one RSA key this module generates (slow)."""
    return Crypto().generate_rsa(2048)


@pytest.fixture(scope="module")
def ec_key() -> CryptoKey:
    return Crypto().generate_ec("P-256")


def load_key(path: Path, public_only: bool = False) -> CryptoKey:
    key = CryptoKey()
    key.load(path, public_only)
    return key


def load_cert(path: Path) -> X509Certificate:
    cert = X509Certificate()
    cert.load(path)
    return cert


def openssl_fingerprint(path: Path, cwd: Path) -> bytes:
    out = openssl("x509", "-in", str(path), "-noout", "-fingerprint", "-sha256", cwd=cwd).decode()
    return bytes.fromhex(out.strip().split("=", 1)[1].replace(":", ""))


def alloc_blocks() -> tuple[int, int]:
    gc.collect()
    b = ffi.new("int64_t *")
    n = ffi.new("int64_t *")
    lib.dp_alloc_stats(b, n)
    return int(b[0]), int(n[0])


# ---- keys made by openssl -------------------------------------------------


@pytest.mark.parametrize(
    "name, kind, bits, curve, pub",
    [
        ("rsa_pkcs1.pem", "RSA", 2048, None, "rsa_pub.der"),
        ("rsa_pkcs8.pem", "RSA", 2048, None, "rsa_pub.der"),
        ("rsa_pkcs1.der", "RSA", 2048, None, "rsa_pub.der"),
        ("rsa_pkcs8.der", "RSA", 2048, None, "rsa_pub.der"),
        ("ec256_sec1.pem", "EC", 256, "P-256", "ec256_pub.der"),
        ("ec256_pkcs8.pem", "EC", 256, "P-256", "ec256_pub.der"),
        ("ec256_sec1.der", "EC", 256, "P-256", "ec256_pub.der"),
        ("ec384_sec1.pem", "EC", 384, "P-384", "ec384_pub.der"),
    ],
)
def test_openssl_private_keys_load_with_the_right_public_half(
    mat: Path, name: str, kind: str, bits: int, curve: str | None, pub: str
) -> None:
    key = load_key(mat / name)
    assert (key.key_type, key.key_size, key.curve) == (kind, bits, curve)
    assert not key.is_public_only()
    assert key.save_to_der(public_only=True) == (mat / pub).read_bytes()


def test_openssl_public_keys_load_public_only(mat: Path) -> None:
    for name in ("rsa_pub.pem", "rsa_pub.der"):
        key = load_key(mat / name, public_only=True)
        assert key.is_public_only() and key.key_type == "RSA"
        assert key.save_to_der(public_only=True) == (mat / "rsa_pub.der").read_bytes()
        with pytest.raises(errors.StateError):
            key.save_to_string()  # no private part to write


def test_private_key_loaded_public_only_keeps_only_the_public_half(mat: Path) -> None:
    key = load_key(mat / "ec256_sec1.pem", public_only=True)
    assert key.is_public_only()
    assert key.save_to_der(True) == (mat / "ec256_pub.der").read_bytes()


def test_openssl_reads_the_keys_we_write(mat: Path, tmp_path: Path, ec_key: CryptoKey,
                                         rsa_key: CryptoKey) -> None:
    for i, key in enumerate((ec_key, rsa_key)):
        pem = tmp_path / f"k{i}.pem"
        der = tmp_path / f"k{i}.der"
        key.save(pem)
        key.save(der)
        assert der.read_bytes()[0] == 0x30 and pem.read_text().startswith("-----BEGIN")
        assert pem.stat().st_mode & 0o077 == 0  # private keys: owner only
        for path, form in ((pem, "PEM"), (der, "DER")):
            pub = openssl("pkey", "-inform", form, "-in", str(path), "-pubout", "-outform", "DER",
                          cwd=tmp_path)
            assert pub == key.save_to_der(public_only=True)
    check = openssl("rsa", "-in", str(tmp_path / "k1.pem"), "-check", "-noout", cwd=tmp_path)
    assert b"RSA key ok" in check


def test_key_round_trips_pem_der_and_public(ec_key: CryptoKey, tmp_path: Path) -> None:
    pem = ec_key.save_to_string()
    der = ec_key.save_to_der()
    for data in (pem, pem.encode(), der, bytearray(der), memoryview(der)):
        k = CryptoKey()
        k.load_from_string(data)
        assert k.save_to_string() == pem and k.save_to_der() == der
    pub_pem = ec_key.save_to_string(public_only=True)
    assert "PUBLIC KEY" in pub_pem and "PRIVATE" not in pub_pem
    k = CryptoKey()
    k.load_from_string(pub_pem, public_only=True)
    assert k.is_public_only() and k.save_to_string(True) == pub_pem
    path = tmp_path / "x.key"
    ec_key.save(path, format="der")
    assert path.read_bytes() == der
    assert load_key(path).save_to_der() == der


def test_generated_rsa_and_ec_keys_describe_themselves(rsa_key: CryptoKey) -> None:
    assert (rsa_key.key_type, rsa_key.key_size, rsa_key.curve) == ("RSA", 2048, None)
    for curve, bits in (("P-256", 256), ("p-384", 384), ("secp521r1", 521)):
        key = Crypto().generate_ec(curve)
        assert (key.key_type, key.key_size) == ("EC", bits)
    assert CryptoKey().is_empty() and CryptoKey().key_type is None


# ---- self-signed certificates checked by openssl ---------------------------


def test_self_signed_certificate_is_read_and_verified_by_openssl(
    ec_key: CryptoKey, tmp_path: Path
) -> None:
    cert = Crypto().generate_self_signed_certificate(
        ec_key, "CN=game.example.test,O=dtlspeer,C=IT", "20250102030405", "20350102030405",
        dns_names=["game.example.test", "localhost"], ip_addresses=["127.0.0.1", "::1"])
    path = tmp_path / "ours.pem"
    cert.save(path)
    text = openssl("x509", "-in", str(path), "-noout", "-text", cwd=tmp_path).decode()
    assert (
        "DNS:game.example.test, DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1"
        in text
    )
    assert "Not Before: Jan  2 03:04:05 2025 GMT" in text
    assert "Not After : Jan  2 03:04:05 2035 GMT" in text
    assert "CA:TRUE, pathlen:0" in text and "Version: 3 (0x2)" in text
    assert "ecdsa-with-SHA256" in text
    assert "Subject: CN = game.example.test, O = dtlspeer, C = IT" in text
    verify = openssl("verify", "-CAfile", str(path), str(path), cwd=tmp_path)
    assert verify.strip().endswith(b"OK")
    serial = openssl("x509", "-in", str(path), "-noout", "-serial", cwd=tmp_path).decode()
    serial_hex = serial.strip().split("=", 1)[1]
    assert len(serial_hex) == 40 and int(serial_hex, 16) == cert.serial_number > 0
    assert cert.fingerprint == openssl_fingerprint(path, tmp_path)
    assert cert.subject_alt_names == (
        ("DNS", "game.example.test"), ("DNS", "localhost"),
        ("IP Address", "127.0.0.1"), ("IP Address", "::1"))
    assert cert.not_before == datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert cert.is_ca and cert.subject == cert.issuer


def test_self_signed_defaults_are_godots(rsa_key: CryptoKey, tmp_path: Path) -> None:
    cert = Crypto().generate_self_signed_certificate(rsa_key)
    assert cert.subject == "CN=myserver, O=myorganisation, C=IT"
    assert cert.not_before == datetime.datetime(2014, 1, 1, tzinfo=UTC)
    assert cert.not_after == datetime.datetime(2034, 1, 1, tzinfo=UTC)
    assert cert.subject_alt_names == () and cert.version == 3
    assert cert.public_key.save_to_der(True) == rsa_key.save_to_der(True)
    path = tmp_path / "rsa.der"
    cert.save(path)
    text = openssl("x509", "-inform", "DER", "-in", str(path), "-noout", "-text", cwd=tmp_path)
    assert b"sha256WithRSAEncryption" in text
    pem = tmp_path / "rsa.pem"
    cert.save(pem)
    assert openssl("verify", "-CAfile", str(pem), str(pem), cwd=tmp_path).strip().endswith(b"OK")
    # Two certificates never share a serial (20 random bytes).
    again = Crypto().generate_self_signed_certificate(rsa_key)
    assert again.serial_number != cert.serial_number


# ---- certificates made by openssl ------------------------------------------


def test_openssl_chain_loads_with_subjects_sans_and_fingerprints(mat: Path) -> None:
    chain = load_cert(mat / "chain.pem")
    assert len(chain) == 3
    certs = list(chain)
    assert [c.subject for c in certs] == [
        "CN=game.example.test, O=dtlspeer, C=IT",
        "CN=Test Intermediate, O=dtlspeer",
        "CN=Test Root, O=dtlspeer",
    ]
    assert certs[0].issuer == certs[1].subject and certs[2].issuer == certs[2].subject
    for cert, name in zip(certs, ("leaf.pem", "inter.pem", "root.pem")):
        assert cert.fingerprint == openssl_fingerprint(mat / name, mat)
    assert chain.fingerprint == certs[0].fingerprint
    assert chain.subject_alt_names == (
        ("DNS", "game.example.test"), ("DNS", "*.example.test"),
        ("IP Address", "127.0.0.1"), ("IP Address", "::1"))
    assert [c.is_ca for c in certs] == [False, True, True]
    assert chain.serial_number == 0x0123456789ABCDEF and certs[1].serial_number == 4660
    assert chain.not_after > datetime.datetime.now(UTC) > chain.not_before
    assert chain.not_before.tzinfo is not None
    assert chain.public_key.save_to_der(True) == (mat / "ec256_pub.der").read_bytes()
    assert chain[-1].subject == "CN=Test Root, O=dtlspeer"


def test_chain_saves_every_certificate_without_nul(mat: Path, tmp_path: Path) -> None:
    chain = load_cert(mat / "chain.pem")
    text = chain.save_to_string()
    assert "\0" not in text and text.count("-----BEGIN CERTIFICATE-----") == 3
    out = tmp_path / "saved.pem"
    chain.save(out)
    again = load_cert(out)
    assert [c.fingerprint for c in again] == [c.fingerprint for c in chain]
    assert len({c.fingerprint for c in again}) == 3  # not three copies of the leaf
    # openssl verifies our saved leaf against our saved intermediate + root.
    chain[0].save(tmp_path / "leaf.pem")
    (tmp_path / "untrusted.pem").write_text(chain[1].save_to_string())
    chain[2].save(tmp_path / "root.pem")
    res = openssl("verify", "-CAfile", "root.pem", "-untrusted", "untrusted.pem", "leaf.pem",
                  cwd=tmp_path)
    assert res.strip().endswith(b"OK")


def test_der_certificates_load_and_save(mat: Path, tmp_path: Path) -> None:
    leaf = load_cert(mat / "leaf.der")
    assert leaf.save_to_der() == (mat / "leaf.der").read_bytes()
    x = X509Certificate()
    x.load_from_string((mat / "leaf.der").read_bytes())
    assert x.fingerprint == leaf.fingerprint
    leaf.save(tmp_path / "out.der")
    assert (tmp_path / "out.der").read_bytes() == (mat / "leaf.der").read_bytes()
    chain = load_cert(mat / "chain.pem")
    with pytest.raises(errors.InvalidArgumentError):
        chain.save(tmp_path / "chain.der")  # DER holds one certificate


def test_load_replaces_instead_of_appending(mat: Path) -> None:
    cert = load_cert(mat / "chain.pem")
    cert.load(mat / "root.pem")
    assert len(cert) == 1 and cert.subject == "CN=Test Root, O=dtlspeer"
    cert.load_from_string((mat / "chain.pem").read_text())
    assert len(cert) == 3


def test_failed_load_leaves_content_unchanged(mat: Path) -> None:
    cert = load_cert(mat / "leaf.pem")
    with pytest.raises(errors.DecodeError):
        cert.load_from_string("garbage")
    assert cert.subject.startswith("CN=game.example.test")
    key = load_key(mat / "ec256_sec1.pem")
    with pytest.raises(errors.DecodeError):
        key.load_from_string(b"\x30\x03\x02\x01")
    assert key.save_to_der(True) == (mat / "ec256_pub.der").read_bytes()


def test_system_ca_store_loads() -> None:
    store = X509Certificate.from_system_store()
    assert len(store) >= 1 and store.skipped_count >= 0
    assert all(c.is_ca or c.version < 3 for c in list(store)[:5])


# ---- bad input -------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"garbage",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        b"\x30\x82\xff\xff" + b"\x00" * 20,
        b"\x00" * 1000,
    ],
)
def test_garbage_keys_raise_decode_error(data: object) -> None:
    with pytest.raises(errors.DecodeError):
        CryptoKey().load_from_string(data)  # type: ignore[arg-type]


def test_truncated_keys_and_certificates_raise_decode_error(mat: Path) -> None:
    for name in ("rsa_pkcs1.pem", "ec256_pkcs8.pem", "rsa_pkcs8.der", "ec256_sec1.der"):
        data = (mat / name).read_bytes()
        for cut in (len(data) // 2, len(data) - 5, 10):
            with pytest.raises(errors.DecodeError):
                CryptoKey().load_from_string(data[:cut])
    for name in ("leaf.pem", "leaf.der", "chain.pem"):
        data = (mat / name).read_bytes()
        for cut in (len(data) // 2, len(data) - 40, 10):
            with pytest.raises(errors.DecodeError):
                X509Certificate().load_from_string(data[:cut])


def test_chain_with_one_corrupt_certificate_is_refused(mat: Path) -> None:
    inter_der = X509Certificate()
    inter_der.load(mat / "inter.pem")
    der = inter_der.save_to_der()
    leaf, root = (mat / "leaf.pem").read_text(), (mat / "root.pem").read_text()
    bad_der = ssl.DER_cert_to_PEM_cert(der[: len(der) // 2])  # well-formed PEM, broken DER
    bad_b64 = (mat / "inter.pem").read_text().replace("\n", "\n!!!!\n", 3)  # broken base64
    for bad in (bad_der, bad_b64):
        with pytest.raises(errors.DecodeError):
            X509Certificate().load_from_string(leaf + bad + root)
    # The system store loader is lenient: it skips and counts such blocks.
    cert = X509Certificate()
    cert._parse((leaf + bad_der + root + bad_b64).encode(), True, "test")
    assert len(cert) == 2 and cert.skipped_count == 2


def test_empty_inputs_raise_decode_error(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    for call in (lambda: CryptoKey().load_from_string(""),
                 lambda: CryptoKey().load(tmp_path / "empty"),
                 lambda: X509Certificate().load_from_string(b""),
                 lambda: X509Certificate().load(tmp_path / "empty")):
        with pytest.raises(errors.DecodeError):
            call()


def test_wrong_kind_of_pem_is_refused(mat: Path) -> None:
    with pytest.raises(errors.DecodeError):
        CryptoKey().load(mat / "leaf.pem")
    with pytest.raises(errors.DecodeError):
        X509Certificate().load(mat / "rsa_pkcs1.pem")


@pytest.mark.parametrize("name", ["enc_pkcs8.pem", "enc_legacy.pem", "enc_pkcs8.der"])
def test_encrypted_keys_raise_decode_error(mat: Path, name: str) -> None:
    with pytest.raises(errors.DecodeError) as info:
        load_key(mat / name)
    if name.endswith(".pem"):
        assert "password" in str(info.value).lower()


@pytest.mark.parametrize("name", ["ed25519.pem", "secp256k1.pem"])
def test_unsupported_key_algorithms_and_curves(mat: Path, name: str) -> None:
    with pytest.raises(errors.UnsupportedError):
        load_key(mat / name)


def test_missing_files_raise_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        CryptoKey().load(tmp_path / "nope.key")
    with pytest.raises(FileNotFoundError):
        X509Certificate().load(str(tmp_path / "nope.crt"))


def test_wrong_types_raise_argument_type_error(ec_key: CryptoKey) -> None:
    c = Crypto()
    bad_calls = [
        lambda: CryptoKey().load_from_string(123),  # type: ignore[arg-type]
        lambda: CryptoKey().load(None),  # type: ignore[arg-type]
        lambda: CryptoKey().load_from_string("x", public_only="yes"),  # type: ignore[arg-type]
        lambda: X509Certificate().load_from_string(["x"]),  # type: ignore[arg-type]
        lambda: c.generate_rsa("2048"),  # type: ignore[arg-type]
        lambda: c.generate_rsa(True),  # type: ignore[arg-type]
        lambda: c.generate_ec(256),  # type: ignore[arg-type]
        lambda: c.generate_random_bytes(1.5),  # type: ignore[arg-type]
        lambda: c.generate_self_signed_certificate("key"),  # type: ignore[arg-type]
        lambda: c.generate_self_signed_certificate(ec_key, dns_names="a.b"),
        lambda: c.generate_self_signed_certificate(ec_key, ip_addresses=[127]),
        lambda: c.generate_self_signed_certificate(ec_key, not_before=20140101000000),  # type: ignore[arg-type]
    ]
    for call in bad_calls:
        with pytest.raises(errors.ArgumentTypeError):
            call()


@pytest.mark.parametrize("size", [1024, 2047, 2049, 4104, 8192, 0, -1])
def test_unsupported_rsa_sizes(size: int) -> None:
    with pytest.raises(errors.UnsupportedError):
        Crypto().generate_rsa(size)


@pytest.mark.parametrize("curve", ["P-192", "secp256k1", "X25519", ""])
def test_unsupported_curves(curve: str) -> None:
    with pytest.raises(errors.UnsupportedError):
        Crypto().generate_ec(curve)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"not_before": "2014010100000"},
        {"not_before": "20141301000000"},
        {"not_after": "2034010100000x"},
        {"not_before": "20340101000000", "not_after": "20140101000000"},
        {"issuer_name": ""},
        {"issuer_name": "NOTANATTRIBUTE=x"},
        {"dns_names": [""]},
        {"dns_names": ["has space.example"]},
        {"dns_names": ["x" * 254]},
        {"ip_addresses": ["300.1.1.1"]},
        {"dns_names": [f"h{i}.example" for i in range(65)]},
    ],
)
def test_bad_self_signed_arguments(ec_key: CryptoKey, kwargs: dict) -> None:
    with pytest.raises(errors.InvalidArgumentError):
        Crypto().generate_self_signed_certificate(ec_key, **kwargs)


def test_self_signed_needs_a_private_key(ec_key: CryptoKey) -> None:
    pub = CryptoKey()
    pub.load_from_string(ec_key.save_to_string(True), public_only=True)
    with pytest.raises(errors.InvalidArgumentError):
        Crypto().generate_self_signed_certificate(pub)
    with pytest.raises(errors.StateError):
        Crypto().generate_self_signed_certificate(CryptoKey())


def test_empty_objects_raise_state_error() -> None:
    cert = X509Certificate()
    assert len(cert) == 0 and list(cert) == []
    for call in (lambda: cert.subject, lambda: cert.fingerprint, lambda: cert.save_to_string(),
                 lambda: CryptoKey().save_to_string(), lambda: CryptoKey().save_to_der()):
        with pytest.raises(errors.StateError):
            call()


def test_random_bytes() -> None:
    c = Crypto()
    a, b = c.generate_random_bytes(64), c.generate_random_bytes(64)
    assert len(a) == 64 and a != b
    assert c.generate_random_bytes(0) == b""
    assert len(c.generate_random_bytes(5000)) == 5000
    with pytest.raises(errors.InvalidArgumentError):
        c.generate_random_bytes(-1)


def test_ipv6_and_ip_objects_in_sans(ec_key: CryptoKey) -> None:
    cert = Crypto().generate_self_signed_certificate(
        ec_key, ip_addresses=[ipaddress.ip_address("2001:db8::1"), "10.0.0.1"])
    assert cert.subject_alt_names == (("IP Address", "2001:db8::1"), ("IP Address", "10.0.0.1"))


# ---- memory ----------------------------------------------------------------


def test_native_memory_returns_to_baseline(mat: Path, ec_key: CryptoKey) -> None:
    chain_pem = (mat / "chain.pem").read_bytes()
    key_pem = (mat / "rsa_pkcs8.pem").read_bytes()
    c = Crypto()

    def cycle() -> None:
        cert = X509Certificate()
        cert.load_from_string(chain_pem)
        _ = [x.subject_alt_names for x in cert]
        key = CryptoKey()
        key.load_from_string(key_pem)
        key.save_to_der()
        for bad in (b"garbage", chain_pem[:300], key_pem[:200]):
            for obj in (CryptoKey(), X509Certificate()):
                with pytest.raises(errors.DTLSPeerError):
                    obj.load_from_string(bad)
        ss = c.generate_self_signed_certificate(ec_key, dns_names=["a.example"],
                                                ip_addresses=["::1"])
        _ = ss.public_key
        c.generate_ec("P-384")

    cycle()  # warm up lazily created global state (PSA, curve tables)
    before = alloc_blocks()
    for _ in range(100):
        cycle()
    assert alloc_blocks() == before


def test_repr_names_the_content(mat: Path, ec_key: CryptoKey) -> None:
    assert repr(ec_key) == "<CryptoKey EC-256 P-256 private>"
    assert re.match(r"<X509Certificate 'CN=game.example.test.*' \(\+2 in chain\)>",
                    repr(load_cert(mat / "chain.pem")))

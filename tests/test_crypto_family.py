"""The Crypto family (issue 12 section 3): HashingContext, HMACContext,
AESContext, Crypto.sign/verify/encrypt/decrypt/hmac_digest/
constant_time_compare.

Every operation is cross-checked against Python's ``hashlib``/``hmac`` and
the ``openssl`` CLI in both directions (their output checked by us, ours by
them), with RSA and EC keys where Godot supports them; Godot's own vectors
(``../shared/reference/godot-wire.md`` section 6, confirmed on the 4.8-dev
runtime) are pinned; Godot's argument rules and error cases raise specific
exceptions; hostile inputs never crash and leave no memory behind. The
real-runtime cross-check is ``tests/interop/test_godot_crypto.py``.
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import os
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from crypto_material import openssl
from dtlspeer import AESContext, Crypto, CryptoKey, HashingContext, HMACContext, errors
from dtlspeer._binding import ffi, lib
from dtlspeer.hashing import HashType

HASHLIB = {HashType.HASH_MD5: "md5", HashType.HASH_SHA1: "sha1", HashType.HASH_SHA256: "sha256"}
FOX = b"The quick brown fox jumps over the lazy dog"
crypto = Crypto()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """openssl-made private keys and their public halves (PEM) by label."""
    d = tmp_path_factory.mktemp("crypto-family")
    openssl("genrsa", "-traditional", "-out", "rsa2048.pem", "2048", cwd=d)
    openssl("genrsa", "-out", "rsa3072.pem", "3072", cwd=d)
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "p256.pem", cwd=d)
    openssl("ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", "p384.pem", cwd=d)
    openssl("ecparam", "-name", "secp521r1", "-genkey", "-noout", "-out", "p521.pem", cwd=d)
    paths = {}
    for label in ("rsa2048", "rsa3072", "p256", "p384", "p521"):
        openssl("pkey", "-in", f"{label}.pem", "-pubout", "-out", f"{label}.pub.pem", cwd=d)
        paths[label] = d / f"{label}.pem"
        paths[f"{label}.pub"] = d / f"{label}.pub.pem"
    return paths


def load(path: Path, public_only: bool = False) -> CryptoKey:
    key = CryptoKey()
    key.load(path, public_only=public_only)
    return key


def alloc_now() -> tuple[int, int]:
    gc.collect()
    b, n = ffi.new("int64_t *"), ffi.new("int64_t *")
    lib.dp_alloc_stats(b, n)
    return int(b[0]), int(n[0])


# ---- enums: Godot 4's values ------------------------------------------------


def test_enum_values_are_godots() -> None:
    assert (HashingContext.HASH_MD5, HashingContext.HASH_SHA1, HashingContext.HASH_SHA256) == (
        0, 1, 2)
    assert HashingContext.HashType.HASH_SHA256 == 2
    assert [AESContext.MODE_ECB_ENCRYPT, AESContext.MODE_ECB_DECRYPT, AESContext.MODE_CBC_ENCRYPT,
            AESContext.MODE_CBC_DECRYPT, AESContext.MODE_MAX] == [0, 1, 2, 3, 4]


# ---- HashingContext ------------------------------------------------------------


def test_godot_hash_vectors() -> None:
    expected = {0: "900150983cd24fb0d6963f7d28e17f72",
                1: "a9993e364706816aba3e25717850c26c9cd0d89d",
                2: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}
    for kind, digest in expected.items():
        ctx = HashingContext()
        ctx.start(kind)
        ctx.update(b"a")
        ctx.update(bytearray(b"bc"))
        assert ctx.finish().hex() == digest


@pytest.mark.parametrize("kind", list(HashType))
def test_hashes_match_hashlib_in_any_chunking(kind: HashType) -> None:
    rng = random.Random(kind)
    ctx = HashingContext()
    for size in (1, 55, 56, 63, 64, 65, 1000, 100_003):
        data = rng.randbytes(size)
        ctx.start(kind)
        pos = 0
        while pos < len(data):
            step = rng.randint(1, 300)
            ctx.update(memoryview(data)[pos : pos + step])
            pos += step
        assert ctx.finish() == hashlib.new(HASHLIB[kind], data).digest()
    ctx.start(kind)  # no update: the hash of nothing
    assert ctx.finish() == hashlib.new(HASHLIB[kind]).digest()


def test_hashing_context_state_and_argument_errors() -> None:
    ctx = HashingContext()
    with pytest.raises(errors.StateError):
        ctx.update(b"x")  # before start: Godot ERR_UNCONFIGURED
    with pytest.raises(errors.StateError):
        ctx.finish()  # Godot: empty array
    for bad in (3, -1, 2**40):
        with pytest.raises(errors.UnsupportedError):
            ctx.start(bad)  # Godot ERR_UNAVAILABLE
    for wrong in (True, 1.0, "sha256", None):
        with pytest.raises(errors.ArgumentTypeError):
            ctx.start(wrong)  # type: ignore[arg-type]
    ctx.start(HashingContext.HASH_SHA1)
    with pytest.raises(errors.AlreadyInUseError):
        ctx.start(HashingContext.HASH_SHA1)  # Godot ERR_ALREADY_IN_USE
    with pytest.raises(errors.InvalidArgumentError):
        ctx.update(b"")  # Godot FAILED; the context stays intact
    for wrong in ("abc", 5, None, [1, 2]):
        with pytest.raises(errors.ArgumentTypeError):
            ctx.update(wrong)  # type: ignore[arg-type]
    ctx.update(b"abc")
    assert ctx.finish() == hashlib.sha1(b"abc").digest()
    with pytest.raises(errors.StateError):
        ctx.finish()  # finish twice
    with pytest.raises(errors.StateError):
        ctx.update(b"x")  # after finish


# ---- HMACContext and hmac_digest ----------------------------------------------


def test_godot_hmac_vectors() -> None:
    assert crypto.hmac_digest(HashingContext.HASH_SHA1, b"key", FOX).hex() == \
        "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9"
    assert crypto.hmac_digest(HashingContext.HASH_SHA256, b"key", FOX).hex() == \
        "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    ctx = HMACContext()
    ctx.start(HashingContext.HASH_SHA256, b"key")
    assert ctx.finish().hex().startswith("5d5d1395")  # no update: HMAC of ""
    ctx.start(HashingContext.HASH_SHA256, b"key")
    assert ctx.finish() == hmac.new(b"key", b"", "sha256").digest()


@pytest.mark.parametrize("kind", [HashType.HASH_SHA1, HashType.HASH_SHA256])
def test_hmacs_match_python_hmac(kind: HashType) -> None:
    rng = random.Random(kind)
    ctx = HMACContext()
    for key_len in (1, 20, 63, 64, 65, 100, 1000):  # shorter and longer than a block
        key = rng.randbytes(key_len)
        msg = rng.randbytes(rng.randint(1, 5000))
        want = hmac.new(key, msg, HASHLIB[kind]).digest()
        assert crypto.hmac_digest(kind, key, msg) == want
        ctx.start(kind, bytearray(key))
        for i in range(0, len(msg), 77):
            ctx.update(msg[i : i + 77])
        assert ctx.finish() == want


def test_hmac_argument_and_state_errors() -> None:
    ctx = HMACContext()
    with pytest.raises(errors.InvalidArgumentError):
        ctx.start(HashingContext.HASH_MD5, b"key")  # Godot refuses MD5
    with pytest.raises(errors.InvalidArgumentError):
        ctx.start(7, b"key")
    with pytest.raises(errors.InvalidArgumentError):
        ctx.start(HashingContext.HASH_SHA256, b"")  # empty key
    with pytest.raises(errors.ArgumentTypeError):
        ctx.start(HashingContext.HASH_SHA256, "key")  # type: ignore[arg-type]
    with pytest.raises(errors.StateError):
        ctx.update(b"x")  # before start (Godot ERR_INVALID_DATA)
    with pytest.raises(errors.StateError):
        ctx.finish()
    ctx.start(HashingContext.HASH_SHA256, b"k")
    with pytest.raises(errors.AlreadyInUseError):
        ctx.start(HashingContext.HASH_SHA256, b"k")
    with pytest.raises(errors.InvalidArgumentError):
        ctx.update(b"")
    ctx.update(b"m")
    assert ctx.finish() == hmac.new(b"k", b"m", "sha256").digest()
    with pytest.raises(errors.StateError):
        ctx.finish()
    with pytest.raises(errors.InvalidArgumentError):
        crypto.hmac_digest(HashingContext.HASH_SHA256, b"key", b"")  # Godot: empty array
    with pytest.raises(errors.InvalidArgumentError):
        crypto.hmac_digest(HashingContext.HASH_MD5, b"key", b"m")
    with pytest.raises(errors.InvalidArgumentError):
        crypto.hmac_digest(HashingContext.HASH_SHA1, b"", b"m")


def test_constant_time_compare() -> None:
    assert crypto.constant_time_compare(b"", b"")
    assert crypto.constant_time_compare(b"abc", bytearray(b"abc"))
    assert not crypto.constant_time_compare(b"abc", b"abd")
    assert not crypto.constant_time_compare(b"abc", b"abcd")
    with pytest.raises(errors.ArgumentTypeError):
        crypto.constant_time_compare("abc", b"abc")  # type: ignore[arg-type]


# ---- AESContext ---------------------------------------------------------------


def aes(mode: int, key: bytes, data: bytes, iv: bytes = b"") -> bytes:
    ctx = AESContext()
    ctx.start(mode, key, iv)
    out = ctx.update(data)
    ctx.finish()
    return out


def test_godot_aes_vectors() -> None:
    pt = bytes.fromhex("00112233445566778899aabbccddeeff")
    ct = aes(AESContext.MODE_ECB_ENCRYPT, bytes(range(16)), pt)
    assert ct.hex() == "69c4e0d86a7b0430d8cdb78070b4c55a"  # FIPS-197
    assert aes(AESContext.MODE_ECB_DECRYPT, bytes(range(16)), ct) == pt
    assert aes(AESContext.MODE_ECB_ENCRYPT, bytes(range(32)), pt).hex() == \
        "8ea2b7ca516745bfeafc49904b496089"


def openssl_enc(cipher: str, key: bytes, iv: bytes, data: bytes, decrypt: bool,
                cwd: Path) -> bytes:
    args = ["enc", f"-{cipher}", "-nopad", "-K", key.hex()]
    if iv:
        args += ["-iv", iv.hex()]
    if decrypt:
        args.append("-d")
    return openssl(*args, cwd=cwd, input=data)


@pytest.mark.parametrize("bits", [128, 256])
@pytest.mark.parametrize("chaining", ["ecb", "cbc"])
def test_aes_matches_openssl_both_ways(bits: int, chaining: str, tmp_path: Path) -> None:
    rng = random.Random(bits * 7 + len(chaining))
    key, iv = rng.randbytes(bits // 8), rng.randbytes(16) if chaining == "cbc" else b""
    data = rng.randbytes(16 * 37)
    cipher = f"aes-{bits}-{chaining}"
    enc = AESContext.MODE_CBC_ENCRYPT if chaining == "cbc" else AESContext.MODE_ECB_ENCRYPT
    dec = enc + 1
    ours = aes(enc, key, data, iv)
    assert openssl_enc(cipher, key, iv, ours, True, tmp_path) == data
    theirs = openssl_enc(cipher, key, iv, data, False, tmp_path)
    assert theirs == ours
    assert aes(dec, key, theirs, iv) == data


def test_cbc_chains_across_updates_and_reports_its_iv() -> None:
    key, iv = bytes(range(32)), bytes(range(15, -1, -1))
    data = os.urandom(48)
    whole = aes(AESContext.MODE_CBC_ENCRYPT, key, data, iv)
    ctx = AESContext()
    ctx.start(AESContext.MODE_CBC_ENCRYPT, key, iv)
    assert ctx.get_iv_state() == iv
    first = ctx.update(data[:16])
    assert ctx.get_iv_state() == first  # the last ciphertext block
    rest = ctx.update(data[16:])
    assert first + rest == whole
    assert ctx.get_iv_state() == whole[-16:]
    assert ctx.update(b"") == b""
    ctx.finish()
    dec = AESContext()
    dec.start(AESContext.MODE_CBC_DECRYPT, key, iv)
    assert dec.update(whole[:32]) + dec.update(whole[32:]) == data
    assert dec.get_iv_state() == whole[-16:]


def test_aes_argument_and_state_errors() -> None:
    ctx = AESContext()
    with pytest.raises(errors.StateError):
        ctx.update(bytes(16))  # before start
    with pytest.raises(errors.StateError):
        ctx.get_iv_state()
    ctx.finish()  # finish on an idle context is fine (Godot too)
    for mode in (4, -1, 99):
        with pytest.raises(errors.InvalidArgumentError):
            ctx.start(mode, bytes(16))
    for wrong_mode in (True, 1.5, "ecb"):
        with pytest.raises(errors.ArgumentTypeError):
            ctx.start(wrong_mode, bytes(16))  # type: ignore[arg-type]
    for key_len in (0, 15, 17, 24, 33, 64):  # AES-192 too, as Godot
        with pytest.raises(errors.InvalidArgumentError):
            ctx.start(AESContext.MODE_ECB_ENCRYPT, bytes(key_len))
    for iv_len in (0, 15, 17, 32):
        with pytest.raises(errors.InvalidArgumentError):
            ctx.start(AESContext.MODE_CBC_DECRYPT, bytes(16), bytes(iv_len))
    with pytest.raises(errors.ArgumentTypeError):
        ctx.start(AESContext.MODE_ECB_ENCRYPT, "k" * 16)  # type: ignore[arg-type]
    ctx.start(AESContext.MODE_ECB_ENCRYPT, bytes(16), bytes(5))  # ECB ignores an IV
    with pytest.raises(errors.StateError):
        ctx.get_iv_state()  # ECB has none (Godot: empty array)
    with pytest.raises(errors.AlreadyInUseError):
        ctx.start(AESContext.MODE_ECB_ENCRYPT, bytes(16))
    for size in (1, 15, 17, 33):
        with pytest.raises(errors.InvalidArgumentError):
            ctx.update(bytes(size))
    with pytest.raises(errors.ArgumentTypeError):
        ctx.update("x" * 16)  # type: ignore[arg-type]
    assert ctx.update(bytes(16)) == aes(AESContext.MODE_ECB_ENCRYPT, bytes(16), bytes(16))
    ctx.finish()
    ctx.finish()
    with pytest.raises(errors.StateError):
        ctx.update(bytes(16))  # after finish
    ctx.start(AESContext.MODE_CBC_ENCRYPT, bytes(32), bytes(16))  # startable again


# ---- signatures ------------------------------------------------------------------


SIGNING_KEYS = ["rsa2048", "rsa3072", "p256", "p384", "p521"]


@pytest.mark.parametrize("label", SIGNING_KEYS)
@pytest.mark.parametrize("kind", list(HashType))
def test_signatures_verify_with_openssl_both_ways(
    keys: dict[str, Path], label: str, kind: HashType, tmp_path: Path
) -> None:
    data = os.urandom(1000)
    (tmp_path / "data").write_bytes(data)
    digest = hashlib.new(HASHLIB[kind], data).digest()
    private, public = load(keys[label]), load(keys[f"{label}.pub"], public_only=True)
    md = f"-{HASHLIB[kind]}"

    ours = crypto.sign(kind, digest, private)
    if label.startswith("rsa"):
        assert len(ours) == private.key_size // 8
        assert crypto.sign(kind, digest, private) == ours  # PKCS#1 v1.5 is deterministic
    else:
        assert ours[0] == 0x30  # DER SEQUENCE {r, s}, as Godot
    (tmp_path / "ours.sig").write_bytes(ours)
    out = openssl("dgst", md, "-verify", str(keys[f"{label}.pub"]), "-signature", "ours.sig",
                  "data", cwd=tmp_path)
    assert b"Verified OK" in out

    openssl("dgst", md, "-sign", str(keys[label]), "-out", "theirs.sig", "data", cwd=tmp_path)
    theirs = (tmp_path / "theirs.sig").read_bytes()
    assert crypto.verify(kind, digest, theirs, public)
    assert crypto.verify(kind, digest, theirs, private)
    assert crypto.verify(kind, digest, ours, public)

    tampered = bytearray(theirs)
    tampered[len(tampered) // 2] ^= 1
    assert not crypto.verify(kind, digest, bytes(tampered), public)
    other = bytearray(digest)
    other[0] ^= 1
    assert not crypto.verify(kind, bytes(other), theirs, public)


def test_generated_keys_sign_and_verify(keys: dict[str, Path]) -> None:
    for key in (crypto.generate_ec("P-256"), crypto.generate_ec("P-521"), load(keys["rsa2048"])):
        digest = hashlib.sha256(b"msg").digest()
        sig = crypto.sign(HashingContext.HASH_SHA256, digest, key)
        assert crypto.verify(HashingContext.HASH_SHA256, digest, sig, key)


def test_signature_argument_errors_and_hostile_signatures(keys: dict[str, Path]) -> None:
    rsa, ec = load(keys["rsa2048"]), load(keys["p256"])
    rsa_pub = load(keys["rsa2048.pub"], public_only=True)
    digest = hashlib.sha256(b"m").digest()
    good = crypto.sign(HashingContext.HASH_SHA256, digest, rsa)
    for wrong_size in (b"", digest[:31], digest + b"\0", hashlib.sha1(b"m").digest()):
        with pytest.raises(errors.InvalidArgumentError):
            crypto.sign(HashingContext.HASH_SHA256, wrong_size, rsa)  # Godot: empty + error
        with pytest.raises(errors.InvalidArgumentError):
            crypto.verify(HashingContext.HASH_SHA256, wrong_size, good, rsa)  # Godot: false
    with pytest.raises(errors.InvalidArgumentError):
        crypto.sign(HashingContext.HASH_SHA256, digest, rsa_pub)  # public key
    with pytest.raises(errors.StateError):
        crypto.sign(HashingContext.HASH_SHA256, digest, CryptoKey())  # empty key
    with pytest.raises(errors.StateError):
        crypto.verify(HashingContext.HASH_SHA256, digest, good, CryptoKey())
    with pytest.raises(errors.ArgumentTypeError):
        crypto.sign(HashingContext.HASH_SHA256, digest, "key")  # type: ignore[arg-type]
    with pytest.raises(errors.ArgumentTypeError):
        crypto.sign(HashingContext.HASH_SHA256, "digest", rsa)  # type: ignore[arg-type]
    with pytest.raises(errors.UnsupportedError):
        crypto.sign(5, digest, rsa)
    with pytest.raises(errors.ArgumentTypeError):
        crypto.verify(HashingContext.HASH_SHA256, digest, None, rsa)  # type: ignore[arg-type]
    hostile = [b"", good[:-1], good + b"\0", bytes(256), b"\xff" * 256, b"\x30" * 100_000,
               bytes([0x30, 0x82, 0xFF, 0xFF]) + bytes(64), os.urandom(72)]
    for sig in hostile:
        assert not crypto.verify(HashingContext.HASH_SHA256, digest, sig, rsa_pub)
        assert not crypto.verify(HashingContext.HASH_SHA256, digest, sig, ec)
    # A raw r||s ECDSA signature is not DER: refused, as Godot.
    assert not crypto.verify(HashingContext.HASH_SHA256, digest, bytes(64), ec)
    # An RSA signature does not verify under an EC key and vice versa.
    assert not crypto.verify(HashingContext.HASH_SHA256, digest, good, ec)
    ec_sig = crypto.sign(HashingContext.HASH_SHA256, digest, ec)
    assert not crypto.verify(HashingContext.HASH_SHA256, digest, ec_sig, rsa)


# ---- RSA encryption --------------------------------------------------------------


@pytest.mark.parametrize("label", ["rsa2048", "rsa3072"])
def test_rsa_encryption_with_openssl_both_ways(
    keys: dict[str, Path], label: str, tmp_path: Path
) -> None:
    private, public = load(keys[label]), load(keys[f"{label}.pub"], public_only=True)
    limit = private.key_size // 8 - 11
    for size in (0, 1, 32, limit):
        message = os.urandom(size)
        ours = crypto.encrypt(public, message)
        assert len(ours) == private.key_size // 8
        assert crypto.encrypt(public, message) != ours  # randomized padding
        assert crypto.decrypt(private, ours) == message
        pkcs1 = ["-pkeyopt", "rsa_padding_mode:pkcs1"]
        if size:  # openssl pkeyutl cannot read an empty input file as a message
            (tmp_path / "ours.bin").write_bytes(ours)
            assert openssl("pkeyutl", "-decrypt", "-inkey", str(keys[label]), *pkcs1,
                           "-in", "ours.bin", cwd=tmp_path) == message
            (tmp_path / "msg.bin").write_bytes(message)
            theirs = openssl("pkeyutl", "-encrypt", "-pubin", "-inkey",
                             str(keys[f"{label}.pub"]), *pkcs1, "-in", "msg.bin", cwd=tmp_path)
            assert crypto.decrypt(private, theirs) == message
    assert crypto.encrypt(private, b"private keys encrypt too")


def test_rsa_encryption_errors_and_hostile_ciphertexts(keys: dict[str, Path]) -> None:
    private, public = load(keys["rsa2048"]), load(keys["rsa2048.pub"], public_only=True)
    with pytest.raises(errors.InvalidArgumentError):
        crypto.encrypt(public, bytes(246))  # modulus - 11 + 1
    with pytest.raises(errors.InvalidArgumentError):
        crypto.encrypt(public, bytes(10_000_000))
    with pytest.raises(errors.InvalidArgumentError):
        crypto.decrypt(public, crypto.encrypt(public, b"x"))  # needs the private key
    for ec in (load(keys["p256"]), load(keys["p256.pub"], public_only=True)):
        with pytest.raises(errors.UnsupportedError):
            crypto.encrypt(ec, b"x")  # Godot: PSA_ERROR_NOT_SUPPORTED
    with pytest.raises(errors.UnsupportedError):
        crypto.decrypt(load(keys["p256"]), bytes(64))
    with pytest.raises(errors.StateError):
        crypto.encrypt(CryptoKey(), b"x")
    with pytest.raises(errors.ArgumentTypeError):
        crypto.encrypt(public, "text")  # type: ignore[arg-type]
    with pytest.raises(errors.ArgumentTypeError):
        crypto.decrypt(private, 5)  # type: ignore[arg-type]
    good = crypto.encrypt(public, b"secret")
    other = load(keys["rsa3072"])
    hostile = [b"", good[:-1], good + b"\0", bytes(256), b"\xff" * 256, os.urandom(256),
               bytes(10_000), crypto.encrypt(load(keys["rsa3072.pub"], public_only=True), b"x")]
    messages = set()
    for ciphertext in hostile:
        with pytest.raises(errors.DecryptionError) as info:
            crypto.decrypt(private, ciphertext)
        messages.add(str(info.value))
    assert len(messages) == 1  # one answer for every bad ciphertext
    with pytest.raises(errors.DecryptionError):
        crypto.decrypt(other, good)  # wrong key
    assert crypto.decrypt(private, good) == b"secret"


# ---- resources and threads -------------------------------------------------------


def test_contexts_and_operations_return_their_memory(keys: dict[str, Path]) -> None:
    rsa, ec = load(keys["rsa2048"]), load(keys["p256"])

    def work() -> None:
        for kind in HashType:
            h = HashingContext()
            h.start(kind)
            h.update(b"data")
            h.finish()
            h.start(kind)  # dropped while started
        m = HMACContext()
        m.start(HashingContext.HASH_SHA256, b"k" * 200)
        m.update(b"x")
        a = AESContext()
        a.start(AESContext.MODE_CBC_ENCRYPT, bytes(32), bytes(16))
        a.update(bytes(64))
        digest = hashlib.sha256(b"m").digest()
        for key in (rsa, ec):
            crypto.verify(2, digest, crypto.sign(2, digest, key), key)
            crypto.verify(2, digest, b"\x30\x05garbage", key)
        crypto.decrypt(rsa, crypto.encrypt(rsa, b"m"))
        with pytest.raises(errors.DecryptionError):
            crypto.decrypt(rsa, bytes(256))

    work()
    before = alloc_now()
    for _ in range(20):
        work()
    assert alloc_now() == before


def test_one_context_per_thread_in_parallel() -> None:
    data = os.urandom(1 << 16)
    want = hashlib.sha256(data).digest()
    results: list[Any] = []

    def run() -> None:
        for _ in range(20):
            h = HashingContext()
            h.start(HashingContext.HASH_SHA256)
            for i in range(0, len(data), 4096):
                h.update(data[i : i + 4096])
            results.append(h.finish() == want)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [True] * 80


def test_fuzzed_signatures_and_ciphertexts_are_refused_cleanly(keys: dict[str, Path]) -> None:
    """Signatures and ciphertexts come from the network: seeded mutations of
    valid ones (bit flips, truncation, extension, DER length words) are only
    ever ``False`` / ``DecryptionError`` (or, for the rare mutation that keeps
    them valid, the original answer), and leave no memory behind. Bounded in
    iterations and seconds."""
    import time

    rng = random.Random(1212)
    rsa, ec = load(keys["rsa2048"]), load(keys["p384"])
    digest = hashlib.sha256(b"fuzz").digest()
    valid = {"rsa": crypto.sign(2, digest, rsa), "ec": crypto.sign(2, digest, ec)}
    ciphertext = crypto.encrypt(rsa, b"fuzz plaintext")

    def mutate(data: bytes) -> bytes:
        out = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(5)
            if op == 0 and out:
                out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
            elif op == 1 and out:
                del out[rng.randrange(len(out)) :]
            elif op == 2:
                out += rng.randbytes(rng.randint(1, 40))
            elif op == 3 and len(out) > 4:
                at = rng.randrange(len(out) - 2)
                out[at : at + 2] = rng.choice((b"\x30\x81", b"\x02\x00", b"\xff\xff", b"\x00\x00"))
            elif out:
                out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)

    counts = {"false": 0, "refused": 0, "still valid": 0, "decrypted": 0}

    def round_of(n: int) -> None:
        for i in range(n):
            if time.monotonic() > stop:
                return
            name = ("rsa", "ec")[i % 2]
            key = rsa if name == "rsa" else ec
            candidate = mutate(valid[name])
            if crypto.verify(2, digest, candidate, key):
                assert candidate == valid[name]  # only a mutation that changed nothing
                counts["still valid"] += 1
            else:
                counts["false"] += 1
            try:
                crypto.decrypt(rsa, mutate(ciphertext))
            except errors.DecryptionError:
                counts["refused"] += 1
            else:
                counts["decrypted"] += 1  # a mutation with valid padding by chance

    stop = time.monotonic() + 25
    round_of(300)  # Mbed TLS grows some MPIs of the key once (bounded, not per call)
    before = alloc_now()
    round_of(2700)
    assert counts["false"] > 1000 and counts["refused"] > 1000, counts
    assert counts["still valid"] + counts["decrypted"] < 30, counts
    assert alloc_now() == before

"""The Crypto family against real Godot runtimes (issue 12 section 5).

Godot 4.8-dev (``../shared/tools/godot4/``) runs ``godot4/crypto_crosscheck.gd``
on inputs we made: its hashes (MD5/SHA-1/SHA-256), HMACs (SHA-1/SHA-256) and
AES outputs (ECB/CBC, 128/256, several updates) must equal ours; it verifies
our RSA and ECDSA signatures and decrypts our RSA ciphertexts; we verify the
signatures it makes (with our keys and with an RSA key it generated, every
hash type) and decrypt what it encrypts. Each misuse case Godot refuses
(an ``Error``, an empty array, ``false``) raises the documented exception
here.

Godot 3.2.3 (``godot3-server``) is probed for the classes it has: see
``test_godot3_crypto_classes``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import godot4_env, godot4_project

from dtlspeer import AESContext, Crypto, CryptoKey, HashingContext, HMACContext, errors

pytestmark = pytest.mark.interop

SCRIPT = Path(__file__).parent / "godot4" / "crypto_crosscheck.gd"
crypto = Crypto()
HASHES = (HashingContext.HASH_MD5, HashingContext.HASH_SHA1, HashingContext.HASH_SHA256)


def hash_of(kind: int, data: bytes) -> bytes:
    ctx = HashingContext()
    ctx.start(kind)
    if data:
        ctx.update(data)
    return ctx.finish()


def aes_run(mode: int, key: bytes, iv: bytes, chunks: list[bytes]) -> bytes:
    ctx = AESContext()
    ctx.start(mode, key, iv)
    out = b"".join(ctx.update(c) for c in chunks)
    ctx.finish()
    return out


def make_job(rng: random.Random) -> tuple[dict[str, Any], dict[str, CryptoKey]]:
    rsa, ec = crypto.generate_rsa(2048), crypto.generate_ec("P-256")
    keys = {"rsa": rsa, "ec": ec}
    messages = [b"abc", b"The quick brown fox jumps over the lazy dog", rng.randbytes(1000),
                rng.randbytes(64), b"x"]
    aes_jobs = []
    for mode in (AESContext.MODE_ECB_ENCRYPT, AESContext.MODE_ECB_DECRYPT,
                 AESContext.MODE_CBC_ENCRYPT, AESContext.MODE_CBC_DECRYPT):
        for key_len in (16, 32):
            iv = rng.randbytes(16) if mode >= AESContext.MODE_CBC_ENCRYPT else b""
            chunks = [rng.randbytes(16 * n) for n in (1, 3, 2)]
            aes_jobs.append({"mode": int(mode), "key": rng.randbytes(key_len).hex(),
                             "iv": iv.hex(), "chunks": [c.hex() for c in chunks]})
    signatures = []
    for name, key in keys.items():
        for kind in HASHES:
            for message in messages:
                digest = hash_of(kind, message)
                signatures.append({"key": name, "type": int(kind), "hash": digest.hex(),
                                   "sig": crypto.sign(kind, digest, key).hex()})
    job = {
        "rsa_pem": rsa.save_to_string(), "rsa_pub_pem": rsa.save_to_string(public_only=True),
        "ec_pem": ec.save_to_string(), "ec_pub_pem": ec.save_to_string(public_only=True),
        "messages": [m.hex() for m in messages],
        "hmac_keys": [b"key".hex(), rng.randbytes(100).hex(), rng.randbytes(20).hex()],
        "aes": aes_jobs,
        "our_signatures": signatures,
        "our_ciphertexts": [crypto.encrypt(rsa, rng.randbytes(n)).hex() for n in (0, 1, 64, 245)],
    }
    return job, keys


def run_godot4(binary: Path, tmp_path: Path, job: dict[str, Any]) -> dict[str, Any]:
    project = godot4_project(tmp_path, SCRIPT)
    source, out = tmp_path / "in.json", tmp_path / "out.json"
    source.write_text(json.dumps(job))
    proc = subprocess.run(
        [str(binary), "--headless", "--path", str(project), "--script", f"res://{SCRIPT.name}",
         "--", str(source), str(out)],
        env=godot4_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0 and "PASS" in proc.stdout, proc.stdout + proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(out.read_text())
    return result


#: Godot's answer to each misuse (from the script) -> what we raise for the same call.
def our_misuse_cases(keys: dict[str, CryptoKey]) -> dict[str, Callable[[], object]]:
    rsa, ec = keys["rsa"], keys["ec"]
    rsa_pub = CryptoKey()
    rsa_pub.load_from_string(rsa.save_to_string(public_only=True), public_only=True)
    digest = hash_of(HashingContext.HASH_SHA256, b"m")
    good = crypto.sign(HashingContext.HASH_SHA256, digest, rsa)

    def started_hash() -> HashingContext:
        h = HashingContext()
        h.start(HashingContext.HASH_SHA256)
        return h

    def started_hmac() -> HMACContext:
        m = HMACContext()
        m.start(HashingContext.HASH_SHA256, b"key")
        return m

    def started_aes() -> AESContext:
        a = AESContext()
        a.start(AESContext.MODE_ECB_ENCRYPT, bytes(16))
        return a

    def finished_aes() -> AESContext:
        a = started_aes()
        a.finish()
        a.finish()
        return a

    sha = HashingContext.HASH_SHA256
    return {
        "hashing_update_before_start": lambda: HashingContext().update(b"\1"),
        "hashing_finish_before_start": lambda: HashingContext().finish(),
        "hashing_unknown_type": lambda: HashingContext().start(7),
        "hashing_start_twice": lambda: started_hash().start(sha),
        "hashing_update_empty": lambda: started_hash().update(b""),
        "hmac_update_before_start": lambda: HMACContext().update(b"\1"),
        "hmac_finish_before_start": lambda: HMACContext().finish(),
        "hmac_start_md5": lambda: HMACContext().start(HashingContext.HASH_MD5, b"key"),
        "hmac_empty_key": lambda: HMACContext().start(sha, b""),
        "hmac_start_twice": lambda: started_hmac().start(sha, b"key"),
        "hmac_update_empty": lambda: started_hmac().update(b""),
        "hmac_digest_empty_msg": lambda: crypto.hmac_digest(sha, b"key", b""),
        "hmac_digest_md5": lambda: crypto.hmac_digest(HashingContext.HASH_MD5, b"key", b"m"),
        "aes_update_before_start": lambda: AESContext().update(bytes(16)),
        "aes_key_24": lambda: AESContext().start(AESContext.MODE_ECB_ENCRYPT, bytes(24)),
        "aes_key_empty": lambda: AESContext().start(AESContext.MODE_ECB_ENCRYPT, b""),
        "aes_mode_max": lambda: AESContext().start(AESContext.MODE_MAX, bytes(16)),
        "aes_cbc_iv_15": lambda: AESContext().start(AESContext.MODE_CBC_ENCRYPT, bytes(16),
                                                    bytes(15)),
        "aes_cbc_no_iv": lambda: AESContext().start(AESContext.MODE_CBC_ENCRYPT, bytes(16)),
        "aes_start_twice": lambda: started_aes().start(AESContext.MODE_ECB_ENCRYPT, bytes(16)),
        "aes_update_15": lambda: started_aes().update(bytes(15)),
        "aes_ecb_iv_state": lambda: started_aes().get_iv_state(),
        "aes_update_after_finish": lambda: finished_aes().update(bytes(16)),
        "sign_wrong_hash_size": lambda: crypto.sign(sha, digest[:20], rsa),
        "sign_public_key": lambda: crypto.sign(sha, digest, rsa_pub),
        "sign_empty_key": lambda: crypto.sign(sha, digest, CryptoKey()),
        "verify_wrong_hash_size": lambda: crypto.verify(sha, digest[:20], good, rsa_pub),
        "encrypt_too_long": lambda: crypto.encrypt(rsa_pub, bytes(246)),
        "encrypt_ec": lambda: crypto.encrypt(ec, b"m"),
        "decrypt_public_key": lambda: crypto.decrypt(rsa_pub, crypto.encrypt(rsa_pub, b"m")),
        "decrypt_garbage": lambda: crypto.decrypt(rsa, bytes(256)),
        "decrypt_short": lambda: crypto.decrypt(rsa, bytes(100)),
    }


def test_godot4_crypto_family_both_ways(godot4: Path, tmp_path: Path) -> None:
    rng = random.Random(2026)
    job, keys = make_job(rng)
    out = run_godot4(godot4, tmp_path, job)
    messages = [bytes.fromhex(m) for m in job["messages"]]

    # Hashes and HMACs of the same inputs are the same bytes.
    assert out["hashes"] == [[hash_of(k, m).hex() for k in HASHES] for m in messages]
    hmac_keys = [bytes.fromhex(k) for k in job["hmac_keys"]]
    assert out["hmacs"] == [
        [crypto.hmac_digest(kind, hmac_keys[i % len(hmac_keys)], m).hex()
         for kind in (HashingContext.HASH_SHA1, HashingContext.HASH_SHA256)]
        for i, m in enumerate(messages)
    ]
    # AES: every mode, both key sizes, chained over three updates.
    ours = [aes_run(j["mode"], bytes.fromhex(j["key"]), bytes.fromhex(j["iv"]),
                    [bytes.fromhex(c) for c in j["chunks"]]).hex() for j in job["aes"]]
    assert out["aes"] == ours
    # Godot 4.8-dev's get_iv_state is a stub (always empty); ours returns the CBC state.
    assert set(out["aes_iv_states"]) == {""}

    # Our signatures verify in Godot; our ciphertexts decrypt there.
    assert out["our_signatures_valid"] == [True] * len(job["our_signatures"])
    assert len(job["our_signatures"]) == 2 * 3 * len(messages)
    assert out["our_ciphertexts_decrypted"] == [
        crypto.decrypt(keys["rsa"], bytes.fromhex(c)).hex() for c in job["our_ciphertexts"]]

    # Godot's signatures (our keys and its own generated RSA key) verify here.
    godot_key = CryptoKey()
    godot_key.load_from_string(out["grsa_pem"])
    keys["grsa"] = godot_key
    signatures = out["godot_signatures"]
    assert len(signatures) == 3 * 3 * len(messages)
    for s in signatures:
        key, digest, sig = keys[s["key"]], bytes.fromhex(s["hash"]), bytes.fromhex(s["sig"])
        assert crypto.verify(s["type"], digest, sig, key), s
        tampered = bytes([sig[0] ^ 1]) + sig[1:]
        assert not crypto.verify(s["type"], digest, tampered, key)
        if s["key"] == "ec":
            assert sig[0] == 0x30  # DER, as ours
        else:  # PKCS#1 v1.5 is deterministic: Godot's bytes are ours
            assert sig == crypto.sign(s["type"], digest, key)
    # Godot's RSA ciphertexts (to our key and to its own) decrypt here.
    decrypt_with = {"rsa_pub": keys["rsa"], "grsa": godot_key}
    for c in out["godot_ciphertexts"]:
        assert crypto.decrypt(decrypt_with[c["key"]], bytes.fromhex(c["ct"])).hex() == c["plain"]

    # Where Godot refuses a call (an Error, an empty array, false), we raise
    # a specific exception, never crash.
    godot_misuse = out["misuse"]
    cases = our_misuse_cases(keys)
    assert godot_misuse.pop("constant_time_compare_lengths")["answer"] is False
    assert not crypto.constant_time_compare(b"\1", b"\1\2")
    assert set(godot_misuse) == set(cases)
    assert [name for name, answer in godot_misuse.items() if not answer["refused"]] == []
    for name, call in cases.items():
        try:
            call()
        except errors.DTLSPeerError:
            continue
        pytest.fail(f"{name}: Godot refuses it, we did not raise")


GODOT3_PROBE = Path(__file__).parent / "godot" / "crypto_probe.gd"


def test_godot3_crypto_classes(tmp_path: Path) -> None:
    """Godot 3.2.3 has HashingContext (MD5/SHA-1/SHA-256, same enum values)
    but no AESContext, no HMACContext and no Crypto.sign/verify/encrypt/
    decrypt/hmac_digest/constant_time_compare (all 3.3+/4.x): the probe
    asserts exactly that, and its hashes of our messages equal ours."""
    godot = shutil.which("godot3-server")
    if godot is None:
        pytest.skip("godot3-server not installed")
    rng = random.Random(3)
    messages = [b"abc", rng.randbytes(1000), b"x", rng.randbytes(64)]
    source, out = tmp_path / "in.txt", tmp_path / "out.txt"
    source.write_text("".join(m.hex() + "\n" for m in messages))
    proc = subprocess.run(
        [godot, "--no-window", "-s", str(GODOT3_PROBE), f"--in={source}", f"--out={out}"],
        env=dict(os.environ, HOME=str(tmp_path)), cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0 and "PASS" in proc.stdout, proc.stdout + proc.stderr
    lines = out.read_text().splitlines()
    facts = dict(line.split(" ", 1) for line in lines if not line.startswith("H "))
    assert facts == {
        "class:HashingContext": "true", "class:AESContext": "false",
        "class:HMACContext": "false", "class:Crypto": "true",
        "method:sign": "false", "method:verify": "false", "method:encrypt": "false",
        "method:decrypt": "false", "method:hmac_digest": "false",
        "method:constant_time_compare": "false",
        "enum:HASH_MD5": "0", "enum:HASH_SHA1": "1", "enum:HASH_SHA256": "2",
        "misuse:start_twice": "refused", "misuse:update_before_start": "refused",
        "misuse:finish_before_start": "refused",
    }, lines
    hashes = [line[2:].split() for line in lines if line.startswith("H ")]
    assert hashes == [[hash_of(k, m).hex() for k in HASHES] for m in messages]

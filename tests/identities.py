"""Server identities (key + self-signed certificate) shared by the DTLS, host
and asyncio tests."""

from __future__ import annotations

from dtlspeer import Crypto, CryptoKey, X509Certificate

Identity = tuple[CryptoKey, X509Certificate]


def make_identity(kind: str = "ec", name: str = "game.test") -> Identity:
    """A P-256 (``kind="ec"``) or RSA-2048 (``"rsa"``) key and a certificate
    for ``name``, 127.0.0.1 and ::1, valid from 2024 to 2099."""
    crypto = Crypto()
    key = crypto.generate_rsa(2048) if kind == "rsa" else crypto.generate_ec("P-256")
    cert = crypto.generate_self_signed_certificate(
        key,
        f"CN={name},O=dtlspeer,C=IT",
        "20240101000000",
        "20991231235959",
        dns_names=[name],
        ip_addresses=["127.0.0.1", "::1"],
    )
    return key, cert

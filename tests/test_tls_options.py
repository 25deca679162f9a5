"""TLSOptions factories, getters, validation and the lock on their key/cert."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from crypto_material import make_material
from dtlspeer import Crypto, CryptoKey, TLSOptions, X509Certificate, errors


@pytest.fixture(scope="module")
def mat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_material(tmp_path_factory.mktemp("openssl"))


@pytest.fixture()
def key() -> CryptoKey:
    return Crypto().generate_ec("P-256")


@pytest.fixture()
def cert(key: CryptoKey) -> X509Certificate:
    return Crypto().generate_self_signed_certificate(key, "CN=server,O=test,C=IT")


def test_server_options_and_getters(key: CryptoKey, cert: X509Certificate) -> None:
    opts = TLSOptions.server(key, cert)
    assert opts.is_server() and not opts.is_unsafe_client()
    assert opts.get_private_key() is key and opts.get_own_certificate() is cert
    assert opts.get_trusted_ca_chain() is None and opts.get_common_name_override() == ""
    assert opts._effective_ca_chain() is None


def test_server_accepts_an_openssl_chain_with_its_leaf_key(mat: Path) -> None:
    chain = X509Certificate()
    chain.load(mat / "chain.pem")
    leaf_key = CryptoKey()
    leaf_key.load(mat / "ec256_pkcs8.pem")
    assert len(TLSOptions.server(leaf_key, chain).get_own_certificate()) == 3
    root_key = CryptoKey()
    root_key.load(mat / "rsa_pkcs1.pem")  # signs the root, not the leaf
    with pytest.raises(errors.KeyMismatchError):
        TLSOptions.server(root_key, chain)


def test_server_rejects_mismatched_public_only_and_empty(key: CryptoKey,
                                                         cert: X509Certificate) -> None:
    other = Crypto().generate_ec("P-256")
    with pytest.raises(errors.KeyMismatchError):
        TLSOptions.server(other, cert)
    with pytest.raises(errors.KeyMismatchError):
        TLSOptions.server(Crypto().generate_ec("P-384"), cert)  # other type of curve
    public = cert.public_key
    with pytest.raises(errors.InvalidArgumentError):
        TLSOptions.server(public, cert)
    with pytest.raises(errors.InvalidArgumentError):
        TLSOptions.server(CryptoKey(), cert)
    with pytest.raises(errors.InvalidArgumentError):
        TLSOptions.server(key, X509Certificate())
    with pytest.raises(errors.ArgumentTypeError):
        TLSOptions.server(cert, key)  # type: ignore[arg-type]
    with pytest.raises(errors.ArgumentTypeError):
        TLSOptions.server(key.save_to_string(), cert)  # type: ignore[arg-type]


def test_client_options(cert: X509Certificate) -> None:
    opts = TLSOptions.client(cert, "server")
    assert not opts.is_server() and not opts.is_unsafe_client()
    assert opts.get_trusted_ca_chain() is cert and opts.get_common_name_override() == "server"
    assert opts.get_private_key() is None and opts.get_own_certificate() is None
    assert opts._effective_ca_chain() is cert


def test_client_without_chain_uses_the_system_store() -> None:
    opts = TLSOptions.client()
    assert opts.get_trusted_ca_chain() is None  # as Godot: the getter shows what was given
    store = opts._effective_ca_chain()
    assert store is not None and len(store) >= 1
    assert TLSOptions.client()._effective_ca_chain() is store  # loaded once


def test_unsafe_client(cert: X509Certificate) -> None:
    opts = TLSOptions.client_unsafe()
    assert opts.is_unsafe_client() and not opts.is_server()
    assert opts.get_trusted_ca_chain() is None and opts._effective_ca_chain() is None
    assert TLSOptions.client_unsafe(cert)._effective_ca_chain() is cert


def test_client_argument_validation(cert: X509Certificate) -> None:
    with pytest.raises(errors.ArgumentTypeError):
        TLSOptions.client("not a cert")  # type: ignore[arg-type]
    with pytest.raises(errors.ArgumentTypeError):
        TLSOptions.client(cert, common_name_override=None)  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgumentError):
        TLSOptions.client(cert, "bad\0name")
    with pytest.raises(errors.InvalidArgumentError):
        TLSOptions.client(X509Certificate())
    with pytest.raises(errors.InvalidArgumentError):
        TLSOptions.client_unsafe(X509Certificate())


def test_constructor_is_not_public_and_objects_are_immutable(cert: X509Certificate) -> None:
    with pytest.raises(errors.ArgumentTypeError):
        TLSOptions()
    opts = TLSOptions.client(cert)
    with pytest.raises(AttributeError):
        opts._mode = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del opts._ca_chain
    with pytest.raises(AttributeError):
        opts.extra = 1  # type: ignore[attr-defined]
    assert opts.get_trusted_ca_chain() is cert


def test_keys_and_certificates_in_use_cannot_be_reloaded(key: CryptoKey,
                                                         cert: X509Certificate) -> None:
    replacement = Crypto().generate_ec("P-256")
    opts = TLSOptions.server(key, cert)
    opts2 = TLSOptions.client(cert)
    with pytest.raises(errors.AlreadyInUseError):
        key.load_from_string(replacement.save_to_string())
    with pytest.raises(errors.AlreadyInUseError):
        cert.load_from_string(cert.save_to_string())
    assert opts.get_private_key().save_to_der() == key.save_to_der()  # type: ignore[union-attr]
    del opts
    gc.collect()
    key.load_from_string(replacement.save_to_string())  # free again
    with pytest.raises(errors.AlreadyInUseError):
        cert.load_from_string(cert.save_to_string())  # still used by opts2
    del opts2
    gc.collect()
    cert.load_from_string(cert.save_to_string())

"""``TLSOptions``: what a DTLS client or server verifies and presents (Godot 4).

Build one with :meth:`TLSOptions.client`, :meth:`TLSOptions.client_unsafe` or
:meth:`TLSOptions.server`; the constructor is not public (as in Godot).
Objects are immutable. While a ``TLSOptions`` exists, the keys and
certificates it holds are locked against reloading (Godot's lock), so a
running DTLS configuration never sees its key change under it.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from typing import Any, Callable, Optional

from . import errors
from ._binding import check, ffi, lib
from .crypto import CryptoKey, X509Certificate

__all__ = ["PeerCertificate", "TLSOptions"]

_MODE_CLIENT = 0
_MODE_CLIENT_UNSAFE = 1
_MODE_SERVER = 2

_FACTORY_TOKEN = object()

# TLSOptions.server(client_auth=...) -> the native DP_CLIENT_AUTH_* value.
_CLIENT_AUTH = {
    "none": lib.DP_CLIENT_AUTH_NONE,
    "optional": lib.DP_CLIENT_AUTH_OPTIONAL,
    "required": lib.DP_CLIENT_AUTH_REQUIRED,
}

_system_store_lock = threading.Lock()
_system_store: Optional[X509Certificate] = None


def _system_ca_store() -> X509Certificate:
    """The system CA store, loaded once per process and then shared."""
    global _system_store
    with _system_store_lock:
        if _system_store is None:
            store = X509Certificate.from_system_store()
            store._acquire_use()  # shared for the process lifetime: never reloaded
            _system_store = store
        return _system_store


def _check_chain(chain: Any, name: str) -> Optional[X509Certificate]:
    if chain is None:
        return None
    if not isinstance(chain, X509Certificate):
        raise errors.ArgumentTypeError(
            f"{name} must be an X509Certificate or None, not {type(chain).__name__}")
    if len(chain) == 0:
        raise errors.InvalidArgumentError(f"{name} is an empty X509Certificate")
    return chain


def _check_own_pair(key: Optional[CryptoKey], certificate: Optional[X509Certificate],
                    what: str) -> None:
    """A client certificate chain and its private key: both or neither, matching."""
    if key is None and certificate is None:
        return
    if key is None or certificate is None:
        raise errors.InvalidArgumentError(f"{what}: key and certificate go together")
    if not isinstance(key, CryptoKey):
        raise errors.ArgumentTypeError(f"key must be a CryptoKey, not {type(key).__name__}")
    if not isinstance(certificate, X509Certificate):
        raise errors.ArgumentTypeError(
            f"certificate must be an X509Certificate, not {type(certificate).__name__}")
    if key.is_empty() or key.is_public_only():
        raise errors.InvalidArgumentError(f"{what}: key must be a private key")
    if len(certificate) == 0:
        raise errors.InvalidArgumentError(f"{what}: certificate is empty")
    with key._mutex, certificate._mutex:
        check(lib.dp_key_matches_cert(key._handle, certificate._handle, 0), what)


@dataclasses.dataclass(frozen=True)
class PeerCertificate:
    """A client's verified certificate, as a server with ``client_auth`` sees
    it (ours; not in Godot). Only these fields are kept, not the chain.

    ``fingerprint`` is the SHA-256 of the leaf's DER (what ``openssl x509
    -fingerprint -sha256`` prints); it is known after every handshake.
    ``subject`` (RFC 4514-like, e.g. "CN=player1, O=Game") and ``san``
    ("DNS:...", "IP:...", "URI:...", "email:...") come from the full
    handshake and are empty after a resumed one (the ticket carries only
    the fingerprint): identify clients by fingerprint, or look the names up
    by it, if you resume sessions."""

    subject: str
    san: tuple[str, ...]
    fingerprint: bytes

    @property
    def fingerprint_hex(self) -> str:
        """The fingerprint as colon-separated hex (OpenSSL's style)."""
        return ":".join(f"{b:02X}" for b in self.fingerprint)


def read_peer_certificate(getter: Callable[[Any, int, Any, int, Any], int]
                          ) -> Optional[PeerCertificate]:
    """Read a verified client certificate through ``getter(subject, cap,
    san, cap, fingerprint)`` (a dp_*_peer_certificate call); None if none."""
    subject = ffi.new("char[]", lib.DP_PEER_SUBJECT_MAX)
    san = ffi.new("char[]", lib.DP_PEER_SAN_MAX)
    fingerprint = ffi.new("unsigned char[]", lib.DP_FINGERPRINT_LEN)
    mask = check(getter(subject, lib.DP_PEER_SUBJECT_MAX, san, lib.DP_PEER_SAN_MAX, fingerprint),
                 "get_peer_certificate")
    if not mask & 2:
        return None
    san_text = ffi.string(san).decode("ascii", "replace")
    return PeerCertificate(
        subject=ffi.string(subject).decode("ascii", "replace"),
        san=tuple(san_text.split(", ")) if san_text else (),
        fingerprint=bytes(ffi.buffer(fingerprint, lib.DP_FINGERPRINT_LEN)),
    )


def _release_all(objects: tuple[Any, ...]) -> None:
    for obj in objects:
        obj._release_use()


class TLSOptions:
    """TLS settings for a DTLS client or server (Godot ``TLSOptions``).

    Differences from Godot: :meth:`server` checks that the key is private
    and belongs to the certificate's leaf (raising instead of failing later
    in the handshake); the object is immutable and hashable by identity.
    ``trusted_chain=None`` means the operating system's CA store (Godot
    falls back to its project bundle, then the OS store, then Mozilla's).
    """

    __slots__ = ("__weakref__", "_ca_chain", "_cert", "_client_auth", "_cn_override", "_frozen",
                 "_key", "_mode")
    # Set once by _make() (through __setattr__, before _frozen), never changed.
    _ca_chain: Optional[X509Certificate]  # client: trust anchors; server: client_ca
    _cert: Optional[X509Certificate]
    _client_auth: str
    _cn_override: str
    _frozen: bool
    _key: Optional[CryptoKey]
    _mode: int

    def __init__(self, *_args: Any, _token: object = None, **_kwargs: Any) -> None:
        """Not public: use :meth:`client`, :meth:`client_unsafe` or :meth:`server`."""
        if _token is not _FACTORY_TOKEN:
            raise errors.ArgumentTypeError(
                "TLSOptions is built with TLSOptions.client(), client_unsafe() or server()")
        object.__setattr__(self, "_frozen", False)

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_frozen", True):
            raise AttributeError("TLSOptions is immutable")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise AttributeError("TLSOptions is immutable")

    @classmethod
    def _make(cls, mode: int, key: Optional[CryptoKey], cert: Optional[X509Certificate],
              ca_chain: Optional[X509Certificate], cn_override: str,
              client_auth: str = "none") -> TLSOptions:
        self = cls(_token=_FACTORY_TOKEN)
        self._mode = mode
        self._client_auth = client_auth
        self._key = key
        self._cert = cert
        self._ca_chain = ca_chain
        self._cn_override = cn_override
        self._frozen = True  # through __setattr__ while still unfrozen
        used = tuple(o for o in (key, cert, ca_chain) if o is not None)
        for obj in used:
            obj._acquire_use()
        weakref.finalize(self, _release_all, used)
        return self

    # -- factories ---------------------------------------------------------

    @classmethod
    def client(cls, trusted_chain: Optional[X509Certificate] = None,
               common_name_override: str = "", *, key: Optional[CryptoKey] = None,
               certificate: Optional[X509Certificate] = None) -> TLSOptions:
        """A verifying client: the server's certificate must chain to
        ``trusted_chain`` (``None``: the system CA store) and match the host
        name, or ``common_name_override`` when it is not empty.

        ``key`` and ``certificate`` (ours; Godot clients cannot present a
        certificate): the client certificate chain (leaf first) and its
        private key, sent when the server asks for one (mutual
        authentication, ``TLSOptions.server(client_auth=...)``)."""
        chain = _check_chain(trusted_chain, "trusted_chain")
        if not isinstance(common_name_override, str):
            raise errors.ArgumentTypeError(
                f"common_name_override must be str, not {type(common_name_override).__name__}")
        if "\0" in common_name_override:
            raise errors.InvalidArgumentError("common_name_override contains a NUL character")
        _check_own_pair(key, certificate, "client certificate")
        return cls._make(_MODE_CLIENT, key, certificate, chain, common_name_override)

    @classmethod
    def client_unsafe(cls, trusted_chain: Optional[X509Certificate] = None, *,
                      key: Optional[CryptoKey] = None,
                      certificate: Optional[X509Certificate] = None) -> TLSOptions:
        """A client that never checks the name; with ``trusted_chain=None`` it
        accepts any certificate (for development only, as in Godot).
        ``key``/``certificate``: as in :meth:`client`."""
        chain = _check_chain(trusted_chain, "trusted_chain")
        _check_own_pair(key, certificate, "client certificate")
        return cls._make(_MODE_CLIENT_UNSAFE, key, certificate, chain, "")

    @classmethod
    def server(cls, key: CryptoKey, certificate: X509Certificate, *,
               client_ca: Optional[X509Certificate] = None,
               client_auth: str = "none") -> TLSOptions:
        """A server presenting ``certificate`` (its full chain, leaf first) with
        ``key``. Raises :class:`~dtlspeer.errors.InvalidArgumentError` for an
        empty or public-only key or an empty certificate, and
        :class:`~dtlspeer.errors.KeyMismatchError` when the key does not belong
        to the leaf certificate.

        Mutual authentication (ours; Godot servers never ask for a client
        certificate): ``client_auth="required"`` asks every client for a
        certificate chaining to ``client_ca`` and fails the handshake
        without one (the client gets an alert, the server's reason says
        "no client certificate" or why verification failed);
        ``"optional"`` asks but lets clients without a valid certificate
        in (the peer's ``get_peer_certificate()`` is then None);
        ``"none"`` (default, Godot's behaviour) does not ask. ``client_ca``
        is required unless ``client_auth="none"``. Client certificates are
        checked for chain and validity dates only: no name is matched (use
        the exposed subject, SAN or fingerprint to decide who it is)."""
        if not isinstance(key, CryptoKey):
            raise errors.ArgumentTypeError(f"key must be a CryptoKey, not {type(key).__name__}")
        if not isinstance(certificate, X509Certificate):
            raise errors.ArgumentTypeError(
                f"certificate must be an X509Certificate, not {type(certificate).__name__}")
        if key.is_empty():
            raise errors.InvalidArgumentError("key is empty")
        if key.is_public_only():
            raise errors.InvalidArgumentError("a server needs a private key, not a public-only one")
        if len(certificate) == 0:
            raise errors.InvalidArgumentError("certificate is empty")
        if not isinstance(client_auth, str) or client_auth not in _CLIENT_AUTH:
            raise errors.InvalidArgumentError(
                f"client_auth must be 'none', 'optional' or 'required', not {client_auth!r}")
        ca = _check_chain(client_ca, "client_ca")
        if client_auth != "none" and ca is None:
            raise errors.InvalidArgumentError(
                f"client_auth={client_auth!r} needs client_ca (the CA chain client "
                "certificates must chain to)")
        with key._mutex, certificate._mutex:
            check(lib.dp_key_matches_cert(key._handle, certificate._handle, 0),
                  "TLSOptions.server")
        return cls._make(_MODE_SERVER, key, certificate, ca if client_auth != "none" else None,
                         "", client_auth)

    # -- getters (Godot names) ---------------------------------------------

    def is_server(self) -> bool:
        """True for options made by :meth:`server`."""
        return self._mode == _MODE_SERVER

    def is_unsafe_client(self) -> bool:
        """True for options made by :meth:`client_unsafe`."""
        return self._mode == _MODE_CLIENT_UNSAFE

    def get_common_name_override(self) -> str:
        """The name checked instead of the host name ("" when none)."""
        return self._cn_override

    def get_trusted_ca_chain(self) -> Optional[X509Certificate]:
        """The chain given to :meth:`client`/:meth:`client_unsafe`, or ``None``
        (servers: see :meth:`get_client_ca`)."""
        return None if self._mode == _MODE_SERVER else self._ca_chain

    def get_private_key(self) -> Optional[CryptoKey]:
        """The server's key, or a client's certificate key (``None`` if none)."""
        return self._key

    def get_own_certificate(self) -> Optional[X509Certificate]:
        """The server's certificate chain, or a client's (``None`` if none)."""
        return self._cert

    def get_client_auth(self) -> str:
        """Server: "none", "optional" or "required" (ours; see :meth:`server`)."""
        return self._client_auth

    def get_client_ca(self) -> Optional[X509Certificate]:
        """Server: the CA chain client certificates are verified against (ours)."""
        return self._ca_chain if self._mode == _MODE_SERVER else None

    # -- for the DTLS layer ------------------------------------------------

    def _effective_ca_chain(self) -> Optional[X509Certificate]:
        """The CA chain to verify against: the given one, the system store for
        a verifying client without one, ``None`` when nothing is verified
        (server, or unsafe client without a chain)."""
        if self._mode == _MODE_SERVER:
            return None
        if self._ca_chain is not None:
            return self._ca_chain
        if self._mode == _MODE_CLIENT:
            return _system_ca_store()
        return None

    def __repr__(self) -> str:
        kind = {_MODE_CLIENT: "client", _MODE_CLIENT_UNSAFE: "client_unsafe",
                _MODE_SERVER: "server"}[self._mode]
        return f"<TLSOptions {kind}>"

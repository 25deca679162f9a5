"""``TLSOptions``: what a DTLS client or server verifies and presents (Godot 4).

Build one with :meth:`TLSOptions.client`, :meth:`TLSOptions.client_unsafe` or
:meth:`TLSOptions.server`; the constructor is not public (as in Godot).
Objects are immutable. While a ``TLSOptions`` exists, the keys and
certificates it holds are locked against reloading (Godot's lock), so a
running DTLS configuration never sees its key change under it.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Optional

from . import errors
from ._binding import check, lib
from .crypto import CryptoKey, X509Certificate

__all__ = ["TLSOptions"]

_MODE_CLIENT = 0
_MODE_CLIENT_UNSAFE = 1
_MODE_SERVER = 2

_FACTORY_TOKEN = object()

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

    __slots__ = ("__weakref__", "_ca_chain", "_cert", "_cn_override", "_frozen", "_key", "_mode")
    # Set once by _make() (through __setattr__, before _frozen), never changed.
    _ca_chain: Optional[X509Certificate]
    _cert: Optional[X509Certificate]
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
              ca_chain: Optional[X509Certificate], cn_override: str) -> TLSOptions:
        self = cls(_token=_FACTORY_TOKEN)
        self._mode = mode
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
               common_name_override: str = "") -> TLSOptions:
        """A verifying client: the server's certificate must chain to
        ``trusted_chain`` (``None``: the system CA store) and match the host
        name, or ``common_name_override`` when it is not empty."""
        chain = _check_chain(trusted_chain, "trusted_chain")
        if not isinstance(common_name_override, str):
            raise errors.ArgumentTypeError(
                f"common_name_override must be str, not {type(common_name_override).__name__}")
        if "\0" in common_name_override:
            raise errors.InvalidArgumentError("common_name_override contains a NUL character")
        return cls._make(_MODE_CLIENT, None, None, chain, common_name_override)

    @classmethod
    def client_unsafe(cls, trusted_chain: Optional[X509Certificate] = None) -> TLSOptions:
        """A client that never checks the name; with ``trusted_chain=None`` it
        accepts any certificate (for development only, as in Godot)."""
        chain = _check_chain(trusted_chain, "trusted_chain")
        return cls._make(_MODE_CLIENT_UNSAFE, None, None, chain, "")

    @classmethod
    def server(cls, key: CryptoKey, certificate: X509Certificate) -> TLSOptions:
        """A server presenting ``certificate`` (its full chain, leaf first) with
        ``key``. Raises :class:`~dtlspeer.errors.InvalidArgumentError` for an
        empty or public-only key or an empty certificate, and
        :class:`~dtlspeer.errors.KeyMismatchError` when the key does not belong
        to the leaf certificate."""
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
        with key._mutex, certificate._mutex:
            check(lib.dp_key_matches_cert(key._handle, certificate._handle, 0),
                  "TLSOptions.server")
        return cls._make(_MODE_SERVER, key, certificate, None, "")

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
        """The chain given to :meth:`client`/:meth:`client_unsafe`, or ``None``."""
        return self._ca_chain

    def get_private_key(self) -> Optional[CryptoKey]:
        """The server's key (``None`` for clients)."""
        return self._key

    def get_own_certificate(self) -> Optional[X509Certificate]:
        """The server's certificate chain (``None`` for clients)."""
        return self._cert

    # -- for the DTLS layer ------------------------------------------------

    def _effective_ca_chain(self) -> Optional[X509Certificate]:
        """The CA chain to verify against: the given one, the system store for
        a verifying client without one, ``None`` when nothing is verified
        (server, or unsafe client without a chain)."""
        if self._ca_chain is not None:
            return self._ca_chain
        if self._mode == _MODE_CLIENT:
            return _system_ca_store()
        return None

    def __repr__(self) -> str:
        kind = {_MODE_CLIENT: "client", _MODE_CLIENT_UNSAFE: "client_unsafe",
                _MODE_SERVER: "server"}[self._mode]
        return f"<TLSOptions {kind}>"

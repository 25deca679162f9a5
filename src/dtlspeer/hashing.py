"""Godot 4's ``HashingContext`` and ``HMACContext``: MD5, SHA-1 and SHA-256
hashes and SHA-1/SHA-256 HMACs computed in pieces, on Mbed TLS.

Godot's argument rules are kept (Godot 4.x, confirmed against the 4.8-dev
runtime); where Godot returns an ``Error`` or an empty array we raise:

* ``start`` on a started context: :class:`~dtlspeer.errors.AlreadyInUseError`.
* An unknown hash type: :class:`~dtlspeer.errors.UnsupportedError`; HMAC with
  MD5 (Godot refuses it) or an empty key:
  :class:`~dtlspeer.errors.InvalidArgumentError`.
* ``update``/``finish`` before ``start`` (or after ``finish``):
  :class:`~dtlspeer.errors.StateError`.
* ``update`` with an empty chunk: :class:`~dtlspeer.errors.InvalidArgumentError`
  (Godot fails it too); the context stays usable.

``finish`` returns the digest and makes the context startable again.
"""

from __future__ import annotations

import enum
import threading
from typing import Any, Union

from . import errors
from ._binding import check, ffi, lib, to_bytes

__all__ = ["HMACContext", "HashType", "HashingContext"]

BytesLike = Union[bytes, bytearray, memoryview]


class HashType(enum.IntEnum):
    """``HashingContext.HashType`` (Godot values), also taken by ``Crypto.sign``,
    ``Crypto.verify`` and ``Crypto.hmac_digest``."""

    HASH_MD5 = 0
    HASH_SHA1 = 1
    HASH_SHA256 = 2


#: Digest size in bytes of each hash type.
DIGEST_SIZES = {HashType.HASH_MD5: 16, HashType.HASH_SHA1: 20, HashType.HASH_SHA256: 32}
_HMAC_TYPES = (HashType.HASH_SHA1, HashType.HASH_SHA256)


def hash_type_of(value: Any, name: str = "hash_type") -> HashType:
    """``value`` as a :class:`HashType`: an ``int`` (not ``bool``) Godot knows;
    ArgumentTypeError / UnsupportedError otherwise."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise errors.ArgumentTypeError(f"{name} must be int, not {type(value).__name__}")
    try:
        return HashType(value)
    except ValueError:
        raise errors.UnsupportedError(
            f"{name} {value} is not HASH_MD5 (0), HASH_SHA1 (1) or HASH_SHA256 (2)") from None


def _nonempty(data: Any, name: str) -> bytes:
    raw = to_bytes(data, name)
    if not raw:
        raise errors.InvalidArgumentError(f"{name} must not be empty (Godot refuses it too)")
    return raw


class _DigestContext:
    """The native digest handle, its lock and the started/idle state."""

    _what = "HashingContext"

    def __init__(self) -> None:
        handle = lib.dp_digest_new()
        if handle == ffi.NULL:
            raise errors.OutOfMemoryError(f"cannot allocate a {self._what}")
        self._handle = ffi.gc(handle, lib.dp_digest_free)
        self._lock = threading.Lock()
        self._size = 0

    def _start(self, hash_type: HashType, key: bytes, hmac: bool) -> None:
        with self._lock:
            if lib.dp_digest_active(self._handle):
                raise errors.AlreadyInUseError(
                    f"{self._what}.start: already started; call finish() first")
            check(lib.dp_digest_start(self._handle, int(hash_type), int(hmac), key, len(key)),
                  f"{self._what}.start")
            self._size = DIGEST_SIZES[hash_type]

    def _update(self, data: Any, name: str) -> None:
        raw = to_bytes(data, name)
        with self._lock:
            self._require_started("update")
            if not raw:
                raise errors.InvalidArgumentError(
                    f"{self._what}.update: {name} must not be empty (Godot refuses it too)")
            check(lib.dp_digest_update(self._handle, raw, len(raw)), f"{self._what}.update")

    def finish(self) -> bytes:
        """The digest of everything given to ``update`` since ``start``; the
        context is idle again. :class:`~dtlspeer.errors.StateError` if not
        started (Godot returns an empty array)."""
        with self._lock:
            self._require_started("finish")
            out = ffi.new("unsigned char[]", lib.DP_HASH_MAX_SIZE)
            size = check(lib.dp_digest_finish(self._handle, out, lib.DP_HASH_MAX_SIZE),
                         f"{self._what}.finish")
            return bytes(ffi.buffer(out, size))

    def _require_started(self, method: str) -> None:
        if not lib.dp_digest_active(self._handle):
            raise errors.StateError(f"{self._what}.{method}: not started; call start() first")


class HashingContext(_DigestContext):
    """A hash computed in pieces (Godot ``HashingContext``): ``start(type)``,
    ``update(chunk)`` any number of times, ``finish()`` -> digest.

    Differences from Godot: errors raise (see :mod:`dtlspeer.hashing`);
    chunks may be any bytes-like object."""

    HashType = HashType
    HASH_MD5 = HashType.HASH_MD5
    HASH_SHA1 = HashType.HASH_SHA1
    HASH_SHA256 = HashType.HASH_SHA256

    _what = "HashingContext"

    def start(self, type: int) -> None:
        """Begin a hash of ``type`` (``HASH_MD5``, ``HASH_SHA1`` or ``HASH_SHA256``)."""
        self._start(hash_type_of(type, "type"), b"", hmac=False)

    def update(self, chunk: BytesLike) -> None:
        """Feed the next non-empty piece of data."""
        self._update(chunk, "chunk")


class HMACContext(_DigestContext):
    """An HMAC computed in pieces (Godot ``HMACContext``): ``start(hash_type,
    key)``, ``update(data)`` any number of times, ``finish()`` -> MAC.

    As in Godot only ``HASH_SHA1`` and ``HASH_SHA256`` are accepted and the key
    must not be empty (any other length is fine: standard HMAC key handling).
    Differences from Godot: errors raise (see :mod:`dtlspeer.hashing`)."""

    _what = "HMACContext"

    def start(self, hash_type: int, key: BytesLike) -> None:
        """Begin an HMAC with ``key``. MD5, an unknown type or an empty key:
        :class:`~dtlspeer.errors.InvalidArgumentError` (Godot's
        ``ERR_INVALID_PARAMETER``); already started:
        :class:`~dtlspeer.errors.AlreadyInUseError`."""
        kind = hmac_type_of(hash_type)
        self._start(kind, _nonempty(key, "key"), hmac=True)

    def update(self, data: BytesLike) -> None:
        """Feed the next non-empty piece of the message."""
        self._update(data, "data")


def hmac_type_of(value: Any) -> HashType:
    """A hash type HMAC accepts (SHA-1, SHA-256), as Godot's HMACContext."""
    try:
        kind = hash_type_of(value)
    except errors.UnsupportedError as exc:
        raise errors.InvalidArgumentError(str(exc)) from None
    if kind not in _HMAC_TYPES:
        raise errors.InvalidArgumentError(
            f"HMAC supports HASH_SHA1 and HASH_SHA256 only (as Godot), not {kind.name}")
    return kind

"""Godot 4's ``AESContext``: AES-128/256 in ECB or CBC mode, without padding,
on Mbed TLS (AES-NI when the CPU has it).

Godot's rules are kept; where Godot returns an ``Error`` or an empty array
we raise:

* ``start`` on a started context: :class:`~dtlspeer.errors.AlreadyInUseError`;
  a mode outside ``MODE_ECB_ENCRYPT``..``MODE_CBC_DECRYPT``, a key that is not
  16 or 32 bytes, or a CBC IV that is not 16 bytes:
  :class:`~dtlspeer.errors.InvalidArgumentError`. An IV given to an ECB mode
  is ignored (Godot prints a warning).
* ``update`` before ``start`` or after ``finish``:
  :class:`~dtlspeer.errors.StateError`; data whose length is not a multiple
  of 16: :class:`~dtlspeer.errors.InvalidArgumentError`. Empty data gives
  empty output. Nothing is padded or unpadded.
* ``finish`` may be called any number of times.

``get_iv_state`` returns the CBC chaining value (the last ciphertext block,
i.e. the IV the next ``update`` continues from), as Godot 4.0-4.7 do; in Godot
4.8-dev it always returns an empty array. Outside CBC it
raises :class:`~dtlspeer.errors.StateError` (Godot: an empty array).
"""

from __future__ import annotations

import enum
import threading
from typing import Union

from . import errors
from ._binding import check, ffi, lib, to_bytes

__all__ = ["AESContext"]

BytesLike = Union[bytes, bytearray, memoryview]
_BLOCK = 16


class _Mode(enum.IntEnum):
    """``AESContext.Mode`` (Godot values)."""

    MODE_ECB_ENCRYPT = 0
    MODE_ECB_DECRYPT = 1
    MODE_CBC_ENCRYPT = 2
    MODE_CBC_DECRYPT = 3
    MODE_MAX = 4


_CBC = (_Mode.MODE_CBC_ENCRYPT, _Mode.MODE_CBC_DECRYPT)


class AESContext:
    """AES encryption/decryption in ECB or CBC mode (Godot ``AESContext``):
    ``start(mode, key, iv)``, ``update(data)`` any number of times (CBC chains
    across calls), ``finish()``.

    Differences from Godot: errors raise (see :mod:`dtlspeer.aes`);
    ``get_iv_state`` works as in Godot 4.0-4.7 (4.8-dev returns nothing)."""

    Mode = _Mode
    MODE_ECB_ENCRYPT = _Mode.MODE_ECB_ENCRYPT
    MODE_ECB_DECRYPT = _Mode.MODE_ECB_DECRYPT
    MODE_CBC_ENCRYPT = _Mode.MODE_CBC_ENCRYPT
    MODE_CBC_DECRYPT = _Mode.MODE_CBC_DECRYPT
    MODE_MAX = _Mode.MODE_MAX

    def __init__(self) -> None:
        """An idle context."""
        handle = lib.dp_aes_new()
        if handle == ffi.NULL:
            raise errors.OutOfMemoryError("cannot allocate an AESContext")
        self._handle = ffi.gc(handle, lib.dp_aes_free)
        self._lock = threading.Lock()

    def start(self, mode: int, key: BytesLike, iv: BytesLike = b"") -> None:
        """Begin with ``mode`` (``MODE_*``), a 16- or 32-byte ``key`` (AES-128 or
        AES-256) and, for CBC, a 16-byte ``iv``."""
        if not isinstance(mode, int) or isinstance(mode, bool):
            raise errors.ArgumentTypeError(f"mode must be int, not {type(mode).__name__}")
        raw_key = to_bytes(key, "key")
        raw_iv = to_bytes(iv, "iv")
        with self._lock:
            if lib.dp_aes_mode(self._handle) >= 0:
                raise errors.AlreadyInUseError(
                    "AESContext.start: already started; call finish() first")
            if not 0 <= mode < _Mode.MODE_MAX:
                raise errors.InvalidArgumentError(
                    f"mode {mode} is not MODE_ECB_ENCRYPT..MODE_CBC_DECRYPT (0..3)")
            if len(raw_key) not in (16, 32):
                raise errors.InvalidArgumentError(
                    f"key must be 16 or 32 bytes (AES-128 or AES-256), not {len(raw_key)}")
            if mode in _CBC and len(raw_iv) != _BLOCK:
                raise errors.InvalidArgumentError(
                    f"CBC needs a 16-byte iv, not {len(raw_iv)} bytes")
            iv_arg = raw_iv if mode in _CBC else ffi.NULL
            check(lib.dp_aes_start(self._handle, mode, raw_key, len(raw_key), iv_arg,
                                   len(raw_iv) if mode in _CBC else 0),
                  "AESContext.start")

    def update(self, data: BytesLike) -> bytes:
        """Encrypt or decrypt ``data`` (a multiple of 16 bytes; may be empty);
        the output has the same length."""
        raw = to_bytes(data, "data")
        with self._lock:
            if lib.dp_aes_mode(self._handle) < 0:
                raise errors.StateError("AESContext.update: not started; call start() first")
            if len(raw) % _BLOCK:
                raise errors.InvalidArgumentError(
                    f"data length must be a multiple of 16 (no padding), not {len(raw)}")
            if not raw:
                return b""
            out = ffi.new("unsigned char[]", len(raw))
            check(lib.dp_aes_update(self._handle, raw, len(raw), out, len(raw)),
                  "AESContext.update")
            return bytes(ffi.buffer(out, len(raw)))

    def get_iv_state(self) -> bytes:
        """The 16-byte CBC chaining value: the IV after the last ``update``
        (before any, the ``iv`` given to ``start``)."""
        with self._lock:
            out = ffi.new("unsigned char[]", _BLOCK)
            code = lib.dp_aes_iv_state(self._handle, out, _BLOCK)
            if code == lib.DP_ERR_BAD_STATE:
                raise errors.StateError(
                    "AESContext.get_iv_state: only a context started in a CBC mode has one")
            n = check(code, "AESContext.get_iv_state")
            return bytes(ffi.buffer(out, n))

    def finish(self) -> None:
        """Wipe the key and IV; the context can be started again. Idempotent."""
        with self._lock:
            lib.dp_aes_finish(self._handle)


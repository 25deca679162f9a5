"""Exceptions raised by dtlspeer.

Godot reports failures as ``Error`` return codes; dtlspeer raises instead.
The rule (as in h11): *local* misuse raises (a bad argument, a closed object,
a wrong state); a *remote* peer's misbehaviour never raises, it shows up in a
peer's status, counters or events.

Every exception derives from :class:`DTLSPeerError`, and also from the
built-in class a Python user would expect (``ValueError``, ``TypeError``,
``OSError``, ``MemoryError``, ``RuntimeError``), so ``except ValueError``
keeps working.

Porting GDScript: each exception's ``godot_error`` is the :class:`GodotError`
code the Godot call would have returned, and :func:`godot_error` turns a
``get_packet_error()`` result (an exception or ``None``) into that code.
There is deliberately no bare ``OK`` to compare return values with: methods
that return ``Error`` in Godot return ``None`` here (and raise), and the few
that return something else (``UDPServer.poll()``: a count, ``wait()``: a
bool) would compare wrongly with ``OK``.
"""

from __future__ import annotations

import enum
from typing import Optional

__all__ = [
    "AlreadyInUseError",
    "ArgumentTypeError",
    "CertificateError",
    "DTLSPeerError",
    "DecodeError",
    "DecryptionError",
    "ForeignPeerError",
    "GodotError",
    "InvalidArgumentError",
    "KeyMismatchError",
    "LimitError",
    "OutOfMemoryError",
    "ResolveError",
    "SocketError",
    "StateError",
    "TLSError",
    "UnsupportedError",
    "VariantDecodeError",
    "WouldBlockError",
    "godot_error",
]


class GodotError(enum.IntEnum):
    """Godot's global ``Error`` enum (``core/error/error_list.h``), same
    names and values, for code ported from GDScript (see the module notes)."""

    OK = 0
    FAILED = 1
    ERR_UNAVAILABLE = 2
    ERR_UNCONFIGURED = 3
    ERR_UNAUTHORIZED = 4
    ERR_PARAMETER_RANGE_ERROR = 5
    ERR_OUT_OF_MEMORY = 6
    ERR_FILE_NOT_FOUND = 7
    ERR_FILE_BAD_DRIVE = 8
    ERR_FILE_BAD_PATH = 9
    ERR_FILE_NO_PERMISSION = 10
    ERR_FILE_ALREADY_IN_USE = 11
    ERR_FILE_CANT_OPEN = 12
    ERR_FILE_CANT_WRITE = 13
    ERR_FILE_CANT_READ = 14
    ERR_FILE_UNRECOGNIZED = 15
    ERR_FILE_CORRUPT = 16
    ERR_FILE_MISSING_DEPENDENCIES = 17
    ERR_FILE_EOF = 18
    ERR_CANT_OPEN = 19
    ERR_CANT_CREATE = 20
    ERR_QUERY_FAILED = 21
    ERR_ALREADY_IN_USE = 22
    ERR_LOCKED = 23
    ERR_TIMEOUT = 24
    ERR_CANT_CONNECT = 25
    ERR_CANT_RESOLVE = 26
    ERR_CONNECTION_ERROR = 27
    ERR_CANT_ACQUIRE_RESOURCE = 28
    ERR_CANT_FORK = 29
    ERR_INVALID_DATA = 30
    ERR_INVALID_PARAMETER = 31
    ERR_ALREADY_EXISTS = 32
    ERR_DOES_NOT_EXIST = 33
    ERR_DATABASE_CANT_READ = 34
    ERR_DATABASE_CANT_WRITE = 35
    ERR_COMPILATION_FAILED = 36
    ERR_METHOD_NOT_FOUND = 37
    ERR_LINK_FAILED = 38
    ERR_SCRIPT_FAILED = 39
    ERR_CYCLIC_LINK = 40
    ERR_INVALID_DECLARATION = 41
    ERR_DUPLICATE_SYMBOL = 42
    ERR_PARSE_ERROR = 43
    ERR_BUSY = 44
    ERR_SKIP = 45
    ERR_HELP = 46
    ERR_BUG = 47
    ERR_PRINTER_ON_FIRE = 48


def godot_error(exc: Optional[BaseException]) -> GodotError:
    """The Godot ``Error`` code for an outcome: ``OK`` for ``None`` (e.g.
    ``get_packet_error()`` after a successful read), the exception's
    ``godot_error`` for ours, ``FAILED`` for any other exception."""
    if exc is None:
        return GodotError.OK
    return getattr(exc, "godot_error", GodotError.FAILED)


class DTLSPeerError(Exception):
    """Base class of every exception dtlspeer raises.

    ``code`` is the native return code behind it (0 when raised from Python).
    ``godot_error`` is the :class:`GodotError` the Godot call returns in the
    same situation (per class; a few raise sites refine it).
    """

    code: int = 0
    godot_error: GodotError = GodotError.FAILED


class InvalidArgumentError(DTLSPeerError, ValueError):
    """An argument has the right type but a bad value (port out of range,
    malformed address, unsupported key size, ...). Godot: ``ERR_INVALID_PARAMETER``."""

    godot_error = GodotError.ERR_INVALID_PARAMETER


class ForeignPeerError(InvalidArgumentError):
    """A peer (or ``aio`` connection) was passed to a host or server that does
    not own it. Peer ids start at the same value on every host, so acting on
    another host's peer would silently hit this host's peer with the same
    id; it raises instead (ours: Godot's ENet peers have no such check)."""


class ArgumentTypeError(DTLSPeerError, TypeError):
    """An argument has the wrong type."""

    godot_error = GodotError.ERR_INVALID_PARAMETER


class UnsupportedError(InvalidArgumentError):
    """A well-formed request this build cannot serve (e.g. an unknown curve)."""

    godot_error = GodotError.ERR_UNAVAILABLE


class VariantDecodeError(InvalidArgumentError):
    """Bytes that are not a valid Godot Variant encoding (truncated, bad type
    id, invalid UTF-8, too deep, over the element budget, an Object while
    objects are not allowed...). ``offset`` is the byte offset where decoding
    failed. Godot's ``bytes_to_var``/``get_var`` return ``null`` instead."""

    godot_error = GodotError.ERR_INVALID_DATA

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} (at byte {offset})")
        self.message = message
        self.offset = offset

    def __reduce__(self) -> tuple[type[VariantDecodeError], tuple[str, int]]:
        return (type(self), (self.message, self.offset))


class StateError(DTLSPeerError, RuntimeError):
    """The object is not in a state that allows the call: closed, not bound,
    not connected, already set up. Godot: ``ERR_UNCONFIGURED`` / ``ERR_LOCKED``."""

    godot_error = GodotError.ERR_UNCONFIGURED


class AlreadyInUseError(StateError):
    """The object is already open or set up. Godot: ``ERR_ALREADY_IN_USE``."""

    godot_error = GodotError.ERR_ALREADY_IN_USE


class LimitError(DTLSPeerError, RuntimeError):
    """A configured limit was reached (queue full, too many peers, a
    ``put_var`` encoding over ``encode_buffer_max_size``). Godot:
    ``ERR_OUT_OF_MEMORY`` (what its ``put_var`` returns)."""

    godot_error = GodotError.ERR_OUT_OF_MEMORY


class WouldBlockError(DTLSPeerError, BlockingIOError):
    """A non-blocking call could not complete now. Godot: ``ERR_BUSY``."""

    godot_error = GodotError.ERR_BUSY


class OutOfMemoryError(DTLSPeerError, MemoryError):
    """The native layer could not allocate memory. Godot: ``ERR_OUT_OF_MEMORY``."""

    godot_error = GodotError.ERR_OUT_OF_MEMORY


class SocketError(DTLSPeerError, OSError):
    """An operating-system socket call failed; ``errno`` says why. Godot:
    ``FAILED`` (``ERR_UNAVAILABLE`` when binding fails)."""


class ResolveError(SocketError):
    """A host name could not be resolved (``errno`` is the ``getaddrinfo``
    ``EAI_*`` code, as in :class:`socket.gaierror`). Godot: ``ERR_CANT_RESOLVE``."""

    godot_error = GodotError.ERR_CANT_RESOLVE


class TLSError(DTLSPeerError):
    """Mbed TLS reported an error. ``code`` is the Mbed TLS (negative) code and
    ``str(exc)`` includes Mbed TLS's own description."""


class DecodeError(TLSError, ValueError):
    """Input could not be parsed as a key or certificate (garbage, truncated,
    wrong format or password-protected)."""


class DecryptionError(TLSError, ValueError):
    """A ciphertext could not be decrypted (wrong key, wrong length, bad
    padding). One exception and message for every cause, so a caller that
    reports it reveals nothing about which check failed. Godot's
    ``Crypto.decrypt`` returns an empty array instead."""


class KeyMismatchError(TLSError, ValueError):
    """A private key does not belong to the certificate it is paired with."""

    godot_error = GodotError.ERR_INVALID_PARAMETER


class CertificateError(TLSError):
    """Certificate verification failed. ``verify_flags`` is Mbed TLS's bit set
    and ``reasons`` its text, one reason per entry."""

    verify_flags: int = 0
    reasons: tuple[str, ...] = ()

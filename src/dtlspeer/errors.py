"""Exceptions raised by dtlspeer.

Godot reports failures as ``Error`` return codes; dtlspeer raises instead.
The rule (as in h11): *local* misuse raises (a bad argument, a closed object,
a wrong state); a *remote* peer's misbehaviour never raises, it shows up in a
peer's status, counters or events.

Every exception derives from :class:`DTLSPeerError`, and also from the
built-in class a Python user would expect (``ValueError``, ``TypeError``,
``OSError``, ``MemoryError``, ``RuntimeError``), so ``except ValueError``
keeps working.
"""

from __future__ import annotations

__all__ = [
    "AlreadyInUseError",
    "ArgumentTypeError",
    "CertificateError",
    "DTLSPeerError",
    "DecodeError",
    "DecryptionError",
    "ForeignPeerError",
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
]


class DTLSPeerError(Exception):
    """Base class of every exception dtlspeer raises.

    ``code`` is the native return code behind it (0 when raised from Python).
    """

    code: int = 0


class InvalidArgumentError(DTLSPeerError, ValueError):
    """An argument has the right type but a bad value (port out of range,
    malformed address, unsupported key size, ...). Godot: ``ERR_INVALID_PARAMETER``."""


class ForeignPeerError(InvalidArgumentError):
    """A peer (or ``aio`` connection) was passed to a host or server that does
    not own it. Peer ids start at the same value on every host, so acting on
    another host's peer would silently hit this host's peer with the same
    id; it raises instead (ours: Godot's ENet peers have no such check)."""


class ArgumentTypeError(DTLSPeerError, TypeError):
    """An argument has the wrong type."""


class UnsupportedError(InvalidArgumentError):
    """A well-formed request this build cannot serve (e.g. an unknown curve)."""


class VariantDecodeError(InvalidArgumentError):
    """Bytes that are not a valid Godot Variant encoding (truncated, bad type
    id, invalid UTF-8, too deep, over the element budget, an Object while
    objects are not allowed...). ``offset`` is the byte offset where decoding
    failed. Godot's ``bytes_to_var``/``get_var`` return ``null`` instead."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} (at byte {offset})")
        self.message = message
        self.offset = offset

    def __reduce__(self) -> tuple[type[VariantDecodeError], tuple[str, int]]:
        return (type(self), (self.message, self.offset))


class StateError(DTLSPeerError, RuntimeError):
    """The object is not in a state that allows the call: closed, not bound,
    not connected, already set up. Godot: ``ERR_UNCONFIGURED`` / ``ERR_LOCKED``."""


class AlreadyInUseError(StateError):
    """The object is already open or set up. Godot: ``ERR_ALREADY_IN_USE``."""


class LimitError(DTLSPeerError, RuntimeError):
    """A configured limit was reached (queue full, too many peers)."""


class WouldBlockError(DTLSPeerError, BlockingIOError):
    """A non-blocking call could not complete now. Godot: ``ERR_BUSY``."""


class OutOfMemoryError(DTLSPeerError, MemoryError):
    """The native layer could not allocate memory. Godot: ``ERR_OUT_OF_MEMORY``."""


class SocketError(DTLSPeerError, OSError):
    """An operating-system socket call failed; ``errno`` says why."""


class ResolveError(SocketError):
    """A host name could not be resolved (``errno`` is the ``getaddrinfo``
    ``EAI_*`` code, as in :class:`socket.gaierror`). Godot: ``ERR_CANT_RESOLVE``."""


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


class CertificateError(TLSError):
    """Certificate verification failed. ``verify_flags`` is Mbed TLS's bit set
    and ``reasons`` its text, one reason per entry."""

    verify_flags: int = 0
    reasons: tuple[str, ...] = ()

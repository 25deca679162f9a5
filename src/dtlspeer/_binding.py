"""The only module that imports the compiled extension ``dtlspeer._native``.

It initialises the native library once, re-exports ``ffi`` and ``lib`` to the
rest of the package, and owns :func:`check`, the single place where native
return codes become Python exceptions.
"""

from __future__ import annotations

from typing import Any

from . import errors
from ._native import ffi, lib

__all__ = ["NOW", "check", "error_text", "ffi", "lib", "monotonic_ms"]

# Mbed TLS high-level error codes we map to specific exceptions.
_MBEDTLS_PK_ERROR_RANGE = range(-0x3FFF, -0x3800 + 1)  # PK module
_MBEDTLS_X509_ERROR_RANGE = range(-0x2FFF, -0x2000 + 1)  # X509 module
_MBEDTLS_ASN1_ERROR_RANGE = range(-0x007F, -0x0060 + 1)  # ASN1 module
_MBEDTLS_PEM_ERROR_RANGE = range(-0x14FF, -0x1000 + 1)  # PEM module
_X509_CERT_VERIFY_FAILED = -0x2700
_X509_ALLOC_FAILED = -0x2880
_PK_ALLOC_FAILED = -0x3F80
_PK_KEY_INVALID_FORMAT = -0x3D00
_PK_TYPE_MISMATCH = -0x3F00
_PK_BAD_INPUT = -0x3E80
_PK_PASSWORD_REQUIRED = -0x3B80
_PK_PASSWORD_MISMATCH = -0x3B00
_PK_FEATURE_UNAVAILABLE = -0x3980
_PK_UNKNOWN_PK_ALG = -0x3C80  # a key algorithm we do not support (e.g. Ed25519)
_PK_UNKNOWN_NAMED_CURVE = -0x3A00  # an EC curve this build does not include
_RSA_INVALID_PADDING = -0x4100  # dp_key_decrypt's one answer for any bad ciphertext

_DP_EXCEPTIONS: dict[int, type[errors.DTLSPeerError]] = {
    lib.DP_ERR_INVALID_ARGUMENT: errors.InvalidArgumentError,
    lib.DP_ERR_NO_MEMORY: errors.OutOfMemoryError,
    lib.DP_ERR_BUFFER_TOO_SMALL: errors.LimitError,
    lib.DP_ERR_KEY_MISMATCH: errors.KeyMismatchError,
    lib.DP_ERR_UNSUPPORTED: errors.UnsupportedError,
    lib.DP_ERR_BAD_STATE: errors.StateError,
    lib.DP_ERR_WOULD_BLOCK: errors.WouldBlockError,
    lib.DP_ERR_LIMIT: errors.LimitError,
    lib.DP_ERR_CLOSED: errors.StateError,
    lib.DP_ERR_TOO_LARGE: errors.InvalidArgumentError,
}

_init = lib.dp_init()

# The library's one clock (native, so Python and C readings never mix two
# clocks). Native calls take NOW and read the monotonic clock themselves (a
# cookie gate with a shared secret reads the wall clock, for cookies only).
NOW: int = lib.DP_NOW


def monotonic_ms() -> int:
    """Milliseconds of the monotonic clock every timer runs on."""
    return int(lib.dp_clock_ms(0))


def error_text(code: int) -> str:
    """The native library's description of a return code."""
    buf = ffi.new("char[]", 256)
    lib.dp_strerror(code, buf, len(buf))
    text: str = ffi.string(buf).decode("utf-8", "replace")
    return text


def _exception_for(code: int, context: str) -> errors.DTLSPeerError:
    text = error_text(code)
    where = f"{context}: " if context else ""
    if code <= lib.DP_ERR_ERRNO_BASE:
        err = lib.DP_ERR_ERRNO_BASE - code
        # The native text, not os.strerror: on Windows err is a Winsock code.
        exc: errors.DTLSPeerError = errors.SocketError(err, f"{where}{text}")
        exc.code = code
        return exc
    if code <= lib.DP_ERR_BASE:
        cls = _DP_EXCEPTIONS.get(code, errors.DTLSPeerError)
        message = f"{where}{text}"
    else:
        message = f"{where}{text} (Mbed TLS -0x{-code:04X})"
        if code in (_X509_ALLOC_FAILED, _PK_ALLOC_FAILED):
            cls = errors.OutOfMemoryError
        elif code == _X509_CERT_VERIFY_FAILED:
            cls = errors.CertificateError
        elif code == _RSA_INVALID_PADDING:
            cls = errors.DecryptionError
        elif code == _PK_TYPE_MISMATCH:
            cls = errors.KeyMismatchError
        elif code in (_PK_FEATURE_UNAVAILABLE, _PK_UNKNOWN_PK_ALG, _PK_UNKNOWN_NAMED_CURVE):
            cls = errors.UnsupportedError
        elif code == _PK_BAD_INPUT:
            cls = errors.InvalidArgumentError
        elif (
            code in _MBEDTLS_PK_ERROR_RANGE
            or code in _MBEDTLS_X509_ERROR_RANGE
            or code in _MBEDTLS_PEM_ERROR_RANGE
            or code in _MBEDTLS_ASN1_ERROR_RANGE
            or code in (_PK_KEY_INVALID_FORMAT, _PK_PASSWORD_REQUIRED, _PK_PASSWORD_MISMATCH)
        ):
            cls = errors.DecodeError
        else:
            cls = errors.TLSError
    exc = cls(message)
    exc.code = code
    return exc


def check(code: int, context: str = "") -> int:
    """Return ``code`` if it is a success (>= 0); otherwise raise the matching
    :mod:`dtlspeer.errors` exception, whose message carries ``context`` and
    the native description. This is the one place codes become exceptions."""
    if code >= 0:
        return code
    raise _exception_for(code, context)


def _ensure_initialised() -> None:
    if _init != 0:
        raise errors.TLSError(f"native library failed to initialise: {error_text(_init)}")


_ensure_initialised()


def to_bytes(data: Any, name: str) -> bytes:
    """Accept bytes-like input (bytes, bytearray, memoryview); refuse the rest
    with ArgumentTypeError, naming the argument."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise errors.ArgumentTypeError(f"{name} must be bytes-like, not {type(data).__name__}")

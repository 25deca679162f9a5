"""What the compiled extension contains: Mbed TLS version, options, suites."""

from __future__ import annotations

from ._binding import check, ffi, lib

__all__ = ["build_info", "ciphersuites", "mbedtls_version"]


def mbedtls_version() -> str:
    """The version of the statically linked Mbed TLS, e.g. ``"3.6.7"``."""
    return str(ffi.string(lib.dp_mbedtls_version()).decode("ascii"))


def build_info() -> dict[str, str]:
    """Compile-time configuration of the native core as ``name -> value``."""
    text = ffi.string(lib.dp_build_config()).decode("ascii")
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def ciphersuites() -> list[str]:
    """Names of the DTLS 1.2 ciphersuites this build can negotiate, in Mbed
    TLS's default preference order."""
    buf = ffi.new("char[]", 16384)
    check(lib.dp_ciphersuite_names(buf, len(buf)), "listing ciphersuites")
    names: str = ffi.string(buf).decode("ascii")
    return names.split()

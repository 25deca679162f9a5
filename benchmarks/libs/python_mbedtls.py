"""python-mbedtls (``mbedtls.tls.DTLSConfiguration``): detected, not driven.

It installs on Python 3.11 (2.10.1, bundling Mbed TLS 2.28), but its DTLS
server model is one connected socket per client (``accept()`` returns a new
socket bound to the same port), blocking-style ``do_handshake`` retried on
``WantReadError`` and ``HelloVerifyRequest`` raised as an exception. An
adapter that is fair to it (non-blocking sockets, select over one socket
per client) is future work; the row says so instead of guessing."""

from __future__ import annotations


def available() -> str | None:
    """The table text: installed, version, and why there is no number."""
    try:
        import mbedtls

        version = getattr(mbedtls, "__version__", "?")
        lib = getattr(getattr(mbedtls, "version", None), "version", "Mbed TLS ?")
    except ImportError:
        return "not installed"
    return f"installed ({version}, {lib}); not driven yet (see README)"

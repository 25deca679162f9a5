"""Session resumption (RFC 5077 tickets): server ticket keys and saved client sessions.

Not in Godot (its DTLS has no resumption). A server seals the session into a
ticket the client keeps; a client that reconnects offers it and both skip the
certificate and key exchange (about 10-20x less server CPU, one round trip
less). Servers issue tickets by default with keys of their own;
:class:`SessionTicketKeys` shared by several processes or machines lets any
of them resume a session another one started.
"""

from __future__ import annotations

import struct
from typing import Any, Optional

from . import errors
from ._binding import check, ffi, lib, to_bytes

__all__ = ["Session", "SessionTicketKeys"]

_KEYS_MAGIC = b"DPTK"
_KEYS_FORMAT = 1
_KEYS_HEADER = struct.Struct("!4sBIB")  # magic, format, lifetime, secret length
_SESSION_MAGIC = b"DPSS"
_SESSION_FORMAT = 1
_SESSION_MAX = 8192  # a TLS 1.2 session with its ticket is ~300 bytes
_MBEDTLS_ERR_SSL_VERSION_MISMATCH = -0x5F00  # mbedtls/ssl.h (pinned 3.6)
_MBEDTLS_ERR_X509_CERT_VERIFY_FAILED = -0x2700  # mbedtls/x509.h


class SessionTicketKeys:
    """The keys a server seals its session tickets with (ours; not in Godot).

    ``secret`` (16..64 bytes; ``None``: 32 random bytes) is all there is to
    share: the key of each period of ``lifetime`` seconds is derived from it
    (HKDF-SHA-256), so every server holding the same secret seals and opens
    the same tickets at the same time, with nothing else to distribute or
    rotate by hand. Tickets are AES-256-GCM (Mbed TLS ``ssl_ticket``).

    Rotation: the key changes every ``lifetime`` seconds (of the wall clock,
    counted from the Unix epoch, so all servers rotate together); the key of
    the previous period still opens tickets, so a ticket is accepted for
    ``lifetime`` seconds after it was issued and never after that. The
    period is the lifetime because Mbed TLS keeps exactly two keys (the
    active one and the previous one). Default lifetime: 3600 s (60 .. 7
    days). A ticket that does not open (forged, from servers with other
    keys, expired, or the server's clock more than the ticket's age behind
    the issuer's) falls back to a full handshake; nothing fails.

    Security: the secret opens every ticket sealed with it, and a ticket
    holds the session's master secret, so treat the secret like the
    server's private key (never log it; :meth:`to_bytes` exports it). A
    stolen secret lets its holder decrypt recorded sessions that were
    resumed or issued tickets within its validity: choose a short lifetime
    when that matters, and replace the secret (new object, new servers) to
    revoke every outstanding ticket. Servers sharing keys need synchronized
    clocks (NTP): a slot computed on a clock that is off by more than the
    distance to the slot boundary cannot open tickets minted next door (a
    full handshake follows).

    One object may be shared by many servers (``DTLSHost``,
    ``DTLSServer.setup``, ``aio.serve``) in one process; it is thread-safe.
    To hand it to worker processes, pass :meth:`to_bytes` and rebuild with
    :meth:`from_bytes` (it also pickles).
    """

    __slots__ = ("__weakref__", "_lifetime", "_ptr")

    def __init__(self, secret: Optional[bytes] = None, *, lifetime: int = 3600) -> None:
        if secret is not None:
            secret = to_bytes(secret, "secret")
            if not lib.DP_TICKET_SECRET_MIN <= len(secret) <= lib.DP_TICKET_SECRET_MAX:
                raise errors.InvalidArgumentError(
                    f"secret must be {lib.DP_TICKET_SECRET_MIN}..{lib.DP_TICKET_SECRET_MAX} "
                    f"bytes, not {len(secret)}"
                )
        if isinstance(lifetime, bool) or not isinstance(lifetime, int):
            raise errors.ArgumentTypeError(
                f"lifetime must be an int, not {type(lifetime).__name__}")
        if not lib.DP_TICKET_LIFETIME_MIN <= lifetime <= lib.DP_TICKET_LIFETIME_MAX:
            raise errors.InvalidArgumentError(
                f"lifetime must be {lib.DP_TICKET_LIFETIME_MIN}..{lib.DP_TICKET_LIFETIME_MAX} "
                f"seconds, not {lifetime}"
            )
        out = ffi.new("dp_ticket_keys **")
        check(
            lib.dp_ticket_keys_new(
                secret if secret is not None else ffi.NULL,
                len(secret) if secret is not None else 0,
                lifetime,
                out,
            ),
            "SessionTicketKeys",
        )
        self._ptr: Any = ffi.gc(out[0], lib.dp_ticket_keys_free)
        self._lifetime = lifetime

    @property
    def lifetime(self) -> int:
        """Seconds a ticket is accepted (and the key rotation period)."""
        return self._lifetime

    def to_bytes(self) -> bytes:
        """The secret and lifetime, versioned, for :meth:`from_bytes` in another
        process. Secret material: never log or store it in the clear."""
        buf = ffi.new("unsigned char[]", lib.DP_TICKET_SECRET_MAX)
        n = check(lib.dp_ticket_keys_export(self._ptr, buf, lib.DP_TICKET_SECRET_MAX),
                  "SessionTicketKeys.to_bytes")
        secret = bytes(ffi.buffer(buf, n))
        ffi.memmove(buf, b"\0" * n, n)
        return _KEYS_HEADER.pack(_KEYS_MAGIC, _KEYS_FORMAT, self._lifetime, n) + secret

    @classmethod
    def from_bytes(cls, data: bytes) -> SessionTicketKeys:
        """Rebuild keys exported by :meth:`to_bytes`. InvalidArgumentError for
        anything else (wrong magic, format version or length)."""
        data = to_bytes(data, "data")
        size = _KEYS_HEADER.size
        if len(data) < size or data[:4] != _KEYS_MAGIC:
            raise errors.InvalidArgumentError("not exported SessionTicketKeys (bad magic)")
        _magic, version, lifetime, n = _KEYS_HEADER.unpack_from(data)
        if version != _KEYS_FORMAT:
            raise errors.InvalidArgumentError(
                f"SessionTicketKeys format {version} is not supported (this version reads "
                f"{_KEYS_FORMAT})"
            )
        if len(data) != size + n:
            raise errors.InvalidArgumentError("exported SessionTicketKeys have the wrong length")
        return cls(data[size:], lifetime=lifetime)

    def __reduce__(self) -> tuple[Any, ...]:
        return (SessionTicketKeys.from_bytes, (self.to_bytes(),))

    def get_stats(self) -> dict[str, int]:
        """Counters over every server using these keys: ``issued``, ``accepted``
        (resumed handshakes), ``rejected`` (tickets that did not open: forged,
        foreign keys, expired), ``rotations`` (keys installed)."""
        out = ffi.new("dp_ticket_stats *")
        lib.dp_ticket_keys_get_stats(self._ptr, out)
        return {name: int(getattr(out[0], name)) for name in
                ("issued", "accepted", "rejected", "rotations")}

    def _set_time(self, unix_s: int) -> None:
        """Tests: choose the key period by ``unix_s`` instead of the wall clock
        (0 = the wall clock again)."""
        check(lib.dp_ticket_keys_set_time(self._ptr, unix_s), "SessionTicketKeys._set_time")

    def __repr__(self) -> str:
        return f"<SessionTicketKeys lifetime={self._lifetime}s>"


class Session:
    """A client's saved DTLS session, to resume a later connection (ours; not in Godot).

    Get one from ``PacketPeerDTLS.get_session()`` / ``HostPeer.get_session()``
    once connected; offer it with ``connect_to_peer(..., session=...)``,
    ``DTLSHost.connect(..., session=...)`` or ``aio.connect(...,
    session=...)``. :meth:`to_bytes` / :meth:`from_bytes` store it (format
    checked on load: dtlspeer's header and version, then Mbed TLS's own
    version and build options). The bytes hold the session's master secret:
    whoever has them can impersonate this client to that server until the
    ticket expires, so keep them as secret as a key. A session the server
    no longer accepts costs nothing but a full handshake.
    """

    __slots__ = ("_blob",)

    def __init__(self, _blob: bytes) -> None:
        self._blob = _check_session_blob(_blob)

    def to_bytes(self) -> bytes:
        """The serialized session (secret material)."""
        return self._blob

    @classmethod
    def from_bytes(cls, data: bytes) -> Session:
        """A session saved by :meth:`to_bytes`; InvalidArgumentError for
        anything else (the Mbed TLS part is checked when it is offered)."""
        return cls(to_bytes(data, "data"))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Session.from_bytes, (self._blob,))

    def __repr__(self) -> str:
        return f"<Session {len(self._blob)} bytes>"


def _check_session_blob(blob: bytes) -> bytes:
    if not isinstance(blob, bytes):
        raise errors.ArgumentTypeError(f"session data must be bytes, not {type(blob).__name__}")
    if len(blob) <= 6 or blob[:4] != _SESSION_MAGIC:
        raise errors.InvalidArgumentError("not a saved dtlspeer session (bad magic)")
    if blob[4] != _SESSION_FORMAT:
        raise errors.InvalidArgumentError(
            f"saved session format {blob[4]} is not supported (this version reads "
            f"{_SESSION_FORMAT})"
        )
    if len(blob) > _SESSION_MAX:
        raise errors.InvalidArgumentError(f"saved session larger than {_SESSION_MAX} bytes")
    return blob


def session_arg(session: Any) -> Optional[bytes]:
    """The blob behind a ``session=`` argument: a :class:`Session`, its bytes, or None."""
    if session is None:
        return None
    if isinstance(session, Session):
        return session._blob
    if isinstance(session, (bytes, bytearray, memoryview)):
        return _check_session_blob(bytes(session))
    raise errors.ArgumentTypeError(
        f"session must be a Session, bytes or None, not {type(session).__name__}")


def offer_error(code: int) -> errors.DTLSPeerError:
    """A clear error for a saved session Mbed TLS would not load."""
    if code == lib.DP_ERR_INVALID_ARGUMENT:
        return errors.InvalidArgumentError("not a saved dtlspeer session")
    if code == _MBEDTLS_ERR_X509_CERT_VERIFY_FAILED:
        return errors.InvalidArgumentError(
            "saved session's server was not verified as strictly as this client verifies "
            "(saved by an unsafe client, or its verification failed): resumption checks no "
            "certificate, so it cannot be resumed")
    text = ("saved session comes from another Mbed TLS version or build options"
            if code == _MBEDTLS_ERR_SSL_VERSION_MISMATCH else "saved session is corrupt")
    return errors.InvalidArgumentError(f"{text} (cannot be resumed; connect without it)")


def fetch_session(getter: Any) -> Optional[Session]:
    """Read a session through ``getter(buf, cap)`` (a dp_*_session call):
    None when there is none."""
    need = getter(ffi.NULL, 0)
    if need < 0:
        if need == lib.DP_ERR_BAD_STATE:
            return None
        check(need, "get_session")
    buf = ffi.new("unsigned char[]", need)
    n = check(getter(buf, need), "get_session")
    return Session(bytes(ffi.buffer(buf, n)))

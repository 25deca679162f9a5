"""Internal, typed wrapper over the sans-I/O DTLS engine (dp_config, dp_conn,
dp_cookie_gate in ``src/native``).

Nothing here touches a socket or a clock: callers pass datagrams in, take
datagrams out and give the time in milliseconds to every call that may run
timers. The public classes (``PacketPeerDTLS``, ``DTLSServer``) sit on top.

Native objects are freed by ``close()`` (deterministic) and, as a fallback,
when the Python object is collected (``ffi.gc``).
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional

from . import errors
from ._binding import check, ffi, lib, to_bytes
from .session import fetch_session, offer_error

__all__ = [
    "Connection",
    "CookieGate",
    "EngineConfig",
    "EngineStatus",
    "GateVerdict",
    "Group",
    "Verify",
]

# Largest datagram or record the engine produces: a 16 KiB record plus
# DTLS overhead. Receive buffers of this size never truncate.
_MAX_DATAGRAM = 17 * 1024


class EngineStatus(enum.IntEnum):
    """Connection status, with Godot's ``PacketPeerDTLS.Status`` values."""

    DISCONNECTED = lib.DP_STATUS_DISCONNECTED
    HANDSHAKING = lib.DP_STATUS_HANDSHAKING
    CONNECTED = lib.DP_STATUS_CONNECTED
    ERROR = lib.DP_STATUS_ERROR
    ERROR_HOSTNAME_MISMATCH = lib.DP_STATUS_ERROR_HOSTNAME_MISMATCH


class Verify(enum.IntEnum):
    """How a client checks the server certificate."""

    FULL = lib.DP_VERIFY_FULL  # chain and name (TLSOptions.client)
    CHAIN_ONLY = lib.DP_VERIFY_CHAIN_ONLY  # chain, no name (client_unsafe with a chain)
    NONE = lib.DP_VERIFY_NONE  # nothing (client_unsafe without a chain)


class Group(enum.IntEnum):
    """Key exchange groups (IANA TLS group ids)."""

    SECP256R1 = lib.DP_GROUP_SECP256R1
    SECP384R1 = lib.DP_GROUP_SECP384R1
    SECP521R1 = lib.DP_GROUP_SECP521R1
    X25519 = lib.DP_GROUP_X25519


class GateVerdict(enum.IntEnum):
    """What a server does with a datagram from an unknown address."""

    DROP = lib.DP_GATE_DROP
    REPLY = lib.DP_GATE_REPLY
    ADMIT = lib.DP_GATE_ADMIT


_buffers = threading.local()


def steer_by_cid(sock: Any, cid_len: int) -> None:
    """Attach the reuseport program that steers CID records to the worker
    named by the CID's first byte (Linux; dp_steer.c). UnsupportedError
    elsewhere."""
    check(lib.dp_socket_steer_by_cid(sock.fileno(), cid_len), "SO_ATTACH_REUSEPORT_CBPF")


def _scratch() -> tuple[Any, Any]:
    """A per-thread receive buffer (connections are used by one thread at a
    time) and a cffi buffer over all of it: ``view[:n]`` is the first n bytes
    as ``bytes`` in one step (a new ``ffi.buffer`` per record cost 3.5x more)."""
    pair = getattr(_buffers, "pair", None)
    if pair is None:
        buf = ffi.new("unsigned char[]", _MAX_DATAGRAM)
        pair = _buffers.pair = (buf, ffi.buffer(buf))
    return pair


# Records one native poll hands over at most (PacketPeerDTLS.poll); the rest
# (a burst above this, or above the scratch buffer) is read one at a time.
RECORDS_PER_POLL = 64


def _record_scratch() -> tuple[Any, Any, Any]:
    """``_scratch()`` plus a per-thread array of RECORDS_PER_POLL record
    sizes: where ``dp_link_poll`` lays received records back to back. Also
    kept as ``_buffers.records`` (one lookup on the per-frame path)."""
    records = getattr(_buffers, "records", None)
    if records is None:
        buf, view = _scratch()
        records = _buffers.records = (buf, view, ffi.new("uint32_t[]", RECORDS_PER_POLL))
    return records


def _struct_to_dict(ctype: str, value: Any) -> dict[str, int]:
    return {name: int(getattr(value, name)) for name, _ in ffi.typeof(ctype).fields}


def _handle(obj: Any, ctype: str, name: str) -> Any:
    """The native pointer behind a crypto object (or a raw cdata handle)."""
    ptr = getattr(obj, "_handle", obj)
    if not isinstance(ptr, ffi.CData) or ffi.typeof(ptr) is not ffi.typeof(ctype):
        raise errors.ArgumentTypeError(f"{name} must be a {ctype.rstrip(' *')} handle")
    return ptr


class CookieGate:
    """Stateless HelloVerifyRequest gate of a DTLS server.

    ``secret`` (16..64 bytes) lets several processes accept each other's
    cookies; they must then pass wall-clock milliseconds as ``now_ms``.
    Without it a random secret is drawn. A cookie is valid for ``slot_ms``
    to ``2 * slot_ms`` milliseconds.
    """

    def __init__(self, secret: Optional[bytes] = None, slot_ms: int = 30_000) -> None:
        if secret is not None:
            secret = to_bytes(secret, "secret")
        if not 0 < slot_ms < 2**32:
            raise errors.InvalidArgumentError("slot_ms must be in 1 .. 2**32-1")
        out = ffi.new("dp_cookie_gate **")
        check(
            lib.dp_cookie_gate_new(
                secret if secret is not None else ffi.NULL,
                len(secret) if secret is not None else 0,
                slot_ms,
                out,
            ),
            "CookieGate",
        )
        self._ptr: Any = ffi.gc(out[0], lib.dp_cookie_gate_free)
        self._reply = ffi.new("unsigned char[]", lib.DP_HVR_LEN)
        self._reply_len = ffi.new("size_t *")

    @property
    def handle(self) -> Any:
        """The native pointer (raises StateError once closed)."""
        if self._ptr is None:
            raise errors.StateError("cookie gate is closed")
        return self._ptr

    def check(self, transport_id: bytes, datagram: bytes, now_ms: int) -> tuple[GateVerdict, bytes]:
        """Judge a datagram from an address without a connection. Returns the
        verdict and, for REPLY, the HelloVerifyRequest to send back."""
        tid = to_bytes(transport_id, "transport_id")
        data = to_bytes(datagram, "datagram")
        verdict = check(
            lib.dp_cookie_gate_check(
                self.handle, tid, len(tid), data, len(data), now_ms, self._reply,
                lib.DP_HVR_LEN, self._reply_len,
            ),
            "CookieGate.check",
        )
        reply = b""
        if verdict == lib.DP_GATE_REPLY:
            reply = bytes(ffi.buffer(self._reply, self._reply_len[0]))
        return GateVerdict(verdict), reply

    def stats(self) -> dict[str, int]:
        """Counters: hellos_seen, cookies_sent, cookies_rejected, admitted and drops by reason."""
        out = ffi.new("dp_cookie_stats *")
        lib.dp_cookie_gate_get_stats(self.handle, out)
        return _struct_to_dict("dp_cookie_stats", out[0])

    def close(self) -> None:
        """Drop this object's reference (configs using the gate keep theirs)."""
        if self._ptr is not None:
            ffi.release(self._ptr)
            self._ptr = None


class EngineConfig:
    """An immutable DTLS configuration shared by many connections.

    Build it with :meth:`client` or :meth:`server`. Keys and certificates are
    copied, so the caller may free them afterwards.
    """

    def __init__(self, role: int) -> None:
        out = ffi.new("dp_config **")
        check(lib.dp_config_new(role, out), "EngineConfig")
        self._ptr: Any = ffi.gc(out[0], lib.dp_config_free)
        self.role = role
        self.connection_id_length = 0  # the CID length this side chooses, 0 = none

    @classmethod
    def client(
        cls,
        *,
        verify: Verify = Verify.FULL,
        trusted_chain: Any = None,
        common_name_override: str = "",
        psk: Optional[tuple[bytes, bytes]] = None,
        key: Any = None,
        certificate: Any = None,
        **common: Any,
    ) -> EngineConfig:
        """Client options: certificate checks, trust anchors, optional PSK
        (identity, key), an optional client certificate chain + key (for
        servers that ask for one) and the common options of :meth:`_apply_common`."""
        cfg = cls(lib.DP_ROLE_CLIENT)
        try:
            cfg._set_own_cert(key, certificate)
            check(
                lib.dp_config_set_verify(
                    cfg._ptr, int(verify), common_name_override.encode("utf-8")
                ),
                "verify",
            )
            if trusted_chain is not None:
                chain = _handle(trusted_chain, "dp_cert *", "trusted_chain")
                check(lib.dp_config_set_ca_chain(cfg._ptr, chain), "trusted_chain")
            if psk is not None:
                identity, key = (to_bytes(psk[0], "psk identity"), to_bytes(psk[1], "psk key"))
                check(
                    lib.dp_config_set_psk(cfg._ptr, identity, len(identity), key, len(key)), "psk"
                )
            cfg._apply_common(**common)
            check(lib.dp_config_finish(cfg._ptr), "EngineConfig.client")
        except BaseException:
            cfg.close()
            raise
        return cfg

    @classmethod
    def server(
        cls,
        *,
        gate: CookieGate,
        key: Any = None,
        certificate: Any = None,
        psks: Optional[Mapping[bytes, bytes]] = None,
        ticket_keys: Any = None,
        client_auth: int = 0,
        client_ca: Any = None,
        **common: Any,
    ) -> EngineConfig:
        """Server options: the cookie gate, certificate chain + key and/or a
        PSK identity -> key table, session ticket keys (a native
        ``dp_ticket_keys *``; None = no tickets), client certificate
        requirement (``DP_CLIENT_AUTH_*``) with the CA chain to verify
        client certificates against, and the common options."""
        cfg = cls(lib.DP_ROLE_SERVER)
        try:
            check(lib.dp_config_set_cookie_gate(cfg._ptr, gate.handle), "gate")
            cfg._set_own_cert(key, certificate)
            if ticket_keys is not None:
                check(lib.dp_config_set_ticket_keys(cfg._ptr, ticket_keys), "ticket_keys")
            if client_ca is not None:
                check(lib.dp_config_set_ca_chain(cfg._ptr, _handle(client_ca, "dp_cert *",
                                                                   "client_ca")), "client_ca")
            check(lib.dp_config_set_client_auth(cfg._ptr, client_auth), "client_auth")
            for identity, psk_key in (psks or {}).items():
                ident, value = to_bytes(identity, "psk identity"), to_bytes(psk_key, "psk key")
                check(lib.dp_config_set_psk(cfg._ptr, ident, len(ident), value, len(value)), "psk")
            cfg._apply_common(**common)
            check(lib.dp_config_finish(cfg._ptr), "EngineConfig.server")
        except BaseException:
            cfg.close()
            raise
        return cfg

    def _set_own_cert(self, key: Any, certificate: Any) -> None:
        if (key is None) != (certificate is None):
            raise errors.InvalidArgumentError("key and certificate go together")
        if key is not None:
            check(
                lib.dp_config_set_own_cert(
                    self._ptr,
                    _handle(certificate, "dp_cert *", "certificate"),
                    _handle(key, "dp_key *", "key"),
                ),
                "certificate",
            )

    def _apply_common(
        self,
        *,
        ciphersuites: Optional[Iterable[str]] = None,
        groups: Optional[Sequence[Group]] = None,
        handshake_timeout_ms: tuple[int, int] = (250, 4000),
        handshake_deadline_ms: int = 0,
        idle_timeout_ms: int = 0,
        mtu: int = 0,
        max_record_in: int = 0,
        badmac_limit: int = 0,
        park_after_ms: Optional[int] = None,
        connection_id: Optional[bool] = None,
        connection_id_length: Optional[int] = None,
        connection_id_prefix: bytes = b"",
    ) -> None:
        if ciphersuites is not None:
            names = ",".join(ciphersuites).encode("ascii")
            check(lib.dp_config_set_ciphersuites(self._ptr, names), "ciphersuites")
        if groups is not None:
            ids = ffi.new("uint16_t[]", [int(g) for g in groups])
            check(lib.dp_config_set_groups(self._ptr, ids, len(groups)), "groups")
        low, high = handshake_timeout_ms
        check(
            lib.dp_config_set_handshake_timeout(self._ptr, low, high, handshake_deadline_ms),
            "handshake timeout",
        )
        check(lib.dp_config_set_idle_timeout(self._ptr, idle_timeout_ms), "idle timeout")
        check(lib.dp_config_set_mtu(self._ptr, mtu), "mtu")
        check(lib.dp_config_set_max_record_in(self._ptr, max_record_in), "max_record_in")
        check(lib.dp_config_set_badmac_limit(self._ptr, badmac_limit), "badmac limit")
        # None keeps the role's default: servers park after 5000 ms, clients never.
        if park_after_ms is not None:
            if not 0 <= park_after_ms < 2**32:
                raise errors.InvalidArgumentError("park_after_ms must be in 0 .. 2**32-1")
            check(lib.dp_config_set_park_after(self._ptr, park_after_ms), "park_after_ms")
        # RFC 9146 CID. None keeps the role's default: servers answer a client
        # that asks (DP_CID_DEFAULT_LEN bytes), clients do not ask.
        server = self.role == lib.DP_ROLE_SERVER
        enabled = server if connection_id is None else bool(connection_id)
        if connection_id_length is None:
            connection_id_length = int(lib.DP_CID_DEFAULT_LEN) if server else 0
        if enabled or connection_id_prefix:
            if not 0 <= connection_id_length <= lib.DP_CID_MAX:
                raise errors.InvalidArgumentError(
                    f"connection_id_length must be in 0 .. {lib.DP_CID_MAX}")
            if len(connection_id_prefix) > connection_id_length:
                raise errors.InvalidArgumentError(
                    "connection_id_length leaves no room for the worker id")
        check(
            lib.dp_config_set_cid(
                self._ptr, int(enabled), connection_id_length, connection_id_prefix,
                len(connection_id_prefix),
            ),
            "connection_id",
        )
        self.connection_id_length = connection_id_length if enabled else 0

    @property
    def handle(self) -> Any:
        """The native pointer (raises StateError once closed)."""
        if self._ptr is None:
            raise errors.StateError("config is closed")
        return self._ptr

    def close(self) -> None:
        """Drop this object's reference; connections keep theirs."""
        if self._ptr is not None:
            ffi.release(self._ptr)
            self._ptr = None


class Connection:
    """One DTLS association, driven by datagrams and an explicit clock.

    Client: ``Connection(config, now_ms, hostname="game.example")`` then
    :meth:`update` to send the ClientHello. Server: ``Connection(config,
    now_ms, transport_id=addr_bytes)`` after the gate admitted the peer, then
    :meth:`feed` the admitted ClientHello.
    """

    def __init__(
        self,
        config: EngineConfig,
        now_ms: int,
        *,
        hostname: Optional[str] = None,
        transport_id: Optional[bytes] = None,
    ) -> None:
        out = ffi.new("dp_conn **")
        name = ffi.NULL
        if hostname:
            name = hostname.encode("ascii" if hostname.isascii() else "idna")
        tid = to_bytes(transport_id, "transport_id") if transport_id is not None else ffi.NULL
        check(
            lib.dp_conn_new(
                config.handle, name, tid, 0 if tid is ffi.NULL else len(tid), now_ms, out
            ),
            "Connection",
        )
        self._ptr: Any = ffi.gc(out[0], lib.dp_conn_free)

    @classmethod
    def _adopt(cls, ptr: Any) -> Connection:
        """Wrap a dp_conn created in C (the DTLS link's server accept); the
        object owns it from now on."""
        conn = cls.__new__(cls)
        conn._ptr = ffi.gc(ptr, lib.dp_conn_free)
        return conn

    @property
    def _conn(self) -> Any:
        if self._ptr is None:
            raise errors.StateError("connection is closed")
        return self._ptr

    def feed(self, datagram: bytes, now_ms: int) -> EngineStatus:
        """Process one received datagram; returns the status afterwards."""
        data = to_bytes(datagram, "datagram")
        return EngineStatus(check(lib.dp_conn_feed(self._conn, data, len(data), now_ms), "feed"))

    def update(self, now_ms: int) -> EngineStatus:
        """Run timers (retransmission, deadlines, idle timeout); returns the status."""
        return EngineStatus(check(lib.dp_conn_update(self._conn, now_ms), "update"))

    def next_timeout(self) -> Optional[int]:
        """Absolute time (ms) of the next needed :meth:`update`, or None."""
        value = int(lib.dp_conn_next_timeout(self._conn))
        return None if value < 0 else value

    def take_outgoing(self) -> list[bytes]:
        """All datagrams waiting to be sent, oldest first."""
        buf, view = _scratch()
        result: list[bytes] = []
        while True:
            n = lib.dp_conn_pop_outgoing(self._conn, buf, _MAX_DATAGRAM)
            if n == lib.DP_ERR_WOULD_BLOCK:
                return result
            check(n, "take_outgoing")
            result.append(view[:n])

    def pending_count(self) -> int:
        """Number of received application records waiting to be read."""
        return check(lib.dp_conn_pending_count(self._conn), "pending_count")

    def read(self) -> Optional[bytes]:
        """The next received application record, or None."""
        buf, view = _scratch()
        n = lib.dp_conn_read(self._conn, buf, _MAX_DATAGRAM)
        if n < 0:
            if n == lib.DP_ERR_WOULD_BLOCK:
                return None
            check(n, "read")
        return view[:n]  # type: ignore[no-any-return]

    def read_all(self) -> list[bytes]:
        """Every received application record, oldest first."""
        records = []
        while (record := self.read()) is not None:
            records.append(record)
        return records

    def write(self, data: bytes, now_ms: int) -> int:
        """Send ``data`` as one record. Raises StateError unless connected and
        InvalidArgumentError if larger than :attr:`max_payload`."""
        payload = to_bytes(data, "data")
        return check(lib.dp_conn_write(self._conn, payload, len(payload), now_ms), "write")

    @property
    def max_payload(self) -> int:
        """Largest payload one record can carry (connected only)."""
        return check(lib.dp_conn_max_payload(self._conn), "max_payload")

    def disconnect(self, now_ms: int) -> None:
        """Send close_notify (when connected) and become DISCONNECTED."""
        check(lib.dp_conn_close(self._conn, now_ms), "disconnect")

    @property
    def status(self) -> EngineStatus:
        """Current status."""
        return EngineStatus(lib.dp_conn_status(self._conn))

    @property
    def handshake_progressed(self) -> bool:
        """False while a server connection still waits for the client's key
        exchange after its first flight, or for the Finished of a resumed
        handshake (a half-open handshake); True otherwise, and for clients."""
        return bool(lib.dp_conn_handshake_progressed(self._conn))

    @property
    def last_error(self) -> int:
        """Mbed TLS / dtlspeer code behind an error status (0 if none)."""
        return int(lib.dp_conn_last_error(self._conn))

    @property
    def verify_flags(self) -> int:
        """X.509 verification flags of the peer certificate."""
        return int(lib.dp_conn_verify_flags(self._conn))

    @property
    def reason(self) -> str:
        """Readable reason for the last status change."""
        buf = ffi.new("char[]", 512)
        lib.dp_conn_reason(self._conn, buf, len(buf))
        text: str = ffi.string(buf).decode("utf-8", "replace")
        return text

    @property
    def ciphersuite(self) -> str:
        """Negotiated ciphersuite name ("" until connected)."""
        buf = ffi.new("char[]", 128)
        lib.dp_conn_ciphersuite(self._conn, buf, len(buf))
        name: str = ffi.string(buf).decode("ascii")
        return name

    def set_session(self, blob: bytes) -> None:
        """Client, before the first :meth:`update`: offer a saved session.
        InvalidArgumentError when it does not load (see ``session.offer_error``)."""
        rc = lib.dp_conn_set_session(self._conn, blob, len(blob))
        if rc < 0:
            if rc == lib.DP_ERR_BAD_STATE:
                check(rc, "set_session")
            raise offer_error(rc)

    def get_session(self) -> Optional[bytes]:
        """Client, once connected: the saved session (None if there is none)."""
        conn = self._conn
        session = fetch_session(lambda buf, cap: lib.dp_conn_get_session(conn, buf, cap))
        return None if session is None else session.to_bytes()

    def resumed(self) -> bool:
        """True if the handshake resumed a session."""
        return bool(lib.dp_conn_resumed(self._conn))

    @property
    def connection_id(self) -> Optional[tuple[bytes, bytes]]:
        """(our CID, the peer's CID) once an RFC 9146 CID was negotiated, else None."""
        own, peer = ffi.new("uint8_t[]", lib.DP_CID_MAX), ffi.new("uint8_t[]", lib.DP_CID_MAX)
        own_len, peer_len = ffi.new("size_t *"), ffi.new("size_t *")
        if check(lib.dp_conn_cid(self._conn, own, own_len, peer, peer_len), "connection_id") != 1:
            return None
        return bytes(ffi.buffer(own, own_len[0])), bytes(ffi.buffer(peer, peer_len[0]))

    @property
    def rx_newest(self) -> int:
        """(epoch << 48) | sequence number of the newest authenticated record
        (what an RFC 9146 address move requires to grow), 0 before any."""
        return int(lib.dp_conn_rx_newest(self._conn))

    @property
    def parked(self) -> bool:
        """True while the idle connection is parked (serialized, context freed).
        Informational only: every method works the same either way."""
        return bool(check(lib.dp_conn_parked(self._conn), "parked"))

    def stats(self) -> dict[str, int]:
        """Counters: datagrams/records in and out, drops by reason, bad MACs,
        parks/unparks."""
        out = ffi.new("dp_conn_stats *")
        lib.dp_conn_get_stats(self._conn, out)
        return _struct_to_dict("dp_conn_stats", out[0])

    def close(self) -> None:
        """Free the native connection now (no close_notify: see :meth:`disconnect`)."""
        if self._ptr is not None:
            ffi.release(self._ptr)
            self._ptr = None

"""DTLSHost: the batch API for servers and clients with many DTLS peers (ours).

ENet-style: one :meth:`DTLSHost.service` call does everything in C
(``src/native/dp_host.c``): it waits up to ``timeout`` for the socket, reads
every datagram (``recvmmsg``), routes it by address, passes unknown senders
through the stateless cookie gate, drives handshakes, runs the due timers
(a min-heap: idle peers cost nothing), decrypts, and returns a list of
:class:`HostEvent`. Sends are encrypted at once and leave in ``sendmmsg``
batches at the end of ``service()`` or on :meth:`DTLSHost.flush`. Python's
cost is per event, never per datagram or per idle peer.

The same C core runs the Godot-style classes (``PacketPeerDTLS``,
``DTLSServer``), so a ``PacketPeerDTLS`` client talks to a ``DTLSHost``
server and a ``DTLSHost`` client to a ``DTLSServer``.

Threads: use each object from one thread at a time. A host and its peers
share one native lock, so peers may be used on other threads than the one
running ``service()``; ``close()`` from another thread is the way to stop a
network thread: it wakes a ``service()`` blocked there, which returns no
events (see :meth:`DTLSHost.close`).
"""

from __future__ import annotations

import enum
import math
import socket
import struct
import sys
from array import array
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Union

from . import errors
from ._binding import NOW, check, ffi, lib, to_bytes
from ._engine import CookieGate, EngineConfig, _struct_to_dict, steer_by_cid
from .dtls import (
    _NO_SIZE_CAP,
    DTLSSettings,
    PacketPeerDTLS,
    _build_client_config,
    _build_server_config,
    _check_settings,
    _Status,
    _ticket_keys_arg,
)
from .packet_peer import BytesLike
from .session import Session, SessionTicketKeys, fetch_session, offer_error, session_arg
from .tls_options import PeerCertificate, TLSOptions, read_peer_certificate
from .udp import _addr_text, _check_int, _fill_addr, _open_socket, _resolve
from .variant import bytes_to_var

__all__ = ["DTLSHost", "DisconnectReason", "HostEvent", "HostEventType", "HostPeer"]

# dp_host_event: peer, payload offset, length, code, type, reason, status, pad.
_EVENT = struct.Struct("<QIIiBBBB")
_EVENT_SIZE = _EVENT.size
assert _EVENT_SIZE == ffi.sizeof("dp_host_event"), "dp_host_event layout changed"
_unpack_events = _EVENT.iter_unpack
_unpack_event = _EVENT.unpack_from
_new_tuple = tuple.__new__
_RECEIVE_CODE = int(lib.DP_HOST_EVENT_RECEIVE)
_CONNECT_CODE = int(lib.DP_HOST_EVENT_CONNECT)
_ADDRESS_CODE = int(lib.DP_HOST_EVENT_ADDRESS_CHANGED)
_service_run = lib.dp_host_service_args_run
_host_send = lib.dp_host_send
_host_send_many = lib.dp_host_send_many
_from_buffer = ffi.from_buffer
_CLOSED = lib.DP_ERR_CLOSED
_ERRORS_RAISED_BY_SEND = (
    lib.DP_ERR_TOO_LARGE,
    lib.DP_ERR_INVALID_ARGUMENT,
    lib.DP_ERR_BAD_STATE,
    lib.DP_ERR_CLOSED,
)
_DEFAULT_SOCKET_BUFFER = 4 * 1024 * 1024
# SO_ATTACH_REUSEPORT_CBPF (dp_steer.c) exists on Linux only.
_STEERING = sys.platform.startswith("linux")


class HostEventType(enum.IntEnum):
    """What a :class:`HostEvent` reports."""

    CONNECT = lib.DP_HOST_EVENT_CONNECT
    """A handshake finished; ``peer`` is now connected."""
    RECEIVE = lib.DP_HOST_EVENT_RECEIVE
    """``data`` is one record received from ``peer``."""
    DISCONNECT = lib.DP_HOST_EVENT_DISCONNECT
    """A peer you know (CONNECT seen, or made by ``connect``) ended; see ``reason``."""
    ERROR = lib.DP_HOST_EVENT_ERROR
    """An accepted client's handshake failed before connecting (you never saw
    a CONNECT for it); informational."""
    ADDRESS_CHANGED = lib.DP_HOST_EVENT_ADDRESS_CHANGED
    """A peer with an RFC 9146 Connection ID now sends from a new address
    (its NAT rebound): same peer, same session; ``peer.get_peer_address()``
    is the new one and replies go there. Only after a record from the new
    address was authenticated and newer than every earlier one."""


class DisconnectReason(enum.IntEnum):
    """Why a peer ended (``HostEvent.reason``)."""

    NONE = lib.DP_HOST_REASON_NONE
    PEER_CLOSED = lib.DP_HOST_REASON_PEER_CLOSED
    """The peer sent close_notify."""
    LOCAL = lib.DP_HOST_REASON_LOCAL
    """``disconnect_from_peer()`` / ``DTLSHost.disconnect`` was called."""
    IDLE_TIMEOUT = lib.DP_HOST_REASON_IDLE_TIMEOUT
    """Connected, but no record arrived for ``settings.idle_timeout_ms``."""
    HANDSHAKE_TIMEOUT = lib.DP_HOST_REASON_HANDSHAKE_TIMEOUT
    """Retransmissions or ``settings.handshake_deadline_ms`` ran out."""
    HANDSHAKE_FAILED = lib.DP_HOST_REASON_HANDSHAKE_FAILED
    """A TLS failure before connecting (certificate, alert, bad PSK...)."""
    TLS_ERROR = lib.DP_HOST_REASON_TLS_ERROR
    """A TLS failure or fatal alert while connected."""
    RECONNECT = lib.DP_HOST_REASON_RECONNECT
    """The client completed a new session from the same address and port
    (RFC 6347 4.2.8): this peer lived until the new handshake's Finished was
    verified; the new session is a NEW peer whose CONNECT follows."""


_TYPES = {int(t): t for t in HostEventType}
_RECEIVE = HostEventType.RECEIVE
_REASONS = {int(r): r for r in DisconnectReason}
_NO_REASON = DisconnectReason.NONE


def _timeout_ms(timeout: Any) -> int:
    """service()'s timeout outside the per-tick fast path: checked, in ms."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise errors.ArgumentTypeError(
            f"timeout must be a number or None, not {type(timeout).__name__}"
        )
    if not timeout >= 0:  # also NaN
        raise errors.InvalidArgumentError("timeout must be >= 0 (or None: no limit)")
    if timeout >= (2**31 - 1) / 1000:  # also inf
        return 2**31 - 1
    return math.ceil(timeout * 1000)


class HostEvent(NamedTuple):
    """One thing that happened during :meth:`DTLSHost.service`.

    ``data`` is the record for RECEIVE (``b""`` otherwise); ``reason``,
    ``message`` (readable text) and ``code`` (Mbed TLS / dtlspeer code, 0 if
    none) describe DISCONNECT and ERROR events.
    """

    type: HostEventType
    peer: HostPeer
    data: bytes = b""
    reason: DisconnectReason = DisconnectReason.NONE
    message: str = ""
    code: int = 0

    def var(self, allow_objects: bool = False, *, godot: int = 4) -> Any:
        """Decode a RECEIVE's ``data`` as a Godot Variant (what the sender's
        ``put_var`` sent), straight from ``data`` with no copy. Raises
        VariantDecodeError for bytes that are not one, StateError for
        another event type. See :func:`dtlspeer.variant.bytes_to_var`."""
        if self.type is not _RECEIVE:
            raise errors.StateError(f"a {self.type.name} event carries no Variant")
        return bytes_to_var(self.data, allow_objects=allow_objects, godot=godot)


class HostPeer(PacketPeerDTLS):
    """A DTLS peer of a :class:`DTLSHost` (a ``PacketPeerDTLS`` over the host's
    socket and connection table).

    ``put_packet``, ``get_status``, ``disconnect_from_peer``,
    ``get_last_error``, ``get_error_code``, ``get_verify_flags``,
    ``get_ciphersuite``, ``get_max_packet_size``, ``get_stats`` and
    ``get_peer_address`` work as on any ``PacketPeerDTLS`` and act on the
    same native connection the host drives.

    Receiving is the host's job: records arrive as ``RECEIVE`` events from
    :meth:`DTLSHost.service` (in order per peer), so ``get_packet()`` always
    raises WouldBlockError and ``get_available_packet_count()`` is 0.
    ``poll()`` sends the host's queued records now (``DTLSHost.flush``);
    everything else happens in ``service()``. ``put_packet`` queues the
    record; it leaves at the next ``service()`` or ``flush()``.
    """

    def __init__(self, host: DTLSHost, peer_id: int, outgoing: bool) -> None:
        """Made by the host only (on CONNECT, or by ``DTLSHost.connect``)."""
        super().__init__()
        self._host = host
        self._ended = False  # its DISCONNECT/ERROR event was decoded, or the host closed
        self._peer_id = peer_id
        self._outgoing = outgoing
        self._status = _Status.STATUS_HANDSHAKING
        self._reason = "handshaking"
        self._address: tuple[str, int] = ("", 0)
        self._final_suite = ""
        self._final_cid: tuple[bytes, bytes] | None = None
        self._settings = host._settings
        self._size_cap = host._settings.max_packet_size or _NO_SIZE_CAP
        self._closed_locally = False

    # -- internals -------------------------------------------------------------

    def _live_host(self) -> DTLSHost | None:
        host = self._host
        return None if self._ended or host._ptr is None else host

    def _info(self) -> Any | None:
        host = self._live_host()
        if host is None:
            return None
        info = host._info
        if lib.dp_host_peer_get_info(host._ptr, self._peer_id, info) < 0:
            return None
        return info

    def _finish(self, status: int, message: str, code: int) -> None:
        """Keep the outcome; the native entry is released by the next service."""
        host = self._live_host()
        if host is not None:
            self._address = self.get_peer_address()
            self._conn_stats = self.get_stats()
            self._verify_flags = self.get_verify_flags()
            self._final_suite = self.get_ciphersuite()
            self._final_cid = self.get_connection_id()
            self._resumed = self.is_session_resumed()
            # Only outgoing peers have a session; only servers asking for
            # client certificates have one to keep (no calls per peer otherwise).
            if self._outgoing:
                self._session = self._native_session()
            elif host._client_auth:
                self._peer_cert = self.get_peer_certificate()
        self._status = _Status(status)
        self._reason = message
        self._error_code = code
        self._ended = True

    # -- PacketPeerDTLS API ------------------------------------------------------

    @property
    def peer_id(self) -> int:
        """The host's id of this peer (unique for the host's lifetime)."""
        return self._peer_id

    @property
    def host(self) -> DTLSHost | None:
        """The host driving this peer; None once it ended."""
        return None if self._ended else self._host

    def is_outgoing(self) -> bool:
        """True when this host started the connection (``DTLSHost.connect``)."""
        return self._outgoing

    def connect_to_peer(self, *args: Any, **kwargs: Any) -> None:
        """Not for host peers: use :meth:`DTLSHost.connect`. Raises StateError."""
        raise errors.StateError("host peers are created by DTLSHost.connect()")

    def poll(self) -> None:
        """Send the host's queued records now (``DTLSHost.flush``); receiving,
        handshakes and timers run in :meth:`DTLSHost.service`."""
        host = self._live_host()
        if host is not None:
            host.flush()

    def get_status(self) -> _Status:
        """The connection status now (Godot ``get_status``)."""
        info = self._info()
        if info is None:
            return self._status
        return _Status(info.status)

    def disconnect_from_peer(self) -> None:
        """Send close_notify if connected and end the peer now; a DISCONNECT
        event (reason LOCAL) follows from the next ``service()``. Records not
        yet returned as events are dropped. Idempotent."""
        host = self._live_host()
        if host is not None:
            host.disconnect(self)

    def get_available_packet_count(self) -> int:
        """Always 0: host peers receive through ``RECEIVE`` events."""
        return 0

    def get_packet(self) -> bytes:
        """Raises WouldBlockError: records arrive as ``RECEIVE`` events of
        :meth:`DTLSHost.service`."""
        exc = errors.WouldBlockError("host peers receive through DTLSHost.service() RECEIVE events")
        self._packet_error = exc
        raise exc

    def put_packet(self, data: BytesLike) -> None:
        """Queue ``data`` as one DTLS record (sent at the next ``service()``
        or ``flush()``). Empty data sends nothing. InvalidArgumentError above
        :meth:`get_max_packet_size`. StateError while handshaking, after
        ``disconnect_from_peer()`` and after the host closed. A peer that the
        remote side ended (close_notify, timeout, TLS error) silently drops
        the record, counted in ``DTLSHost.get_stats()["send_to_ended"]``: a
        handler replying to its last RECEIVE events, which come in the same
        list as its DISCONNECT, must not blow up (remote doing never raises)."""
        host = self._host
        ptr = host._ptr
        if ptr is None or self._closed_locally:
            raise errors.StateError(f"cannot put_packet: not connected ({self._status.name})")
        if type(data) is not bytes:
            data = to_bytes(data, "data")
        if len(data) > self._size_cap:
            raise errors.InvalidArgumentError(
                f"packet of {len(data)} bytes exceeds settings.max_packet_size={self._size_cap}"
            )
        # One native call: it checks the state and the record size itself
        # (empty data: nothing is sent).
        rc = _host_send(ptr, self._peer_id, data, len(data), host._now)
        if rc < 0:
            host._send_failed(self, rc, len(data))

    def get_max_packet_size(self) -> int:
        """Largest ``put_packet`` payload now (0 unless connected)."""
        info = self._info()
        if info is None or info.status != lib.DP_STATUS_CONNECTED:
            return 0
        cap = self._settings.max_packet_size
        return min(info.max_payload, cap) if cap else int(info.max_payload)

    def get_last_error(self) -> str:
        """Why the status last changed, in words."""
        host = self._live_host()
        if host is None:
            return self._reason
        buf = host._text
        if lib.dp_host_peer_reason(host._ptr, self._peer_id, buf, len(buf)) < 0:
            return self._reason
        return str(ffi.string(buf).decode("utf-8", "replace"))

    def get_error_code(self) -> int:
        """Mbed TLS / dtlspeer code behind an error status (0 if none)."""
        info = self._info()
        return self._error_code if info is None else int(info.last_error)

    def get_verify_flags(self) -> int:
        """X.509 verification flags of the peer's certificate."""
        info = self._info()
        return self._verify_flags if info is None else int(info.verify_flags)

    def get_ciphersuite(self) -> str:
        """The negotiated ciphersuite ("" before the handshake)."""
        host = self._live_host()
        if host is None:
            return self._final_suite
        buf = host._text
        if lib.dp_host_peer_ciphersuite(host._ptr, self._peer_id, buf, len(buf)) < 0:
            return self._final_suite
        return str(ffi.string(buf).decode("ascii", "replace"))

    def get_stats(self) -> dict[str, int]:
        """The connection's counters (as ``PacketPeerDTLS.get_stats``, without
        the per-peer socket counters: see ``DTLSHost.get_stats``)."""
        host = self._live_host()
        if host is None:
            return dict(self._conn_stats)
        out = host._conn_stats_out
        if lib.dp_host_peer_stats(host._ptr, self._peer_id, out) < 0:
            return dict(self._conn_stats)
        return _struct_to_dict("dp_conn_stats", out[0])

    def get_connection_id(self) -> tuple[bytes, bytes] | None:
        """(our CID, the peer's CID) when RFC 9146 Connection ID was
        negotiated, else None (kept after the peer ended)."""
        host = self._live_host()
        if host is None:
            return self._final_cid
        own, peer = ffi.new("uint8_t[]", lib.DP_CID_MAX), ffi.new("uint8_t[]", lib.DP_CID_MAX)
        own_len, peer_len = ffi.new("size_t *"), ffi.new("size_t *")
        if lib.dp_host_peer_cid(host._ptr, self._peer_id, own, own_len, peer, peer_len) != 1:
            return self._final_cid
        return bytes(ffi.buffer(own, own_len[0])), bytes(ffi.buffer(peer, peer_len[0]))

    def _native_session(self) -> bytes | None:
        host = self._live_host()
        if host is None:
            return self._session
        ptr, peer_id = host._ptr, self._peer_id
        try:
            session = fetch_session(
                lambda buf, cap: lib.dp_host_peer_session(ptr, peer_id, buf, cap))
        except errors.StateError:  # the entry is gone: what _finish kept
            return self._session
        return None if session is None else session.to_bytes()

    def get_session(self) -> Session | None:
        """Outgoing peers (ours): the session to resume later with
        ``DTLSHost.connect(..., session=...)``, once connected (kept after the
        peer ended); None before, and on peers of the server role. Secret
        material: store it like a key."""
        blob = self._native_session()
        return None if blob is None else Session(blob)

    def is_session_resumed(self) -> bool:
        """True if the handshake resumed a session (ours; both roles report it)."""
        host = self._live_host()
        if host is None:
            return self._resumed
        rc = lib.dp_host_peer_resumed(host._ptr, self._peer_id)
        return self._resumed if rc < 0 else rc == 1

    def get_peer_certificate(self) -> PeerCertificate | None:
        """Server role with ``TLSOptions.server(client_auth=...)`` (ours): the
        client's verified certificate once connected, else None."""
        host = self._live_host()
        if host is None:
            return self._peer_cert
        ptr, peer_id = host._ptr, self._peer_id
        try:
            return read_peer_certificate(
                lambda subject, subject_cap, san, san_cap, fingerprint:
                lib.dp_host_peer_certificate(ptr, peer_id, subject, subject_cap, san, san_cap,
                                             fingerprint))
        except errors.StateError:  # the entry is gone: what _finish kept
            return self._peer_cert

    def get_peer_address(self) -> tuple[str, int]:
        """(IP, port) of the remote side (kept after the peer ended); with a
        Connection ID it follows the peer (``ADDRESS_CHANGED`` events)."""
        info = self._info()
        if info is None:
            return self._address
        return _addr_text(info.addr), int(info.addr.port)

    def __repr__(self) -> str:
        ip, port = self.get_peer_address()
        return f"<HostPeer {self.get_status().name} {ip}:{port} id={self._peer_id:#x}>"


Exclude = Union[None, HostPeer, Iterable[HostPeer]]


class DTLSHost:
    """Many DTLS peers on one UDP socket, serviced in one native call (ours).

    Server (accepts clients)::

        host = DTLSHost("*", 4433, server_options=TLSOptions.server(key, cert))
        while running:
            for event in host.service(timeout=1 / 60):
                if event.type == HostEventType.CONNECT: ...
                elif event.type == HostEventType.RECEIVE:
                    # (records up to settings.max_receive_size arrive; check
                    # replies against event.peer.get_max_packet_size())
                    event.peer.put_packet(reply(event.data))
                elif event.type == HostEventType.DISCONNECT: ...   # event.reason
            host.broadcast(state)                                  # sent by the next service

    Client (or relay, both roles on one socket)::

        host = DTLSHost(client_options=TLSOptions.client(ca))
        server = host.connect("game.example", 4433)                # CONNECT event follows

    Credentials: ``server_options`` (``TLSOptions.server``) and/or
    ``server_psk`` (identity -> key) make it accept clients;
    ``client_options`` and/or ``client_psk`` ((identity, key)) are used by
    :meth:`connect` (default: ``TLSOptions.client()``). ``settings``
    (:class:`~dtlspeer.dtls.DTLSSettings`) sets timers, idle timeout and MTU for every peer.
    ``ciphersuites`` restricts both roles (Mbed TLS names). ``max_peers``
    bounds the connections (handshaking + connected). Handshakes admitted
    by the cookie gate are bounded too: ``max_handshaking`` in total
    (default ``min(max_peers, 1024)``) and ``max_handshaking_per_address``
    per client IP address (default 16). When a bound or ``max_peers`` is
    reached, a client with a valid cookie evicts the oldest handshake whose
    client never sent its key exchange (no event: it was never reported);
    connected peers are never evicted; otherwise it is not admitted
    (``get_stats()`` counts each reason). ``cookie_secret`` (16..64 bytes)
    lets several processes accept each other's cookies (their gates then
    use the wall clock for cookies; connection timers stay on the monotonic
    clock).

    Worker processes on one port (ours; ``docs/deploy.md``): ``reuse_port``
    binds with ``SO_REUSEPORT`` (Linux, BSD, macOS: only sockets of the same
    user join the group), so N processes share the port and the kernel
    spreads clients by address hash; give them one ``cookie_secret``.
    ``worker_id`` (0..255) is written as the first byte of every Connection
    ID this host's server chooses (``settings.connection_id_length`` >= 1);
    with ``reuse_port`` on Linux the host also attaches a classic-BPF
    reuseport program that sends a CID record to the socket whose index in
    the group is that byte, so a client whose NAT rebinds reaches the worker
    that holds its session. Socket indexes are the order in which the
    workers bound: start worker 0 first, then 1, ... (``dtlspeer serve
    --workers N`` does). Elsewhere the program is not available: rebound
    CID clients land on a worker by hash (documented limitation).

    Session resumption (RFC 5077; ours): the server role issues session
    tickets by default with keys of its own; ``ticket_keys`` (a
    :class:`~dtlspeer.session.SessionTicketKeys`) shares them with other
    processes or machines, ``False`` turns tickets off. The client role
    resumes with ``connect(..., session=peer.get_session())``.

    Events per call are bounded by ``max_events`` and ``payload_buffer_size``
    bytes of payload; what does not fit stays queued in C for the next call
    (nothing is lost, per-peer order is kept).

    Differences from Godot's ENet-based peers: each peer is a DTLS 1.2
    association, there are no channels and no reliability layer (records
    are datagrams: they can be lost or reordered, never corrupted).
    """

    def __init__(
        self,
        bind_address: str = "*",
        port: int = 0,
        *,
        server_options: TLSOptions | None = None,
        server_psk: Mapping[bytes, bytes] | None = None,
        client_options: TLSOptions | None = None,
        client_psk: tuple[bytes, bytes] | None = None,
        settings: DTLSSettings | None = None,
        ciphersuites: Sequence[str] | None = None,
        max_peers: int = 4096,
        max_handshaking: int | None = None,
        max_handshaking_per_address: int = lib.DP_HOST_DEFAULT_MAX_HANDSHAKING_PER_ADDRESS,
        cookie_secret: bytes | None = None,
        ticket_keys: SessionTicketKeys | bool | None = None,
        max_events: int = 4096,
        payload_buffer_size: int = 1 << 20,
        socket_buffer_size: int = _DEFAULT_SOCKET_BUFFER,
        reuse_port: bool = False,
        worker_id: int | None = None,
    ) -> None:
        """Bind a socket and set up the roles (see the class notes)."""
        self._ptr: Any = None
        self._fd = -1  # the native host owns and closes it
        self._port = 0
        self._family = socket.AF_INET
        self._settings = _check_settings(settings)
        max_peers = _check_int(max_peers, "max_peers")
        max_events = _check_int(max_events, "max_events")
        payload_buffer_size = _check_int(payload_buffer_size, "payload_buffer_size")
        socket_buffer_size = _check_int(socket_buffer_size, "socket_buffer_size")
        if not 1 <= max_peers < 2**31:
            raise errors.InvalidArgumentError("max_peers must be in 1 .. 2**31-1")
        if max_handshaking is None:
            max_handshaking = min(max_peers, lib.DP_HOST_DEFAULT_MAX_HANDSHAKING)
        max_handshaking = _check_int(max_handshaking, "max_handshaking")
        per_address = _check_int(max_handshaking_per_address, "max_handshaking_per_address")
        if not 1 <= max_handshaking < 2**31 or not 1 <= per_address < 2**31:
            raise errors.InvalidArgumentError(
                "max_handshaking and max_handshaking_per_address must be in 1 .. 2**31-1"
            )
        if not 1 <= max_events <= 1 << 20:
            raise errors.InvalidArgumentError("max_events must be in 1 .. 2**20")
        if not lib.DP_HOST_MIN_PAYLOAD <= payload_buffer_size <= 1 << 30:
            raise errors.InvalidArgumentError(
                f"payload_buffer_size must be in {lib.DP_HOST_MIN_PAYLOAD} .. 2**30 "
                "(it must hold the largest record)"
            )
        if cookie_secret is not None:
            cookie_secret = to_bytes(cookie_secret, "cookie_secret")
            if not 16 <= len(cookie_secret) <= 64:
                raise errors.InvalidArgumentError("cookie_secret must be 16..64 bytes")
        # The native calls read the monotonic clock themselves (a gate with a
        # shared cookie secret reads the wall clock for its cookies only).
        self._now = NOW
        suites = list(ciphersuites) if ciphersuites is not None else None
        self._worker_prefix = self._check_worker(worker_id, reuse_port)
        self._tickets: SessionTicketKeys | None = None
        self._client_auth = server_options is not None and (
            isinstance(server_options, TLSOptions) and server_options.get_client_auth() != "none"
        )
        if server_options is not None or server_psk is not None:
            self._tickets = _ticket_keys_arg(ticket_keys)
        server_config = self._server_config(
            server_options, server_psk, cookie_secret, self._tickets, suites
        )
        self._client_options = client_options
        self._client_psk = client_psk
        self._suites = suites
        client_config = None
        if client_options is not None or client_psk is not None:
            client_config = self._client_config(client_options, client_psk, suites)

        sock = _open_socket(bind_address, port, reuse_port=reuse_port)
        try:
            cid_len = server_config[0].connection_id_length if server_config else 0
            if reuse_port and worker_id is not None and cid_len > 0 and _STEERING:
                steer_by_cid(sock, cid_len)
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                # Bursts of thousands of datagrams per tick; the OS may cap it.
                sock.setsockopt(socket.SOL_SOCKET, option, socket_buffer_size)
            out = ffi.new("dp_host **")
            family = 6 if sock.family == socket.AF_INET6 else 4
            self._port = int(sock.getsockname()[1])
            self._family = sock.family
            check(lib.dp_host_new(sock.fileno(), family, max_peers, out), "DTLSHost")
            # The native host owns the descriptor from now on and closes it
            # after its last close_notify: no Python socket object (closed by
            # the garbage collector in any order) can close it under the host.
            self._fd = sock.detach()
            self._ptr = ffi.gc(out[0], lib.dp_host_free)
            check(
                lib.dp_host_set_handshake_limits(self._ptr, max_handshaking, per_address),
                "handshake limits",
            )
            if server_config is not None:
                config, gate = server_config
                check(lib.dp_host_set_server(self._ptr, config.handle, gate.handle), "server")
            if client_config is not None:
                check(lib.dp_host_set_client(self._ptr, client_config.handle), "client")
        except BaseException:
            if self._ptr is not None:
                lib.dp_host_close(self._ptr, 0)  # closes the descriptor too
                self._ptr = None
            sock.close()  # a no-op once detached
            raise
        self._has_client = client_config is not None
        self._peers: dict[int, HostPeer] = {}
        self._max_events = max_events
        self._events = ffi.new("dp_host_event[]", max_events)
        self._payload_cap = payload_buffer_size
        self._payload = ffi.new("uint8_t[]", payload_buffer_size)
        self._payload_view = ffi.buffer(self._payload)
        self._events_view = memoryview(ffi.buffer(self._events))
        self._events_buffer = ffi.buffer(self._events)
        # service()'s fixed arguments, converted once (dp_host_service_args).
        args = self._service_args = ffi.new("dp_host_service_args *")
        args.now_ms, args.events, args.max_events = self._now, self._events, max_events
        args.payload_buf, args.payload_cap = self._payload, payload_buffer_size
        self._info = ffi.new("dp_host_peer_info *")
        self._text = ffi.new("char[]", 512)
        self._conn_stats_out = ffi.new("dp_conn_stats *")
        self._peer_out = ffi.new("uint64_t *")
        self._failed_at = ffi.new("size_t *")  # send_many: the item it refused
        self._addr = ffi.new("dp_addr *")

    # -- configuration ---------------------------------------------------------------

    def _common(self, suites: list[str] | None) -> dict[str, Any]:
        options = self._settings._engine_options()
        if suites is not None:
            options["ciphersuites"] = suites
        return options

    def _server_common(self, suites: list[str] | None) -> dict[str, Any]:
        options = self._common(suites)
        options["connection_id_prefix"] = self._worker_prefix
        return options

    def _check_worker(self, worker_id: int | None, reuse_port: bool) -> bytes:
        """The server CID prefix for ``worker_id`` (b"" for none)."""
        if not isinstance(reuse_port, bool):
            raise errors.ArgumentTypeError(
                f"reuse_port must be a bool, not {type(reuse_port).__name__}")
        if worker_id is None:
            return b""
        worker_id = _check_int(worker_id, "worker_id")
        if not 0 <= worker_id <= 255:
            raise errors.InvalidArgumentError("worker_id must be in 0 .. 255 (one CID byte)")
        if self._settings.connection_id is False or self._settings.connection_id_length == 0:
            raise errors.InvalidArgumentError(
                "worker_id travels in the Connection ID: it needs connection_id "
                "and connection_id_length >= 1")
        return bytes([worker_id])

    def _server_config(
        self,
        options: TLSOptions | None,
        psk: Mapping[bytes, bytes] | None,
        secret: bytes | None,
        tickets: SessionTicketKeys | None,
        suites: list[str] | None,
    ) -> tuple[EngineConfig, CookieGate] | None:
        if options is None and psk is None:
            return None
        if options is not None:
            if not isinstance(options, TLSOptions):
                raise errors.ArgumentTypeError(
                    f"server_options must be TLSOptions, not {type(options).__name__}"
                )
            if not options.is_server():
                raise errors.InvalidArgumentError(
                    "server_options are client options (use TLSOptions.server)"
                )
        if psk is not None and not isinstance(psk, Mapping):
            raise errors.ArgumentTypeError("server_psk must be a mapping identity -> key")
        gate = CookieGate(secret)
        config = _build_server_config(
            options, gate, tickets, psks=psk, **self._server_common(suites)
        )
        return config, gate

    def _client_config(
        self,
        options: TLSOptions | None,
        psk: tuple[bytes, bytes] | None,
        suites: list[str] | None,
    ) -> EngineConfig:
        if options is None:
            # A PSK authenticates the server; without one, verify against the system CAs.
            options = TLSOptions.client_unsafe() if psk is not None else TLSOptions.client()
        if not isinstance(options, TLSOptions):
            raise errors.ArgumentTypeError(
                f"client_options must be TLSOptions, not {type(options).__name__}"
            )
        if options.is_server():
            raise errors.InvalidArgumentError(
                "client_options are server options (use TLSOptions.client)"
            )
        if psk is not None and (not isinstance(psk, tuple) or len(psk) != 2):
            raise errors.ArgumentTypeError("client_psk must be a tuple (identity, key)")
        return _build_client_config(options, psk=psk, **self._common(suites))

    # -- internals -----------------------------------------------------------------------

    def _require(self) -> Any:
        if self._ptr is None:
            raise errors.StateError("the host is closed")
        return self._ptr

    def _send_failed(self, peer: HostPeer, rc: int, size: int) -> None:
        """A failed dp_host_send: raise for local misuse, stay quiet for the
        remote side's doing."""
        if rc not in _ERRORS_RAISED_BY_SEND:
            return  # the connection's failure: it shows in the status and as an event
        if rc == lib.DP_ERR_CLOSED and not peer._closed_locally:
            # The remote side ended it; its DISCONNECT event is in this
            # service's events or the next: dropped (counted), no raise.
            return
        if rc == lib.DP_ERR_BAD_STATE or rc == lib.DP_ERR_CLOSED:
            raise errors.StateError(f"cannot put_packet: not connected ({peer.get_status().name})")
        check(rc, f"put_packet of {size} bytes")

    def _peer_for(self, peer_id: int) -> HostPeer:
        peer = self._peers.get(peer_id)
        if peer is None:
            peer = HostPeer(self, peer_id, False)
            self._peers[peer_id] = peer
        return peer

    # -- API ------------------------------------------------------------------------------

    def service(self, timeout: float | None = 0) -> list[HostEvent]:
        """Do everything once (see the class notes) and return the events.

        ``timeout`` (seconds): how long to wait for a datagram when nothing
        is ready; 0 returns at once, None waits until a datagram arrives or
        a peer's timer is due. Waiting never passes the next timer. Queued
        sends leave before waiting and at the end. Per peer, events keep
        their order: CONNECT, RECEIVE..., DISCONNECT. StateError after
        :meth:`close`; a call that :meth:`close` (on another thread)
        interrupts returns ``[]``.
        """
        ptr = self._ptr
        if ptr is None:
            raise errors.StateError("the host is closed")
        kind_of = type(timeout)
        # The per-tick fast path (exact float/int only: no bool; NaN fails 0 <= t).
        if (kind_of is float or kind_of is int) and 0 <= timeout <= 1e6:  # type: ignore[operator]
            timeout_ms = math.ceil(timeout * 1000)  # type: ignore[operator]
        elif timeout is None:
            timeout_ms = -1
        else:
            timeout_ms = _timeout_ms(timeout)
        count = _service_run(ptr, self._service_args, timeout_ms)
        if count <= 0:
            if count < 0 and count != _CLOSED:  # closed: by close() on another thread
                check(count, "service")
            return []
        # Per event: one unpack, one payload copy, one tuple (RECEIVE is the
        # hot case; tuple.__new__ skips NamedTuple's argument handling). One
        # event (a reply, a ping-pong) skips the slice and the iterator.
        payload = self._payload_view
        peers = self._peers
        rows = (
            (_unpack_event(self._events_buffer),)
            if count == 1
            else _unpack_events(self._events_view[: count * _EVENT_SIZE])
        )
        result: list[HostEvent] = []
        for peer_id, offset, length, code, kind, reason, status, _ in rows:
            if kind == _RECEIVE_CODE:
                peer = peers.get(peer_id)
                if peer is None:
                    peer = self._peer_for(peer_id)
                data = payload[offset : offset + length]
                result.append(_new_tuple(HostEvent, (_RECEIVE, peer, data, _NO_REASON, "", 0)))
            elif kind == _CONNECT_CODE:
                result.append(HostEvent(HostEventType.CONNECT, self._peer_for(peer_id)))
            elif kind == _ADDRESS_CODE:
                result.append(HostEvent(HostEventType.ADDRESS_CHANGED, self._peer_for(peer_id)))
            else:
                text = payload[offset : offset + length]
                result.append(self._ended_event(peer_id, text, code, kind, reason, status))
        return result

    def _ended_event(
        self, peer_id: int, text: bytes, code: int, kind: int, reason: int, status: int
    ) -> HostEvent:
        """A DISCONNECT/ERROR record: the peer keeps its outcome and leaves."""
        message = text.decode("utf-8", "replace")
        peer = self._peers.pop(peer_id, None)
        if peer is None:
            peer = HostPeer(self, peer_id, False)
        peer._finish(status, message, code)
        return HostEvent(
            _TYPES[kind], peer, b"", _REASONS.get(reason, DisconnectReason.NONE), message, code
        )

    def connect(self, address: str, port: int, hostname: str | None = None, *,
                session: Session | bytes | None = None) -> HostPeer:
        """Start a handshake with ``address``:``port``; returns the peer
        (``STATUS_HANDSHAKING``). A CONNECT or DISCONNECT event follows.
        ``hostname`` is checked against the server certificate (and sent as
        SNI); default: ``address`` when certificates are verified.
        ``session`` (a :class:`~dtlspeer.session.Session` from an earlier
        peer's ``get_session()``) is offered for resumption; the server may
        decline it and a full handshake runs (``is_session_resumed()``
        tells). InvalidArgumentError for data that is not a saved session.
        StateError if a peer with that address exists; LimitError at
        ``max_peers``."""
        blob = session_arg(session)
        ptr = self._require()
        if not isinstance(address, str):
            raise errors.ArgumentTypeError(f"address must be str, not {type(address).__name__}")
        port = _check_int(port, "port")
        if not 1 <= port <= 65535:
            raise errors.InvalidArgumentError(f"port must be in 1..65535, not {port}")
        if hostname is not None and not isinstance(hostname, str):
            raise errors.ArgumentTypeError("hostname must be str or None")
        if not self._has_client:
            config = self._client_config(self._client_options, self._client_psk, self._suites)
            check(lib.dp_host_set_client(ptr, config.handle), "client")
            self._has_client = True
        ip, scope = _resolve(address, port, self._family)
        _fill_addr(self._addr, ip, port, scope)
        name = address if hostname is None else hostname
        if "\0" in name:
            raise errors.InvalidArgumentError("hostname contains a NUL character")
        encoded = name.encode("idna" if not name.isascii() else "ascii") if name else ffi.NULL
        if blob is None:
            rc = lib.dp_host_connect(ptr, self._addr, encoded, self._now, self._peer_out)
        else:
            rc = lib.dp_host_connect_session(
                ptr, self._addr, encoded, blob, len(blob), self._now, self._peer_out
            )
            if rc in (lib.DP_ERR_INVALID_ARGUMENT,) or -0x8000 < rc < -0x1000:
                raise offer_error(rc)
        if rc == lib.DP_ERR_BAD_STATE:
            raise errors.AlreadyInUseError(f"already a peer at {address}:{port}")
        check(rc, "connect")
        peer = HostPeer(self, int(self._peer_out[0]), True)
        self._peers[peer._peer_id] = peer
        return peer

    def _own(self, peer: object, what: str) -> HostPeer:
        """``peer`` itself, if it is one of this host's peers (ended or not)."""
        if not isinstance(peer, HostPeer):
            raise errors.ArgumentTypeError(
                f"{what} must be a HostPeer, not {type(peer).__name__}")
        if peer._host is not self:
            raise errors.ForeignPeerError(
                f"{what} {peer!r} belongs to another DTLSHost (peer ids repeat across hosts)")
        return peer

    def disconnect(self, peer: HostPeer) -> None:
        """End ``peer`` now (close_notify if connected); its DISCONNECT event
        (reason LOCAL) comes from the next ``service()``. Idempotent.
        ForeignPeerError for another host's peer."""
        peer = self._own(peer, "peer")
        if peer._ended:
            return
        peer._closed_locally = True
        rc = lib.dp_host_disconnect(self._require(), peer._peer_id, self._now)
        if rc != lib.DP_ERR_CLOSED:
            check(rc, "disconnect")

    def broadcast(self, data: BytesLike, exclude: Exclude = None) -> int:
        """Queue ``data`` as one record to every connected peer except
        ``exclude`` (a peer or an iterable of peers). Returns how many peers
        it was queued for. InvalidArgumentError (nothing queued) if it is
        larger than some peer's maximum packet size; ForeignPeerError if
        ``exclude`` holds another host's peer (nothing queued)."""
        payload = to_bytes(data, "data")
        ptr = self._require()
        cap = self._settings.max_packet_size
        if cap and len(payload) > cap:
            raise errors.InvalidArgumentError(
                f"packet of {len(payload)} bytes exceeds settings.max_packet_size={cap}"
            )
        if exclude is None:
            ids: list[int] = []
        elif isinstance(exclude, HostPeer):
            ids = [self._own(exclude, "exclude")._peer_id]
        else:
            ids = [self._own(peer, "exclude")._peer_id for peer in exclude]
        if not payload:
            return 0
        id_array = ffi.new("uint64_t[]", ids) if ids else ffi.NULL
        return check(
            lib.dp_host_broadcast(ptr, payload, len(payload), id_array, len(ids), self._now),
            "broadcast",
        )

    def send_many(self, peers: Sequence[HostPeer], payloads: Sequence[BytesLike]) -> int:
        """Queue ``payloads[i]`` as one record to ``peers[i]``, for every i,
        in one native call: a tick's per-player snapshots without a Python
        and a native call per player (ours; Godot has no batch send). They
        leave at the next ``service()`` or ``flush()``, like ``put_packet``'s.

        Checked before anything is queued (nothing is queued if one check
        fails): StateError for a peer still handshaking, one you
        disconnected (``disconnect_from_peer``) or a closed host;
        InvalidArgumentError for a payload above that peer's
        :meth:`HostPeer.get_max_packet_size` or ``settings.max_packet_size``,
        or sequences of different lengths; ForeignPeerError for another
        host's peer; ArgumentTypeError for a non-peer or a payload that is
        not bytes-like (bytes, bytearray, a byte memoryview). Peers the
        remote side ended are skipped silently and counted in
        ``get_stats()["send_to_ended"]``, as ``put_packet`` does. Empty
        payloads send nothing. Returns the number of records queued."""
        ptr = self._require()
        count = len(peers)
        if len(payloads) != count:
            raise errors.InvalidArgumentError(
                f"send_many: {count} peers but {len(payloads)} payloads")
        if not count:
            return 0
        try:
            ids = array("Q", [p._peer_id for p in peers if p._host is self
                              and not p._closed_locally])
        except AttributeError:
            ids = array("Q")
        if len(ids) != count:
            self._send_many_peer_error(peers)
        try:
            data = b"".join(payloads)
        except TypeError as exc:
            raise errors.ArgumentTypeError(
                f"send_many: payloads must be bytes-like ({exc})") from None
        lengths = array("I", map(len, payloads))
        cap = self._settings.max_packet_size
        if cap and max(lengths) > cap:
            raise errors.InvalidArgumentError(
                f"a payload of {max(lengths)} bytes exceeds settings.max_packet_size={cap}")
        failed_at = self._failed_at
        rc = _host_send_many(ptr, _from_buffer("uint64_t[]", ids), data, len(data),
                             _from_buffer("uint32_t[]", lengths), count, self._now, failed_at)
        if rc < 0:
            self._send_many_failed(rc, int(failed_at[0]), peers, lengths)
        return int(rc)

    def _send_many_peer_error(self, peers: Sequence[HostPeer]) -> None:
        """Raise for the first item of ``peers`` that is no sendable peer of ours."""
        for i, peer in enumerate(peers):
            own = self._own(peer, f"peers[{i}]")
            if own._closed_locally:
                raise errors.StateError(f"cannot send to peers[{i}]: disconnected locally")
        raise AssertionError("unreachable: every peer was valid")  # pragma: no cover

    def _send_many_failed(self, rc: int, index: int, peers: Sequence[HostPeer],
                          lengths: array[int]) -> None:
        """Turn dp_host_send_many's refusal (nothing was queued) into an exception."""
        if rc == lib.DP_ERR_BAD_STATE:
            raise errors.StateError(
                f"cannot send to peers[{index}]: not connected ({peers[index].get_status().name})")
        if rc == lib.DP_ERR_TOO_LARGE:
            raise errors.InvalidArgumentError(
                f"payloads[{index}] of {lengths[index]} bytes exceeds the peer's maximum "
                f"packet size {peers[index].get_max_packet_size()}")
        if rc == lib.DP_ERR_INVALID_ARGUMENT:
            raise errors.ArgumentTypeError(
                "send_many: payloads must be bytes-like objects of bytes (a memoryview with "
                "wider items has fewer elements than bytes)")
        if rc == lib.DP_ERR_CLOSED:
            raise errors.StateError("the host is closed")
        check(rc, "send_many")

    def flush(self) -> int:
        """Send every queued record now (``sendmmsg`` batches); returns the
        number of datagrams the socket took."""
        return check(lib.dp_host_flush(self._require()), "flush")

    @property
    def peers(self) -> list[HostPeer]:
        """Peers you know: connected ones (CONNECT returned) and the ones
        ``connect`` made, until their DISCONNECT event."""
        return list(self._peers.values())

    def get_local_port(self) -> int:
        """The UDP port the host is bound to."""
        self._require()
        return self._port

    def fileno(self) -> int:
        """The socket's file descriptor, for event loops (``add_reader``:
        when it is readable, call :meth:`service`). Do not read from, write
        to or close it yourself (the host owns it and closes it in
        :meth:`close`)."""
        self._require()
        return self._fd

    def next_timeout(self) -> float | None:
        """Seconds until the earliest peer timer (None if no timer runs)."""
        due = int(lib.dp_host_next_timeout(self._require()))
        now = int(lib.dp_clock_ms(0))
        return None if due < 0 else max(0.0, (due - now) / 1000)

    def get_stats(self) -> dict[str, int]:
        """Host counters: peers (total / connected / handshaking), timers in
        the heap, datagrams in and out, send batches and drops, events by
        type, timers run, gate results, drops by reason (``dropped_over_limit``:
        records above ``settings.max_receive_size``, all peers), and
        carried-over calls. UDP-level counters are in :meth:`get_udp_stats`."""
        out = ffi.new("dp_host_stats *")
        check(lib.dp_host_get_stats(self._require(), out), "get_stats")
        stats = _struct_to_dict("dp_host_stats", out[0])
        stats.pop("reserved", None)
        return stats

    def get_udp_stats(self) -> dict[str, int]:
        """Counters of the host's socket (as ``PacketPeerUDP.get_stats``)."""
        out = ffi.new("dp_udp_stats *")
        check(lib.dp_host_udp_stats(self._require(), out), "get_udp_stats")
        return _struct_to_dict("dp_udp_stats", out[0])

    def close(self) -> None:
        """Send close_notify to every connected peer, free every connection
        and close the socket. No events follow; peers become
        ``STATUS_DISCONNECTED``. Idempotent.

        Safe from any thread, and the way to stop a network thread: a
        ``service()`` running or blocked on another thread (even with
        ``timeout=None``) is woken and returns ``[]``; calls made after
        ``close()`` raise StateError. So a network thread runs
        ``while host.is_open(): host.service(None)`` and another thread
        calls ``host.close()`` then ``join()``. Native memory a call in
        flight uses is freed only after that call returned."""
        ptr = self._ptr
        if ptr is None:
            return
        for peer in list(self._peers.values()):
            peer._finish(lib.DP_STATUS_DISCONNECTED, "the host was closed", 0)
        self._ptr = None  # new calls raise StateError from here on
        self._peers.clear()
        # Wakes a service() blocked on another thread and returns once it
        # left the socket; the descriptor is closed after the close_notify
        # datagrams. The small rest is freed with the last reference to ptr
        # (a call in flight holds one), never under a running call.
        lib.dp_host_close(ptr, self._now)

    def is_open(self) -> bool:
        """False once :meth:`close` ran."""
        return self._ptr is not None

    def __enter__(self) -> DTLSHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._ptr is None:
            return "<DTLSHost closed>"
        return f"<DTLSHost port={self.get_local_port()} peers={len(self._peers)}>"

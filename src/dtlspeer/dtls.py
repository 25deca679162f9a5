"""PacketPeerDTLS and DTLSServer: Godot 4's DTLS classes over the C engine.

The datagram path is C (``src/native/dp_link.c``): one native call per
``poll()`` moves every datagram queued for the peer (its UDP socket, or its
slot of a ``UDPServer``) into the DTLS connection, runs its timers and sends
what it produced. Python only moves payload bytes in and out.

Threads: use each object from one thread at a time. Peers of one UDPServer
share its native endpoint and lock: the server and its peers may run on
different threads, and ``disconnect_from_peer()`` (or the server's
``stop()``) from another thread is safe while a ``poll()`` runs.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Optional

from . import errors
from ._binding import NOW, check, error_text, ffi, lib, to_bytes
from ._engine import (
    _MAX_DATAGRAM,
    RECORDS_PER_POLL,
    Connection,
    CookieGate,
    EngineConfig,
    EngineStatus,
    Verify,
    _buffers,
    _record_scratch,
)
from .packet_peer import BytesLike, PacketPeer
from .session import Session, SessionTicketKeys, session_arg
from .tls_options import _CLIENT_AUTH, PeerCertificate, TLSOptions, read_peer_certificate
from .udp import PacketPeerUDP, _addr_text

__all__ = ["DTLSServer", "DTLSSettings", "PacketPeerDTLS"]

_CLOSED = lib.DP_ERR_CLOSED
_link_send = lib.dp_link_send
_link_poll = lib.dp_link_poll


@dataclass(frozen=True)
class DTLSSettings:
    """Timers and sizes of a DTLS connection (ours; Godot has none of these).

    Defaults are chosen for games on the internet:

    * ``handshake_timeout_min_ms=250`` / ``handshake_timeout_max_ms=8000``:
      a lost flight is resent after 250 ms, doubling up to 8 s (Mbed TLS and
      Godot: 1 s .. 60 s, so a lost packet stalls the join for a second and
      a dead server is noticed after two minutes). Six tries, about 16 s.
    * ``handshake_deadline_ms=30000``: a handshake that has not finished
      after 30 s fails, whatever the peer keeps sending (bounds the memory a
      half-open peer holds on a server). 0 = none.
    * ``idle_timeout_ms=60000``: a connected peer from which no valid record
      arrived for 60 s fails with reason "idle timeout" (Godot: never, so
      dead peers leak). Games send at a tick rate; set 0 to disable, or send
      keep-alives if your protocol can be silent longer.
    * ``mtu=1200``: no datagram we send is larger; handshake flights are
      fragmented to it (Godot: unlimited, large certificates go out as one
      IP-fragmented datagram). 1200 passes IPv6 and common tunnels.
    * ``max_packet_size=0``: the largest ``put_packet`` payload; 0 = what
      one record fits in the MTU (about 1160 bytes with AES-GCM at 1200).
      Larger payloads are refused, never fragmented.
    * ``max_receive_size=1392``: the largest record accepted from the peer;
      bigger ones are dropped in C and counted in ``get_stats()
      ["dropped_over_limit"]`` (the connection goes on). DTLS allows 16 KiB
      records whatever our MTU; 1392 is ENet's default datagram size (what
      Godot's ``ENetMultiplayerPeer`` sends, also over DTLS) and with DTLS
      overhead still fits a 1500-byte Ethernet frame. It is larger than our
      own default ``max_packet_size`` (about 1160): a server that echoes
      what it receives must check ``get_max_packet_size()`` first. 0 = any
      size up to 16384 (Godot's behaviour).
    * ``park_after_ms=None``: an established connection that has seen no
      traffic for this long is serialized into about 1 KB and its ~36 KB of
      Mbed TLS state freed; it wakes transparently on the next datagram or
      write, and the peer sees nothing. ``None`` = the engine default (5 s
      on servers, off on clients); 0 = never park.
    * ``connection_id=None``: RFC 9146 Connection ID. ``None`` = the role's
      default: servers answer a client that asks for one (Godot clients
      never ask: their records stay exactly as before), clients do not ask.
      ``True`` makes clients ask; ``False`` turns it off for servers. With
      a CID the server routes the client's records by CID instead of by
      address, so a client whose NAT rebinds (new port or address) keeps its
      session; its address moves only after an authenticated record newer
      than every earlier one arrives from the new address.
    * ``connection_id_length=None``: length of the CID this side chooses
      (what the peer writes into every record it sends us): ``None`` = 6
      bytes for servers (random; a worker id first with ``DTLSHost(...,
      worker_id=)``), 0 for clients (a zero-length CID: the client sends
      with the server's CID, the server sends plain records). 0..32. Each
      CID record costs its length + 1 byte more than a plain one.
    """

    handshake_timeout_min_ms: int = 250
    handshake_timeout_max_ms: int = 8000
    handshake_deadline_ms: int = 30_000
    idle_timeout_ms: int = 60_000
    mtu: int = 1200
    max_packet_size: int = 0
    park_after_ms: Optional[int] = None
    max_receive_size: int = 1392
    connection_id: Optional[bool] = None
    connection_id_length: Optional[int] = None

    def __post_init__(self) -> None:
        for name in (
            "handshake_timeout_min_ms",
            "handshake_timeout_max_ms",
            "handshake_deadline_ms",
            "idle_timeout_ms",
            "mtu",
            "max_packet_size",
            "max_receive_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise errors.ArgumentTypeError(f"{name} must be an int, not {type(value).__name__}")
            if not 0 <= value < 2**32:
                raise errors.InvalidArgumentError(
                    f"{name} must be in 0 .. {2**32 - 1}, not {value}")
        if not 1 <= self.handshake_timeout_min_ms <= self.handshake_timeout_max_ms:
            raise errors.InvalidArgumentError(
                "need 1 <= handshake_timeout_min_ms <= handshake_timeout_max_ms"
            )
        if self.mtu != 0 and not 256 <= self.mtu <= 16384:
            raise errors.InvalidArgumentError(
                f"mtu must be 0 (no limit) or 256..16384, not {self.mtu}"
            )
        for name in ("max_packet_size", "max_receive_size"):
            if getattr(self, name) > 16384:
                raise errors.InvalidArgumentError(f"{name} must be at most 16384 (one record)")
        self._check_connection_id()
        if self.park_after_ms is not None:
            if isinstance(self.park_after_ms, bool) or not isinstance(self.park_after_ms, int):
                raise errors.ArgumentTypeError(
                    f"park_after_ms must be an int or None, not {type(self.park_after_ms).__name__}"
                )
            if not 0 <= self.park_after_ms < 2**32:
                raise errors.InvalidArgumentError(
                    f"park_after_ms must be in 0 .. {2**32 - 1}, not {self.park_after_ms}"
                )

    def _check_connection_id(self) -> None:
        if self.connection_id is not None and not isinstance(self.connection_id, bool):
            raise errors.ArgumentTypeError(
                f"connection_id must be a bool or None, not {type(self.connection_id).__name__}"
            )
        length = self.connection_id_length
        if length is not None:
            if isinstance(length, bool) or not isinstance(length, int):
                raise errors.ArgumentTypeError(
                    f"connection_id_length must be an int or None, not {type(length).__name__}"
                )
            if not 0 <= length <= lib.DP_CID_MAX:
                raise errors.InvalidArgumentError(
                    f"connection_id_length must be in 0 .. {lib.DP_CID_MAX}, not {length}"
                )

    def _engine_options(self) -> dict[str, Any]:
        return {
            "connection_id": self.connection_id,
            "connection_id_length": self.connection_id_length,
            "handshake_timeout_ms": (self.handshake_timeout_min_ms, self.handshake_timeout_max_ms),
            "handshake_deadline_ms": self.handshake_deadline_ms,
            "idle_timeout_ms": self.idle_timeout_ms,
            "mtu": self.mtu,
            "max_record_in": self.max_receive_size,
            "park_after_ms": self.park_after_ms,
        }


_DEFAULT_SETTINGS = DTLSSettings()


def _check_settings(settings: Optional[DTLSSettings]) -> DTLSSettings:
    if settings is None:
        return _DEFAULT_SETTINGS
    if not isinstance(settings, DTLSSettings):
        raise errors.ArgumentTypeError(
            f"settings must be DTLSSettings, not {type(settings).__name__}"
        )
    return settings


def _ticket_keys_arg(value: Any, current: Optional[SessionTicketKeys] = None
                     ) -> Optional[SessionTicketKeys]:
    """A server's ``ticket_keys=`` argument: keys to share, ``None`` for keys of
    its own (``current`` if it has some already), ``False`` for no tickets."""
    if value is None:
        return current if current is not None else SessionTicketKeys()
    if value is False:
        return None
    if not isinstance(value, SessionTicketKeys):
        raise errors.ArgumentTypeError(
            f"ticket_keys must be SessionTicketKeys, None or False, not {type(value).__name__}")
    return value


def _build_server_config(
    options: Optional[TLSOptions],
    gate: CookieGate,
    tickets: Optional[SessionTicketKeys],
    **engine_options: Any,
) -> EngineConfig:
    """The engine configuration of a server: its certificate and key, client
    certificate policy, ticket keys, plus ``engine_options`` (timers, PSKs,
    suites). Shared by DTLSServer, DTLSHost and ENet's DTLS mode."""
    key = cert = client_ca = None
    client_auth = lib.DP_CLIENT_AUTH_NONE
    if options is not None:
        key, cert = options.get_private_key(), options.get_own_certificate()
        client_ca = options.get_client_ca()
        client_auth = _CLIENT_AUTH[options.get_client_auth()]
    with contextlib.ExitStack() as locks:
        for obj in (key, cert, client_ca):
            if obj is not None:
                locks.enter_context(obj._mutex)
        return EngineConfig.server(
            gate=gate, key=key, certificate=cert, client_ca=client_ca, client_auth=client_auth,
            ticket_keys=None if tickets is None else tickets._ptr, **engine_options
        )


def _conn_peer_certificate(conn: Connection) -> Optional[PeerCertificate]:
    ptr = conn._conn
    return read_peer_certificate(
        lambda subject, subject_cap, san, san_cap, fingerprint: lib.dp_conn_peer_certificate(
            ptr, subject, subject_cap, san, san_cap, fingerprint))


# Client configurations are immutable: share one per (options, settings).
_client_configs: weakref.WeakKeyDictionary[TLSOptions, dict[DTLSSettings, EngineConfig]] = (
    weakref.WeakKeyDictionary()
)


def _build_client_config(options: TLSOptions, **engine_options: Any) -> EngineConfig:
    """The engine configuration for client ``options``: verify mode, trust
    anchors and name policy, plus ``engine_options`` (timers, PSK, suites).
    Shared by PacketPeerDTLS and DTLSHost so both verify the same way."""
    if options.is_unsafe_client():
        verify = Verify.NONE if options.get_trusted_ca_chain() is None else Verify.CHAIN_ONLY
    else:
        verify = Verify.FULL
    chain = options._effective_ca_chain() if verify != Verify.NONE else None
    name = options.get_common_name_override()
    key, cert = options.get_private_key(), options.get_own_certificate()
    with contextlib.ExitStack() as locks:
        for obj in (chain, key, cert):
            if obj is not None:
                locks.enter_context(obj._mutex)
        return EngineConfig.client(
            verify=verify, trusted_chain=chain, common_name_override=name,
            key=key, certificate=cert, **engine_options
        )


def _client_config(options: TLSOptions, settings: DTLSSettings) -> EngineConfig:
    per_options = _client_configs.setdefault(options, {})
    config = per_options.get(settings)
    if config is None:
        config = _build_client_config(options, **settings._engine_options())
        per_options[settings] = config
    return config


def _fresh_link_stats() -> dict[str, int]:
    """The counters a Godot-style peer keeps beside its connection's."""
    return {"send_dropped": 0, "hvr_sent": 0, "gate_dropped": 0, "address_changes": 0}


class _Status(enum.IntEnum):
    """``PacketPeerDTLS.Status`` (Godot values)."""

    STATUS_DISCONNECTED = 0
    STATUS_HANDSHAKING = 1
    STATUS_CONNECTED = 2
    STATUS_ERROR = 3
    STATUS_ERROR_HOSTNAME_MISMATCH = 4


_CONNECTED = _Status.STATUS_CONNECTED
_RECORD_OVERHEAD = lib.DP_APP_RECORD_OVERHEAD  # per held record, as in the C receive queue
_NO_SIZE_CAP = 1 << 30  # settings.max_packet_size = 0: the record limit (native check) applies
_ENDED = (_Status.STATUS_DISCONNECTED, _Status.STATUS_ERROR, _Status.STATUS_ERROR_HOSTNAME_MISMATCH)


def _check_udp_free(udp: PacketPeerUDP) -> None:
    """AlreadyInUseError if another PacketPeerDTLS's session (handshaking or
    connected) runs over ``udp``: two sessions would split its datagrams
    (Godot lets that happen)."""
    ref = udp._dtls_user
    user = None if ref is None else ref()
    if user is not None and user._conn is not None:
        raise errors.AlreadyInUseError(
            "a DTLS session already runs over this UDP peer: disconnect_from_peer first"
        )


class PacketPeerDTLS(PacketPeer):
    """A DTLS 1.2 association over a UDP peer (Godot ``PacketPeerDTLS``).

    Client: ``connect_to_peer(udp, hostname)``, then ``poll()`` every frame
    until ``get_status()`` is ``STATUS_CONNECTED``. Server peers come from
    :meth:`DTLSServer.take_connection`; their datagrams are read by the
    ``UDPServer``'s ``poll()``, so call that first each frame (as in Godot).

    Differences from Godot, all deliberate:

    * Every record received is delivered: ``poll()`` decrypts all queued
      datagrams and ``get_available_packet_count()`` is the real count
      (Godot: one record per ``poll()``). ``get_packet()`` on an empty queue
      raises :class:`~dtlspeer.errors.WouldBlockError` (Godot: empty packet).
    * A real hostname mismatch is ``STATUS_ERROR_HOSTNAME_MISMATCH``; other
      failures ``STATUS_ERROR``. :meth:`get_last_error` says why in words
      (verification flags, Mbed TLS error, peer alert, timeout, ICMP).
    * ``put_packet`` payloads above :meth:`get_max_packet_size` (the real
      limit for the MTU) raise InvalidArgumentError and are never fragmented;
      ``put_packet`` when not connected raises StateError (Godot:
      ``ERR_UNCONFIGURED``). Datagrams the OS send buffer refuses are lost
      like any UDP datagram (counted in ``get_stats()["send_dropped"]``).
    * After an error or a close nothing stale remains: the TLS state is
      freed at once and a server peer's UDP slot is released, so the
      client's next ClientHello is a new connection. Records that arrived
      before a peer's close_notify stay readable.
    * An ICMP error (port unreachable...) on a client that is still
      handshaking becomes ``STATUS_ERROR`` with reason "destination
      unreachable" (Godot: the same status through a socket error, with no
      reason). Once connected, ICMP errors are only counted
      (``get_stats()["icmp_ignored"]``) and mentioned in
      :meth:`get_last_error`: anyone on the path can forge them, so the idle
      timeout decides that the server is gone (Godot: ``STATUS_ERROR``).
    * Timers and sizes are configurable (:class:`DTLSSettings`), including
      idle and handshake timeouts (Godot: none).
    * Client port reuse (RFC 6347 4.2.8: a client starting a new session
      from the same address and port): its ClientHello never reaches the
      live session, wherever it sits in a datagram. A cookieless one gets a
      HelloVerifyRequest; one with a valid cookie becomes a NEW pending
      connection of the ``UDPServer`` (taken and polled as usual) while the
      old peer stays ``STATUS_CONNECTED``. Only when the new handshake's
      Finished is verified does the old peer end, ``STATUS_DISCONNECTED``
      on its next ``poll()`` (reason says so); application state never
      carries over. A forged hello that never completes leaves the old
      session working.
    * Ours, not in Godot: session resumption (``connect_to_peer(...,
      session=)``, :meth:`get_session`, :meth:`is_session_resumed`) and, on
      server peers of ``TLSOptions.server(client_auth=...)``, the client's
      verified certificate (:meth:`get_peer_certificate`).
    """

    Status = _Status
    STATUS_DISCONNECTED = _Status.STATUS_DISCONNECTED
    STATUS_HANDSHAKING = _Status.STATUS_HANDSHAKING
    STATUS_CONNECTED = _Status.STATUS_CONNECTED
    STATUS_ERROR = _Status.STATUS_ERROR
    STATUS_ERROR_HOSTNAME_MISMATCH = _Status.STATUS_ERROR_HOSTNAME_MISMATCH

    def __init__(self) -> None:
        """A disconnected peer (use ``connect_to_peer`` or ``DTLSServer.take_connection``)."""
        self._udp: Optional[PacketPeerUDP] = None
        self._conn: Optional[Connection] = None
        self._gate: Optional[CookieGate] = None
        self._settings = _DEFAULT_SETTINGS
        self._size_cap = _NO_SIZE_CAP
        self._status = _Status.STATUS_DISCONNECTED
        self._reason = "not connected"
        self._error_code = 0
        self._verify_flags = 0
        self._ciphersuite = ""
        self._connection_id: Optional[tuple[bytes, bytes]] = None
        self._records: collections.deque[bytes] = collections.deque()
        self._conn_stats: dict[str, int] = {}
        self._link_stats = _fresh_link_stats()
        self._result = ffi.new("dp_link_result *")
        # The per-frame calls' fixed arguments (set by _start): the endpoint
        # object they point into is kept beside them, and a call runs only
        # while the UDP peer still uses that very endpoint, open.
        # (link struct, Connection, endpoint) while a session runs, read in
        # ONE attribute load: a disconnect_from_peer() on another thread
        # cannot leave a call holding half of it, and the call's locals keep
        # everything the struct points at alive.
        self._bound: Optional[tuple[Any, Connection, Any]] = None
        # Unread records in _records count against the connection's receive
        # queue limit (64 KiB; payload + the C queue's per-record overhead),
        # so what poll() moved out stays bounded: poll() tells C how much
        # is held (link.held_bytes) when that changed.
        self._held_told = 0
        self._packet_error: Optional[errors.DTLSPeerError] = None
        # Kept from the connection when it ends (its TLS state is freed then).
        self._session: Optional[bytes] = None
        self._resumed = False
        self._peer_cert: Optional[PeerCertificate] = None
        # Ending (disconnect_from_peer on one thread, a poll() noticing the
        # end on another) frees the connection's Mbed TLS context; readers of
        # that context outside the endpoint lock take this too. Never taken
        # on the per-packet paths.
        self._ending = threading.RLock()
        # One clock per connection (its timers never run backwards): the
        # monotonic one, read by the native calls themselves.
        self._now = NOW

    # -- internals -----------------------------------------------------------

    def _route(self) -> Optional[tuple[Any, int]]:
        """(endpoint pointer, slot handle) of the UDP peer, None if it is gone."""
        udp = self._udp
        ep = None if udp is None else udp._ep
        if udp is None or ep is None or ep.closed:
            return None
        return ep.ptr, udp._handle

    def _start(
        self,
        udp: PacketPeerUDP,
        conn: Connection,
        settings: DTLSSettings,
        gate: Optional[CookieGate],
    ) -> None:
        self._records = collections.deque()
        self._held_told = 0  # a new link struct says 0
        self._udp, self._conn, self._gate, self._settings = udp, conn, gate, settings
        udp._dtls_user = weakref.ref(self)
        ep = udp._ep
        assert ep is not None and not ep.closed  # both callers checked it
        link = ffi.new("dp_link_peer *")
        link.ep, link.handle, link.conn = ep.ptr, udp._handle, conn._ptr
        link.gate = ffi.NULL if gate is None else gate.handle
        link.now_ms, link.res = self._now, self._result
        link.seen_status = _Status.STATUS_HANDSHAKING
        self._bound = (link, conn, ep)
        self._size_cap = settings.max_packet_size or _NO_SIZE_CAP
        self._status = _Status.STATUS_HANDSHAKING
        self._reason, self._error_code, self._verify_flags, self._ciphersuite = (
            "handshaking",
            0,
            0,
            "",
        )
        self._conn_stats = {}
        self._connection_id = None
        self._link_stats = _fresh_link_stats()
        self._session, self._resumed, self._peer_cert = None, False, None

    def _address_moved(self) -> None:
        """A record with this server peer's Connection ID, authenticated and
        newer than all before, came from a new address (RFC 9146): the
        endpoint routes the peer there now; follow it."""
        self._link_stats["address_changes"] += 1
        udp, route = self._udp, self._route()
        if udp is not None and udp._dest is not None and route is not None:
            check(lib.dp_endpoint_slot_addr(route[0], route[1], udp._dest), "peer address")

    def get_connection_id(self) -> Optional[tuple[bytes, bytes]]:
        """(our CID, the peer's CID) when RFC 9146 Connection ID was
        negotiated, else None (always None with Godot peers, which never
        ask for one). Ours. Our CID is what the peer writes into every
        record it sends us (empty for a client with a zero-length CID). Kept
        after the connection ended."""
        return self._conn.connection_id if self._conn is not None else self._connection_id

    def _absorb(self, res: Any) -> None:
        """Apply the outcome of one link call: counters, restarts, end. ICMP
        errors are the connection's business (dp_conn_note_unreachable): a
        client fails on one while handshaking, afterwards only counts it."""
        self._link_stats["send_dropped"] += res.send_dropped
        self._link_stats["hvr_sent"] += res.hvr_sent
        self._link_stats["gate_dropped"] += res.gate_dropped
        if res.address_changed:
            self._address_moved()
        if res.restarted:
            self._end(
                _Status.STATUS_DISCONNECTED,
                "the client completed a new session from the same address and port "
                "(a new connection of the UDPServer)",
            )
            return
        status = _Status(res.status)
        if status in _ENDED:
            self._end(status)
        else:
            self._status = status

    def _end_bound(self, bound: tuple[Any, Connection, Any], status: _Status, reason: str,
                   code: int = 0) -> None:
        """_end, unless another thread ended this session since ``bound``
        was read (its outcome stands)."""
        with self._ending:
            if self._bound is bound:
                self._end_locked(status, reason, code, None)

    def _end(
        self,
        status: _Status,
        reason: Optional[str] = None,
        code: int = 0,
        keep_records: Optional[bool] = None,
    ) -> None:
        """Free the TLS state and the server slot, keeping only the outcome."""
        with self._ending:
            self._end_locked(status, reason, code, keep_records)

    def _end_locked(
        self,
        status: _Status,
        reason: Optional[str],
        code: int,
        keep_records: Optional[bool],
    ) -> None:
        conn = self._conn
        if keep_records is None:
            keep_records = status == _Status.STATUS_DISCONNECTED and reason is None
        if conn is not None:
            self._reason = conn.reason
            self._error_code = conn.last_error
            self._verify_flags = conn.verify_flags
            self._ciphersuite = conn.ciphersuite
            self._connection_id = conn.connection_id
            self._conn_stats = conn.stats()
            self._session = conn.get_session()
            self._resumed = conn.resumed()
            self._peer_cert = _conn_peer_certificate(conn)
            if keep_records:
                self._records.extend(conn.read_all())
            else:
                # poll() moved them here; an error drops them. A new deque,
                # not clear(): a poll() racing on another thread appends to
                # the one it took before its native call, now unreachable.
                self._records = collections.deque()
            # Its TLS state was freed when it ended; the small rest goes with
            # the last reference (not released here: a poll() on another
            # thread may still hold it).
        if reason is not None:
            self._reason = reason
            self._error_code = code
        self._conn = None
        self._bound = None
        self._status = status
        udp = self._udp
        self._udp = None
        self._gate = None
        if udp is not None and udp._dtls_user is not None and udp._dtls_user() is self:
            udp._dtls_user = None
        if udp is not None and udp._server_owned:
            udp.close()  # free the slot: this address is unknown again

    # -- Godot API -------------------------------------------------------------

    def connect_to_peer(
        self,
        packet_peer: PacketPeerUDP,
        hostname: str,
        client_options: Optional[TLSOptions] = None,
        *,
        settings: Optional[DTLSSettings] = None,
        session: Optional[Session | bytes] = None,
    ) -> None:
        """Start a client handshake over ``packet_peer`` (Godot ``connect_to_peer``).

        The UDP peer must be connected (``connect_to_host``), else
        InvalidArgumentError (Godot ``ERR_INVALID_PARAMETER``). ``None``
        options mean ``TLSOptions.client()`` (system CA store, name checked
        against ``hostname``). Differences: a verifying client with neither a
        ``hostname`` nor a ``common_name_override`` raises InvalidArgumentError
        (Godot fails later with a name mismatch); calling it while
        handshaking or connected raises AlreadyInUseError, and so does a
        ``packet_peer`` another PacketPeerDTLS's session runs over (Godot
        lets two sessions split its datagrams); ``settings`` is ours. The
        ClientHello is sent before it returns.

        ``session`` (ours): a :class:`~dtlspeer.session.Session` from an
        earlier connection's :meth:`get_session` to resume (RFC 5077); the
        server may decline it (unknown, expired or foreign ticket), and a
        full handshake runs instead. :meth:`is_session_resumed` tells which.
        InvalidArgumentError for data that is not a saved session or that
        this build cannot load.
        """
        blob = session_arg(session)
        if not isinstance(packet_peer, PacketPeerUDP):
            raise errors.ArgumentTypeError(
                f"packet_peer must be a PacketPeerUDP, not {type(packet_peer).__name__}"
            )
        if not isinstance(hostname, str):
            raise errors.ArgumentTypeError(f"hostname must be str, not {type(hostname).__name__}")
        if client_options is None:
            client_options = TLSOptions.client()
        if not isinstance(client_options, TLSOptions):
            raise errors.ArgumentTypeError(
                f"client_options must be TLSOptions or None, not {type(client_options).__name__}"
            )
        if client_options.is_server():
            raise errors.InvalidArgumentError(
                "client_options are server options (use TLSOptions.client)"
            )
        settings = _check_settings(settings)
        if self._conn is not None:
            raise errors.AlreadyInUseError(
                "already handshaking or connected: disconnect_from_peer first"
            )
        _check_udp_free(packet_peer)
        if not packet_peer.is_socket_connected():
            raise errors.InvalidArgumentError(
                "the UDP peer must be connected first (PacketPeerUDP.connect_to_host)"
            )
        if (
            not client_options.is_unsafe_client()
            and not hostname
            and not client_options.get_common_name_override()
        ):
            raise errors.InvalidArgumentError(
                "hostname is empty: a verifying client needs the server's name "
                "(or TLSOptions.client(common_name_override=...))"
            )
        if "\0" in hostname:
            raise errors.InvalidArgumentError("hostname contains a NUL character")
        config = _client_config(client_options, settings)
        # client_unsafe never checks the name (Godot clears it: no SNI either).
        name = None if client_options.is_unsafe_client() or not hostname else hostname
        conn = Connection(config, NOW, hostname=name)
        if blob is not None:
            try:
                conn.set_session(blob)
            except BaseException:
                conn.close()
                raise
        self._start(packet_peer, conn, settings, None)
        conn.update(NOW)  # queues the ClientHello
        route = self._route()
        assert route is not None  # is_socket_connected() held above
        check(lib.dp_link_flush(route[0], route[1], conn._ptr, self._result), "connect_to_peer")
        self._absorb(self._result)

    def poll(self) -> None:
        """Drive the connection (Godot ``poll``): feed every datagram queued
        for this peer, run retransmission/idle timers, send the replies, and
        take every record received. One native call (the records come out of
        it back to back, so ``get_available_packet_count`` and ``get_packet``
        are plain Python). Client peers read their socket here; server peers
        are fed by ``UDPServer.poll()``. Never raises for what the remote
        side does: watch ``get_status()``."""
        # This order matters for a disconnect_from_peer() on another thread
        # (it drops _bound, then replaces _records): records taken by a call
        # that raced it land in a deque nobody reads any more.
        records = self._records
        bound = self._bound
        if bound is None:
            return
        link, conn, ep = bound
        udp = self._udp
        if ep.closed or udp is None or udp._ep is not ep:
            self._end_bound(bound, _Status.STATUS_ERROR,
                            "the UDP peer was closed (or its UDPServer stopped)")
            return
        try:
            buf, view, lens = _buffers.records
        except AttributeError:
            buf, view, lens = _record_scratch()
        # Usually nothing is left unread here: no sum, no struct write.
        held = sum(map(len, records)) + len(records) * _RECORD_OVERHEAD if records else 0
        if held != self._held_told:
            link.held_bytes = self._held_told = held
        rc = _link_poll(link, buf, _MAX_DATAGRAM, lens, RECORDS_PER_POLL)
        if rc > 0:
            if rc == 1:
                records.append(view[: lens[0]])
            else:
                start = 0
                for i in range(rc):
                    end = start + lens[i]
                    records.append(view[start:end])
                    start = end
        res = self._result
        if rc >= 0 and not res.notable:
            return  # the usual poll: same status, nothing for _absorb to record
        if res.records_left:
            records.extend(conn.read_all())  # a burst above one call's share
        if rc < 0:
            reason = (
                "the UDP peer was closed (or its UDPServer stopped)"
                if rc == _CLOSED
                else f"socket error: {error_text(rc)}"
            )
            self._end_bound(bound, _Status.STATUS_ERROR, reason, rc)
            return
        self._absorb_bound(bound)

    def get_status(self) -> _Status:
        """The connection status (Godot ``get_status``), as of the last call."""
        return self._status

    def get_session(self) -> Optional[Session]:
        """Client (ours): the session to resume later with
        ``connect_to_peer(..., session=...)``, once connected and after the
        connection ended; None before (or on server peers). It holds the
        session's master secret: store it like a key."""
        conn = self._conn
        blob = conn.get_session() if conn is not None else self._session
        return None if blob is None else Session(blob)

    def is_session_resumed(self) -> bool:
        """True if the handshake resumed a session (abbreviated, no certificate
        or key exchange); ours. Both sides report it."""
        conn = self._conn
        return conn.resumed() if conn is not None else self._resumed

    def get_peer_certificate(self) -> Optional[PeerCertificate]:
        """Server peers with ``TLSOptions.server(client_auth=...)`` (ours): the
        client's verified certificate once connected, else None."""
        conn = self._conn
        return _conn_peer_certificate(conn) if conn is not None else self._peer_cert

    def disconnect_from_peer(self) -> None:
        """Send close_notify if connected, free the TLS state, become
        ``STATUS_DISCONNECTED`` (Godot: same). Unread records are dropped.
        A server peer's UDP slot is released. Idempotent. Safe from another
        thread while this peer's ``poll()`` runs (the way to end it)."""
        with self._ending:
            self._disconnect_locked()

    def _disconnect_locked(self) -> None:
        conn = self._conn
        if conn is not None:
            route = self._route()
            if route is not None:
                # Under the endpoint's lock: a poll() on another thread may be
                # pumping this connection right now.
                lib.dp_link_close(route[0], route[1], conn._ptr, self._now, self._result)
                self._link_stats["send_dropped"] += self._result.send_dropped
            else:
                conn.disconnect(self._now)
            self._end(_Status.STATUS_DISCONNECTED, "closed locally", keep_records=False)
        self._records = collections.deque()  # see _end_locked
        self._status = _Status.STATUS_DISCONNECTED

    def get_available_packet_count(self) -> int:
        """Records ready to read: every one received so far (Godot: 0 or 1)."""
        return len(self._records)

    def get_packet(self) -> bytes:
        """The oldest received record. WouldBlockError if none is ready;
        StateError if not connected and none is left (Godot:
        ``ERR_UNCONFIGURED``)."""
        records = self._records
        if records:
            self._packet_error = None
            return records.popleft()
        if self._conn is not None:
            exc: errors.DTLSPeerError = errors.WouldBlockError("no packet available (call poll())")
            # Godot: OK with an empty packet (PacketPeerUDP's code for it)
            exc.godot_error = errors.GodotError.ERR_UNAVAILABLE
        else:
            exc = errors.StateError(f"not connected ({self._status.name})")
        self._packet_error = exc
        raise exc

    def put_packet(self, data: BytesLike) -> None:
        """Send ``data`` as one DTLS record in one datagram (Godot
        ``put_packet``). Empty data sends nothing. StateError unless
        connected; InvalidArgumentError above :meth:`get_max_packet_size`."""
        # The per-packet path, one native call: bytes, connected, live socket;
        # the native side checks the size and reports anything unusual.
        if type(data) is not bytes:
            data = to_bytes(data, "data")
        bound = self._bound  # one load, as in poll(): the locals keep the C side alive
        if self._status is _CONNECTED and bound is not None and len(data) <= self._size_cap:
            link, _conn, ep = bound
            udp = self._udp
            if not ep.closed and udp is not None and udp._ep is ep:
                rc = _link_send(link, data, len(data))
                if rc == 0:
                    return  # sent, still connected
                self._after_write(rc, len(data), bound)
                return
        if bound is None or self._status != _Status.STATUS_CONNECTED:
            raise errors.StateError(f"cannot put_packet: not connected ({self._status.name})")
        if len(data) > self.get_max_packet_size():
            raise self._too_large(len(data))
        # Only a closed socket is left: the fast path above takes every live one.
        self._end_bound(bound, _Status.STATUS_ERROR,
                        "the UDP peer was closed (or its UDPServer stopped)")
        raise errors.StateError("cannot put_packet: the UDP peer was closed")

    def _too_large(self, size: int) -> errors.InvalidArgumentError:
        return errors.InvalidArgumentError(
            f"packet of {size} bytes exceeds the maximum of {self.get_max_packet_size()} "
            "(one record per packet; DTLS records are never fragmented)"
        )

    def _after_write(self, rc: int, size: int, bound: tuple[Any, Connection, Any]) -> None:
        """Outcome of a ``dp_link_send`` that was not the plain case."""
        if rc == lib.DP_ERR_TOO_LARGE:
            raise self._too_large(size)
        if rc in (lib.DP_ERR_INVALID_ARGUMENT, lib.DP_ERR_BAD_STATE):
            check(rc, "put_packet")
        self._absorb_bound(bound)  # a TLS failure shows in the status

    def _absorb_bound(self, bound: tuple[Any, Connection, Any]) -> None:
        """_absorb the result of a per-frame call, then tell C which status
        the binding now shows: until then every call reports the change
        again (an exception in _absorb loses nothing). A session another
        thread ended meanwhile is left as that thread left it."""
        with self._ending:
            if self._bound is not bound:
                return
            self._absorb(self._result)
            if self._bound is bound:
                bound[0].seen_status = self._status

    # -- ours -------------------------------------------------------------------

    def get_max_packet_size(self) -> int:
        """Largest ``put_packet`` payload right now: what one record can carry
        within the MTU, capped by ``settings.max_packet_size``; 0 unless
        connected (Godot: always 488, not enforced)."""
        with self._ending:  # reads the Mbed TLS context, which ending frees
            conn = self._conn
            if conn is None or self._status != _Status.STATUS_CONNECTED:
                return 0
            limit = conn.max_payload
        cap = self._settings.max_packet_size
        return min(limit, cap) if cap else limit

    def get_last_error(self) -> str:
        """Why the status last changed, in words: certificate verification
        failures list their reasons, TLS errors carry the Mbed TLS code and
        text, received alerts their name, plus timeouts, ICMP unreachable and
        closes (Godot only prints errors; godot-proposals#3590)."""
        if self._conn is not None:
            return self._conn.reason
        if self._error_code and "-0x" not in self._reason:
            return (
                f"{self._reason} ({error_text(self._error_code)}, code -0x{-self._error_code:04X})"
            )
        return self._reason

    def get_error_code(self) -> int:
        """Mbed TLS / dtlspeer code behind an error status (0 if none). Ours."""
        return self._conn.last_error if self._conn is not None else self._error_code

    def get_verify_flags(self) -> int:
        """Mbed TLS X.509 verification flags (``MBEDTLS_X509_BADCERT_*``) of
        the peer's certificate. Ours."""
        return self._conn.verify_flags if self._conn is not None else self._verify_flags

    def get_ciphersuite(self) -> str:
        """The negotiated ciphersuite ("" before the handshake). Ours."""
        return self._conn.ciphersuite if self._conn is not None else self._ciphersuite

    def get_stats(self) -> dict[str, int]:
        """Counters (ours): datagrams and records in/out, drops by reason,
        bad MACs, retransmission timer runs, parks, ICMP errors ignored after
        the handshake (``icmp_ignored``), datagrams the socket refused
        (``send_dropped``), HelloVerifyRequests sent for this peer's address."""
        stats = dict(self._conn.stats() if self._conn is not None else self._conn_stats)
        stats.update(self._link_stats)
        return stats

    def get_peer_address(self) -> tuple[str, int]:
        """(IP, port) of the remote side; ("", 0) once disconnected. Ours."""
        udp = self._udp
        if udp is None:
            return "", 0
        if udp._dest is not None:  # server peers, and set_dest_address
            return _addr_text(udp._dest), int(udp._dest.port)
        ep = udp._ep
        try:
            ip, port = ep.sock.getpeername()[:2] if ep is not None else ("", 0)
        except OSError:
            return "", 0
        return (ip[7:] if ip.startswith("::ffff:") else ip), int(port)

    def __repr__(self) -> str:
        ip, port = self.get_peer_address()
        return f"<PacketPeerDTLS {self._status.name} {ip}:{port}>"


# Handshakes a DTLSServer keeps in progress (DTLSServer.setup).
_MAX_HANDSHAKING = 1024
_MAX_HANDSHAKING_PER_ADDRESS = 16


class DTLSServer:
    """Accepts DTLS clients arriving on a ``UDPServer`` (Godot ``DTLSServer``).

    Typical loop, exactly as in Godot::

        udp_server.poll()
        while udp_server.is_connection_available():
            peer = dtls_server.take_connection(udp_server.take_connection())
            if peer.get_status() == PacketPeerDTLS.STATUS_HANDSHAKING:
                peers.append(peer)   # the others are the cookie exchange
        for peer in peers:
            peer.poll()

    Cookies (differs from Godot): the first ``take_connection`` installs
    this server's cookie gate on the ``UDPServer``'s socket, in C. From then
    on a datagram from an unknown sender is judged before any pending
    connection exists: a cookieless ClientHello gets a HelloVerifyRequest at
    ``UDPServer.poll()``, garbage is dropped (``UDPServer.get_stats()``:
    ``hvr_sent``, ``gate_dropped``), and only a ClientHello with a valid
    cookie becomes a pending connection, at most 4 per client IP address;
    when the pending list is full, the oldest verified one makes room. So
    ``take_connection`` returns ``STATUS_HANDSHAKING`` for every connection
    after the first, and a spoofed flood takes no pending slot (Godot: every
    datagram takes one of 16 and new clients are locked out). Only before
    the first ``take_connection`` does Godot's behaviour remain: the
    cookieless hello is a pending connection that ``take_connection``
    answers with a HelloVerifyRequest and returns in ``STATUS_ERROR`` ("50%
    of the connections are invalid due to cookie exchange").

    Half-open handshakes (ours): a client that echoed a cookie and went
    silent holds ~40 KiB until the handshake deadline. ``take_connection``
    keeps at most ``max_handshaking_per_address`` (16) handshakes in
    progress per client IP address and ``max_handshaking`` (1024) in total
    (``setup`` arguments); beyond them it returns a peer in STATUS_ERROR
    without creating TLS state, except that a full table first ends the
    oldest handshake whose client never sent its key exchange (that peer
    turns STATUS_ERROR, "evicted"). Connected peers are never touched.

    Differences from Godot: a second ``setup()`` replaces the configuration
    for new connections (Godot fails with ``ERR_ALREADY_IN_USE``); cookies
    stay valid across it unless a new ``cookie_secret`` is given. Several
    processes given the same ``cookie_secret`` accept each other's cookies.
    Session tickets (RFC 5077) are issued by default (``setup(...,
    ticket_keys=)`` shares or disables them; Godot has no resumption).
    ``get_stats()`` exposes the gate's counters. Misuse raises.
    """

    def __init__(self) -> None:
        """A server that is not set up."""
        self._config: Optional[EngineConfig] = None
        self._gate: Optional[CookieGate] = None
        self._settings = _DEFAULT_SETTINGS
        self._secret: Optional[bytes] = None
        self._tickets: Optional[SessionTicketKeys] = None
        self._created = 0
        self._result = ffi.new("dp_link_result *")
        self._out = ffi.new("dp_conn **")
        # Handshakes this server started, oldest first: (peer, client IP).
        self._handshakes: list[tuple[weakref.ref[PacketPeerDTLS], bytes]] = []
        self._max_handshaking = _MAX_HANDSHAKING
        self._max_handshaking_per_address = _MAX_HANDSHAKING_PER_ADDRESS
        self._bound_stats = {
            "handshakes_refused_per_address": 0,
            "handshakes_refused_limit": 0,
            "handshakes_evicted": 0,
        }

    def setup(
        self,
        server_options: TLSOptions,
        *,
        settings: Optional[DTLSSettings] = None,
        cookie_secret: Optional[bytes] = None,
        ticket_keys: Optional[SessionTicketKeys | bool] = None,
        max_handshaking: int = _MAX_HANDSHAKING,
        max_handshaking_per_address: int = _MAX_HANDSHAKING_PER_ADDRESS,
    ) -> None:
        """Use ``server_options`` (from ``TLSOptions.server``) for new
        connections (Godot ``setup``). InvalidArgumentError if they are not
        server options (Godot ``ERR_INVALID_PARAMETER``). ``settings`` and
        ``cookie_secret`` (16..64 bytes shared by every process that must
        accept the same cookies; their gates then use the wall clock for
        cookies, so keep those clocks in sync; connection timers stay on the
        monotonic clock) are ours, as are the bounds on handshakes in
        progress (see the class notes). ``ticket_keys`` (ours): session
        tickets (RFC 5077) are issued by default with keys of this server's
        own (kept across ``setup`` calls); pass a
        :class:`~dtlspeer.session.SessionTicketKeys` shared with other
        processes to resume each other's sessions, or ``False`` for none.
        Calling it again replaces the configuration (see the class notes)."""
        if server_options is None:  # Godot: null options are ERR_INVALID_PARAMETER
            raise errors.InvalidArgumentError("server_options must be TLSOptions.server(...)")
        if not isinstance(server_options, TLSOptions):
            raise errors.ArgumentTypeError(
                "server_options must be TLSOptions.server(...), "
                f"not {type(server_options).__name__}"
            )
        if not server_options.is_server():
            raise errors.InvalidArgumentError(
                "server_options are client options (use TLSOptions.server)"
            )
        settings = _check_settings(settings)
        if cookie_secret is not None:
            cookie_secret = to_bytes(cookie_secret, "cookie_secret")
            if not 16 <= len(cookie_secret) <= 64:
                raise errors.InvalidArgumentError("cookie_secret must be 16..64 bytes")
        for name, bound in (("max_handshaking", max_handshaking),
                            ("max_handshaking_per_address", max_handshaking_per_address)):
            if isinstance(bound, bool) or not isinstance(bound, int):
                raise errors.ArgumentTypeError(f"{name} must be an int")
            if not 1 <= bound < 2**31:
                raise errors.InvalidArgumentError(f"{name} must be in 1 .. 2**31-1")
        self._max_handshaking = max_handshaking
        self._max_handshaking_per_address = max_handshaking_per_address
        gate = self._gate
        if gate is None or cookie_secret != self._secret:
            gate = CookieGate(cookie_secret)
        tickets = _ticket_keys_arg(ticket_keys, self._tickets)
        config = _build_server_config(server_options, gate, tickets, **settings._engine_options())
        if self._config is not None:
            self._config.close()  # live connections keep their reference
        self._config, self._gate, self._settings, self._secret, self._tickets = (
            config,
            gate,
            settings,
            cookie_secret,
            tickets,
        )

    def take_connection(self, udp_peer: PacketPeerUDP) -> PacketPeerDTLS:
        """Accept a DTLS client on ``udp_peer`` and return a PacketPeerDTLS,
        always (Godot: same contract). ``udp_peer`` is a peer taken from a
        ``UDPServer``, or any connected PacketPeerUDP (``connect_to_host``,
        bound or not, e.g. after a NAT punch), as in Godot.

        ``STATUS_HANDSHAKING`` when a queued ClientHello carried a valid
        cookie; otherwise ``STATUS_ERROR`` (a HelloVerifyRequest was sent, or
        nothing queued was a ClientHello). A UDPServer's peer is then closed,
        so the client's next datagram is a new pending connection; a
        connected PacketPeerUDP stays open and is taken again once the
        client's next hello is queued (``get_available_packet_count() > 0``
        or ``wait()``; ``take_connection`` reads its socket itself).

        StateError before ``setup`` (Godot: null); InvalidArgumentError for
        a UDP peer neither taken from a listening UDPServer nor connected
        (Godot: ``ERR_INVALID_PARAMETER``, a DISCONNECTED peer);
        AlreadyInUseError while another PacketPeerDTLS's session runs over
        the same UDP peer (Godot lets two sessions split its datagrams).

        Over a connected PacketPeerUDP the session is the socket's: a client
        restarting on the same address pair (RFC 6347 4.2.8) is not served
        until the live session ends (its hellos are discarded; a UDPServer
        routes them to a new pending connection instead)."""
        if self._config is None or self._gate is None:
            raise errors.StateError("DTLSServer.setup() was not called")
        if not isinstance(udp_peer, PacketPeerUDP):
            raise errors.ArgumentTypeError(
                f"udp_peer must be a PacketPeerUDP, not {type(udp_peer).__name__}"
            )
        ep = udp_peer._ep
        if ep is None or ep.closed or not udp_peer.is_socket_connected():
            raise errors.InvalidArgumentError(
                "udp_peer must be taken from a listening UDPServer or connected "
                "(PacketPeerUDP.connect_to_host)"
            )
        _check_udp_free(udp_peer)
        peer = PacketPeerDTLS()
        # Connection timers run on the monotonic clock; a gate with a shared
        # secret reads the wall clock for its cookies itself (DP_NOW).
        peer._now = NOW
        client = ffi.new("dp_addr *")  # the slot's or the connected socket's peer
        check(lib.dp_endpoint_slot_addr(ep.ptr, udp_peer._handle, client), "take_connection")
        client_ip = bytes(ffi.buffer(client.ip))
        refused = self._make_room(client_ip)
        if refused is not None:
            peer._udp = udp_peer
            peer._end(_Status.STATUS_ERROR, refused)
            return peer
        if udp_peer._server_owned and ep.gate is not self._gate:
            # From now on the UDPServer's endpoint judges unknown senders with
            # this gate in C before any pending slot exists (issue 11 item 5),
            # and routes new handshakes from live peers' addresses to
            # successor slots (RFC 6347 4.2.8).
            check(lib.dp_endpoint_set_gate(ep.ptr, self._gate.handle, peer._now), "gate")
            ep.gate = self._gate
        rc = lib.dp_link_accept(
            ep.ptr,
            udp_peer._handle,
            self._gate.handle,
            self._config.handle,
            peer._now,
            self._out,
            self._result,
        )
        res = self._result
        if rc == 1:
            self._created += 1
            conn = Connection._adopt(self._out[0])
            peer._start(udp_peer, conn, self._settings, self._gate)
            # Records reach a peer through poll(); none can precede a
            # finished handshake, but the queue is emptied here all the same.
            peer._records.extend(conn.read_all())
            peer._absorb(res)
            self._handshakes.append((weakref.ref(peer), client_ip))
            return peer
        peer._udp = udp_peer
        peer._link_stats["hvr_sent"] += res.hvr_sent
        peer._link_stats["gate_dropped"] += res.gate_dropped
        next_hello = (
            "arrives as a new connection" if udp_peer._server_owned
            else "is served by the next take_connection of this UDP peer"
        )
        if rc < 0:
            reason = f"cannot accept: {error_text(rc)}"
        elif res.hvr_sent:
            reason = (
                f"cookie exchange: HelloVerifyRequest sent; the client's next ClientHello "
                f"{next_hello}"
            )
        elif res.gate_dropped:
            reason = "no ClientHello: datagrams dropped by the cookie gate"
        else:
            reason = f"no datagram queued yet: the client's ClientHello {next_hello}"
        peer._end(_Status.STATUS_ERROR, reason, min(rc, 0))
        return peer

    def _make_room(self, client_ip: bytes) -> Optional[str]:
        """Bound the handshakes in progress (half-open ones hold ~40 KiB for
        up to the handshake deadline): None if one more from ``client_ip``
        may start, else why not. When the total bound is reached, the
        oldest handshake whose client never sent its key exchange is ended
        (STATUS_ERROR) to make room; connected peers are never touched."""
        live: list[tuple[PacketPeerDTLS, bytes]] = []
        for ref, ip in self._handshakes:
            peer = ref()
            conn = None if peer is None else peer._conn
            if peer is not None and conn is not None and conn.status == EngineStatus.HANDSHAKING:
                live.append((peer, ip))
        self._handshakes = [(weakref.ref(p), ip) for p, ip in live]
        if sum(1 for _, ip in live if ip == client_ip) >= self._max_handshaking_per_address:
            self._bound_stats["handshakes_refused_per_address"] += 1
            return "refused: too many handshakes in progress from this address"
        if len(live) < self._max_handshaking:
            return None
        for index, (victim, _) in enumerate(live):
            conn = victim._conn
            if conn is not None and not conn.handshake_progressed:
                victim._end(
                    _Status.STATUS_ERROR,
                    "evicted: the server's handshake table was full and this client "
                    "never sent its key exchange",
                )
                del self._handshakes[index]
                self._bound_stats["handshakes_evicted"] += 1
                return None
        self._bound_stats["handshakes_refused_limit"] += 1
        return "refused: the server's handshake table is full"

    def get_stats(self) -> dict[str, int]:
        """Cookie gate counters (ours): ``hellos_seen``, ``cookies_sent``,
        ``cookies_rejected``, ``admitted``, drops by reason,
        ``connections_created`` (TLS connections made by take_connection),
        and the handshake bounds' ``handshakes_refused_per_address``,
        ``handshakes_refused_limit``, ``handshakes_evicted``. StateError
        before ``setup``."""
        if self._gate is None:
            raise errors.StateError("DTLSServer.setup() was not called")
        stats = self._gate.stats()
        stats["connections_created"] = self._created
        stats.update(self._bound_stats)
        return stats

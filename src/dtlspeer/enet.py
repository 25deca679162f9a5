"""ENet (Godot's multiplayer transport), optionally inside DTLS: ``ENetConnection``
and ``ENetPacketPeer`` mirroring Godot 4's classes.

The protocol is upstream ENet 1.3.18 (compiled in, unmodified), so any ENet 1.3
peer talks to it: Godot 3 and 4, pyenet, C programs. ``dtls_server_setup`` /
``dtls_client_setup`` put every ENet datagram into one DTLS 1.2 record, as
Godot 4's ``ENetConnection`` does. ``service()`` is ONE native call per tick:
it reads the socket (recvmmsg batches), runs DTLS, runs ENet and sends
(sendmmsg batches).

Where we differ from Godot:

* Errors raise ``dtlspeer.errors`` exceptions instead of returning ``Error``.
* ``service()`` returns one event, like Godot; ``service_batch()`` returns every
  event of one native call (packets inside the events, not queued on peers).
* Plain ENet addresses are IPv4 (upstream ENet's ``ENetAddress``; Godot patched
  in IPv6). Inside DTLS, IPv6 works.
* ``compress()`` supports NONE and RANGE_CODER (ENet's own); FASTLZ, ZLIB and
  ZSTD are Godot's own compressors and raise ``UnsupportedError``.
* Packets are limited to ``max_packet_size`` (1 MiB by default; ENet: 32 MiB),
  which also bounds what a peer may make us buffer for fragments.
"""

from __future__ import annotations

import enum
import socket
import struct
import threading
from typing import Any, NamedTuple, Optional

from . import errors
from ._binding import check, error_text, ffi, lib, to_bytes
from ._engine import CookieGate
from .dtls import DTLSSettings, _build_server_config, _check_settings, _client_config
from .packet_peer import PacketPeer
from .tls_options import TLSOptions
from .udp import _addr_text, _check_int, _fill_addr, _open_socket, _resolve

__all__ = [
    "ENetConnection",
    "ENetEvent",
    "ENetPacketPeer",
]

_new_event = tuple.__new__  # an ENetEvent without NamedTuple's per-call argument handling
_EVENT = struct.Struct("<IIIIIBBBB24x")  # dp_enet_event; its address is read for CONNECT only
DEFAULT_MAX_PACKET_SIZE = 1 << 20
_RECEIVE = lib.DP_ENET_EVENT_RECEIVE

# DTLS under ENet. ENet's datagrams are at most its MTU (1392 by default on
# both ends; ENet negotiates the smaller of the two peers' MTUs, so we
# advertise ENet's default and never send more). Each becomes ONE record: 13
# bytes of header + up to 24 of AEAD (GCM/CCM; 16 ChaCha20-Poly1305): 1429
# bytes, which fits our DTLS MTU of 1452 (an IPv6 + UDP datagram in a
# 1500-byte frame), also for handshake flights. A peer may announce an
# ENet MTU up to 4096 (ENet's maximum), so records are accepted up to 4096
# bytes of plaintext, as Godot does (it drops larger ones).
ENET_DTLS_SETTINGS = DTLSSettings(mtu=1452, max_receive_size=4096)


class ENetEvent(NamedTuple):
    """One event. Indexes 0..3 match Godot's ``[EventType, ENetPacketPeer, data,
    channel]``; ``packet`` and ``flags`` are the received packet (RECEIVE from
    ``service_batch``) and its ENet flags (1 reliable, 2 unsequenced)."""

    type: int
    peer: Optional[ENetPacketPeer]
    data: int
    channel: int
    packet: bytes = b""
    flags: int = 0


class ENetPacketPeer(PacketPeer):
    """One ENet peer of an :class:`ENetConnection` (Godot 4: same name).

    Made by ``connect_to_host`` or by a CONNECT event; it stays valid until its
    DISCONNECT event (or a local ``peer_disconnect_now``/``reset``), after which
    every call raises ``StateError`` (Godot: the peer becomes inactive).
    ``put_packet`` sends reliably on channel 0, as Godot.
    """

    PACKET_LOSS_SCALE = 65536
    PACKET_THROTTLE_SCALE = 32
    FLAG_RELIABLE = 1
    FLAG_UNSEQUENCED = 2
    FLAG_UNRELIABLE_FRAGMENT = 8

    class PeerState(enum.IntEnum):
        STATE_DISCONNECTED = 0
        STATE_CONNECTING = 1
        STATE_ACKNOWLEDGING_CONNECT = 2
        STATE_CONNECTION_PENDING = 3
        STATE_CONNECTION_SUCCEEDED = 4
        STATE_CONNECTED = 5
        STATE_DISCONNECT_LATER = 6
        STATE_DISCONNECTING = 7
        STATE_ACKNOWLEDGING_DISCONNECT = 8
        STATE_ZOMBIE = 9

    class PeerStatistic(enum.IntEnum):
        PEER_PACKET_LOSS = 0
        PEER_PACKET_LOSS_VARIANCE = 1
        PEER_PACKET_LOSS_EPOCH = 2
        PEER_ROUND_TRIP_TIME = 3
        PEER_ROUND_TRIP_TIME_VARIANCE = 4
        PEER_LAST_ROUND_TRIP_TIME = 5
        PEER_LAST_ROUND_TRIP_TIME_VARIANCE = 6
        PEER_PACKET_THROTTLE = 7
        PEER_PACKET_THROTTLE_LIMIT = 8
        PEER_PACKET_THROTTLE_COUNTER = 9
        PEER_PACKET_THROTTLE_EPOCH = 10
        PEER_PACKET_THROTTLE_ACCELERATION = 11
        PEER_PACKET_THROTTLE_DECELERATION = 12
        PEER_PACKET_THROTTLE_INTERVAL = 13

    _STAT_FIELDS = (
        "packet_loss",
        "packet_loss_variance",
        "packet_loss_epoch",
        "round_trip_time",
        "round_trip_time_variance",
        "last_round_trip_time",
        "last_round_trip_time_variance",
        "packet_throttle",
        "packet_throttle_limit",
        "packet_throttle_counter",
        "packet_throttle_epoch",
        "packet_throttle_acceleration",
        "packet_throttle_deceleration",
        "packet_throttle_interval",
    )

    def __init__(self, connection: ENetConnection, index: int, connect_id: int) -> None:
        super().__init__()
        self._connection = connection
        self._index = index
        self._connect_id = connect_id
        self._active = True
        self._packets: list[tuple[bytes, int, int]] = []  # (data, channel, flags)
        self._info = ffi.new("dp_enet_peer_info *")
        self._address = ("", 0)
        self._last_error = ""

    # -- identity ---------------------------------------------------------------

    def _handle(self) -> Any:
        if not self._active:
            raise errors.StateError("the ENet peer is disconnected")
        return self._connection._native()

    def _call(self, code: int, what: str) -> None:
        if code == lib.DP_ERR_CLOSED:
            self._active = False
        check(code, what)

    def is_active(self) -> bool:
        """True until the peer disconnected or was reset (Godot: same)."""
        return self._active

    def _fill_info(self) -> Any:
        self._call(
            lib.dp_enet_peer_get_info(self._handle(), self._index, self._connect_id, self._info),
            "ENet peer",
        )
        return self._info

    # -- sending ------------------------------------------------------------------

    def send(self, channel: int, packet: bytes, flags: int) -> None:
        """Queue ``packet`` on ``channel`` with ENet ``flags`` (FLAG_RELIABLE,
        FLAG_UNSEQUENCED, FLAG_UNRELIABLE_FRAGMENT); it leaves at the next
        ``service``/``flush``. Raises ``InvalidArgumentError`` for a channel the
        connection did not negotiate (Godot: ERR_INVALID_PARAMETER),
        ``StateError`` unless connected, ``LimitError`` above max_packet_size."""
        conn = self._connection._ptr
        if type(packet) is bytes and type(channel) is int and type(flags) is int and self._active:
            # The per-packet path: one native call; checks and errors are native.
            code = lib.dp_enet_send(
                conn, self._index, self._connect_id, channel, packet, len(packet), flags
            )
            if code >= 0:
                return
        data = to_bytes(packet, "packet")
        channel = _check_int(channel, "channel")
        flags = _check_int(flags, "flags")
        self._call(
            lib.dp_enet_send(
                self._handle(), self._index, self._connect_id, channel, data, len(data), flags
            ),
            "send",
        )

    def put_packet(self, data: Any) -> None:
        """Send reliably on channel 0 (Godot: same)."""
        self.send(0, data, self.FLAG_RELIABLE)

    def get_available_packet_count(self) -> int:
        """Packets ``service()`` queued for this peer and not yet read."""
        return len(self._packets)

    def get_packet(self) -> bytes:
        """The oldest packet ``ENetConnection.service()`` queued for this peer."""
        if not self._packets:
            self._packet_error = errors.WouldBlockError("no packet queued")
            raise self._packet_error
        self._packet_error = None
        return self._packets.pop(0)[0]

    def get_packet_channel(self) -> int:
        """Channel of the next queued packet (-1 if none)."""
        return self._packets[0][1] if self._packets else -1

    def get_packet_flags(self) -> int:
        """ENet flags of the next queued packet (-1 if none)."""
        return self._packets[0][2] if self._packets else -1

    # -- life ---------------------------------------------------------------------

    def _disconnect(self, data: int, how: int) -> None:
        data = _check_int(data, "data") & 0xFFFFFFFF
        code = lib.dp_enet_peer_disconnect(self._handle(), self._index, self._connect_id, data, how)
        if how >= lib.DP_ENET_DISCONNECT_NOW:
            self._connection._forget(self)
        self._call(code, "disconnect")

    def peer_disconnect(self, data: int = 0) -> None:
        """Graceful disconnect: a DISCONNECT event follows (Godot: same)."""
        self._disconnect(data, lib.DP_ENET_DISCONNECT)

    def peer_disconnect_later(self, data: int = 0) -> None:
        """Disconnect once the queued packets are sent (Godot: same)."""
        self._disconnect(data, lib.DP_ENET_DISCONNECT_LATER)

    def peer_disconnect_now(self, data: int = 0) -> None:
        """Tell the peer and drop it now; no DISCONNECT event (Godot: same)."""
        self._disconnect(data, lib.DP_ENET_DISCONNECT_NOW)

    def reset(self) -> None:
        """Drop the peer without telling it (Godot: same)."""
        self._disconnect(0, lib.DP_ENET_RESET)

    def ping(self) -> None:
        """Send a ping now (ENet pings every ``ping_interval`` anyway)."""
        self._call(lib.dp_enet_peer_ping(self._handle(), self._index, self._connect_id), "ping")

    def _configure(self, what: int, a: int, b: int = 0, c: int = 0) -> None:
        self._call(
            lib.dp_enet_peer_configure(
                self._handle(), self._index, self._connect_id, what, a, b, c
            ),
            "configure",
        )

    def ping_interval(self, ping_interval: int) -> None:
        """Milliseconds between pings (ENet default 500)."""
        self._configure(lib.DP_ENET_PEER_PING_INTERVAL, _check_int(ping_interval, "interval"))

    def set_timeout(self, timeout: int, timeout_min: int, timeout_max: int) -> None:
        """ENet's timeout limit / minimum / maximum in ms (Godot: same)."""
        self._configure(
            lib.DP_ENET_PEER_TIMEOUT,
            _check_int(timeout, "timeout"),
            _check_int(timeout_min, "timeout_min"),
            _check_int(timeout_max, "timeout_max"),
        )

    def throttle_configure(self, interval: int, acceleration: int, deceleration: int) -> None:
        """ENet's packet throttle: ``interval`` ms, ``acceleration`` and
        ``deceleration`` (Godot: same arguments)."""
        self._configure(
            lib.DP_ENET_PEER_THROTTLE,
            _check_int(interval, "interval"),
            _check_int(acceleration, "acceleration"),
            _check_int(deceleration, "deceleration"),
        )

    # -- queries ------------------------------------------------------------------

    def get_state(self) -> ENetPacketPeer.PeerState:
        """ENet's state of the peer (Godot's PeerState values);
        STATE_DISCONNECTED once the peer object is dead."""
        if not self._active:
            return self.PeerState.STATE_DISCONNECTED
        try:
            return self.PeerState(self._fill_info().state)
        except errors.StateError:
            return self.PeerState.STATE_DISCONNECTED

    def get_channels(self) -> int:
        """The number of channels negotiated with the peer (Godot: same)."""
        return int(self._fill_info().channels)

    def get_remote_address(self) -> str:
        """The peer's IP address (kept after it disconnected)."""
        return self._address[0]

    def get_remote_port(self) -> int:
        """The peer's UDP port (kept after it disconnected)."""
        return self._address[1]

    def get_statistic(self, statistic: int) -> float:
        """One of PeerStatistic (Godot: same values)."""
        name = self._STAT_FIELDS[self.PeerStatistic(statistic)]
        return float(getattr(self._fill_info(), name))

    def get_mtu(self) -> int:
        """The MTU ENet negotiated with this peer."""
        return int(self._fill_info().mtu)

    def get_last_error(self) -> str:
        """DTLS mode: why this peer's DTLS session ended, in words ("" if it
        did not): a failed handshake (certificate, name, alert, timeout) ends
        an outgoing connection at once with a DISCONNECT event instead of an
        ENet timeout ~30 s later, and says why here. Not in Godot (it only
        prints DTLS errors)."""
        if self._active and self._connection._ptr is not None:
            reason = self._connection._last_error(self._index)
            if reason:
                return reason
        return self._last_error

    def get_dtls_status(self) -> Optional[dict[str, Any]]:
        """DTLS mode: the session's status, ciphersuite and reason (Godot has no
        per-peer DTLS access); None in plain mode or once the session ended."""
        info = self._fill_info()
        host = lib.dp_enet_dtls_host(self._connection._native())
        if info.dtls_peer == 0 or host == ffi.NULL:
            return None
        hinfo = ffi.new("dp_host_peer_info *")
        if lib.dp_host_peer_get_info(host, info.dtls_peer, hinfo) < 0:
            return None
        text = ffi.new("char[]", 256)
        lib.dp_host_peer_ciphersuite(host, info.dtls_peer, text, 256)
        suite = ffi.string(text).decode()
        lib.dp_host_peer_reason(host, info.dtls_peer, text, 256)
        return {
            "status": int(hinfo.status),
            "ciphersuite": suite,
            "reason": ffi.string(text).decode(errors="replace"),
        }


class ENetConnection:
    """An ENet host on one UDP socket (Godot 4: ``ENetConnection``).

    ``create_host_bound(address, port, ...)`` or ``create_host(...)`` (any
    port) first; then, for DTLS, ``dtls_server_setup`` / ``dtls_client_setup``
    before anything else; then ``connect_to_host`` and ``service`` each tick.
    """

    class EventType(enum.IntEnum):
        EVENT_ERROR = -1
        EVENT_NONE = 0
        EVENT_CONNECT = 1
        EVENT_DISCONNECT = 2
        EVENT_RECEIVE = 3

    class CompressionMode(enum.IntEnum):
        COMPRESS_NONE = 0
        COMPRESS_RANGE_CODER = 1
        COMPRESS_FASTLZ = 2
        COMPRESS_ZLIB = 3
        COMPRESS_ZSTD = 4

    class HostStatistic(enum.IntEnum):
        HOST_TOTAL_SENT_DATA = 0
        HOST_TOTAL_SENT_PACKETS = 1
        HOST_TOTAL_RECEIVED_DATA = 2
        HOST_TOTAL_RECEIVED_PACKETS = 3

    def __init__(self) -> None:
        self._ptr: Any = None
        self._fd = -1
        # Held across service() and destroy(): destroy() from another thread
        # (the usual way to stop a network thread) waits for a service() in
        # flight to return (at most its timeout) instead of freeing ENet under it.
        self._lock = threading.Lock()
        self._port = 0
        self._family = socket.AF_INET
        self._peers: dict[int, ENetPacketPeer] = {}
        self._pending: list[ENetEvent] = []
        self._max_events = 256
        self._events = ffi.new("dp_enet_event[]", self._max_events)
        self._events_view = memoryview(ffi.buffer(self._events))
        self._payload_cap = 0
        self._payload: Any = None
        self._payload_view: Any = None
        self._n = ffi.new("uint32_t *")
        self._index = ffi.new("uint32_t *")
        self._connect_id = ffi.new("uint32_t *")
        self._dtls_keep: list[Any] = []  # configs the native host references
        self._reason_buf = ffi.new("char[]", 256)

    # -- creation -------------------------------------------------------------------

    def create_host_bound(
        self,
        bind_address: str,
        bind_port: int,
        max_peers: int = 32,
        max_channels: int = 0,
        in_bandwidth: int = 0,
        out_bandwidth: int = 0,
        *,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
    ) -> None:
        """Bind ``bind_address:bind_port`` (``"*"``: any) and make the host
        (Godot: same arguments; max_channels 0 = 255)."""
        if self._ptr is not None:
            raise errors.StateError("the connection already has a host (call destroy first)")
        max_peers = _check_int(max_peers, "max_peers")
        max_channels = _check_int(max_channels, "max_channels")
        max_packet_size = _check_int(max_packet_size, "max_packet_size")
        if not 1 <= max_peers <= 4095:
            raise errors.InvalidArgumentError("max_peers must be in 1 .. 4095")
        if not 0 <= max_channels <= 255:
            raise errors.InvalidArgumentError("max_channels must be in 0 .. 255")
        if not 1 <= max_packet_size <= 1 << 25:
            raise errors.InvalidArgumentError("max_packet_size must be in 1 .. 32 MiB")
        if bind_address == "*":
            bind_address = "0.0.0.0"  # plain ENet addresses are IPv4
        sock = _open_socket(bind_address, bind_port)
        out = ffi.new("dp_enet **")
        try:
            family = 6 if sock.family == socket.AF_INET6 else 4
            self._port = int(sock.getsockname()[1])
            self._family = sock.family
            check(
                lib.dp_enet_new(
                    sock.fileno(),
                    family,
                    max_peers,
                    max_channels,
                    _check_int(in_bandwidth, "in_bandwidth"),
                    _check_int(out_bandwidth, "out_bandwidth"),
                    out,
                ),
                "ENetConnection",
            )
        except BaseException:
            sock.close()
            raise
        self._fd = sock.detach()  # the native host owns the descriptor
        self._ptr = ffi.gc(out[0], lib.dp_enet_free)
        check(lib.dp_enet_set(self._ptr, lib.DP_ENET_SET_MAX_PACKET_SIZE, max_packet_size, 0))
        self._payload_cap = max(max_packet_size, 256 * 1024)
        self._payload = ffi.new("uint8_t[]", self._payload_cap)
        self._payload_view = ffi.buffer(self._payload)

    def create_host(
        self,
        max_peers: int = 32,
        max_channels: int = 0,
        in_bandwidth: int = 0,
        out_bandwidth: int = 0,
        *,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
    ) -> None:
        """A host on any free port (Godot: same)."""
        self.create_host_bound(
            "*",
            0,
            max_peers,
            max_channels,
            in_bandwidth,
            out_bandwidth,
            max_packet_size=max_packet_size,
        )

    def _native(self) -> Any:
        if self._ptr is None:
            raise errors.StateError("the ENetConnection has no host (create_host first)")
        return self._ptr

    def destroy(self) -> None:
        """Close the socket and forget every peer (Godot: same). Queued
        packets are flushed first; DTLS peers get close_notify. Safe from
        another thread: it waits for a ``service()`` in flight to return (at
        most that call's timeout)."""
        with self._lock:
            if self._ptr is None:
                return
            lib.dp_enet_close(self._ptr)
            for peer in self._peers.values():
                peer._active = False
            self._peers.clear()
            self._pending.clear()
            ffi.release(self._ptr)
            self._ptr = None

    def _last_error(self, index: int) -> str:
        code = ffi.new("int32_t *")
        text = self._reason_buf
        n = lib.dp_enet_peer_last_error(self._ptr, index, text, 256, code)
        if n <= 0:
            return ""
        reason: str = ffi.string(text).decode("utf-8", "replace")
        if code[0] and "-0x" not in reason:
            reason += f" ({error_text(code[0])}, code -0x{-code[0]:04X})"
        return reason

    def _forget(self, peer: ENetPacketPeer) -> None:
        if self._peers.get(peer._index) is peer:
            del self._peers[peer._index]
        peer._active = False

    # -- DTLS ---------------------------------------------------------------------------

    def dtls_server_setup(
        self, server_options: TLSOptions, *, settings: Optional[DTLSSettings] = None
    ) -> None:
        """Accept ENet only inside DTLS from now on: each remote address is a
        DTLS session behind our cookie gate, each ENet datagram one record
        (Godot 4: same; once, right after ``create_host_bound``). ``settings``
        default: ``ENET_DTLS_SETTINGS`` (MTU 1452, records up to 4096 bytes)."""
        handle = self._native()
        if not isinstance(server_options, TLSOptions) or not server_options.is_server():
            raise errors.InvalidArgumentError("server_options must be TLSOptions.server(...)")
        settings = _check_settings(settings or ENET_DTLS_SETTINGS)
        gate = CookieGate(None)
        config = _build_server_config(server_options, gate, None, **settings._engine_options())
        check(lib.dp_enet_dtls_server_setup(handle, config.handle, gate.handle), "dtls setup")
        self._dtls_keep += [config, gate]

    def dtls_client_setup(
        self,
        hostname: str,
        client_options: Optional[TLSOptions] = None,
        *,
        settings: Optional[DTLSSettings] = None,
    ) -> None:
        """Connect out only inside DTLS, checking the server's certificate
        against ``hostname`` (Godot 4: same; call before ``connect_to_host``).
        ``client_options`` default: ``TLSOptions.client()`` (system CAs;
        Godot 4.8-dev rejects a null here although its docs allow it)."""
        handle = self._native()
        options = client_options if client_options is not None else TLSOptions.client()
        if not isinstance(options, TLSOptions) or options.is_server():
            raise errors.InvalidArgumentError("client_options must be TLSOptions.client...(...)")
        if not isinstance(hostname, str):
            raise errors.ArgumentTypeError("hostname must be a str")
        config = _client_config(options, _check_settings(settings or ENET_DTLS_SETTINGS))
        check(
            lib.dp_enet_dtls_client_setup(handle, config.handle, hostname.encode("utf-8")),
            "dtls setup",
        )
        self._dtls_keep.append(config)

    # -- peers ------------------------------------------------------------------------

    def connect_to_host(
        self, address: str, port: int, channels: int = 0, data: int = 0
    ) -> ENetPacketPeer:
        """Start connecting; the peer's CONNECT event comes from ``service``
        (Godot: same; channels 0 = 255). ``data`` is the 32-bit value the
        remote side's CONNECT event carries."""
        handle = self._native()
        channels = _check_int(channels, "channels")
        if not 0 <= channels <= 255:
            raise errors.InvalidArgumentError("channels must be in 0 .. 255")
        data = _check_int(data, "data") & 0xFFFFFFFF
        ip, scope = _resolve(address, _check_int(port, "port"), self._family)
        addr = _fill_addr(ffi.new("dp_addr *"), ip, port, scope)
        check(
            lib.dp_enet_connect(handle, addr, channels, data, self._index, self._connect_id),
            "connect_to_host",
        )
        peer = ENetPacketPeer(self, int(self._index[0]), int(self._connect_id[0]))
        peer._address = (str(ip), port)
        old = self._peers.get(peer._index)
        if old is not None:
            old._active = False  # ENet reused the index: that connection is over
        self._peers[peer._index] = peer
        return peer

    def get_peers(self) -> list[ENetPacketPeer]:
        """Peers that are connecting or connected (Godot: same)."""
        return [p for p in self._peers.values() if p._active]

    # -- servicing --------------------------------------------------------------------

    def _run(self, timeout_ms: int) -> list[ENetEvent]:
        with self._lock:
            handle = self._ptr if self._ptr is not None else self._native()
            code = lib.dp_enet_service(
                handle,
                timeout_ms,
                self._events,
                self._max_events,
                self._payload,
                self._payload_cap,
                self._n,
            )
        if code <= 0:
            if code < 0:
                check(code, "service")
            return []
        n = code
        payload = self._payload_view
        out: list[ENetEvent] = []
        peers = self._peers
        rows = _EVENT.iter_unpack(self._events_view[: n * _EVENT.size])
        for i, (index, connect_id, data, offset, length, etype, channel, flags, _) in enumerate(
            rows
        ):
            if etype == lib.DP_ENET_EVENT_CONNECT:
                peer = peers.get(index)
                if peer is None or peer._connect_id != connect_id:
                    peer = ENetPacketPeer(self, index, connect_id)
                    peers[index] = peer
                # From the event, not from the peer: a DISCONNECT later in
                # this same batch may already have ended it.
                addr = self._events[i].addr
                peer._address = (_addr_text(addr), int(addr.port))
                out.append(ENetEvent(etype, peer, data, channel))
            elif etype == _RECEIVE:
                packet = payload[offset : offset + length]
                out.append(
                    _new_event(ENetEvent, (etype, peers.get(index), 0, channel, packet, flags))
                )
            elif etype == lib.DP_ENET_EVENT_DISCONNECT:
                peer = peers.get(index)
                if peer is not None and connect_id and peer._connect_id != connect_id:
                    peer = None  # owed to an earlier connection of this index
                if peer is not None:
                    del peers[index]
                    peer._active = False
                    peer._last_error = self._last_error(index)
                out.append(ENetEvent(etype, peer, data, channel))
        return out

    def service(self, timeout: int = 0) -> ENetEvent:
        """Wait up to ``timeout`` ms and return ONE event, Godot-style
        (``EVENT_NONE`` if nothing happened); a RECEIVE packet is queued on its
        peer (``peer.get_packet()``). One native call serves many events: the
        rest are returned by the next calls without touching the socket."""
        if not self._pending:
            self._pending = self._run(_check_int(timeout, "timeout"))
            self._pending.reverse()
        if not self._pending:
            return ENetEvent(self.EventType.EVENT_NONE, None, 0, 0)
        event = self._pending.pop()
        if event.type == lib.DP_ENET_EVENT_RECEIVE and event.peer is not None:
            event.peer._packets.append((event.packet, event.channel, event.flags))
            return event._replace(packet=b"")
        return event

    def service_batch(self, timeout: int = 0) -> list[ENetEvent]:
        """Every event of one native call (waiting up to ``timeout`` ms only if
        there is none), packets inside the RECEIVE events. Not in Godot."""
        if self._pending:
            pending, self._pending = self._pending[::-1], []
            return pending
        if type(timeout) is not int:
            timeout = _check_int(timeout, "timeout")
        return self._run(timeout)

    def flush(self) -> None:
        """Send every queued packet now (Godot: same)."""
        check(lib.dp_enet_flush(self._native()), "flush")

    def broadcast(self, channel: int, packet: bytes, flags: int) -> None:
        """Queue ``packet`` to every connected peer (Godot: same)."""
        data = to_bytes(packet, "packet")
        check(
            lib.dp_enet_broadcast(
                self._native(),
                _check_int(channel, "channel"),
                data,
                len(data),
                _check_int(flags, "flags"),
            ),
            "broadcast",
        )

    # -- settings -----------------------------------------------------------------------

    def channel_limit(self, limit: int) -> None:
        """Most channels a new peer may use (0 = 255; Godot: same)."""
        check(
            lib.dp_enet_set(
                self._native(), lib.DP_ENET_SET_CHANNEL_LIMIT, _check_int(limit, "limit"), 0
            )
        )

    def bandwidth_limit(self, in_bandwidth: int = 0, out_bandwidth: int = 0) -> None:
        """Bytes per second, 0 = unlimited (Godot: same)."""
        check(
            lib.dp_enet_set(
                self._native(),
                lib.DP_ENET_SET_BANDWIDTH_LIMIT,
                _check_int(in_bandwidth, "in_bandwidth"),
                _check_int(out_bandwidth, "out_bandwidth"),
            )
        )

    def compress(self, mode: int) -> None:
        """COMPRESS_NONE or COMPRESS_RANGE_CODER (ENet's own). Godot's FASTLZ,
        ZLIB and ZSTD compressors are Godot code, not ENet's: UnsupportedError.
        Both ends must use the same mode."""
        mode = self.CompressionMode(mode)
        if mode > self.CompressionMode.COMPRESS_RANGE_CODER:
            raise errors.UnsupportedError(f"{mode.name} is Godot's own compressor, not ENet's")
        check(lib.dp_enet_set(self._native(), lib.DP_ENET_SET_COMPRESS, int(mode), 0))

    def refuse_new_connections(self, refuse: bool) -> None:
        """DTLS server: admit no new handshake while set (Godot: same; a plain
        host ignores it, as Godot's does)."""
        check(lib.dp_enet_set(self._native(), lib.DP_ENET_SET_REFUSE, int(bool(refuse)), 0))

    def fileno(self) -> int:
        """The socket's descriptor, for an event loop's readiness watch (not
        in Godot). Owned by the host: never close it."""
        self._native()
        return self._fd

    def get_local_port(self) -> int:
        """The UDP port the host is bound to (Godot: same)."""
        self._native()
        return self._port

    def pop_statistic(self, statistic: int) -> float:
        """Read and reset one host counter (HostStatistic; Godot: same)."""
        out = ffi.new("uint32_t *")
        check(lib.dp_enet_pop_statistic(self._native(), int(self.HostStatistic(statistic)), out))
        return float(out[0])

    def _stats(self) -> Any:
        out = ffi.new("dp_enet_stats *")
        check(lib.dp_enet_get_stats(self._native(), out))
        return out

    def get_stats(self) -> dict[str, int]:
        """Our counters: datagrams in/out, drops by cause (not in Godot)."""
        stats = self._stats()
        return {name: int(getattr(stats, name)) for name, _ in ffi.typeof(stats[0]).fields}

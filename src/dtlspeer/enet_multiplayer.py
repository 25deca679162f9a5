"""``ENetMultiplayerPeer``: Godot's high-level multiplayer transport over
:class:`~dtlspeer.enet.ENetConnection`, with Godot's conventions, so Godot
clients using ``ENetMultiplayerPeer`` (4.x, also with DTLS) or
``NetworkedMultiplayerENet`` (3.x, ``godot=3``) reach a Python server.

Godot 4 conventions (``../shared/reference/godot-wire.md`` §4.1):

* A client sends its unique id (2 .. 2**31-1) as the 32-bit CONNECT data; the
  server is id 1 and resets (silently, as Godot) clients whose id is below 2,
  already in use, or that connect while new connections are refused.
* Channels: RELIABLE on ENet channel 0, unreliable modes on ENet channel 1,
  script channel N > 0 on ENet channel N + 1. Flags: RELIABLE, UNRELIABLE_FRAGMENT
  (ordered), UNSEQUENCED | UNRELIABLE_FRAGMENT (unreliable). Packets carry no
  header: the payload is what ``put_packet`` got.

Godot 3 mode (``godot=3``, 3.x ``NetworkedMultiplayerENet``, §4.2): ENet
channel 0 carries the server's ADD_PEER / REMOVE_PEER messages (two LE uint32),
channel 1 reliable, channel 2 unreliable (``transfer_channel`` > 0 is a raw ENet
channel); every data packet starts with source id (uint32 LE) and target id
(int32 LE); the server checks the source and relays (target 0 all, -n all but
n, n one peer).

Where we differ from Godot: exceptions instead of ``Error``; notifications are
:class:`Signal` objects (``peer_connected.connect(callback)``); ids >= 2**31 are
refused (Godot 4 accepts them as negative ids; its own clients never send
them); mesh mode is not implemented; ``get_max_packet_size()`` is the host's
``max_packet_size`` (1 MiB by default; Godot: 16 MiB).
"""

from __future__ import annotations

import enum
import secrets
import struct
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple, Optional

from . import errors
from .enet import DEFAULT_MAX_PACKET_SIZE, ENetConnection, ENetPacketPeer
from .packet_peer import PacketPeer
from .udp import _check_int

__all__ = [
    "ENetMultiplayerPeer",
    "ScenePacket",
    "Signal",
    "parse_scene_packet",
    "scene_raw",
    "scene_relay",
    "scene_sys",
]

_RELIABLE = ENetPacketPeer.FLAG_RELIABLE
_UNSEQUENCED = ENetPacketPeer.FLAG_UNSEQUENCED
_FRAGMENT = ENetPacketPeer.FLAG_UNRELIABLE_FRAGMENT
_G3_HEADER = struct.Struct("<Ii")  # source id, target id
_G3_SYSMSG = struct.Struct("<II")  # message, peer id
_G3_ADD_PEER, _G3_REMOVE_PEER = 0, 1
_G3_CONFIG, _G3_RELIABLE, _G3_UNRELIABLE = 0, 1, 2
_ID_LIMIT = 2**31


class Signal:
    """A minimal Godot-style signal: ``connect(callable)``, ``disconnect``, ``emit``."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[int], Any]] = []

    def connect(self, callback: Callable[[int], Any]) -> None:
        """Call ``callback(peer_id)`` on every emission."""
        self._callbacks.append(callback)

    def disconnect(self, callback: Callable[[int], Any]) -> None:
        """Stop calling ``callback``; ValueError if it was not connected."""
        self._callbacks.remove(callback)

    def emit(self, peer_id: int) -> None:
        """Call every connected callback with ``peer_id``."""
        for callback in list(self._callbacks):
            callback(peer_id)


def _send_quiet(peer: ENetPacketPeer, channel: int, data: bytes, flags: int) -> None:
    """Fan-out and relay sends: a peer ENet already ended (its DISCONNECT
    event is later in this poll) is skipped, not an error of the whole call."""
    try:
        peer.send(channel, data, flags)
    except errors.StateError:
        pass


class ENetMultiplayerPeer(PacketPeer):
    """Godot's ``ENetMultiplayerPeer`` (4.x; 3.x ``NetworkedMultiplayerENet``
    with ``godot=3``). ``poll()`` each tick; packets are read with
    ``get_packet`` after looking at ``get_packet_peer/channel/mode``."""

    class TransferMode(enum.IntEnum):
        TRANSFER_MODE_UNRELIABLE = 0
        TRANSFER_MODE_UNRELIABLE_ORDERED = 1
        TRANSFER_MODE_RELIABLE = 2

    class ConnectionStatus(enum.IntEnum):
        CONNECTION_DISCONNECTED = 0
        CONNECTION_CONNECTING = 1
        CONNECTION_CONNECTED = 2

    TARGET_PEER_BROADCAST = 0
    TARGET_PEER_SERVER = 1

    def __init__(self, *, godot: int = 4) -> None:
        super().__init__()
        if godot not in (3, 4):
            raise errors.InvalidArgumentError("godot must be 3 or 4")
        self._godot = godot
        self.transfer_mode = self.TransferMode.TRANSFER_MODE_RELIABLE
        self.transfer_channel = -1 if godot == 3 else 0
        self.server_relay = True  # Godot 3 mode only
        self.always_ordered = False  # Godot 3 mode only
        self.peer_connected = Signal()
        self.peer_disconnected = Signal()
        self._bind_ip = "*"
        self._reset()

    def _reset(self) -> None:
        self._host: Optional[ENetConnection] = None
        self._unique_id = 0
        self._server = False
        self._status = self.ConnectionStatus.CONNECTION_DISCONNECTED
        self._refuse = False
        self._target = 0
        self._peers: dict[int, ENetPacketPeer] = {}  # id -> ENet peer
        self._ids: dict[int, int] = {}  # id(ENet peer object) -> peer id
        self._channel_count = 0
        self._queue: deque[tuple[int, bytes, int, int]] = deque()  # from, data, channel, mode
        # A client connects at its first poll, after a possible dtls_client_setup.
        self._pending_connect: Optional[tuple[str, int, int]] = None
        self._server_peer: Optional[ENetPacketPeer] = None
        self._g3_remote_peers: set[int] = set()  # Godot 3 client: peers the server announced

    # -- creation ---------------------------------------------------------------------

    def set_bind_ip(self, ip: str) -> None:
        """The address ``create_server`` binds (Godot: same; default any)."""
        self._bind_ip = ip

    def create_server(
        self,
        port: int,
        max_clients: int = 32,
        max_channels: int = 0,
        in_bandwidth: int = 0,
        out_bandwidth: int = 0,
        *,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
    ) -> None:
        """Listen on ``port`` for up to ``max_clients`` (Godot: same; like
        Godot 4 the channel limit is 255 whatever ``max_channels`` says; in
        Godot 3 mode ``max_channels`` (0 = 3) is the channel count). For DTLS,
        call ``host.dtls_server_setup(...)`` next."""
        self._require_closed()
        if not 1 <= _check_int(max_clients, "max_clients") <= 4095:
            raise errors.InvalidArgumentError("max_clients must be in 1 .. 4095")
        host = ENetConnection()
        channels = 0 if self._godot == 4 else self._g3_channels(max_channels)
        host.create_host_bound(
            self._bind_ip, port, max_clients, channels, in_bandwidth, out_bandwidth,
            max_packet_size=max_packet_size,
        )  # fmt: skip
        self._host, self._unique_id, self._server = host, 1, True
        self._channel_count = channels or 255
        self._status = self.ConnectionStatus.CONNECTION_CONNECTED

    def create_client(
        self,
        address: str,
        port: int,
        channel_count: int = 0,
        in_bandwidth: int = 0,
        out_bandwidth: int = 0,
        local_port: int = 0,
        *,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
    ) -> None:
        """Connect to a server (Godot: same). Godot 4: requests
        ``channel_count + 2`` channels (255 if 0) with the unique id as CONNECT
        data; Godot 3: ``channel_count`` (0 = 3). For DTLS, call
        ``host.dtls_client_setup(hostname, options)`` before the first poll."""
        self._require_closed()
        host = ENetConnection()
        host.create_host_bound(
            "*", local_port, 1, 0, in_bandwidth, out_bandwidth, max_packet_size=max_packet_size
        )
        if self._godot == 4:
            channels = channel_count + 2 if _check_int(channel_count, "channel_count") > 0 else 255
        else:
            channels = self._g3_channels(channel_count)
        self._unique_id = self.generate_unique_id()
        self._host, self._server = host, False
        self._channel_count = channels
        self._status = self.ConnectionStatus.CONNECTION_CONNECTING
        self._pending_connect = (address, port, channels)

    @staticmethod
    def _g3_channels(count: int) -> int:
        count = _check_int(count, "channel_count") or 3
        if not 3 <= count <= 255:
            raise errors.InvalidArgumentError("Godot 3 mode needs 3 .. 255 channels")
        return count

    def _require_closed(self) -> None:
        if self._host is not None:
            raise errors.StateError("the multiplayer peer is active (close it first)")

    @property
    def host(self) -> ENetConnection:
        """The ENetConnection underneath (``dtls_server_setup`` /
        ``dtls_client_setup`` go through it; Godot: same)."""
        if self._host is None:
            raise errors.StateError("no host: create_server or create_client first")
        return self._host

    @staticmethod
    def generate_unique_id() -> int:
        """A random id in 2 .. 2**31-1 (Godot: same range)."""
        return 2 + secrets.randbelow(_ID_LIMIT - 2)

    def get_unique_id(self) -> int:
        """This side's peer id: 1 for a server, the client's random id (Godot: same)."""
        return self._unique_id

    def is_server(self) -> bool:
        """True after ``create_server``."""
        return self._server

    def get_connection_status(self) -> ENetMultiplayerPeer.ConnectionStatus:
        """CONNECTION_DISCONNECTED / CONNECTING / CONNECTED (Godot values)."""
        return self._status

    def get_peer(self, peer_id: int) -> ENetPacketPeer:
        """The ENet peer of ``peer_id`` (Godot: same; KeyError-free:
        InvalidArgumentError for an unknown id)."""
        peer = self._peers.get(peer_id)
        if peer is None:
            raise errors.InvalidArgumentError(f"no peer {peer_id}")
        return peer

    # -- refusal, target -------------------------------------------------------------------

    @property
    def refuse_new_connections(self) -> bool:
        """Reset new clients at CONNECT (Godot: same property)."""
        return self._refuse

    @refuse_new_connections.setter
    def refuse_new_connections(self, refuse: bool) -> None:
        """Reset new clients at CONNECT; a DTLS server also admits no new
        handshake (Godot: same)."""
        self._refuse = bool(refuse)
        if self._host is not None:
            self._host.refuse_new_connections(self._refuse)

    def set_target_peer(self, peer_id: int) -> None:
        """0 all, n one peer, -n all but n (Godot: same)."""
        self._target = _check_int(peer_id, "peer_id")

    # -- the tick ---------------------------------------------------------------------------

    def poll(self) -> None:
        """Run the host once (one native call per round) and dispatch
        connects, disconnects and packets (Godot: same)."""
        host = self._host
        if host is None:
            return
        if not self._server and self._status == self.ConnectionStatus.CONNECTION_CONNECTING:
            pending = self._pending_connect
            if pending is not None:
                self._pending_connect = None
                address, port, channels = pending
                self._server_peer = host.connect_to_host(address, port, channels, self._unique_id)
        for _ in range(64):  # bounded: one native call each; stop when quiet
            events = host.service_batch(0)
            for ev in events:
                self._dispatch(ev)
            if not events or self._host is None:
                break

    def _dispatch(self, ev: Any) -> None:
        kind = ev.type
        if kind == ENetConnection.EventType.EVENT_CONNECT:
            self._on_connect(ev.peer, ev.data)
        elif kind == ENetConnection.EventType.EVENT_DISCONNECT:
            self._on_disconnect(ev.peer)
        elif kind == ENetConnection.EventType.EVENT_RECEIVE:
            sender = self._ids.get(id(ev.peer))
            if sender is None:
                return  # a peer we reset (refused, bad id): Godot drops it too
            if self._godot == 3:
                self._g3_receive(sender, ev)
                return
            mode = self._mode_of(ev.flags)
            channel = ev.channel - 1 if ev.channel >= 2 else 0
            self._queue.append((sender, ev.packet, channel, mode))

    def _mode_of(self, flags: int) -> int:
        if flags & _RELIABLE:
            return self.TransferMode.TRANSFER_MODE_RELIABLE
        if flags & _UNSEQUENCED:
            return self.TransferMode.TRANSFER_MODE_UNRELIABLE
        return self.TransferMode.TRANSFER_MODE_UNRELIABLE_ORDERED

    def _on_connect(self, peer: ENetPacketPeer, data: int) -> None:
        if not self._server:
            self._status = self.ConnectionStatus.CONNECTION_CONNECTED
            self._peers[1] = peer
            self._ids[id(peer)] = 1
            self.peer_connected.emit(1)
            return
        if self._refuse or data < 2 or data >= _ID_LIMIT or data in self._peers:
            try:
                peer.reset()  # silent, as Godot: the client times out
            except errors.StateError:
                pass  # already ended later in this batch
            return
        self._peers[data] = peer
        self._ids[id(peer)] = data
        if self._godot == 3 and self.server_relay:
            for other_id, other in self._peers.items():
                if other_id != data:
                    self._g3_sysmsg(other, _G3_ADD_PEER, data)
                    self._g3_sysmsg(peer, _G3_ADD_PEER, other_id)
        self.peer_connected.emit(data)

    def _on_disconnect(self, peer: Optional[ENetPacketPeer]) -> None:
        if peer is None:
            return
        peer_id = self._ids.pop(id(peer), None)
        if peer_id is None:
            if not self._server and peer is self._server_peer:
                self.close()  # never connected: Godot closes (connection_failed)
            return
        self._peers.pop(peer_id, None)
        if self._server:
            if self._godot == 3 and self.server_relay:
                for other in self._peers.values():
                    self._g3_sysmsg(other, _G3_REMOVE_PEER, peer_id)
            self.peer_disconnected.emit(peer_id)
        else:
            self.peer_disconnected.emit(1)
            self.close()

    # -- packets ----------------------------------------------------------------------------

    def get_available_packet_count(self) -> int:
        """Packets received from every peer and not yet read."""
        return len(self._queue)

    def get_packet(self) -> bytes:
        """The oldest received packet; :meth:`get_packet_peer`,
        :meth:`get_packet_channel` and :meth:`get_packet_mode` describe it
        before this call. WouldBlockError when none is queued (Godot: an
        error and an empty array)."""
        if not self._queue:
            self._packet_error = errors.WouldBlockError("no packet queued")
            raise self._packet_error
        self._packet_error = None
        return self._queue.popleft()[1]

    def get_packet_peer(self) -> int:
        """Sender id of the next packet (0 if none; Godot: same)."""
        return self._queue[0][0] if self._queue else 0

    def get_packet_channel(self) -> int:
        """Script channel of the next packet (Godot 4: ENet 0 and 1 -> 0, n -> n-1)."""
        return self._queue[0][2] if self._queue else 0

    def get_packet_mode(self) -> ENetMultiplayerPeer.TransferMode:
        """The transfer mode of the next packet (RELIABLE when none is queued, as Godot)."""
        if not self._queue:
            return self.TransferMode.TRANSFER_MODE_RELIABLE
        return self.TransferMode(self._queue[0][3])

    def get_max_packet_size(self) -> int:
        """The largest packet the host accepts: its ``max_packet_size``
        (1 MiB by default; Godot: 2**24)."""
        return DEFAULT_MAX_PACKET_SIZE if self._host is None else self._host._payload_cap

    def _route(self) -> tuple[int, int]:
        mode = self.TransferMode(self.transfer_mode)
        channel = _check_int(self.transfer_channel, "transfer_channel")
        if self._godot == 3:
            if channel > 0:
                if channel >= self._channel_count:
                    raise errors.InvalidArgumentError("transfer_channel beyond the channel count")
                enet_channel = channel
            else:
                reliable = mode == self.TransferMode.TRANSFER_MODE_RELIABLE
                enet_channel = _G3_RELIABLE if reliable else _G3_UNRELIABLE
            if mode == self.TransferMode.TRANSFER_MODE_RELIABLE:
                return enet_channel, _RELIABLE
            if mode == self.TransferMode.TRANSFER_MODE_UNRELIABLE and not self.always_ordered:
                return enet_channel, _UNSEQUENCED
            return enet_channel, 0
        if channel < 0 or channel > 253:
            raise errors.InvalidArgumentError("transfer_channel must be in 0 .. 253")
        if mode == self.TransferMode.TRANSFER_MODE_RELIABLE:
            return (channel + 1 if channel > 0 else 0), _RELIABLE
        flags = _FRAGMENT if mode == self.TransferMode.TRANSFER_MODE_UNRELIABLE_ORDERED else (
            _UNSEQUENCED | _FRAGMENT)  # fmt: skip
        return (channel + 1 if channel > 0 else 1), flags

    def put_packet(self, data: Any) -> None:
        """Send to ``set_target_peer``'s target with ``transfer_mode`` on
        ``transfer_channel`` (Godot: same routing; a client always sends to the
        server). InvalidArgumentError for an unknown target."""
        if self._status != self.ConnectionStatus.CONNECTION_CONNECTED or self._host is None:
            raise errors.StateError("not connected")
        payload = bytes(data)
        channel, flags = self._route()
        target = self._target
        if self._godot == 3:
            payload = _G3_HEADER.pack(self._unique_id, target) + payload
        if not self._server:
            known = self._g3_remote_peers
            if self._godot == 3 and target not in (0, 1) and abs(target) not in known:
                raise errors.InvalidArgumentError(f"invalid target peer {target}")
            self._peers[1].send(channel, payload, flags)
            return
        if target == 0:
            self._host.broadcast(channel, payload, flags)
        elif target < 0:
            if -target not in self._peers:
                raise errors.InvalidArgumentError(f"invalid target peer {target}")
            for peer_id, peer in self._peers.items():
                if peer_id != -target:
                    _send_quiet(peer, channel, payload, flags)
        else:
            one = self._peers.get(target)
            if one is None:
                raise errors.InvalidArgumentError(f"invalid target peer {target}")
            one.send(channel, payload, flags)

    # -- Godot 3 -------------------------------------------------------------------------------

    def _g3_sysmsg(self, peer: ENetPacketPeer, message: int, peer_id: int) -> None:
        _send_quiet(peer, _G3_CONFIG, _G3_SYSMSG.pack(message, peer_id), _RELIABLE)

    def _g3_receive(self, sender: int, ev: Any) -> None:
        data = ev.packet
        if ev.channel == _G3_CONFIG:
            if self._server or len(data) != _G3_SYSMSG.size:
                return  # a server receiving on the config channel drops it (Godot: same)
            message, peer_id = _G3_SYSMSG.unpack(data)
            known = self._g3_remote_peers
            if message == _G3_ADD_PEER:
                known.add(peer_id)
                self.peer_connected.emit(peer_id)
            elif message == _G3_REMOVE_PEER:
                known.discard(peer_id)
                self.peer_disconnected.emit(peer_id)
            return
        if len(data) < _G3_HEADER.size:
            return  # too short for the header: dropped (Godot: same)
        source, target = _G3_HEADER.unpack_from(data)
        mode = self._mode_of(ev.flags)
        if not self._server:
            self._queue.append((source, data[_G3_HEADER.size :], ev.channel, mode))
            return
        if source != sender:
            return  # forged source: dropped (Godot: same)
        deliver = target in (0, 1) or (target < 0 and target != -1)
        if target != 1 and self.server_relay:
            flags = ev.flags & (_RELIABLE | _UNSEQUENCED)
            for peer_id, peer in self._peers.items():
                if peer_id == sender:
                    continue
                if target == 0 or (target < 0 and peer_id != -target) or peer_id == target:
                    _send_quiet(peer, ev.channel, data, flags)
        elif target != 1:
            deliver = False  # relaying off: anything not for the server is dropped
        if deliver:
            self._queue.append((source, data[_G3_HEADER.size :], ev.channel, mode))

    # -- ending ----------------------------------------------------------------------------------

    def disconnect_peer(self, peer_id: int, force: bool = False) -> None:
        """Graceful ENet disconnect (data 0); ``peer_disconnected`` follows on a
        later poll. ``force``: drop now, no signal (Godot 4: same)."""
        peer = self.get_peer(peer_id)
        if not force:
            peer.peer_disconnect(0)
            self.host.flush()
            return
        self._peers.pop(peer_id, None)
        self._ids.pop(id(peer), None)
        peer.peer_disconnect_now(0)
        if not self._server:
            self.close()

    def close(self) -> None:
        """Disconnect every peer now (data 0; Godot 3: own id), flush and
        destroy the host; id back to 0, refusal cleared (Godot: same)."""
        host = self._host
        if host is None:
            return
        data = self._unique_id if self._godot == 3 and not self._server else 0
        for peer in list(self._peers.values()):
            if peer.is_active():
                try:
                    peer.peer_disconnect_now(data)
                except errors.StateError:
                    pass  # ENet ended it already
        host.destroy()
        self._reset()


# ---- SceneMultiplayer's raw-bytes framing (Godot 4) -------------------------------------------
#
# What Godot 4's SceneMultiplayer puts inside an ENetMultiplayerPeer packet for
# ``multiplayer.send_bytes`` and its peer bookkeeping (godot-wire.md §5, checked
# against the runtime in tests/interop/test_godot_enet.py). Only the low 3 bits
# of the first byte are the command. RPCs, spawns and syncs (commands 0-2, 4-6)
# are SceneMultiplayer internals Godot documents as unstable: not decoded here.

SCENE_CMD_RAW = 3
SCENE_CMD_SYS = 7
SCENE_SYS_AUTH, SCENE_SYS_ADD_PEER, SCENE_SYS_DEL_PEER, SCENE_SYS_RELAY = 0, 1, 2, 3
_SCENE_ID = struct.Struct("<i")


class ScenePacket(NamedTuple):
    """A decoded SceneMultiplayer packet: ``kind`` is ``"raw"`` (``data`` is
    what ``send_bytes`` got), ``"relay"`` (``peer`` = target when a client
    sent it, source when a server did; ``data`` = the inner packet),
    ``"add_peer"`` / ``"del_peer"`` (``peer``), ``"auth"`` (``data``), or
    ``"other"`` (RPC, spawn, sync...: ``data`` is the whole packet)."""

    kind: str
    peer: int
    data: bytes


def scene_raw(data: bytes) -> bytes:
    """``multiplayer.send_bytes(data)`` on the wire: ``03`` + data (data must
    not be empty: Godot refuses it)."""
    if not data:
        raise errors.InvalidArgumentError("send_bytes data must not be empty (Godot: same)")
    return b"\x03" + bytes(data)


def scene_relay(peer: int, inner: bytes) -> bytes:
    """A SYS RELAY packet: from a server, ``peer`` is the original source."""
    return bytes((SCENE_CMD_SYS, SCENE_SYS_RELAY)) + _SCENE_ID.pack(peer) + bytes(inner)


def scene_sys(command: int, peer: int) -> bytes:
    """ADD_PEER / DEL_PEER announcements (server -> clients)."""
    return bytes((SCENE_CMD_SYS, command)) + _SCENE_ID.pack(peer)


def parse_scene_packet(packet: bytes) -> ScenePacket:
    """Decode one packet with Godot's receive-side size rules; raises
    ``InvalidArgumentError`` for what Godot drops as malformed."""
    if not packet:
        raise errors.InvalidArgumentError("empty SceneMultiplayer packet")
    command = packet[0] & 7
    if command == SCENE_CMD_RAW:
        if len(packet) < 2:
            raise errors.InvalidArgumentError("RAW packet too small (Godot: same check)")
        return ScenePacket("raw", 0, bytes(packet[1:]))
    if command != SCENE_CMD_SYS:
        return ScenePacket("other", 0, bytes(packet))
    if len(packet) >= 2 and packet[1] == SCENE_SYS_AUTH:
        return ScenePacket("auth", 0, bytes(packet[2:]))
    if len(packet) < 6:
        raise errors.InvalidArgumentError("SYS packet shorter than 6 bytes (Godot: same check)")
    (peer,) = _SCENE_ID.unpack_from(packet, 2)
    sub = packet[1]
    if sub == SCENE_SYS_RELAY:
        if len(packet) < 7:
            raise errors.InvalidArgumentError("RELAY without an inner packet")
        return ScenePacket("relay", peer, bytes(packet[6:]))
    if sub in (SCENE_SYS_ADD_PEER, SCENE_SYS_DEL_PEER):
        return ScenePacket("add_peer" if sub == SCENE_SYS_ADD_PEER else "del_peer", peer, b"")
    raise errors.InvalidArgumentError(f"unknown SYS command {sub}")

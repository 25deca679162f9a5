"""ENet with Godot 3.2.3 (``godot3-server``, Debian's build on the system
libenet 1.3.17): our ``ENetMultiplayerPeer(godot=3)`` server against a real
``NetworkedMultiplayerENet`` client, and what ``use_dtls`` does there.

* ``enet_mp_client.gd``: connects, waits for the ADD_PEER of a raw peer we
  connected first, sends reliable and unreliable packets to the server and a
  broadcast; we echo what is for us, relay the broadcast to the raw peer
  (byte-identical, header included) and the Godot script checks the echoes.
* ``enet_dtls_ignored_server.gd``: a Godot 3 server with ``use_dtls = true``;
  our PLAIN ENet client connects to it, which shows that this build ignores
  ``use_dtls`` silently (``create_server`` returns OK): there is no DTLS in a
  Godot 3.2.3 built on the system libenet.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
from peers import PeerSet

from dtlspeer.enet import ENetConnection
from dtlspeer.enet_multiplayer import ENetMultiplayerPeer

pytestmark = pytest.mark.interop

SCRIPTS = Path(__file__).parent / "godot"
HEADER = struct.Struct("<Ii")
SYSMSG = struct.Struct("<II")
RAW_ID = 3003


def godot_argv(godot: str, script: str, **args: object) -> list[str]:
    return [godot, "--no-window", "-s", str(SCRIPTS / script),
            *(f"--{k}={v}" for k, v in args.items())]  # fmt: skip


def test_godot3_networked_multiplayer_client_to_our_godot3_server(
    peers: PeerSet, godot_bin: str
) -> None:
    server = ENetMultiplayerPeer(godot=3)
    server.set_bind_ip("127.0.0.1")
    server.create_server(0, 4)
    port = server.host.get_local_port()
    joined: list[int] = []
    left: list[int] = []
    server.peer_connected.connect(joined.append)
    server.peer_disconnected.connect(left.append)
    raw = ENetConnection()
    raw.create_host(1)
    raw.connect_to_host("127.0.0.1", port, 3, RAW_ID)
    raw_got: list[tuple[int, int, bytes]] = []
    local: list[tuple[int, bytes]] = []

    def pump() -> None:
        server.poll()
        for ev in raw.service_batch(0):
            if ev.type == ENetConnection.EventType.EVENT_RECEIVE:
                raw_got.append((ev.channel, ev.flags, ev.packet))
        while server.get_available_packet_count():
            sender, mode = server.get_packet_peer(), server.get_packet_mode()
            data = server.get_packet()
            local.append((sender, data))
            server.set_target_peer(sender)
            server.transfer_mode = mode
            server.put_packet(data)
        time.sleep(0.002)

    try:
        deadline = time.monotonic() + 10
        while joined != [RAW_ID] and time.monotonic() < deadline:
            pump()
        godot = peers.start("godot 3 ENet client",
                            godot_argv(godot_bin, "enet_mp_client.gd", port=port,
                                       timeout_ms=30_000),
                            env={"HOME": str(peers.workdir)})  # fmt: skip
        verdict = godot.expect(rb"^(PASS|FAIL)\b(.*)", pump=pump, timeout=60)
        assert verdict.group(1) == b"PASS", godot.transcript()
        godot_id = int(godot.find(rb"^ID (\d+)").group(1))  # type: ignore[union-attr]
        assert godot.find(rf"^PEERS \[1, {RAW_ID}\]".encode()), godot.transcript()
        assert joined == [RAW_ID, godot_id]
        assert sorted(local) == [(godot_id, b"b"), (godot_id, b"r"), (godot_id, b"u")]
        # The raw peer: ADD_PEER for the Godot client, then its broadcast relayed
        # byte for byte (header: source = Godot's id, target 0) on channel 1.
        assert (0, 1, SYSMSG.pack(0, godot_id)) in raw_got
        assert (1, 1, HEADER.pack(godot_id, 0) + b"b") in raw_got
        assert godot.wait(30) == 0
        deadline = time.monotonic() + 10
        while godot_id not in left and time.monotonic() < deadline:
            pump()
        assert left == [godot_id]
        # Its REMOVE_PEER reached the raw peer too.
        assert (0, 1, SYSMSG.pack(1, godot_id)) in raw_got
    finally:
        raw.destroy()
        server.close()


def test_debian_godot3_ignores_use_dtls(peers: PeerSet, godot_bin: str) -> None:
    def argv(port: int) -> list[str]:
        return godot_argv(godot_bin, "enet_dtls_ignored_server.gd", port=port, timeout_ms=8000)

    godot, port = peers.start_server("godot 3 use_dtls server", argv, ready=rb"^READY",
                                     env={"HOME": str(peers.workdir)})  # fmt: skip
    ready = godot.find(rb"^READY (\S+) (\S+)")
    assert ready is not None and ready.groups() == (b"0", b"True")  # OK, flag kept
    plain = ENetConnection()
    plain.create_host(1)
    try:
        plain.connect_to_host("127.0.0.1", port, 3, 4321)
        events: list[int] = []
        deadline = time.monotonic() + 10
        while ENetConnection.EventType.EVENT_CONNECT not in events and time.monotonic() < deadline:
            events += [ev.type for ev in plain.service_batch(5)]
        # A plain ENet client got through: the "DTLS" server speaks plain ENet.
        assert ENetConnection.EventType.EVENT_CONNECT in events
        godot.expect(rb"^CONNECTED 4321", pump=lambda: plain.service_batch(5), timeout=10)
    finally:
        plain.destroy()

"""ENet inside DTLS against Godot 4.8-dev (bundled ENet 1.3.18 with Godot's
socket patch, Mbed TLS 4.1.1), both roles, certificate and name checked.

* A Godot 4 ``ENetMultiplayerPeer`` client (``host.dtls_client_setup("localhost",
  TLSOptions.client(cert))``) against our ``ENetConnection`` DTLS server: every
  transfer mode, several script channels (ENet channel N+1), a 10 000-byte
  reliable packet; we echo each packet on its ENet channel with its flags and
  the Godot script checks mode and channel of every echo.
* Our ``ENetConnection`` DTLS client against a Godot 4 ``ENetConnection`` DTLS
  server that echoes: reliable, unsequenced, several channels, fragmented.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from conftest import godot4_env, godot4_project
from peers import free_udp_port

from dtlspeer import TLSOptions
from dtlspeer.enet import ENetConnection, ENetPacketPeer

HERE = Path(__file__).parent / "godot4"
RELIABLE = ENetPacketPeer.FLAG_RELIABLE
UNSEQUENCED = ENetPacketPeer.FLAG_UNSEQUENCED


def start_godot(binary: Path, tmp_path: Path, script: str, *args: str) -> subprocess.Popen[str]:
    project = godot4_project(tmp_path, HERE / script)
    return subprocess.Popen(
        [str(binary), "--headless", "--path", str(project), "--script", f"res://{script}",
         "--", *args],
        env=godot4_env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def start_godot_server(
    binary: Path, tmp_path: Path, script: str, cert: Any
) -> tuple[subprocess.Popen[str], int]:
    """A Godot server script on a free port, once it printed READY."""
    port = free_udp_port()
    proc = start_godot(binary, tmp_path, script, str(port), str(cert.key_path),
                       str(cert.cert_path))  # fmt: skip
    assert proc.stdout is not None
    banner: list[str] = []
    for _ in range(10):  # Godot's banner lines come first; READY once listening
        banner.append(proc.stdout.readline().strip())
        if banner[-1] == "READY":
            break
    assert banner[-1] == "READY", banner
    return proc, port


def finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def our_multiplayer_server(server_certs: dict[str, Any]) -> tuple[Any, Any]:
    """(cert, ENetMultiplayerPeer DTLS server on 127.0.0.1) with the test certificate."""
    from dtlspeer.enet_multiplayer import ENetMultiplayerPeer

    cert = server_certs["ecdsa-p256/ours"]
    key, x509 = cert.load()
    server = ENetMultiplayerPeer()
    server.set_bind_ip("127.0.0.1")
    server.create_server(0, 4)
    server.host.dtls_server_setup(TLSOptions.server(key, x509))
    return cert, server


def serve_until_exit(
    server: Any, proc: subprocess.Popen[str], on_packet: Callable[[int, int, int, bytes], bytes]
) -> tuple[str, str]:
    """Poll ``server`` until the Godot process exits (bounded); each packet
    goes to ``on_packet(sender, mode, channel, data)``, whose return value is
    sent back to the sender on the packet's own mode and channel."""
    deadline = time.monotonic() + 40
    while proc.poll() is None and time.monotonic() < deadline:
        server.poll()
        while server.get_available_packet_count():
            sender, mode = server.get_packet_peer(), server.get_packet_mode()
            channel = server.get_packet_channel()
            reply = on_packet(sender, mode, channel, server.get_packet())
            server.set_target_peer(sender)
            server.transfer_mode, server.transfer_channel = mode, channel
            server.put_packet(reply)
        time.sleep(0.002)
    return finish(proc)


def test_godot4_enet_multiplayer_dtls_client_to_our_server(
    godot4: Path,
    tmp_path: Path,
    server_certs: dict[str, Any],
) -> None:
    cert = server_certs["ecdsa-p256/ours"]
    key, x509 = cert.load()
    server = ENetConnection()
    server.create_host_bound("127.0.0.1", 0, 4)
    server.dtls_server_setup(TLSOptions.server(key, x509))
    proc = start_godot(godot4, tmp_path, "enet_dtls_client.gd",
                       str(server.get_local_port()), str(cert.cert_path))  # fmt: skip
    events: list[Any] = []
    try:
        deadline = time.monotonic() + 40
        while proc.poll() is None and time.monotonic() < deadline:
            for ev in server.service_batch(5):
                events.append(ev)
                if ev.type == ENetConnection.EventType.EVENT_RECEIVE:
                    ev.peer.send(ev.channel, ev.packet, ev.flags)
        out, err = finish(proc)
    finally:
        server.destroy()
    assert proc.returncode == 0 and "PASS 6" in out, out + err
    connects = [ev for ev in events if ev.type == ENetConnection.EventType.EVENT_CONNECT]
    assert len(connects) == 1 and connects[0].data >= 2  # the client's unique id
    got = {(ev.channel, ev.flags, ev.packet[:16]) for ev in events if ev.type == 3}
    # Godot 4's mapping: reliable -> ENet 0 (flag 1), unreliable -> ENet 1
    # (unsequenced, flag 2), ordered -> ENet 1 (flag 0), script channel N -> N+1.
    assert (0, RELIABLE, b"reliable") in got
    assert (1, UNSEQUENCED, b"unreliable") in got
    assert (1, 0, b"ordered") in got
    assert (4, RELIABLE, b"reliable-ch3") in got
    assert (3, UNSEQUENCED, b"unreliable-ch2") in got
    assert any(ch == 2 and flags == RELIABLE for ch, flags, _ in got)  # the 10 000 bytes


def test_our_enet_dtls_client_to_godot4_server(
    godot4: Path,
    tmp_path: Path,
    server_certs: dict[str, Any],
) -> None:
    cert = server_certs["ecdsa-p256/ours"]
    _, x509 = cert.load()
    proc, port = start_godot_server(godot4, tmp_path, "enet_dtls_server.gd", cert)
    client = ENetConnection()
    client.create_host(1)
    client.dtls_client_setup("localhost", TLSOptions.client(x509))
    peer = client.connect_to_host("127.0.0.1", port, 4, 4242)
    big = bytes(i % 251 for i in range(10_000))
    sends = [(0, RELIABLE, b"R-reliable"), (1, UNSEQUENCED, b"u-unseq"), (3, RELIABLE, big),
             (2, UNSEQUENCED, b"u-ch2")]  # fmt: skip
    echoes: list[tuple[int, int, bytes]] = []
    try:
        deadline = time.monotonic() + 30
        while len(echoes) < len(sends) and time.monotonic() < deadline:
            for ev in client.service_batch(5):
                if ev.type == ENetConnection.EventType.EVENT_CONNECT:
                    status = peer.get_dtls_status()
                    assert status is not None and status["status"] == 2
                    for channel, flags, data in sends:
                        peer.send(channel, data, flags)
                elif ev.type == ENetConnection.EventType.EVENT_RECEIVE:
                    echoes.append((ev.channel, ev.flags, ev.packet))
        assert sorted(echoes) == sorted(sends)
        peer.peer_disconnect(7)
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            client.service_batch(5)
        out, err = finish(proc)
    finally:
        client.destroy()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "CONNECT 4242" in out and "PASS 4 data=7" in out, out + err


# ---- ENetMultiplayerPeer <-> ENetMultiplayerPeer, DTLS, every transfer mode ----------

MP_SENDS = [  # (transfer mode, script channel, payload)
    (2, 0, b"reliable"),
    (0, 0, b"unreliable"),
    (1, 0, b"ordered"),
    (2, 3, b"reliable-ch3"),
    (0, 2, b"unreliable-ch2"),
    (1, 1, b"ordered-ch1"),
    (2, 1, bytes(i % 251 for i in range(10_000))),
]


def test_godot4_multiplayer_client_to_our_multiplayer_server(
    godot4: Path,
    tmp_path: Path,
    server_certs: dict[str, Any],
) -> None:
    """The Godot 4 ENetMultiplayerPeer DTLS client of the first test, against
    our ENetMultiplayerPeer: every packet is echoed with get_packet_mode and
    get_packet_channel, which the Godot script checks against what it sent."""
    cert, server = our_multiplayer_server(server_certs)
    joined: list[int] = []
    left: list[int] = []
    server.peer_connected.connect(joined.append)
    server.peer_disconnected.connect(left.append)
    seen: list[tuple[int, int, int]] = []

    def echo(sender: int, mode: int, channel: int, data: bytes) -> bytes:
        seen.append((sender, mode, channel))
        return data

    proc = start_godot(godot4, tmp_path, "enet_dtls_client.gd",
                       str(server.host.get_local_port()), str(cert.cert_path))  # fmt: skip
    try:
        out, err = serve_until_exit(server, proc, echo)
        deadline = time.monotonic() + 10
        while not left and time.monotonic() < deadline:
            server.poll()
            time.sleep(0.005)
    finally:
        server.close()
    assert proc.returncode == 0 and "PASS 6" in out, out + err
    assert len(joined) == 1 and joined[0] >= 2 and left == joined
    assert {(mode, channel) for _, mode, channel in seen} == {
        (2, 0), (0, 0), (1, 0), (2, 3), (0, 2), (2, 1)}  # fmt: skip
    assert {sender for sender, _, _ in seen} == set(joined)


def test_our_multiplayer_client_to_godot4_multiplayer_server(
    godot4: Path,
    tmp_path: Path,
    server_certs: dict[str, Any],
) -> None:
    from dtlspeer.enet_multiplayer import ENetMultiplayerPeer

    cert = server_certs["ecdsa-p256/ours"]
    _, x509 = cert.load()
    proc, port = start_godot_server(godot4, tmp_path, "enet_mp_server.gd", cert)
    client = ENetMultiplayerPeer()
    client.create_client("127.0.0.1", port, 4)
    client.host.dtls_client_setup("localhost", TLSOptions.client(x509))
    connected: list[int] = []
    client.peer_connected.connect(connected.append)
    echoes: list[tuple[int, int, int, bytes]] = []
    try:
        deadline = time.monotonic() + 30
        while not connected and time.monotonic() < deadline:
            client.poll()
            time.sleep(0.002)
        assert connected == [1]
        uid = client.get_unique_id()
        assert 2 <= uid < 2**31
        assert (
            client.get_connection_status()
            == ENetMultiplayerPeer.ConnectionStatus.CONNECTION_CONNECTED
        )
        client.set_target_peer(1)
        for mode, channel, data in MP_SENDS:
            client.transfer_mode, client.transfer_channel = mode, channel
            client.put_packet(data)
        while len(echoes) < len(MP_SENDS) and time.monotonic() < deadline:
            client.poll()
            while client.get_available_packet_count():
                echoes.append((client.get_packet_peer(), client.get_packet_mode(),
                               client.get_packet_channel(), client.get_packet()))  # fmt: skip
            time.sleep(0.002)
        client.close()
        out, err = finish(proc)
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert sorted(echoes) == sorted((1, m, c, d) for m, c, d in MP_SENDS)
    assert proc.returncode == 0 and f"CONNECTED {uid}" in out, out + err
    assert f"PASS {len(MP_SENDS)}" in out, out + err


# ---- SceneMultiplayer's send_bytes framing ---------------------------------------------------


def test_godot4_scene_multiplayer_send_bytes_framing(
    godot4: Path,
    tmp_path: Path,
    server_certs: dict[str, Any],
) -> None:
    """A Godot 4 client using the SceneTree's MultiplayerAPI over
    ENetMultiplayerPeer + DTLS: ``send_bytes("hello")`` arrives as a SYS RELAY
    to everyone wrapping ``03 hello``, ``send_bytes("direct", 1, UNRELIABLE, 2)``
    as a plain ``03 direct`` (unreliable, script channel 2); our replies in
    ``03`` framing come out of Godot's ``peer_packet(1, data)``."""
    from dtlspeer.enet_multiplayer import parse_scene_packet, scene_raw

    cert, server = our_multiplayer_server(server_certs)
    seen: list[tuple[Any, int, int]] = []

    def reply(sender: int, mode: int, channel: int, data: bytes) -> bytes:
        packet = parse_scene_packet(data)
        seen.append((packet, mode, channel))
        inner = parse_scene_packet(packet.data) if packet.kind == "relay" else packet
        return scene_raw(b"echo:" + inner.data)

    proc = start_godot(godot4, tmp_path, "scene_send_bytes_client.gd",
                       str(server.host.get_local_port()), str(cert.cert_path))  # fmt: skip
    try:
        out, err = serve_until_exit(server, proc, reply)
    finally:
        server.close()
    assert proc.returncode == 0 and "PASS 1:echo:direct,1:echo:hello" in out, out + err
    kinds = sorted((p.kind, p.peer, p.data, mode, channel) for p, mode, channel in seen)
    assert kinds == [
        ("raw", 0, b"direct", 0, 2),  # UNRELIABLE on script channel 2
        ("relay", 0, b"\x03hello", 2, 0),  # to everyone: wrapped, reliable, channel 0
    ], kinds

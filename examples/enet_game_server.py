"""A game server for Godot clients that use ``ENetMultiplayerPeer`` (Godot 4),
with ENet inside DTLS, written with dtlspeer's ``ENetMultiplayerPeer``.

The Godot 4 client::

    var peer := ENetMultiplayerPeer.new()
    peer.create_client("server.example", 7777)
    peer.host.dtls_client_setup("server.example", TLSOptions.client(cert))
    multiplayer.multiplayer_peer = peer   # then multiplayer.send_bytes(...)

Run it::

    python examples/enet_game_server.py --port 7777 --save-cert server.crt
    python examples/enet_game_server.py --port 7777 --plain      # no DTLS

Every packet a client sends is answered to that client on the same transfer
mode and channel, and every reliable packet is also relayed to the other
clients (Godot's channel mapping: reliable on ENet 0, unreliable on ENet 1,
script channel N on ENet N+1). ``SceneMultiplayer`` puts its own one-byte
command in front (``send_bytes`` -> ``03`` + data); this server treats
payloads as opaque bytes.

``--self-test`` starts the server on 127.0.0.1 and three dtlspeer
``ENetMultiplayerPeer`` clients over DTLS (certificate and name checked),
exchanges packets on every transfer mode and channel 0..2, checks every echo
and relay, and exits 0 within a few seconds.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import Any

from dtlspeer import Crypto, CryptoKey, TLSOptions, X509Certificate
from dtlspeer.enet_multiplayer import ENetMultiplayerPeer

MODES = ENetMultiplayerPeer.TransferMode


class GameServer:
    """ENetMultiplayerPeer server, polled once per tick."""

    def __init__(self, port: int, bind: str, options: TLSOptions | None, max_clients: int) -> None:
        self.peer = ENetMultiplayerPeer()
        self.peer.set_bind_ip(bind)
        self.peer.create_server(port, max_clients)
        if options is not None:
            self.peer.host.dtls_server_setup(options)
        self.players: set[int] = set()
        self.peer.peer_connected.connect(self.players.add)
        self.peer.peer_disconnected.connect(self.players.discard)
        self.echoed = 0
        self.relayed = 0

    @property
    def port(self) -> int:
        return self.peer.host.get_local_port()

    def tick(self) -> None:
        peer = self.peer
        peer.poll()
        while peer.get_available_packet_count():
            sender, mode = peer.get_packet_peer(), peer.get_packet_mode()
            channel = peer.get_packet_channel()
            data = peer.get_packet()
            peer.transfer_mode, peer.transfer_channel = mode, channel
            peer.set_target_peer(sender)
            peer.put_packet(data)  # echo to the sender
            self.echoed += 1
            if mode == MODES.TRANSFER_MODE_RELIABLE and len(self.players) > 1:
                peer.set_target_peer(-sender)  # everyone else
                peer.put_packet(data)
                self.relayed += 1

    def close(self) -> None:
        self.peer.close()


def throwaway_certificate() -> tuple[CryptoKey, X509Certificate]:
    crypto = Crypto()
    key = crypto.generate_ec("P-256")
    cert = crypto.generate_self_signed_certificate(
        key, "CN=localhost", "20240101000000", "20440101000000", dns_names=["localhost"]
    )
    return key, cert


def self_test() -> int:
    key, cert = throwaway_certificate()
    server = GameServer(0, "127.0.0.1", TLSOptions.server(key, cert), 8)
    clients: list[ENetMultiplayerPeer] = []
    try:
        for _ in range(3):
            client = ENetMultiplayerPeer()
            client.create_client("127.0.0.1", server.port, 3)
            client.host.dtls_client_setup("localhost", TLSOptions.client(cert))
            clients.append(client)

        def run(until: Any, seconds: float = 20.0) -> None:
            end = time.monotonic() + seconds
            while not until():
                if time.monotonic() > end:
                    raise SystemExit("FAIL: timed out")
                server.tick()
                for client in clients:
                    client.poll()
                time.sleep(0.002)

        connected = ENetMultiplayerPeer.ConnectionStatus.CONNECTION_CONNECTED
        run(lambda: len(server.players) == 3
            and all(c.get_connection_status() == connected for c in clients))  # fmt: skip
        sends = [(mode, channel) for mode in MODES for channel in (0, 1, 2)]
        for i, client in enumerate(clients):
            client.set_target_peer(1)
            for mode, channel in sends:
                client.transfer_mode, client.transfer_channel = mode, channel
                client.put_packet(f"{i}:{mode.name}:{channel}".encode())
        inbox: dict[int, list[tuple[int, int, int, bytes]]] = {i: [] for i in range(3)}
        reliable = sum(1 for mode, _ in sends if mode == MODES.TRANSFER_MODE_RELIABLE)
        want = len(sends) + 2 * reliable  # own echoes + the others' relayed reliable packets

        def drain() -> bool:
            for i, client in enumerate(clients):
                while client.get_available_packet_count():
                    inbox[i].append((client.get_packet_peer(), client.get_packet_mode(),
                                     client.get_packet_channel(), client.get_packet()))  # fmt: skip
            return all(len(v) >= want for v in inbox.values())

        run(drain)
        for i, got in inbox.items():
            echoes = sorted(g for g in got if g[3].startswith(f"{i}:".encode()))
            expected = sorted((1, m, c, f"{i}:{m.name}:{c}".encode()) for m, c in sends)
            if echoes != expected:
                raise SystemExit(f"FAIL: client {i} echoes {echoes}")
        print(f"PASS {server.echoed} echoes, {server.relayed} relayed, 3 DTLS clients")
        return 0
    finally:
        for client in clients:
            client.close()
        server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=7777)
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--max-clients", type=int, default=32)
    parser.add_argument("--plain", action="store_true", help="plain ENet, no DTLS")
    parser.add_argument("--save-cert", help="write the (throw-away) certificate here")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after N s (0: never)")
    parser.add_argument("--self-test", action="store_true", help="run the loopback self-test")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    options = None
    if not args.plain:
        key, cert = throwaway_certificate()
        if args.save_cert:
            cert.save(args.save_cert)
        options = TLSOptions.server(key, cert)
    server = GameServer(args.port, args.bind, options, args.max_clients)
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    print(f"ENet{' over DTLS' if options else ''} game server on {args.bind}:{server.port}",
          flush=True)  # fmt: skip
    end = time.monotonic() + args.duration if args.duration else None
    try:
        while not stop and (end is None or time.monotonic() < end):
            server.tick()
            time.sleep(0.005)
    finally:
        server.close()
    print(f"stopped: {server.echoed} echoes, {server.relayed} relayed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

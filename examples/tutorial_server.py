"""The tutorial's game server: Godot clients over DTLS, messages as Variants.

The documentation's end-to-end tutorial pairs this server with the Godot 4
project in ``examples/godot_tutorial/`` (``client.gd``; the same client for
Godot 3.2+ is ``examples/godot3_tutorial/``). Both sides speak Godot Variants
(``put_var``/``get_var``): each message is one Dictionary in one DTLS record.
The two Godot generations encode Variants differently; the server reads a
client's ``hello`` in Godot 4's format or, failing that, Godot 3's, and keeps
talking to that client in its format.

* client -> server ``{"type": "hello", "name": String}``: once, after the
  handshake; the server answers ``{"type": "welcome", "id": int,
  "tick_rate": int}``.
* client -> server ``{"type": "input", "seq": int, "move": Vector2}``: the
  direction the player wants to go (length at most 1), sent at the tick rate.
* server -> client ``{"type": "state", "tick": int, "players": {id:
  {"name": String, "pos": Vector2}}}``: every tick, to every player.

The server is authoritative: it moves players itself (``SPEED`` units per
second in the direction last asked for), clamps them to the arena, and never
trusts a message: bytes that are no Variant, a Variant of the wrong shape, a
non-finite or too long ``move``, an input before ``hello`` are counted and
ignored (``rejected``), never a crash.

Run it, then the Godot project (editor: open ``examples/godot_tutorial``,
press Play; headless: see the tutorial)::

    python examples/tutorial_server.py --save-cert examples/godot_tutorial/server.crt

``--self-test`` runs the server in a thread and two Python clients written
like ``client.gd`` (``PacketPeerUDP`` + ``PacketPeerDTLS``, ``put_var`` /
``get_var``; one in Godot 4's Variant format, one in Godot 3's) on
127.0.0.1, and exits 0 once both saw each other move.
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from dtlspeer import (
    Crypto,
    CryptoKey,
    DTLSHost,
    HostEventType,
    HostPeer,
    PacketPeerDTLS,
    PacketPeerUDP,
    TLSOptions,
    X509Certificate,
)
from dtlspeer.errors import VariantDecodeError
from dtlspeer.variant import Vector2

SPEED = 4.0  # arena units per second
ARENA = 50.0  # positions stay within [-ARENA, ARENA] on both axes
MAX_NAME = 16


@dataclass
class Player:
    player_id: int
    name: str
    x: float = 0.0
    y: float = 0.0
    move: tuple[float, float] = (0.0, 0.0)
    last_seq: int = 0
    godot: int = 4  # the Variant format of this client (4, or 3 for Godot 3.x)


def checked_move(value: Any) -> tuple[float, float] | None:
    """A client's ``move`` as a direction of length <= 1, or None when it is
    not a finite Vector2."""
    if not isinstance(value, Vector2) or not (math.isfinite(value.x) and math.isfinite(value.y)):
        return None
    length = math.hypot(value.x, value.y)
    if length > 1.0:
        return value.x / length, value.y / length
    return value.x, value.y


class TutorialServer:
    """The world, the players and the tick loop on one ``DTLSHost``."""

    def __init__(self, host: DTLSHost, tick_rate: int) -> None:
        self.host = host
        self.tick_rate = tick_rate
        self.tick = 0
        self.players: dict[HostPeer, Player] = {}
        self.next_id = 1
        self.rejected = 0

    def handle_events(self, timeout: float) -> None:
        """Everything that arrived (sleeps in C up to ``timeout`` seconds)."""
        for event in self.host.service(timeout):
            peer = event.peer
            if event.type == HostEventType.RECEIVE:
                decoded = self.decode(event.var, self.players.get(peer))
                if decoded is None or not self.handle_message(peer, *decoded):
                    self.rejected += 1
            elif event.type == HostEventType.DISCONNECT:
                gone = self.players.pop(peer, None)
                if gone is not None:
                    print(f"{gone.name} (id {gone.player_id}) left: {event.reason.name}",
                          flush=True)

    @staticmethod
    def decode(var: Any, player: Player | None) -> tuple[dict[Any, Any], int] | None:
        """A record (``var``: its event's decoder) as a Dictionary and the
        Variant format it was in: the player's, or before the hello, Godot 4's
        and then Godot 3's. None when it is no Dictionary in either."""
        for godot in (player.godot,) if player else (4, 3):
            try:
                message = var(godot=godot)  # never allow_objects for remote data
            except VariantDecodeError:
                continue
            if isinstance(message, dict):
                return message, godot
        return None

    def handle_message(self, peer: HostPeer, message: dict[Any, Any], godot: int) -> bool:
        """Apply one client message (in Variant format ``godot``); False when
        it is not a valid one."""
        kind = message.get("type")
        player = self.players.get(peer)
        if kind == "hello" and player is None:
            name = message.get("name")
            if not isinstance(name, str) or not name:
                return False
            player = Player(self.next_id, name[:MAX_NAME], godot=godot)
            self.next_id += 1
            self.players[peer] = player
            peer.put_var({"type": "welcome", "id": player.player_id, "tick_rate": self.tick_rate},
                         godot=godot)
            print(f"{player.name} (id {player.player_id}, Godot {godot} format) joined from "
                  f"{peer.get_peer_address()[0]}", flush=True)
            return True
        if kind == "input" and player is not None:
            seq, move = message.get("seq"), checked_move(message.get("move"))
            if not isinstance(seq, int) or move is None:
                return False
            if seq > player.last_seq:  # datagrams may arrive late: newest wins
                player.last_seq = seq
                player.move = move
            return True
        return False

    def step(self) -> None:
        """One tick: move every player, send everyone the new state."""
        self.tick += 1
        dt = 1.0 / self.tick_rate
        for p in self.players.values():
            p.x = min(ARENA, max(-ARENA, p.x + p.move[0] * SPEED * dt))
            p.y = min(ARENA, max(-ARENA, p.y + p.move[1] * SPEED * dt))
        state = {
            "type": "state",
            "tick": self.tick,
            "players": {p.player_id: {"name": p.name, "pos": Vector2(p.x, p.y)}
                        for p in self.players.values()},
        }
        for peer, player in self.players.items():
            peer.put_var(state, godot=player.godot)  # leaves with the next service()

    def run(self, stop: threading.Event, duration: float | None = None) -> None:
        """The fixed-rate loop: sleep in ``service()`` until the next tick."""
        interval = 1.0 / self.tick_rate
        start = time.monotonic()
        next_tick = start + interval
        while not stop.is_set() and (duration is None or time.monotonic() - start < duration):
            now = time.monotonic()
            if now >= next_tick:
                self.step()
                next_tick = max(next_tick + interval, now)  # never catch up in a burst
            self.handle_events(max(0.0, next_tick - time.monotonic()))


def throwaway_certificate() -> tuple[CryptoKey, X509Certificate]:
    """A P-256 key and a self-signed certificate for ``localhost``."""
    crypto = Crypto()
    key = crypto.generate_ec("P-256")
    cert = crypto.generate_self_signed_certificate(
        key, "CN=localhost,O=dtlspeer tutorial,C=IT", "20240101000000", "20440101000000",
        dns_names=["localhost"], ip_addresses=["127.0.0.1"],
    )
    return key, cert


class PythonClient:
    """What ``client.gd`` does, with dtlspeer's Godot-style classes, in the
    Variant format of Godot ``godot`` (4 or 3)."""

    def __init__(self, port: int, cert: X509Certificate, name: str, move: Vector2,
                 godot: int = 4) -> None:
        self.udp = PacketPeerUDP()
        self.udp.connect_to_host("127.0.0.1", port)
        self.dtls = PacketPeerDTLS()
        self.dtls.connect_to_peer(self.udp, "localhost", TLSOptions.client(cert))
        self.name, self.move, self.godot = name, move, godot
        self.said_hello = False
        self.my_id = -1
        self.seq = 0
        self.players: dict[int, Any] = {}

    def frame(self) -> None:
        self.dtls.poll()
        status = self.dtls.get_status()
        if status == PacketPeerDTLS.STATUS_HANDSHAKING:
            return
        if status != PacketPeerDTLS.STATUS_CONNECTED:
            raise RuntimeError(f"{self.name}: {self.dtls.get_last_error()}")
        if not self.said_hello:
            self.dtls.put_var({"type": "hello", "name": self.name}, godot=self.godot)
            self.said_hello = True
        while self.dtls.get_available_packet_count() > 0:
            message = self.dtls.get_var(godot=self.godot)
            if message.get("type") == "welcome":
                self.my_id = message["id"]
            elif message.get("type") == "state":
                self.players = message["players"]
                if self.my_id >= 0:
                    self.seq += 1  # one input per state received: the tick rate
                    self.dtls.put_var({"type": "input", "seq": self.seq, "move": self.move},
                                      godot=self.godot)


def self_test() -> int:
    key, cert = throwaway_certificate()
    host = DTLSHost("127.0.0.1", 0, server_options=TLSOptions.server(key, cert))
    server = TutorialServer(host, tick_rate=30)
    stop = threading.Event()
    thread = threading.Thread(target=server.run, args=(stop,))  # the host belongs to it
    thread.start()
    clients = [PythonClient(host.get_local_port(), cert, "ada", Vector2(1, 0)),
               PythonClient(host.get_local_port(), cert, "bob", Vector2(0, -2), godot=3)]

    def moved(client: PythonClient, other: PythonClient) -> bool:
        me, them = client.players.get(client.my_id), client.players.get(other.my_id)
        return (me is not None and them is not None and them["name"] == other.name
                and (abs(me["pos"].x) >= 1 or abs(me["pos"].y) >= 1)
                and (abs(them["pos"].x) >= 1 or abs(them["pos"].y) >= 1))

    deadline = time.monotonic() + 20
    try:
        while not (moved(clients[0], clients[1]) and moved(clients[1], clients[0])):
            if time.monotonic() > deadline:
                print(f"FAIL timeout: {[c.players for c in clients]}")
                return 1
            for client in clients:
                client.frame()
            time.sleep(0.002)
        ada = clients[0].players[clients[0].my_id]["pos"]
        bob = clients[0].players[clients[1].my_id]["pos"]
        # The server, not the client, decides: bob asked for a length-2 move
        # and got a unit one; nobody moved sideways.
        assert ada.x > 0 and ada.y == 0 and bob.x == 0 and bob.y < 0, (ada, bob)
        print(f"PASS 2 players moved (ada {ada.x:.2f},{ada.y:.2f}; bob {bob.x:.2f},{bob.y:.2f}) "
              f"at tick {server.tick}, {server.rejected} messages rejected")
        return 0
    finally:
        for client in clients:
            client.dtls.disconnect_from_peer()
        stop.set()
        thread.join(10)
        host.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--port", type=int, default=4433, help="UDP port (default 4433)")
    parser.add_argument("--bind", default="*", help="local address (default *: all)")
    parser.add_argument("--tick-rate", type=int, default=20, help="ticks per second (20)")
    parser.add_argument("--cert", help="certificate chain (default: a throwaway one)")
    parser.add_argument("--key", help="private key of --cert")
    parser.add_argument("--save-cert", metavar="PATH",
                        help="write the throwaway certificate (the Godot client trusts it)")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--self-test", action="store_true",
                        help="run the server and two Python clients on 127.0.0.1, check, exit")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    if bool(args.cert) != bool(args.key):
        parser.error("--cert and --key go together")
    if not 1 <= args.tick_rate <= 1000:
        parser.error("--tick-rate must be within 1 .. 1000")
    if args.cert:
        key, cert = CryptoKey(), X509Certificate()
        key.load(args.key)
        cert.load(args.cert)
    else:
        key, cert = throwaway_certificate()
        if args.save_cert:
            cert.save(args.save_cert)
    with DTLSHost(args.bind, args.port, server_options=TLSOptions.server(key, cert)) as host:
        print(f"listening on port {host.get_local_port()}, {args.tick_rate} ticks/s", flush=True)
        server = TutorialServer(host, args.tick_rate)
        try:
            server.run(threading.Event(), args.duration)
        except KeyboardInterrupt:
            pass
        print(f"stopped at tick {server.tick}; {server.rejected} messages rejected", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

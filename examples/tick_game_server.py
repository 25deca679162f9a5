"""An authoritative, tick-based game server on the batch host (DTLSHost).

The server owns the world. Clients send inputs; every tick (fixed rate,
default 30 Hz) the server applies the inputs that arrived, advances the
world and broadcasts its state to every connected player in one native
call (``DTLSHost.broadcast``: encrypted in C, sent in ``sendmmsg`` batches).
Between ticks ``DTLSHost.service(timeout)`` sleeps in C until a datagram
arrives or the next tick is due, so an idle server costs nothing.

Wire format (little-endian, one message per DTLS record):

* client -> server ``INPUT``: ``<BIbb`` type=1, sequence, dx, dy
* server -> client ``WELCOME``: ``<BH`` type=1, your player id
* server -> client ``WORLD``: ``<BIHH`` type=2, tick, total player count,
  index of this part's first player, then per player ``<HiiI`` id, x, y,
  last input sequence applied

Records are datagrams: an input can be lost, so clients send their inputs
with a sequence number and the world state tells them what was applied.
A record holds about 1160 bytes at the default MTU (81 players of 14
bytes), so a bigger world goes out as several WORLD parts per tick;
:class:`WorldAssembler` puts them back together (a tick whose parts did not
all arrive is simply superseded by the next one).

Every remote input is untrusted: records that are not a well-formed INPUT
are ignored, movement is clamped to the world's bounds, and player ids are
reused once free (they are 16-bit on the wire).

    python examples/tick_game_server.py --port 4433 --save-cert server.crt
    python examples/tick_game_server.py --self-test

``--self-test`` runs the server in a thread and four client hosts on
127.0.0.1, has each client send 10 inputs, checks that every client sees
every player at the position its inputs lead to, and exits 0.
"""

from __future__ import annotations

import argparse
import struct
import sys
import threading
import time
from dataclasses import dataclass

from dtlspeer import (
    Crypto,
    CryptoKey,
    DTLSHost,
    HostEventType,
    HostPeer,
    TLSOptions,
    X509Certificate,
)

INPUT = struct.Struct("<BIbb")
WELCOME = struct.Struct("<BH")
WORLD = struct.Struct("<BIHH")
PLAYER = struct.Struct("<HiiI")
MSG_INPUT = MSG_WELCOME = 1
MSG_WORLD = 2
MAX_PLAYER_ID = 0xFFFF  # ids are 16-bit on the wire; 0 means "none yet"
WORLD_BOUND = 1 << 24  # |x|, |y| never exceed it (positions are 32-bit on the wire)


def _clamp(value: int) -> int:
    return max(-WORLD_BOUND, min(WORLD_BOUND, value))


class WorldAssembler:
    """Client side: rebuilds a tick's world from its WORLD parts."""

    def __init__(self) -> None:
        self.tick = 0
        self.total = 0
        self.players: dict[int, tuple[int, int, int]] = {}

    @property
    def complete(self) -> bool:
        """True once every player of the newest tick arrived."""
        return self.tick > 0 and len(self.players) == self.total

    def feed(self, data: bytes) -> bool:
        """Take one record; True if it was a WORLD part of the newest tick."""
        if len(data) < WORLD.size or data[0] != MSG_WORLD:
            return False
        _, tick, total, _first = WORLD.unpack_from(data)
        if tick < self.tick:
            return False  # an old part arriving late
        if tick > self.tick:
            self.tick, self.total, self.players = tick, total, {}
        count = (len(data) - WORLD.size) // PLAYER.size
        for k in range(count):
            pid, x, y, seq = PLAYER.unpack_from(data, WORLD.size + k * PLAYER.size)
            self.players[pid] = (x, y, seq)
        return True


@dataclass
class Player:
    """Per-peer state, owned by the server."""

    player_id: int
    x: int = 0
    y: int = 0
    last_seq: int = 0
    pending: tuple[int, int] = (0, 0)  # movement received since the last tick


class GameServer:
    """The world and the tick loop."""

    def __init__(self, host: DTLSHost, tick_rate: float) -> None:
        self.host = host
        self.tick_interval = 1.0 / tick_rate
        self.tick = 0
        self.players: dict[HostPeer, Player] = {}
        self.next_id = 1
        self.ids_in_use: set[int] = set()
        # Largest WORLD part: the smallest record a connected peer accepts
        # from us (get_max_packet_size() depends on the MTU and the suite).
        self.record_budget = 16384

    def allocate_id(self) -> int:
        """A free player id in 1..65535 (ids of players who left are reused)."""
        if len(self.ids_in_use) >= MAX_PLAYER_ID:
            raise RuntimeError("no free player id")  # max_peers (4096) keeps us far below
        while self.next_id in self.ids_in_use or not 1 <= self.next_id <= MAX_PLAYER_ID:
            self.next_id = self.next_id % MAX_PLAYER_ID + 1
        player_id = self.next_id
        self.ids_in_use.add(player_id)
        self.next_id = player_id % MAX_PLAYER_ID + 1
        return player_id

    def handle_events(self, timeout: float) -> None:
        for event in self.host.service(timeout):
            peer = event.peer
            if event.type == HostEventType.CONNECT:
                player = Player(self.allocate_id())
                self.players[peer] = player
                self.record_budget = min(self.record_budget, peer.get_max_packet_size())
                peer.put_packet(WELCOME.pack(MSG_WELCOME, player.player_id))
                print(f"player {player.player_id} joined from {peer.get_peer_address()}",
                      flush=True)
            elif event.type == HostEventType.RECEIVE:
                player = self.players.get(peer)
                if player is None or len(event.data) != INPUT.size:
                    continue  # not a player (yet) or not an input: ignore, never crash
                kind, seq, dx, dy = INPUT.unpack(event.data)
                if kind == MSG_INPUT and seq > player.last_seq:  # newer input only
                    player.last_seq = seq
                    px, py = player.pending
                    player.pending = (px + dx, py + dy)
            elif event.type == HostEventType.DISCONNECT:
                gone = self.players.pop(peer, None)
                if gone is not None:
                    self.ids_in_use.discard(gone.player_id)
                    print(f"player {gone.player_id} left: {event.reason.name}", flush=True)

    def step(self) -> None:
        """One tick: apply inputs, broadcast the world (in as many WORLD
        parts as it needs)."""
        self.tick += 1
        for player in self.players.values():
            dx, dy = player.pending
            player.x = _clamp(player.x + dx)
            player.y = _clamp(player.y + dy)
            player.pending = (0, 0)
        entries = [PLAYER.pack(p.player_id, p.x, p.y, p.last_seq) for p in self.players.values()]
        per_part = max(1, (self.record_budget - WORLD.size) // PLAYER.size)
        total = len(entries)
        for first in range(0, max(total, 1), per_part):
            part = WORLD.pack(MSG_WORLD, self.tick, total, first)
            # Each part leaves with the next service() (or flush()).
            self.host.broadcast(part + b"".join(entries[first : first + per_part]))

    def run(self, stop: threading.Event, duration: float | None = None) -> None:
        """The fixed-rate loop: sleep in service() until the next tick."""
        start = time.monotonic()
        next_tick = start + self.tick_interval
        while not stop.is_set() and (duration is None or time.monotonic() - start < duration):
            now = time.monotonic()
            if now >= next_tick:
                self.step()
                next_tick += self.tick_interval
                if next_tick < now:  # fell behind (e.g. suspended): do not catch up in a burst
                    next_tick = now + self.tick_interval
            self.handle_events(max(0.0, next_tick - time.monotonic()))


def throwaway_certificate() -> tuple[CryptoKey, X509Certificate]:
    crypto = Crypto()
    key = crypto.generate_ec("P-256")
    cert = crypto.generate_self_signed_certificate(
        key, "CN=localhost,O=dtlspeer example,C=IT", "20240101000000", "20440101000000",
        dns_names=["localhost"], ip_addresses=["127.0.0.1"],
    )
    return key, cert


def self_test() -> int:
    key, cert = throwaway_certificate()
    server_host = DTLSHost("127.0.0.1", 0, server_options=TLSOptions.server(key, cert))
    game = GameServer(server_host, tick_rate=60)
    stop = threading.Event()
    thread = threading.Thread(target=game.run, args=(stop,))  # the host belongs to this thread
    thread.start()
    port = server_host.get_local_port()
    n_clients, n_inputs = 4, 10
    clients = [DTLSHost("127.0.0.1", 0, client_options=TLSOptions.client(cert))
               for _ in range(n_clients)]
    peers = [c.connect("127.0.0.1", port, hostname="localhost") for c in clients]
    my_id = [0] * n_clients
    sent = [0] * n_clients
    last_world: list[dict[int, tuple[int, int, int]]] = [{} for _ in clients]
    last_tick = [0] * n_clients
    assemblers = [WorldAssembler() for _ in clients]
    worlds_seen = [0] * n_clients

    def goal(i: int) -> tuple[int, int, int]:  # client i moves +1 x and +i y per input
        return n_inputs, n_inputs * i, n_inputs

    def done() -> bool:
        return all(
            len(last_world[i]) == n_clients and last_world[i].get(my_id[i]) == goal(i)
            for i in range(n_clients)
        )

    deadline = time.monotonic() + 20
    try:
        while not done():
            if time.monotonic() > deadline:
                print(f"FAIL timeout: ids {my_id} sent {sent} worlds {last_world}")
                return 1
            for i, (client, peer) in enumerate(zip(clients, peers)):
                for event in client.service(0.002):
                    if event.type == HostEventType.DISCONNECT:
                        print(f"FAIL client {i}: {event.message}")
                        return 1
                    if event.type != HostEventType.RECEIVE:
                        continue
                    data = event.data
                    if data[0] == MSG_WELCOME:
                        my_id[i] = WELCOME.unpack(data)[1]
                    elif assemblers[i].feed(data) and assemblers[i].complete:
                        tick = assemblers[i].tick
                        assert tick > last_tick[i], (tick, last_tick[i])  # loopback keeps order
                        last_tick[i] = tick
                        worlds_seen[i] += 1
                        last_world[i] = dict(assemblers[i].players)
                # One input per client per world update received: a steady stream.
                if my_id[i] and sent[i] < n_inputs and sent[i] < worlds_seen[i]:
                    sent[i] += 1
                    peer.put_packet(INPUT.pack(MSG_INPUT, sent[i], 1, i))
        for i in range(n_clients):
            assert sorted(last_world[i]) == sorted(my_id), (last_world[i], my_id)
        print(f"PASS {n_clients} players x {n_inputs} inputs; every client saw every "
              f"position; server tick {game.tick}")
        return 0
    finally:
        for client in clients:
            client.close()  # close_notify
        stop.set()
        thread.join(10)
        server_host.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=4433, help="UDP port (default 4433)")
    parser.add_argument("--bind", default="*", help="local address (default *: all)")
    parser.add_argument("--tick-rate", type=float, default=30.0, help="ticks per second (30)")
    parser.add_argument("--cert", help="certificate chain (default: a throwaway one)")
    parser.add_argument("--key", help="private key of --cert")
    parser.add_argument("--save-cert", metavar="PATH", help="write the throwaway certificate")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--self-test", action="store_true",
                        help="run the server and clients on 127.0.0.1, check, exit")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    if bool(args.cert) != bool(args.key):
        parser.error("--cert and --key go together")
    if args.cert:
        key, cert = CryptoKey(), X509Certificate()
        key.load(args.key)
        cert.load(args.cert)
    else:
        key, cert = throwaway_certificate()
        if args.save_cert:
            cert.save(args.save_cert)
    with DTLSHost(args.bind, args.port, server_options=TLSOptions.server(key, cert)) as host:
        print(f"listening on port {host.get_local_port()}, {args.tick_rate:g} ticks/s", flush=True)
        try:
            GameServer(host, args.tick_rate).run(threading.Event(), args.duration)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Hostile peers against every server we ship: the CLI ``serve``, the three
examples and an ``aio`` echo server. Each one gets oversized records (above
what it can send back, above the receive limit, up to 16 KiB), garbage
records (authentic records whose content is nonsense), garbage datagrams,
a flood of valid records and silent peers, and must keep serving honest
clients; every wait is bounded (udp_helpers.DEADLINE_S or an explicit
deadline), nothing asserts on durations."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import random
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from dtlspeer import (
    DTLSHost,
    DTLSSettings,
    HostEvent,
    HostEventType,
    HostPeer,
    PacketPeerDTLS,
    TLSOptions,
    aio,
)
from test_cli import PSK_ARGS, Server
from test_pylayer_hardening import LogRecords
from udp_helpers import until

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
pytestmark = pytest.mark.skipif(not EXAMPLES.is_dir(), reason="needs a source checkout")
# Records up to 16 KiB: an attacker sets no MTU.
BIG_SENDER = DTLSSettings(mtu=0, idle_timeout_ms=0)
OVERSIZED = (1200, 1300, 1392, 1393, 2000, 16384)
CLI_PSK = (PSK_ARGS[1].encode(), bytes.fromhex(PSK_ARGS[3]))

ClientFactory = Callable[[DTLSSettings], DTLSHost]


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Clients:
    """Client hosts of one server, serviced together with the server's ``pump``."""

    def __init__(self, port: int, factory: ClientFactory, hostname: str | None,
                 pump: Callable[[], None]) -> None:
        self.port, self.factory, self.hostname, self.pump = port, factory, hostname, pump
        self.hosts: list[DTLSHost] = []
        self.events: dict[DTLSHost, list[HostEvent]] = {}
        self.silent: set[DTLSHost] = set()

    def connect(self, settings: DTLSSettings | None = None) -> tuple[DTLSHost, HostPeer]:
        host = self.factory(settings or DTLSSettings())
        self.hosts.append(host)
        self.events[host] = []
        peer = host.connect("127.0.0.1", self.port, hostname=self.hostname)
        assert until(lambda: peer.get_status() == PacketPeerDTLS.STATUS_CONNECTED, self.step), (
            peer.get_last_error())
        return host, peer

    def step(self) -> None:
        self.pump()
        for host in self.hosts:
            if host not in self.silent and host.is_open():
                self.events[host].extend(host.service(0))

    def received(self, host: DTLSHost) -> list[bytes]:
        return [e.data for e in self.events[host] if e.type == HostEventType.RECEIVE]

    def close(self) -> None:
        for host in self.hosts:
            host.close()


def attack(clients: Clients) -> None:
    """Every kind of hostile input once; returns when it all was sent."""
    rng = random.Random(16)
    host, peer = clients.connect(BIG_SENDER)
    for size in OVERSIZED:
        peer.put_packet(bytes(rng.randrange(256) for _ in range(16)) * (size // 16))
        host.flush()
        clients.step()
    for _ in range(40):  # authentic records with nonsense content, 1..300 bytes
        peer.put_packet(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))))
    for i in range(400):  # a flood of small valid-looking records
        peer.put_packet(b"\x01" + bytes(6) if i % 2 else b"flood %d" % i)
        if i % 50 == 0:
            host.flush()
            clients.step()
    host.flush()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:  # garbage datagrams
        for _ in range(50):
            raw.sendto(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 1500))),
                       ("127.0.0.1", clients.port))
        raw.sendto(b"\x16\xfe\xfd" + bytes(60), ("127.0.0.1", clients.port))
    for _ in range(3):  # silent peers: connected, then never heard of again
        silent, _ = clients.connect()
        clients.silent.add(silent)
    end = time.monotonic() + 1.0  # let the server chew on it all
    while time.monotonic() < end:
        clients.step()
        time.sleep(0.002)


def echo_round(clients: Clients, honest: list[tuple[DTLSHost, HostPeer]], tag: bytes) -> None:
    """Each honest client gets its own records echoed."""
    for i, (_, peer) in enumerate(honest):
        for k in range(5):
            peer.put_packet(b"%s %d %d" % (tag, i, k))
    got = clients.received
    for i, (host, _) in enumerate(honest):
        want = [b"%s %d %d" % (tag, i, k) for k in range(5)]
        assert until(lambda h=host, w=want: all(x in got(h) for x in w), clients.step), (
            tag, i, got(host)[-10:])


# ---- the CLI -----------------------------------------------------------------------------------


@pytest.fixture
def cli_server(tmp_path: Path) -> Iterator[Server]:
    server = Server(*PSK_ARGS, cwd=tmp_path)
    yield server
    server.kill()


@pytest.mark.skipif(os.name != "posix", reason="stops serve with SIGINT")
def test_cli_serve_survives_hostile_peers(cli_server: Server) -> None:
    def factory(settings: DTLSSettings) -> DTLSHost:
        return DTLSHost("127.0.0.1", 0, client_psk=CLI_PSK, settings=settings)

    clients = Clients(cli_server.port, factory, None, lambda: None)
    try:
        honest = [clients.connect() for _ in range(2)]
        echo_round(clients, honest, b"before")
        attack(clients)
        assert cli_server.proc.poll() is None, cli_server.stderr()
        echo_round(clients, honest, b"after")
        late = clients.connect()  # and it still accepts newcomers
        echo_round(clients, [late], b"late")
    finally:
        clients.close()
    stats = cli_server.stop()
    assert re.search(r" [1-9]\d* not echoed", stats), stats  # 1200 .. 1392 bytes
    assert re.search(r" [1-9]\d* dropped \(larger than --max-receive-size\)", stats), stats


# ---- examples/godot_echo_server.py -------------------------------------------------------------


def test_godot_echo_server_example_survives_hostile_peers() -> None:
    example = load_example("godot_echo_server")
    key, cert = example.throwaway_certificate()
    server = example.EchoServer(key, cert, 0, "127.0.0.1")
    port = server.udp_server.get_local_port()

    def factory(settings: DTLSSettings) -> DTLSHost:
        return DTLSHost("127.0.0.1", 0, client_options=TLSOptions.client(cert), settings=settings)

    clients = Clients(port, factory, "localhost", server.step)
    try:
        honest = [clients.connect() for _ in range(2)]
        echo_round(clients, honest, b"before")
        attack(clients)
        echo_round(clients, honest, b"after")
        echo_round(clients, [clients.connect()], b"late")
        assert server.not_echoed >= 1  # the records it could not send back were counted
    finally:
        clients.close()
        server.stop()


# ---- examples/tick_game_server.py --------------------------------------------------------------


class TickClients(Clients):
    """Clients that reassemble the tick server's world snapshots."""

    def __init__(self, example: ModuleType, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.example = example
        self.worlds: dict[DTLSHost, object] = {}

    def step(self) -> None:
        super().step()
        for host in self.hosts:
            assembler = self.worlds.setdefault(host, self.example.WorldAssembler())
            for event in self.events[host]:
                if event.type == HostEventType.RECEIVE:
                    assembler.feed(event.data)  # type: ignore[attr-defined]
            self.events[host].clear()


def test_tick_game_server_example_survives_hostile_peers() -> None:
    example = load_example("tick_game_server")
    key, cert = example.throwaway_certificate()
    server_host = DTLSHost("127.0.0.1", 0, server_options=TLSOptions.server(key, cert))
    game = example.GameServer(server_host, tick_rate=1000)

    def pump() -> None:
        game.handle_events(0)
        game.step()

    def factory(settings: DTLSSettings) -> DTLSHost:
        return DTLSHost("127.0.0.1", 0, client_options=TLSOptions.client(cert), settings=settings)

    clients = TickClients(example, server_host.get_local_port(), factory, "localhost", pump)
    try:
        honest = [clients.connect() for _ in range(2)]
        attack(clients)
        # The world outgrows one record: 200 more players (as a big game
        # would have) must not stop the ticks; clients reassemble it.
        for _ in range(200):
            game.players[object()] = example.Player(game.allocate_id())
        # Movement is clamped: positions never outgrow their 32-bit field.
        game.players[object()] = example.Player(game.allocate_id(), x=2**31 - 1,
                                                pending=(127, -128))
        tick = game.tick
        assert until(lambda: all(
            clients.worlds[h].tick > tick and clients.worlds[h].complete  # type: ignore[attr-defined]
            for h, _ in honest), clients.step)
        for h, _ in honest:
            world = clients.worlds[h].players  # type: ignore[attr-defined]
            assert len(world) == len(game.players)
        # Player ids stay unique in 1..65535 however many joined before.
        game.next_id = 65535
        ids = {game.allocate_id() for _ in range(3)}
        assert len(ids) == 3 and all(1 <= i <= 65535 for i in ids)
        assert not ids & {p.player_id for p in game.players.values()}
        newcomer = clients.connect()
        assert until(lambda: clients.worlds[newcomer[0]].complete, clients.step)  # type: ignore[attr-defined]
    finally:
        clients.close()
        server_host.close()


# ---- examples/asyncio_chat_relay.py and aio ---------------------------------------------------


def in_thread(body: Callable[[], None]) -> threading.Thread:
    """Blocking clients run in a thread while the event loop serves."""
    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread


def test_asyncio_chat_relay_example_survives_hostile_peers() -> None:
    example = load_example("asyncio_chat_relay")
    key, cert = example.throwaway_certificate()
    errors_logged = LogRecords(logging.WARNING)
    logging.getLogger("dtlspeer").addHandler(errors_logged)

    async def main() -> None:
        relay = example.ChatRelay()
        relay.server = await aio.serve(relay.handler, "127.0.0.1", 0, TLSOptions.server(key, cert))
        port = relay.server.port
        outcome: list[BaseException] = []

        def body() -> None:  # blocking clients in a thread; the loop serves
            clients = Clients(
                port,
                lambda s: DTLSHost("127.0.0.1", 0, client_options=TLSOptions.client(cert),
                                   settings=s),
                "localhost", lambda: time.sleep(0.001))
            try:
                (_, pa), (hb, pb) = clients.connect(), clients.connect()
                pa.put_packet(b"ada")
                pb.put_packet(b"bob")
                assert until(lambda: len(relay.names) >= 2, clients.step)
                attack(clients)
                pa.put_packet(b"still here")
                assert until(lambda: b"ada: still here" in clients.received(hb), clients.step)
            except BaseException as exc:
                outcome.append(exc)
            finally:
                clients.close()

        async with relay.server:
            thread = in_thread(body)
            while thread.is_alive():
                await asyncio.sleep(0.01)
        if outcome:
            raise outcome[0]

    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        logging.getLogger("dtlspeer").removeHandler(errors_logged)
    assert errors_logged.records == [], [r.getMessage() for r in errors_logged.records]


def test_aio_echo_server_survives_hostile_peers_with_bounded_queues() -> None:
    """A handler that never reads its connection holds at most max_queue_bytes."""
    stalled: list[aio.Connection] = []

    async def handler(conn: aio.Connection) -> None:
        first = await conn.recv()
        if first == b"stall":
            stalled.append(conn)
            await conn.wait_closed()  # never reads again
            return
        await conn.send(first)
        async for packet in conn:
            if len(packet) <= conn.get_max_packet_size():
                await conn.send(packet)

    async def main() -> None:
        server = await aio.serve(handler, "127.0.0.1", 0, psk={CLI_PSK[0]: CLI_PSK[1]},
                                 max_queue_bytes=64 * 1024)
        outcome: list[BaseException] = []

        def body() -> None:
            clients = Clients(
                server.port,
                lambda s: DTLSHost("127.0.0.1", 0, client_psk=CLI_PSK, settings=s),
                None, lambda: time.sleep(0.001))
            try:
                honest = [clients.connect() for _ in range(2)]
                echo_round(clients, honest, b"before")
                host, peer = clients.connect()
                peer.put_packet(b"stall")
                for _ in range(300):  # 300 x 1000 bytes to a handler that stopped reading
                    peer.put_packet(bytes(1000))
                host.flush()
                attack(clients)
                echo_round(clients, honest, b"after")
            except BaseException as exc:
                outcome.append(exc)
            finally:
                clients.close()

        async with server:
            thread = in_thread(body)
            while thread.is_alive():
                await asyncio.sleep(0.01)
            assert stalled
            assert stalled[0].queued_bytes <= 64 * 1024
            assert stalled[0].dropped_packets > 0
        if outcome:
            raise outcome[0]

    asyncio.run(asyncio.wait_for(main(), 60))


"""ENet CPU cost in one process (issue 13), steadier than the runner's
two-process rates on a shared machine: pyenet (plain ENet C) against
dtlspeer's ENet, plain and inside DTLS, in interleaved rounds of the same run.

* ping-pong: CPU per reliable 100-byte round trip, both ends in this process;
* fan-in: the SERVER's CPU per reliable 100-byte message from 64 clients
  (only the server's service calls are timed).

Prints the medians and the ratio pyenet / dtlspeer (>= 1: dtlspeer costs
less). About 20-40 s.

    PYTHONPATH=$PWD/src python -m benchmarks.enet_cpu [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from .libs.pyenet_enet import _events as _pyenet_events

MSG = b"x" * 100
HOST = "127.0.0.1"


def _identity() -> tuple[Any, Any]:
    from dtlspeer import Crypto, TLSOptions

    crypto = Crypto()
    key = crypto.generate_ec("P-256")
    cert = crypto.generate_self_signed_certificate(
        key, "CN=localhost", "20240101000000", "20440101000000", dns_names=["localhost"]
    )
    return TLSOptions.server(key, cert), TLSOptions.client(cert)


class PyENet:
    name = "pyenet (plain)"

    def __init__(self, clients: int) -> None:
        import enet

        self.enet = enet
        self.server = enet.Host(enet.Address(HOST.encode(), 0), clients + 4, 2, 0, 0)
        self.clients = [enet.Host(None, 1, 2, 0, 0) for _ in range(clients)]
        port = self.server.address.port
        self.peers = [c.connect(enet.Address(HOST.encode(), port), 2, 0) for c in self.clients]
        connected = 0
        while connected < clients:
            connected += sum(e.type == enet.EVENT_TYPE_CONNECT for e in self.server_events())
            for c in self.clients:
                _pyenet_events(c)

    def server_events(self, timeout_ms: int = 0) -> list[Any]:
        return _pyenet_events(self.server, timeout_ms)

    def send(self, i: int) -> None:
        self.peers[i].send(0, self.enet.Packet(MSG, self.enet.PACKET_FLAG_RELIABLE))
        self.clients[i].flush()

    def client_events(self, i: int) -> list[Any]:
        return _pyenet_events(self.clients[i])

    def is_receive(self, ev: Any) -> bool:
        return bool(ev.type == self.enet.EVENT_TYPE_RECEIVE)

    def echo(self, ev: Any) -> None:
        ev.peer.send(0, self.enet.Packet(ev.packet.data, self.enet.PACKET_FLAG_RELIABLE))
        self.server.flush()


class Ours:
    def __init__(self, clients: int, dtls: bool) -> None:
        from dtlspeer.enet import ENetConnection

        self.name = "dtlspeer ENet over DTLS" if dtls else "dtlspeer ENet (plain)"
        server_options, client_options = _identity()
        self.server = ENetConnection()
        self.server.create_host_bound(HOST, 0, clients + 4, 2)
        if dtls:
            self.server.dtls_server_setup(server_options)
        self.clients, self.peers = [], []
        for _ in range(clients):
            c = ENetConnection()
            c.create_host_bound(HOST, 0, 1, 2)
            if dtls:
                c.dtls_client_setup("localhost", client_options)
            self.peers.append(c.connect_to_host(HOST, self.server.get_local_port(), 2, 0))
            self.clients.append(c)
        connected = 0
        while connected < clients:
            connected += sum(e.type == 1 for e in self.server_events())
            for c in self.clients:
                c.service_batch(0)

    def server_events(self, timeout_ms: int = 0) -> list[Any]:
        return self.server.service_batch(timeout_ms)  # type: ignore[no-any-return]

    def send(self, i: int) -> None:
        self.peers[i].send(0, MSG, 1)
        self.clients[i].flush()

    def client_events(self, i: int) -> list[Any]:
        return self.clients[i].service_batch(0)  # type: ignore[no-any-return]

    def is_receive(self, ev: Any) -> bool:
        return bool(ev.type == 3)

    def echo(self, ev: Any) -> None:
        ev.peer.send(0, ev.packet, 1)
        self.server.flush()

    def close(self) -> None:
        for c in self.clients:
            c.destroy()
        self.server.destroy()


def pingpong_us(impl: Any, trips: int) -> float:
    t0 = time.process_time()
    for _ in range(trips):
        impl.send(0)
        got = False
        while not got:
            for ev in impl.server_events():
                if impl.is_receive(ev):
                    impl.echo(ev)
            got = any(impl.is_receive(e) for e in impl.client_events(0))
    return (time.process_time() - t0) / trips * 1e6


def fanin_server_us(impl: Any, clients: int, rounds: int) -> float:
    got = 0
    spent = 0.0
    for _ in range(rounds):
        for i in range(clients):
            impl.send(i)
        t = time.process_time()
        got += sum(impl.is_receive(e) for e in impl.server_events())
        spent += time.process_time() - t
        for i in range(clients):
            impl.client_events(i)
    deadline = time.monotonic() + 10
    while got < clients * rounds and time.monotonic() < deadline:
        t = time.process_time()
        got += sum(impl.is_receive(e) for e in impl.server_events(5))
        spent += time.process_time() - t
        for i in range(clients):
            impl.client_events(i)
    return spent / max(1, got) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trips", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=64)
    args = parser.parse_args()
    makers: list[tuple[str, Callable[[int], Any]]] = [
        ("pyenet", lambda n: PyENet(n)),
        ("plain", lambda n: Ours(n, False)),
        ("dtls", lambda n: Ours(n, True)),
    ]
    results: dict[str, dict[str, list[float]]] = {k: {"pp": [], "fanin": []} for k, _ in makers}
    names = {}
    for _ in range(args.rounds):
        for key, make in makers:
            impl = make(1)
            names[key] = impl.name
            results[key]["pp"].append(pingpong_us(impl, args.trips))
            if hasattr(impl, "close"):
                impl.close()
            impl = make(args.clients)
            results[key]["fanin"].append(fanin_server_us(impl, args.clients, 100))
            if hasattr(impl, "close"):
                impl.close()
    base = {m: statistics.median(results["pyenet"][m]) for m in ("pp", "fanin")}
    print(f"{'':28} {'ping-pong us/rt':>16} {'ratio':>6} {'fan-in server us/msg':>21} {'ratio':>6}")
    for key, _ in makers:
        pp = statistics.median(results[key]["pp"])
        fi = statistics.median(results[key]["fanin"])
        print(f"{names[key]:28} {pp:16.1f} {base['pp'] / pp:6.2f} {fi:21.2f} "
              f"{base['fanin'] / fi:6.2f}")  # fmt: skip


if __name__ == "__main__":
    main()

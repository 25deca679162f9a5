"""A chat relay on asyncio (``dtlspeer.aio``): every message a client sends
is relayed to every other connected client as ``"<name>: <text>"``.

The first record a client sends is its name; each later record is a chat
line. One handler task per connection; ``Server.broadcast`` encrypts the
relayed line for every other client in one native call.

    python examples/asyncio_chat_relay.py --port 4433 --save-cert server.crt
    python examples/asyncio_chat_relay.py --self-test

``--self-test`` starts the relay and three ``aio.connect`` clients on
127.0.0.1, has each say one line, checks that the two others received it
(and the sender did not), and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from dtlspeer import Crypto, CryptoKey, TLSOptions, X509Certificate, aio


class ChatRelay:
    def __init__(self) -> None:
        self.server: aio.Server | None = None
        self.names: dict[aio.Connection, str] = {}

    def relay(self, text: bytes, exclude: list[aio.Connection]) -> None:
        """Broadcast ``text``, cut to the smallest record a recipient takes:
        a client may send lines up to the receive limit (1392 bytes by
        default), more than one record we send holds (~1160 bytes)."""
        assert self.server is not None
        sizes = [c.get_max_packet_size() for c in self.server.connections]
        limit = min((n for n in sizes if n > 0), default=0)
        if limit:
            self.server.broadcast(text[:limit], exclude=exclude)

    async def handler(self, conn: aio.Connection) -> None:
        assert self.server is not None
        name = (await conn.recv()).decode("utf-8", "replace")[:32]
        self.names[conn] = name
        self.relay(f"* {name} joined".encode(), exclude=[conn])
        try:
            async for line in conn:  # ends when the client sends close_notify
                text = f"{name}: {line.decode('utf-8', 'replace')}".encode()
                # Broadcast only to clients that said their name (exclude the rest).
                others = [c for c in self.server.connections if c not in self.names]
                self.relay(text, exclude=[conn, *others])
        finally:
            del self.names[conn]
            if self.server.is_serving():
                self.relay(f"* {name} left".encode(), exclude=[])


def throwaway_certificate() -> tuple[CryptoKey, X509Certificate]:
    crypto = Crypto()
    key = crypto.generate_ec("P-256")
    cert = crypto.generate_self_signed_certificate(
        key, "CN=localhost,O=dtlspeer example,C=IT", "20240101000000", "20440101000000",
        dns_names=["localhost"], ip_addresses=["127.0.0.1"],
    )
    return key, cert


async def self_test() -> int:
    key, cert = throwaway_certificate()
    relay = ChatRelay()
    relay.server = await aio.serve(relay.handler, "127.0.0.1", 0, TLSOptions.server(key, cert))
    async with relay.server:
        port = relay.server.port
        names = ["ada", "bob", "cy"]
        clients = [
            await aio.connect("127.0.0.1", port, TLSOptions.client(cert), hostname="localhost")
            for _ in names
        ]
        for client, name in zip(clients, names):
            await client.send(name.encode())
        while len(relay.names) < len(names):  # every name arrived (bounded by wait_for below)
            await asyncio.sleep(0.01)
        for client, name in zip(clients, names):
            await client.send(f"hello from {name}".encode())
            for other, other_name in zip(clients, names):
                if other is client:
                    continue
                while True:  # skip "* x joined" notices
                    line = (await other.recv()).decode()
                    if not line.startswith("* "):
                        break
                assert line == f"{name}: hello from {name}", (other_name, line)
        for client in clients:
            while client.queued_packets:  # only join/leave notices may remain
                assert client.recv_nowait().startswith(b"* ")
            client.close()
    print(f"PASS {len(names)} clients: every line relayed to the others only")
    return 0


async def run(args: argparse.Namespace) -> int:
    if bool(args.cert) != bool(args.key):
        raise SystemExit("--cert and --key go together")
    if args.cert:
        key, cert = CryptoKey(), X509Certificate()
        key.load(args.key)
        cert.load(args.cert)
    else:
        key, cert = throwaway_certificate()
        if args.save_cert:
            cert.save(args.save_cert)
    relay = ChatRelay()
    options = TLSOptions.server(key, cert)
    relay.server = await aio.serve(relay.handler, args.bind, args.port, options)
    async with relay.server:
        print(f"chat relay on port {relay.server.port}", flush=True)
        await relay.server.serve_forever()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=4433, help="UDP port (default 4433)")
    parser.add_argument("--bind", default="*", help="local address (default *: all)")
    parser.add_argument("--cert", help="certificate chain (default: a throwaway one)")
    parser.add_argument("--key", help="private key of --cert")
    parser.add_argument("--save-cert", metavar="PATH", help="write the throwaway certificate")
    parser.add_argument("--self-test", action="store_true",
                        help="run the relay and clients on 127.0.0.1, check, exit")
    args = parser.parse_args()
    try:
        if args.self_test:
            return asyncio.run(asyncio.wait_for(self_test(), timeout=20))
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())

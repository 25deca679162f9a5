"""A DTLS echo server written the way a Godot script is, for Godot clients.

It uses dtlspeer's Godot-style classes (``UDPServer``, ``DTLSServer``,
``PacketPeerDTLS``, ``TLSOptions``) in Godot's polling loop, so a Godot
``PacketPeerDTLS`` client talks to it unchanged. The GDScript client it pairs
with is ``tests/interop/godot/dtls_echo_client.gd`` (Godot 3.2 API; the 4.x
client differs only in ``connect_to_peer(udp, "localhost",
TLSOptions.client(cert))``)::

    python examples/godot_echo_server.py --port 4433 --save-cert server.crt
    godot3-server --no-window -s tests/interop/godot/dtls_echo_client.gd \\
        --port=4433 --cert=server.crt --host=localhost --count=100

The client validates the certificate against ``server.crt`` and the name
``localhost``, sends "msg 0", "msg 1", ... one at a time, checks every echo
and prints ``PASS 100``.

``--self-test`` starts the server and four dtlspeer ``PacketPeerDTLS``
clients (written like the GDScript client) on 127.0.0.1, checks every echo
and exits 0 within a few seconds.
"""

from __future__ import annotations

import argparse
import sys
import time

from dtlspeer import (
    Crypto,
    CryptoKey,
    DTLSServer,
    PacketPeerDTLS,
    PacketPeerUDP,
    TLSOptions,
    UDPServer,
    X509Certificate,
)


class EchoServer:
    """UDPServer + DTLSServer, stepped like Godot's ``_process``."""

    def __init__(self, key: CryptoKey, cert: X509Certificate, port: int, bind: str) -> None:
        self.udp_server = UDPServer()
        self.udp_server.listen(port, bind)
        self.dtls_server = DTLSServer()
        self.dtls_server.setup(TLSOptions.server(key, cert))
        self.peers: list[PacketPeerDTLS] = []
        self.echoed = 0
        self.not_echoed = 0  # received, but larger than one record we can send

    def step(self) -> None:
        """One frame: accept, poll every peer, echo every packet."""
        self.udp_server.poll()  # Godot 4: poll() first, it reads the socket
        while self.udp_server.is_connection_available():
            udp_peer = self.udp_server.take_connection()
            if udp_peer is None:
                break
            peer = self.dtls_server.take_connection(udp_peer)
            # Half of the new connections are the cookie exchange (Godot's
            # "50% invalid"): they come back STATUS_ERROR and are dropped.
            if peer.get_status() == PacketPeerDTLS.STATUS_HANDSHAKING:
                self.peers.append(peer)
        for peer in self.peers:
            was_connected = peer.get_status() == PacketPeerDTLS.STATUS_CONNECTED
            peer.poll()
            status = peer.get_status()
            ip, port = peer.get_peer_address()
            if status == PacketPeerDTLS.STATUS_CONNECTED and not was_connected:
                print(f"connected {ip}:{port} {peer.get_ciphersuite()}", flush=True)
            while peer.get_available_packet_count() > 0:
                packet = peer.get_packet()
                # A client may send records up to settings.max_receive_size
                # (1392 bytes by default) but one record we send holds less
                # (get_max_packet_size(), ~1160 at MTU 1200): never echo
                # blindly, put_packet would raise.
                if len(packet) <= peer.get_max_packet_size():
                    peer.put_packet(packet)
                    self.echoed += 1
                else:
                    self.not_echoed += 1
            if status not in (PacketPeerDTLS.STATUS_HANDSHAKING, PacketPeerDTLS.STATUS_CONNECTED):
                print(f"ended: {status.name}: {peer.get_last_error()}", flush=True)
        alive = (PacketPeerDTLS.STATUS_HANDSHAKING, PacketPeerDTLS.STATUS_CONNECTED)
        self.peers = [p for p in self.peers if p.get_status() in alive]

    def stop(self) -> None:
        for peer in self.peers:
            peer.disconnect_from_peer()
        self.udp_server.stop()


def throwaway_certificate() -> tuple[CryptoKey, X509Certificate]:
    """P-256 key + self-signed certificate for localhost and 127.0.0.1 (CN
    and subjectAltName: Godot 3 checks the CN, Godot 4 and others the SAN)."""
    crypto = Crypto()
    key = crypto.generate_ec("P-256")
    cert = crypto.generate_self_signed_certificate(
        key, "CN=localhost,O=dtlspeer example,C=IT", "20240101000000", "20440101000000",
        dns_names=["localhost"], ip_addresses=["127.0.0.1"],
    )
    return key, cert


def self_test() -> int:
    key, cert = throwaway_certificate()
    server = EchoServer(key, cert, 0, "127.0.0.1")
    port = server.udp_server.get_local_port()
    clients = []
    for _ in range(4):  # like dtls_echo_client.gd: connect_to_host, then connect_to_peer
        udp = PacketPeerUDP()
        udp.connect_to_host("127.0.0.1", port)
        dtls = PacketPeerDTLS()
        dtls.connect_to_peer(udp, "localhost", TLSOptions.client(cert))
        clients.append(dtls)
    count = 20
    sent = [0] * len(clients)
    received = [0] * len(clients)
    deadline = time.monotonic() + 20
    while min(received) < count:
        if time.monotonic() > deadline:
            print(f"FAIL timeout: received {received}")
            return 1
        server.step()
        for i, dtls in enumerate(clients):
            dtls.poll()
            status = dtls.get_status()
            if status == PacketPeerDTLS.STATUS_CONNECTED:
                while dtls.get_available_packet_count() > 0:
                    echo = dtls.get_packet().decode()
                    assert echo == f"msg {received[i]}", echo
                    received[i] += 1
                if sent[i] == received[i] < count:
                    dtls.put_packet(f"msg {sent[i]}".encode())
                    sent[i] += 1
            elif status != PacketPeerDTLS.STATUS_HANDSHAKING:
                print(f"FAIL client {i}: {status.name}: {dtls.get_last_error()}")
                return 1
        time.sleep(0.001)
    for dtls in clients:
        dtls.disconnect_from_peer()
    end = time.monotonic() + 5
    while server.peers and time.monotonic() < end:  # each close_notify ends its peer
        server.step()
        time.sleep(0.001)
    assert not server.peers, server.peers
    assert server.echoed == count * len(clients), server.echoed
    server.stop()
    print(f"PASS {len(clients)} clients x {count} messages echoed")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=4433, help="UDP port (default 4433)")
    parser.add_argument("--bind", default="*", help="local address (default *: all)")
    parser.add_argument("--cert", help="certificate chain (default: a throwaway one)")
    parser.add_argument("--key", help="private key of --cert")
    parser.add_argument("--save-cert", metavar="PATH",
                        help="write the throwaway certificate here (for the Godot client)")
    parser.add_argument("--self-test", action="store_true",
                        help="run server and clients on 127.0.0.1, check, exit")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    if args.cert and args.key:
        key, cert = CryptoKey(), X509Certificate()
        key.load(args.key)
        cert.load(args.cert)
    elif args.cert or args.key:
        parser.error("--cert and --key go together")
    else:
        key, cert = throwaway_certificate()
        if args.save_cert:
            cert.save(args.save_cert)
    server = EchoServer(key, cert, args.port, args.bind)
    print(f"READY listening on port {server.udp_server.get_local_port()}", flush=True)
    try:
        while True:
            server.step()
            time.sleep(0.001)  # a Godot frame would be ~16 ms; echo fast instead
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command-line interface: ``python -m dtlspeer <command>``.

Commands: ``info`` (versions, build configuration, ciphersuites),
``gen-cert`` (a private key plus a self-signed certificate for a host name or IP),
``demo`` (a DTLS echo server and clients on 127.0.0.1, with throughput) and
``bench`` (the quick benchmark table of ``benchmarks/``, source checkouts only).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import platform
import sys
import time
from typing import Callable

from . import __version__
from .build_info import build_info, ciphersuites, mbedtls_version
from .crypto import Crypto
from .dtls import DTLSServer, PacketPeerDTLS
from .errors import DTLSPeerError
from .tls_options import TLSOptions
from .udp import PacketPeerUDP, UDPServer


def cmd_info(args: argparse.Namespace) -> int:
    """Print versions, the native build configuration and the ciphersuites."""
    print(f"dtlspeer {__version__}")
    print(f"Mbed TLS {mbedtls_version()} (statically linked)")
    print(f"Python {platform.python_version()} on {platform.system()} {platform.machine()}")
    print("build configuration:")
    for name, value in build_info().items():
        print(f"  {name}: {value}")
    print("ciphersuites (default preference order):")
    for suite in ciphersuites():
        print(f"  {suite}")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def cmd_gen_cert(args: argparse.Namespace) -> int:
    """Write a new private key and a self-signed certificate for ``args.host``.

    The host goes into the subject CN and into a subjectAltName entry (an IP
    address entry for an IP literal, a DNS entry otherwise), so both Godot's
    CN check and modern SAN checks accept it."""
    crypto = Crypto()
    if args.key_type == "rsa":
        key = crypto.generate_rsa(args.rsa_bits)
    else:
        key = crypto.generate_ec(args.key_type.upper())
    host = args.host
    try:
        ipaddress.ip_address(host)
        dns_names: list[str] = []
        ip_addresses = [host]
    except ValueError:
        dns_names, ip_addresses = [host], []
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    not_before = (now - datetime.timedelta(hours=1)).strftime("%Y%m%d%H%M%S")
    not_after = (now + datetime.timedelta(days=args.days)).strftime("%Y%m%d%H%M%S")
    name = f"CN={host},O={args.organization},C={args.country}"
    cert = crypto.generate_self_signed_certificate(
        key, name, not_before, not_after, dns_names=dns_names, ip_addresses=ip_addresses
    )
    key_path = args.key_out or f"{host}.key"
    cert_path = args.cert_out or f"{host}.crt"
    key.save(key_path)
    cert.save(cert_path)
    print(f"private key: {key_path} ({key.key_type} {key.key_size} bits)")
    print(f"certificate: {cert_path}")
    print(f"  subject: {cert.subject}")
    print(f"  valid: {cert.not_before:%Y-%m-%d %H:%M} .. {cert.not_after:%Y-%m-%d %H:%M} UTC")
    print(f"  subjectAltName: {', '.join(f'{k}:{v}' for k, v in cert.subject_alt_names)}")
    print(f"  sha256 fingerprint: {cert.fingerprint.hex(':')}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run a DTLS echo server and ``args.clients`` clients on 127.0.0.1 in
    this process, send ``args.messages`` messages per client in lock-step
    rounds and check every echo. Prints handshakes/s and round trips/s, then
    ``PASS`` (exit 0) or ``FAIL <why>`` (exit 1). Bounded by ``args.timeout``."""
    crypto = Crypto()
    key = crypto.generate_ec("P-256")
    cert = crypto.generate_self_signed_certificate(
        key, "CN=127.0.0.1,O=dtlspeer demo,C=IT", ip_addresses=["127.0.0.1"])
    udp_server = UDPServer()
    udp_server.max_pending_connections = max(16, 2 * args.clients)
    udp_server.listen(0, "127.0.0.1")
    dtls_server = DTLSServer()
    dtls_server.setup(TLSOptions.server(key, cert))
    port = udp_server.get_local_port()
    client_options = TLSOptions.client(cert)
    deadline = time.monotonic() + args.timeout
    server_peers: list[PacketPeerDTLS] = []

    def serve() -> None:
        udp_server.poll()
        while udp_server.is_connection_available():
            udp_peer = udp_server.take_connection()
            if udp_peer is None:
                break
            peer = dtls_server.take_connection(udp_peer)
            if peer.get_status() == PacketPeerDTLS.STATUS_HANDSHAKING:
                server_peers.append(peer)  # the others are the cookie exchange
        for peer in server_peers:
            peer.poll()
            while peer.get_available_packet_count() > 0:
                peer.put_packet(peer.get_packet())

    def fail(why: str) -> int:
        print(f"FAIL {why}")
        return 1

    started = time.perf_counter()
    clients: list[PacketPeerDTLS] = []
    for _ in range(args.clients):
        udp = PacketPeerUDP()
        udp.connect_to_host("127.0.0.1", port)
        client = PacketPeerDTLS()
        client.connect_to_peer(udp, "127.0.0.1", client_options)
        clients.append(client)
    while any(c.get_status() == PacketPeerDTLS.STATUS_HANDSHAKING for c in clients):
        if time.monotonic() > deadline:
            return fail(f"handshakes did not finish within {args.timeout} s")
        serve()
        for client in clients:
            client.poll()
    for client in clients:
        if client.get_status() != PacketPeerDTLS.STATUS_CONNECTED:
            return fail(f"client handshake failed: {client.get_last_error()}")
    handshake_s = time.perf_counter() - started
    print(f"{args.clients} handshakes in {handshake_s:.3f} s: "
          f"{args.clients / handshake_s:.1f} handshakes/s ({clients[0].get_ciphersuite()})")

    started = time.perf_counter()
    for round_no in range(args.messages):
        expected = [b"client %d message %d" % (i, round_no) for i in range(len(clients))]
        for client, message in zip(clients, expected):
            client.put_packet(message)
        waiting = set(range(len(clients)))
        while waiting:
            if time.monotonic() > deadline:
                return fail(
                    f"round {round_no}: {len(waiting)} echoes missing after {args.timeout} s")
            serve()
            for i in list(waiting):
                clients[i].poll()
                if clients[i].get_status() != PacketPeerDTLS.STATUS_CONNECTED:
                    return fail(f"client {i}: {clients[i].get_last_error()}")
                if clients[i].get_available_packet_count() > 0:
                    echo = clients[i].get_packet()
                    if echo != expected[i]:
                        return fail(f"client {i}: echo {echo!r} != {expected[i]!r}")
                    waiting.discard(i)
    echo_s = time.perf_counter() - started
    trips = args.clients * args.messages
    print(f"{trips} round trips in {echo_s:.3f} s: {trips / max(echo_s, 1e-9):.1f} round trips/s")
    for client in clients:
        client.disconnect_from_peer()
    udp_server.stop()
    print(f"PASS {args.clients} clients x {args.messages} messages echoed and verified")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Run ``python -m benchmarks --quick`` plus ``args.bench_args``.

    The runner lives in ``benchmarks/`` of a source checkout (it is not in
    the wheel): it is imported from the current directory or from the
    checkout this package was loaded from."""
    import os

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for where in (os.getcwd(), root):
        if os.path.isfile(os.path.join(where, "benchmarks", "__main__.py")):
            if where not in sys.path:
                sys.path.insert(0, where)
            break
    try:
        from benchmarks.__main__ import main as bench_main
    except ImportError:
        print("error: benchmarks/ not found: run from a dtlspeer source checkout",
              file=sys.stderr)
        return 1
    extra = [a for a in args.bench_args if a != "--"]
    return int(bench_main(["--quick", *extra]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dtlspeer",
        description="Godot-style UDP and DTLS networking for Python game backends.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    info = sub.add_parser("info", help="print versions, build configuration and ciphersuites")
    info.set_defaults(func=cmd_info)
    gen = sub.add_parser(
        "gen-cert",
        help="write a private key and a self-signed certificate for a host name or IP",
        description="Generate a private key and a self-signed certificate whose CN and "
        "subjectAltName name HOST (a DNS name or an IPv4/IPv6 address).",
    )
    gen.add_argument("host", metavar="HOST", help="host name or IP address the certificate is for")
    gen.add_argument("--key-type", choices=["p-256", "p-384", "rsa"], default="p-256",
                     help="key algorithm (default: p-256, the fastest to handshake)")
    gen.add_argument("--rsa-bits", type=int, default=2048, help="RSA key size (2048..4096)")
    gen.add_argument("--days", type=_positive_int, default=365,
                     help="validity in days (default 365)")
    gen.add_argument("--organization", default="dtlspeer", help="O= of the subject")
    gen.add_argument("--country", default="IT", help="C= of the subject (Godot's default)")
    gen.add_argument("--key-out", metavar="PATH", help="key file (default HOST.key, mode 0600)")
    gen.add_argument("--cert-out", metavar="PATH", help="certificate file (default HOST.crt)")
    gen.set_defaults(func=cmd_gen_cert)
    demo = sub.add_parser(
        "demo",
        help="run a DTLS echo server and clients on 127.0.0.1 and report throughput",
        description="Start a DTLS echo server (self-signed P-256 certificate) and N clients "
        "in this process on 127.0.0.1, exchange messages, verify every echo and print "
        "handshakes/s and round trips/s, then PASS or FAIL.",
    )
    demo.add_argument("--clients", type=_positive_int, default=8,
                      help="number of clients (default 8)")
    demo.add_argument("--messages", type=_positive_int, default=100,
                      help="messages per client (default 100)")
    demo.add_argument("--timeout", type=float, default=60.0,
                      help="give up (FAIL) after this many seconds (default 60)")
    demo.set_defaults(func=cmd_demo)
    bench = sub.add_parser(
        "bench",
        help="run the quick benchmark table (plain UDP vs dtlspeer vs pyOpenSSL/trio)",
        description="Run `python -m benchmarks --quick` from a source checkout; any further "
        "arguments are passed to it (e.g. `bench --only pingpong --runs 5`).",
    )
    bench.set_defaults(func=cmd_bench, bench_args=[])
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # everything after it belongs to the benchmark runner
        args = parser.parse_args(["bench"])
        args.bench_args = argv[1:]
    else:
        args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except BrokenPipeError:  # e.g. `python -m dtlspeer info | head`
        sys.stderr.close()
        return 0
    except (DTLSPeerError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

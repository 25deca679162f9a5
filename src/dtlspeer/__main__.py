"""Command-line interface: ``python -m dtlspeer <command>`` (or ``dtlspeer <command>``).

Commands:

* ``info``: versions, build configuration, ciphersuites;
* ``gen-cert``: a private key plus a self-signed certificate for a host name or IP;
* ``serve``: a DTLS echo server on the batch host (:class:`~dtlspeer.DTLSHost`);
* ``connect``: a DTLS client that sends stdin lines and prints the replies;
* ``demo``: a DTLS echo server and clients on 127.0.0.1, with throughput;
* ``bench``: the quick benchmark table (the runner ships in the wheel).

Exit status: 0 success (``serve``: stopped by ``--duration``, Ctrl-C or
SIGTERM); 1 failure (a file, socket or TLS error, a failed handshake, a
``demo`` FAIL, a lost connection, an existing ``gen-cert`` output without
``--force``); 2 bad command line (usage on stderr); 130 interrupted by
Ctrl-C (every command but ``serve``); 143 ``connect`` stopped by SIGTERM
(it sends close_notify first).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import platform
import queue
import signal
import sys
import textwrap
import threading
import time
from typing import Any, Callable, ClassVar, Optional

from . import __version__
from .build_info import build_info, ciphersuites, mbedtls_version
from .crypto import Crypto, CryptoKey, X509Certificate
from .dtls import DTLSServer, DTLSSettings, PacketPeerDTLS
from .errors import DTLSPeerError, InvalidArgumentError
from .host import DTLSHost, HostEventType, HostPeer
from .session import SessionTicketKeys
from .tls_options import TLSOptions
from .udp import PacketPeerUDP, UDPServer

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

EXIT_STATUS_HELP = """\
exit status:
  0    success (serve: stopped by --duration, Ctrl-C or SIGTERM)
  1    failure: file, socket or TLS error, failed handshake, lost connection, demo FAIL,
       gen-cert output exists (without --force)
  2    bad command line (the usage is printed to stderr)
  130  interrupted by Ctrl-C (every command but serve)
  143  connect stopped by SIGTERM (after sending close_notify)"""


class _Progress:
    """Progress lines on stderr for long operations: phase lines always,
    periodic lines at most once per ``interval`` seconds; none when quiet."""

    def __init__(self, quiet: bool, interval: float = 1.0) -> None:
        self.quiet = quiet
        self.interval = interval
        self._last = time.monotonic()

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)
        self._last = time.monotonic()

    def tick(self, text: Callable[[], str]) -> None:
        if time.monotonic() - self._last >= self.interval:
            self.say(text())


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _days(text: str) -> int:
    value = _positive_int(text)
    try:
        datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=value)
    except OverflowError:
        raise argparse.ArgumentTypeError(
            f"{value} days from now is past the year 9999") from None
    return value


# RFC 4514 specials, written as hex pairs: Mbed TLS parses "\2C" everywhere,
# while its "\\," handling differs from the RFC (see crypto._check_rdn_string).
_RDN_SPECIALS = frozenset(',=+<>#;"\\')


def _rdn_value(text: str, what: str) -> str:
    """``text`` escaped for one attribute value of an RDN string (so
    ``--organization 'a,CN=evil'`` stays one O= value)."""
    if not text:
        raise argparse.ArgumentTypeError(f"{what} must not be empty")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise argparse.ArgumentTypeError(f"{what} must not contain control characters")
    out = "".join(f"\\{ord(ch):02X}" if ch in _RDN_SPECIALS else ch for ch in text)
    if out.startswith(" "):
        out = "\\20" + out[1:]
    if out.endswith(" "):
        out = out[:-1] + "\\20"
    return out


def _int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in low..high."""

    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in {low}..{high}, not {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in "invalid int value"
    return parse


_port = _int_in(0, 65535)
_remote_port = _int_in(1, 65535)
_record_size = _int_in(0, 16384)


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):  # also rejects NaN
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, not {text}")
    return value


def _milliseconds_setting(text: str) -> float:
    """Seconds for a DTLSSettings field in whole ms (at most 2**32-1 ms)."""
    value = _seconds(text)
    if value * 1000 >= 2**32 - 0.5:
        raise argparse.ArgumentTypeError(
            f"must be at most {(2**32 - 1) / 1000:.3f} seconds (about 49.7 days), not {text}")
    return value


def _psk_hex(text: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not hexadecimal: {text!r}") from None
    if not value:
        raise argparse.ArgumentTypeError("the PSK must not be empty")
    return value


def _worker_count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError("must be 1..256 (a worker id is one Connection ID byte)")
    return value


def _psk(args: argparse.Namespace) -> tuple[bytes, bytes] | None:
    """(identity, key) from --psk-identity/--psk-hex; usage error if only one is given."""
    if (args.psk_identity is None) != (args.psk_hex is None):
        args.parser.error("--psk-identity and --psk-hex go together")
    if args.psk_identity is None:
        return None
    return args.psk_identity.encode("utf-8"), args.psk_hex


def _addr(peer: HostPeer) -> str:
    ip, port = peer.get_peer_address()
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


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
    return EXIT_OK


def cmd_gen_cert(args: argparse.Namespace) -> int:
    """Write a new private key and a self-signed certificate for ``args.host``.

    The host goes into the subject CN and into a subjectAltName entry (an IP
    address entry for an IP literal, a DNS entry otherwise), so both Godot's
    CN check and modern SAN checks accept it. Name parts are escaped (RFC
    4514 specials as hex pairs); existing files are only replaced with
    ``--force``; key and certificate must be two different files."""
    host = args.host
    try:
        name = ",".join(f"{kind}={_rdn_value(value, what)}" for kind, value, what in (
            ("CN", host, "HOST"), ("O", args.organization, "--organization"),
            ("C", args.country, "--country")))
    except argparse.ArgumentTypeError as exc:
        args.parser.error(str(exc))
    key_path = args.key_out or f"{host}.key"
    cert_path = args.cert_out or f"{host}.crt"
    if os.path.realpath(key_path) == os.path.realpath(cert_path):
        args.parser.error(f"--key-out {key_path} and --cert-out {cert_path} name the same file "
                          "(the certificate would replace the key)")
    if not args.force:
        for path in (key_path, cert_path):
            if os.path.lexists(path):
                print(f"error: {path} exists; use --force to replace it", file=sys.stderr)
                return EXIT_FAILURE
    crypto = Crypto()
    if args.key_type == "rsa":
        progress = _Progress(args.quiet)
        progress.say(f"gen-cert: generating an RSA-{args.rsa_bits} key (can take seconds)")
        key = crypto.generate_rsa(args.rsa_bits)
    else:
        key = crypto.generate_ec(args.key_type.upper())
    try:
        ipaddress.ip_address(host)
        dns_names: list[str] = []
        ip_addresses = [host]
    except ValueError:
        dns_names, ip_addresses = [host], []
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    not_before = (now - datetime.timedelta(hours=1)).strftime("%Y%m%d%H%M%S")
    not_after = (now + datetime.timedelta(days=args.days)).strftime("%Y%m%d%H%M%S")
    cert = crypto.generate_self_signed_certificate(
        key, name, not_before, not_after, dns_names=dns_names, ip_addresses=ip_addresses
    )
    key.save(key_path)
    cert.save(cert_path)
    print(f"private key: {key_path} ({key.key_type} {key.key_size} bits)")
    print(f"certificate: {cert_path}")
    print(f"  subject: {cert.subject}")
    print(f"  valid: {cert.not_before:%Y-%m-%d %H:%M} .. {cert.not_after:%Y-%m-%d %H:%M} UTC")
    print(f"  subjectAltName: {', '.join(f'{k}:{v}' for k, v in cert.subject_alt_names)}")
    print(f"  sha256 fingerprint: {cert.fingerprint.hex(':')}")
    return EXIT_OK


def _throwaway_certificate() -> tuple[CryptoKey, X509Certificate]:
    """A P-256 key and a self-signed certificate for localhost, 127.0.0.1 and
    ::1, valid from an hour ago for one day."""
    crypto = Crypto()
    key = crypto.generate_ec("P-256")
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = crypto.generate_self_signed_certificate(
        key,
        "CN=localhost,O=dtlspeer serve,C=IT",
        (now - datetime.timedelta(hours=1)).strftime("%Y%m%d%H%M%S"),
        (now + datetime.timedelta(days=1)).strftime("%Y%m%d%H%M%S"),
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1", "::1"],
    )
    return key, cert


class _StopFlag:
    """Set by SIGINT (Ctrl-C), SIGTERM and SIGBREAK (Windows) while a command
    runs: the loop stops at its next turn and shuts down cleanly (a
    KeyboardInterrupt could cut a line being printed, or skip close_notify)."""

    NAMES: ClassVar[dict[str, str]] = {
        "SIGINT": "Ctrl-C", "SIGTERM": "SIGTERM", "SIGBREAK": "SIGBREAK"}

    def __init__(self) -> None:
        self.stopped = False
        self.signum = 0
        self.how = ""
        self._saved: list[tuple[int, Any]] = []

    def _handler(self, signum: int, frame: Any) -> None:
        self.stopped = True
        self.signum = signum
        self.how = self.NAMES.get(signal.Signals(signum).name, "signal")

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for name in self.NAMES:
                signum = getattr(signal, name, None)
                if signum is not None:
                    self._saved.append((signum, signal.signal(signum, self._handler)))
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._saved:
            signal.signal(signum, previous)


def cmd_serve(args: argparse.Namespace) -> int:
    """A DTLS echo server on a :class:`DTLSHost`: every record a client sends
    comes back to it. One line per connect, disconnect and failed handshake
    on stdout; statistics when stopped (``--duration``, Ctrl-C, SIGTERM)."""
    psk = _psk(args)
    if (args.cert is None) != (args.key is None):
        args.parser.error("--cert and --key go together")
    if args.save_cert is not None and args.cert is not None:
        args.parser.error("--save-cert is for the generated certificate (no --cert/--key)")
    server_options: TLSOptions | None = None
    credentials: list[str] = []
    if args.cert is not None:
        key, cert = CryptoKey(), X509Certificate()
        key.load(args.key)
        cert.load(args.cert)
        server_options = TLSOptions.server(key, cert)
        credentials.append(f"certificate {args.cert} ({cert.subject})")
    elif psk is None or args.save_cert is not None:
        key, cert = _throwaway_certificate()
        server_options = TLSOptions.server(key, cert)
        where = ""
        if args.save_cert is not None:
            cert.save(args.save_cert)
            where = f", saved to {args.save_cert}"
        credentials.append(
            f"throwaway self-signed certificate for localhost/127.0.0.1/::1{where}, "
            f"sha256 {cert.fingerprint.hex(':')}"
        )
    if psk is not None:
        credentials.append(f"PSK identity {args.psk_identity!r}")
    settings = DTLSSettings(idle_timeout_ms=round(args.idle_timeout * 1000),
                            max_receive_size=args.max_receive_size)
    host_options: dict[str, Any] = {
        "server_options": server_options,
        "server_psk": None if psk is None else {psk[0]: psk[1]},
        "settings": settings,
        "max_peers": args.max_peers,
    }
    shown = args.bind if ":" not in args.bind else f"[{args.bind}]"
    if args.workers > 1:
        return _serve_workers(args, host_options, shown, " and ".join(credentials))
    host = DTLSHost(args.bind, args.port, **host_options)
    print(f"listening on {shown}:{host.get_local_port()} with {' and '.join(credentials)}",
          flush=True)
    return _serve_host(host, args, "")


def _serve_host(host: DTLSHost, args: argparse.Namespace, label: str) -> int:
    """The echo loop of ``serve`` on ``host`` until --duration, Ctrl-C or
    SIGTERM; every output line starts with ``label`` (a worker's)."""
    started = time.monotonic()
    records: dict[int, int] = {}
    echoed_bytes = not_echoed = 0
    how = "stopped"
    try:
        deadline = None if args.duration is None else started + args.duration
        with _StopFlag() as stop:
            try:
                while not stop.stopped:
                    wait = 0.1
                    if deadline is not None:
                        wait = min(wait, deadline - time.monotonic())
                        if wait <= 0:
                            how = f"--duration {args.duration:g} s reached"
                            break
                    for event in host.service(wait):
                        peer = event.peer
                        if event.type == HostEventType.RECEIVE:
                            records[peer.peer_id] = records.get(peer.peer_id, 0) + 1
                            try:
                                peer.put_packet(event.data)
                            except InvalidArgumentError:
                                # Received (up to settings.max_receive_size) but
                                # larger than one record we can send: counted.
                                not_echoed += 1
                                continue
                            echoed_bytes += len(event.data)
                        elif event.type == HostEventType.CONNECT:
                            records[peer.peer_id] = 0
                            print(f"{label}connect {_addr(peer)} {peer.get_ciphersuite()}",
                                  flush=True)
                        elif event.type == HostEventType.DISCONNECT:
                            count = records.pop(peer.peer_id, 0)
                            print(f"{label}disconnect {_addr(peer)} "
                                  f"{event.reason.name.lower()} after {count} records: "
                                  f"{event.message}", flush=True)
                        elif event.type == HostEventType.ADDRESS_CHANGED:
                            print(f"{label}address-changed {_addr(peer)} (Connection ID)",
                                  flush=True)
                        else:
                            print(f"{label}handshake-failed {_addr(peer)}: {event.message}",
                                  flush=True)
                else:
                    how = stop.how
            except KeyboardInterrupt:
                how = "Ctrl-C"
        stats = host.get_stats()
        uptime = time.monotonic() - started
        print(f"{label}stopped ({how}) after {uptime:.1f} s: {stats['connects']} connects, "
              f"{stats['disconnects']} disconnects, {stats['errors']} failed handshakes, "
              f"{stats['connected']} still connected, {stats['records_in'] - not_echoed} "
              f"records echoed ({echoed_bytes} bytes), {not_echoed} not echoed (larger than "
              f"one record we can send), {stats['dropped_over_limit']} dropped (larger than "
              f"--max-receive-size), {stats['hvr_sent']} HelloVerifyRequests, "
              f"{stats['gate_dropped']} datagrams dropped by the cookie gate, "
              f"{stats['address_changes']} address changes", flush=True)
    finally:
        host.close()  # close_notify to every connected client
    return EXIT_OK


def _worker_shared_secrets() -> dict[str, Any]:
    """What every worker of one ``serve --workers`` port must share, as
    DTLSHost keyword arguments: the cookie secret (a cookie from one worker
    is valid at any other: the kernel may hash a client's retried hello to
    another worker when the group changes) and the session ticket keys (a
    ticket from one worker resumes at any other). Made fresh per run; never
    printed or logged (docs/deploy.md)."""
    return {"cookie_secret": os.urandom(32), "ticket_keys": SessionTicketKeys()}


def _serve_workers(args: argparse.Namespace, host_options: dict[str, Any], shown: str,
                   credentials: str) -> int:
    """``serve --workers N``: N forked processes, each a DTLSHost on the same
    port (SO_REUSEPORT) with worker id = its index, bound in order (worker i
    is socket i of the reuseport group, which the Connection ID steering
    program relies on: a rebound client reaches the worker holding its
    session). The parent waits for each worker to bind before starting the
    next, forwards SIGINT/SIGTERM, and stops every worker when one fails."""
    if not hasattr(os, "fork"):
        print("error: --workers needs fork() (POSIX)", file=sys.stderr)
        return EXIT_FAILURE
    host_options = {**host_options, **_worker_shared_secrets(), "reuse_port": True}
    port = args.port
    children: list[int] = []
    status = EXIT_OK
    with _StopFlag() as stop:
        for index in range(args.workers):
            ready_r, ready_w = os.pipe()
            pid = os.fork()
            if pid == 0:  # the worker
                os.close(ready_r)
                code = EXIT_FAILURE
                try:
                    stop.__exit__()  # a worker's own flag handles its signals
                    host = DTLSHost(args.bind, port, worker_id=index, **host_options)
                    os.write(ready_w, str(host.get_local_port()).encode())
                    os.close(ready_w)
                    code = _serve_host(host, args, f"worker {index}: ")
                except BaseException as exc:  # reported, then the worker exits
                    print(f"worker {index}: error: {exc}", file=sys.stderr, flush=True)
                finally:
                    sys.stdout.flush()
                    os._exit(code)
            os.close(ready_w)
            children.append(pid)
            with os.fdopen(ready_r, "rb") as ready:
                bound = ready.read()
            if not bound:  # it failed before binding (and said why)
                status = EXIT_FAILURE
                break
            port = int(bound)
        if status == EXIT_OK:
            print(f"listening on {shown}:{port} with {credentials}, {args.workers} "
                  "workers (SO_REUSEPORT, Connection ID steering)", flush=True)
        while status == EXIT_OK and not stop.stopped and children:
            time.sleep(0.1)
            for pid in list(children):
                done, code = os.waitpid(pid, os.WNOHANG)
                if done:
                    children.remove(pid)
                    if not os.WIFEXITED(code) or os.WEXITSTATUS(code) != EXIT_OK:
                        status = EXIT_FAILURE
                    elif args.duration is None:
                        status = EXIT_FAILURE  # a worker must not stop on its own
        for pid in children:
            os.kill(pid, signal.SIGTERM)
        for pid in children:
            _, code = os.waitpid(pid, 0)
            if not os.WIFEXITED(code) or os.WEXITSTATUS(code) != EXIT_OK:
                status = EXIT_FAILURE
    return status


# Longest stdin line kept: a record holds at most 16 KiB, so anything longer
# could never be sent; it is skipped (reported) instead of buffered.
_MAX_LINE = 16384
_LINE_TOO_LONG = b""  # queued in place of a skipped line (empty lines are never queued)


def _stdin_lines(out: queue.Queue[bytes | None]) -> None:
    """Read stdin's file descriptor (not ``sys.stdin``: a daemon thread
    blocked in a buffered read can break interpreter shutdown) and queue
    one item per line, newline removed; None at end of input. Linear in the
    input and bounded: a line longer than ``_MAX_LINE`` is dropped as it
    arrives (``_LINE_TOO_LONG`` is queued once for it), and the queue is
    bounded, so a fast producer waits for the network."""
    fd = sys.stdin.fileno()
    line = bytearray()
    skipping = False
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            break
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if not skipping:
                line += chunk[start : len(chunk) if end < 0 else end]
                if len(line) > _MAX_LINE + 1:  # (+1: a trailing \r is removed below)
                    skipping = True
                    line.clear()
                    out.put(_LINE_TOO_LONG)
            if end < 0:
                break
            if not skipping and line:
                out.put(bytes(line[:-1] if line.endswith(b"\r") else line))
            line.clear()
            skipping = False
            start = end + 1
    if line and not skipping:
        out.put(bytes(line))
    out.put(None)


_PLAIN_ASCII = bytes(b for b in range(0x20, 0x7F) if b != ord("\\"))


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if ch == "\\":
        return "\\\\"
    if ch.isprintable():
        return ch
    return ch.encode("unicode_escape").decode("ascii")


def _printable(data: bytes) -> str:
    """A received record as one safe line: printable text as is; control
    characters (C0, DEL, C1, bidirectional overrides...), backslashes and
    bytes that are not UTF-8 as Python escapes, so a server cannot move the
    cursor, retitle or clear the terminal."""
    if not data.translate(None, _PLAIN_ASCII):
        return data.decode("ascii")  # the common case: plain text
    return "".join(map(_escape_char, data.decode("utf-8", "surrogateescape")))


def cmd_connect(args: argparse.Namespace) -> int:
    """A DTLS client: handshake with HOST:PORT, send every stdin line as one
    record, print every record received as one line on stdout. Status lines
    go to stderr. Ends after the end of input once as many records came back
    as were sent, or ``--linger`` seconds later."""
    psk = _psk(args)
    chain: X509Certificate | None = None
    if args.ca is not None:
        chain = X509Certificate()
        chain.load(args.ca)
    options: TLSOptions | None
    if args.insecure:
        options = TLSOptions.client_unsafe(chain)
    elif chain is not None or psk is None:
        options = TLSOptions.client(chain)  # None: the system CA store
    else:
        options = None  # PSK only: the key authenticates the server
    # The default idle timeout (60 s), as every client: a server that vanished
    # is noticed; one that timed us out says so (close_notify).
    host = DTLSHost("*", 0, client_options=options, client_psk=psk)
    try:
        with _StopFlag() as stop:
            status = _run_client(args, host, stop)
            if stop.stopped:
                print(f"interrupted ({stop.how})", file=sys.stderr, flush=True)
                return 128 + stop.signum
            return status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    finally:
        host.close()  # close_notify if still connected


def _run_client(args: argparse.Namespace, host: DTLSHost, stop: _StopFlag) -> int:
    hostname = args.hostname if args.hostname is not None else args.host
    peer = host.connect(args.host, args.port, hostname)
    deadline = time.monotonic() + args.timeout
    while peer.get_status() == PacketPeerDTLS.STATUS_HANDSHAKING and not stop.stopped:
        left = deadline - time.monotonic()
        if left <= 0:
            heard = peer.get_stats().get("datagrams_in", 0)
            print(f"error: no handshake with {args.host}:{args.port} within {args.timeout:g} s "
                  f"({heard} datagrams received from it)", file=sys.stderr)
            return EXIT_FAILURE
        for event in host.service(min(0.1, left)):
            if event.type == HostEventType.DISCONNECT:
                print(f"error: handshake with {args.host}:{args.port} failed: {event.message}",
                      file=sys.stderr)
                return EXIT_FAILURE
    if stop.stopped:
        return EXIT_OK  # (the caller reports the signal; close() sends close_notify)
    print(f"connected to {args.host}:{args.port} ({peer.get_ciphersuite()}, records up to "
          f"{peer.get_max_packet_size()} bytes)", file=sys.stderr, flush=True)
    lines: queue.Queue[bytes | None] = queue.Queue(maxsize=1024)
    threading.Thread(target=_stdin_lines, args=(lines,), daemon=True).start()
    sent = received = 0
    end_of_input: float | None = None

    def show(data: bytes) -> None:
        if args.raw:
            sys.stdout.buffer.write(data + b"\n")
        else:
            sys.stdout.write(_printable(data) + "\n")
    while not stop.stopped:
        while end_of_input is None:
            try:
                line = lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                end_of_input = time.monotonic()
            elif line == _LINE_TOO_LONG:
                print(f"warning: line not sent: longer than {_MAX_LINE} bytes",
                      file=sys.stderr, flush=True)
            elif line:
                try:
                    peer.put_packet(line)
                    sent += 1
                except DTLSPeerError as exc:  # a line longer than one record: skip it
                    print(f"warning: line not sent: {exc}", file=sys.stderr, flush=True)
        if end_of_input is not None and (
            received >= sent or time.monotonic() - end_of_input >= args.linger
        ):
            break
        for event in host.service(0.02):
            if event.type == HostEventType.RECEIVE:
                received += 1
                show(event.data)
                sys.stdout.flush()
            elif event.type == HostEventType.DISCONNECT:
                print(f"disconnected by {args.host}:{args.port} ({event.reason.name.lower()}): "
                      f"{event.message}; {sent} records sent, {received} received",
                      file=sys.stderr)
                return EXIT_OK if event.reason.name == "PEER_CLOSED" else EXIT_FAILURE
    if stop.stopped:
        return EXIT_OK  # (the caller reports the signal; close() sends close_notify)
    peer.disconnect_from_peer()
    host.flush()
    print(f"done: {sent} records sent, {received} received", file=sys.stderr)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Run a DTLS echo server and ``args.clients`` clients on 127.0.0.1 in
    this process, send ``args.messages`` messages per client in lock-step
    rounds and check every echo. Prints handshakes/s and round trips/s, then
    ``PASS`` (exit 0) or ``FAIL <why>`` (exit 1). Bounded by ``args.timeout``.
    Progress lines go to stderr (``--quiet``: none)."""
    progress = _Progress(args.quiet)
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
        return EXIT_FAILURE

    def handshake_progress() -> str:
        done = sum(c.get_status() != PacketPeerDTLS.STATUS_HANDSHAKING for c in clients)
        return f"demo: {done}/{len(clients)} handshakes done"

    progress.say(f"demo: echo server on 127.0.0.1:{port}; {args.clients} clients handshaking")
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
        progress.tick(handshake_progress)
    for client in clients:
        if client.get_status() != PacketPeerDTLS.STATUS_CONNECTED:
            return fail(f"client handshake failed: {client.get_last_error()}")
    handshake_s = time.perf_counter() - started
    print(f"{args.clients} handshakes in {handshake_s:.3f} s: "
          f"{args.clients / handshake_s:.1f} handshakes/s ({clients[0].get_ciphersuite()})")
    progress.say(f"demo: {args.messages} rounds of {args.clients} echoes")

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
        done = round_no + 1
        progress.tick(lambda: f"demo: round {done}/{args.messages}")  # noqa: B023
    echo_s = time.perf_counter() - started
    trips = args.clients * args.messages
    print(f"{trips} round trips in {echo_s:.3f} s: {trips / max(echo_s, 1e-9):.1f} round trips/s")
    for client in clients:
        client.disconnect_from_peer()
    udp_server.stop()
    print(f"PASS {args.clients} clients x {args.messages} messages echoed and verified")
    return EXIT_OK


#: Entry-point group through which installed tools add commands to this CLI.
#: The benchmark runner (``dtlspeer_benchmarks`` in a wheel, ``benchmarks/``
#: in a checkout) registers ``bench`` there: it depends on the library, and
#: the library never imports it.
COMMANDS_ENTRY_POINT_GROUP = "dtlspeer.commands"


def _registered_command(name: str) -> Optional[Callable[..., int]]:
    """The callable an installed package registered as command ``name`` in
    :data:`COMMANDS_ENTRY_POINT_GROUP`, or None when nothing did (dtlspeer
    runs from a source tree, without installed metadata). ImportError when
    what registered it cannot be imported (e.g. the metadata a build leaves
    in a source tree, naming a package that only the wheel installs)."""
    from importlib import metadata

    if sys.version_info >= (3, 10):
        found = list(metadata.entry_points(group=COMMANDS_ENTRY_POINT_GROUP, name=name))
    else:  # pragma: no cover - Python 3.9's entry_points() returns a dict
        found = [e for e in metadata.entry_points().get(COMMANDS_ENTRY_POINT_GROUP, ())
                 if e.name == name]
    if not found:
        return None
    command: Callable[..., int] = found[0].load()
    return command


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmark runner's quick mode plus ``args.bench_args``.

    The runner is the ``bench`` command registered by the installed wheel
    (``dtlspeer_benchmarks``); a source checkout runs it as ``python -m
    benchmarks --quick``."""
    try:
        bench_main = _registered_command("bench")
    except ImportError as exc:
        print(f"error: the benchmark runner registered as `bench` cannot be imported ({exc}); "
              "in a source checkout run `python -m benchmarks --quick`", file=sys.stderr)
        return EXIT_FAILURE
    if bench_main is None:
        print("error: the benchmark runner is not installed (it comes with the wheel as "
              "dtlspeer_benchmarks); in a source checkout run `python -m benchmarks --quick`",
              file=sys.stderr)
        return EXIT_FAILURE
    extra = [a for a in args.bench_args if a != "--"]
    if not ({"-h", "--help"} & set(extra)):
        options = " ".join(["--quick", *extra])
        print(f"bench: running the benchmark runner with `{options}` "
              "(minutes; -v prints every run as it ends)", file=sys.stderr, flush=True)
    return int(bench_main(["--quick", *extra], prog="python -m dtlspeer bench"))


def _add_command(
    sub: Any, name: str, func: Callable[[argparse.Namespace], int], help_text: str,
    description: str, examples: str,
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help_text, description=textwrap.fill(description, 79),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"examples:\n{examples}\n\n{EXIT_STATUS_HELP}",
    )
    parser.set_defaults(func=func, parser=parser)
    return parser


def _add_psk(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--psk-identity", metavar="TEXT", default=None,
                        help="pre-shared key identity (with --psk-hex)")
    parser.add_argument("--psk-hex", metavar="HEX", type=_psk_hex, default=None,
                        help="pre-shared key in hexadecimal (with --psk-identity)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m dtlspeer``."""
    parser = argparse.ArgumentParser(
        prog="python -m dtlspeer",
        description="Godot-style UDP and DTLS 1.2 networking for Python game backends. "
        "`python -m dtlspeer COMMAND --help` describes each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  python -m dtlspeer demo\n"
        "  python -m dtlspeer serve --port 4433 --save-cert server.crt\n"
        "  echo hello | python -m dtlspeer connect 127.0.0.1 4433 --ca server.crt "
        "--hostname localhost\n\n" + EXIT_STATUS_HELP,
    )
    parser.add_argument("--version", action="version",
                        version=f"dtlspeer {__version__} (Mbed TLS {mbedtls_version()})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _add_command(
        sub, "info", cmd_info, "print versions, build configuration and ciphersuites",
        "Print the dtlspeer, Mbed TLS and Python versions, the native build "
        "configuration and the enabled ciphersuites.",
        "  python -m dtlspeer info",
    )

    gen = _add_command(
        sub, "gen-cert", cmd_gen_cert,
        "write a private key and a self-signed certificate for a host name or IP",
        "Generate a private key and a self-signed certificate whose CN and "
        "subjectAltName name HOST (a DNS name or an IPv4/IPv6 address). Clients "
        "trust it with `connect --ca HOST.crt` or TLSOptions.client(cert).",
        "  python -m dtlspeer gen-cert game.example\n"
        "  python -m dtlspeer gen-cert 127.0.0.1 --key-out server.key --cert-out server.crt\n"
        "  python -m dtlspeer gen-cert ::1 --key-type rsa --rsa-bits 3072 --days 30",
    )
    gen.add_argument("host", metavar="HOST", help="host name or IP address the certificate is for")
    gen.add_argument("--key-type", choices=["p-256", "p-384", "rsa"], default="p-256",
                     help="key algorithm (default p-256, the fastest to handshake)")
    gen.add_argument("--rsa-bits", type=int, default=2048,
                     help="RSA key size, 2048..4096 (default 2048)")
    gen.add_argument("--days", type=_days, default=365,
                     help="validity in days (default 365)")
    gen.add_argument("--organization", default="dtlspeer",
                     help="O= of the subject (default dtlspeer)")
    gen.add_argument("--country", default="IT", help="C= of the subject (default IT, as Godot)")
    gen.add_argument("--key-out", metavar="PATH",
                     help="key file (default HOST.key; written as a new file, mode 0600)")
    gen.add_argument("--cert-out", metavar="PATH", help="certificate file (default HOST.crt)")
    gen.add_argument("--force", action="store_true",
                     help="replace existing key and certificate files (default: refuse)")
    gen.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")

    serve = _add_command(
        sub, "serve", cmd_serve, "run a DTLS echo server (batch host) until stopped",
        "Run a DTLS echo server on a DTLSHost: every record a client sends comes back "
        "to it. Credentials: --cert/--key, or --psk-identity/--psk-hex, or both; with "
        "neither, a throwaway self-signed P-256 certificate for localhost, 127.0.0.1 and "
        "::1 is generated (--save-cert writes it for `connect --ca`). Prints `listening on "
        "ADDRESS:PORT ...`, one line per connect, disconnect and failed handshake, and "
        "statistics when stopped by --duration, Ctrl-C or SIGTERM (exit status 0).",
        "  python -m dtlspeer serve --port 4433 --save-cert server.crt\n"
        "  python -m dtlspeer serve --cert game.example.crt --key game.example.key\n"
        "  python -m dtlspeer serve --bind 127.0.0.1 --port 0 --psk-identity player "
        "--psk-hex 00112233445566778899aabbccddeeff --duration 60",
    )
    serve.add_argument("--port", type=_port, default=4433,
                       help="UDP port, 0 for any free one (default 4433)")
    serve.add_argument("--bind", default="*", metavar="ADDRESS",
                       help="local IP address; * (the default) is IPv6 dual-stack, IPv4 too")
    serve.add_argument("--cert", metavar="PATH", help="certificate chain, PEM or DER, leaf first")
    serve.add_argument("--key", metavar="PATH", help="private key of the certificate")
    serve.add_argument("--save-cert", metavar="PATH",
                       help="write the generated throwaway certificate here")
    _add_psk(serve)
    serve.add_argument("--duration", type=_seconds, default=None, metavar="SECONDS",
                       help="stop after this long (default: run until Ctrl-C or SIGTERM)")
    serve.add_argument("--idle-timeout", type=_milliseconds_setting, default=60.0,
                       metavar="SECONDS",
                       help="drop clients silent this long, 0 = never (default 60)")
    serve.add_argument("--max-receive-size", type=_record_size, default=1392, metavar="BYTES",
                       help="drop (and count) records larger than this; 0 = any up to 16384 "
                       "(default 1392, ENet's datagram size)")
    serve.add_argument("--max-peers", type=_positive_int, default=4096, metavar="N",
                       help="connections at once, handshaking + connected (default 4096)")
    serve.add_argument("--workers", type=_worker_count, default=1, metavar="N",
                       help="processes sharing the port (SO_REUSEPORT, POSIX), with one "
                       "cookie secret and Connection ID steering on Linux (default 1)")

    connect = _add_command(
        sub, "connect", cmd_connect, "send stdin lines to a DTLS server and print its replies",
        "Handshake with HOST:PORT (certificate verified against --ca, or the system CA "
        "store, and HOST or --hostname), send every line of standard input as one record "
        "(newline removed, empty lines skipped) and print every record received as one "
        "line on stdout. Status lines go to stderr. At the end of input it waits for "
        "outstanding replies (until as many records came back as were sent, at most "
        "--linger seconds), sends close_notify and exits 0.",
        "  echo hello | python -m dtlspeer connect 127.0.0.1 4433 --ca server.crt "
        "--hostname localhost\n"
        "  python -m dtlspeer connect game.example 4433          # system CA store\n"
        "  python -m dtlspeer connect 127.0.0.1 4433 --insecure  # no verification (testing only)\n"
        "  python -m dtlspeer connect 127.0.0.1 4433 --psk-identity player "
        "--psk-hex 00112233445566778899aabbccddeeff",
    )
    connect.add_argument("host", metavar="HOST", help="server IP address or host name")
    connect.add_argument("port", metavar="PORT", type=_remote_port, help="server UDP port")
    connect.add_argument("--ca", metavar="PATH",
                         help="trusted certificate(s), PEM or DER (default: the system CA store)")
    connect.add_argument("--hostname", metavar="NAME",
                         help="name the certificate must carry, sent as SNI (default: HOST)")
    connect.add_argument("--insecure", action="store_true",
                         help="TLSOptions.client_unsafe: never check the name; without --ca "
                         "accept any certificate (development only)")
    _add_psk(connect)
    connect.add_argument("--timeout", type=_seconds, default=10.0, metavar="SECONDS",
                         help="give up (exit 1) if the handshake takes longer (default 10)")
    connect.add_argument("--raw", action="store_true",
                         help="print received records as raw bytes (default: control "
                         "characters and bytes that are not UTF-8 are printed escaped, so a "
                         "server cannot send terminal escape sequences)")
    connect.add_argument("--linger", type=_seconds, default=2.0, metavar="SECONDS",
                         help="after the end of input, wait at most this long for replies "
                         "(default 2)")

    demo = _add_command(
        sub, "demo", cmd_demo,
        "run a DTLS echo server and clients on 127.0.0.1 and report throughput",
        "Start a DTLS echo server (UDPServer + DTLSServer, self-signed P-256 certificate) "
        "and N clients (PacketPeerDTLS) in this process on 127.0.0.1, exchange messages, "
        "verify every echo and print handshakes/s and round trips/s, then PASS (exit 0) "
        "or FAIL (exit 1). Progress lines go to stderr.",
        "  python -m dtlspeer demo\n"
        "  python -m dtlspeer demo --clients 100 --messages 1000 --timeout 300",
    )
    demo.add_argument("--clients", type=_positive_int, default=8,
                      help="number of clients (default 8)")
    demo.add_argument("--messages", type=_positive_int, default=100,
                      help="messages per client (default 100)")
    demo.add_argument("--timeout", type=_seconds, default=60.0, metavar="SECONDS",
                      help="give up (FAIL) after this long (default 60)")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")

    bench = _add_command(
        sub, "bench", cmd_bench,
        "run the quick benchmark table (plain UDP vs dtlspeer vs pyOpenSSL/trio)",
        "Run the benchmark runner's quick mode (installed with the wheel as "
        "dtlspeer_benchmarks; `python -m benchmarks --quick` in a source checkout); every "
        "further argument is passed to it "
        "(`python -m dtlspeer bench -- --help` lists them). Exit 1 if a run failed.",
        "  python -m dtlspeer bench\n"
        "  python -m dtlspeer bench --only pingpong --runs 5 -v",
    )
    bench.set_defaults(bench_args=[])
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit status (see the module docstring)."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"] and argv[1:] not in (["-h"], ["--help"]):
        args = parser.parse_args(["bench"])  # the rest belongs to the benchmark runner
        args.bench_args = argv[1:]
    else:
        args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `python -m dtlspeer info | head`
        sys.stderr.close()
        return EXIT_OK
    except (DTLSPeerError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())

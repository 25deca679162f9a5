"""Shared harness of the benchmark runner: configuration, certificates,
payload checks, the two-process runner, statistics and the result table.

Every library adapter (``benchmarks/libs/*.py``) exposes, per metric it
supports, a ``<metric>_server(cfg, ready, stop)`` and a
``<metric>_client(cfg, port, stop)`` function returning a result dict. The
runner starts each in its own process; nothing here is library specific.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import multiprocessing as mp
import os
import queue
import select
import socket
import statistics
import struct
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

HOST = "127.0.0.1"
MTU = 1200
RCVBUF = 1 << 22  # every fan-in receiver gets the same socket buffer

Result = dict[str, Any]


@dataclass
class Cfg:
    """What one measurement run needs (picklable: sent to both processes)."""

    seconds: float = 2.0
    payload: int = 100
    clients: int = 64  # fan-in senders
    concurrency: int = 4  # handshakes in flight
    conns: int = 10_000  # idle connections for the memory metric
    timeout: float = 120.0  # hard bound of one run, seconds
    key_pem: bytes = b""
    cert_pem: bytes = b""
    extra: dict[str, Any] = field(default_factory=dict)


# -- certificates ---------------------------------------------------------------


def make_certificate() -> tuple[bytes, bytes]:
    """A P-256 key and a self-signed certificate for 127.0.0.1 (PEM).

    Made with ``cryptography`` (a dependency of pyOpenSSL) when present,
    else with dtlspeer's own ``Crypto``; every library loads the same pair."""
    try:
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return key_pem, cert.public_bytes(serialization.Encoding.PEM)
    except ImportError:
        from dtlspeer import Crypto

        crypto = Crypto()
        key = crypto.generate_ec("P-256")
        cert = crypto.generate_self_signed_certificate(
            key, f"CN={HOST},O=dtlspeer bench,C=IT", ip_addresses=[HOST]
        )
        return key.save_to_string().encode(), cert.save_to_string().encode()


# -- payloads -------------------------------------------------------------------

_HEAD = struct.Struct("!HI")


def payload(size: int, client: int = 0, seq: int = 0) -> bytes:
    """A ``size``-byte message naming its client and sequence number."""
    head = _HEAD.pack(client, seq)
    return head + bytes((client + i) & 0xFF for i in range(size - len(head)))


def check_fanin(inbox: Sequence[Sequence[bytes]], size: int) -> tuple[int, int, int]:
    """Verify fan-in deliveries after the timed part.

    ``inbox`` holds one list of received payloads per sender connection.
    Returns (messages, bad, senders_seen): ``bad`` counts messages with the
    wrong size or body, a sender id mixed into another connection's list,
    or a sequence number that is not strictly increasing (duplicate or
    reordered)."""
    total = bad = 0
    seen = 0
    for msgs in inbox:
        if not msgs:
            continue
        seen += 1
        owner = _HEAD.unpack_from(msgs[0])[0]
        body = payload(size, owner)[_HEAD.size:]
        last = -1
        for m in msgs:
            total += 1
            client, seq = _HEAD.unpack_from(m)
            if len(m) != size or client != owner or seq <= last or m[_HEAD.size:] != body:
                bad += 1
            last = seq
    return total, bad, seen


# -- small helpers used by adapters -----------------------------------------------


def rss_bytes() -> int | None:
    """Resident set size of this process (Linux ``/proc``), None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def raise_fd_limit(want: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards ``want``; returns the new limit."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        if soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        return soft
    except (ImportError, ValueError, OSError):
        return 1024


def wait_readable(fds: Sequence[Any], timeout: float) -> list[Any]:
    """The members of ``fds`` (objects with ``fileno()``) that are readable.

    ``poll`` where available (``select`` cannot take descriptors >= 1024,
    which the memory metric's 10 000 client sockets reach)."""
    if not fds:
        time.sleep(timeout)
        return []
    if not hasattr(select, "poll"):
        return select.select(fds, [], [], timeout)[0]
    poller = select.poll()
    by_fd = {}
    for obj in fds:
        fd = obj if isinstance(obj, int) else obj.fileno()
        by_fd[fd] = obj
        poller.register(fd, select.POLLIN)
    return [by_fd[fd] for fd, _ in poller.poll(timeout * 1000)]


def loopback_source(i: int, per_address: int = 2) -> str | None:
    """The local address of client ``i`` when a benchmark spreads clients
    over loopback addresses (Linux routes all of 127.0.0.0/8 to ``lo``):
    ``per_address`` clients per address 127.88.x.y, as players come from many
    addresses and servers limit handshakes in flight per address (the
    Godot-style UDPServer to 4 pending per address). None elsewhere: every
    client then uses 127.0.0.1."""
    if not sys.platform.startswith("linux"):
        return None
    j = i // per_address
    return f"127.88.{j // 250}.{1 + j % 250}"


def plain_server_socket() -> socket.socket:
    """A bound non-blocking UDP socket on 127.0.0.1 with the shared RCVBUF."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    s.bind((HOST, 0))
    s.setblocking(False)
    return s


class Stop:
    """Cheap polling of the runner's stop event plus a hard deadline."""

    def __init__(self, event: Any, timeout: float) -> None:
        self.event = event
        self.deadline = time.monotonic() + timeout
        self.n = 0

    def now(self) -> bool:
        """Check the event (one syscall): use when idle."""
        return self.event.is_set() or time.monotonic() > self.deadline

    def every(self, k: int = 2048) -> bool:
        """Check the event once every ``k`` calls: use in hot loops."""
        self.n += 1
        if self.n % k:
            return False
        return self.now()


# -- libraries ---------------------------------------------------------------------


@dataclass(frozen=True)
class Lib:
    """One implementation row: display name, adapter module, metrics it runs."""

    key: str
    title: str
    module: str
    metrics: tuple[str, ...]
    requires: tuple[str, ...] = ()
    absent: str = "not installed"  # shown when a required module is missing

    def missing(self) -> str | None:
        """None if importable, else the reason shown in the table."""
        for mod in self.requires:
            try:
                importlib.import_module(mod)
            except ImportError:
                return self.absent
            except Exception as exc:  # broken install
                return f"unusable ({type(exc).__name__}: {exc})"
        try:
            adapter = importlib.import_module(self.module)
        except ImportError as exc:
            return f"not installed ({exc})"
        probe = getattr(adapter, "available", None)
        if probe is not None:
            return probe()  # type: ignore[no-any-return]
        return None


# -- the two-process runner -----------------------------------------------------------


def _entry(module: str, func: str, cfg: Cfg, arg: Any, out: Any, stop: Any, role: str) -> None:
    try:
        fn: Callable[..., Result] = getattr(importlib.import_module(module), func)
        if role == "server":
            res = fn(cfg, lambda port: out.put(("ready", port)), stop)
        else:
            res = fn(cfg, arg, stop)
        out.put((role, res))
    except BaseException as exc:  # report, never hang the runner
        out.put((role, {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}))


def _context() -> Any:
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


def run_pair(lib: Lib, metric: str, cfg: Cfg) -> Result:
    """Run ``metric`` of ``lib``: server and client in two fresh processes.

    The first result to arrive (client done, or server measured) sets the
    stop event; both results are merged (server keys prefixed ``server_``).
    Bounded by ``cfg.timeout``: stragglers are terminated and the run
    reported as failed."""
    ctx = _context()
    out = ctx.Queue()
    stop = ctx.Event()
    procs = []
    deadline = time.monotonic() + cfg.timeout + 15
    try:
        srv = ctx.Process(
            target=_entry, args=(lib.module, f"{metric}_server", cfg, None, out, stop, "server"),
            daemon=True,
        )
        srv.start()
        procs.append(srv)
        got: dict[str, Result] = {}
        port = None
        while port is None:
            try:
                kind, value = out.get(timeout=max(0.1, min(30.0, deadline - time.monotonic())))
            except queue.Empty:
                return {"error": "server did not start"}
            if kind == "ready":
                port = value
            else:
                err = value.get("error")
                return {"error": f"server failed: {err}", "trace": value.get("trace")}
        cli = ctx.Process(
            target=_entry, args=(lib.module, f"{metric}_client", cfg, port, out, stop, "client"),
            daemon=True,
        )
        cli.start()
        procs.append(cli)
        while len(got) < 2:
            left = deadline - time.monotonic()
            if left <= 0:
                got.setdefault("client", {"error": "timed out"})
                got.setdefault("server", {"error": "timed out"})
                break
            try:
                kind, value = out.get(timeout=min(left, 1.0))
            except queue.Empty:
                if not cli.is_alive() and "client" not in got:
                    got["client"] = {"error": f"client process died (exit {cli.exitcode})"}
                    stop.set()
                if not srv.is_alive() and "server" not in got:
                    got["server"] = {"error": f"server process died (exit {srv.exitcode})"}
                    stop.set()
                continue
            got[kind] = value
            stop.set()
        res = dict(got.get("client", {}))
        for k, v in got.get("server", {}).items():
            res[f"server_{k}"] = v
        if "server_error" in res and "error" not in res:
            res["error"] = f"server: {res['server_error']}"
            res["trace"] = res.get("server_trace")
        return res
    finally:
        stop.set()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join(timeout=2)


# -- metrics and the table ---------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """A metric: how to read its value from a run, its baseline and target."""

    key: str
    title: str
    unit: str
    value_key: str
    baseline: str  # Lib.key of the baseline row
    higher_is_better: bool = True
    target_ratio: float | None = None  # dtlspeer rows: value/baseline >= this (<= if lower
    # is better)
    target_abs: float | None = None  # dtlspeer rows: value <= this (memory)
    target_text: str = ""
    requires: tuple[str, ...] = ()  # modules the metric's own load generator needs
    row_targets: tuple[tuple[str, float | None], ...] = ()  # (Lib.key, ratio or None: no
    # target): overrides target_ratio

    def missing(self) -> str | None:
        """None if the load generator can run, else the reason shown in every row."""
        for mod in self.requires:
            try:
                importlib.import_module(mod)
            except ImportError:
                return f"n/a (this metric's load generator needs {mod}: not installed)"
        return None


@dataclass
class Row:
    """Aggregated runs of one library for one metric."""

    lib: Lib
    values: list[float] = dataclasses.field(default_factory=list)
    ratios: list[float] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)
    status: str = ""  # non-empty: not measured (not installed, unsupported)
    details: list[Result] = dataclasses.field(default_factory=list)

    @property
    def value(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    @property
    def ratio(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None


def fmt_value(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit in ("KiB/conn", "us/hello"):
        return f"{v:,.1f} {unit}"
    return f"{v:,.0f} {unit}"


def verdict(metric: Metric, row: Row) -> str:
    """'ok' / 'MISS' for dtlspeer rows with a target, '' otherwise."""
    if not row.lib.key.startswith("dtlspeer") or row.lib.key == "dtlspeer-udp" \
            or row.lib.key == metric.baseline:
        return ""
    if metric.target_abs is not None and row.value is not None:
        return "ok" if row.value <= metric.target_abs else "MISS"
    target = dict(metric.row_targets).get(row.lib.key, metric.target_ratio)
    if target is not None and row.ratio is not None:
        if metric.higher_is_better:
            return "ok" if row.ratio >= target else "MISS"
        return "ok" if row.ratio <= target else "MISS"
    return ""


def print_table(metric: Metric, rows: Sequence[Row], runs: int, note: str) -> None:
    """One block per metric: value, ratio vs the same-run baseline, target."""
    print(f"\n== {metric.title}  [{note}]")
    print(f"   target: {metric.target_text}; ratio = median of per-run ratios vs "
          f"{metric.baseline} measured in the same run")
    print(f"   {'implementation':<38}{'median':>20}{'ratio':>9}  {'target':<6} "
          "per-run ratios / notes")
    for row in rows:
        if row.status:
            print(f"   {row.lib.title:<38}{row.status}")
            continue
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x"
        per_run = ", ".join(f"{r:.2f}" for r in row.ratios)
        notes = "; ".join(dict.fromkeys(row.problems))
        extra = f"  [{per_run}]" if per_run else ""
        if notes:
            extra += f"  {notes}"
        print(f"   {row.lib.title:<38}{fmt_value(row.value, metric.unit):>20}{ratio:>9}  "
              f"{verdict(metric, row):<6}{extra}")
    sys.stdout.flush()


# -- building blocks shared by the adapters -------------------------------------------


def stamp(buf: bytearray, client: int, seq: int) -> bytearray:
    """Write (client, seq) into the head of a payload buffer made by ``payload``."""
    _HEAD.pack_into(buf, 0, client, seq)
    return buf


class FaninSink:
    """Receiver-side bookkeeping of the fan-in metric.

    Call ``mark(total_so_far)`` after each receive batch; the rate is the
    messages delivered after the first batch divided by the time from the
    first batch to the last one (handshakes and idle tails excluded)."""

    def __init__(self) -> None:
        self.t_first = 0.0
        self.t_last = 0.0
        self.at_first = -1
        self.count = 0

    def mark(self, total: int) -> None:
        if total != self.count:
            now = time.perf_counter()
            if self.at_first < 0:
                self.t_first, self.at_first = now, total
            self.t_last = now
            self.count = total

    def result(self, inbox: Sequence[Sequence[bytes]], size: int) -> Result:
        got, bad, seen = check_fanin(inbox, size)
        span = self.t_last - self.t_first
        value = (self.count - self.at_first) / span if span > 0 else 0.0
        return {"value": value, "count": got, "bad": bad, "senders": seen}


class PingClient:
    """Client-side loop of the ping-pong metric, library-agnostic.

    ``send(data)`` sends one message; ``recv(timeout)`` returns the next
    echo or None on timeout. Runs a 200-trip warm-up, then ``seconds`` of
    one-in-flight round trips, verifying every echo byte for byte."""

    def __init__(self, cfg: Cfg) -> None:
        self.cfg = cfg
        self.msgs = [payload(cfg.payload, 0, i) for i in range(256)]

    def run(self, send: Callable[[bytes], Any], recv: Callable[[float], bytes | None]) -> Result:
        msgs = self.msgs
        lost = bad = 0
        for i in range(200):
            send(msgs[i & 255])
            if recv(2.0) != msgs[i & 255]:
                return {"error": "warm-up echo lost or wrong"}
        n = 0
        start = time.perf_counter()
        end = start + self.cfg.seconds
        while True:
            m = msgs[n & 255]
            send(m)
            echo = recv(2.0)
            if echo is None:
                lost += 1
                if lost > 5:
                    break
            elif echo != m:
                bad += 1
            n += 1
            if not n & 63 and time.perf_counter() >= end:
                break
        elapsed = time.perf_counter() - start
        return {"value": (n - lost) / elapsed, "count": n, "lost": lost, "bad": bad}


def blast(sends: list[Callable[[Any], Any]], bufs: list[bytearray], cfg: Cfg,
          close: Callable[[], Any]) -> Result:
    """Send rounds (one message per sender) for ``cfg.seconds``; shared by
    every adapter's fan-in client. A send that raises counts as not sent."""
    sent = failed = 0
    seq = 0
    pairs = list(enumerate(zip(sends, bufs)))
    end = time.perf_counter() + cfg.seconds
    while time.perf_counter() < end:
        for i, (send, buf) in pairs:
            stamp(buf, i, seq)
            try:
                send(buf)
                sent += 1
            except OSError:
                failed += 1
        seq += 1
        time.sleep(0)  # yield: on a loaded 2-core machine the receiver needs the CPU
    time.sleep(0.2)
    close()
    return {"sent": sent, "send_failed": failed}


def server_cpu(serve: Callable[[Cfg, Callable[[int], None], Any], Result],
               cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    """Run a handshake server and add its process CPU per established
    handshake (``cpu_ms``): the server-capacity metric's second number,
    steadier than rates on a shared machine."""
    t0 = time.process_time()
    res = serve(cfg, ready, stop)
    cpu = time.process_time() - t0
    done = res.get("established", res.get("closed")) or 0
    if done:
        res["cpu_ms"] = 1000 * cpu / done
    return res


def prebuilt_count(cfg: Cfg) -> int:
    """Messages per sender for the ``faninsrv`` metric: enough for
    ``cfg.seconds`` at 150 000 msg/s in total (above every receiver
    measured here); if senders run out early the rate is still measured
    over the server's busy span."""
    return int(150_000 * cfg.seconds / max(1, cfg.clients)) + 1


def blast_prebuilt(sends: list[Callable[[Any], Any]], msgs: list[list[bytes]], cfg: Cfg,
                   close: Callable[[], Any]) -> Result:
    """The ``faninsrv`` sender, identical for every row: round-robin one
    ``send`` of a datagram built before the timed part (plaintext for plain
    UDP, a DTLS record for the DTLS rows) per sender, until the time or the
    datagrams run out."""
    sent = failed = 0
    per = min(len(m) for m in msgs)
    end = time.perf_counter() + cfg.seconds
    for k in range(per):
        for send, queue_ in zip(sends, msgs):
            try:
                send(queue_[k])
                sent += 1
            except OSError:
                failed += 1
        time.sleep(0)
        if not k & 7 and time.perf_counter() >= end:
            break
    time.sleep(0.2)
    close()
    return {"sent": sent, "send_failed": failed}


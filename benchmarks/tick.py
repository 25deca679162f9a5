"""The game-tick workload (``python -m benchmarks --only tick`` / ``--only tickramp``):
the server clock, the load generator and the measurements, shared by every
server adapter (``tick_server`` in ``benchmarks/libs/*.py``).

What a game server does every tick, at a fixed rate (``--hz``, default 60):
read every player's input (``--input`` bytes, default 40), then send every
player its own snapshot (``--snapshot`` bytes, default 300; the full run adds
a 1 200 B row). Snapshots differ per player and per tick in their first 6
bytes (player slot, tick number), as delta snapshots do, so no
implementation can encrypt once for everybody.

* **Server** (one process, one thread): every tick it calls the adapter's
  ``drain()`` once (non-blocking: every waiting datagram / event; inputs go
  into a list), then its ``send(tick)`` (one snapshot per connected client),
  then sleeps until the next tick. Every row has the same loop
  (:class:`TickClock`); only drain/send differ.
* **Clients** (a second process): N clients, each on its own UDP socket
  (two per loopback address 127.88.x.y, as players come from many
  addresses and servers limit handshakes in flight per address), each
  sending one input per client tick (its own 60 Hz clock). DTLS rows share
  one load generator, dtlspeer's sans-I/O engine: handshakes in batches of
  32, then every input record is encrypted BEFORE the timed part, so the
  generator's own CPU does not decide the result; plain UDP's generator
  sends plaintext the
  same way. Snapshots are counted per socket (datagrams at least
  ``--snapshot`` bytes long); the first :data:`VERIFIED` clients decrypt
  and check every snapshot (size, body, one constant player slot per
  client, increasing tick numbers). The ENet-over-DTLS row
  (``benchmarks/libs/dtlspeer_enet.py``) has its own generator: real
  ``ENetConnection`` DTLS clients, one per client, whose inputs cannot be
  prepared before the timed part (ENet numbers every datagram).

Measurements (the server's timed window: ``--seconds`` x ``--hz`` ticks, or
``--seconds`` of wall time if the server is behind, after every client
delivered an input once all were connected, and :data:`WARMUP_S` of warm-up):

* **value**: client-ticks per server CPU second = N x ticks / (user + system
  CPU of the server process, ``getrusage``); the note shows the same as
  microseconds of server CPU per client-tick. CPU time, not wall time: it
  is robust on a shared machine (runs on a quiet machine are still better).
  Ratio = value / plain UDP's value in the same run (efficiency: 0.9x means
  plain UDP needs 0.9 of our CPU per client-tick).
* **inputs delivered**: every input carries (client, client-tick); inputs of
  client-ticks sent during the window are counted wherever they arrive
  (until :data:`TAIL_S` after it) against N per client-tick: lost inputs
  show as ``lost x% inputs``.
* **snapshots received**: the generator's count of snapshot datagrams
  against the server's count of snapshots it handed to its socket layer
  (whole run): ``lost x% snapshots``.
* **held the tick**: a tick whose work (drain + send, wall time) took
  longer than the tick period is *late*; more than 1 % late ticks in the
  window is reported as ``BEHIND``. ``lag`` is how far behind its schedule
  a tick started at worst (sleep overshoot on a loaded machine shows there,
  not as late ticks).

``tickramp`` runs the same workload at growing N (``--ramp-start``,
doubling, then one bisection step) and reports the largest N at which the
server held the tick (<= 1 % late ticks, <= 1 % inputs lost) and the
projection ``1 / (hz x CPU per client-tick)``: the N one core would hold
if nothing else ran. The load generator (one Python process) tops out at
a few thousand clients; a row whose generator fell behind its own clock
says so (``generator lag``).
"""

from __future__ import annotations

import collections
import resource
import select
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

from .harness import HOST, Cfg, Result, Stop, loopback_source, raise_fd_limit, wait_readable

HZ = 60
INPUT = 40
SNAPSHOT = 300
CLIENTS = (200, 1000)
SNAPSHOTS = (300, 1200)
WARMUP_S = 0.5
TAIL_S = 0.25
LATE_LIMIT = 0.01  # more late ticks than this share of the window: BEHIND
VERIFIED = 2  # clients that decrypt and check every snapshot
HANDSHAKE_BATCH = 32
CLIENTS_PER_ADDRESS = 2

HEAD = struct.Struct("!HI")  # (client or slot, tick): the bytes that differ per message
_unpack_head = HEAD.unpack_from


def settings(cfg: Cfg) -> tuple[int, int, int]:
    """(hz, input bytes, snapshot bytes) of a run."""
    extra = cfg.extra
    return (int(extra.get("hz", HZ)), int(extra.get("input", INPUT)),
            int(extra.get("snapshot", SNAPSHOT)))


def dtls_mtu(cfg: Cfg) -> int:
    """Datagram size the DTLS tick servers allow (``DTLSSettings.mtu``): the
    default 1200 cannot carry a 1200 B snapshot in one record (29-37 B of
    record overhead), so every DTLS row gets room for the snapshot."""
    return max(1200, settings(cfg)[2] + 64)


def body(size: int) -> bytes:
    """The constant part of a message of ``size`` bytes (after HEAD)."""
    return bytes((7 * i) & 0xFF for i in range(size - HEAD.size))


class Snapshots:
    """Builds each client's snapshot: ``make(slot, tick)`` is one pack and
    one concatenation (a new ``bytes``, as a game builds one per player)."""

    def __init__(self, cfg: Cfg) -> None:
        size = settings(cfg)[2]
        tail = body(size)
        pack = HEAD.pack
        self.size = size
        self.make: Callable[[int, int], bytes] = lambda slot, tick: pack(slot, tick) + tail


class TickClock:
    """The server's fixed-rate loop and its measurements, the same for every row.

    Use::

        clock = TickClock(cfg, stop)
        while not clock.done:
            clock.begin()
            inputs = drain()                 # every waiting input, as bytes
            sent = send(clock.tick)          # snapshots handed to the socket layer
            clock.end(inputs, peers, sent)   # peers: connected clients
            time.sleep(clock.sleep_s())      # or await asyncio.sleep(...)
        return clock.result()
    """

    def __init__(self, cfg: Cfg, stop: Any) -> None:
        self.hz, _, _ = settings(cfg)
        self.period = 1.0 / self.hz
        self.want = cfg.clients
        self.seconds = cfg.seconds
        self.guard = Stop(stop, cfg.timeout)
        self.tick = 0
        self.done = False
        self.error = ""
        self.phase = "setup"
        self.phase_end = 0
        self.ticking: set[int] = set()  # setup: clients whose inputs arrived since all connected
        self.t_next = time.perf_counter()
        self.t_begin = 0.0
        self.snapshots_sent = 0
        self.max_seq = -1
        self.first_seq = 1 << 62  # inputs of client-ticks >= this are counted
        self.last_seq = 1 << 62
        self.per_seq: collections.Counter[int] = collections.Counter()
        self.window_ticks = 0
        self.late = 0
        self.worst_busy = 0.0
        self.worst_lag = 0.0
        self.cpu0 = self.cpu1 = 0.0
        self.wall0 = self.wall1 = 0.0

    @staticmethod
    def _cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def begin(self) -> None:
        """Start of a tick's work."""
        self.t_begin = now = time.perf_counter()
        if self.phase == "window":
            self.worst_lag = max(self.worst_lag, now - self.t_next)

    def end(self, inputs: Sequence[bytes], peers: int, sent: int) -> None:
        """End of a tick's work: account for it and move the phases on."""
        busy = time.perf_counter() - self.t_begin
        self.snapshots_sent += sent
        top = self.max_seq
        first = self.first_seq
        per_seq = self.per_seq
        for data in inputs:
            seq = _unpack_head(data)[1]
            if seq > top:
                top = seq
            if seq >= first:
                per_seq[seq] += 1
        self.max_seq = top
        phase = self.phase
        if phase == "window":
            self.window_ticks += 1
            self.late += busy > self.period
            self.worst_busy = max(self.worst_busy, busy)
            # hz x seconds ticks, or seconds of wall time for a server that
            # cannot hold the tick (its runs stay bounded)
            if self.tick >= self.phase_end or time.perf_counter() - self.wall0 >= self.seconds:
                self.cpu1, self.wall1 = self._cpu(), time.perf_counter()
                # Client-ticks sent well inside the window (inputs take under a tick to arrive).
                self.last_seq = max(self.first_seq, self.max_seq - 2)
                self.phase, self.phase_end = "tail", self.tick + max(2, int(TAIL_S * self.hz))
        elif phase == "setup":
            # Every client is ticking once each one's input arrived since all
            # connected: counted per client, not per tick, since a generator
            # whose tick takes longer to send (the ENet row's) spreads one
            # client-tick's inputs over two server ticks.
            if peers >= self.want:
                self.ticking.update([_unpack_head(data)[0] for data in inputs])
            if peers >= self.want and len(self.ticking) >= self.want:
                self.phase, self.phase_end = "warmup", self.tick + max(1, int(WARMUP_S * self.hz))
            elif self.guard.now():
                self.error = f"setup: {peers} of {self.want} clients connected"
                self.done = True
        elif phase == "warmup":
            if self.tick >= self.phase_end:
                self.first_seq = self.max_seq + 2
                window = max(1, round(self.seconds * self.hz))
                self.phase, self.phase_end = "window", self.tick + window
                self.cpu0, self.wall0 = self._cpu(), time.perf_counter()
        elif self.tick >= self.phase_end:  # tail over
            self.done = True
        if self.phase != "setup" and self.guard.every(16):
            self.error = self.error or (
                f"stopped in the {self.phase} phase (the load generator gave up after "
                "--timeout: this server was too slow to get every client connected and ticking)")
            self.done = True
        self.tick += 1

    def sleep_s(self) -> float:
        """Seconds to sleep until the next tick (0 when behind: the schedule
        is kept, a late server catches up without skipping ticks)."""
        self.t_next += self.period
        left = self.t_next - time.perf_counter()
        if left < -1.0:  # hopelessly behind (setup, or a stalled machine): restart the schedule
            self.t_next = time.perf_counter()
            return 0.0
        return max(0.0, left)

    def result(self) -> Result:
        if self.phase in ("setup", "warmup", "window"):  # the window never ended
            return {"error": self.error or f"ended in the {self.phase} phase"}
        cpu = self.cpu1 - self.cpu0
        client_ticks = self.want * self.window_ticks
        expected = self.want * max(0, self.last_seq - self.first_seq + 1)
        delivered = sum(n for seq, n in self.per_seq.items() if seq <= self.last_seq)
        us = 1e6 * cpu / client_ticks if client_ticks else 0.0
        return {
            "value": client_ticks / cpu if cpu > 0 else 0.0,
            "cpu_us": us,
            "cpu_share": cpu / max(1e-9, self.wall1 - self.wall0),  # of one core
            "ticks": self.window_ticks,
            "late": self.late,
            "worst_busy_ms": 1000 * self.worst_busy,
            "worst_lag_ms": 1000 * self.worst_lag,
            "inputs_expected": expected,
            "inputs_delivered": delivered,
            "snapshots_sent": self.snapshots_sent,
            "hz": self.hz,
            "clients": self.want,
        }


@dataclass
class TickParts:
    """A synchronous row's server, as the tick loop (and the instruction
    profile, ``benchmarks/tick_profile.py``) drives it."""

    port: int
    drain: Callable[[], list[bytes]]  # every waiting input (handshakes run here too)
    send: Callable[[int], int]  # one snapshot per connected client; returns how many
    peers: Callable[[], int]  # connected clients
    close: Callable[[], Any]


def serve_parts(cfg: Cfg, ready: Callable[[int], None], stop: Any,
                make: Callable[[Cfg], TickParts]) -> Result:
    """The server loop of every synchronous row (see :class:`TickClock`)."""
    parts = make(cfg)
    ready(parts.port)
    drain, send, peers = parts.drain, parts.send, parts.peers
    try:
        clock = TickClock(cfg, stop)
        while not clock.done:
            clock.begin()
            inputs = drain()
            sent = send(clock.tick)
            clock.end(inputs, peers(), sent)
            left = clock.sleep_s()
            if left:
                time.sleep(left)
        return clock.result()
    finally:
        parts.close()


# -- the load generator -------------------------------------------------------------------


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


def prebuilt_ticks(cfg: Cfg) -> int:
    """Inputs prepared per client: the whole run at the client's rate with slack."""
    hz = settings(cfg)[0]
    return int(hz * (cfg.seconds + WARMUP_S + TAIL_S + 3.0)) + 1


class _Verifier:
    """Decrypts (DTLS) and checks every snapshot one client receives."""

    def __init__(self, open_: Callable[[bytes], list[bytes]], size: int) -> None:
        self.open = open_
        self.size = size
        self.tail = body(size)
        self.slot = -1
        self.last_tick = -1
        self.checked = 0
        self.bad = 0

    def check(self, datagram: bytes) -> None:
        for snap in self.open(datagram):
            self.checked += 1
            if len(snap) != self.size or snap[HEAD.size:] != self.tail:
                self.bad += 1
                continue
            slot, tick = _unpack_head(snap)
            if self.slot < 0:
                self.slot = slot
            if slot != self.slot or tick <= self.last_tick:
                self.bad += 1
            self.last_tick = tick


def run_generator(cfg: Cfg, stop: Any, socks: list[socket.socket],
                  inputs: list[list[bytes]], verifiers: list[_Verifier],
                  make_tick: Callable[[int], list[bytes]]) -> Result:
    """Send one input per client per client-tick (prebuilt ones, then
    ``make_tick(seq)``: every client's input of client-tick ``seq``, if the
    server is slow to finish), count snapshots, until the runner's stop (the
    server reported); then drain what is still in flight."""
    hz, _, snapshot = settings(cfg)
    period = 1.0 / hz
    poller = select.poll()
    for s in socks:
        poller.register(s.fileno(), select.POLLIN)
    by_fd = {s.fileno(): i for i, s in enumerate(socks)}
    received = [0] * len(socks)
    sent = failed = 0
    lag_ticks = 0
    buf = bytearray(65536)
    view = memoryview(buf)
    guard = Stop(stop, cfg.timeout)
    ticks = min(len(q) for q in inputs)
    sends = [s.send for s in socks]
    nverify = len(verifiers)

    def receive(timeout_ms: int) -> None:
        for fd, _ in poller.poll(timeout_ms):
            i = by_fd[fd]
            try:
                n = socks[i].recv_into(buf)
            except OSError:
                continue
            if n >= snapshot:
                received[i] += 1
                if i < nverify:
                    verifiers[i].check(bytes(view[:n]))

    t_next = time.perf_counter()
    seq = 0
    made = 0
    while not guard.every(8):
        if seq < ticks:
            batch = [queue_[seq] for queue_ in inputs]
        else:
            batch = make_tick(seq)
            made += 1
        for send, data in zip(sends, batch):
            try:
                send(data)
                sent += 1
            except OSError:
                failed += 1
        seq += 1
        receive(0)
        t_next += period
        left = t_next - time.perf_counter()
        if left < -period:
            lag_ticks += 1
        while left > 0:
            receive(max(1, int(left * 1000)))
            left = t_next - time.perf_counter()
    end = time.perf_counter() + 0.3
    while time.perf_counter() < end:
        receive(20)
    res: Result = {
        "inputs_sent": sent,
        "send_failed": failed,
        "snapshots_received": sum(received),
        "generator_ticks": seq,
        "generator_lag_ticks": lag_ticks,
        "verified": sum(v.checked for v in verifiers),
        "bad": sum(v.bad for v in verifiers),
    }
    if made:
        res["note"] = f"generator encrypted {made} client-ticks while timed (server slow to finish)"
    return res


def _client_sockets(n: int, port: int) -> list[socket.socket]:
    """One connected socket per client, two clients per loopback address
    (harness.loopback_source; 127.0.0.1 for all where only it exists)."""
    raise_fd_limit(n + 256)
    socks = []
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
        source = loopback_source(i, CLIENTS_PER_ADDRESS)
        if source is not None:
            s.bind((source, 0))
        s.connect((HOST, port))
        s.setblocking(False)
        socks.append(s)
    return socks


def plain_client(cfg: Cfg, port: int, stop: Any) -> Result:
    """Plain UDP clients: plaintext inputs, every snapshot checked by the first few."""
    _, size, snapshot = settings(cfg)
    socks = _client_sockets(cfg.clients, port)
    tail = body(size)
    per = prebuilt_ticks(cfg)
    inputs = [[HEAD.pack(i, k) + tail for k in range(per)] for i in range(cfg.clients)]
    verifiers = [_Verifier(lambda d: [d], snapshot) for _ in range(min(VERIFIED, cfg.clients))]

    def make_tick(seq: int) -> list[bytes]:
        return [HEAD.pack(i, seq) + tail for i in range(cfg.clients)]

    try:
        return run_generator(cfg, stop, socks, inputs, verifiers, make_tick)
    finally:
        for s in socks:
            s.close()


class EngineClients:
    """N dtlspeer engine clients on their own sockets (the DTLS generator)."""

    def __init__(self, cfg: Cfg, port: int) -> None:
        from dtlspeer._engine import Connection, EngineConfig, EngineStatus, Verify

        self.cfg = cfg
        self.Connection = Connection
        self.connected = EngineStatus.CONNECTED
        self.handshaking = EngineStatus.HANDSHAKING
        self.socks = _client_sockets(cfg.clients, port)
        self.conf = EngineConfig.client(verify=Verify.NONE, mtu=dtls_mtu(cfg),
                                        handshake_timeout_ms=(500, 20_000))
        self.conns: list[Any] = []
        self.early = [0] * cfg.clients  # snapshots read while others still handshake
        self.tail = body(settings(cfg)[1])

    def handshake(self, deadline: float, stop: Any, pump: Callable[[], Any] | None = None) -> str:
        """Handshake every client, HANDSHAKE_BATCH at a time; "" or why not.
        ``pump``: called instead of waiting (the server in the same process)."""
        cfg, socks, conns = self.cfg, self.socks, self.conns
        snapshot = settings(cfg)[2]
        for start in range(0, cfg.clients, HANDSHAKE_BATCH):
            batch = list(range(start, min(cfg.clients, start + HANDSHAKE_BATCH)))
            for i in batch:
                c = self.Connection(self.conf, _now_ms())
                c.update(_now_ms())
                conns.append(c)
                for d in c.take_outgoing():
                    socks[i].send(d)
            waiting = batch
            while waiting:
                if time.monotonic() > deadline or stop.is_set():
                    return f"{len(waiting) + cfg.clients - len(conns)} handshakes unfinished"
                if pump is None:
                    wait_readable([socks[i] for i in waiting], 0.05)
                else:
                    pump()
                still = []
                for i in waiting:
                    c, s = conns[i], socks[i]
                    now = _now_ms()
                    while True:
                        try:
                            datagram = s.recv(65536)
                        except BlockingIOError:
                            break
                        # a snapshot sent right after the server's CONNECT
                        self.early[i] += c.status == self.connected and len(datagram) >= snapshot
                        c.feed(datagram, now)
                    due = c.next_timeout()
                    if due is not None and due <= now:
                        c.update(now)
                    for d in c.take_outgoing():
                        s.send(d)
                    if c.status == self.handshaking:
                        still.append(i)
                    elif c.status != self.connected:
                        return f"handshake failed: {c.reason}"
                waiting = still
        return ""

    def make_tick(self, seq: int) -> list[bytes]:
        """Every client's input record of client-tick ``seq``."""
        out = []
        tail = self.tail
        for i, c in enumerate(self.conns):
            c.write(HEAD.pack(i, seq) + tail, 0)
            out.extend(c.take_outgoing())
        return out

    def opener(self, i: int) -> Callable[[bytes], list[bytes]]:
        """Decrypts client ``i``'s datagrams (for a _Verifier)."""
        c = self.conns[i]

        def open_(datagram: bytes) -> list[bytes]:
            c.feed(datagram, _now_ms())
            return c.read_all()  # type: ignore[no-any-return]
        return open_

    def close(self) -> None:
        for c in self.conns:
            c.close()
        for s in self.socks:
            s.close()


def dtls_client(cfg: Cfg, port: int, stop: Any) -> Result:
    """The DTLS rows' generator: dtlspeer engine clients (no certificate
    check: the server's cost does not depend on it), handshakes in batches,
    every input record encrypted before the timed part."""
    clients = EngineClients(cfg, port)
    try:
        why = clients.handshake(time.monotonic() + cfg.timeout, stop)
        if why:
            return {"error": why}
        per_tick = [clients.make_tick(k) for k in range(prebuilt_ticks(cfg))]
        inputs = [list(q) for q in zip(*per_tick)]
        snapshot = settings(cfg)[2]
        verifiers = [_Verifier(clients.opener(i), snapshot)
                     for i in range(min(VERIFIED, cfg.clients))]
        res = run_generator(cfg, stop, clients.socks, inputs, verifiers, clients.make_tick)
        res["snapshots_received"] = res.get("snapshots_received", 0) + sum(clients.early)
        return res
    finally:
        clients.close()


# -- reading a run ---------------------------------------------------------------------------


def problems(res: Result) -> list[str]:
    """The tick row's notes: CPU per client-tick, loss, lateness."""
    out = []
    us = res.get("server_cpu_us")
    if us:
        out.append(f"{us:.2f} us CPU/client-tick ({100 * res.get('server_cpu_share', 0):.0f}% "
                   "of a core)")
    expected = res.get("server_inputs_expected") or 0
    if expected:
        lost = 1 - res.get("server_inputs_delivered", 0) / expected
        if abs(lost) >= 0.0005:
            out.append(f"lost {100 * lost:.1f}% inputs")
    sent = res.get("server_snapshots_sent") or 0
    if sent:
        lost = 1 - res.get("snapshots_received", 0) / sent
        if abs(lost) >= 0.0005:
            out.append(f"lost {100 * lost:.1f}% snapshots")
    ticks = res.get("server_ticks") or 0
    if ticks and res.get("server_late", 0) > LATE_LIMIT * ticks:
        out.append(f"BEHIND: {res['server_late']} of {ticks} ticks late "
                   f"(worst {res.get('server_worst_busy_ms', 0):.1f} ms)")
    if res.get("server_worst_lag_ms", 0) > 1000 / res.get("server_hz", HZ):
        out.append(f"lag {res['server_worst_lag_ms']:.0f} ms")
    if res.get("generator_lag_ticks"):
        out.append(f"generator lag {res['generator_lag_ticks']} ticks")
    return out


def held(res: Result) -> bool:
    """Did the server hold the tick in this run (the ramp's criterion)?"""
    if res.get("error"):
        return False
    ticks = res.get("server_ticks") or 0
    expected = res.get("server_inputs_expected") or 0
    if not ticks or not expected:
        return False
    lost = 1 - res.get("server_inputs_delivered", 0) / expected
    return bool(res.get("server_late", 0) <= LATE_LIMIT * ticks and lost <= LATE_LIMIT)

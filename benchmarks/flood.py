"""Spoofed-ClientHello flood: the load generator and the measurements of the
``flood`` metric (``python -m benchmarks --only flood``), shared by every
server adapter (dtlspeer's two APIs, ``openssl s_server -dtls1_2 -listen``).

Spoofed sources are 64 UDP sockets bound to loopback addresses 127.77.0.1
.. 127.77.0.64 (Linux routes all of 127.0.0.0/8 to lo). Each sends the same
cookieless ClientHello (P-256 certificate suites, as a real client's first
flight) round-robin, at ``cfg.extra["flood_rate"]`` hellos/s (default
20 000) for ``cfg.seconds``; the HelloVerifyRequests coming back are
counted. The server process is measured from outside through ``/proc``, so
the same numbers come from a Python server and from OpenSSL:

* CPU per spoofed hello: the server process's CPU time during the flood
  (scheduler run time, ns resolution), divided by the hellos it answered;
* RSS retained per hello: resident-set growth from before the flood to
  after it (0.3 s settle), divided by the hellos sent. A warm-up burst of
  2 000 hellos runs first, so buffers touched once per process (the
  receive batch's pages) are not charged to every hello;
* the dtlspeer servers are frame loops (woken by the socket, at most
  ``FRAME_HZ`` frames per second), as game servers are;
* legit-handshake latency during the flood (dtlspeer servers): after the
  measured part, the flood resumes and 0.3 s into it a real client (a
  sans-I/O engine client on its own socket) starts a full handshake; time
  until it is CONNECTED (its connection's memory is not charged to the
  hellos). Before it, a first
  client connected before the flood, as a game server's first player
  would (the Godot-style classes install their C cookie gate on the
  UDPServer at the first take_connection).

The server announces ``(port, pid, legit)``: where to flood, which process
to measure, and whether to time a legitimate handshake.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Callable

from .harness import HOST, Cfg, Result

SOURCES = 64
WARMUP_HELLOS = 2000
SETTLE_S = 0.3
# dtlspeer servers run a frame loop: woken by the socket, at most this many
# frames (poll / service calls) per second. A game polls 60-240 times a
# second; 1000 keeps the handshake latency measurement fine-grained while a
# flood is not charged one Python wake-up per datagram. OpenSSL's s_server
# loop is its own (select + one datagram per turn).
FRAME_HZ = 1000


def proc_cpu_s(pid: int) -> float:
    """CPU seconds process pid ran (Linux /proc): its main thread's
    scheduler run time in nanoseconds where available (the servers here are
    single-threaded), else user + system time in clock ticks (10 ms
    resolution: too coarse for a 1 s run)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def proc_rss(pid: int) -> int:
    """Resident set size of process pid in bytes (Linux /proc)."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def sleep_rest_of_frame(start: float, frame: float) -> None:
    """Sleep until ``frame`` seconds after ``start`` (a capped frame loop)."""
    left = frame - (time.perf_counter() - start)
    if left > 0:
        time.sleep(left)


def cookieless_hello() -> bytes:
    """A real client's first ClientHello (dtlspeer's engine, certificate suites)."""
    from dtlspeer._engine import Connection, EngineConfig, Verify

    conn = Connection(EngineConfig.client(verify=Verify.NONE, mtu=1200), 0)
    conn.update(0)
    (hello,) = conn.take_outgoing()
    conn.close()
    return hello


class LegitClient:
    """One real client doing a full handshake on its own socket."""

    def __init__(self, port: int) -> None:
        from dtlspeer._engine import Connection, EngineConfig, EngineStatus, Verify

        self.connected_status = EngineStatus.CONNECTED
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.connect((HOST, port))
        cfg = EngineConfig.client(verify=Verify.NONE, mtu=1200, handshake_timeout_ms=(250, 4000))
        self.start = time.perf_counter()
        self.conn = Connection(cfg, self._now())
        self.conn.update(self._now())
        self.done_s: float | None = None
        self._send()

    def _now(self) -> int:
        return int(time.monotonic() * 1000)

    def _send(self) -> None:
        for datagram in self.conn.take_outgoing():
            try:
                self.sock.send(datagram)
            except OSError:
                pass

    def pump(self) -> bool:
        """Drive the handshake; True once connected."""
        if self.done_s is not None:
            return True
        now = self._now()
        for _ in range(16):
            try:
                self.conn.feed(self.sock.recv(65535), now)
            except OSError:
                break
        due = self.conn.next_timeout()
        if due is not None and due <= now:
            self.conn.update(now)
        self._send()
        if self.conn.status == self.connected_status:
            self.done_s = time.perf_counter() - self.start
            return True
        return False

    def close(self) -> None:
        self.conn.close()
        self.sock.close()


def _sources() -> list[socket.socket]:
    socks = []
    for i in range(SOURCES):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind((f"127.77.{i // 250}.{1 + i % 250}", 0))
        socks.append(s)
    return socks


def _drain(socks: list[socket.socket]) -> int:
    got = 0
    for s in socks:
        while True:
            try:
                s.recv(2048)
            except OSError:
                break
            got += 1
    return got


def _handshake(port: int, deadline: float) -> float | None:
    client = LegitClient(port)
    try:
        while time.monotonic() < deadline:
            if client.pump():
                return client.done_s
            time.sleep(0.001)
        return None
    finally:
        client.close()


def _flood(socks: list[socket.socket], hello: bytes, dest: tuple[str, int], rate: float,
           seconds: float, stop: Any, tick: Callable[[float], bool] | None = None,
           ) -> tuple[int, int]:
    """Send ``hello`` at ``rate`` per second round-robin from ``socks`` for
    ``seconds`` (or until ``tick(elapsed)`` returns True), counting the
    replies. Returns (sent, answered)."""
    sent = answered = 0
    t0 = time.perf_counter()
    while True:
        now = time.perf_counter()
        if now - t0 >= seconds or stop.is_set():
            break
        due = int((now - t0) * rate)  # hellos that should have left by now
        while sent < due:
            try:
                socks[sent % SOURCES].sendto(hello, dest)
            except OSError:
                pass  # a full send buffer: the datagram is lost, as on a real link
            sent += 1
        answered += _drain(socks)
        if tick is not None and tick(now - t0):
            break
        time.sleep(0.0005)
    return sent, answered


def flood_client(cfg: Cfg, arg: Any, stop: Any) -> Result:
    """Warm up, then (A) the measured flood, then (B) with ``legit``, the
    flood again while a real client handshakes (kept out of A's figures: its
    connection's memory is not the flood's)."""
    port, pid, legit = arg
    rate = float(cfg.extra.get("flood_rate", 20_000))
    hello = cookieless_hello()
    dest = (HOST, port)
    socks = _sources()
    legit_s: float | None = None
    try:
        if legit and _handshake(port, time.monotonic() + 10) is None:
            return {"error": "the first (warm-up) client did not connect"}
        for i in range(WARMUP_HELLOS):
            socks[i % SOURCES].sendto(hello, dest)
            if i % SOURCES == SOURCES - 1:
                _drain(socks)
        time.sleep(SETTLE_S)
        _drain(socks)
        cpu0, rss0 = proc_cpu_s(pid), proc_rss(pid)
        sent, answered = _flood(socks, hello, dest, rate, cfg.seconds, stop)
        time.sleep(SETTLE_S)
        answered += _drain(socks)
        cpu1, rss1 = proc_cpu_s(pid), proc_rss(pid)
        if legit:
            client: list[LegitClient] = []

            def tick(elapsed: float) -> bool:
                if not client and elapsed >= SETTLE_S:
                    client.append(LegitClient(port))
                return bool(client) and client[0].pump()

            _flood(socks, hello, dest, rate, SETTLE_S + 5.0, stop, tick)
            if client:
                legit_s = client[0].done_s
                client[0].close()
    finally:
        for s in socks:
            s.close()
    if answered == 0:
        return {"error": f"no HelloVerifyRequest came back ({sent} hellos sent)"}
    res: Result = {
        "value": 1e6 * (cpu1 - cpu0) / answered,
        "hellos": sent,
        "answered": answered,
        "rss_per_hello": (rss1 - rss0) / sent,
        "rss_growth": rss1 - rss0,
    }
    notes = [f"RSS {res['rss_per_hello']:.2f} B/hello", f"answered {answered}/{sent}"]
    if legit:
        res["legit_ms"] = None if legit_s is None else 1000 * legit_s
        notes.append(
            "legit handshake during flood: "
            + ("none in 5 s" if legit_s is None else f"{1000 * legit_s:.0f} ms")
        )
    res["note"] = "; ".join(notes)
    return res

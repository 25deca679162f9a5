"""Soak test: a DTLSHost server under churn, loss and spoofed garbage.

``python -m benchmarks.soak [--seconds 600] [--clients 300] [--loss 0.05]``

The server (a ``DTLSHost`` echo server, certificate + ECDHE) runs in its own
process and prints a sample of its RSS, its native heap (``dp_alloc_stats``:
every Mbed TLS and dtlspeer allocation) and its peer counts every
``--sample`` seconds. This process drives the load:

* ``--clients`` client slots, all peers of one client ``DTLSHost``. Each
  slot talks to the server through its own relay pair (a front socket the
  client sends to, a back socket that sends to the server), so the server
  sees one address per slot, and the relay drops ``--loss`` of the
  datagrams in each direction.
* Every slot loops: connect, exchange records (each echo is checked to be
  the slot's own), go quiet long enough for the server to park it, wake it
  with more records, then end: a close_notify, or vanish (the relay
  black-holes the slot, the server must find out by its idle timeout).
  After a pause the slot reconnects from a new source port.
* ``--garbage`` datagrams/s of spoofed input: random bytes and forged
  epoch-1 records from unknown 127.x addresses, and forged records from the
  addresses of live slots (which must not end them).

At the end every slot closes, the server drains (vanished peers time out)
and reports its final state. The run fails (exit 1) when an echo belongs to
another slot, a peer is still there after the drain, the native heap did
not come back to where it was after warm-up, a forged record ended a peer
(TLS error), or the server died. The report prints the RSS/heap curve.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import selectors
import socket
import subprocess
import sys
import time
from collections import Counter
from typing import Any

from dtlspeer import Crypto, DTLSSettings, TLSOptions, X509Certificate
from dtlspeer.host import DisconnectReason, DTLSHost, HostEventType, HostPeer

HOST = "127.0.0.1"
_PKG = __package__ or "benchmarks"


# -- the server process ------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _heap() -> tuple[int, int]:
    from dtlspeer._binding import ffi, lib

    b = ffi.new("int64_t *")
    n = ffi.new("int64_t *")
    lib.dp_alloc_stats(b, n)
    return int(b[0]), int(n[0])


def _server_settings(args: argparse.Namespace) -> DTLSSettings:
    return DTLSSettings(
        idle_timeout_ms=args.idle_ms,
        park_after_ms=args.park_ms,
        handshake_deadline_ms=args.idle_ms * 2,
    )


def serve(args: argparse.Namespace) -> int:
    """The server role: echo every record, print samples, drain on request."""
    key_pem, cert_pem = sys.stdin.readline().strip(), sys.stdin.readline().strip()
    from dtlspeer import CryptoKey

    key = CryptoKey()
    key.load_from_string(bytes.fromhex(key_pem).decode())
    cert = X509Certificate()
    cert.load_from_string(bytes.fromhex(cert_pem).decode())
    host = DTLSHost(HOST, 0, server_options=TLSOptions.server(key, cert),
                    settings=_server_settings(args), max_peers=args.clients * 4)
    reasons: Counter[str] = Counter()
    print(f"PORT {host.get_local_port()}", flush=True)
    start = time.monotonic()
    next_sample = start
    draining_until: float | None = None
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin, selectors.EVENT_READ)

    def sample(kind: str) -> None:
        heap, blocks = _heap()
        stats = host.get_stats()
        line = {"kind": kind, "t": round(time.monotonic() - start, 1), "rss": _rss_bytes(),
                "heap": heap, "blocks": blocks, "reasons": dict(reasons),
                **{k: stats[k] for k in ("peers", "connected", "handshaking", "connects",
                                         "disconnects", "errors", "gate_dropped",
                                         "records_in", "admitted", "evicted_handshakes",
                                         "dropped_handshake_per_address",
                                         "dropped_handshake_limit", "dropped_peer_limit",
                                         "successors", "successors_failed",
                                         "successors_orphaned", "reconnects")}}
        print(json.dumps(line), flush=True)

    while True:
        for event in host.service(0.02):
            if event.type == HostEventType.RECEIVE:
                event.peer.put_packet(event.data)
            elif event.type == HostEventType.DISCONNECT:
                reasons[event.reason.name] += 1
            elif event.type == HostEventType.ERROR:
                reasons["HANDSHAKE_ERROR"] += 1
        now = time.monotonic()
        if now >= next_sample:
            sample("sample")
            next_sample = now + args.sample
        if draining_until is None and sel.select(0):
            if sys.stdin.readline().strip() == "drain":
                draining_until = now + (args.idle_ms * 2 + 5000) / 1000
        if draining_until is not None:
            stats = host.get_stats()
            if stats["peers"] == 0 or now >= draining_until:
                host.service(0)  # release the last ended entries
                sample("final")
                host.close()
                return 0


# -- the load process ----------------------------------------------------------


class Relay:
    """One front socket (the client sends here) and one back socket (it sends
    to the server) per slot, dropping ``loss`` of the datagrams each way."""

    def __init__(self, slots: int, server: tuple[str, int], loss: float, rng: random.Random):
        self.server = server
        self.loss = loss
        self.rng = rng
        self.sel = selectors.DefaultSelector()
        self.front: list[socket.socket] = []
        self.back: list[socket.socket] = []
        self.client_addr: list[Any] = [None] * slots
        self.blackhole = [False] * slots
        self.forwarded = self.dropped = 0
        for i in range(slots):
            f = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            f.bind((HOST, 0))
            f.setblocking(False)
            self.front.append(f)
            self.sel.register(f, selectors.EVENT_READ, (i, True))
            self.back.append(self._new_back(i))

    def _new_back(self, i: int) -> socket.socket:
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b.bind((HOST, 0))
        b.setblocking(False)
        self.sel.register(b, selectors.EVENT_READ, (i, False))
        return b

    def port(self, i: int) -> int:
        return int(self.front[i].getsockname()[1])

    def reset(self, i: int) -> None:
        """A new source port towards the server (a new connection)."""
        self.sel.unregister(self.back[i])
        self.back[i].close()
        self.back[i] = self._new_back(i)
        self.blackhole[i] = False

    def pump(self) -> None:
        for _ in range(64):
            ready = self.sel.select(0)
            if not ready:
                return
            for key, _mask in ready:
                i, from_client = key.data
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data, addr = sock.recvfrom(65536)
                except (BlockingIOError, ConnectionRefusedError):
                    continue
                if from_client:
                    self.client_addr[i] = addr
                if self.blackhole[i] or self.rng.random() < self.loss:
                    self.dropped += 1
                    continue
                try:
                    if from_client:
                        self.back[i].sendto(data, self.server)
                    elif self.client_addr[i] is not None:
                        self.front[i].sendto(data, self.client_addr[i])
                    self.forwarded += 1
                except OSError:
                    self.dropped += 1

    def close(self) -> None:
        for s in self.front + self.back:
            s.close()
        self.sel.close()


class Slot:
    """One simulated player: its state and its schedule."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.peer: HostPeer | None = None
        self.state = "idle"  # idle | connecting | talk | quiet | wake | ended
        self.until = 0.0
        self.next_send = 0.0
        self.seq = 0


def run_load(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    crypto = Crypto()
    key = crypto.generate_ec("P-256")
    cert = crypto.generate_self_signed_certificate(
        key, "CN=soak.test,O=dtlspeer", "20240101000000", "20991231235959",
        dns_names=["soak.test"], ip_addresses=[HOST])
    env = dict(os.environ)
    server = subprocess.Popen(
        [sys.executable, "-m", f"{_PKG}.soak", "--role", "server", "--clients", str(args.clients),
         "--idle-ms", str(args.idle_ms), "--park-ms", str(args.park_ms),
         "--sample", str(args.sample)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert server.stdin is not None and server.stdout is not None
    server.stdin.write(key.save_to_string().encode().hex() + "\n")
    server.stdin.write(cert.save_to_string().encode().hex() + "\n")
    server.stdin.flush()
    samples: list[dict[str, Any]] = []
    try:
        first = server.stdout.readline()
        if not first.startswith("PORT "):
            print(f"server failed to start: {first!r}", file=sys.stderr)
            return 1
        port = int(first.split()[1])
        os.set_blocking(server.stdout.fileno(), False)
        outcome = _drive(args, rng, cert, (HOST, port), server, samples)
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(10)
    return _report(args, samples, outcome, server.returncode)


def _read_samples(server: subprocess.Popen[str], samples: list[dict[str, Any]]) -> None:
    assert server.stdout is not None
    while True:
        try:
            line = server.stdout.readline()
        except (BlockingIOError, TypeError):
            return
        if not line:
            return
        samples.append(json.loads(line))


def _drive(args: argparse.Namespace, rng: random.Random, cert: X509Certificate,
           server_addr: tuple[str, int], server: subprocess.Popen[str],
           samples: list[dict[str, Any]]) -> dict[str, Any]:
    relay = Relay(args.clients, server_addr, args.loss, rng)
    client = DTLSHost(HOST, 0, client_options=TLSOptions.client(cert, "soak.test"),
                      settings=DTLSSettings(idle_timeout_ms=args.idle_ms),
                      max_peers=args.clients * 2)
    slots = [Slot(i) for i in range(args.clients)]
    by_peer: dict[int, Slot] = {}
    counts: Counter[str] = Counter()
    spoofers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(16)]
    for n, s in enumerate(spoofers):
        s.bind((f"127.{rng.randrange(1, 250)}.{n}.{rng.randrange(1, 250)}", 0))
        s.setblocking(False)
    start = time.monotonic()
    end = start + args.seconds
    for slot in slots:
        slot.until = start + rng.uniform(0, min(5.0, args.seconds / 4))
    garbage_due = start
    park = args.park_ms / 1000

    def payload(slot: Slot) -> bytes:
        slot.seq += 1
        head = b"%d:%d:" % (slot.index, slot.seq)
        return head + bytes(rng.randrange(256) for _ in range(rng.randrange(4, 200)))

    def finish(slot: Slot, pause: float) -> None:
        if slot.peer is not None:
            by_peer.pop(slot.peer.peer_id, None)
        slot.peer = None
        slot.state = "ended"
        slot.until = time.monotonic() + pause

    while True:
        now = time.monotonic()
        closing = now >= end
        relay.pump()
        for event in client.service(0.005):
            slot = by_peer.get(event.peer.peer_id)
            if slot is None:
                continue
            if event.type == HostEventType.CONNECT:
                counts["connected"] += 1
                slot.state = "talk"
                slot.until = now + rng.uniform(0.5, 2.0)
            elif event.type == HostEventType.RECEIVE:
                counts["echoes"] += 1
                if not event.data.startswith(b"%d:" % slot.index):
                    counts["mismatched"] += 1
            elif event.type == HostEventType.DISCONNECT:
                if event.reason not in (DisconnectReason.LOCAL,):
                    counts[f"client_end_{event.reason.name}"] += 1
                finish(slot, rng.uniform(0.2, 1.5))
        relay.pump()
        for slot in slots:
            if slot.state in ("idle", "ended"):
                if not closing and now >= slot.until:
                    if slot.state == "ended":
                        relay.reset(slot.index)
                    slot.peer = client.connect(HOST, relay.port(slot.index), "soak.test")
                    by_peer[slot.peer.peer_id] = slot
                    slot.state = "connecting"
                    counts["connects"] += 1
                continue
            if slot.state == "connecting" or slot.peer is None:
                continue
            if closing:
                client.disconnect(slot.peer)
                finish(slot, 0)
                continue
            if slot.state in ("talk", "wake") and now >= slot.next_send:
                slot.peer.put_packet(payload(slot))
                counts["sent"] += 1
                slot.next_send = now + 0.1
            if now >= slot.until:
                if slot.state == "talk":
                    slot.state, slot.until = "quiet", now + park * rng.uniform(2.0, 3.0)
                elif slot.state == "quiet":
                    slot.state, slot.until = "wake", now + rng.uniform(0.3, 1.0)
                    counts["wakes"] += 1
                else:
                    r = rng.random()
                    if r < 0.5:
                        counts["closed"] += 1
                        client.disconnect(slot.peer)
                        finish(slot, rng.uniform(0.2, 1.5))
                    elif r < 0.85:
                        counts["vanished"] += 1
                        relay.blackhole[slot.index] = True
                        client.disconnect(slot.peer)  # its close_notify is lost
                        finish(slot, rng.uniform(0.2, 1.5))
                    else:
                        slot.state, slot.until = "talk", now + rng.uniform(0.5, 2.0)
        if not closing and args.garbage and now >= garbage_due:
            burst = max(1, int(args.garbage / 100))
            for _ in range(burst):
                _send_garbage(rng, spoofers, relay, slots, server_addr)
            counts["garbage"] += burst
            garbage_due = now + burst / args.garbage
        _read_samples(server, samples)
        if server.poll() is not None:
            counts["server_died"] += 1
            break
        if closing and not by_peer and not client.peers:
            break
        if now > end + 30:
            counts["client_stuck"] += 1
            break
    client.service(0)
    client.close()
    relay.close()
    for s in spoofers:
        s.close()
    if server.poll() is None:
        assert server.stdin is not None
        server.stdin.write("drain\n")
        server.stdin.flush()
        deadline = time.monotonic() + (args.idle_ms * 2 + 15000) / 1000
        while server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
            _read_samples(server, samples)
        _read_samples(server, samples)
    counts["relay_dropped"] = relay.dropped
    counts["relay_forwarded"] = relay.forwarded
    return dict(counts)


def _send_garbage(rng: random.Random, spoofers: list[socket.socket], relay: Relay,
                  slots: list[Slot], server_addr: tuple[str, int]) -> None:
    kind = rng.random()
    if kind < 0.3:
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
    else:
        # A DTLS 1.2 record header: handshake (epoch 0) or application data
        # (epoch 1) with a random sequence number, and a random body.
        ctype, epoch = (22, 0) if kind < 0.5 else (23, 1)
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
        data = (bytes([ctype, 0xFE, 0xFD]) + epoch.to_bytes(2, "big")
                + rng.randrange(1 << 48).to_bytes(6, "big") + len(body).to_bytes(2, "big") + body)
    live = [s for s in slots if s.peer is not None and s.state != "connecting"]
    try:
        if live and rng.random() < 0.5:
            # From a live slot's own address: a forgery the server must drop.
            relay.back[rng.choice(live).index].sendto(data, server_addr)
        else:
            rng.choice(spoofers).sendto(data, server_addr)
    except OSError:
        pass


def _report(args: argparse.Namespace, samples: list[dict[str, Any]], counts: dict[str, Any],
            server_rc: int | None) -> int:
    print(f"soak: {args.seconds:.0f} s, {args.clients} client slots, loss {args.loss:.0%}, "
          f"{args.garbage}/s spoofed garbage, park after {args.park_ms} ms, "
          f"idle timeout {args.idle_ms} ms")
    print(f"{'t s':>7} {'RSS MiB':>8} {'heap KiB':>9} {'blocks':>7} {'peers':>6} "
          f"{'conn':>5} {'hs':>4} {'connects':>8}")
    for s in samples:
        print(f"{s['t']:>7} {s['rss'] / 2**20:>8.1f} {s['heap'] / 1024:>9.0f} {s['blocks']:>7} "
              f"{s['peers']:>6} {s['connected']:>5} {s['handshaking']:>4} {s['connects']:>8}"
              + ("  final" if s["kind"] == "final" else ""))
    print("load:", json.dumps(counts, sort_keys=True))
    problems = []
    final = [s for s in samples if s["kind"] == "final"]
    periodic = [s for s in samples if s["kind"] == "sample"]
    if server_rc != 0 or not final:
        problems.append(f"server exited with {server_rc} (final report: {bool(final)})")
    if counts.get("mismatched"):
        problems.append(f"{counts['mismatched']} echoes belonged to another slot")
    if counts.get("client_stuck"):
        problems.append("client slots did not finish")
    if final:
        f = final[0]
        print("server disconnect reasons:", json.dumps(f["reasons"], sort_keys=True))
        print("server admission and succession:", json.dumps(
            {k: f[k] for k in ("admitted", "evicted_handshakes", "dropped_handshake_per_address",
                               "dropped_handshake_limit", "dropped_peer_limit", "successors",
                               "successors_failed", "successors_orphaned", "reconnects")},
            sort_keys=True))
        if f["peers"]:
            problems.append(f"{f['peers']} peers still on the server after the drain")
        if f["reasons"].get("TLS_ERROR"):
            problems.append(f"{f['reasons']['TLS_ERROR']} peers ended by a TLS error")
        warm = [s for s in periodic if s["t"] >= args.seconds * args.warmup]
        if warm:
            rss = [s["rss"] for s in warm]
            heap = [s["heap"] for s in warm]
            print(f"after warm-up ({args.warmup:.0%}): RSS {min(rss) / 2**20:.1f}.."
                  f"{max(rss) / 2**20:.1f} MiB, "
                  f"heap {min(heap) / 1024:.0f}..{max(heap) / 1024:.0f} KiB")
            # A drained server holds no peer: its heap must not exceed the
            # emptiest moment after warm-up (a leak would show here).
            baseline = min(heap)
            print(f"heap after the drain: {f['heap'] / 1024:.0f} KiB "
                  f"(lowest after warm-up {baseline / 1024:.0f} KiB)")
            if f["heap"] > baseline + args.heap_slack:
                problems.append(f"heap after the drain {f['heap']} B > {baseline} + "
                                f"{args.heap_slack} B: memory not returned")
    for p in problems:
        print("FAIL:", p)
    print("soak:", "FAILED" if problems else "OK")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak",
                                description=__doc__.split("\n")[0])
    p.add_argument("--role", choices=("load", "server"), default="load")
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--clients", type=int, default=300)
    p.add_argument("--loss", type=float, default=0.05)
    p.add_argument("--garbage", type=int, default=500, help="spoofed datagrams per second")
    p.add_argument("--park-ms", type=int, default=500)
    p.add_argument("--idle-ms", type=int, default=3000)
    p.add_argument("--sample", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=0.2, help="fraction of the run")
    p.add_argument("--heap-slack", type=int, default=64 * 1024,
                   help="bytes the drained heap may exceed the post-warm-up minimum by")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    if args.role == "server":
        return serve(args)
    return run_load(args)


if __name__ == "__main__":
    sys.exit(main())

"""Instructions (callgrind) or CPU time per client-tick of one tick server,
in one process, deterministic: ``python -m benchmarks.tick_profile``.

The server parts are the runner's own (``tick_parts`` of each adapter in
``benchmarks/libs``); N clients (dtlspeer engine clients for the DTLS rows,
plain sockets for ``plain``) live in the same process on loopback. Each
tick: every client sends its input (prebuilt), then the server's ``drain()``
and ``send(tick)`` run, then every client reads its snapshots. Only the
server's part is measured:

* ``--callgrind``: re-runs itself under ``valgrind --tool=callgrind
  --collect-atstart=no`` and switches collection on around the server's
  part only (``CALLGRIND_TOGGLE_COLLECT`` from a 3-line helper compiled at
  run time with ``cc``; needs valgrind's headers). Prints instructions per
  client-tick (user space: kernel work is outside callgrind's view) and the
  top functions by exclusive cost; keeps the callgrind file
  (``--out``) for ``callgrind_annotate``.
* otherwise: process CPU time (``getrusage``) per client-tick of the
  server's part (kernel included), min over ``--repeat`` rounds.

The number is steady on a loaded machine with ``--callgrind`` (instruction
counts do not depend on other tenants), unlike wall or CPU time.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any, Callable

from . import callgrind, tick
from .harness import Cfg, make_certificate

ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "plain": ("plain", {}),
    "dtlspeer": ("dtlspeer_dtls", {}),
    "dtlspeer-host": ("dtlspeer_host", {}),
    "dtlspeer-host-put-packet": ("dtlspeer_host", {"send_many": False}),  # one put_packet each
    "pyopenssl": ("pyopenssl_dtls", {}),
}

class _Stop:
    def is_set(self) -> bool:
        return False


def run(row: str, cfg: Cfg, ticks: int, warmup: int, measure: Callable[[], Any] | None,
        repeat: int, evict_mb: int = 0) -> list[float]:
    """Drive ``row``'s server for warmup + ticks ticks; returns CPU seconds of
    the server part per round (``measure``: the callgrind toggle, called
    before and after each server part of the measured ticks)."""
    import importlib

    module, kwargs = ROWS[row]
    adapter = importlib.import_module(f"benchmarks.libs.{module}")
    parts: tick.TickParts = adapter.tick_parts(cfg, **kwargs)
    n = cfg.clients
    snapshot = tick.settings(cfg)[2]
    clients: Any = None
    try:
        if row == "plain":
            socks = tick._client_sockets(n, parts.port)
            tail = tick.body(tick.settings(cfg)[1])

            def make_tick(seq: int) -> list[bytes]:
                return [tick.HEAD.pack(i, seq) + tail for i in range(n)]
        else:
            clients = tick.EngineClients(cfg, parts.port)

            def pump() -> None:
                parts.drain()
                parts.send(0)

            why = clients.handshake(time.monotonic() + 120, _Stop(), pump)
            if why:
                raise SystemExit(why)
            socks = clients.socks
            make_tick = clients.make_tick
        total = warmup + ticks * repeat
        prebuilt = [make_tick(k) for k in range(total)]
        buf = bytearray(65536)
        # Between ticks a real server sleeps while other processes run and
        # take its caches; --evict writes that many MB between ticks.
        evict = bytearray(evict_mb << 20)
        received = 0
        rounds: list[float] = []
        cpu = 0.0
        for k in range(total):
            for s, data in zip(socks, prebuilt[k]):
                s.send(data)
            timed = k >= warmup
            if timed:
                if measure is not None:
                    measure()
                r0 = resource.getrusage(resource.RUSAGE_SELF)
            inputs = parts.drain()
            parts.send(k)
            if timed:
                r1 = resource.getrusage(resource.RUSAGE_SELF)
                if measure is not None:
                    measure()
                cpu += (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
                if (k - warmup + 1) % ticks == 0:
                    rounds.append(cpu)
                    cpu = 0.0
            if k >= warmup and len(inputs) != n:
                print(f"tick {k}: {len(inputs)} inputs of {n}", file=sys.stderr)
            for s in socks:
                while True:
                    try:
                        received += s.recv_into(buf) >= snapshot
                    except BlockingIOError:
                        break
            if evict:
                evict[::64] = bytes(len(evict[::64]))  # one write per cache line
        if received < n * ticks * repeat:
            print(f"only {received} snapshots received", file=sys.stderr)
        return rounds
    finally:
        if clients is not None:
            clients.close()
        parts.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tick_profile",
                                description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--lib", default="dtlspeer-host", choices=sorted(ROWS))
    p.add_argument("-N", "--clients", type=int, default=200)
    p.add_argument("--ticks", type=int, default=20, help="measured ticks per round")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeat", type=int, default=3, help="rounds (CPU mode: min is printed)")
    p.add_argument("--input", type=int, default=tick.INPUT)
    p.add_argument("--snapshot", type=int, default=tick.SNAPSHOT)
    p.add_argument("--cache-sim", action="store_true",
                   help="with --callgrind: simulate caches (D1/LL misses per client-tick)")
    p.add_argument("--evict", type=int, default=0, metavar="MB",
                   help="write MB megabytes between ticks (caches cold, as after a sleep)")
    callgrind.add_options(p, top_default=25)
    args = p.parse_args(argv)
    if args.callgrind and not args.under_valgrind:
        out = args.out or tempfile.mktemp(prefix="callgrind.tick.")
        # The driver's warnings (missing inputs or snapshots) are printed:
        # e.g. peers that hit the 60 s idle timeout during slow handshakes
        # under valgrind (keep N small).
        count = callgrind.rerun("benchmarks.tick_profile",
                                list(sys.argv[1:] if argv is None else argv),
                                {"--callgrind": 0, "--repeat": 1, "--cache-sim": 0},
                                ["--repeat", "1"], out, args.cache_sim)
        if count is None:
            return 1
        client_ticks = args.clients * args.ticks
        per = count.get("Ir", 0) / client_ticks
        print(f"{args.lib}: N={args.clients}, {args.input} B inputs, {args.snapshot} B "
              f"snapshots: {per:,.0f} instructions per client-tick (server part, user space; "
              f"{args.ticks} ticks)  [{out}]")
        if "D1mr" in count:
            d1 = (count["D1mr"] + count["D1mw"]) / client_ticks
            ll = (count["DLmr"] + count["DLmw"]) / client_ticks
            print(f"   data cache misses per client-tick (simulated): L1 {d1:,.0f}, "
                  f"last level {ll:,.0f}")
        for line in callgrind.top(out, args.top):
            print("   " + line)
        return 0
    key, cert = make_certificate()
    cfg = Cfg(clients=args.clients, key_pem=key, cert_pem=cert, timeout=120,
              extra={"input": args.input, "snapshot": args.snapshot})
    measure = callgrind.toggle() if args.under_valgrind else None
    rounds = run(args.lib, cfg, args.ticks, args.warmup, measure, args.repeat, args.evict)
    if not args.under_valgrind:
        per = [1e6 * r / (args.clients * args.ticks) for r in rounds]
        print(f"{args.lib}: N={args.clients}: {min(per):.2f} us CPU per client-tick (server "
              f"part; min of {len(rounds)} rounds of {args.ticks} ticks: "
              f"{', '.join(f'{x:.2f}' for x in per)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

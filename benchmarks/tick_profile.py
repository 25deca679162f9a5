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
import ctypes
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any, Callable

from . import tick
from .harness import Cfg, make_certificate

ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "plain": ("plain", {}),
    "dtlspeer": ("dtlspeer_dtls", {}),
    "dtlspeer-host": ("dtlspeer_host", {}),
    "dtlspeer-host-put-packet": ("dtlspeer_host", {"send_many": False}),  # one put_packet each
    "pyopenssl": ("pyopenssl_dtls", {}),
}

_TOGGLE_C = """#include <valgrind/callgrind.h>
void dp_bench_toggle(void) { CALLGRIND_TOGGLE_COLLECT; }
"""


def _toggle() -> Callable[[], Any]:
    """CALLGRIND_TOGGLE_COLLECT as a Python callable (a no-op without valgrind)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or not os.path.exists("/usr/include/valgrind/callgrind.h"):
        raise SystemExit("--callgrind needs cc and valgrind's headers (valgrind-dev)")
    d = tempfile.mkdtemp(prefix="dp-toggle-")
    src, lib = os.path.join(d, "t.c"), os.path.join(d, "t.so")
    with open(src, "w") as f:
        f.write(_TOGGLE_C)
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", lib, src], check=True)
    return ctypes.CDLL(lib).dp_bench_toggle  # type: ignore[no-any-return]


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


def _top(out_file: str, limit: int) -> list[str]:
    annotate = shutil.which("callgrind_annotate")
    if annotate is None:
        return []
    text = subprocess.run([annotate, "--threshold=99", out_file], capture_output=True,
                          text=True).stdout
    lines = [ln for ln in text.splitlines() if "(" in ln and ln.strip()[:1].isdigit()]
    return lines[:limit]


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
    p.add_argument("--callgrind", action="store_true", help="count instructions (valgrind)")
    p.add_argument("--cache-sim", action="store_true",
                   help="with --callgrind: simulate caches (D1/LL misses per client-tick)")
    p.add_argument("--out", default="", help="callgrind output file (default: a temp file)")
    p.add_argument("--evict", type=int, default=0, metavar="MB",
                   help="write MB megabytes between ticks (caches cold, as after a sleep)")
    p.add_argument("--top", type=int, default=25, help="functions listed (callgrind)")
    p.add_argument("--under-valgrind", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.callgrind and not args.under_valgrind:
        out = args.out or tempfile.mktemp(prefix="callgrind.tick.")
        cmd = ["valgrind", "--tool=callgrind", "--collect-atstart=no",
               *(["--cache-sim=yes"] if args.cache_sim else []),
               f"--callgrind-out-file={out}", sys.executable, "-m", "benchmarks.tick_profile",
               "--under-valgrind", "--repeat", "1"]
        skip = {"--callgrind", "--repeat", "--cache-sim"}
        argv_ = list(sys.argv[1:] if argv is None else argv)
        i = 0
        while i < len(argv_):
            if argv_[i] in skip:
                i += 1 + (argv_[i] == "--repeat")
                continue
            cmd.append(argv_[i])
            i += 1
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            print(proc.stdout + proc.stderr)
            return 1
        # The driver's own warnings (missing inputs or snapshots: e.g. peers
        # that hit the 60 s idle timeout during slow handshakes under
        # valgrind; keep N small), without valgrind's lines.
        for line in proc.stderr.splitlines():
            if not line.startswith("=="):
                print("warning: " + line)
        events: list[str] = []
        totals: list[int] = []
        with open(out) as f:
            for line in f:
                if line.startswith("events:"):
                    events = line.split()[1:]
                if line.startswith(("summary:", "totals:")):
                    totals = [int(x) for x in line.split()[1:]]
        totals += [0] * (len(events) - len(totals))  # callgrind leaves out trailing zeros
        count = dict(zip(events, totals))
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
        for line in _top(out, args.top):
            print("   " + line)
        return 0
    key, cert = make_certificate()
    cfg = Cfg(clients=args.clients, key_pem=key, cert_pem=cert, timeout=120,
              extra={"input": args.input, "snapshot": args.snapshot})
    measure = _toggle() if args.under_valgrind else None
    rounds = run(args.lib, cfg, args.ticks, args.warmup, measure, args.repeat, args.evict)
    if not args.under_valgrind:
        per = [1e6 * r / (args.clients * args.ticks) for r in rounds]
        print(f"{args.lib}: N={args.clients}: {min(per):.2f} us CPU per client-tick (server "
              f"part; min of {len(rounds)} rounds of {args.ticks} ticks: "
              f"{', '.join(f'{x:.2f}' for x in per)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

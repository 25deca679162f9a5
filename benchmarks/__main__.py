"""Benchmark runner: ``python -m benchmarks [--quick] [--only METRIC] ...``.

Measures, in the same run, plain Python UDP sockets (the ceiling), dtlspeer
(Godot-style classes, and the batch host when it exists), pyOpenSSL and
trio's DTLS endpoint when installed, and prints a table of ratios. Every
measurement runs server and client in two separate processes on 127.0.0.1,
bounded in time; values are medians of ``--runs`` runs, and every ratio is
the median of per-run ratios against the baseline measured in that run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

from . import tick
from .harness import Cfg, Lib, Metric, Row, make_certificate, print_table, run_pair

# "benchmarks" in a checkout, "dtlspeer_benchmarks" in an installed wheel.
_PKG = __package__ or "benchmarks"

LIBS: list[Lib] = [
    Lib("plain", "plain Python UDP socket", f"{_PKG}.libs.plain",
        ("pingpong", "fanin", "faninsrv", "tick", "tickramp")),
    Lib("dtlspeer-udp", "dtlspeer UDP (PacketPeerUDP, no TLS)", f"{_PKG}.libs.dtlspeer_udp",
        ("pingpong", "fanin"), ("dtlspeer",)),
    Lib("dtlspeer", "dtlspeer DTLS (Godot-style classes)", f"{_PKG}.libs.dtlspeer_dtls",
        ("pingpong", "fanin", "faninsrv", "handshake", "hsserver", "memory", "flood", "tick",
         "tickramp"), ("dtlspeer",)),
    Lib("dtlspeer-host", "dtlspeer DTLS (DTLSHost batch)", f"{_PKG}.libs.dtlspeer_host",
        ("pingpong", "fanin", "faninsrv", "handshake", "hsserver", "memory", "flood", "tick",
         "tickramp"), ("dtlspeer.host",)),
    Lib("dtlspeer-aio", "dtlspeer asyncio (aio.serve)", f"{_PKG}.libs.dtlspeer_aio",
        ("tick", "tickramp"), ("dtlspeer.aio",)),
    Lib("dtlspeer-host-unparked", "dtlspeer DTLSHost, parking off",
        f"{_PKG}.libs.dtlspeer_host_unparked", ("memory",), ("dtlspeer.host",)),
    Lib("pyopenssl", "pyOpenSSL DTLS (memory BIOs)", f"{_PKG}.libs.pyopenssl_dtls",
        ("pingpong", "fanin", "faninsrv", "handshake", "hsserver", "memory", "tick", "tickramp"),
        ("OpenSSL",)),
    Lib("trio", "trio DTLSEndpoint (pyOpenSSL)", f"{_PKG}.libs.trio_dtls",
        ("pingpong", "fanin", "handshake", "memory"), ("trio", "OpenSSL")),
    Lib("python-mbedtls", "python-mbedtls DTLS", f"{_PKG}.libs.python_mbedtls",
        ("pingpong", "handshake"), ("mbedtls",)),
    Lib("dtlspeer-resumed", "dtlspeer DTLSHost server, resumed handshakes (session tickets)",
        f"{_PKG}.libs.dtlspeer_resume", ("resume",), ("dtlspeer.session",)),
    Lib("dtlspeer-full", "dtlspeer DTLSHost server, full handshakes (same run)",
        f"{_PKG}.libs.dtlspeer_resume_full", ("resume",), ("dtlspeer.session",)),
    Lib("openssl-listen", "openssl s_server -dtls1_2 -listen (DTLSv1_listen)",
        f"{_PKG}.libs.openssl_listen", ("flood",)),
    Lib("pyenet", "pyenet plain ENet (ENet 1.3.17 C, no encryption)", f"{_PKG}.libs.pyenet_enet",
        ("enetpingpong", "enetfanin"), ("enet",)),
    Lib("dtlspeer-enet", "dtlspeer ENet over DTLS (service_batch)", f"{_PKG}.libs.dtlspeer_enet",
        ("enetpingpong", "enetfanin", "tick"), ("dtlspeer.enet",)),
    Lib("dtlspeer-enet-plain", "dtlspeer ENet, plain (no DTLS)",
        f"{_PKG}.libs.dtlspeer_enet_plain", ("enetpingpong", "enetfanin"), ("dtlspeer.enet",)),
]

# Rows shown only for the metrics they drive: no TLS (handshakes, memory),
# or a memory-only variant.
LISTED_ONLY = ("plain", "dtlspeer-udp", "dtlspeer-host-unparked", "openssl-listen",
               "dtlspeer-resumed", "dtlspeer-full", "dtlspeer-aio", "pyenet", "dtlspeer-enet",
               "dtlspeer-enet-plain")

METRICS: list[Metric] = [
    Metric("pingpong", "ping-pong round trips/s, 100 B, one client, one in flight", "rt/s",
           "value", "plain", target_ratio=0.9, target_text="dtlspeer >= 0.9x plain UDP"),
    Metric("fanin", "one-way 100 B messages/s delivered to one server from 64 clients", "msg/s",
           "server_value", "plain", target_ratio=1.0, target_text="dtlspeer >= 1.0x plain UDP"),
    Metric("faninsrv", "SERVER fan-in capacity: same as fanin, but every sender only sends "
           "datagrams built before the timed part", "msg/s", "server_value", "plain",
           target_ratio=1.0, target_text="dtlspeer >= 1.0x plain UDP (server side; see README)",
           requires=("OpenSSL",)),
    Metric("handshake", "full ECDHE-ECDSA P-256 handshakes/s, cookie exchange included",
           "hs/s", "value", "pyopenssl", target_ratio=1.0,
           target_text="dtlspeer >= 1.0x pyOpenSSL"),
    Metric("hsserver", "SERVER handshake capacity: full ECDHE-ECDSA handshakes/s accepted, "
           "every server driven by the same pyOpenSSL load generator", "hs/s", "value",
           "pyopenssl", target_ratio=1.0,
           target_text="dtlspeer >= 1.0x pyOpenSSL (server side only; see README)",
           requires=("OpenSSL",)),
    Metric("flood", "SERVER CPU per spoofed cookieless ClientHello, 20 000/s from 64 loopback "
           "sources (benchmarks/flood.py); notes: RSS retained per hello, a legitimate "
           "handshake's latency during the flood", "us/hello", "value", "openssl-listen",
           higher_is_better=False, target_ratio=1.0,
           target_text="dtlspeer <= 1.0x openssl s_server -listen, <= 1 B RSS/hello, "
           "legit handshake < 100 ms"),
    Metric("resume", "SERVER: resumed (RFC 5077 ticket) vs full ECDHE-ECDSA handshakes/s, "
           "same DTLSHost server and Godot-style clients, cookie round included; notes: server "
           "CPU per handshake", "hs/s", "value", "dtlspeer-full", target_ratio=10.0,
           target_text="resumed >= 10x full handshakes/s"),
    Metric("tick", "game tick: server CPU efficiency, client-ticks per server CPU second "
           "(benchmarks/tick.py)", "client-ticks/CPU-s", "server_value", "plain",
           target_ratio=0.9, row_targets=(("dtlspeer", 0.8), ("dtlspeer-enet", None)),
           target_text="DTLSHost and aio >= 0.9x plain UDP, Godot-style classes >= 0.8x, "
           "ENet over DTLS for information; no row BEHIND, inputs and snapshots delivered"),
    Metric("tickramp", "game tick ramp: largest N clients the server held the tick for "
           "(<= 1% late ticks and lost inputs; benchmarks/tick.py)", "clients", "value", "plain",
           target_text="information (the load generator bounds the top N)"),
    Metric("enetpingpong", "ENet reliable ping-pong round trips/s, 100 B on channel 0, one "
           "client, one in flight", "rt/s", "value", "pyenet", target_ratio=0.9,
           target_text="dtlspeer ENet over DTLS >= 0.9x pyenet plain ENet"),
    Metric("enetfanin", "ENet one-way reliable 100 B messages/s delivered to one server from "
           "64 clients", "msg/s", "server_value", "pyenet", target_ratio=0.9,
           target_text="dtlspeer ENet over DTLS >= 0.9x pyenet plain ENet"),
    Metric("memory", "server memory per idle established connection (RSS delta / N)",
           "KiB/conn", "server_value", "pyopenssl", higher_is_better=False, target_abs=12.0,
           target_text="dtlspeer <= 12 KiB (pyOpenSSL ~81 KB); ratio vs pyOpenSSL"),
]


def _problems(metric: Metric, res: dict[str, Any]) -> list[str]:
    """Correctness notes of one run: lost or corrupted data, failures."""
    out = []
    if res.get("error"):
        out.append(f"FAILED: {res['error']}")
        return out
    if res.get("lost"):
        out.append(f"LOST {res['lost']} of {res.get('count')}")
    if res.get("bad") or res.get("server_bad"):
        out.append(f"CORRUPT {res.get('bad') or res.get('server_bad')}")
    if metric.key in ("fanin", "faninsrv", "enetfanin"):
        sent, got = res.get("sent", 0), res.get("server_count", 0)
        if sent and got < sent:
            out.append(f"lost {100 * (sent - got) / sent:.1f}% of sent")
        if res.get("server_senders", 0) < res.get("clients", 0):
            out.append("some senders never delivered")
    if metric.key in ("tick", "tickramp"):
        out.extend(tick.problems(res))
    if metric.key in ("hsserver", "resume") and res.get("server_cpu_ms") is not None:
        out.append(f"server CPU {res['server_cpu_ms']:.2f} ms/hs")
    if metric.key == "memory" and res.get("server_conns") is not None:
        if res["server_conns"] < res.get("want", 0):
            out.append(f"only {res['server_conns']} connected")
    if res.get("note"):
        out.append(str(res["note"]))
    return out


def metric_rows(metric: Metric, libs: Sequence[Lib]) -> list[Row]:
    """One row per implementation shown for ``metric``; ``status`` says why
    a row is not measured (not driven, not installed, no load generator)."""
    rows = []
    for lib in libs:
        if metric.key not in lib.metrics and lib.key in LISTED_ONLY:
            continue
        row = Row(lib)
        if metric.key not in lib.metrics:
            row.status = "n/a (not driven for this metric; see README)"
        elif metric.missing():
            row.status = metric.missing() or ""
        else:
            row.status = lib.missing() or ""
        rows.append(row)
    return rows


def run_metric(metric: Metric, libs: Sequence[Lib], cfg: Cfg, runs: int,
               verbose: bool) -> list[Row]:
    """All rows of one metric; the baseline is measured in every run."""
    rows = metric_rows(metric, libs)
    base = next((r for r in rows if r.lib.key == metric.baseline), None)
    for run in range(runs):
        values: dict[str, float | None] = {}
        for row in rows:
            if row.status:
                continue
            t0 = time.perf_counter()
            res = run_pair(row.lib, metric.key, cfg)
            res.setdefault("clients", cfg.clients if metric.key in ("fanin", "enetfanin") else 0)
            res.setdefault("want", cfg.conns)
            row.details.append({k: v for k, v in res.items() if k not in ("trace",)})
            probs = _problems(metric, res)
            row.problems.extend(probs)
            v = res.get(metric.value_key)
            if res.get("error") or v is None:
                values[row.lib.key] = None
                if verbose and res.get("trace"):
                    print(res["trace"], file=sys.stderr)
            else:
                values[row.lib.key] = float(v)
                row.values.append(float(v))
            if verbose:
                print(f"   run {run + 1}/{runs} {row.lib.key:<15} {metric.key:<10} "
                      f"{v if v is None else round(float(v), 1)!s:>12}  "
                      f"({time.perf_counter() - t0:.1f} s) {'; '.join(probs)}", flush=True)
        b = values.get(metric.baseline)
        for row in rows:
            v = values.get(row.lib.key)
            if b and v is not None:
                row.ratios.append(v / b)
    if base is not None and base.status:
        for row in rows:
            if not row.status:
                row.problems.append(f"no ratio: baseline {base.lib.key} {base.status}")
    return rows


def tick_variants(args: argparse.Namespace, quick: bool) -> list[tuple[Cfg, str]]:
    """The tick metric's rows: every N (``--clients``) at the first snapshot
    size, and the other snapshot sizes at the first N."""
    clients = args.clients or list(tick.CLIENTS)
    snaps = args.snapshot or ([tick.SNAPSHOT] if quick else list(tick.SNAPSHOTS))
    combos = [(n, snaps[0]) for n in clients] + [(clients[0], s) for s in snaps[1:]]
    out = []
    for n, snap in combos:
        extra = {"hz": args.hz, "input": args.input, "snapshot": snap}
        out.append((Cfg(clients=n, extra=extra),
                    f"N={n} clients, {args.hz} Hz, {args.input} B inputs, {snap} B snapshots"))
    return out


def run_ramp(metric: Metric, libs: Sequence[Lib], cfg: Cfg,
             args: argparse.Namespace) -> list[Row]:
    """``tickramp``: per row, N doubles from ``--ramp-start`` while the server
    holds the tick (tick.held), then one bisection step between the last N
    held and the first N missed. Value = the largest N held; the note adds
    the one-core projection from CPU per client-tick at that N."""
    rows = metric_rows(metric, libs)
    for row in rows:
        if not row.status:
            _ramp_row(metric, row, cfg, args)
    base = next((r for r in rows if r.lib.key == metric.baseline and r.values), None)
    for row in rows:
        if base is not None and row.values and base.values[0]:
            row.ratios.append(row.values[0] / base.values[0])
    return rows


def _ramp_row(metric: Metric, row: Row, cfg: Cfg, args: argparse.Namespace) -> None:
    """One implementation's ramp (see run_ramp); fills ``row``."""
    best: dict[str, Any] | None = None
    tried: list[str] = []

    def step(count: int) -> bool:
        nonlocal best
        res = run_pair(row.lib, "tick", dataclasses.replace(cfg, clients=count))
        row.details.append({k: v for k, v in res.items() if k != "trace"})
        ok = tick.held(res)
        tried.append(f"{count}:{'held' if ok else 'missed'}")
        if args.verbose:
            print(f"   ramp {row.lib.key:<15} N={count:<6} {'held' if ok else 'missed'}  "
                  f"{'; '.join(_problems(metric, res))}", flush=True)
        if ok:
            best = res
        elif res.get("error"):
            row.problems.append(f"N={count}: {res['error']}")
        return ok

    good = bad = 0
    n = args.ramp_start
    while n <= args.ramp_max:
        if not step(n):
            bad = n
            break
        good = n
        n *= 2
    if good and bad and bad - good > 1:
        mid = (good + bad) // 2
        if step(mid):
            good = mid
        else:
            bad = mid
    row.values.append(float(good))
    notes = [" ".join(tried)]
    if best is not None and best.get("server_cpu_us"):
        hz = best.get("server_hz", args.hz)
        notes.append(f"one-core projection {1e6 / (hz * best['server_cpu_us']):,.0f} "
                     f"({best['server_cpu_us']:.2f} us/client-tick at N={good})")
    if best is not None and best.get("generator_lag_ticks"):
        notes.append("generator lagged at the largest N: the load generator may bound it")
    if not bad:
        notes.append(f"held up to --ramp-max {args.ramp_max}")
    row.problems.extend(notes)


def build_parser(prog: str = "python -m benchmarks") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").replace(
                                    "python -m benchmarks", prog),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="short runs: 3 runs of 1 s, 500 idle connections (a few minutes)")
    p.add_argument("--only", action="append", choices=[m.key for m in METRICS],
                   metavar="METRIC", help="run only this metric (repeatable): "
                   + ", ".join(m.key for m in METRICS))
    p.add_argument("--lib", action="append", choices=[lib.key for lib in LIBS], metavar="LIB",
                   help="run only these implementations (the baseline is always added)")
    p.add_argument("--runs", type=int, help="runs per metric (default 5, quick 3)")
    p.add_argument("--seconds", type=float, help="seconds per timed run (default 2, quick 1)")
    p.add_argument("--conns", type=int, help="idle connections for 'memory' "
                   "(default 10000, quick 500)")
    p.add_argument("--flood-rate", type=float, default=20_000,
                   help="spoofed hellos per second of the 'flood' metric (default 20000)")
    p.add_argument("--flood-seconds", type=float, default=1.0,
                   help="seconds of each 'flood' run (default 1: the machine may be shared)")
    p.add_argument("--memory-runs", type=int, default=1,
                   help="runs of the memory metric (default 1: it is deterministic and slow)")
    p.add_argument("--clients", type=int, action="append",
                   help="fan-in senders (default 64; the first value given); tick: clients, "
                   "repeatable (default: one row at 200 and one at 1000)")
    p.add_argument("--hz", type=int, default=tick.HZ,
                   help=f"tick: server tick rate and each client's input rate (default {tick.HZ})")
    p.add_argument("--input", type=int, default=tick.INPUT,
                   help=f"tick: bytes per client input (default {tick.INPUT})")
    p.add_argument("--snapshot", type=int, action="append",
                   help="tick: bytes per snapshot, repeatable (default 300 at every N, plus "
                   "1200 at the first N; quick: 300 only)")
    p.add_argument("--ramp-start", type=int, default=250,
                   help="tickramp: first N (doubled while the server holds the tick; default 250)")
    p.add_argument("--ramp-max", type=int, default=4000,
                   help="tickramp: largest N tried (default 4000; the load generator, one Python "
                   "process, tops out around there)")
    p.add_argument("--concurrency", type=int, default=4, help="handshakes in flight (default 4; "
                   "hsserver uses twice as many to keep the server busy)")
    p.add_argument("--timeout", type=float, default=None,
                   help="hard bound of one run in seconds (default 60, 300 for memory)")
    p.add_argument("--json", metavar="PATH", help="also write every run's raw results as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="print every run as it ends")
    return p


def main(argv: Sequence[str] | None = None, prog: str = "python -m benchmarks") -> int:
    """Parse options, run the metrics, print the tables; exit 0 unless a run
    crashed. ``prog``: the command named in usage and errors (``python -m
    dtlspeer bench`` when the CLI runs it, also from an installed wheel)."""
    args = build_parser(prog).parse_args(argv)
    quick = args.quick
    runs = args.runs or (3 if quick else 5)
    seconds = args.seconds or (1.0 if quick else 2.0)
    conns = args.conns or (500 if quick else 10_000)
    metrics = [m for m in METRICS if not args.only or m.key in args.only]
    libs = [lib for lib in LIBS if not args.lib or lib.key in args.lib
            or lib.key in {m.baseline for m in metrics}]
    key_pem, cert_pem = make_certificate()
    print(f"dtlspeer benchmarks ({'quick' if quick else 'full'} mode): Python "
          f"{platform.python_version()}, {platform.system()} {platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg()) if hasattr(os, 'getloadavg') else '?'}")
    print("loopback 127.0.0.1; server and client in separate processes; "
          f"{runs} runs x {seconds:g} s; memory: {conns} connections, {args.memory_runs} run(s)")
    report: dict[str, Any] = {"mode": "quick" if quick else "full", "runs": runs,
                              "seconds": seconds, "conns": conns, "metrics": {}}
    failed = False
    fanin_clients = (args.clients or [64])[0]
    for metric in metrics:
        is_mem = metric.key == "memory"
        cfg = Cfg(seconds=args.flood_seconds if metric.key == "flood" else seconds,
                  clients=fanin_clients, concurrency=args.concurrency,
                  conns=conns, key_pem=key_pem, cert_pem=cert_pem,
                  timeout=args.timeout or (300.0 if is_mem else 60.0),
                  extra={"flood_rate": args.flood_rate})
        n = args.memory_runs if is_mem else runs
        if metric.key == "tick":
            variants = tick_variants(args, quick)
        elif metric.key == "tickramp":
            variants = tick_variants(args, quick)[:1]
        else:
            variants = [(cfg, "")]
        for vcfg, vnote in variants:
            if vnote:
                vcfg = dataclasses.replace(cfg, clients=vcfg.clients, extra=vcfg.extra)
            if metric.key == "tickramp":
                rows = run_ramp(metric, libs, vcfg, args)
                note = f"{vnote}; N from {args.ramp_start}, doubling up to {args.ramp_max}, " \
                       f"one run x {vcfg.seconds:g} s per step"
            else:
                rows = run_metric(metric, libs, vcfg, n, args.verbose)
                note = (f"{n} run(s), N={conns}" if is_mem else f"{n} runs x {vcfg.seconds:g} s")
                if vnote:
                    note = f"{vnote}; {note}"
            print_table(metric, rows, n, note)
            failed |= any(p.startswith("FAILED") for r in rows for p in r.problems)
            report["metrics"][metric.key + (f" {vnote}" if vnote else "")] = {
                "title": metric.title, "unit": metric.unit, "baseline": metric.baseline,
                "target": metric.target_text, "variant": vnote,
                "rows": [{"lib": r.lib.key, "title": r.lib.title, "status": r.status,
                          "median": r.value, "ratio": r.ratio, "values": r.values,
                          "ratios": r.ratios, "problems": list(dict.fromkeys(r.problems)),
                          "runs": r.details} for r in rows],
            }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)
        print(f"\nraw results: {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

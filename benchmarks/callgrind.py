"""Instruction counts of one part of a benchmark process (valgrind's
callgrind), shared by the in-process profilers (``tick_profile``,
``pingpong_profile``).

The profiler re-runs itself under ``valgrind --tool=callgrind
--collect-atstart=no`` with ``--under-valgrind``; there, :func:`toggle`
(``CALLGRIND_TOGGLE_COLLECT`` from a 3-line helper compiled at run time with
``cc``; needs valgrind's headers) switches collection on and off around the
measured part only. Instruction counts do not depend on other tenants of the
machine, unlike wall or CPU time.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any, Callable

_TOGGLE_C = """#include <valgrind/callgrind.h>
void dp_bench_toggle(void) { CALLGRIND_TOGGLE_COLLECT; }
"""


def add_options(parser: argparse.ArgumentParser, top_default: int) -> None:
    """The options every profiler takes: --callgrind, --out, --top (and the
    internal --under-valgrind of the re-run)."""
    parser.add_argument("--callgrind", action="store_true", help="count instructions (valgrind)")
    parser.add_argument("--out", default="", help="callgrind output file (default: a temp file)")
    parser.add_argument("--top", type=int, default=top_default, help="functions listed (callgrind)")
    parser.add_argument("--under-valgrind", action="store_true", help=argparse.SUPPRESS)


def toggle() -> Callable[[], Any]:
    """CALLGRIND_TOGGLE_COLLECT as a Python callable."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or not os.path.exists("/usr/include/valgrind/callgrind.h"):
        raise SystemExit("--callgrind needs cc and valgrind's headers (valgrind-dev)")
    d = tempfile.mkdtemp(prefix="dp-toggle-")
    src, lib = os.path.join(d, "t.c"), os.path.join(d, "t.so")
    with open(src, "w") as f:
        f.write(_TOGGLE_C)
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", lib, src], check=True)
    toggle_collect: Callable[[], Any] = ctypes.CDLL(lib).dp_bench_toggle
    return toggle_collect


def top(out_file: str, limit: int) -> list[str]:
    """The ``limit`` most expensive functions (exclusive cost) of a run."""
    annotate = shutil.which("callgrind_annotate")
    if annotate is None:
        return []
    text = subprocess.run([annotate, "--threshold=99", out_file], capture_output=True,
                          text=True).stdout
    lines = [ln for ln in text.splitlines() if "(" in ln and ln.strip()[:1].isdigit()]
    return lines[:limit]


def rerun(module: str, argv: Sequence[str], drop: dict[str, int], extra: Sequence[str],
          out: str, cache_sim: bool = False) -> dict[str, int] | None:
    """Run ``python -m module --under-valgrind *extra *argv`` under callgrind
    (``argv`` without the options in ``drop``, each mapped to how many values
    follow it) and return its event totals ({"Ir": ...}); None if it failed
    (its output is printed). The driver's own stderr lines are printed as
    warnings."""
    cmd = ["valgrind", "--tool=callgrind", "--collect-atstart=no",
           *(["--cache-sim=yes"] if cache_sim else []),
           f"--callgrind-out-file={out}", sys.executable, "-m", module, "--under-valgrind",
           *extra]
    i = 0
    while i < len(argv):
        if argv[i] in drop:
            i += 1 + drop[argv[i]]
            continue
        cmd.append(argv[i])
        i += 1
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        print(proc.stdout + proc.stderr)
        return None
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
    return dict(zip(events, totals))

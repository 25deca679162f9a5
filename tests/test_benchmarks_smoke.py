"""Smoke test of the benchmark runner: the quick mode with tiny counts
completes and prints every row of every metric. Correctness only: no
timing is asserted (benchmarks never run as timed tests)."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_benchmark_prints_every_row() -> None:
    sys.path.insert(0, ROOT)
    try:
        from benchmarks.__main__ import LIBS, LISTED_ONLY, METRICS
    finally:
        sys.path.remove(ROOT)
    env = dict(os.environ)
    # The checkout root makes `benchmarks` importable; dtlspeer itself is the
    # installed package (or whatever PYTHONPATH already names), never src/
    # unbuilt.
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "dtlspeer", "bench", "--runs", "1", "--seconds", "0.2",
         "--conns", "20", "--clients", "4", "--concurrency", "2", "--timeout", "60"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    blocks = out.split("\n== ")[1:]
    assert len(blocks) == len(METRICS), out
    for metric, block in zip(METRICS, blocks):
        assert block.startswith(metric.title), block
        for lib in LIBS:
            if metric.key in lib.metrics or lib.key not in LISTED_ONLY:
                assert lib.title in block, f"{lib.title} missing in {metric.key}:\n{block}"
        assert "FAILED" not in block, block
        assert "CORRUPT" not in block, block

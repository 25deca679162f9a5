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
         "--conns", "20", "--clients", "4", "--concurrency", "2", "--timeout", "60",
         "--snapshot", "300", "--ramp-start", "4", "--ramp-max", "4"],
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


def test_tick_benchmark_rows_and_accounting() -> None:
    """The tick metric with two tiny N and two snapshot sizes (the second at
    the first N): one block each, every row measured
    (CPU per client-tick printed), no failure or corruption; and the JSON
    report's counters add up (inputs delivered <= expected, snapshots
    verified by the generator's checking clients)."""
    import json
    import tempfile

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "tick.json")
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks", "--only", "tick", "--runs", "1",
             "--seconds", "0.3", "--clients", "3", "--clients", "5", "--snapshot", "200",
             "--snapshot", "1200",  # above the default DTLS MTU's payload: servers get room
             "--hz", "30", "--input", "24", "--timeout", "60", "--json", report],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
        )
        out = proc.stdout
        assert proc.returncode == 0, out + proc.stderr
        with open(report) as f:
            data = json.load(f)
    blocks = out.split("\n== ")[1:]
    assert len(blocks) == 3, out
    for (n, size), block in zip(((3, 200), (5, 200), (3, 1200)), blocks):
        assert f"N={n} clients, 30 Hz, 24 B inputs, {size} B snapshots" in block, block
        assert "FAILED" not in block and "CORRUPT" not in block, block
    for key, metric in data["metrics"].items():
        assert key.startswith("tick "), key
        for row in metric["rows"]:
            if row["status"]:
                continue
            (run,) = row["runs"]
            assert "us CPU/client-tick" in " ".join(row["problems"]), row
            assert run["server_value"] > 0, run
            assert 0 < run["server_inputs_delivered"] <= run["server_inputs_expected"], run
            assert run["snapshots_received"] <= run["server_snapshots_sent"], run
            assert run["verified"] > 0 and run["bad"] == 0, run

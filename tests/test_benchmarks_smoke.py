"""Smoke test of the benchmark runner: the quick mode with tiny counts
completes and prints every row of every metric. Correctness only: no
timing is asserted (benchmarks never run as timed tests). Also: the
dependency between the library and the runner points one way."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import dtlspeer
from _bench_runner import installed_bench_runner, runner_package

QUICK = ("--runs 1 --seconds 0.2 --conns 20 --clients 4 --concurrency 2 --timeout 60 "
         "--snapshot 300 --ramp-start 4 --ramp-max 4").split()


def test_quick_benchmark_prints_every_row() -> None:
    runner = installed_bench_runner()
    if runner is not None:
        # What a wheel offers: `dtlspeer bench`, the CLI finding the runner
        # through its entry point.
        cmd = [sys.executable, "-m", "dtlspeer", "bench", *QUICK]
        env: Optional[dict[str, str]] = None
    else:
        # A source tree without installed metadata: the runner itself.
        runner, env = runner_package()
        cmd = [sys.executable, "-m", runner, "--quick", *QUICK]
    main = importlib.import_module(f"{runner}.__main__")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    blocks = out.split("\n== ")[1:]
    assert len(blocks) == len(main.METRICS), out
    for metric, block in zip(main.METRICS, blocks):
        assert block.startswith(metric.title), block
        for lib in main.LIBS:
            if metric.key in lib.metrics or lib.key not in main.LISTED_ONLY:
                assert lib.title in block, f"{lib.title} missing in {metric.key}:\n{block}"
        assert "FAILED" not in block, block
        assert "CORRUPT" not in block, block


def imported_modules(source: Path) -> set[str]:
    """Every module name an ``import`` or ``from ... import`` in ``source``
    names (relative imports keep their leading dots)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names.add(base)
            names.update(
                f"{base}.{alias.name}" if base.strip(".") else base + alias.name
                for alias in node.names
            )
    return names


def test_the_library_never_imports_the_benchmark_runner() -> None:
    """The runner depends on the library, never the reverse: `dtlspeer
    bench` finds the runner through the `dtlspeer.commands` entry point
    (the runner registers itself), so no library module names it."""
    package_dir = Path(dtlspeer.__file__).resolve().parent
    sources = sorted(package_dir.rglob("*.py"))
    assert package_dir / "__main__.py" in sources
    offenders = {
        f"{source.relative_to(package_dir)}: {name}"
        for source in sources
        for name in imported_modules(source)
        if any(
            part in ("benchmarks", "_benchmarks", "dtlspeer_benchmarks") for part in name.split(".")
        )
    }
    assert not offenders, sorted(offenders)


def test_tick_benchmark_rows_and_accounting() -> None:
    """The tick metric with two tiny N and two snapshot sizes (the second at
    the first N): one block each, every row measured
    (CPU per client-tick printed), no failure or corruption; and the JSON
    report's counters add up (inputs delivered <= expected, snapshots
    verified by the generator's checking clients). The ENet-over-DTLS row
    (its own generator: real ENet clients) is among the measured rows in
    every block, with the generator's CPU per client-tick recorded."""
    import json
    import tempfile

    runner, env = runner_package()
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "tick.json")
        proc = subprocess.run(
            [sys.executable, "-m", runner, "--only", "tick", "--runs", "1",
             "--seconds", "0.3", "--clients", "3", "--clients", "5", "--snapshot", "200",
             "--snapshot", "1200",  # above the default DTLS MTU's payload: servers get room
             "--hz", "30", "--input", "24", "--timeout", "60", "--json", report],
            env=env, capture_output=True, text=True, timeout=600,
        )
        out = proc.stdout
        assert proc.returncode == 0, out + proc.stderr
        with open(report) as f:
            data = json.load(f)
    blocks = out.split("\n== ")[1:]
    assert len(blocks) == 3, out
    for (n, size), block in zip(((3, 200), (5, 200), (3, 1200)), blocks):
        assert f"N={n} clients, 30 Hz, 24 B inputs, {size} B snapshots" in block, block
        assert "dtlspeer ENet over DTLS" in block, block
        assert "FAILED" not in block and "CORRUPT" not in block, block
    for key, metric in data["metrics"].items():
        assert key.startswith("tick "), key
        (enet,) = [row for row in metric["rows"] if row["lib"] == "dtlspeer-enet"]
        assert enet["status"] == "", enet
        assert enet["runs"][0]["generator_cpu_us"] > 0, enet
        for row in metric["rows"]:
            if row["status"]:
                continue
            (run,) = row["runs"]
            assert "us CPU/client-tick" in " ".join(row["problems"]), row
            assert run["server_value"] > 0, run
            assert 0 < run["server_inputs_delivered"] <= run["server_inputs_expected"], run
            assert run["snapshots_received"] <= run["server_snapshots_sent"], run
            assert run["verified"] > 0 and run["bad"] == 0, run

"""Smoke test of the benchmark runner: the quick mode with tiny counts
completes and prints every row of every metric. Correctness only: no
timing is asserted (benchmarks never run as timed tests). Also: the
dependency between the library and the runner points one way."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path
from typing import Optional

import dtlspeer
from _bench_runner import installed_bench_runner, runner_package

QUICK = "--runs 1 --seconds 0.2 --conns 20 --clients 4 --concurrency 2 --timeout 60".split()


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

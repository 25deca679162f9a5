"""Where the suite finds the benchmark runner it drives.

In a checkout the runner is ``benchmarks/`` (``python -m benchmarks``); an
installed wheel carries it as the top-level package ``dtlspeer_benchmarks``,
registered as the CLI's ``bench`` command through the ``dtlspeer.commands``
entry point. cibuildwheel runs the suite from a directory holding only
``tests/`` and ``pyproject.toml`` (``tools/cibuildwheel_test.py``), so a
test must not assume the checkout."""

from __future__ import annotations

import importlib.util
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENTRY_POINT_GROUP = "dtlspeer.commands"


def installed_bench_entry_point() -> Optional[metadata.EntryPoint]:
    """The installed ``bench`` command (``dtlspeer_benchmarks``), or None
    when dtlspeer runs from a source tree: without metadata, or with the
    metadata a build leaves in ``src/`` (``dtlspeer.egg-info``) naming a
    runner that is not importable from there."""
    if sys.version_info >= (3, 10):
        found = list(metadata.entry_points(group=ENTRY_POINT_GROUP, name="bench"))
    else:
        found = [e for e in metadata.entry_points().get(ENTRY_POINT_GROUP, ()) if e.name == "bench"]
    if not found or importlib.util.find_spec(found[0].module.split(".")[0]) is None:
        return None
    return found[0]


def runner_package() -> tuple[str, dict[str, str]]:
    """The runner's package name and the environment that makes it
    importable in a child process: the checkout's ``benchmarks`` when the
    tests sit in a checkout, else the installed ``dtlspeer_benchmarks``;
    skips the test when neither exists."""
    env = dict(os.environ)
    if (ROOT / "benchmarks" / "__main__.py").is_file():
        # dtlspeer itself stays whatever the suite uses (installed package
        # or PYTHONPATH=src), never src/ unbuilt.
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        return "benchmarks", env
    if importlib.util.find_spec("dtlspeer_benchmarks") is not None:
        return "dtlspeer_benchmarks", env
    pytest.skip("no benchmark runner: neither a checkout's benchmarks/ nor dtlspeer_benchmarks")

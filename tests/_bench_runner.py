"""Where the suite finds the benchmark runner it drives.

In a checkout the runner is ``benchmarks/`` (``python -m benchmarks``); an
installed wheel carries it as the top-level package ``dtlspeer_benchmarks``,
registered as the CLI's ``bench`` command through the ``dtlspeer.commands``
entry point. cibuildwheel runs the suite from a directory holding only its
``test-sources`` (``tools/cibuildwheel_test.py``), so a test must not assume
the checkout."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent


def installed_bench_runner() -> Optional[str]:
    """The package of the installed ``bench`` command (``dtlspeer_benchmarks``),
    found the way the CLI finds it, or None when dtlspeer runs from a source
    tree: without metadata, or with the metadata a build leaves in ``src/``
    (``dtlspeer.egg-info``) naming a runner that is not importable there."""
    from dtlspeer.__main__ import _registered_command

    try:
        command = _registered_command("bench")
    except ImportError:
        return None
    return None if command is None else command.__module__.split(".")[0]


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

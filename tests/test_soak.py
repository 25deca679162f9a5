"""A short soak (benchmarks/soak.py): churn, loss, parking and spoofed garbage
against a DTLSHost server in its own process, with every echo checked, no
peer left after the drain and the native heap back after warm-up. The
10-minute run is for notes: ``python -m benchmarks.soak``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_short_soak_is_clean() -> None:
    env = dict(os.environ)
    # The benchmarks package from the checkout, dtlspeer from wherever the
    # suite takes it (installed package or PYTHONPATH).
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.soak", "--seconds", "30", "--clients", "60",
         "--sample", "3", "--garbage", "300"],
        capture_output=True, text=True, timeout=240, env=env, cwd=ROOT,
    )
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report
    assert "soak: OK" in proc.stdout, report
    # The run did what it says: slots connected, parked peers were woken,
    # some vanished (ended by the server's idle timeout), garbage was sent.
    assert '"vanished"' in proc.stdout and '"wakes"' in proc.stdout, report
    assert "IDLE_TIMEOUT" in proc.stdout, report

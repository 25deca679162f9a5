"""A short soak (benchmarks/soak.py): churn, loss, parking and spoofed garbage
against a DTLSHost server in its own process, with every echo checked, no
peer left after the drain and the native heap back after warm-up. The
10-minute run is for notes: ``python -m benchmarks.soak``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from _bench_runner import runner_package


@pytest.mark.slow
def test_short_soak_is_clean() -> None:
    # The checkout's benchmarks/, or the wheel's dtlspeer_benchmarks.
    package, env = runner_package()
    proc = subprocess.run(
        [sys.executable, "-m", f"{package}.soak", "--seconds", "30", "--clients", "60",
         "--sample", "3", "--garbage", "300"],
        capture_output=True, text=True, timeout=240, env=env,
    )
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report
    assert "soak: OK" in proc.stdout, report
    # The run did what it says: slots connected, parked peers were woken,
    # some vanished (ended by the server's idle timeout), garbage was sent.
    assert '"vanished"' in proc.stdout and '"wakes"' in proc.stdout, report
    assert "IDLE_TIMEOUT" in proc.stdout, report

"""Packaging: the sdist carries the verified Mbed TLS tree, a wheel builds from
it with no network at all, and that wheel installs and works in a fresh venv."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import build_mbedtls as bm  # noqa: E402

pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def offline_prefix() -> list[str]:
    """Run a command in a fresh network namespace (no interface but a down
    loopback) when we are allowed to; otherwise rely on the build's own
    no-download switch, which the environment sets too."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n"]
    return []


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("build")
    for lock in bm.load_locks():
        if not (ROOT / "vendor" / lock.top_dir).is_dir():
            pytest.skip(f"the checkout has no fetched {lock.display} tree to pack")
    out = tmp_path_factory.mktemp("sdist")
    run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out)], ROOT)
    (path,) = out.glob("dtlspeer-*.tar.gz")
    return path


def test_sdist_contains_the_verified_tree_and_no_build_products(
    sdist: Path, tmp_path: Path
) -> None:
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        tar.extractall(tmp_path, filter="data")
    (top,) = {n.split("/", 1)[0] for n in names}
    for lock in bm.load_locks():  # Mbed TLS and ENet
        tree = tmp_path / top / "vendor" / lock.top_dir
        bm.verify_tree(tree, lock)  # byte for byte what the lock pins
    assert not [n for n in names if n.endswith((".so", ".o", ".pyd", ".tar.bz2", ".tar.xz"))]
    assert f"{top}/vendor/mbedtls.lock.json" in names
    assert f"{top}/vendor/enet.lock.json" in names
    assert f"{top}/src/native/dtlspeer.h" in names
    assert f"{top}/src/dtlspeer/py.typed" in names
    assert f"{top}/src/dtlspeer/_native.pyi" in names  # the typing stub of the extension


def test_wheel_builds_offline_from_the_sdist_and_runs_in_a_fresh_venv(
    sdist: Path, tmp_path: Path
) -> None:
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path, filter="data")
    (src,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    env = dict(os.environ, **{bm.NO_DOWNLOAD_ENV: "1"})
    for lock in bm.load_locks():
        env.pop(lock.source_env, None)
    wheels = tmp_path / "wheels"
    cmd = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(wheels)]
    run(offline_prefix() + cmd, src, env)
    (wheel,) = wheels.glob("dtlspeer-*.whl")
    assert "-abi3-" in wheel.name  # one wheel for every CPython >= 3.9
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert any(n.startswith("dtlspeer/_native.") and n.endswith((".so", ".pyd")) for n in names)
    assert "dtlspeer/py.typed" in names
    assert "dtlspeer/_native.pyi" in names  # mypy users type-check against it

    clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], tmp_path, clean_env)
    py = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    has_cffi = subprocess.run([str(py), "-c", "import cffi"], capture_output=True, env=clean_env)
    if has_cffi.returncode != 0:  # the one runtime dependency
        run([str(py), "-m", "pip", "install", "-q", "cffi>=1.17"], tmp_path, clean_env)
    pip_install = [str(py), "-m", "pip", "install", "-q", "--no-index", "--no-deps", str(wheel)]
    run(pip_install, tmp_path, clean_env)
    probe = "import dtlspeer; print(dtlspeer.mbedtls_version(), dtlspeer.__file__)"
    out = run([str(py), "-c", probe], tmp_path, clean_env)
    version, location = out.split()
    assert version == "3.6.7"
    assert str(venv) in location
    # The benchmark runner ships as its own package, dtlspeer_benchmarks, and
    # registers `dtlspeer bench` through an entry point: the command works
    # from the installed wheel, far from any checkout.
    assert "dtlspeer_benchmarks/__main__.py" in names
    assert "dtlspeer_benchmarks/libs/dtlspeer_host.py" in names
    assert not [n for n in names if n.startswith("dtlspeer/_benchmarks")]
    bench = [str(py), "-m", "dtlspeer", "bench", "--only", "pingpong", "--lib", "dtlspeer-host",
             "--runs", "1", "--seconds", "0.3"]
    out = run(bench, tmp_path, clean_env)
    assert "plain Python UDP socket" in out and "dtlspeer DTLS (DTLSHost batch)" in out
    assert "FAILED" not in out

"""Run cibuildwheel's test step locally, the way cibuildwheel runs it.

cibuildwheel tests each wheel far from the checkout: it makes a fresh virtual
environment, installs the wheel with ``test-extras``, copies ``test-sources``
into an empty directory and runs ``test-command`` there, with that
environment's ``python`` first on ``PATH``. A test that reaches for a file of
the checkout (``benchmarks/``, ``examples/``, ``src/``) passes in a checkout
and fails only in the wheel jobs. This script repeats those steps on this
machine, reading every setting from ``[tool.cibuildwheel]`` in
``pyproject.toml``, so ``.ci/run`` catches such a test before a wheel job does:

1. build the sdist, which is what the wheel jobs get (``wheels.yml``): they
   build from it and cibuildwheel copies ``test-sources`` out of it, so a
   test source missing from ``MANIFEST.in`` fails here as it would there;
2. build the wheel from the checkout (``python -m build --wheel
   --no-isolation``: the Mbed TLS objects cached under ``build/`` are reused;
   the sdist -> wheel compile is ``tests/test_packaging.py``'s), or take
   ``--wheel PATH``;
3. a fresh venv (no system site-packages), ``pip install "WHEEL[extras]"``
   (the extras' requirements come from the package index, as in cibuildwheel);
   copy ``test-sources`` from the extracted sdist into an empty directory;
4. run the ``test-command`` entries there, in order, stopping at the first
   failure (cibuildwheel joins them with ``&&``); ``{project}`` and
   ``{package}`` are replaced by the extracted sdist, as cibuildwheel does.

Not emulated: the manylinux/musllinux containers, ``repair-wheel-command``
(auditwheel) and the other platforms. Run: ``python tools/cibuildwheel_test.py``
(``build``, ``setuptools``, ``wheel``, ``cffi`` and, before Python 3.11,
``tomli`` installed: the ``test`` extra has them). Exit status: that of the
first failing step, 0 if all pass.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def cibuildwheel_options(pyproject: Path) -> dict[str, Any]:
    """``[tool.cibuildwheel]`` of ``pyproject``, with list-or-string options
    normalized to lists."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11: the test extra installs tomli there
        import tomli as tomllib
    with open(pyproject, "rb") as f:
        options = dict(tomllib.load(f)["tool"]["cibuildwheel"])
    for key in ("test-extras", "test-sources", "test-command", "test-requires"):
        value = options.get(key, [])
        if isinstance(value, str):
            # cibuildwheel: extras and sources are space-separated strings
            # when not lists; a command string is one command.
            value = [value] if key == "test-command" else value.split()
        options[key] = list(value)
    return options


def run(
    cmd: list[str] | str,
    cwd: Path,
    env: dict[str, str] | None = None,
    shell: bool = False,
    quiet: bool = False,
) -> None:
    """Run one step, echoing it; exit with its status when it fails. ``quiet``:
    its output (a build's file list) is shown only if it fails."""
    shown = cmd if isinstance(cmd, str) else shlex.join(cmd)
    print(f"+ (cd {cwd} && {shown})", flush=True)
    proc = subprocess.run(cmd, cwd=cwd, env=env, shell=shell, capture_output=quiet, text=True)
    if proc.returncode != 0:
        if quiet:
            print((proc.stdout + proc.stderr)[-6000:], file=sys.stderr)
        print(f"cibuildwheel_test: FAILED ({proc.returncode}): {shown}", file=sys.stderr)
        sys.exit(proc.returncode)


def build_sdist(out: Path) -> Path:
    """The sdist of the checkout, extracted under ``out``: its top directory."""
    run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out)],
        ROOT,
        quiet=True,
    )
    (sdist,) = out.glob("dtlspeer-*.tar.gz")
    with tarfile.open(sdist) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.12, and the security backports
            tar.extractall(out, filter="data")
        else:  # our own archive, just built
            tar.extractall(out)
    (top,) = [p for p in out.iterdir() if p.is_dir()]
    return top


def build_wheel(out: Path) -> Path:
    """The wheel of the checkout, built in place (reusing ``build/``)."""
    run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)],
        ROOT,
        quiet=True,
    )
    (wheel,) = out.glob("dtlspeer-*.whl")
    return wheel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, help="test this wheel instead of building one")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary directory (venv, test directory) and print it",
    )
    args = parser.parse_args(argv)
    options = cibuildwheel_options(ROOT / "pyproject.toml")
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="cibw-test-"))
    try:
        project = build_sdist(work / "sdist")
        wheel = args.wheel.resolve() if args.wheel else build_wheel(work / "wheelhouse")
        built = time.monotonic()
        # The environment cibuildwheel gives the test: its own venv, nothing
        # of ours on the path.
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
        }
        venv = work / "venv"
        run([sys.executable, "-m", "venv", str(venv)], work, env)
        bindir = venv / ("Scripts" if os.name == "nt" else "bin")
        env["PATH"] = os.pathsep.join([str(bindir), env.get("PATH", "")])
        env["VIRTUAL_ENV"] = str(venv)
        python = str(bindir / "python")
        extras = options["test-extras"]
        requirement = f"{wheel}[{','.join(extras)}]" if extras else str(wheel)
        run(
            [
                python,
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                requirement,
                *options["test-requires"],
            ],
            work,
            env,
        )
        test_dir = work / "test_cwd"
        test_dir.mkdir()
        for source in options["test-sources"]:
            src, dst = project / source, test_dir / source
            if not src.exists():
                sys.exit(
                    f"cibuildwheel_test: FAILED: test-source {source!r} is not in the sdist "
                    "(MANIFEST.in)"
                )
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(src, dst)
        installed = time.monotonic()
        for command in options["test-command"]:
            command = command.replace("{project}", str(project)).replace("{package}", str(project))
            run(command, test_dir, env, shell=True)
        done = time.monotonic()
        print(
            f"cibuildwheel_test: PASS {wheel.name}: build {built - started:.0f} s, "
            f"venv + install {installed - built:.0f} s, test-command {done - installed:.0f} s",
            flush=True,
        )
        return 0
    finally:
        if args.keep:
            print(f"cibuildwheel_test: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

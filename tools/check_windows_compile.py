"""Cross-compile the Windows C path with MinGW-w64 and link it into a DLL.

The Windows branches of ``src/native`` (winsock ``SOCKET``/``WSAPoll``/
``recvfrom``, SRW-lock threading through ``MBEDTLS_THREADING_ALT``,
``InitOnceExecuteOnce``) are never compiled on a Linux machine. This script
compiles, for ``x86_64-w64-mingw32``:

* every ``src/native/*.c`` with the warning flags our own code must pass
  (``-Wall -Wextra -Wshadow -Wstrict-prototypes``) plus ``-Werror``;
* every Mbed TLS ``library/*.c`` of the verified pinned tree, with our config
  header (warnings there are counted and printed, not fatal: not our code);

then links all objects into a throwaway DLL against ``ws2_32``, ``bcrypt`` and
``advapi32`` (what ``build_mbedtls.link_libraries()`` names for Windows), so a
symbol that only exists on POSIX (pthread, recvmmsg, poll) fails here.

``_WIN32_WINNT`` is 0x0600 (Vista): the floor of every API we use (SRW locks,
INIT_ONCE, WSAPoll, inet_pton). Real wheels are built with MSVC, whose SDK
defaults to the newest version; this proves we need nothing newer.

Not covered: the cffi-generated glue (needs Windows Python headers) and MSVC
itself. Run: ``python tools/check_windows_compile.py`` (Debian package:
``gcc-mingw-w64-x86-64``). Exit status 0 = clean, 1 = failure, 77 = the cross
compiler is not installed (nothing checked).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import build_mbedtls as bm  # noqa: E402

DEFAULT_CC = "x86_64-w64-mingw32-gcc"
APT_PACKAGE = "gcc-mingw-w64-x86-64"
WINNT = "0x0600"
EXIT_NO_COMPILER = 77
OUR_FLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Wshadow", "-Wstrict-prototypes", "-Werror"]
MBED_FLAGS = ["-O2"]
LIBS = ["-lws2_32", "-lbcrypt", "-ladvapi32"]
# dp_common.c (SRW-lock mutexes, INIT_ONCE), dp_endpoint.c (winsock I/O) and
# Mbed TLS's Windows entropy source.
EXPECTED_IMPORTS = (
    "AcquireSRWLockExclusive",
    "ReleaseSRWLockExclusive",
    "InitializeSRWLock",
    "InitOnceExecuteOnce",
    "WSAPoll",
    "WSAGetLastError",
    "recvfrom",
    "sendto",
    "BCryptGenRandom",
)


def find_compiler(explicit: str | None = None) -> str | None:
    return shutil.which(explicit or os.environ.get("DTLSPEER_MINGW_CC", DEFAULT_CC))


def macro_flags() -> list[str]:
    macros, _, _ = bm.compile_flags()
    out = [f"-D_WIN32_WINNT={WINNT}"]
    for name, value in macros:
        out.append(f"-D{name}" if value is None else f"-D{name}={value}")
    return out


def compile_one(cc: str, src: Path, obj: Path, flags: list[str]) -> tuple[Path, int, str]:
    obj.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [cc, "-c", *flags, str(src), "-o", str(obj)], capture_output=True, text=True
    )
    return src, proc.returncode, proc.stderr


def check(cc: str, build_dir: Path, jobs: int) -> int:
    trees = bm.resolve_sources()
    tree = trees["mbedtls"]
    includes = [f"-I{d}" for d in bm.include_dirs(trees)]
    common = macro_flags() + includes
    # Mbed TLS objects are reused while the tree, config header, flags and
    # compiler stay the same; our objects are always rebuilt.
    key = hashlib.sha256()
    key.update(bm.tree_digest(tree, bm.mbedtls_digest_paths()).encode())
    key.update(bm.tree_digest(trees["enet"], ["include", *bm.ENET_SOURCES]).encode())
    key.update(bm.CONFIG_HEADER.read_bytes())
    key.update(bm.NATIVE_DIR.joinpath("threading_alt.h").read_bytes())
    key.update(repr((common, MBED_FLAGS, cc)).encode())
    mbed_dir = build_dir / f"mbedtls-{key.hexdigest()[:16]}"
    ours_dir = build_dir / "dtlspeer-native"
    shutil.rmtree(ours_dir, ignore_errors=True)

    work: list[tuple[Path, Path, list[str]]] = []
    ours = sorted(bm.NATIVE_DIR.glob("*.c"))
    for src in ours:
        work.append((src, ours_dir / (src.stem + ".o"), common + OUR_FLAGS))
    mbed = bm.third_party_sources(trees)  # Mbed TLS and ENet's protocol sources
    mbed_sources = [src for src, _ in mbed]
    for src, stem in mbed:
        obj = mbed_dir / (stem + ".o")
        if not obj.exists():
            work.append((src, obj, common + MBED_FLAGS))

    version = subprocess.run([cc, "-dumpversion"], capture_output=True, text=True).stdout.strip()
    cached = len(mbed_sources) - sum(1 for w in work if w[0] in mbed_sources)
    print(f"compiler: {cc} ({version})")
    print(
        f"_WIN32_WINNT={WINNT}; {len(ours)} dtlspeer files, "
        f"{len(mbed_sources)} Mbed TLS + ENet files ({cached} cached)"
    )
    failures: list[str] = []
    mbed_warnings: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for src, rc, err in pool.map(lambda w: compile_one(cc, *w), work):
            mine = src.parent == bm.NATIVE_DIR
            if rc != 0 or (mine and err.strip()):
                failures.append(f"--- {src.name} (exit {rc})\n{err.strip()}")
            elif err.strip():
                mbed_warnings.append(f"--- {src.name}\n{err.strip()}")
    for block in mbed_warnings:
        print(block)
    if failures:
        print("\n".join(failures))
        print(f"FAIL: {len(failures)} file(s) did not compile cleanly for Windows")
        return 1
    print(f"our files: {len(ours)} compiled, 0 warnings (-Werror)")
    print(
        f"Mbed TLS + ENet: {len(mbed_sources)} compiled, {len(mbed_warnings)} file(s) with warnings"
    )

    objects = [str(ours_dir / (s.stem + ".o")) for s in ours]
    objects += [str(mbed_dir / (stem + ".o")) for _, stem in mbed]
    dll = build_dir / "dtlspeer_native_check.dll"
    link = subprocess.run(
        [cc, "-shared", "-o", str(dll), *objects, "-Wl,--no-undefined", *LIBS],
        capture_output=True,
        text=True,
    )
    if link.returncode != 0 or link.stderr.strip():
        print(link.stderr.strip())
        print("FAIL: the objects do not link into a Windows DLL")
        return 1
    print(f"linked {dll.name} against {' '.join(LIBS)}: every symbol resolves")
    return check_imports(cc, dll)


def check_imports(cc: str, dll: Path) -> int:
    """The DLL must import the Windows APIs of our _WIN32 branches: proof that
    those branches, not the POSIX ones, were compiled."""
    objdump = shutil.which(cc.replace("gcc", "objdump")) if cc.endswith("gcc") else None
    if objdump is None:
        print("objdump for the target not found: import check skipped")
        print("OK")
        return 0
    out = subprocess.run([objdump, "-p", str(dll)], capture_output=True, text=True).stdout
    imported = {line.split()[-1] for line in out.splitlines() if line.startswith("\t")}
    missing = [name for name in EXPECTED_IMPORTS if name not in imported]
    if missing:
        print(f"FAIL: the DLL does not import {', '.join(missing)}: a _WIN32 branch was not built")
        return 1
    print(f"imports the Windows APIs of our _WIN32 branches: {', '.join(EXPECTED_IMPORTS)}")
    print("OK")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cc", help=f"cross compiler (default: $DTLSPEER_MINGW_CC or {DEFAULT_CC})"
    )
    parser.add_argument(
        "--build-dir",
        type=Path,
        default=None,
        help="where objects go (default: a temporary directory)",
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    cc = find_compiler(args.cc)
    if cc is None:
        print(
            f"SKIP: {args.cc or DEFAULT_CC} not found; install the Debian package {APT_PACKAGE}",
            file=sys.stderr,
        )
        return EXIT_NO_COMPILER
    if args.build_dir is not None:
        return check(cc, args.build_dir.resolve(), args.jobs)
    with tempfile.TemporaryDirectory(prefix="dtlspeer-mingw-") as tmp:
        return check(cc, Path(tmp), args.jobs)


if __name__ == "__main__":
    sys.exit(main())

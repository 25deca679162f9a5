"""Build ``dtlspeer._native``: the pinned Mbed TLS and ENet plus our C core, through cffi.

What happens, in order:

1. ``resolve_sources()`` finds each pinned third-party source (Mbed TLS,
   ``vendor/mbedtls.lock.json``; ENet, ``vendor/enet.lock.json``) and verifies
   every byte against the pinned SHA-256 values (the tarball's, and a digest
   of the extracted subset we compile). One chain for every lock, first hit
   wins: ``$DTLSPEER_<NAME>_SOURCE`` (tree or tarball) -> verified tree under
   ``vendor/`` (the sdist case) -> cached tarball under ``vendor/`` -> the
   upstream release URL (when the lock pins one) -> the OS source packages
   (``apt-get source``). If a source cannot be found, ONE ``SourceError``
   lists, for every failed lock, each place and what happened there.
   A ``$DTLSPEER_<NAME>_SOURCE`` that is set but missing or fails
   verification fails that lock at once: no other place is tried.
2. ``ffibuilder`` declares our small C API (``src/native/dtlspeer.h``) to cffi.
3. ``BuildExt`` (a setuptools ``build_ext``) compiles Mbed TLS, ENet's
   protocol sources and our ``src/native/*.c`` in parallel, caching the
   third-party objects by a digest of tree, config and flags, then links
   them into the extension (every symbol hidden but ``PyInit__native``).

``setup.py`` uses it through ``cffi_modules`` and ``cmdclass``. Run this file
directly to resolve the source and build the extension in place
(``python build_mbedtls.py``), for development.
"""

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import urllib.request
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parent
VENDOR_DIR = ROOT / "vendor"
NATIVE_DIR = ROOT / "src" / "native"
LOCK_PATH = VENDOR_DIR / "mbedtls.lock.json"
ENET_LOCK_PATH = VENDOR_DIR / "enet.lock.json"
LOCK_PATHS = (LOCK_PATH, ENET_LOCK_PATH)
API_HEADER = NATIVE_DIR / "dtlspeer.h"
CONFIG_HEADER = NATIVE_DIR / "dtlspeer_mbedtls_config.h"

SOURCE_ENV = "DTLSPEER_MBEDTLS_SOURCE"  # Lock.source_env of the Mbed TLS lock
# Skips the network places for every pinned source (the name predates ENet).
NO_DOWNLOAD_ENV = "DTLSPEER_MBEDTLS_NO_DOWNLOAD"
WERROR_ENV = "DTLSPEER_WERROR"
SANITIZE_ENV = "DTLSPEER_SANITIZE"
PORTABLE_ENV = "DTLSPEER_PORTABLE_IO"
DOWNLOAD_TIMEOUT_S = 20


# --------------------------------------------------------------------------
# Lock file
# --------------------------------------------------------------------------


class LockError(ValueError):
    """A vendor/*.lock.json is missing a field or has a malformed one."""


@dataclass(frozen=True)
class Lock:
    """One pinned third-party release, as read from ``vendor/<name>.lock.json``.

    ``url`` is empty when no upstream download is pinned (ENet: the pinned
    tarball is Debian's repacked ``orig``, reached through ``apt-get source``).
    ``os_version`` is the upstream version as the OS source package spells it
    (``1.3.18+ds`` for a repack), ``version`` when the same.
    """

    name: str
    version: str
    tarball: str
    sha256: str
    url: str
    top_dir: str
    os_source_package: str
    tree_paths: tuple[str, ...]
    tree_sha256: str
    title: str = ""
    os_version: str = ""

    @property
    def display(self) -> str:
        return f"{self.title or self.name} {self.version}"

    @property
    def source_env(self) -> str:
        """The variable that names an explicit tree or tarball for this lock."""
        return f"DTLSPEER_{re.sub(r'[^A-Z0-9]', '_', self.name.upper())}_SOURCE"

    @property
    def os_upstream_version(self) -> str:
        return self.os_version or self.version

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> "Lock":
        def text(key: str, mapping: Mapping[str, object] = data) -> str:
            value = mapping.get(key)
            if not isinstance(value, str) or not value:
                raise LockError(f"lock file: {key!r} must be a non-empty string")
            return value

        def digest(key: str, mapping: Mapping[str, object] = data) -> str:
            value = text(key, mapping).lower()
            if not re.fullmatch(r"[0-9a-f]{64}", value):
                raise LockError(f"lock file: {key!r} must be 64 hex digits (SHA-256)")
            return value

        tree = data.get("tree")
        if not isinstance(tree, Mapping):
            raise LockError("lock file: 'tree' must be an object with 'paths' and 'sha256'")
        paths = tree.get("paths")
        if (
            not isinstance(paths, list)
            or not paths
            or not all(isinstance(p, str) and p and ".." not in Path(p).parts for p in paths)
        ):
            raise LockError("lock file: 'tree.paths' must be a list of relative paths")
        version = text("version")
        if not re.fullmatch(r"\d+\.\d+\.\d+", version):
            raise LockError(f"lock file: 'version' must look like 3.6.7, not {version!r}")

        def optional(key: str) -> str:
            return "" if data.get(key) is None else text(key)

        os_version = optional("os_version")
        if os_version and not os_version.startswith(version):
            raise LockError(f"lock file: 'os_version' {os_version!r} is not a {version} release")
        return cls(
            name=text("name"),
            version=version,
            tarball=text("tarball"),
            sha256=digest("sha256"),
            url=optional("url"),
            top_dir=text("top_dir"),
            os_source_package=text("os_source_package"),
            tree_paths=tuple(paths),
            tree_sha256=digest("sha256", tree),
            title=optional("title"),
            os_version=os_version,
        )

    @classmethod
    def load(cls, path: Path = LOCK_PATH) -> "Lock":
        try:
            raw = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise LockError(f"cannot read lock file {path}: {exc}") from exc
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise LockError(f"lock file {path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise LockError(f"lock file {path} must hold a JSON object")
        return cls.from_dict(data)


# --------------------------------------------------------------------------
# Verification and extraction
# --------------------------------------------------------------------------


class SourceError(RuntimeError):
    """No verified source could be found for one or more locks.

    ``failures`` holds (lock, attempts) per failed lock; ``attempts`` lists
    every place tried, over all of them (one report for the whole build).
    """

    def __init__(self, failures: list[tuple[Lock, list[tuple[str, str]]]]):
        self.failures = failures
        self.attempts = [a for _, attempts in failures for a in attempts]
        lines: list[str] = []
        for lock, attempts in failures:
            lines.append(f"no verified source for {lock.display} (sha256 {lock.sha256}); tried:")
            lines += [
                f"  {i}. {place}: {outcome}" for i, (place, outcome) in enumerate(attempts, 1)
            ]
            lines.append(
                f"Fix: put {lock.tarball} in {VENDOR_DIR} or point {lock.source_env} at it "
                "(see vendor/README.md)."
            )
        super().__init__("\n".join(lines))


class VerificationError(ValueError):
    """A tarball or tree did not match its pinned SHA-256, or could not be unpacked."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree_digest(root: Path, paths: Iterable[str]) -> str:
    """SHA-256 over every regular file below ``paths`` of ``root``: sorted
    ``relative/path NUL sha256 LF`` lines. Any added, missing or changed file
    changes it; symlinks are refused outright."""
    entries: list[tuple[str, str]] = []
    for top in paths:
        start = root / top
        if start.is_symlink():
            raise VerificationError(f"{start} is a symlink")
        if start.is_file():
            entries.append((top, sha256_file(start)))
            continue
        if not start.is_dir():
            raise VerificationError(f"{start} is missing")
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames.sort()
            for name in filenames:
                p = Path(dirpath) / name
                if p.is_symlink() or not p.is_file():
                    raise VerificationError(f"{p} is not a regular file")
                entries.append((p.relative_to(root).as_posix(), sha256_file(p)))
    h = hashlib.sha256()
    for rel, digest in sorted(entries):
        h.update(f"{rel}\0{digest}\n".encode())
    return h.hexdigest()


def verify_tarball(path: Path, lock: Lock) -> None:
    actual = sha256_file(path)
    if actual != lock.sha256:
        raise VerificationError(f"sha256 mismatch: got {actual}, lock file pins {lock.sha256}")


def verify_tree(tree: Path, lock: Lock) -> None:
    actual = tree_digest(tree, lock.tree_paths)
    if actual != lock.tree_sha256:
        raise VerificationError(
            f"tree digest mismatch: got {actual}, lock file pins {lock.tree_sha256}"
        )


def extract_tarball(tarball: Path, lock: Lock, dest_parent: Path) -> Path:
    """Unpack the subset named by ``lock.tree_paths`` to ``dest_parent/top_dir``
    (atomically: into a temporary sibling first), then verify the tree digest."""
    dest = dest_parent / lock.top_dir
    wanted = tuple(f"{lock.top_dir}/{p}" for p in lock.tree_paths)
    dest_parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest_parent))
    try:
        try:
            with tarfile.open(tarball, "r:*") as tar:
                members = []
                for m in tar.getmembers():
                    if not any(m.name == w or m.name.startswith(w + "/") for w in wanted):
                        continue
                    if not (m.isfile() or m.isdir()):
                        raise VerificationError(f"unexpected link or device {m.name!r} in tarball")
                    members.append(m)
                if not members:
                    raise VerificationError(f"tarball has no {lock.top_dir}/ tree")
                try:
                    tar.extractall(staging, members=members, filter="data")
                except TypeError:  # Python without extraction filters; links refused above
                    tar.extractall(staging, members=members)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise VerificationError(f"cannot unpack {tarball.name}: {exc}") from exc
        verify_tree(staging / lock.top_dir, lock)
        if dest.exists():
            shutil.rmtree(dest)
        (staging / lock.top_dir).rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


# --------------------------------------------------------------------------
# Source resolution
# --------------------------------------------------------------------------


class _NotThere(Exception):
    """A place that simply does not have the source (not an error to dwell on)."""


def _download(url: str, dest: Path) -> None:
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp, open(tmp, "wb") as f:
            shutil.copyfileobj(resp, f)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)


def _apt_repositories(etc_apt: Path = Path("/etc/apt")) -> list[tuple[str, list[str], str]]:
    """(URI, suites, Signed-By) of every ``deb`` entry the machine itself uses,
    read from deb822 ``*.sources`` files and one-line ``sources.list`` files."""
    repos: list[tuple[str, list[str], str]] = []
    for f in sorted((etc_apt / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", f.read_text(errors="replace")):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[0].isspace():
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled") == "no":
                continue
            for uri in fields.get("uris", "").split():
                repos.append((uri, fields.get("suites", "").split(), fields.get("signed-by", "")))
    lists = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list"))]
    for f in lists:
        if not f.is_file():
            continue
        for line in f.read_text(errors="replace").splitlines():
            m = re.match(r"\s*deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)", line)
            if not m:
                continue
            options = dict(o.split("=", 1) for o in (m.group(1) or "").split() if "=" in o)
            repos.append((m.group(2), [m.group(3)], options.get("signed-by", "")))
    return repos


def _debian_upstream(version: str) -> str:
    """'1:3.6.7-0.1~deb13u1' -> '3.6.7'."""
    version = version.split(":", 1)[-1]
    return version.rsplit("-", 1)[0] if "-" in version else version


def _apt_source(lock: Lock, workdir: Path) -> Path:
    """Download the OS source package of the pinned upstream version with apt,
    using a private apt state in ``workdir``; return its orig tarball."""
    apt_get = shutil.which("apt-get")
    if not apt_get or not Path("/etc/apt").is_dir():
        raise _NotThere("apt-get not available on this system")
    repos = _apt_repositories()
    if not repos:
        raise _NotThere("no deb entries in /etc/apt")
    stanzas = []
    for uri, suites, signed_by in repos:
        # The machine's own suites plus the rolling aliases, which carry newer
        # upstream versions than a stable release may (security URIs get the
        # stable security alias only).
        security = any(s.endswith("-security") for s in suites)
        extra = ["stable-security"] if security else ["stable", "testing", "unstable"]
        all_suites = list(dict.fromkeys(suites + extra))
        stanza = f"Types: deb-src\nURIs: {uri}\nSuites: {' '.join(all_suites)}\nComponents: main\n"
        if signed_by:
            stanza += f"Signed-By: {signed_by}\n"
        stanzas.append(stanza)
    (workdir / "sources.list.d").mkdir(parents=True)
    (workdir / "sources.list").write_text("")
    (workdir / "sources.list.d" / "dtlspeer-src.sources").write_text("\n".join(stanzas))
    for sub in ("lists/partial", "cache/archives/partial", "download"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    for d in [workdir, *workdir.rglob("*")]:
        if d.is_dir():
            d.chmod(0o755)  # apt's unprivileged _apt user must reach lists/partial
    opts = [
        f"-oDir::Etc::SourceList={workdir / 'sources.list'}",
        f"-oDir::Etc::SourceParts={workdir / 'sources.list.d'}",
        f"-oDir::State::Lists={workdir / 'lists'}",
        f"-oDir::Cache={workdir / 'cache'}",
        "-oDir::Cache::pkgcache=",
        "-oDir::Cache::srcpkgcache=",
        "-oDebug::NoLocking=1",
        "-oAcquire::Retries=1",
        "-qq",
    ]
    # Some suites may not exist on a given archive; update reports them and
    # goes on, so its exit status alone does not decide anything.
    upd = subprocess.run([apt_get, *opts, "update"], capture_output=True, text=True, timeout=300)
    apt_cache = shutil.which("apt-cache") or "apt-cache"
    show = subprocess.run(
        [apt_cache, *opts, "showsrc", lock.os_source_package],
        capture_output=True,
        text=True,
        timeout=120,
    )
    versions = re.findall(r"^Version:\s*(\S+)", show.stdout, flags=re.M)
    matching = [v for v in versions if _debian_upstream(v) == lock.os_upstream_version]
    if not matching:
        detail = (upd.stderr.strip().splitlines() or [""])[-1]
        raise _NotThere(
            f"no {lock.os_source_package} {lock.os_upstream_version} in the OS source index "
            f"(available: {', '.join(sorted(set(versions))) or 'none'}) {detail}".strip()
        )
    dl = workdir / "download"
    errors = []
    for version in matching:
        got = subprocess.run(
            [apt_get, *opts, "source", "--download-only", f"{lock.os_source_package}={version}"],
            cwd=dl,
            capture_output=True,
            text=True,
            timeout=600,
        )
        origs = sorted(dl.glob(f"{lock.os_source_package}_{lock.os_upstream_version}.orig.tar.*"))
        if origs:
            return origs[0]
        errors.append(f"{version}: {(got.stderr.strip().splitlines() or ['no orig tarball'])[-1]}")
    raise _NotThere("apt-get source failed: " + "; ".join(errors))


def resolve_source(
    lock: Optional[Lock] = None,
    vendor_dir: Path = VENDOR_DIR,
    env: Optional[Mapping[str, str]] = None,
    network: Optional[bool] = None,
    apt_fetch: Callable[[Lock, Path], Path] = _apt_source,
    download: Callable[[str, Path], None] = _download,
) -> Path:
    """Return a verified, extracted tree of ``lock`` (default: Mbed TLS),
    fetching it if needed.

    ``network=False`` (or ``DTLSPEER_MBEDTLS_NO_DOWNLOAD=1``) skips the URL and
    the OS package steps. Raises ``SourceError`` listing every place tried.
    """
    lock = lock or Lock.load()
    env = os.environ if env is None else env
    if network is None:
        network = env.get(NO_DOWNLOAD_ENV, "") in ("", "0")
    attempts: list[tuple[str, str]] = []
    tree = vendor_dir / lock.top_dir
    cached = vendor_dir / lock.tarball

    def from_tarball(path: Path, keep_copy: bool) -> Path:
        verify_tarball(path, lock)
        if keep_copy and path.resolve() != cached.resolve():
            vendor_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, cached)
        return extract_tarball(path, lock, vendor_dir)

    # 1. explicit override
    source_env = lock.source_env
    override = env.get(source_env, "")
    if override:
        place = f"${source_env}={override}"
        p = Path(override)
        try:
            if p.is_dir():
                verify_tree(p, lock)
                return p
            if p.is_file():
                return from_tarball(p, keep_copy=True)
            attempts.append((place, "no such file or directory"))
        except VerificationError as exc:
            attempts.append((place, str(exc)))
        # An explicit choice that fails stops here: building from another
        # source than the one asked for would hide the failure.
        raise SourceError([(lock, attempts)])
    else:
        attempts.append((f"${source_env}", "not set"))

    # 2. a verified tree already in vendor/ (sdist, or an earlier build)
    place = f"extracted tree {tree}"
    if tree.is_dir():
        try:
            verify_tree(tree, lock)
            return tree
        except VerificationError as exc:
            attempts.append((place, str(exc)))
    else:
        attempts.append((place, "not present"))

    # 3. a cached tarball in vendor/
    place = f"cached tarball {cached}"
    if cached.is_file():
        try:
            return from_tarball(cached, keep_copy=False)
        except VerificationError as exc:
            attempts.append((place, str(exc)))
    else:
        attempts.append((place, "not present"))

    if not network:
        attempts.append(
            (f"upstream URL {lock.url or '(none pinned)'}", f"skipped ({NO_DOWNLOAD_ENV} set)")
        )
        attempts.append(("OS source packages (apt-get source)", f"skipped ({NO_DOWNLOAD_ENV} set)"))
        raise SourceError([(lock, attempts)])

    # 4. the upstream release URL, when the lock pins one
    if not lock.url:
        attempts.append(("upstream URL", "none pinned (the lock pins the OS source package)"))
    else:
        place = f"upstream URL {lock.url}"
        with tempfile.TemporaryDirectory(prefix="dtlspeer-dl-") as tmp:
            target = Path(tmp) / lock.tarball
            try:
                download(lock.url, target)
                return from_tarball(target, keep_copy=True)
            except VerificationError as exc:
                attempts.append((place, str(exc)))
            except Exception as exc:  # network errors come in many types
                attempts.append((place, f"download failed: {exc}"))

    # 5. the operating system's source packages
    place = "OS source packages (apt-get source)"
    with tempfile.TemporaryDirectory(prefix="dtlspeer-apt-") as tmp:
        try:
            got = apt_fetch(lock, Path(tmp))
            return from_tarball(got, keep_copy=True)
        except VerificationError as exc:
            attempts.append((place, str(exc)))
        except (_NotThere, subprocess.SubprocessError, OSError) as exc:
            attempts.append((place, str(exc)))
    raise SourceError([(lock, attempts)])


def load_locks(paths: Iterable[Path] = LOCK_PATHS) -> list[Lock]:
    """Every pinned source the extension compiles (Mbed TLS first)."""
    return [Lock.load(p) for p in paths]


def resolve_sources(locks: Optional[list[Lock]] = None, **kwargs: object) -> dict[str, Path]:
    """``resolve_source`` for every lock (same chain, same arguments);
    ``{lock.name: tree}``. If any fails, ONE ``SourceError`` reports every
    failed lock with every place tried, after all were attempted."""
    trees: dict[str, Path] = {}
    failures: list[tuple[Lock, list[tuple[str, str]]]] = []
    for lock in load_locks() if locks is None else locks:
        try:
            trees[lock.name] = resolve_source(lock, **kwargs)  # type: ignore[arg-type]
        except SourceError as exc:
            failures += exc.failures
    if failures:
        raise SourceError(failures)
    return trees


# --------------------------------------------------------------------------
# cffi declarations
# --------------------------------------------------------------------------

CDEF_BEGIN = "/* BEGIN CDEF */"
CDEF_END = "/* END CDEF */"


def api_cdef(header: Path = API_HEADER) -> str:
    """The part of dtlspeer.h between the CDEF markers: plain declarations
    that cffi can parse (no #include / #if)."""
    text = header.read_text(encoding="utf-8")
    start, end = text.find(CDEF_BEGIN), text.find(CDEF_END)
    if start < 0 or end < start:
        raise RuntimeError(f"{header}: missing {CDEF_BEGIN} / {CDEF_END} markers")
    return text[start + len(CDEF_BEGIN) : end]


def _is_msvc() -> bool:
    return sys.platform == "win32" and "GCC" not in sys.version


def _is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def compile_flags() -> tuple[list[tuple[str, Optional[str]]], list[str], list[str]]:
    """(macros, flags for Mbed TLS, extra flags for our own C files)."""
    macros: list[tuple[str, Optional[str]]] = [
        ("MBEDTLS_USER_CONFIG_FILE", '"dtlspeer_mbedtls_config.h"'),
    ]
    if os.environ.get(PORTABLE_ENV, "") not in ("", "0"):
        macros.append(("DP_PORTABLE_IO", "1"))  # exercise the non-Linux I/O path on Linux
    if _is_msvc():
        return macros, ["/O2"], ["/W4"]
    common = ["-O2", "-fvisibility=hidden", "-fno-strict-aliasing"]
    sanitize = os.environ.get(SANITIZE_ENV, "")
    if sanitize:
        common += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-g"]
    ours = ["-std=c11", "-Wall", "-Wextra", "-Wshadow", "-Wstrict-prototypes"]
    if os.environ.get(WERROR_ENV, "") not in ("", "0"):
        ours.append("-Werror")
    return macros, common, common + ours


def link_libraries() -> list[str]:
    if sys.platform == "win32":
        return ["ws2_32", "bcrypt", "advapi32"]
    return [] if sys.platform == "darwin" else ["pthread"]


def _make_ffibuilder():  # type: ignore[no-untyped-def]
    from cffi import FFI

    builder = FFI()
    builder.cdef(api_cdef())
    macros, _, _ = compile_flags()
    builder.set_source(
        "dtlspeer._native",
        '#include "dtlspeer.h"\n',
        include_dirs=[str(NATIVE_DIR)],
        define_macros=macros,
        libraries=link_libraries(),
        py_limited_api=True,
    )
    return builder


# --------------------------------------------------------------------------
# Compilation
# --------------------------------------------------------------------------


def _needs_compile(src: Path, obj: Path, deps: Iterable[Path]) -> bool:
    if not obj.exists():
        return True
    t = obj.stat().st_mtime
    return any(p.stat().st_mtime > t for p in (src, *deps))


# The Everest sources Mbed TLS's own build compiles (3rdparty/everest/CMakeLists.txt);
# Hacl_Curve25519_joined.c includes the HACL* and kremlib files it needs.
EVEREST_DIR = "3rdparty/everest"
EVEREST_SOURCES = ("everest.c", "x25519.c", "Hacl_Curve25519_joined.c")


def mbedtls_include_dirs(tree: Path) -> list[Path]:
    """Include directories for compiling Mbed TLS and our C files (any compiler)."""
    everest = tree / EVEREST_DIR
    # Project Everest's verified X25519 (MBEDTLS_ECDH_VARIANT_EVEREST_ENABLED
    # in our config header): ecdh.h includes "everest/everest.h".
    return [
        NATIVE_DIR,
        tree / "include",
        tree / "library",
        everest / "include",
        everest / "include" / "everest",
        everest / "include" / "everest" / "kremlib",
    ]


def mbedtls_sources(tree: Path) -> list[tuple[Path, str]]:
    """Every Mbed TLS source we compile, with its unique object name stem."""
    sources = [(src, src.stem) for src in sorted((tree / "library").glob("*.c"))]
    sources += [
        (tree / EVEREST_DIR / "library" / name, "everest_" + Path(name).stem)
        for name in EVEREST_SOURCES
    ]
    return sources


# The handshake's public-key arithmetic: bignum and ECP (ECDSA P-256 sign and
# verify) and HACL*'s X25519. GCC's -O3 (unrolling the fixed-size limb loops,
# more inlining) cut X25519 from 1.07M to 0.49M instructions per
# multiplication and ECDSA sign/verify by 7-8% (callgrind, benchmarks/README.md,
# "Handshakes"); the rest of Mbed TLS stays at -O2 (smaller code, no gain).
# Constant-time code is unaffected: Mbed TLS's mbedtls_ct_* primitives carry
# their own optimisation barriers, and HACL* is branch-free by construction.
HOT_SOURCES = frozenset(
    {
        "bignum.c",
        "bignum_core.c",
        "ecp.c",
        "ecp_curves.c",
        "ecdsa.c",
        "Hacl_Curve25519_joined.c",
    }
)


def per_file_flags(name: str) -> list[str]:
    """Extra compiler flags for one Mbed TLS source (after the common ones)."""
    if _is_msvc():
        return []  # /O2 is MSVC's maximum speed setting already
    flags = []
    if name in HOT_SOURCES:
        flags.append("-O3")
    if name == "aesni.c" and _is_x86_64():
        # Intrinsics path (faster GCM); still guarded by CPUID at run time.
        # SSSE3 (in every CPU that has AES-NI and PCLMULQDQ) turns GHASH's
        # byte-reversal loops into one pshufb each: ~300 -> ~65 instructions
        # per 16-byte block. aesni.c runs nothing but its CPUID check before
        # that check passes, so no SSSE3 instruction reaches a CPU without it.
        flags += ["-maes", "-mpclmul", "-mssse3"]
    elif name == "aes.c" and _is_x86_64():
        # aes.c must see the same AES-NI implementation as aesni.c: with
        # __AES__/__PCLMUL__ it knows the intrinsics path needs 16-byte
        # aligned round keys and places them so (rk_offset). Without these
        # flags it assumed the assembly path (no alignment needed) and left
        # the round keys wherever the context lay: an AES context at an
        # address that is 8 mod 16 (one embedded in a GCM context, with
        # MBEDTLS_BLOCK_CIPHER_C) crashed in mbedtls_aesni_setkey_enc.
        # The compiler emits AES/PCLMUL instructions only for intrinsics,
        # and aes.c calls those only after the CPUID check.
        flags += ["-maes", "-mpclmul"]
    return flags


# ENet's protocol sources (upstream 1.3.18, unmodified). Its platform layer
# (unix.c / win32.c: sockets, addresses, time) is not compiled: dp_enet.c
# provides those functions over our endpoint and DTLS host, as Godot does.
ENET_SOURCES = ("callbacks.c", "compress.c", "host.c", "list.c", "packet.c", "peer.c", "protocol.c")


def enet_sources(tree: Path) -> list[tuple[Path, str]]:
    """ENet's protocol sources, with object stems that cannot collide with ours."""
    return [(tree / name, "enet_" + Path(name).stem) for name in ENET_SOURCES]


def include_dirs(trees: Mapping[str, Path]) -> list[Path]:
    """Include directories for every pinned source and our C files."""
    dirs = mbedtls_include_dirs(trees["mbedtls"])
    if "enet" in trees:
        dirs.append(trees["enet"] / "include")
    return dirs


def third_party_sources(trees: Mapping[str, Path]) -> list[tuple[Path, str]]:
    """Every pinned third-party source we compile (Mbed TLS, then ENet)."""
    sources = mbedtls_sources(trees["mbedtls"])
    if "enet" in trees:
        sources += enet_sources(trees["enet"])
    return sources


def mbedtls_digest_paths() -> list[str]:
    """The parts of the tree whose content decides the Mbed TLS objects."""
    return ["include", "library", EVEREST_DIR]


def compile_objects(compiler, build_temp: Path, trees: Mapping[str, Path]) -> list[str]:  # type: ignore[no-untyped-def]
    """Compile Mbed TLS, ENet and our C files in parallel; return object paths.

    Third-party objects live in a directory keyed by the tree digests, our
    config header and the flags, so they are reused until one of those changes.
    """
    macros, mbed_flags, our_flags = compile_flags()
    includes = [str(d) for d in include_dirs(trees)]
    obj_ext = compiler.obj_extension

    def group_dir(prefix: str, digest: str, sources: list[tuple[Path, str]]) -> Path:
        # The same key as before ENet joined, so Mbed TLS objects stay cached.
        key = hashlib.sha256(digest.encode())
        key.update(CONFIG_HEADER.read_bytes())
        file_flags = [(stem, per_file_flags(src.name)) for src, stem in sources]
        key.update(
            repr(
                (macros, mbed_flags, file_flags, compiler.compiler_type, sysconfig.get_platform())
            ).encode()
        )
        return build_temp / f"{prefix}-{key.hexdigest()[:16]}"

    # One object directory per pinned source: an ENet change never
    # recompiles Mbed TLS (and the other way round).
    groups = [
        (
            group_dir(
                "mbedtls",
                tree_digest(trees["mbedtls"], mbedtls_digest_paths()),
                mbedtls_sources(trees["mbedtls"]),
            ),
            mbedtls_sources(trees["mbedtls"]),
        )
    ]
    if "enet" in trees:
        enet = enet_sources(trees["enet"])
        digest = tree_digest(trees["enet"], ["include", *ENET_SOURCES])
        groups.append((group_dir("enet", digest, enet), enet))
    # Our objects are rebuilt when a source or header changes; the directory
    # is keyed by flags so a sanitizer build never leaks into a normal one.
    ours_key = hashlib.sha256(repr((macros, our_flags, compiler.compiler_type)).encode())
    ours_dir = build_temp / f"dtlspeer-native-{ours_key.hexdigest()[:16]}"
    our_headers = sorted(NATIVE_DIR.glob("*.h"))

    jobs: list[tuple[Path, Path, list[str]]] = []
    third_party_objects = []
    for obj_dir, sources in groups:
        for src, stem in sources:
            obj = obj_dir / (stem + obj_ext)
            third_party_objects.append(obj)
            if not obj.exists():
                jobs.append((src, obj, [*mbed_flags, *per_file_flags(src.name)]))
    for src in sorted(NATIVE_DIR.glob("*.c")):
        obj = ours_dir / (src.stem + obj_ext)
        if _needs_compile(src, obj, [*our_headers, CONFIG_HEADER]):
            jobs.append((src, obj, list(our_flags)))

    def run(job: tuple[Path, Path, list[str]]) -> None:
        src, obj, flags = job
        obj.parent.mkdir(parents=True, exist_ok=True)
        # distutils names objects after the source's path; compile into a
        # private dir and move, so two files with one name cannot collide.
        with tempfile.TemporaryDirectory(dir=obj.parent) as tmp:
            (built,) = compiler.compile(
                [str(src)],
                output_dir=tmp,
                macros=macros,
                include_dirs=includes,
                extra_postargs=flags,
            )
            Path(built).replace(obj)

    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    if jobs:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(run, jobs))
    objects = third_party_objects + [
        ours_dir / (s.stem + obj_ext) for s in sorted(NATIVE_DIR.glob("*.c"))
    ]
    return [str(o) for o in objects]


def _build_ext_class():  # type: ignore[no-untyped-def]
    from setuptools.command.build_ext import build_ext

    class BuildExt(build_ext):  # type: ignore[misc]
        """build_ext that first compiles Mbed TLS and src/native/*.c in parallel."""

        def build_extension(self, ext):  # type: ignore[no-untyped-def]
            if ext.name == "dtlspeer._native":
                trees = resolve_sources()
                objects = compile_objects(self.compiler, Path(self.build_temp), trees)
                ext.extra_objects = objects + [o for o in ext.extra_objects if o not in objects]
                sanitize = os.environ.get(SANITIZE_ENV, "")
                if sanitize and not _is_msvc():
                    ext.extra_link_args = [*ext.extra_link_args, f"-fsanitize={sanitize}"]
                elif sys.platform.startswith("linux"):
                    # Python's own CFLAGS carry -g: drop the debug sections
                    # from the shipped module (2.9 MB -> 0.6 MB).
                    ext.extra_link_args = [*ext.extra_link_args, "-Wl,--strip-debug"]
                # The cffi-generated glue is not our code: compile it without
                # our warning flags, with hidden visibility like the rest.
                if not _is_msvc():
                    ext.extra_compile_args = ["-fvisibility=hidden"]
                # setuptools only compares sources with the target and would
                # skip relinking after a flags change (e.g. sanitizer on/off);
                # linking is cheap, so always do it.
                self.force = True
            super().build_extension(ext)

    return BuildExt


# setup.py's cffi_modules="build_mbedtls.py:ffibuilder" needs this name.
ffibuilder = _make_ffibuilder()
BuildExt = _build_ext_class()


def main(argv: list[str]) -> int:
    """``python build_mbedtls.py [--fetch-only]``: resolve every pinned source
    (and build in place)."""
    try:
        trees = resolve_sources()
    except (SourceError, LockError) as exc:
        print(exc, file=sys.stderr)
        return 1
    for name, tree in trees.items():
        print(f"verified {name} source: {tree}")
    if "--fetch-only" in argv:
        return 0
    return subprocess.call(
        [sys.executable, str(ROOT / "setup.py"), "build_ext", "--inplace"], cwd=ROOT
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

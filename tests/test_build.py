"""The build helpers in build_mbedtls.py: lock parsing, verification, source resolution.

Every failure mode must end in a clear error that names what went wrong and
where; nothing unverified may ever reach the compiler.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import build_mbedtls as bm  # noqa: E402

TOP = "fakembed-1.2.3"


def make_release(tmp: Path, files: dict[str, bytes] | None = None) -> tuple[Path, bm.Lock]:
    """A small stand-in for a release tarball plus a lock that pins it."""
    files = files or {
        "LICENSE": b"license text\n",
        "include/mbedtls/a.h": b"#define A 1\n",
        "library/a.c": b"int a;\n",
        "tests/ignored.c": b"not part of the tree subset\n",
    }
    src = tmp / "src" / TOP
    for rel, data in files.items():
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    tarball = tmp / f"{TOP}.tar.bz2"
    with tarfile.open(tarball, "w:bz2") as tar:
        tar.add(src, arcname=TOP)
    paths = ["LICENSE", "include", "library"]
    lock = bm.Lock(
        name="mbedtls",
        version="1.2.3",
        tarball=tarball.name,
        sha256=bm.sha256_file(tarball),
        url="http://127.0.0.1:9/never-used.tar.bz2",
        top_dir=TOP,
        os_source_package="fakembed",
        tree_paths=tuple(paths),
        tree_sha256=bm.tree_digest(src, paths),
    )
    return tarball, lock


def no_download(url: str, dest: Path) -> None:
    raise OSError("network disabled in this test")


def no_apt(lock: bm.Lock, workdir: Path) -> Path:
    raise bm._NotThere("apt disabled in this test")


# ---- lock file ---------------------------------------------------------------


def test_pinned_lock_file_parses_and_pins_367() -> None:
    lock = bm.Lock.load()
    assert lock.version == "3.6.7"
    assert lock.sha256 == "a7e8bcbec0e6f761b4af24f25677626b35f762f68eef79c08677a363212d11f6"
    assert lock.tarball == "mbedtls-3.6.7.tar.bz2"
    # 3rdparty/everest: the verified X25519 (MBEDTLS_ECDH_VARIANT_EVEREST_ENABLED)
    assert lock.tree_paths == ("3rdparty/everest", "LICENSE", "include", "library")


def test_pinned_enet_lock_pins_debian_source_of_upstream_1318() -> None:
    lock = bm.Lock.load(bm.ENET_LOCK_PATH)
    assert (lock.name, lock.version, lock.os_version) == ("enet", "1.3.18", "1.3.18+ds")
    assert lock.sha256 == "f1ba5f8aaf253cb19b9545031450bf74122f151435998259ca978808e9e4fec3"
    assert lock.url == ""  # no upstream download: Debian's signed source index is the path
    assert lock.source_env == "DTLSPEER_ENET_SOURCE"
    # The protocol sources, headers and licence; not unix.c / win32.c (dp_enet.c replaces them).
    assert lock.tree_paths == (
        "LICENSE",
        "callbacks.c",
        "compress.c",
        "host.c",
        "include",
        "list.c",
        "packet.c",
        "peer.c",
        "protocol.c",
    )
    assert {name for name in bm.ENET_SOURCES} <= set(lock.tree_paths)


def test_lock_os_version_must_name_the_same_release() -> None:
    d = json.loads((ROOT / "vendor" / "enet.lock.json").read_text())
    d["os_version"] = "1.3.17+ds"
    with pytest.raises(bm.LockError, match="'os_version'"):
        bm.Lock.from_dict(d)


def good_lock_dict() -> dict[str, object]:
    return json.loads((ROOT / "vendor" / "mbedtls.lock.json").read_text())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("sha256"), "'sha256' must be a non-empty string"),
        (lambda d: d.update(sha256="abc"), "64 hex digits"),
        (lambda d: d.update(version="3.6"), "'version' must look like"),
        (lambda d: d.update(tree="nope"), "'tree' must be an object"),
        (lambda d: d["tree"].update(paths=["../etc"]), "relative paths"),
        (lambda d: d["tree"].update(sha256="z" * 64), "64 hex digits"),
        (lambda d: d.update(url=""), "'url' must be a non-empty string"),
    ],
)
def test_malformed_lock_is_rejected_with_the_field_named(mutate, message) -> None:  # type: ignore[no-untyped-def]
    d = good_lock_dict()
    mutate(d)
    with pytest.raises(bm.LockError, match=message):
        bm.Lock.from_dict(d)


def test_unreadable_or_invalid_lock_file(tmp_path: Path) -> None:
    with pytest.raises(bm.LockError, match="cannot read lock file"):
        bm.Lock.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(bm.LockError, match="not valid JSON"):
        bm.Lock.load(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(bm.LockError, match="JSON object"):
        bm.Lock.load(bad)


# ---- digests -----------------------------------------------------------------


def test_tree_digest_sees_changed_added_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "library").mkdir()
    (tmp_path / "library" / "a.c").write_bytes(b"int a;\n")
    (tmp_path / "LICENSE").write_bytes(b"x")
    base = bm.tree_digest(tmp_path, ["LICENSE", "library"])
    (tmp_path / "library" / "a.c").write_bytes(b"int b;\n")
    changed = bm.tree_digest(tmp_path, ["LICENSE", "library"])
    assert changed != base
    (tmp_path / "library" / "a.c").write_bytes(b"int a;\n")
    assert bm.tree_digest(tmp_path, ["LICENSE", "library"]) == base
    (tmp_path / "library" / "extra.c").write_bytes(b"")
    assert bm.tree_digest(tmp_path, ["LICENSE", "library"]) != base
    with pytest.raises(bm.VerificationError, match="missing"):
        bm.tree_digest(tmp_path, ["include"])


def test_tree_digest_refuses_symlinks(tmp_path: Path) -> None:
    (tmp_path / "library").mkdir()
    (tmp_path / "library" / "evil.c").symlink_to("/etc/hostname")
    with pytest.raises(bm.VerificationError, match="not a regular file"):
        bm.tree_digest(tmp_path, ["library"])


# ---- resolution ----------------------------------------------------------------


def resolve(lock: bm.Lock, vendor: Path, env: dict[str, str] | None = None, **kw):  # type: ignore[no-untyped-def]
    kw.setdefault("download", no_download)
    kw.setdefault("apt_fetch", no_apt)
    return bm.resolve_source(lock, vendor_dir=vendor, env=env or {}, **kw)


def test_missing_source_lists_every_place_tried(tmp_path: Path) -> None:
    _, lock = make_release(tmp_path)
    with pytest.raises(bm.SourceError) as info:
        resolve(lock, tmp_path / "vendor")
    places = [p for p, _ in info.value.attempts]
    assert len(places) == 5
    text = str(info.value)
    assert "DTLSPEER_MBEDTLS_SOURCE" in text and "not set" in text
    assert "extracted tree" in text and "cached tarball" in text
    assert "upstream URL" in text and "network disabled in this test" in text
    assert "OS source packages" in text and "apt disabled in this test" in text


def test_offline_mode_skips_network_places(tmp_path: Path) -> None:
    _, lock = make_release(tmp_path)
    calls: list[str] = []

    def spy_download(url: str, dest: Path) -> None:
        calls.append(url)

    with pytest.raises(bm.SourceError, match="skipped"):
        resolve(lock, tmp_path / "vendor", network=False, download=spy_download)
    assert calls == []


def test_cached_tarball_hash_mismatch_is_reported(tmp_path: Path) -> None:
    _, lock = make_release(tmp_path)
    vendor = tmp_path / "vendor"
    vendor.mkdir()
    (vendor / lock.tarball).write_bytes(b"this is not the release")
    with pytest.raises(bm.SourceError) as info:
        resolve(lock, vendor)
    outcome = dict(info.value.attempts)[f"cached tarball {vendor / lock.tarball}"]
    assert "sha256 mismatch" in outcome and lock.sha256 in outcome


def test_corrupted_tarball_with_matching_hash_fails_to_unpack(tmp_path: Path) -> None:
    tarball, lock = make_release(tmp_path)
    truncated = tmp_path / "truncated.tar.bz2"
    truncated.write_bytes(tarball.read_bytes()[: tarball.stat().st_size // 2])
    # Pin the truncated file itself, so only unpacking can catch it.
    lock = bm.Lock(**{**lock.__dict__, "sha256": bm.sha256_file(truncated)})
    with pytest.raises(bm.SourceError) as info:
        resolve(lock, tmp_path / "vendor", env={bm.SOURCE_ENV: str(truncated)})
    assert "cannot unpack" in str(info.value)
    assert not (tmp_path / "vendor" / TOP).exists()


def test_tarball_with_a_link_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar.bz2"
    with tarfile.open(evil, "w:bz2") as tar:
        link = tarfile.TarInfo(f"{TOP}/library/x.c")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    _, lock = make_release(tmp_path)
    lock = bm.Lock(**{**lock.__dict__, "sha256": bm.sha256_file(evil)})
    with pytest.raises(bm.SourceError, match="unexpected link"):
        resolve(lock, tmp_path / "vendor", env={bm.SOURCE_ENV: str(evil)})


def test_env_tarball_is_verified_extracted_and_cached(tmp_path: Path) -> None:
    tarball, lock = make_release(tmp_path)
    vendor = tmp_path / "vendor"
    tree = resolve(lock, vendor, env={bm.SOURCE_ENV: str(tarball)})
    assert tree == vendor / TOP
    assert (tree / "library" / "a.c").read_bytes() == b"int a;\n"
    assert not (tree / "tests").exists()  # only the pinned subset is unpacked
    assert bm.sha256_file(vendor / lock.tarball) == lock.sha256
    # A second resolution uses the verified tree without any fetch.
    assert resolve(lock, vendor) == tree


def test_env_override_missing_path_is_reported(tmp_path: Path) -> None:
    _, lock = make_release(tmp_path)
    with pytest.raises(bm.SourceError, match="no such file or directory"):
        resolve(lock, tmp_path / "vendor", env={bm.SOURCE_ENV: str(tmp_path / "nope")})


def test_tampered_tree_is_replaced_from_the_cached_tarball(tmp_path: Path) -> None:
    tarball, lock = make_release(tmp_path)
    vendor = tmp_path / "vendor"
    tree = resolve(lock, vendor, env={bm.SOURCE_ENV: str(tarball)})
    (tree / "library" / "a.c").write_bytes(b"int backdoor;\n")
    assert resolve(lock, vendor) == tree
    assert (tree / "library" / "a.c").read_bytes() == b"int a;\n"


def test_download_step_verifies_what_it_fetched(tmp_path: Path) -> None:
    tarball, lock = make_release(tmp_path)
    fetched: list[str] = []

    def fake_download(url: str, dest: Path) -> None:
        fetched.append(url)
        shutil.copyfile(tarball, dest)

    tree = resolve(lock, tmp_path / "vendor", download=fake_download)
    assert fetched == [lock.url]
    assert bm.tree_digest(tree, lock.tree_paths) == lock.tree_sha256

    def wrong_download(url: str, dest: Path) -> None:
        dest.write_bytes(b"a captive portal page")

    with pytest.raises(bm.SourceError, match="sha256 mismatch"):
        resolve(lock, tmp_path / "other-vendor", download=wrong_download)


def test_one_report_names_every_failed_lock(tmp_path: Path) -> None:
    _, mbed = make_release(tmp_path / "a")
    _, other = make_release(tmp_path / "b")
    enet = bm.Lock(**{**other.__dict__, "name": "enet", "title": "ENet", "url": ""})
    with pytest.raises(bm.SourceError) as info:
        bm.resolve_sources(
            [mbed, enet],
            vendor_dir=tmp_path / "vendor",
            env={},
            download=no_download,
            apt_fetch=no_apt,
        )
    text = str(info.value)
    assert [lock.name for lock, _ in info.value.failures] == ["mbedtls", "enet"]
    assert "DTLSPEER_MBEDTLS_SOURCE" in text and "DTLSPEER_ENET_SOURCE" in text
    assert "ENet 1.2.3" in text and "none pinned" in text
    assert "apt disabled in this test" in text


def test_resolve_sources_returns_each_verified_tree(tmp_path: Path) -> None:
    tarball_a, mbed = make_release(tmp_path / "a")
    _, other = make_release(
        tmp_path / "b", {"LICENSE": b"x\n", "include/e.h": b"", "library/e.c": b"int e;\n"}
    )
    enet = bm.Lock(
        **{
            **other.__dict__,
            "name": "enet",
            "top_dir": "fakenet-1.0",
            "tree_sha256": other.tree_sha256,
        }
    )
    # Same chain for both: each explicit variable names its own tarball.
    with pytest.raises(bm.SourceError, match="DTLSPEER_ENET_SOURCE"):
        bm.resolve_sources(
            [mbed, enet],
            vendor_dir=tmp_path / "vendor",
            env={
                "DTLSPEER_MBEDTLS_SOURCE": str(tarball_a),
                "DTLSPEER_ENET_SOURCE": str(tmp_path / "missing"),
            },
            download=no_download,
            apt_fetch=no_apt,
        )
    trees = bm.resolve_sources(
        [mbed],
        vendor_dir=tmp_path / "vendor",
        env={"DTLSPEER_MBEDTLS_SOURCE": str(tarball_a)},
        download=no_download,
        apt_fetch=no_apt,
    )
    assert trees == {"mbedtls": tmp_path / "vendor" / TOP}


def test_apt_step_matches_a_repacked_debian_version(tmp_path: Path) -> None:
    tarball, lock = make_release(tmp_path)
    lock = bm.Lock(**{**lock.__dict__, "os_version": "1.2.3+ds"})
    seen: list[str] = []

    def fake_apt(lk: bm.Lock, workdir: Path) -> Path:
        seen.append(lk.os_upstream_version)
        orig = workdir / f"{lk.os_source_package}_{lk.os_upstream_version}.orig.tar.bz2"
        shutil.copyfile(tarball, orig)
        return orig

    assert resolve(lock, tmp_path / "vendor", apt_fetch=fake_apt).is_dir()
    assert seen == ["1.2.3+ds"]


def test_apt_step_result_is_verified(tmp_path: Path) -> None:
    tarball, lock = make_release(tmp_path)

    def fake_apt(lk: bm.Lock, workdir: Path) -> Path:
        orig = workdir / f"{lk.os_source_package}_{lk.version}.orig.tar.bz2"
        shutil.copyfile(tarball, orig)
        return orig

    tree = resolve(lock, tmp_path / "vendor", apt_fetch=fake_apt)
    assert tree.is_dir()


# ---- apt configuration parsing -------------------------------------------------


def test_apt_repositories_reads_deb822_and_one_line_formats(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "main.sources").write_text(
        "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: stable stable-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/k.gpg\n\n"
        "Types: deb-src\nURIs: http://ignored.invalid/\nSuites: x\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: stable-security\n"
        "Components: main\n"
    )
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb [arch=amd64 signed-by=/k2.gpg] http://other.invalid/ubuntu jammy main\n"
    )
    repos = bm._apt_repositories(tmp_path)
    assert (
        "http://mirror.invalid/debian",
        ["stable", "stable-updates"],
        "/usr/share/keyrings/k.gpg",
    ) in repos
    assert ("http://mirror.invalid/debian-security", ["stable-security"], "") in repos
    assert ("http://other.invalid/ubuntu", ["jammy"], "/k2.gpg") in repos
    assert all("ignored" not in uri for uri, _, _ in repos)


@pytest.mark.parametrize(
    ("debian", "upstream"),
    [
        ("3.6.7-3", "3.6.7"),
        ("3.6.6-0.1~deb13u1", "3.6.6"),
        ("1:3.6.7-1", "3.6.7"),
        ("3.6.7", "3.6.7"),
    ],
)
def test_debian_version_to_upstream(debian: str, upstream: str) -> None:
    assert bm._debian_upstream(debian) == upstream


# ---- the real pinned tree and the built extension ----------------------------------


@pytest.mark.parametrize("lock_path", bm.LOCK_PATHS, ids=lambda p: p.name)
def test_vendored_tree_matches_the_pin_when_present(lock_path: Path) -> None:
    lock = bm.Lock.load(lock_path)
    tree = ROOT / "vendor" / lock.top_dir
    if not tree.is_dir():
        pytest.skip("no extracted tree in this checkout (built from elsewhere)")
    bm.verify_tree(tree, lock)


@pytest.mark.parametrize("lock_path", bm.LOCK_PATHS, ids=lambda p: p.name)
def test_manifest_ships_the_pinned_tree(lock_path: Path) -> None:
    lock = bm.Lock.load(lock_path)
    manifest = (ROOT / "MANIFEST.in").read_text()
    assert f"graft vendor/{lock.top_dir}" in manifest
    assert f"vendor/{lock_path.name}" in manifest


def test_gitignore_keeps_every_fetched_tree_out_of_git() -> None:
    ignore = (ROOT / ".gitignore").read_text().splitlines()
    for lock_path in bm.LOCK_PATHS:
        lock = bm.Lock.load(lock_path)
        assert any(
            line.startswith("/vendor/")
            and line.endswith("*/")
            and lock.top_dir.startswith(line[len("/vendor/") : -2])
            for line in ignore
        ), lock.top_dir


def test_extension_exports_no_mbedtls_or_enet_symbols() -> None:
    import dtlspeer._native as native

    nm = shutil.which("nm")
    if nm is None or not sys.platform.startswith("linux"):
        pytest.skip("nm -D is the check on Linux")
    out = subprocess.run(
        [nm, "-D", "--defined-only", native.__file__], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    exported = [line.split()[-1] for line in out.stdout.splitlines() if line.strip()]
    assert exported == ["PyInit__native"], exported


def test_api_cdef_is_extracted_between_markers(tmp_path: Path) -> None:
    header = tmp_path / "h.h"
    header.write_text("#include <x>\n/* BEGIN CDEF */\nint f(void);\n/* END CDEF */\n#endif\n")
    assert bm.api_cdef(header).strip() == "int f(void);"
    header.write_text("int f(void);\n")
    with pytest.raises(RuntimeError, match="markers"):
        bm.api_cdef(header)


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    p = tmp_path / "blob"
    data = io.BytesIO(b"x" * 3_000_000).getvalue()
    p.write_bytes(data)
    assert bm.sha256_file(p) == hashlib.sha256(data).hexdigest()


def test_hot_sources_exist_and_get_o3_outside_msvc(monkeypatch: pytest.MonkeyPatch) -> None:
    tree = bm.resolve_source()
    names = {src.name for src, _ in bm.mbedtls_sources(tree)}
    assert bm.HOT_SOURCES <= names, bm.HOT_SOURCES - names  # a renamed file would lose -O3
    monkeypatch.setattr(bm, "_is_msvc", lambda: False)
    monkeypatch.setattr(bm, "_is_x86_64", lambda: True)
    assert bm.per_file_flags("ecp.c") == ["-O3"]
    assert bm.per_file_flags("aesni.c") == ["-maes", "-mpclmul", "-mssse3"]
    assert bm.per_file_flags("ssl_tls.c") == []
    monkeypatch.setattr(bm, "_is_msvc", lambda: True)
    assert bm.per_file_flags("ecp.c") == []


def test_explicit_source_that_fails_verification_stops_the_build(tmp_path: Path) -> None:
    """An explicit $DTLSPEER_MBEDTLS_SOURCE that fails verification is the
    error: a valid cached tarball elsewhere is not used instead (issue 11)."""
    tarball, lock = make_release(tmp_path)
    vendor = tmp_path / "vendor"
    vendor.mkdir()
    shutil.copyfile(tarball, vendor / lock.tarball)  # a good source further down the list
    forged = tmp_path / "forged.tar.bz2"
    forged.write_bytes(b"not the release")
    with pytest.raises(bm.SourceError) as info:
        resolve(lock, vendor, env={bm.SOURCE_ENV: str(forged)})
    assert "sha256 mismatch" in str(info.value)
    assert len(info.value.attempts) == 1  # nothing else was tried
    assert not (vendor / TOP).exists()


def test_explicit_source_that_does_not_exist_stops_the_build(tmp_path: Path) -> None:
    tarball, lock = make_release(tmp_path)
    vendor = tmp_path / "vendor"
    vendor.mkdir()
    shutil.copyfile(tarball, vendor / lock.tarball)
    with pytest.raises(bm.SourceError, match="no such file or directory"):
        resolve(lock, vendor, env={bm.SOURCE_ENV: str(tmp_path / "nope")})


@pytest.mark.skipif(not bm._is_x86_64() or bm._is_msvc(), reason="GCC/Clang on x86_64 only")
def test_aes_and_aesni_see_the_same_aesni_implementation() -> None:
    # Mbed TLS picks AES-NI intrinsics (16-byte aligned round keys) or
    # assembly (any alignment) from __AES__/__PCLMUL__ per file; aes.c places
    # the round keys, aesni.c uses them. Different views crashed (an AES
    # context at 8 mod 16 inside a GCM context, MBEDTLS_BLOCK_CIPHER_C).
    def aesni_flags(name: str) -> set[str]:
        return {f for f in bm.per_file_flags(name) if f in ("-maes", "-mpclmul")}

    assert aesni_flags("aesni.c") == {"-maes", "-mpclmul"}
    assert aesni_flags("aes.c") == aesni_flags("aesni.c")

#!/usr/bin/env python3
"""Coverage-guided fuzzing campaigns (atheris + libFuzzer) of dtlspeer's
untrusted-input entry points, run by hand, not by CI::

    python tools/fuzz.py --build                       # once: clang ASan + coverage build
    python tools/fuzz.py --target gate --seconds 300
    python tools/fuzz.py --target established --seconds 300 -- -jobs=1 -dict=...

Targets (``--list``): gate, server, client, established, parked, key, cert,
enet (ENet's receive path, plain) and enet-dtls (forged ENet datagrams inside
an authentic DTLS session).
They are the targets of ``tests/fuzz/targets.py`` with all their
invariants; the seed corpus is captured from the in-memory link as in
``tests/test_fuzz.py`` and written to ``build/fuzz/corpus/<target>``
(libFuzzer adds what it finds there). Mutations: libFuzzer's own plus the
DTLS-record-aware and PEM/DER mutators of ``tests/fuzz/mutate.py``.

``--build`` compiles the extension with clang and
``-fsanitize=address,fuzzer-no-link`` into ``build/fuzz/lib`` (the in-place
build in ``src/`` is left alone); runs then preload atheris's
``asan_with_fuzzer.so`` so libFuzzer sees the C code's coverage and ASan
checks every access. Without that build the campaign still runs, on the
normal extension, with a warning: coverage then only comes from Python.
Needs ``pip install atheris`` and, for ``--build``, Debian's ``clang`` and
``libclang-rt-dev`` (see ``tests/fuzz/README.md``). A finding is a crash
file ``crash-*`` in the working directory (libFuzzer's convention); replay it
with ``python tools/fuzz.py --target T crash-...``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
# This file is named like the tests' fuzz package: keep tools/ off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "tools"]
FUZZ_BUILD = ROOT / "build" / "fuzz"
FUZZ_LIB = FUZZ_BUILD / "lib"
TARGETS = ("gate", "server", "client", "established", "parked", "takeover", "key", "cert",
           "enet", "enet-dtls")
# Targets whose inputs are whole datagrams with no selector byte in front.
_WHOLE = ("gate", "established", "parked", "takeover", "enet", "enet-dtls")
_REEXEC_MARK = "DTLSPEER_FUZZ_CHILD"


# ---- build and environment -------------------------------------------------------------


def build_instrumented() -> int:
    """clang build with ASan + SanitizerCoverage into build/fuzz/lib."""
    clang = shutil.which("clang")
    if clang is None:
        print("clang not found: apt-get install clang libclang-rt-dev", file=sys.stderr)
        return 1
    env = dict(os.environ, CC=clang, LDSHARED=f"{clang} -shared",
               DTLSPEER_SANITIZE="address,fuzzer-no-link")
    env.pop("DTLSPEER_WERROR", None)  # clang warns where gcc does not; not this build's job
    rc = subprocess.call(
        [sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(FUZZ_LIB),
         "--build-temp", str(FUZZ_BUILD / "temp")], cwd=ROOT, env=env)
    if rc != 0:
        return rc
    # Stage the Python package next to the instrumented extension.
    for src in (ROOT / "src" / "dtlspeer").glob("*.py"):
        shutil.copy2(src, FUZZ_LIB / "dtlspeer" / src.name)
    print(f"instrumented build in {FUZZ_LIB}")
    return 0


def _asan_with_fuzzer() -> Optional[str]:
    try:
        import atheris
    except ImportError:
        return None
    path = Path(atheris.path()) / "asan_with_fuzzer.so"
    return str(path) if path.exists() else None


def reexec_if_needed(argv: list[str]) -> None:
    """Re-run this script with the instrumented extension on the path and
    atheris's ASan+libFuzzer runtime preloaded (once)."""
    if os.environ.get(_REEXEC_MARK):
        return
    env = dict(os.environ)
    env[_REEXEC_MARK] = "1"
    paths = [str(ROOT / "tests")]
    preload = _asan_with_fuzzer()
    instrumented = (FUZZ_LIB / "dtlspeer" / "__init__.py").exists()
    if instrumented and preload:
        paths.insert(0, str(FUZZ_LIB))
        env["LD_PRELOAD"] = preload
        env.setdefault("ASAN_OPTIONS", "detect_leaks=0:allocator_may_return_null=1")
        env[_REEXEC_MARK] = "instrumented"
    else:
        paths.insert(0, str(ROOT / "src"))
        why = "no asan_with_fuzzer.so in atheris" if instrumented else "no --build yet"
        print(f"warning: {why}: native code is not instrumented, coverage is Python's only",
              file=sys.stderr)
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    os.execve(sys.executable, [sys.executable, *argv], env)


# ---- targets --------------------------------------------------------------------------


class Campaign:
    """One target: its seeds, its TestOneInput and its custom mutator."""

    def __init__(self, name: str) -> None:
        from fuzz import mutate, seeds, targets

        self.name = name
        self.identity = seeds.make_identity()
        self.transcripts = seeds.capture_all(self.identity)
        self.datagrams = [d for t in self.transcripts for d in t.all()]
        self.mutate_module = mutate
        self.live: Any = None
        self.run: Callable[[bytes], None]
        psk = self.transcripts[0]
        if name == "gate":
            gate = targets.GateTarget(psk)
            self.seeds = [d for t in self.transcripts for d in t.to_server[:2]] + self.datagrams
            self.run = lambda data: (gate.run(data), None)[1]
        elif name == "server":
            server = {k: targets.ServerHandshakeTarget(k, self.identity if k == "ecdhe" else None,
                                                       t)
                      for k, t in (("psk", psk), ("ecdhe", self.transcripts[1]))}
            self.seeds = [bytes([i]) + d for i, t in enumerate(self.transcripts[:2])
                          for d in t.to_server[1:]]
            self.run = lambda data: server["ecdhe" if data[:1] == b"\x01" else "psk"].run(
                [data[1:]])
        elif name == "client":
            client = {k: targets.ClientTarget(k, self.identity if k == "ecdhe" else None)
                      for k in ("psk", "ecdhe")}
            self.seeds = [bytes([i]) + d for i, t in enumerate(self.transcripts)
                          for d in t.to_client]
            self.run = lambda data: client["psk" if data[:1] == b"\x00" else "ecdhe"].run(
                [data[1:]])
        elif name in ("established", "parked"):
            park = 10 if name == "parked" else None
            self.live = targets.EstablishedTarget("psk", None, park_after_ms=park)
            self.seeds = [self.live.authentic_datagram() for _ in range(8)] + self.datagrams

            def run_established(data: bytes) -> None:
                if park is not None:
                    self.live.idle(2 * park)
                self.live.run([data])

            self.run = run_established
        elif name == "takeover":
            # Multi-record datagrams from an established Godot-style peer's
            # address (issue 11 item 1), injected in process.
            takeover = targets.TakeoverTarget()
            self.seeds = takeover.pool() + self.datagrams
            self.run = takeover.run
        elif name in ("enet", "enet-dtls"):
            enet = targets.ENetTarget("plain" if name == "enet" else "dtls")
            self.seeds = targets.capture_enet_datagrams()
            self.run = lambda data: enet.run([data])
        elif name in ("key", "cert"):
            rsa = __import__("_dtls_sim").native_key("rsa")
            if name == "key":
                raw = seeds.key_seeds(self.identity, rsa)
                key = targets.KeyTarget(targets._key_der(self.identity.key, 0))
                self.run = lambda data: (key.run(data[1:], data[0] & 1), None)[1]
            else:
                raw = seeds.cert_seeds(self.identity, seeds.make_identity())
                cert = targets.CertTarget(raw[0])
                self.run = lambda data: (cert.run(data[1:], data[0] & 1), None)[1]
            self.seeds = [bytes([i]) + d for d in raw for i in (0, 1)]
            self.pem_pool = raw
        else:
            raise SystemExit(f"unknown target {name!r}; one of {', '.join(TARGETS)}")

    def test_one_input(self, data: bytes) -> None:
        """libFuzzer's entry: one input; an AssertionError is a finding."""
        if self.name not in _WHOLE and not data:
            return
        if self.name in ("key", "cert") and len(data) < 2:
            return
        self.run(bytes(data))

    def custom_mutator(self, data: bytes, max_size: int, seed: int) -> bytes:
        """Half libFuzzer's mutations, half ours (DTLS records or PEM/DER);
        established targets also splice in fresh records of the live session."""
        import atheris

        rng = random.Random(seed)
        if rng.random() < 0.5:
            return bytes(atheris.Mutate(data, max_size))
        m = self.mutate_module
        if self.name in ("key", "cert"):
            body = m.PemDerMutator(rng, self.pem_pool).mutate(data[1:] if data else b"")
            return (data[:1] or b"\x00") + body[:max_size - 1]
        prefix, body = (b"", data) if self.name in _WHOLE else (data[:1] or b"\x00", data[1:])
        pool = self.datagrams
        if self.live is not None and self.live.link is not None and rng.random() < 0.4:
            fresh = self.live.authentic_datagram()
            if rng.random() < 0.3:
                return fresh[:max_size]
            body, pool = fresh, [fresh, *pool]
        out = m.DatagramMutator(rng, pool).mutate(body)
        return (prefix + out)[:max_size]


def write_seeds(campaign: Campaign, corpus: Path) -> None:
    """Put the captured seeds into the corpus directory (kept across runs)."""
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(campaign.seeds):
        path = corpus / f"seed-{i:03d}"
        if not path.exists():
            path.write_bytes(seed)


def main(argv: list[str]) -> int:
    """Parse arguments, build or re-exec, then fuzz."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=TARGETS)
    parser.add_argument("--seconds", type=int, default=300, help="campaign length (default 300)")
    parser.add_argument("--corpus", type=Path, help="corpus dir (default build/fuzz/corpus/T)")
    parser.add_argument("--build", action="store_true", help="make the instrumented build")
    parser.add_argument("--list", action="store_true", help="print the targets")
    parser.add_argument("inputs", nargs="*", help="crash files to replay, or libFuzzer flags")
    args, extra = parser.parse_known_args(argv[1:])
    if args.list:
        print("\n".join(TARGETS))
        return 0
    if args.build:
        return build_instrumented()
    if args.target is None:
        parser.error("--target is required")
    reexec_if_needed([str(Path(__file__).resolve()), *argv[1:]])

    import atheris

    campaign = Campaign(args.target)
    corpus = args.corpus or FUZZ_BUILD / "corpus" / args.target
    replay = [p for p in args.inputs if Path(p).is_file()]
    flags = [p for p in args.inputs if p not in replay] + extra
    if replay:
        libfuzzer_args = [argv[0], *flags, *replay]
    else:
        write_seeds(campaign, corpus)
        libfuzzer_args = [argv[0], f"-max_total_time={args.seconds}", "-timeout=20",
                          "-rss_limit_mb=6144", "-print_final_stats=1", "-max_len=20000",
                          *flags, str(corpus)]
    print(f"target {args.target}: {len(campaign.seeds)} seeds, "
          f"{'instrumented' if os.environ.get(_REEXEC_MARK) == 'instrumented' else 'plain'} "
          "extension", flush=True)
    atheris.Setup(libfuzzer_args, campaign.test_one_input,
                  custom_mutator=campaign.custom_mutator)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

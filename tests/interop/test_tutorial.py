"""The documentation's end-to-end tutorial runs as written: the Python server
``examples/tutorial_server.py`` (a process, as a user starts it) and a Godot
project's main scene, headless, with the client in ``--bot`` mode: Godot 4
(``examples/godot_tutorial``, the runtime in ``../shared/tools/godot4``) and
Godot 3.2.3 (``examples/godot3_tutorial``, ``godot3-server``). The client
validates the server's certificate and name, says hello with ``put_var``,
walks right by sending inputs at the server's tick rate and exits 0 once the
server's state (``get_var``) shows it past x = 3; the server must have
recognised the client's Variant format and report the player joining and
leaving with close_notify. Each test skips when its runtime is absent."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

import pytest
from conftest import godot4_env, godot4_project
from peers import PeerSet

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not (EXAMPLES / "tutorial_server.py").is_file(),
                       reason="needs a source checkout (examples/)"),
]


def play(peers: PeerSet, tmp_path: Path, client: Callable[[int, Path], Sequence[str]],
         env: dict[str, str], name: str, godot: int) -> None:
    """Start the tutorial server, run ``client(port, cert)`` to its end and
    check both sides' transcripts."""
    cert = tmp_path / "server.crt"
    # Our own process: it keeps the sanitizer runtime of the ASan pass (peers
    # started by PeerSet lose it, being other programs).
    ours = {k: os.environ[k] for k in ("LD_PRELOAD", "ASAN_OPTIONS") if k in os.environ}
    server = peers.start(
        "tutorial_server",
        [sys.executable, str(EXAMPLES / "tutorial_server.py"), "--bind", "127.0.0.1",
         "--port", "0", "--save-cert", str(cert), "--duration", "90"],
        env=ours,
    )  # fmt: skip
    port = int(server.expect(rb"listening on port (\d+)", timeout=60).group(1))
    proc = subprocess.run(
        [*client(port, cert), f"--port={port}", f"--cert={cert}", f"--name={name}", "--bot",
         "--quit-at-x=3", "--timeout=60"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert re.search(r"^welcome: player id 1, 20 ticks/s$", proc.stdout, re.M), out
    assert re.search(rf"^PASS {name} reached x=3\.\d\d at tick \d+$", proc.stdout, re.M), out
    assert "SCRIPT ERROR" not in out, out
    joined = rf"{name} \(id 1, Godot {godot} format\) joined from 127\.0\.0\.1".encode()
    server.expect(joined, timeout=10)
    server.expect(rf"{name} \(id 1\) left: PEER_CLOSED".encode(), timeout=10)


def test_godot4_tutorial_client_plays_against_the_python_server(
    godot4: Path, tmp_path: Path, peers: PeerSet
) -> None:
    # The project as shipped, in a throw-away copy (Godot writes .godot/ into it).
    shipped = EXAMPLES / "godot_tutorial"
    project = godot4_project(tmp_path, shipped / "client.gd")
    for name in ("project.godot", "main.tscn"):
        shutil.copy(shipped / name, project / name)
    env = godot4_env(tmp_path)
    play(peers, tmp_path, lambda port, cert: [str(godot4), "--headless", "--path", str(project),
                                              "--"], env, "godot4", 4)


def test_godot3_tutorial_client_plays_against_the_python_server(
    tmp_path: Path, peers: PeerSet
) -> None:
    godot = shutil.which("godot3-server")
    if godot is None:
        pytest.skip("godot3-server not installed")
    project = tmp_path / "project"
    shutil.copytree(EXAMPLES / "godot3_tutorial", project)
    env = godot4_env(tmp_path)  # the same throw-away HOME, no sanitizer runtime
    play(peers, tmp_path, lambda port, cert: [godot, "--path", str(project)], env, "godot3", 3)

"""The documentation's end-to-end tutorial runs as written: the Python server
``examples/tutorial_server.py`` (a process, as a user starts it) and the
Godot 4 project ``examples/godot_tutorial`` (its main scene, headless, the
client in ``--bot`` mode). The client validates the server's certificate and
name, says hello with ``put_var``, walks right by sending inputs at the
server's tick rate and exits 0 once the server's state (``get_var``) shows it
past x = 3; the server must report the player joining and leaving with
close_notify. Skipped without the Godot 4 runtime (``../shared/tools/godot4``).

Godot 3 is not covered: the tutorial client uses Godot 4 APIs (``TLSOptions``,
``Time``, ``OS.get_cmdline_user_args``, ``PacketPeerDTLS.connect_to_peer``'s
4.x signature), so it does not run on 3.2.3."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from peers import PeerSet
from test_godot_variant import godot4, godot4_env, godot4_project  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
PROJECT = EXAMPLES / "godot_tutorial"
pytestmark = pytest.mark.interop


def test_godot4_tutorial_client_plays_against_the_python_server(
    godot4: Path, tmp_path: Path, peers: PeerSet  # noqa: F811
) -> None:
    if not (EXAMPLES / "tutorial_server.py").is_file():
        pytest.skip("needs a source checkout (examples/)")
    # The project as shipped, in a throw-away copy (Godot writes .godot/ into it).
    project = godot4_project(tmp_path, PROJECT / "client.gd")
    for name in ("project.godot", "main.tscn"):
        shutil.copy(PROJECT / name, project / name)
    cert = tmp_path / "server.crt"
    server = peers.start(
        "tutorial_server",
        [sys.executable, str(EXAMPLES / "tutorial_server.py"), "--bind", "127.0.0.1",
         "--port", "0", "--save-cert", str(cert), "--duration", "90"],
    )  # fmt: skip
    port = int(server.expect(rb"listening on port (\d+)", timeout=60).group(1))
    proc = subprocess.run(
        [str(godot4), "--headless", "--path", str(project), "--", f"--port={port}",
         f"--cert={cert}", "--name=godot", "--bot", "--quit-at-x=3", "--timeout=60"],
        env=godot4_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert re.search(r"^welcome: player id 1, 20 ticks/s$", proc.stdout, re.M), out
    assert re.search(r"^PASS godot reached x=3\.\d\d at tick \d+$", proc.stdout, re.M), out
    assert "ERROR" not in proc.stderr, out  # no engine error, e.g. a read after the end
    server.expect(rb"godot \(id 1\) joined from 127\.0\.0\.1", timeout=10)
    server.expect(rb"godot \(id 1\) left: PEER_CLOSED", timeout=10)

"""Every example's ``--self-test`` passes, and every ```python block of
README.md runs.

README convention (kept rare): a block preceded by
``<!-- readme-test: background -->`` is a server: it is started in the
background, must print a line within 60 s, and is stopped with SIGINT
(exit status 0 required) after every later block ran. Every other block
runs as a script in a scratch directory and must exit 0 within 120 s.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
BACKGROUND = "<!-- readme-test: background -->"
pytestmark = pytest.mark.skipif(
    not (ROOT / "examples").is_dir() or not (ROOT / "README.md").is_file(),
    reason="needs a source checkout (examples/ and README.md are not in the wheel)",
)


def env() -> dict[str, str]:
    """The caller's environment: examples import the dtlspeer under test (the
    installed package, or whatever PYTHONPATH already names), never an
    unbuilt src/."""
    return dict(os.environ)


def test_there_are_examples() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"tick_game_server.py", "godot_echo_server.py", "asyncio_chat_relay.py",
            "enet_game_server.py"} <= names


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_self_test(example: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(example), "--self-test"], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path, env=env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1].startswith("PASS") or "\nPASS " in proc.stdout, proc.stdout


def readme_blocks() -> list[tuple[bool, str]]:
    """(background, code) of every ```python block of README.md, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```$", text, re.S | re.M):
        before = text[: match.start()].rstrip().splitlines()
        blocks.append((bool(before) and before[-1].strip() == BACKGROUND, match.group(1)))
    return blocks


@pytest.mark.skipif(os.name != "posix", reason="stops the README's server with SIGINT")
def test_readme_python_blocks_run(tmp_path: Path) -> None:
    blocks = readme_blocks()
    assert len(blocks) >= 4
    servers: list[tuple[subprocess.Popen[str], list[str]]] = []
    try:
        for number, (background, code) in enumerate(blocks, 1):
            script = tmp_path / f"readme_block_{number}.py"
            script.write_text(code, encoding="utf-8")
            if background:
                proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                                        env=env())
                lines: list[str] = []
                ready = threading.Event()

                def read(p: subprocess.Popen[str] = proc, out: list[str] = lines,
                         flag: threading.Event = ready) -> None:
                    assert p.stdout is not None
                    for line in p.stdout:
                        out.append(line)
                        flag.set()
                    flag.set()

                threading.Thread(target=read, daemon=True).start()
                assert ready.wait(60) and proc.poll() is None, f"block {number}: {lines}\n{code}"
                servers.append((proc, lines))
                continue
            run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                                 timeout=120, cwd=tmp_path, env=env())
            assert run.returncode == 0, f"block {number}:\n{code}\n{run.stdout}{run.stderr}"
        for proc, lines in servers:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0, "".join(lines)
    finally:
        for proc, _ in servers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)

"""Process management for the interop tests: start real peers (openssl,
gnutls, Godot) on 127.0.0.1, read their output line by line with bounded
waits, talk to them through stdin, and always stop them by process id.

This is the ONE place that knows how to start and stop a peer process; the
fixtures in ``conftest.py`` wrap it so every process a test starts is
stopped in a finalizer, even when the test fails.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Optional, Union

import pytest

#: Debian/Ubuntu package that provides each tool (CI installs them).
TOOL_PACKAGES: dict[str, str] = {
    "openssl": "openssl",
    "gnutls-serv": "gnutls-bin",
    "gnutls-cli": "gnutls-bin",
    "godot3-server": "godot3-server",
}

#: Bounded waits, in seconds. Generous: 2 cores are shared with other work.
READY_TIMEOUT = 30.0
LINE_TIMEOUT = 20.0
STOP_GRACE = 5.0

Pattern = Union[str, bytes, "re.Pattern[bytes]"]
#: Called while waiting for a peer's output, to drive our own side meanwhile.
Pump = Callable[[], None]
#: pytest's ``record_property`` fixture: the matrix's negotiated suite goes in
#: the JUnit XML (``--junitxml``), so the README table can be regenerated.
RecordProperty = Callable[[str, object], None]


def require_tool(name: str) -> str:
    """Absolute path of ``name``, or skip the test with a visible reason if
    the binary is absent (the only legitimate reason to skip an interop test)."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt package {TOOL_PACKAGES.get(name, '?')})")
    return path


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that was free a moment ago (bind port 0, read it,
    close). Callers that hand it to another process retry on a bind race
    (see :meth:`PeerSet.start_server`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Deadline:
    """A monotonic deadline; ``left()`` is never negative."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.end


class PeerError(AssertionError):
    """A peer did not do what the test expected (timeout, early exit, bad output).
    The message carries the peer's transcript."""


def _compile(pattern: Pattern) -> re.Pattern[bytes]:
    if isinstance(pattern, re.Pattern):
        return pattern
    if isinstance(pattern, str):
        pattern = pattern.encode()
    return re.compile(pattern)


class _Stream:
    """Lines read from one pipe by a daemon thread; consumed through a cursor."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lines: list[bytes] = []
        self.cursor = 0
        self.eof = False


class PeerProcess:
    """One real peer process with line-oriented access to stdout and stderr.

    Output is read by two daemon threads into lists, so the child never
    blocks on a full pipe; the test consumes lines with :meth:`next_line`,
    :meth:`expect` and :meth:`poll_line` (every wait is bounded). Use
    :class:`PeerSet` to start one, so that it is always stopped."""

    def __init__(self, name: str, argv: Sequence[str], cwd: Optional[Path] = None,
                 env: Optional[dict[str, str]] = None) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.cwd = cwd
        self.env = env
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self._cond = threading.Condition()
        self._streams = {"stdout": _Stream("stdout"), "stderr": _Stream("stderr")}
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> PeerProcess:
        # The tools are not ours: keep the sanitizer runtime that CI preloads
        # for our extension out of their processes.
        env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS")}
        if self.env:
            env.update(self.env)
        self.proc = subprocess.Popen(
            self.argv, cwd=self.cwd, env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for name in ("stdout", "stderr"):
            pipe = getattr(self.proc, name)
            t = threading.Thread(target=self._reader, args=(pipe, self._streams[name]),
                                 name=f"{self.name}-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _reader(self, pipe: object, stream: _Stream) -> None:
        readline: Callable[[], bytes] = pipe.readline  # type: ignore[attr-defined]
        try:
            for line in iter(readline, b""):
                with self._cond:
                    stream.lines.append(line)
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                stream.eof = True
                self._cond.notify_all()

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def returncode(self) -> Optional[int]:
        return None if self.proc is None else self.proc.poll()

    def wait(self, timeout: float) -> int:
        """Wait (bounded) for the process to exit by itself; its exit code."""
        assert self.proc is not None, "not started"
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise PeerError(f"{self.name} did not exit within {timeout:.0f} s\n"
                            + self.transcript()) from None
        self._join_readers(2.0)
        return rc

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop this process by its pid: close stdin, SIGTERM, wait ``grace``
        seconds, then SIGKILL and reap. Idempotent; never raises."""
        proc = self.proc
        if proc is None:
            return
        try:
            if proc.stdin is not None and not proc.stdin.closed:
                proc.stdin.close()
        except OSError:
            pass
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout=grace)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=grace)
        self._join_readers(2.0)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()

    def _join_readers(self, timeout: float) -> None:
        for t in self._threads:
            t.join(timeout)

    # -- stdin -------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Write ``data`` to the peer's stdin and flush it."""
        assert self.proc is not None and self.proc.stdin is not None, "not started"
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise PeerError(f"{self.name} closed its stdin\n" + self.transcript()) from None

    def close_stdin(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None, "not started"
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass

    # -- output ------------------------------------------------------------

    def poll_line(self, stream: str = "stdout") -> Optional[bytes]:
        """The next unread line of ``stream`` if one is there; never blocks."""
        s = self._streams[stream]
        with self._cond:
            if s.cursor < len(s.lines):
                line = s.lines[s.cursor]
                s.cursor += 1
                return line
        return None

    def next_line(self, stream: str = "stdout", timeout: float = LINE_TIMEOUT,
                  pump: Optional[Pump] = None) -> bytes:
        """Block (at most ``timeout`` s) for the next unread line of ``stream``.
        With ``pump``, call it every few milliseconds while waiting (to drive
        our own side, e.g. a dtlspeer server the peer is talking to)."""
        s = self._streams[stream]
        deadline = Deadline(timeout)
        step = 0.5 if pump is None else 0.002
        with self._cond:
            while s.cursor >= len(s.lines):
                if s.eof:
                    raise PeerError(f"{self.name} closed {stream} (exit code "
                                    f"{self.returncode()}) while a line was expected\n"
                                    + self._transcript_locked())
                if deadline.expired():
                    raise PeerError(f"{self.name}: no line on {stream} within {timeout:.0f} s\n"
                                    + self._transcript_locked())
                if pump is not None:
                    self._cond.release()
                    try:
                        pump()
                    finally:
                        self._cond.acquire()
                    if s.cursor < len(s.lines):
                        break
                self._cond.wait(min(step, deadline.left()))
            line = s.lines[s.cursor]
            s.cursor += 1
            return line

    def expect(self, pattern: Pattern, stream: str = "stdout", timeout: float = LINE_TIMEOUT,
               pump: Optional[Pump] = None) -> re.Match[bytes]:
        """Consume lines of ``stream`` until one matches ``pattern`` (searched,
        bytes regex); fail with the transcript after ``timeout`` s or on EOF.
        ``pump`` as in :meth:`next_line`."""
        regex = _compile(pattern)
        deadline = Deadline(timeout)
        while True:
            try:
                line = self.next_line(stream, deadline.left(), pump)
            except PeerError as exc:
                raise PeerError(f"{self.name}: waiting for {regex.pattern!r} on {stream}: "
                                f"{exc}") from None
            m = regex.search(line)
            if m:
                return m

    def find(self, pattern: Pattern, stream: str = "stdout") -> Optional[re.Match[bytes]]:
        """Search every line read so far (consumed or not) for ``pattern``."""
        regex = _compile(pattern)
        with self._cond:
            for line in self._streams[stream].lines:
                m = regex.search(line)
                if m:
                    return m
        return None

    def transcript(self, limit: int = 60) -> str:
        with self._cond:
            return self._transcript_locked(limit)

    def _transcript_locked(self, limit: int = 60) -> str:
        out = [f"--- {self.name} (pid {self.proc.pid if self.proc else '-'}, "
               f"exit {self.returncode()}): {' '.join(self.argv)}"]
        for s in self._streams.values():
            tail = s.lines[-limit:]
            out.append(f"--- {s.name} (last {len(tail)} of {len(s.lines)} lines)")
            out.extend(line.decode("utf-8", "replace").rstrip("\n") for line in tail)
        return "\n".join(out)


class PeerSet:
    """Every peer process one test starts. The ``peers`` fixture calls
    :meth:`stop_all` in its finalizer, so no process outlives its test."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[PeerProcess] = []

    def start(self, name: str, argv: Sequence[str], env: Optional[dict[str, str]] = None,
              ) -> PeerProcess:
        """Start ``argv`` in the test's directory and register it for stopping."""
        p = PeerProcess(name, argv, cwd=self.workdir, env=env)
        self.processes.append(p)
        return p.start()

    def start_server(self, name: str, argv_for_port: Callable[[int], Sequence[str]],
                     ready: Pattern, stream: str = "stdout", attempts: int = 3,
                     env: Optional[dict[str, str]] = None) -> tuple[PeerProcess, int]:
        """Start a server on a free 127.0.0.1 UDP port and wait (bounded) until it
        prints ``ready`` on ``stream``. If it exits first (another process took the
        port between our probe and its bind), retry on a new port."""
        last: Optional[PeerError] = None
        for _ in range(attempts):
            port = free_udp_port()
            p = self.start(name, argv_for_port(port), env=env)
            try:
                p.expect(ready, stream, READY_TIMEOUT)
                return p, port
            except PeerError as exc:
                last = exc
                running = p.running()
                p.stop()
                # gnutls-serv binds IPv4 and IPv6 separately and keeps running
                # when only one bind loses the race: that is a port race too.
                port_taken = "Address already in use" in str(exc)
                if running and not port_taken:  # alive but silent: do not retry
                    break
        raise PeerError(f"{name} never became ready: {last}")

    def stop_all(self) -> None:
        for p in reversed(self.processes):
            p.stop()

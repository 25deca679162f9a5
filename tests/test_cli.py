"""The command line: ``python -m dtlspeer`` info, gen-cert, serve, connect,
demo, bench: what each prints, ``--help`` everywhere, exit status 2 with the
usage for bad command lines, and ``serve`` + ``connect`` talking to each
other as separate processes on 127.0.0.1 (every wait bounded)."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtlspeer import CryptoKey, X509Certificate, ciphersuites


def dtlspeer_cli(
    *args: str, cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dtlspeer", *args], capture_output=True, text=True, timeout=120,
        cwd=cwd, input=stdin,
    )


def test_info_reports_the_pinned_mbedtls_and_the_suites() -> None:
    proc = dtlspeer_cli("info")
    assert proc.returncode == 0, proc.stderr
    assert "Mbed TLS 3.6.7" in proc.stdout
    for suite in ciphersuites():
        assert suite in proc.stdout
    assert "threading:" in proc.stdout


@pytest.mark.parametrize(
    ("host", "san"), [("game.example", ("DNS", "game.example")), ("::1", ("IP Address", "::1"))]
)
def test_gen_cert_writes_a_key_and_a_matching_certificate(
    tmp_path: Path, host: str, san: tuple[str, str]
) -> None:
    key_path, cert_path = tmp_path / "k.pem", tmp_path / "c.pem"
    proc = dtlspeer_cli("gen-cert", host, "--key-out", str(key_path), "--cert-out", str(cert_path))
    assert proc.returncode == 0, proc.stderr
    assert key_path.stat().st_mode & 0o077 == 0  # private key not readable by others
    cert = X509Certificate()
    cert.load(cert_path)
    key = CryptoKey()
    key.load(key_path)
    assert san in cert.subject_alt_names
    assert f"CN={host}" in cert.subject
    assert cert.public_key.save_to_string(public_only=True) == key.save_to_string(public_only=True)
    openssl = shutil.which("openssl")
    if openssl:
        check = subprocess.run([openssl, "verify", "-CAfile", str(cert_path), str(cert_path)],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr


def test_gen_cert_defaults_to_host_named_files(tmp_path: Path) -> None:
    proc = dtlspeer_cli("gen-cert", "127.0.0.1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "127.0.0.1.key").is_file() and (tmp_path / "127.0.0.1.crt").is_file()


@pytest.mark.parametrize(
    "args",
    [
        ["gen-cert", "h", "--days", "0"], ["gen-cert", "h", "--key-type", "dsa"], ["gen-cert"],
        ["bogus"], [],
        ["serve", "--port", "70000"], ["serve", "--cert", "c.pem"], ["serve", "--key", "k.pem"],
        ["serve", "--psk-identity", "p"], ["serve", "--psk-hex", "zz", "--psk-identity", "p"],
        ["serve", "--duration", "-1"], ["serve", "--save-cert", "a", "--cert", "c", "--key", "k"],
        ["connect"], ["connect", "127.0.0.1"], ["connect", "127.0.0.1", "0"],
        ["connect", "127.0.0.1", "4433", "--psk-hex", "00"],
        ["connect", "h", "1", "--timeout", "x"],
        ["demo", "--messages", "0"], ["info", "extra"],
    ],
)
def test_bad_command_lines_fail_with_usage(args: list[str]) -> None:
    proc = dtlspeer_cli(*args)
    assert proc.returncode == 2
    assert "usage:" in proc.stderr


def test_unwritable_output_is_a_clear_error(tmp_path: Path) -> None:
    proc = dtlspeer_cli("gen-cert", "h", "--key-out", str(tmp_path / "missing" / "k.pem"))
    assert proc.returncode == 1
    assert proc.stderr.startswith("error:") and "No such file or directory" in proc.stderr


def test_demo_echoes_and_passes() -> None:
    proc = dtlspeer_cli("demo", "--clients", "3", "--messages", "20", "--timeout", "60")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1].startswith("PASS 3 clients x 20 messages")
    assert any("handshakes/s" in line for line in lines)
    assert any("60 round trips" in line and "round trips/s" in line for line in lines)


def test_demo_rejects_zero_clients() -> None:
    proc = dtlspeer_cli("demo", "--clients", "0")
    assert proc.returncode == 2
    assert "must be at least 1" in proc.stderr


COMMANDS = ["info", "gen-cert", "serve", "connect", "demo", "bench"]


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
def test_help_everywhere_with_examples_and_exit_status(command: list[str]) -> None:
    proc = dtlspeer_cli(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m dtlspeer")
    examples = proc.stdout.split("examples:\n", 1)[1]
    assert examples.startswith("  ") and f"python -m dtlspeer {' '.join(command)}" in examples
    assert "exit status:" in proc.stdout and "130" in proc.stdout


def test_version() -> None:
    proc = dtlspeer_cli("--version")
    assert proc.returncode == 0 and "Mbed TLS 3.6.7" in proc.stdout


PSK_ARGS = ["--psk-identity", "player", "--psk-hex", "00112233445566778899aabbccddeeff"]
LISTENING = re.compile(r"^listening on 127\.0\.0\.1:(\d+) ")


class Server:
    """``python -m dtlspeer serve`` in a subprocess; stdout lines are read by
    a thread so every wait is bounded."""

    def __init__(self, *args: str, cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dtlspeer", "serve", "--bind", "127.0.0.1", "--port", "0",
             *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        first = self.next_line(60)
        match = LISTENING.match(first)
        assert match, first + self.stderr()
        self.port = int(match.group(1))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"serve printed nothing in {timeout} s; so far {self.seen}") from None
        assert line is not None, f"serve ended: {self.seen} {self.stderr()}"
        self.seen.append(line)
        return line

    def expect(self, prefix: str, timeout: float = 30) -> str:
        while True:
            line = self.next_line(timeout)
            if line.startswith(prefix):
                return line

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read()

    def stop(self) -> str:
        """Ctrl-C (SIGINT); the stats line it prints."""
        self.proc.send_signal(signal.SIGINT)
        line = self.expect("stopped ")
        assert self.proc.wait(30) == 0
        return line

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.kill()


@pytest.mark.skipif(os.name != "posix", reason="stops serve with SIGINT")
def test_serve_and_connect_echo_with_a_saved_throwaway_certificate(
    tmp_path: Path, servers: list[Server]
) -> None:
    server = Server("--save-cert", "server.crt", cwd=tmp_path)
    servers.append(server)
    assert "throwaway self-signed certificate" in server.seen[0]
    proc = dtlspeer_cli(
        "connect", "127.0.0.1", str(server.port), "--ca", str(tmp_path / "server.crt"),
        "--hostname", "localhost", stdin="hello\n\nworld \u00e9\nlast line without newline",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["hello", "world \u00e9", "last line without newline"]
    assert "connected to 127.0.0.1:" in proc.stderr
    assert "done: 3 records sent, 3 received" in proc.stderr
    assert re.match(r"connect 127\.0\.0\.1:\d+ TLS-ECDHE-ECDSA-", server.expect("connect "))
    line = server.expect("disconnect ")
    assert "peer_closed after 3 records" in line, line
    stats = server.stop()
    assert "(Ctrl-C)" in stats
    assert "1 connects, 1 disconnects, 0 failed handshakes" in stats
    assert "3 records echoed (" in stats


@pytest.mark.skipif(os.name != "posix", reason="stops serve with SIGINT")
def test_connect_refuses_a_wrong_hostname_and_an_untrusted_certificate(
    tmp_path: Path, servers: list[Server]
) -> None:
    server = Server("--save-cert", "server.crt", cwd=tmp_path)
    servers.append(server)
    other = tmp_path / "other.crt"
    assert dtlspeer_cli("gen-cert", "localhost", "--cert-out", str(other), "--key-out",
                        str(tmp_path / "other.key")).returncode == 0
    port = str(server.port)
    wrong_name = dtlspeer_cli("connect", "127.0.0.1", port, "--ca", str(tmp_path / "server.crt"),
                              "--hostname", "wrong.example", stdin="x\n")
    assert wrong_name.returncode == 1
    assert "Common Name" in wrong_name.stderr and wrong_name.stdout == ""
    untrusted = dtlspeer_cli("connect", "127.0.0.1", port, "--ca", str(other),
                             "--hostname", "localhost", stdin="x\n")
    assert untrusted.returncode == 1
    assert "not correctly signed by the trusted CA" in untrusted.stderr
    insecure = dtlspeer_cli("connect", "127.0.0.1", port, "--insecure", stdin="anything\n")
    assert insecure.returncode == 0, insecure.stderr
    assert insecure.stdout == "anything\n"
    assert "fatal alert received from peer: bad_certificate" in server.expect("handshake-failed")
    assert "unknown_ca" in server.expect("handshake-failed")
    assert "2 failed handshakes" in server.stop()


def test_serve_with_a_psk_and_its_duration_and_given_certificate(
    tmp_path: Path, servers: list[Server]
) -> None:
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    assert dtlspeer_cli("gen-cert", "127.0.0.1", "--key-out", str(key), "--cert-out",
                        str(cert)).returncode == 0
    server = Server("--cert", str(cert), "--key", str(key), *PSK_ARGS, "--duration", "20",
                    cwd=tmp_path)
    servers.append(server)
    assert "certificate " in server.seen[0] and "PSK identity 'player'" in server.seen[0]
    port = str(server.port)
    psk = dtlspeer_cli("connect", "127.0.0.1", port, *PSK_ARGS, stdin="over psk\n")
    assert psk.returncode == 0, psk.stderr
    assert psk.stdout == "over psk\n" and "-PSK-" in psk.stderr
    bad_psk = dtlspeer_cli("connect", "127.0.0.1", port, "--psk-identity", "player",
                           "--psk-hex", "ff" * 16, stdin="x\n")
    assert bad_psk.returncode == 1 and "handshake with" in bad_psk.stderr
    signed = dtlspeer_cli("connect", "127.0.0.1", port, "--ca", str(cert), stdin="over cert\n")
    assert signed.returncode == 0, signed.stderr
    assert signed.stdout == "over cert\n" and "-ECDSA-" in signed.stderr
    line = server.expect("stopped ", timeout=60)
    assert "(--duration 20 s reached)" in line and "2 connects" in line
    assert server.proc.wait(30) == 0


def test_connect_times_out_without_a_server() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind(("127.0.0.1", 0))  # bound, never answers: no ICMP either
        port = hole.getsockname()[1]
        proc = dtlspeer_cli("connect", "127.0.0.1", str(port), "--insecure", "--timeout", "1",
                            stdin="")
    assert proc.returncode == 1
    assert "no handshake with 127.0.0.1:" in proc.stderr and "within 1 s" in proc.stderr


def test_missing_certificate_file_is_exit_1(tmp_path: Path) -> None:
    proc = dtlspeer_cli("serve", "--port", "0", "--cert", str(tmp_path / "no.crt"),
                        "--key", str(tmp_path / "no.key"))
    assert proc.returncode == 1 and proc.stderr.startswith("error:")


def test_demo_progress_goes_to_stderr_and_quiet_silences_it() -> None:
    loud = dtlspeer_cli("demo", "--clients", "2", "--messages", "3")
    assert loud.returncode == 0, loud.stderr
    assert "demo: echo server on 127.0.0.1:" in loud.stderr
    assert "demo: 3 rounds of 2 echoes" in loud.stderr
    assert "demo:" not in loud.stdout
    quiet = dtlspeer_cli("demo", "--clients", "2", "--messages", "3", "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""


@pytest.mark.parametrize("registered", ["nothing", "unimportable"])
def test_bench_without_an_importable_runner_says_how_to_run_it(
    registered: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dtlspeer bench` finds the runner through the `dtlspeer.commands`
    entry point only; without one (a source tree), or with one naming a
    package that is not there (metadata a build left in src/), it fails
    with a message instead of a traceback."""
    from dtlspeer import __main__ as cli

    def lookup(name: str) -> None:
        assert name == "bench"
        if registered == "unimportable":
            raise ModuleNotFoundError("No module named 'dtlspeer_benchmarks'")

    monkeypatch.setattr(cli, "_registered_command", lookup)
    assert cli.main(["bench"]) == 1
    err = capsys.readouterr().err
    assert "python -m benchmarks --quick" in err and "Traceback" not in err
    assert ("cannot be imported" in err) == (registered == "unimportable")

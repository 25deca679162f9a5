"""``openssl s_server -dtls1_2 -listen``: OpenSSL's own stateless cookie
exchange (``DTLSv1_listen``) as the baseline of the spoofed-flood metric.

The server is the ``openssl`` command-line tool in a child process (its
CPU and RSS are what benchmarks/flood.py measures); it answers every
cookieless ClientHello with a HelloVerifyRequest before any connection
state exists, exactly the job dtlspeer's gate does. No legitimate
handshake is timed against it: ``s_server`` serves one client at a time.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any, Callable

from .. import flood
from ..harness import HOST, Cfg, Result, Stop


def available() -> str | None:
    return None if shutil.which("openssl") else "openssl command not found"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _answers(port: int, hello: bytes) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        s.sendto(hello, (HOST, port))
        try:
            return s.recv(2048)[0] == 22
        except OSError:
            return False


def flood_server(cfg: Cfg, ready: Callable[[Any], None], stop: Any) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        key, cert = os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.pem")
        with open(key, "wb") as f:
            f.write(cfg.key_pem)
        with open(cert, "wb") as f:
            f.write(cfg.cert_pem)
        port = _free_port()
        proc = subprocess.Popen(
            ["openssl", "s_server", "-dtls1_2", "-listen", "-accept", f"{HOST}:{port}",
             "-key", key, "-cert", cert, "-quiet"],
            # stdin stays open: at end of file s_server ends its session
            # loop and stops answering until the next readable event.
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            hello = flood.cookieless_hello()
            deadline = time.monotonic() + 10
            while not _answers(port, hello):
                if proc.poll() is not None or time.monotonic() > deadline:
                    return {"error": "openssl s_server did not start"}
            ready((port, proc.pid, False))
            guard = Stop(stop, cfg.timeout)
            while not guard.now():
                time.sleep(0.05)
            return {}
        finally:
            proc.kill()
            proc.wait()
            assert proc.stdin is not None
            proc.stdin.close()


flood_client = flood.flood_client

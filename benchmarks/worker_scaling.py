"""Handshake capacity of ``dtlspeer serve`` with 1 and 2 worker processes.

``python -m benchmarks.worker_scaling [--seconds S] [--concurrency C] [--runs R]``

Each configuration starts ``python -m dtlspeer serve --workers N`` on
127.0.0.1 with an RSA-2048 certificate (the server's private-key operation
dominates an ECDHE-RSA handshake, ~2.5 ms, while the client's verify and
X25519 cost a few hundred microseconds: the load generator is not the
bottleneck). One client process (this one) keeps C handshakes in flight,
each on a fresh socket (a new address for the kernel's reuseport hash),
closes each connection as soon as it is up (close_notify) and counts
completed handshakes per second of wall time. The ratio 2 workers / 1 worker
is the scaling factor, measured in the same run, configurations
interleaved. The machine is shared (2 vCPUs, other jobs running): the load
average is printed with every run, so read the numbers as from a loaded
machine.
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dtlspeer import Crypto
from dtlspeer._engine import Connection, EngineConfig, EngineStatus, Verify

ROOT = Path(__file__).resolve().parents[1]


def now_ms() -> int:
    return int(time.monotonic() * 1000)


def make_certificate(directory: Path) -> tuple[Path, Path]:
    crypto = Crypto()
    key = crypto.generate_rsa(2048)
    cert = crypto.generate_self_signed_certificate(
        key, "CN=localhost", "20240101000000", "20440101000000", ip_addresses=["127.0.0.1"])
    key_path, cert_path = directory / "bench.key", directory / "bench.crt"
    key.save(str(key_path))
    cert.save(str(cert_path))
    return key_path, cert_path


def start_server(workers: int, key: Path, cert: Path) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dtlspeer", "serve", "--workers", str(workers), "--bind",
         "127.0.0.1", "--port", "0", "--cert", str(cert), "--key", str(key),
         "--idle-timeout", "2", "--max-peers", "60000"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    if m is None:
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    # The workers print a line per connect: drain stdout so they never block.
    os.set_blocking(proc.stdout.fileno(), False)
    return proc, int(m.group(1))


def drain(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    try:
        while os.read(proc.stdout.fileno(), 1 << 16):
            pass
    except BlockingIOError:
        pass


def run_load(port: int, seconds: float, concurrency: int, proc: subprocess.Popen[str]) -> int:
    """Handshakes completed in ``seconds`` with ``concurrency`` in flight."""
    config = EngineConfig.client(verify=Verify.NONE, handshake_timeout_ms=(1000, 8000), mtu=1200)
    selector = selectors.DefaultSelector()
    live: dict[int, tuple[socket.socket, Connection]] = {}

    def start() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(("127.0.0.1", 0))
        sock.connect(("127.0.0.1", port))
        conn = Connection(config, now_ms())
        conn.update(now_ms())
        for datagram in conn.take_outgoing():
            sock.send(datagram)
        live[sock.fileno()] = (sock, conn)
        selector.register(sock, selectors.EVENT_READ)

    def finish(fd: int) -> None:
        sock, conn = live.pop(fd)
        selector.unregister(sock)
        if conn.status == EngineStatus.CONNECTED:
            conn.disconnect(now_ms())
            for datagram in conn.take_outgoing():
                try:
                    sock.send(datagram)
                except OSError:
                    pass
        conn.close()
        sock.close()

    done = 0
    end = time.monotonic() + seconds
    for _ in range(concurrency):
        start()
    while time.monotonic() < end:
        for key, _ in selector.select(0.005):
            sock, conn = live[key.fd]
            for _ in range(16):
                try:
                    conn.feed(sock.recv(4096), now_ms())
                except (BlockingIOError, ConnectionRefusedError):
                    break
            for datagram in conn.take_outgoing():
                sock.send(datagram)
            if conn.status != EngineStatus.HANDSHAKING:
                done += conn.status == EngineStatus.CONNECTED
                finish(key.fd)
                start()
        now = now_ms()
        for fd, (sock, conn) in list(live.items()):
            due = conn.next_timeout()
            if due is not None and due <= now:
                conn.update(now)
                for datagram in conn.take_outgoing():
                    sock.send(datagram)
                if conn.status != EngineStatus.HANDSHAKING:
                    finish(fd)
                    start()
        drain(proc)
    for fd in list(live):
        finish(fd)
    selector.close()
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        key, cert = make_certificate(Path(tmp))
        rates: dict[int, list[float]] = {1: [], 2: []}
        for run in range(args.runs):
            for workers in (1, 2):
                proc, port = start_server(workers, key, cert)
                try:
                    time.sleep(0.2)
                    load = os.getloadavg()[0]
                    cpu = time.process_time()
                    done = run_load(port, args.seconds, args.concurrency, proc)
                    client_cpu = time.process_time() - cpu
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.communicate(timeout=30)
                rate = done / args.seconds
                rates[workers].append(rate)
                print(f"run {run + 1} workers={workers}: {rate:7.1f} handshakes/s "
                      f"(load average {load:.2f} before; client CPU "
                      f"{client_cpu / args.seconds * 100:.0f}% of a core)", flush=True)
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(f"median: 1 worker {one:.1f}/s, 2 workers {two:.1f}/s, scaling factor "
          f"{two / one:.2f}x (ECDHE-RSA-2048, X25519; shared 2-vCPU machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

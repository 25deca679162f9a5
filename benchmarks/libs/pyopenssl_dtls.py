"""pyOpenSSL DTLS (OpenSSL's DTLS 1.2) driven the idiomatic way for Python.

One UDP socket per side; every connection is an ``SSL.Connection`` over
memory BIOs (``bio_write`` what arrives, ``bio_read`` what to send). The
server keeps a dict {address: connection}; a datagram from an unknown
address gets a fresh connection on which ``DTLSv1_listen`` runs with HMAC
cookie callbacks: without a valid cookie the HelloVerifyRequest is sent and
the connection is dropped (no state kept), with one the handshake goes on.
Same certificate as every other row; the client verifies it (VERIFY_PEER
against it). Retransmission timers: ``DTLSv1_handle_timeout`` when idle.
A memory BIO is a stream, so a flight can leave as one datagram holding
several records (valid DTLS; fewer datagrams than an MTU-bound peer)."""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import hmac
import os
import socket
import tempfile
import time
from typing import Any, Callable

from ..harness import (
    HOST,
    MTU,
    Cfg,
    FaninSink,
    PingClient,
    Result,
    Stop,
    blast,
    blast_prebuilt,
    payload,
    plain_server_socket,
    prebuilt_count,
    raise_fd_limit,
    rss_bytes,
    server_cpu,
    wait_readable,
)

Addr = tuple[str, int]


_FILES: dict[bytes, tuple[str, str]] = {}


def _files(cfg: Cfg) -> tuple[str, str]:
    """PEM files of the benchmark key and certificate (written once per process)."""
    if cfg.cert_pem in _FILES:
        return _FILES[cfg.cert_pem]
    d = tempfile.mkdtemp(prefix="dtlspeer-bench-")
    key, cert = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
    with open(key, "wb") as f:
        f.write(cfg.key_pem)
    with open(cert, "wb") as f:
        f.write(cfg.cert_pem)
    _FILES[cfg.cert_pem] = key, cert
    return key, cert


def server_context(cfg: Cfg) -> Any:
    """A DTLS server context with cookie callbacks (HMAC of the peer address)."""
    from OpenSSL import SSL

    key, cert = _files(cfg)
    ctx = SSL.Context(SSL.DTLS_METHOD)
    ctx.use_privatekey_file(key)
    ctx.use_certificate_file(cert)
    secret = os.urandom(32)

    def cookie(conn: Any) -> bytes:
        return hmac.new(secret, repr(conn.get_app_data()).encode(), hashlib.sha256).digest()[:16]

    ctx.set_cookie_generate_callback(cookie)
    ctx.set_cookie_verify_callback(lambda conn, c: hmac.compare_digest(c, cookie(conn)))
    return ctx


def client_context(cfg: Cfg) -> Any:
    """A DTLS client context that verifies the benchmark certificate."""
    from OpenSSL import SSL

    _, cert = _files(cfg)
    ctx = SSL.Context(SSL.DTLS_METHOD)
    ctx.set_verify(SSL.VERIFY_PEER, lambda *args: bool(args[-1]))
    ctx.load_verify_locations(cert)
    return ctx


def flush(conn: Any, send: Callable[[bytes], Any]) -> None:
    """Send everything OpenSSL wrote into the connection's outgoing BIO."""
    from OpenSSL import SSL

    while True:
        try:
            out = conn.bio_read(65536)
        except SSL.WantReadError:
            return
        send(out)


class Server:
    """The server: one socket, {address: [connection, established]}."""

    def __init__(self, cfg: Cfg) -> None:
        from OpenSSL import SSL

        self.SSL = SSL
        self.ctx = server_context(cfg)
        self.sock = plain_server_socket()
        self.port = self.sock.getsockname()[1]
        self.conns: dict[Addr, list[Any]] = {}
        self.established = 0
        self.closed = 0
        self.buf = bytearray(65536)
        self.mtu = MTU  # ciphertext MTU of new connections (the tick metric raises it)

    def drain(self, on_data: Callable[[Addr, Any, bytes], None] | None = None,
              on_established: Callable[[Addr], None] | None = None,
              limit: int = 1 << 30) -> int:
        """Read waiting datagrams (at most ``limit``) and drive their
        connections; returns datagrams read."""
        SSL = self.SSL
        sock, conns = self.sock, self.conns
        n = 0
        while n < limit:
            try:
                data, addr = sock.recvfrom(65536)
            except BlockingIOError:
                return n
            n += 1
            entry = conns.get(addr)
            if entry is None:
                conn = SSL.Connection(self.ctx, None)
                conn.set_app_data(addr)
                conn.set_accept_state()
                conn.set_ciphertext_mtu(self.mtu)
                conn.bio_write(data)
                try:
                    conn.DTLSv1_listen()
                except SSL.WantReadError:  # HelloVerifyRequest written (or junk)
                    flush(conn, lambda d, a=addr: sock.sendto(d, a))
                    continue
                except SSL.Error:
                    continue
                entry = conns[addr] = [conn, False]
            else:
                conn = entry[0]
                conn.bio_write(data)
            try:
                if not entry[1]:
                    conn.do_handshake()
                    entry[1] = True
                    self.established += 1
                    if on_established is not None:
                        on_established(addr)
                while True:
                    msg = conn.recv(65536)
                    if on_data is not None:
                        on_data(addr, conn, msg)
            except SSL.WantReadError:
                pass
            except SSL.ZeroReturnError:  # close_notify
                conn.shutdown()
                del conns[addr]
                self.closed += 1
            except SSL.Error:
                del conns[addr]
                self.closed += 1
            flush(conn, lambda d, a=addr: sock.sendto(d, a))
        return n


class Client:
    """One client connection: a connected socket plus an SSL.Connection."""

    def __init__(self, ctx: Any, port: int) -> None:
        from OpenSSL import SSL

        self.SSL = SSL
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect((HOST, port))
        self.sock.setblocking(False)
        self.conn = SSL.Connection(ctx, None)
        self.conn.set_connect_state()
        self.conn.set_ciphertext_mtu(MTU)
        self.done = False
        self.step()

    def fileno(self) -> int:
        return self.sock.fileno()

    def step(self) -> bool:
        """Feed waiting datagrams and advance the handshake; True once done."""
        SSL = self.SSL
        while True:
            try:
                self.conn.bio_write(self.sock.recv(65536))
            except BlockingIOError:
                break
        try:
            self.conn.do_handshake()
            self.done = True
        except SSL.WantReadError:
            pass
        flush(self.conn, self.sock.send)
        return self.done

    def timer(self) -> None:
        self.conn.DTLSv1_handle_timeout()
        flush(self.conn, self.sock.send)

    def send(self, data: Any) -> None:
        self.conn.write(bytes(data))
        flush(self.conn, self.sock.send)

    def close(self) -> None:
        try:
            self.conn.shutdown()
            flush(self.conn, self.sock.send)
        except self.SSL.Error:
            pass
        self.sock.close()


def _handshake_all(clients: list[Client], deadline: float) -> None:
    waiting = [c for c in clients if not c.done]
    while waiting:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(waiting)} handshakes unfinished")
        ready = wait_readable(waiting, 0.05)
        if not ready:
            for c in waiting:
                c.timer()
        for c in ready:
            c.step()
        waiting = [c for c in waiting if not c.done]


def _serve(srv: Server, cfg: Cfg, stop: Any, **kw: Any) -> None:
    guard = Stop(stop, cfg.timeout)
    while True:
        if not wait_readable([srv.sock], 0.05):
            if guard.now():
                return
            continue
        srv.drain(**kw)


def pingpong_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    srv = Server(cfg)
    ready(srv.port)
    _serve(srv, cfg, stop, on_data=lambda addr, conn, msg: conn.write(msg))
    return {}


def pingpong_client(cfg: Cfg, port: int, stop: Any) -> Result:
    c = Client(client_context(cfg), port)
    _handshake_all([c], time.monotonic() + 30)
    SSL, conn, sock = c.SSL, c.conn, c.sock

    def recv(timeout: float) -> bytes | None:
        while True:
            try:
                return conn.recv(65536)  # type: ignore[no-any-return]
            except SSL.WantReadError:
                pass
            if not wait_readable([sock], timeout):
                return None
            conn.bio_write(sock.recv(65536))

    try:
        return PingClient(cfg).run(c.send, recv)
    finally:
        c.close()


def fanin_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    srv = Server(cfg)
    ready(srv.port)
    inbox: dict[Addr, list[bytes]] = {}
    sink = FaninSink()
    got = [0]

    def on_data(addr: Addr, conn: Any, msg: bytes) -> None:
        q = inbox.get(addr)
        if q is None:
            q = inbox[addr] = []
        q.append(msg)
        got[0] += 1

    guard = Stop(stop, cfg.timeout)
    while True:
        if not wait_readable([srv.sock], 0.05):
            if guard.now():
                break
            continue
        srv.drain(on_data=on_data, limit=256)  # the sink marks batch times
        sink.mark(got[0])
    return sink.result(list(inbox.values()), cfg.payload)


def fanin_client(cfg: Cfg, port: int, stop: Any) -> Result:
    ctx = client_context(cfg)
    clients = [Client(ctx, port) for _ in range(cfg.clients)]
    _handshake_all(clients, time.monotonic() + 60)
    bufs = [bytearray(payload(cfg.payload, i)) for i in range(cfg.clients)]
    return blast([c.send for c in clients], bufs, cfg, lambda: [c.close() for c in clients])


faninsrv_server = fanin_server


def faninsrv_client(cfg: Cfg, port: int, stop: Any) -> Result:
    """The ``faninsrv`` load generator of every DTLS server: pyOpenSSL
    clients handshake, then every record is encrypted BEFORE the timed
    part; the timed part only sends prebuilt datagrams, as plain UDP's does."""
    ctx = client_context(cfg)
    clients = [Client(ctx, port) for _ in range(cfg.clients)]
    _handshake_all(clients, time.monotonic() + 60)
    per = prebuilt_count(cfg)
    msgs = []
    for i, c in enumerate(clients):
        records = []
        for k in range(per):
            c.conn.write(payload(cfg.payload, i, k))
            records.append(c.conn.bio_read(65536))
        msgs.append(records)
    return blast_prebuilt([c.sock.send for c in clients], msgs, cfg,
                          lambda: [c.close() for c in clients])


def handshake_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    srv = Server(cfg)
    ready(srv.port)
    _serve(srv, cfg, stop)
    return {"established": srv.established, "closed": srv.closed}


def handshake_client(cfg: Cfg, port: int, stop: Any) -> Result:
    ctx = client_context(cfg)
    slots = [Client(ctx, port) for _ in range(cfg.concurrency)]
    done = failed = 0
    start = time.perf_counter()
    end = start + cfg.seconds
    while time.perf_counter() < end:
        ready = wait_readable(slots, 0.05)
        if not ready:
            for c in slots:
                c.timer()
        for c in ready:
            try:
                ok = c.step()
            except c.SSL.Error:
                failed += 1
                ok = True
            if ok:
                done += 1 if c.done else 0
                c.close()
                slots[slots.index(c)] = Client(ctx, port)
    elapsed = time.perf_counter() - start
    for c in slots:
        c.close()
    return {"value": done / elapsed, "count": done, "lost": failed}


def hsserver_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    return server_cpu(handshake_server, cfg, ready, stop)


def hsserver_client(cfg: Cfg, port: int, stop: Any) -> Result:
    """The server-capacity metric's load generator, shared by every server:
    pyOpenSSL clients (OpenSSL's fast ECC, so the client side does not
    decide the rate), ``2 x --concurrency`` handshakes in flight."""
    return handshake_client(dataclasses.replace(cfg, concurrency=2 * cfg.concurrency), port, stop)


def memory_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    srv = Server(cfg)
    ready(srv.port)
    guard = Stop(stop, cfg.timeout)
    base: list[int | None] = []

    def on_established(addr: Addr) -> None:
        if not base:
            gc.collect()
            base.append(rss_bytes())

    while srv.established < cfg.conns:
        if not wait_readable([srv.sock], 0.05) and guard.now():
            return {"error": f"only {srv.established} of {cfg.conns} connections established"}
        srv.drain(on_established=on_established)
    time.sleep(0.3)
    gc.collect()
    end = rss_bytes()
    if not base or base[0] is None or end is None:
        return {"error": "RSS not available on this OS"}
    per = (end - base[0]) / max(1, srv.established - 1) / 1024
    return {"value": per, "conns": len(srv.conns), "rss_base": base[0], "rss_end": end}


def memory_client(cfg: Cfg, port: int, stop: Any) -> Result:
    raise_fd_limit(cfg.conns + 256)
    ctx = client_context(cfg)
    deadline = time.monotonic() + cfg.timeout
    keep = [Client(ctx, port)]
    _handshake_all(keep, deadline)
    time.sleep(0.5)  # the server takes its baseline RSS now
    while len(keep) < cfg.conns:
        batch = [Client(ctx, port) for _ in range(min(32, cfg.conns - len(keep)))]
        _handshake_all(batch, deadline)
        keep.extend(batch)
    stop.wait(cfg.timeout)
    return {"established": len(keep)}


# -- game tick (benchmarks/tick.py) ---------------------------------------------------


def tick_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    from .. import tick

    return tick.serve_parts(cfg, ready, stop, tick_parts)


def tick_parts(cfg: Cfg) -> Any:
    """``drain`` (recvfrom, ``bio_write``, ``recv`` per record) into a list,
    then per client ``write`` + ``bio_read`` + ``sendto``."""
    from .. import tick

    srv = Server(cfg)
    srv.mtu = tick.dtls_mtu(cfg)
    targets: list[tuple[int, Any, Addr]] = []
    make = tick.Snapshots(cfg).make
    inputs: list[bytes] = []
    SSL = srv.SSL
    sendto = srv.sock.sendto

    def on_established(addr: Addr) -> None:
        targets.append((len(targets), srv.conns[addr][0], addr))

    def on_data(addr: Addr, conn: Any, msg: bytes) -> None:
        inputs.append(msg)

    def drain() -> list[bytes]:
        srv.drain(on_data=on_data, on_established=on_established)
        got = inputs[:]
        inputs.clear()
        return got

    def send(t: int) -> int:
        sent = 0
        for slot, conn, addr in targets:
            try:
                conn.write(make(slot, t))
                sendto(conn.bio_read(65536), addr)
                sent += 1
            except (SSL.Error, OSError):
                pass
        return sent

    return tick.TickParts(srv.port, drain, send, lambda: len(targets), srv.sock.close)


def tick_client(cfg: Cfg, port: int, stop: Any) -> Result:
    from .. import tick

    return tick.dtls_client(cfg, port, stop)

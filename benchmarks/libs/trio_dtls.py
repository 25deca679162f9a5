"""trio's ``DTLSEndpoint`` (OpenSSL through pyOpenSSL, async/await).

Server: ``endpoint.serve(ctx, handler)``, one task per connection (trio
does the cookie exchange itself before calling the handler). Client:
``endpoint.connect(addr, ctx)`` on its own socket, ``do_handshake``, then
``send``/``receive``. ``incoming_packets_buffer=100`` per channel (the
default 10 drops datagrams of a busy fan-in channel). Same certificate as
every other row; the client verifies it. trio (0.35) calls ``set_options``
on the client context in every ``connect``, which pyOpenSSL >= 25 refuses
on a context already used, so each client connection gets a fresh context
(as trio users must do today); that costs trio's handshake row a little."""

from __future__ import annotations

import gc
import socket as _socket
import time
from collections.abc import Awaitable
from typing import Any, Callable

from ..harness import (
    HOST,
    MTU,
    RCVBUF,
    Cfg,
    FaninSink,
    PingClient,
    Result,
    payload,
    raise_fd_limit,
    rss_bytes,
    stamp,
)
from .pyopenssl_dtls import _files, client_context

BUFFER = 100


def _server_context(cfg: Cfg) -> Any:
    from OpenSSL import SSL

    key, cert = _files(cfg)
    ctx = SSL.Context(SSL.DTLS_METHOD)
    ctx.use_privatekey_file(key)
    ctx.use_certificate_file(cert)
    return ctx


def _serve(cfg: Cfg, ready: Callable[[int], None], stop: Any,
           handler: Callable[[Any], Awaitable[None]],
           done: Callable[[], bool] | None = None) -> None:
    """Run a trio DTLS server until the stop event (or ``done()``)."""
    import trio

    async def main() -> None:
        sock = trio.socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, RCVBUF)
        await sock.bind((HOST, 0))
        endpoint = trio.DTLSEndpoint(sock, incoming_packets_buffer=BUFFER)
        deadline = time.monotonic() + cfg.timeout
        async with trio.open_nursery() as nursery:
            await nursery.start(endpoint.serve, _server_context(cfg), handler)
            ready(sock.getsockname()[1])
            while not stop.is_set() and time.monotonic() < deadline:
                if done is not None and done():
                    break
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        endpoint.close()

    trio.run(main)


async def _connect(port: int, cfg: Cfg) -> Any:
    import trio

    sock = trio.socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    await sock.bind((HOST, 0))
    endpoint = trio.DTLSEndpoint(sock, incoming_packets_buffer=BUFFER)
    channel = endpoint.connect((HOST, port), client_context(cfg))
    channel.set_ciphertext_mtu(MTU)
    await channel.do_handshake()
    return endpoint, channel


def pingpong_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    import trio

    async def handler(ch: Any) -> None:
        try:
            while True:
                await ch.send(await ch.receive())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    _serve(cfg, ready, stop, handler)
    return {}


def pingpong_client(cfg: Cfg, port: int, stop: Any) -> Result:
    import trio

    msgs = PingClient(cfg).msgs

    async def main() -> Result:
        endpoint, ch = await _connect(port, cfg)
        for i in range(200):
            await ch.send(msgs[i & 255])
            await ch.receive()
        n = lost = bad = 0
        start = time.perf_counter()
        end = start + cfg.seconds
        while True:
            m = msgs[n & 255]
            await ch.send(m)
            echo = None
            with trio.move_on_after(2.0):
                echo = await ch.receive()
            if echo is None:
                lost += 1
                if lost > 5:
                    break
            elif echo != m:
                bad += 1
            n += 1
            if not n & 63 and time.perf_counter() >= end:
                break
        elapsed = time.perf_counter() - start
        endpoint.close()
        return {"value": (n - lost) / elapsed, "count": n, "lost": lost, "bad": bad}

    return trio.run(main)  # type: ignore[no-any-return]


def fanin_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    import trio

    inbox: list[list[bytes]] = []
    sink = FaninSink()
    got = [0]

    async def handler(ch: Any) -> None:
        q: list[bytes] = []
        inbox.append(q)
        try:
            while True:
                q.append(await ch.receive())
                got[0] += 1
                sink.mark(got[0])
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    _serve(cfg, ready, stop, handler)
    return sink.result(inbox, cfg.payload)


def fanin_client(cfg: Cfg, port: int, stop: Any) -> Result:
    import trio

    async def main() -> Result:
        pairs = []
        async with trio.open_nursery() as nursery:
            async def one() -> None:
                pairs.append(await _connect(port, cfg))
            for _ in range(cfg.clients):
                nursery.start_soon(one)
        bufs = [bytearray(payload(cfg.payload, i)) for i in range(len(pairs))]
        sent = failed = seq = 0
        end = time.perf_counter() + cfg.seconds
        while time.perf_counter() < end:
            for i, (_, ch) in enumerate(pairs):
                try:
                    await ch.send(bytes(stamp(bufs[i], i, seq)))
                    sent += 1
                except OSError:
                    failed += 1
            seq += 1
            await trio.sleep(0)
        await trio.sleep(0.2)
        for ep, _ in pairs:
            ep.close()
        return {"sent": sent, "send_failed": failed}

    return trio.run(main)  # type: ignore[no-any-return]


def handshake_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    import trio

    count = [0]

    async def handler(ch: Any) -> None:
        try:
            await ch.do_handshake()
            count[0] += 1
            with trio.move_on_after(1.0):  # trio sends no close_notify; keep the
                await ch.receive()  # connection for a possible retransmission
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    _serve(cfg, ready, stop, handler)
    return {"established": count[0]}


def handshake_client(cfg: Cfg, port: int, stop: Any) -> Result:
    import trio

    async def main() -> Result:
        done = [0]
        start = time.perf_counter()
        end = start + cfg.seconds

        async def slot() -> None:
            while time.perf_counter() < end:
                endpoint, ch = await _connect(port, cfg)
                done[0] += 1
                ch.close()
                endpoint.close()

        async with trio.open_nursery() as nursery:
            for _ in range(cfg.concurrency):
                nursery.start_soon(slot)
        elapsed = time.perf_counter() - start
        return {"value": done[0] / elapsed, "count": done[0]}

    return trio.run(main)  # type: ignore[no-any-return]


def memory_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    import trio

    state: dict[str, Any] = {"n": 0, "base": None}

    async def handler(ch: Any) -> None:
        try:
            await ch.do_handshake()
            state["n"] += 1
            if state["base"] is None:
                gc.collect()
                state["base"] = rss_bytes()
            await trio.sleep_forever()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def measured() -> bool:
        if state["n"] < cfg.conns:
            return False
        time.sleep(0.3)
        gc.collect()
        state["end"] = rss_bytes()
        return True

    _serve(cfg, ready, stop, handler, done=measured)
    if state.get("end") is None or state["base"] is None:
        return {"error": f"only {state['n']} of {cfg.conns} connections established"}
    per = (state["end"] - state["base"]) / max(1, state["n"] - 1) / 1024
    return {"value": per, "conns": state["n"], "rss_base": state["base"], "rss_end": state["end"]}


def memory_client(cfg: Cfg, port: int, stop: Any) -> Result:
    import trio

    raise_fd_limit(cfg.conns + 256)

    async def main() -> Result:
        keep = [await _connect(port, cfg)]
        await trio.sleep(0.5)  # the server takes its baseline RSS now
        while len(keep) < cfg.conns:
            async with trio.open_nursery() as nursery:
                async def one() -> None:
                    keep.append(await _connect(port, cfg))
                for _ in range(min(32, cfg.conns - len(keep))):
                    nursery.start_soon(one)
        while not stop.is_set():
            await trio.sleep(0.05)
        return {"established": len(keep)}

    return trio.run(main)  # type: ignore[no-any-return]

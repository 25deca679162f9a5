"""dtlspeer's asyncio layer (``dtlspeer.aio.serve``) as a game server: one
task per connection (the handler only registers it), one task ticking at the
fixed rate: ``recv_nowait`` every queued input of every connection, then
``send_nowait`` one snapshot per connection (queued, one ``sendmmsg`` batch
at the end of the loop iteration). Only the ``tick`` metric drives it."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from ..harness import HOST, Cfg, Result
from . import dtlspeer_dtls


def tick_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    from .. import tick

    return asyncio.run(_tick_server(cfg, ready, stop, tick))


async def _tick_server(cfg: Cfg, ready: Callable[[int], None], stop: Any, tick: Any) -> Result:
    from dtlspeer import DTLSSettings, aio

    targets: list[tuple[int, Any]] = []
    finished = asyncio.Event()

    async def handler(conn: Any) -> None:
        targets.append((len(targets), conn))
        await finished.wait()

    server = await aio.serve(handler, HOST, 0, dtlspeer_dtls._materials(cfg)[0],
                             settings=DTLSSettings(mtu=tick.dtls_mtu(cfg)), max_queue=64)
    ready(server.port)
    make = tick.Snapshots(cfg).make
    clock = tick.TickClock(cfg, stop)
    try:
        while not clock.done:
            clock.begin()
            inputs = []
            for _, conn in targets:
                for _ in range(conn.queued_packets):
                    inputs.append(conn.recv_nowait())
            for slot, conn in targets:
                conn.send_nowait(make(slot, clock.tick))
            clock.end(inputs, len(targets), len(targets))
            await asyncio.sleep(clock.sleep_s())
    finally:
        finished.set()
        server.close()
    return clock.result()  # type: ignore[no-any-return]


def tick_client(cfg: Cfg, port: int, stop: Any) -> Result:
    from .. import tick

    return tick.dtls_client(cfg, port, stop)

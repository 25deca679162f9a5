"""Session resumption (RFC 5077 tickets, issue 14): a ``DTLSHost`` server
(tickets on by default) and Godot-style clients (``PacketPeerDTLS``,
``cfg.concurrency`` handshakes in flight, each from a new UDP socket, so
every handshake includes the cookie round). This row's clients first make
one full handshake, then offer its session on every connection; only
resumed handshakes count. The baseline row (``dtlspeer_resume_full``) is
the same server and clients doing full ECDHE-ECDSA handshakes. The server
process's CPU per handshake is reported next to the rate: on this 2-core
machine the client process shares the CPU, so the CPU ratio is the steadier
figure."""

from __future__ import annotations

from typing import Any, Callable

from ..harness import Cfg, Result, server_cpu
from . import dtlspeer_dtls, dtlspeer_host


def resume_server(cfg: Cfg, ready: Callable[[int], None], stop: Any) -> Result:
    return server_cpu(dtlspeer_host.handshake_server, cfg, ready, stop)


def first_session(cfg: Cfg, port: int) -> Any:
    """One full handshake with the server; its session."""
    import time

    from dtlspeer import PacketPeerDTLS

    client = dtlspeer_dtls.Client(port, dtlspeer_dtls._materials(cfg)[1])
    deadline = time.monotonic() + 30
    while client.dtls.get_status() == PacketPeerDTLS.STATUS_HANDSHAKING:
        if time.monotonic() > deadline:
            raise TimeoutError("the first handshake did not finish")
        dtlspeer_dtls.wait_readable([client], 0.02)
        client.dtls.poll()
    session = client.dtls.get_session()
    client.close()
    if session is None:
        raise RuntimeError(f"no session: {client.dtls.get_last_error()}")
    return session


def resume_client(cfg: Cfg, port: int, stop: Any) -> Result:
    return dtlspeer_dtls.handshake_client(cfg, port, stop, session=first_session(cfg, port))

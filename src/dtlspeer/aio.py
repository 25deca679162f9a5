"""asyncio integration on the batch host (ours).

A server::

    async def handler(conn: dtlspeer.aio.Connection) -> None:
        async for packet in conn:            # ends when the client closes
            if len(packet) + 5 <= conn.get_max_packet_size():  # received records can be larger
                await conn.send(b"echo " + packet)

    async with await dtlspeer.aio.serve(handler, "*", 4433, TLSOptions.server(key, cert)) as server:
        await server.serve_forever()

A client::

    async with await dtlspeer.aio.connect("game.example", 4433, TLSOptions.client(ca)) as conn:
        await conn.send(b"hello")
        reply = await conn.recv()

Everything runs on a :class:`~dtlspeer.DTLSHost`: the event loop watches the
host's socket (``loop.add_reader``) and its earliest peer deadline
(``loop.call_at`` from ``DTLSHost.next_timeout()``) and then makes ONE
``DTLSHost.service()`` call, which reads every datagram, runs handshakes and
timers in C and returns the events. Python's cost is per event (a RECEIVE
appends to the connection's queue and wakes its reader), never per datagram
or per idle peer. Sends are encrypted at once and leave together in one
``sendmmsg`` batch at the end of the loop iteration.

Backpressure:

* **Receiving.** All peers share one socket, so the loop cannot stop reading
  for one slow peer without stalling every other one. Each connection has a
  bounded queue (``max_queue`` packets and ``max_queue_bytes`` bytes, each
  packet counted as its size + 64); when it is full the ``overflow`` policy
  applies: ``Overflow.DROP_NEWEST`` (default: the arriving packet is
  dropped, as a full socket buffer would), ``Overflow.DROP_OLDEST`` (the
  oldest queued packet makes room: the freshest game state wins) or
  ``Overflow.CLOSE`` (the connection is closed with a ConnectionClosedError).
  Drops are counted in :attr:`Connection.dropped_packets`.
* **Sending.** ``send_nowait`` encrypts and queues a record in C (the C
  queue is bounded: it is handed to the socket in batches as it grows).
  ``await send()`` additionally flushes and yields to the event loop every
  ``write_limit`` records queued on the host, and waits while the kernel
  refuses datagrams (``EAGAIN``) until the socket is writable again. A
  datagram the kernel refused is lost like any UDP datagram and counted in
  ``DTLSHost.get_stats()["send_dropped"]``; DTLS records are datagrams, there
  is no retransmission of application data.

Clients: each :func:`connect` makes its own host (one UDP socket per
connection, like ``asyncio.open_connection``), closed with the connection.

Logging: a handler's exception is logged on the ``dtlspeer.aio`` logger as
an error with its traceback; a handler ended by its own connection closing
(``ConnectionClosed`` from ``recv``/``send``: the remote side's doing) only
at debug level, so remote peers never control the log volume.

Errors: local misuse raises :mod:`dtlspeer.errors` exceptions (a too large
packet, a wrong type, two concurrent ``recv()`` calls). The remote side's
doing only ever shows as :class:`ConnectionClosed`: ``recv()``/``send()`` on a
closed connection raise :class:`ConnectionClosedOK` (close_notify, or closed
locally) or :class:`ConnectionClosedError` (timeout, TLS error, overflow...),
and :func:`connect` raises :class:`HandshakeError` (or its subclass
:class:`CertificateVerifyError`) when the handshake fails or times out.

Needs an event loop with ``add_reader`` (every selector loop and uvloop; on
Windows use ``asyncio.WindowsSelectorEventLoopPolicy``). Objects belong to the
loop that made them.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import socket
import warnings
import weakref
from collections import deque
from collections.abc import Awaitable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any, Callable, NamedTuple

from . import errors
from ._binding import lib
from .dtls import DTLSSettings, _Status
from .enet import ENetConnection, ENetPacketPeer
from .host import DisconnectReason, DTLSHost, HostEvent, HostEventType, HostPeer
from .packet_peer import BytesLike
from .session import Session, SessionTicketKeys
from .tls_options import PeerCertificate, TLSOptions

__all__ = [
    "CertificateVerifyError",
    "Connection",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "ENetPacket",
    "ENetPeerConnection",
    "ENetServer",
    "HandshakeError",
    "Overflow",
    "Server",
    "connect",
    "serve",
    "serve_enet",
]

logger = logging.getLogger("dtlspeer.aio")

_RECEIVE = HostEventType.RECEIVE
_CONNECT = HostEventType.CONNECT
_DISCONNECT = HostEventType.DISCONNECT
_ADDRESS_CHANGED = HostEventType.ADDRESS_CHANGED
_OK_REASONS = (DisconnectReason.PEER_CLOSED, DisconnectReason.LOCAL)
# Timers fire on whole milliseconds of the host clock: a little late, never early.
_TIMER_SLACK_S = 0.001
DEFAULT_MAX_QUEUE = 1024
# 128 KiB per connection: ~94 full-size records (1392 bytes) of backlog, and
# 512 MiB at max_peers=4096 if every handler stopped reading (16 KiB records
# x 1024 packets allowed ~16 MiB each, ~64 GiB at 4096).
DEFAULT_MAX_QUEUE_BYTES = 128 * 1024
# What a queued packet costs beyond its payload (bytes object header and the
# deque slot), so a flood of tiny packets is bounded in bytes too.
_PACKET_OVERHEAD = 64
DEFAULT_WRITE_LIMIT = 256

Handler = Callable[["Connection"], Awaitable[Any]]
Address = tuple[str, int]


# ---- exceptions -------------------------------------------------------------------------------


class ConnectionClosed(errors.DTLSPeerError, ConnectionError):
    """The connection is closed: raised by ``recv()`` once the queue is empty,
    by ``send()``, and by :func:`connect` for a failed handshake.

    ``reason`` (:class:`~dtlspeer.DisconnectReason`), ``message`` (readable
    text) and ``code`` (Mbed TLS / dtlspeer code, 0 if none) say why.
    """

    def __init__(self, reason: DisconnectReason, message: str, code: int = 0) -> None:
        """Keep the reason; ``str()`` reads ``connection closed (<reason>): <message>``."""
        super().__init__(f"connection closed ({reason.name.lower()}): {message}")
        self.reason = reason
        self.message = message
        self.code = code


class ConnectionClosedOK(ConnectionClosed):
    """Closed normally: the peer sent close_notify, or it was closed locally
    (``close()``, the server closing). ``async for`` ends quietly on it."""


class ConnectionClosedError(ConnectionClosed):
    """Closed by a failure: idle or handshake timeout, TLS error or alert, the
    client reconnecting, receive-queue overflow (``Overflow.CLOSE``)."""


class HandshakeError(ConnectionClosedError):
    """:func:`connect` failed: the handshake timed out (``reason`` is
    HANDSHAKE_TIMEOUT) or failed (HANDSHAKE_FAILED: an alert, a bad PSK...).
    ``status`` is the peer's final ``PacketPeerDTLS.Status``."""

    def __init__(
        self,
        reason: DisconnectReason,
        message: str,
        code: int = 0,
        status: _Status = _Status.STATUS_ERROR,
        verify_flags: int = 0,
    ) -> None:
        """As :class:`ConnectionClosed`, plus the final status and verify flags."""
        super().__init__(reason, message, code)
        self.status = status
        self.verify_flags = verify_flags


class CertificateVerifyError(HandshakeError, errors.CertificateError):
    """:func:`connect` failed because the server's certificate did not verify
    (untrusted, expired, or not valid for the host name: then
    ``hostname_mismatch`` is True and ``status`` is
    STATUS_ERROR_HOSTNAME_MISMATCH). Also a
    :class:`~dtlspeer.errors.CertificateError`."""

    @property
    def hostname_mismatch(self) -> bool:
        """True when the certificate is not valid for the requested name."""
        return self.status == _Status.STATUS_ERROR_HOSTNAME_MISMATCH


def _handshake_error(
    peer: HostPeer, reason: DisconnectReason, message: str, code: int
) -> HandshakeError:
    status = peer.get_status()
    flags = peer.get_verify_flags()
    if status == _Status.STATUS_ERROR_HOSTNAME_MISMATCH or (
        flags and reason == DisconnectReason.HANDSHAKE_FAILED
    ):
        return CertificateVerifyError(reason, message, code, status, flags)
    return HandshakeError(reason, message, code, status, flags)


class Overflow(str, enum.Enum):
    """What a full receive queue (``max_queue`` packets or ``max_queue_bytes``
    bytes) does with a new packet."""

    DROP_NEWEST = "drop_newest"
    """Drop the arriving packet (counted): the default."""
    DROP_OLDEST = "drop_oldest"
    """Drop the oldest queued packet (counted) to make room."""
    CLOSE = "close"
    """Close the connection (close_notify to the peer); ``recv()`` then
    raises ConnectionClosedError once the queued packets are read."""


# ---- the loop driver ------------------------------------------------------------------------



class _Endpoint:
    """Drives one DTLSHost from an event loop and routes its events."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: DTLSHost,
        on_accept: Callable[[HostPeer], None] | None,
        write_limit: int,
    ) -> None:
        """``on_accept`` None: a client's endpoint, which holds its one
        Connection weakly: the application owns it, and one dropped without
        ``close()`` is finalized at once (see ``Connection.__del__``)."""
        self.loop = loop
        self.host = host
        self.on_accept = on_accept
        self.write_limit = write_limit
        self.conns: MutableMapping[HostPeer, Connection] = (
            {} if on_accept is not None else weakref.WeakValueDictionary()
        )
        self.connecting: dict[HostPeer, asyncio.Future[None]] = {}
        self.closed = False
        self.pending = 0  # records queued since the last service/flush
        self._fd = host.fileno()
        self._timer: asyncio.TimerHandle | None = None
        self._soon: asyncio.Handle | None = None
        self._writable: asyncio.Future[None] | None = None
        self._send_dropped = 0
        try:
            loop.add_reader(self._fd, self.service)
        except NotImplementedError:
            raise errors.UnsupportedError(
                "dtlspeer.aio needs an event loop with add_reader(): a selector loop "
                "(on Windows: asyncio.WindowsSelectorEventLoopPolicy()) or uvloop"
            ) from None

    # -- driving -----------------------------------------------------------------

    def service(self) -> None:
        """One native service call (read, handshakes, timers, flush) and the
        dispatch of its events."""
        if self.closed:
            return
        try:
            events = self.host.service(0)
        except errors.DTLSPeerError as exc:  # the socket itself failed: local, fatal
            logger.error("dtlspeer.aio: servicing the host failed, closing it: %s", exc)
            self.close(DisconnectReason.NONE, f"the host failed: {exc}", ok=False)
            return
        if self.pending:
            self.pending = 0
            self._check_send_drops()
        if events:
            self._dispatch(events)
            # The call may have stopped at its event capacity: come back soon.
            self.schedule()
        if not self.closed:
            self._arm_timer()

    def schedule(self) -> None:
        """Run :meth:`service` once at the end of this loop iteration (also
        sends what was queued: all of it in one batch)."""
        if self._soon is None and not self.closed:
            self._soon = self.loop.call_soon(self._run_soon)

    def _run_soon(self) -> None:
        self._soon = None
        self.service()

    def _on_timer(self) -> None:
        self._timer = None
        self.service()

    def _arm_timer(self) -> None:
        delay = self.host.next_timeout()
        timer = self._timer
        if delay is None:
            if timer is not None:
                timer.cancel()
                self._timer = None
            return
        when = self.loop.time() + delay + _TIMER_SLACK_S
        if timer is not None:
            if timer.when() <= when:
                return  # an earlier wake-up is set; it re-arms after its service
            timer.cancel()
        self._timer = self.loop.call_at(when, self._on_timer)

    def _dispatch(self, events: list[HostEvent]) -> None:
        conns = self.conns
        for kind, peer, data, reason, message, code in events:
            if kind == _RECEIVE:
                conn = conns.get(peer)
                if conn is not None:
                    conn._feed(data)
            elif kind == _CONNECT:
                waiter = self.connecting.pop(peer, None)
                if waiter is not None:
                    if not waiter.done():
                        waiter.set_result(None)
                elif self.on_accept is not None:
                    self.on_accept(peer)
                else:
                    peer.disconnect_from_peer()  # not accepting (cannot happen: client-only)
            elif kind == _DISCONNECT:
                waiter = self.connecting.pop(peer, None)
                conn = conns.pop(peer, None)
                if waiter is not None:
                    if not waiter.done():
                        waiter.set_exception(_handshake_error(peer, reason, message, code))
                elif conn is not None:
                    conn._closed_by(reason, message, code, reason in _OK_REASONS)
            elif kind == _ADDRESS_CHANGED:  # a Connection ID peer's NAT rebound
                conn = conns.get(peer)
                if conn is not None:
                    conn._address = peer.get_peer_address()
            else:  # ERROR: a client's handshake failed before it was accepted
                logger.debug("dtlspeer.aio: handshake with %s failed: %s", peer, message)

    # -- sending -----------------------------------------------------------------

    def queued(self, count: int = 1) -> None:
        """Records were queued on the host: send them at the end of this iteration."""
        self.pending += count
        if self._soon is None:
            self.schedule()

    def _check_send_drops(self) -> None:
        stats = self.host.get_stats()
        dropped = stats["send_dropped"]
        if dropped != self._send_dropped:
            self._send_dropped = dropped
            if stats["last_send_error"] == lib.DP_ERR_WOULD_BLOCK:
                self._block()

    def _block(self) -> None:
        """The kernel refused datagrams (EAGAIN): senders wait until writable."""
        if self._writable is None and not self.closed:
            self._writable = self.loop.create_future()
            self.loop.add_writer(self._fd, self._unblock)

    def _unblock(self) -> None:
        waiter = self._writable
        if waiter is None:
            return
        self._writable = None
        if not self.closed:
            self.loop.remove_writer(self._fd)
        if not waiter.done():
            waiter.set_result(None)

    async def drain(self) -> None:
        """Backpressure for ``Connection.send``: at ``write_limit`` queued
        records flush and yield; while the socket is full, wait."""
        if self.pending >= self.write_limit:
            self.pending = 0
            self.host.flush()
            self._check_send_drops()
            await asyncio.sleep(0)
        while self._writable is not None:
            await asyncio.shield(self._writable)

    # -- closing -----------------------------------------------------------------

    def close(self, reason: DisconnectReason, message: str, ok: bool) -> None:
        """Close every connection (close_notify to connected peers) and the socket."""
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self._fd)
        if self._writable is not None:
            self.loop.remove_writer(self._fd)
            self._unblock()
        for handle in (self._timer, self._soon):
            if handle is not None:
                handle.cancel()
        self._timer = self._soon = None
        conns = list(self.conns.values())
        waiters = list(self.connecting.items())
        self.conns.clear()
        self.connecting.clear()
        self.host.close()
        for conn in conns:
            conn._closed_by(reason, message, 0, ok)
        for peer, waiter in waiters:
            if not waiter.done():
                waiter.set_exception(HandshakeError(reason, message, 0, peer.get_status()))


# ---- connections ------------------------------------------------------------------------------


class Connection:
    """One DTLS connection driven by the event loop (from :func:`connect`, or
    given to a :func:`serve` handler).

    ``await send(data)`` / ``send_nowait(data)`` send one datagram-sized
    record; ``await recv()`` and ``async for packet in conn`` receive them in
    arrival order (records are datagrams: they can be lost or reordered,
    never corrupted or merged). ``close()`` sends close_notify;
    ``async with conn`` closes on exit. See the module notes for the
    backpressure policy and the exceptions.
    """

    def __init__(
        self,
        endpoint: _Endpoint,
        peer: HostPeer,
        limits: _QueueLimits,
        owns_endpoint: bool,
    ) -> None:
        """Made by :func:`connect` and :class:`Server` only."""
        self._endpoint = endpoint
        self._peer = peer
        self._max_queue = limits.packets
        self._max_queue_bytes = limits.size
        self._overflow = limits.overflow
        self._queued_bytes = 0
        self._owns_endpoint = owns_endpoint
        self._queue: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed: tuple[DisconnectReason, str, int, bool] | None = None
        self._closed_future: asyncio.Future[None] = endpoint.loop.create_future()
        self._address = peer.get_peer_address()
        self._dropped = 0

    # -- events from the endpoint ---------------------------------------------------

    def _feed(self, data: bytes) -> None:
        queue = self._queue
        cost = len(data) + _PACKET_OVERHEAD
        if len(queue) >= self._max_queue or self._queued_bytes + cost > self._max_queue_bytes:
            if self._overflow is Overflow.CLOSE:
                self._dropped += 1
                self._close_overflow()
                return
            if self._overflow is Overflow.DROP_NEWEST or cost > self._max_queue_bytes:
                self._dropped += 1  # (a packet larger than the whole queue never fits)
                return
            # DROP_OLDEST: the oldest packets make room, each one counted.
            while len(queue) >= self._max_queue or (
                self._queued_bytes + cost > self._max_queue_bytes
            ):
                self._queued_bytes -= len(queue.popleft()) + _PACKET_OVERHEAD
                self._dropped += 1
        queue.append(data)
        self._queued_bytes += cost
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _pop(self) -> bytes:
        packet = self._queue.popleft()
        self._queued_bytes -= len(packet) + _PACKET_OVERHEAD
        return packet

    def _close_overflow(self) -> None:
        if self._closed is not None:
            return
        self._endpoint.conns.pop(self._peer, None)
        self._peer.disconnect_from_peer()
        self._endpoint.schedule()
        self._closed_by(
            DisconnectReason.LOCAL,
            f"receive queue overflow ({len(self._queue)} packets, {self._queued_bytes} bytes "
            f"not read; limits {self._max_queue} packets, {self._max_queue_bytes} bytes)",
            0,
            False,
        )

    def _closed_by(self, reason: DisconnectReason, message: str, code: int, ok: bool) -> None:
        if self._closed is not None:
            return
        self._closed = (reason, message, code, ok)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if not self._closed_future.done():
            self._closed_future.set_result(None)
        if self._owns_endpoint:
            self._endpoint.close(reason, message, ok)

    def _closed_exception(self) -> ConnectionClosed:
        assert self._closed is not None
        reason, message, code, ok = self._closed
        cls = ConnectionClosedOK if ok else ConnectionClosedError
        return cls(reason, message, code)

    # -- API -----------------------------------------------------------------------

    @property
    def peer(self) -> HostPeer:
        """The underlying :class:`~dtlspeer.HostPeer` (ciphersuite, verify
        flags, counters: ``get_stats()``)."""
        return self._peer

    @property
    def resumed(self) -> bool:
        """True if the handshake resumed a session (ours; RFC 5077)."""
        return self._peer.is_session_resumed()

    @property
    def peer_certificate(self) -> PeerCertificate | None:
        """Server connections with ``TLSOptions.server(client_auth=...)``: the
        client's verified certificate, else None."""
        return self._peer.get_peer_certificate()

    def get_session(self) -> Session | None:
        """Client connections: the session to pass to ``connect(...,
        session=...)`` next time (also after close); None if there is none.
        Secret material: store it like a key."""
        return self._peer.get_session()

    @property
    def peer_address(self) -> Address:
        """(IP, port) of the remote side; follows a Connection ID client
        whose NAT rebound (``HostEventType.ADDRESS_CHANGED``)."""
        return self._address

    @property
    def local_port(self) -> int:
        """The local UDP port (0 once the connection's own host is closed)."""
        host = self._endpoint.host
        return host.get_local_port() if host.is_open() else 0

    @property
    def closed(self) -> bool:
        """True once the connection is closed (by either side or a failure);
        queued packets may still be read with ``recv()``."""
        return self._closed is not None

    @property
    def close_reason(self) -> DisconnectReason | None:
        """Why it closed (None while open)."""
        return None if self._closed is None else self._closed[0]

    @property
    def close_message(self) -> str:
        """Why it closed, in words ("" while open)."""
        return "" if self._closed is None else self._closed[1]

    @property
    def dropped_packets(self) -> int:
        """Packets dropped by the ``overflow`` policy of the full receive queue
        (``max_queue`` packets or ``max_queue_bytes`` bytes)."""
        return self._dropped

    @property
    def queued_packets(self) -> int:
        """Packets received and not read yet."""
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        """What the unread packets count against ``max_queue_bytes`` (their
        sizes + 64 bytes each)."""
        return self._queued_bytes

    def get_max_packet_size(self) -> int:
        """Largest payload ``send`` accepts now (0 once closed)."""
        return 0 if self._closed is not None else self._peer.get_max_packet_size()

    def send_nowait(self, data: BytesLike) -> None:
        """Queue ``data`` as one record; it leaves at the end of this loop
        iteration with every other send (one ``sendmmsg``). Empty data sends
        nothing. Raises ConnectionClosed once closed; InvalidArgumentError
        above :meth:`get_max_packet_size`; ArgumentTypeError for non-bytes."""
        if self._closed is not None:
            raise self._closed_exception()
        self._peer.put_packet(data)
        self._endpoint.queued()

    async def send(self, data: BytesLike) -> None:
        """:meth:`send_nowait`, then wait if the socket is backed up (see the
        module notes on backpressure)."""
        self.send_nowait(data)
        endpoint = self._endpoint
        if endpoint.pending >= endpoint.write_limit or endpoint._writable is not None:
            await endpoint.drain()

    def recv_nowait(self) -> bytes:
        """The next received packet; WouldBlockError if none is queued,
        ConnectionClosed if none is queued and the connection is closed."""
        if self._queue:
            return self._pop()
        if self._closed is not None:
            raise self._closed_exception()
        raise errors.WouldBlockError("no packet received yet")

    async def recv(self) -> bytes:
        """Wait for the next packet. Raises ConnectionClosedOK /
        ConnectionClosedError once the connection is closed and every queued
        packet was read; StateError if another coroutine is already waiting.
        Cancelling it loses nothing: the packet stays queued."""
        while True:
            if self._queue:
                return self._pop()
            if self._closed is not None:
                raise self._closed_exception()
            if self._waiter is not None:
                raise errors.StateError("another coroutine is already waiting in recv()")
            waiter = self._endpoint.loop.create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None

    def __aiter__(self) -> Connection:
        return self

    async def __anext__(self) -> bytes:
        """The next packet; the iteration ends when the connection closes
        normally and raises ConnectionClosedError when it failed."""
        try:
            return await self.recv()
        except ConnectionClosedOK:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Send close_notify and close the connection now (queued received
        packets are dropped; a client's own socket is closed too).
        Idempotent."""
        if self._closed is not None:
            return
        self._queue.clear()
        self._queued_bytes = 0
        endpoint = self._endpoint
        if not self._owns_endpoint and not endpoint.closed:
            endpoint.conns.pop(self._peer, None)
            self._peer.disconnect_from_peer()
            endpoint.schedule()
        self._closed_by(DisconnectReason.LOCAL, "closed locally", 0, True)

    async def wait_closed(self) -> None:
        """Wait until the connection is closed (by either side)."""
        await asyncio.shield(self._closed_future)

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        # A client connection owns its socket: dropped without close() it
        # would keep its fd and loop reader for ever. Warn as asyncio's
        # transports do, then close it (close_notify included) now.
        if getattr(self, "_closed", True) is None and self._owns_endpoint:
            _warn(f"unclosed {self!r}", ResourceWarning, source=self)
            try:
                self.close()
            except Exception:
                self._endpoint.host.close()

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        ip, port = self._address
        state = "open" if self._closed is None else f"closed:{self._closed[0].name}"
        return f"<dtlspeer.aio.Connection {ip}:{port} {state}>"


# ---- server -----------------------------------------------------------------------------------


class Server:
    """A DTLS server on one UDP socket, returned by :func:`serve`.

    Each accepted connection runs ``handler(conn)`` as its own task; when the
    handler returns or raises (logged on the ``dtlspeer.aio`` logger, the
    server goes on) the connection is closed. ``close()`` closes every
    connection (close_notify) and the socket and cancels the handlers;
    ``wait_closed()`` waits for the handlers to finish. ``async with`` does
    both on exit.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: DTLSHost,
        handler: Handler,
        limits: _QueueLimits,
        write_limit: int,
    ) -> None:
        """Made by :func:`serve`."""
        self._loop = loop
        self._handler = handler
        self._limits = limits
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed_future: asyncio.Future[None] = loop.create_future()
        self._port = host.get_local_port()
        self._endpoint = _Endpoint(loop, host, self._accept, write_limit)

    def _accept(self, peer: HostPeer) -> None:
        conn = Connection(self._endpoint, peer, self._limits, False)
        self._endpoint.conns[peer] = conn
        task = self._loop.create_task(self._run(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, conn: Connection) -> None:
        try:
            await self._handler(conn)
        except asyncio.CancelledError:
            pass  # the server closed
        except ConnectionClosed as exc:
            if conn.closed:
                # The handler let its own connection's closing propagate
                # (recv/send after the peer closed, timed out, failed): the
                # remote side's doing, and remote peers must not control
                # the server's log volume.
                logger.debug("dtlspeer.aio: %s:%d %s", *conn.peer_address, exc)
            else:
                logger.exception(
                    "dtlspeer.aio: connection handler failed (%s:%d)", *conn.peer_address)
        except Exception:
            logger.exception("dtlspeer.aio: connection handler failed (%s:%d)", *conn.peer_address)
        else:
            if conn.closed:
                logger.debug("dtlspeer.aio: %s:%d closed: %s", *conn.peer_address,
                             conn.close_message)
        finally:
            conn.close()

    @property
    def host(self) -> DTLSHost:
        """The underlying :class:`~dtlspeer.DTLSHost` (``get_stats()``...)."""
        return self._endpoint.host

    @property
    def port(self) -> int:
        """The UDP port the server is bound to."""
        return self._port

    def get_local_port(self) -> int:
        """The UDP port the server is bound to (Godot-style name)."""
        return self._port

    @property
    def connections(self) -> list[Connection]:
        """The open connections."""
        return list(self._endpoint.conns.values())

    def broadcast(
        self, data: BytesLike, exclude: Connection | Iterable[Connection] | None = None
    ) -> int:
        """Queue ``data`` as one record to every open connection except
        ``exclude`` (one connection or several), encrypted in C in one call
        (``DTLSHost.broadcast``); it leaves with the other sends of this loop
        iteration. Returns how many connections it was queued for.
        InvalidArgumentError (nothing queued) if it is larger than some
        connection's maximum packet size; StateError once the server closed;
        ForeignPeerError if ``exclude`` holds a connection of another server
        or a client connection."""
        endpoint = self._endpoint
        if endpoint.closed:
            raise errors.StateError("the server is closed")
        excluded = [exclude] if isinstance(exclude, Connection) else exclude or []
        peers: list[HostPeer] = []
        for conn in excluded:
            if not isinstance(conn, Connection):
                raise errors.ArgumentTypeError(
                    f"exclude must hold Connection objects, not {type(conn).__name__}"
                )
            if conn._endpoint is not endpoint:
                raise errors.ForeignPeerError(f"{conn!r} is not a connection of this server")
            peers.append(conn._peer)
        count = endpoint.host.broadcast(data, peers)
        if count:
            endpoint.queued(count)
        return count

    def is_serving(self) -> bool:
        """True until :meth:`close`."""
        return not self._endpoint.closed

    def close(self) -> None:
        """Stop serving: close_notify to every connected peer, close the
        socket, close every connection (their ``recv()`` raise
        ConnectionClosedOK) and cancel the handler tasks. Idempotent."""
        if self._endpoint.closed:
            return
        self._endpoint.close(DisconnectReason.LOCAL, "the server closed", True)
        for task in self._tasks:
            task.cancel()
        if not self._closed_future.done():
            self._closed_future.set_result(None)

    async def wait_closed(self) -> None:
        """Wait until :meth:`close` was called and every handler task ended."""
        await asyncio.shield(self._closed_future)
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    async def serve_forever(self) -> None:
        """Wait until the server is closed; cancelling it closes the server."""
        try:
            await asyncio.shield(self._closed_future)
        except asyncio.CancelledError:
            self.close()
            await self.wait_closed()
            raise

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()

    def __repr__(self) -> str:
        state = "serving" if self.is_serving() else "closed"
        count = len(self._endpoint.conns)
        return f"<dtlspeer.aio.Server port={self._port} {state} connections={count}>"


# ---- entry points -----------------------------------------------------------------------------


class _QueueLimits(NamedTuple):
    """A connection's receive-queue bounds and overflow policy."""

    packets: int
    size: int
    overflow: Overflow


def _check_queue(
    max_queue: int, max_queue_bytes: int, overflow: Overflow | str, write_limit: int
) -> _QueueLimits:
    for name, value in (
        ("max_queue", max_queue),
        ("max_queue_bytes", max_queue_bytes),
        ("write_limit", write_limit),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise errors.ArgumentTypeError(f"{name} must be an int, not {type(value).__name__}")
        if value < 1:
            raise errors.InvalidArgumentError(f"{name} must be >= 1, not {value}")
    try:
        policy = Overflow(overflow)
    except ValueError:
        choices = ", ".join(repr(o.value) for o in Overflow)
        raise errors.InvalidArgumentError(
            f"overflow must be one of {choices}, not {overflow!r}"
        ) from None
    return _QueueLimits(max_queue, max_queue_bytes, policy)


async def serve(
    handler: Handler,
    host: str = "*",
    port: int = 0,
    options: TLSOptions | None = None,
    *,
    psk: Mapping[bytes, bytes] | None = None,
    settings: DTLSSettings | None = None,
    ciphersuites: Sequence[str] | None = None,
    max_peers: int = 4096,
    cookie_secret: bytes | None = None,
    ticket_keys: SessionTicketKeys | bool | None = None,
    max_queue: int = DEFAULT_MAX_QUEUE,
    max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
    overflow: Overflow | str = Overflow.DROP_NEWEST,
    write_limit: int = DEFAULT_WRITE_LIMIT,
) -> Server:
    """Start a DTLS server on ``host``:``port`` (``"*"``: every address,
    IPv4 and IPv6; port 0: any free one, see :attr:`Server.port`) and return
    it, serving at once.

    ``options`` (``TLSOptions.server(key, cert)``) and/or ``psk`` (identity
    -> key) are the credentials; ``settings``, ``ciphersuites``,
    ``max_peers``, ``cookie_secret`` and ``ticket_keys`` (session tickets:
    on by default, shareable, ``False`` = off) pass through to
    :class:`~dtlspeer.DTLSHost`. ``max_queue`` (packets) /
    ``max_queue_bytes`` / ``overflow`` set each connection's receive
    queue; ``write_limit`` the send backpressure (see the module notes).
    ``handler(conn)`` runs as a task per connection.
    """
    loop = asyncio.get_running_loop()
    if not callable(handler):
        raise errors.ArgumentTypeError("handler must be an async function of one Connection")
    limits = _check_queue(max_queue, max_queue_bytes, overflow, write_limit)
    if options is None and psk is None:
        raise errors.InvalidArgumentError("serve() needs options (TLSOptions.server) or psk")
    dtls_host = DTLSHost(
        host,
        port,
        server_options=options,
        server_psk=psk,
        settings=settings,
        ciphersuites=ciphersuites,
        max_peers=max_peers,
        cookie_secret=cookie_secret,
        ticket_keys=ticket_keys,
    )
    try:
        return Server(loop, dtls_host, handler, limits, write_limit)
    except BaseException:
        dtls_host.close()
        raise


def _ip_literal(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


async def _resolve(loop: asyncio.AbstractEventLoop, host: str, port: int) -> tuple[str, int]:
    """(IP literal, family) for ``host``, resolving names without blocking the loop."""
    literal = _ip_literal(host)
    if literal is not None:
        return host, socket.AF_INET if literal.version == 4 else socket.AF_INET6
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise errors.ResolveError(exc.errno, f"cannot resolve {host!r}: {exc.strerror}") from exc
    except UnicodeError as exc:
        raise errors.InvalidArgumentError(f"invalid host name {host!r}") from exc
    if not infos:
        raise errors.ResolveError(0, f"cannot resolve {host!r}")
    family, _, _, _, sockaddr = infos[0]
    return str(sockaddr[0]), int(family)


async def connect(
    host: str,
    port: int,
    options: TLSOptions | None = None,
    *,
    hostname: str | None = None,
    psk: tuple[bytes, bytes] | None = None,
    settings: DTLSSettings | None = None,
    ciphersuites: Sequence[str] | None = None,
    local_addr: Address | None = None,
    session: Session | bytes | None = None,
    max_queue: int = DEFAULT_MAX_QUEUE,
    max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
    overflow: Overflow | str = Overflow.DROP_NEWEST,
    write_limit: int = DEFAULT_WRITE_LIMIT,
) -> Connection:
    """Connect to the DTLS server at ``host``:``port`` and return the
    connection once the handshake finished.

    ``options`` (``TLSOptions.client(ca)``; default: the system CAs, or no
    certificate check with ``psk``) and ``psk`` ((identity, key)) are the
    client credentials. The server certificate must be valid for
    ``hostname`` (default: ``host``), unless ``TLSOptions.client_unsafe``.
    Names are resolved without blocking the loop. The connection gets its
    own UDP socket (bound to ``local_addr``, default any address of the
    server's family), closed with it. ``settings`` sets the handshake
    timers: the handshake fails after ``handshake_deadline_ms`` or when the
    retransmissions run out (wrap it in ``asyncio.wait_for`` for a shorter
    bound; cancelling it frees everything). ``max_queue``,
    ``max_queue_bytes``, ``overflow`` and ``write_limit`` are as for
    :func:`serve`. ``session`` (from an earlier connection's
    :meth:`Connection.get_session`) is offered for resumption (RFC 5077);
    :attr:`Connection.resumed` says whether the server took it (otherwise
    a full handshake ran). Close the connection when done: one dropped without
    ``close()`` is closed when garbage-collected, with a ResourceWarning.

    Raises :class:`HandshakeError` (reason HANDSHAKE_TIMEOUT or
    HANDSHAKE_FAILED; an ICMP port unreachable during the handshake fails at
    once, "destination unreachable": the connection's socket is connected to
    the server), :class:`CertificateVerifyError` for a certificate the
    client rejects (``hostname_mismatch``), ResolveError for an unknown name.
    """
    loop = asyncio.get_running_loop()
    if not isinstance(host, str):
        raise errors.ArgumentTypeError(f"host must be str, not {type(host).__name__}")
    if hostname is not None and not isinstance(hostname, str):
        raise errors.ArgumentTypeError("hostname must be str or None")
    if isinstance(port, bool) or not isinstance(port, int):
        raise errors.ArgumentTypeError(f"port must be an int, not {type(port).__name__}")
    if not 1 <= port <= 65535:
        raise errors.InvalidArgumentError(f"port must be in 1..65535, not {port}")
    limits = _check_queue(max_queue, max_queue_bytes, overflow, write_limit)
    ip, family = await _resolve(loop, host, port)
    if hostname is None:
        hostname = host.split("%", 1)[0] if _ip_literal(host) is not None else host
    if local_addr is None:
        local_addr = ("0.0.0.0", 0) if family == socket.AF_INET else ("::", 0)
    dtls_host = DTLSHost(
        local_addr[0],
        local_addr[1],
        client_options=options,
        client_psk=psk,
        settings=settings,
        ciphersuites=ciphersuites,
        max_peers=1,
        max_events=128,
        payload_buffer_size=64 * 1024,  # what does not fit waits in C for the next call
    )
    endpoint: _Endpoint | None = None
    try:
        endpoint = _Endpoint(loop, dtls_host, None, write_limit)
        peer = dtls_host.connect(ip, port, hostname=hostname, session=session)
        conn = Connection(endpoint, peer, limits, True)
        waiter: asyncio.Future[None] = loop.create_future()
        endpoint.conns[peer] = conn  # records right after CONNECT land in its queue
        endpoint.connecting[peer] = waiter
        endpoint.service()  # sends the ClientHello, arms the retransmission timer
        await waiter
    except BaseException:
        if endpoint is not None:
            endpoint.close(DisconnectReason.LOCAL, "connect() was abandoned", True)
        else:
            dtls_host.close()
        raise
    return conn


# ---- ENet servers ------------------------------------------------------------------------------

ENetHandler = Callable[["ENetPeerConnection"], Awaitable[Any]]
DEFAULT_ENET_TICK_S = 0.01


class ENetPacket(NamedTuple):
    """One received ENet packet: its channel, bytes and ENet flags."""

    channel: int
    data: bytes
    flags: int


class ENetPeerConnection:
    """One ENet peer of an :class:`ENetServer`, for its handler task:
    ``async for packet in conn`` / ``await conn.recv()`` (:class:`ENetPacket`),
    ``conn.send(data, channel=0, flags=FLAG_RELIABLE)``. Ends when the peer
    disconnects (``ConnectionClosedOK``, also for an ENet timeout: ENet does
    not tell them apart) or the server closes. The receive queue is bounded
    like :class:`Connection`'s (``max_queue`` packets, the newest dropped and
    counted)."""

    def __init__(self, server: ENetServer, peer: ENetPacketPeer, data: int) -> None:
        self._server = server
        self.peer = peer
        self.connect_data = data
        self._queue: deque[ENetPacket] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._disconnect_data = 0
        self.dropped_packets = 0
        self._done: asyncio.Future[None] = server._loop.create_future()

    @property
    def peer_address(self) -> Address:
        """(IP, port) of the remote ENet peer."""
        return (self.peer.get_remote_address(), self.peer.get_remote_port())

    @property
    def closed(self) -> bool:
        """True once the ENet peer disconnected (either side) or timed out;
        queued packets may still be read with ``recv()``."""
        return self._closed

    @property
    def disconnect_data(self) -> int:
        """The 32-bit data of the peer's DISCONNECT (0 if none)."""
        return self._disconnect_data

    def _feed(self, packet: ENetPacket) -> None:
        if len(self._queue) >= self._server._max_queue:
            self.dropped_packets += 1
            return
        self._queue.append(packet)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _end(self, data: int) -> None:
        if not self._closed:
            self._closed = True
            self._disconnect_data = data
            self._wake()
            if not self._done.done():
                self._done.set_result(None)

    def send(self, data: BytesLike, channel: int = 0,
             flags: int = ENetPacketPeer.FLAG_RELIABLE) -> None:
        """Queue a packet; it leaves with the server's next service (at the
        end of this loop iteration)."""
        if self._closed:
            raise ConnectionClosedOK(DisconnectReason.PEER_CLOSED, "the ENet peer disconnected")
        self.peer.send(channel, bytes(data), flags)
        self._server._schedule()

    async def recv(self) -> ENetPacket:
        """Wait for the next :class:`ENetPacket`. Raises ConnectionClosedOK
        once the peer disconnected and every queued packet was read;
        StateError if another coroutine is already waiting."""
        while not self._queue:
            if self._closed:
                raise ConnectionClosedOK(DisconnectReason.PEER_CLOSED, "the ENet peer disconnected")
            if self._waiter is not None:
                raise errors.StateError("another recv() is already waiting on this peer")
            self._waiter = self._server._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._queue.popleft()

    def __aiter__(self) -> ENetPeerConnection:
        return self

    async def __anext__(self) -> ENetPacket:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    def close(self, data: int = 0) -> None:
        """Graceful ENet disconnect with ``data``; the handler's ``recv`` ends
        once the peer acknowledged it."""
        if not self._closed and self.peer.is_active():
            self.peer.peer_disconnect(data)
            self._server._schedule()

    async def wait_closed(self) -> None:
        """Wait until the peer disconnected and its handler ended."""
        await asyncio.shield(self._done)


class ENetServer:
    """What :func:`serve_enet` returns: the :class:`~dtlspeer.enet.ENetConnection`
    (``host``) driven by the loop, one handler task per connected peer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, host: ENetConnection,
                 handler: ENetHandler, tick: float, max_queue: int) -> None:
        self._loop = loop
        self.host = host
        self._handler = handler
        self._tick = tick
        self._max_queue = max_queue
        self._conns: dict[ENetPacketPeer, ENetPeerConnection] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._soon: asyncio.Handle | None = None
        self._closed_future: asyncio.Future[None] = loop.create_future()
        self._fd = host.fileno()
        loop.add_reader(self._fd, self._service)
        self._timer = loop.call_later(tick, self._on_tick)

    @property
    def port(self) -> int:
        """The UDP port the ENet host is bound to."""
        return self.host.get_local_port()

    def _on_tick(self) -> None:
        self._service()
        if not self._closed:
            self._timer = self._loop.call_later(self._tick, self._on_tick)

    def _schedule(self) -> None:
        if self._soon is None and not self._closed:
            self._soon = self._loop.call_soon(self._service)

    def _service(self) -> None:
        self._soon = None
        if self._closed:
            return
        for _ in range(64):  # one native call each; stop when quiet
            events = self.host.service_batch(0)
            for ev in events:
                self._dispatch(ev)
            if not events:
                break

    def _dispatch(self, ev: Any) -> None:
        if ev.type == ENetConnection.EventType.EVENT_RECEIVE:
            conn = self._conns.get(ev.peer)
            if conn is not None:
                conn._feed(ENetPacket(ev.channel, ev.packet, ev.flags))
        elif ev.type == ENetConnection.EventType.EVENT_CONNECT:
            conn = ENetPeerConnection(self, ev.peer, ev.data)
            self._conns[ev.peer] = conn
            task = self._loop.create_task(self._run(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif ev.type == ENetConnection.EventType.EVENT_DISCONNECT:
            ended = self._conns.pop(ev.peer, None)
            if ended is not None:
                ended._end(ev.data)

    async def _run(self, conn: ENetPeerConnection) -> None:
        try:
            await self._handler(conn)
        except ConnectionClosed:
            logger.debug("ENet handler of %s ended by its peer", conn.peer_address)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("ENet handler of %s failed", conn.peer_address)
            conn.close()

    def broadcast(self, data: BytesLike, channel: int = 0,
                  flags: int = ENetPacketPeer.FLAG_RELIABLE) -> None:
        """Queue a packet to every connected peer (ENet broadcast)."""
        self.host.broadcast(channel, bytes(data), flags)
        self._schedule()

    def close(self) -> None:
        """Stop serving: every peer is disconnected at once (ENet
        disconnect_now; DTLS peers also get close_notify), handlers cancelled."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        self._timer.cancel()
        for conn in list(self._conns.values()):
            if conn.peer.is_active():
                try:
                    conn.peer.peer_disconnect_now(0)
                except errors.StateError:
                    pass
            conn._end(0)
        self._conns.clear()
        self.host.destroy()
        for task in self._tasks:
            task.cancel()
        if not self._closed_future.done():
            self._closed_future.set_result(None)

    async def wait_closed(self) -> None:
        """Wait until :meth:`close` was called and every handler task ended."""
        await self._closed_future
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def serve_forever(self) -> None:
        """Wait until the server is closed."""
        await self._closed_future

    async def __aenter__(self) -> ENetServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()


async def serve_enet(
    handler: ENetHandler,
    host: str = "*",
    port: int = 0,
    options: TLSOptions | None = None,
    *,
    max_peers: int = 32,
    max_channels: int = 0,
    tick: float = DEFAULT_ENET_TICK_S,
    max_queue: int = DEFAULT_MAX_QUEUE,
    settings: DTLSSettings | None = None,
) -> ENetServer:
    """Start an ENet server on ``host``:``port`` (ENet inside DTLS when
    ``options`` = ``TLSOptions.server(key, cert)`` is given, as Godot 4's
    ``dtls_server_setup``) and return it, serving at once. ``handler(conn)``
    runs as a task per connected peer (:class:`ENetPeerConnection`).

    The loop runs ONE ``ENetConnection.service`` call whenever the socket is
    readable, after sends, and every ``tick`` seconds (ENet's retransmission,
    ping and timeout timers, and DTLS handshake timers, live in C and are not
    exposed as a deadline: 10 ms by default)."""
    loop = asyncio.get_running_loop()
    if not callable(handler):
        raise errors.ArgumentTypeError("handler must be an async function of one connection")
    if not (isinstance(tick, (int, float)) and 0.001 <= tick <= 1.0):
        raise errors.InvalidArgumentError("tick must be in 0.001 .. 1.0 seconds")
    if not (isinstance(max_queue, int) and max_queue >= 1):
        raise errors.InvalidArgumentError("max_queue must be a positive int")
    enet_host = ENetConnection()
    enet_host.create_host_bound(host, port, max_peers, max_channels)
    try:
        if options is not None:
            enet_host.dtls_server_setup(options, settings=settings)
        return ENetServer(loop, enet_host, handler, float(tick), max_queue)
    except BaseException:
        enet_host.destroy()
        raise

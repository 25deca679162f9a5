"""PacketPeerUDP and UDPServer: Godot 4's UDP classes over a C I/O driver.

Python creates each socket (``socket.socket``, non-blocking) and keeps it;
every datagram syscall, the receive queues and the server's routing by
source address happen in C (``src/native/dp_endpoint.c``).

Threads: use each object from one thread at a time (the native calls
release the GIL, so other threads keep running meanwhile). A UDPServer and
the peers it hands out share one native endpoint, which has its own lock:
they may be used from different threads (the server polling on one, each
peer read on another). ``close()``/``stop()`` from another thread is always
safe and wakes a ``wait()`` blocked there.
"""

from __future__ import annotations

import errno
import ipaddress
import math
import socket
import threading
import time
import weakref
from typing import Any, Optional, Union

from ._binding import check, ffi, lib, monotonic_ms
from .errors import (
    AlreadyInUseError,
    ArgumentTypeError,
    DTLSPeerError,
    GodotError,
    InvalidArgumentError,
    ResolveError,
    SocketError,
    StateError,
    UnsupportedError,
    WouldBlockError,
)
from .packet_peer import BytesLike, PacketPeer

__all__ = ["PacketPeerUDP", "UDPServer"]

_CLIENT = lib.DP_ENDPOINT_CLIENT
_SERVER = lib.DP_ENDPOINT_SERVER
_MAX_DATAGRAM = lib.DP_MAX_DATAGRAM
_WOULD_BLOCK = lib.DP_ERR_WOULD_BLOCK
_CLOSED = lib.DP_ERR_CLOSED
_EINTR_CODE = lib.DP_ERR_ERRNO_BASE - 4  # EINTR is 4 on every platform we build for
_V4_PREFIX = b"\x00" * 10 + b"\xff\xff"
_DEFAULT_RECV_BUF = 65536
_MAX_RECV_BUF = 1 << 30

_STAT_FIELDS = (
    "packets_in",
    "bytes_in",
    "packets_out",
    "bytes_out",
    "drop_queue_full",
    "drop_pending_full",
    "drop_filtered",
    "drop_truncated",
    "drop_no_memory",
    "pending_created",
    "pending_expired",
    "recv_errors",
    # Once a DTLSServer took a connection from the UDPServer (its cookie gate
    # runs in C before pending peers exist):
    "hvr_sent",
    "gate_dropped",
    "drop_pending_per_address",
    "pending_evicted",
    "successors",
)

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


# The clock pending-peer expiry runs on: the library's one clock (tests may
# replace it).
_monotonic_ms = monotonic_ms


_scratch = threading.local()

# Hot-path natives bound once (a module global is cheaper than ``lib.name``).
_ep_wait = lib.dp_endpoint_wait
_ep_recv = lib.dp_endpoint_recv
_ep_send = lib.dp_endpoint_send
_NULL = ffi.NULL
_unpack = ffi.unpack
_MAX_WAIT_MS = 2**31 - 1


def _scratch_buffer() -> Any:
    """A per-thread 64 KiB receive buffer: get_packet copies out of it, so it
    is never shared across a GIL-releasing native call of another thread."""
    buf = getattr(_scratch, "buf", None)
    if buf is None:
        buf = _scratch.buf = ffi.new("char[]", _MAX_DATAGRAM)
    return buf


# ---- argument checking and addresses ---------------------------------------


def _check_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{name} must be an int, not {type(value).__name__}")
    return value


def _check_port(port: Any, lowest: int) -> int:
    number = _check_int(port, "port")
    if not lowest <= number <= 65535:
        raise InvalidArgumentError(f"port must be in {lowest}..65535, not {number}")
    return number


def _check_str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ArgumentTypeError(f"{name} must be a str, not {type(value).__name__}")
    return value


def _literal_ip(text: str) -> Optional[tuple[IPAddress, int]]:
    """(address, IPv6 scope id) of a literal IP, or None if ``text`` is not one."""
    scope = 0
    if "%" in text:
        text, _, zone = text.partition("%")
        try:
            scope = int(zone) if zone.isdigit() else socket.if_nametoindex(zone)
        except OSError:
            return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv4Address) and scope:
        return None
    return ip, scope


def _resolve(host: str, port: int, family: int) -> tuple[IPAddress, int]:
    """Resolve ``host`` (literal or name) to an address usable on a socket of
    ``family`` (AF_UNSPEC: not open yet). Names go through getaddrinfo."""
    host = _check_str(host, "host")
    if not host:
        raise InvalidArgumentError("host must not be empty")
    literal = _literal_ip(host)
    if literal is None:
        if "%" in host or ":" in host:
            raise InvalidArgumentError(f"invalid IP address {host!r}")
        want = socket.AF_INET if family == socket.AF_INET else socket.AF_UNSPEC
        try:
            infos = socket.getaddrinfo(host, port, want, socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise ResolveError(exc.errno, f"cannot resolve {host!r}: {exc.strerror}") from exc
        except UnicodeError as exc:
            raise InvalidArgumentError(f"invalid host name {host!r}") from exc
        info = infos[0]
        literal = _literal_ip(str(info[4][0]))
        if literal is None:  # pragma: no cover - getaddrinfo returns literals
            raise ResolveError(0, f"cannot resolve {host!r}")
    ip, scope = literal
    if family == socket.AF_INET and ip.version == 6:
        if ip.ipv4_mapped is None:
            raise InvalidArgumentError(f"{host!r} is IPv6 but the socket is IPv4")
        ip = ip.ipv4_mapped
    return ip, scope


def _fill_addr(out: Any, ip: IPAddress, port: int, scope: int = 0) -> Any:
    out.ip = (_V4_PREFIX + ip.packed) if ip.version == 4 else ip.packed
    out.port = port
    out.scope_id = scope
    return out


def _addr_text(addr: Any) -> str:
    raw = bytes(ffi.buffer(addr.ip, 16))
    if raw[:12] == _V4_PREFIX:
        return socket.inet_ntop(socket.AF_INET, raw[12:])
    return socket.inet_ntop(socket.AF_INET6, raw)


def _stats_dict(stats: Any) -> dict[str, int]:
    return {name: int(getattr(stats, name)) for name in _STAT_FIELDS}


def _open_socket(bind_address: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound, non-blocking UDP socket. ``"*"``: IPv6 dual-stack, falling
    back to IPv4 where IPv6 is unavailable (as Godot). Never SO_REUSEADDR:
    on Linux any local user may then bind the same port (if they set it
    too) and the newest socket receives the datagrams. ``reuse_port``:
    SO_REUSEPORT, for worker processes sharing a port (Linux admits only
    sockets of the same effective user into the group)."""
    if reuse_port and not hasattr(socket, "SO_REUSEPORT"):
        raise UnsupportedError("reuse_port: this platform has no SO_REUSEPORT")
    bind_address = _check_str(bind_address, "bind_address")
    port = _check_port(port, 0)
    if bind_address == "*":
        candidates = [(socket.AF_INET6, "::", False), (socket.AF_INET, "0.0.0.0", None)]
    else:
        literal = _literal_ip(bind_address)
        if literal is None:
            raise InvalidArgumentError(
                f"bind_address must be '*' or a literal IP address, not {bind_address!r}"
            )
        ip, scope = literal
        if ip.version == 4:
            candidates = [(socket.AF_INET, str(ip), None)]
        else:
            candidates = [(socket.AF_INET6, str(ip) + (f"%{scope}" if scope else ""), True)]
    last: Optional[OSError] = None
    for family, host, v6only in candidates:
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as exc:
            last = exc
            continue
        try:
            if v6only is not None:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setblocking(False)
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            if bind_address == "*" and family == socket.AF_INET6 and exc.errno != errno.EADDRINUSE:
                last = exc
                continue  # no IPv6 here: fall back to IPv4
            failure = SocketError(exc.errno, f"cannot bind {bind_address}:{port}: {exc.strerror}")
            failure.godot_error = GodotError.ERR_UNAVAILABLE  # Godot bind/listen
            raise failure from exc
        return sock
    assert last is not None
    raise SocketError(last.errno, f"cannot open a UDP socket: {last.strerror}") from last


class _Endpoint:
    """Owns one socket and its native dp_endpoint (freed by the GC hook)."""

    __slots__ = ("__weakref__", "closed", "family", "gate", "ptr", "sock")

    def __init__(self, sock: socket.socket, mode: int, recv_buf_size: int) -> None:
        out = ffi.new("dp_endpoint **")
        family = 6 if sock.family == socket.AF_INET6 else 4
        check(lib.dp_endpoint_new(out, sock.fileno(), family, mode, recv_buf_size), "UDP endpoint")
        self.ptr = ffi.gc(out[0], lib.dp_endpoint_free)
        self.sock = sock
        self.family = sock.family
        self.closed = False
        # The DTLSServer cookie gate installed in C (dp_endpoint_set_gate),
        # kept alive here; None: plain UDP.
        self.gate: Any = None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            # Wakes waits blocked on other threads and returns once no native
            # call uses the fd: only then may the socket close (and its number
            # be reused). The native free waits for garbage collection, which
            # no call in flight allows (each holds a reference to ptr).
            lib.dp_endpoint_close(self.ptr)
            self.sock.close()


def _release_slot(endpoint: _Endpoint, handle: int) -> None:
    """Finalizer of a taken peer: unroute its slot (no-op once the server stopped)."""
    if not endpoint.closed:
        lib.dp_endpoint_slot_close(endpoint.ptr, handle)


def _locked(message: str) -> StateError:
    """A server peer's socket is the server's (Godot: ``ERR_LOCKED``)."""
    exc = StateError(message)
    exc.godot_error = GodotError.ERR_LOCKED
    return exc


def _read_error(exc: DTLSPeerError) -> DTLSPeerError:
    """Give a failed read Godot's code for it (``get_packet_error``): an
    empty queue is ``ERR_UNAVAILABLE``, a closed socket ``FAILED`` (its
    ``_poll``)."""
    if isinstance(exc, WouldBlockError):
        exc.godot_error = GodotError.ERR_UNAVAILABLE
    elif isinstance(exc, StateError):
        exc.godot_error = GodotError.FAILED
    return exc


def _check_recv_buf_size(recv_buf_size: Any) -> int:
    size = _check_int(recv_buf_size, "recv_buf_size")
    if not 1 <= size <= _MAX_RECV_BUF:
        raise InvalidArgumentError(f"recv_buf_size must be in 1..{_MAX_RECV_BUF}, not {size}")
    return size


# ---- PacketPeerUDP -----------------------------------------------------------


class PacketPeerUDP(PacketPeer):
    """A UDP socket that sends and receives whole datagrams (Godot ``PacketPeerUDP``).

    Differences from Godot, all deliberate:

    * Errors raise: bad values :class:`~dtlspeer.errors.InvalidArgumentError`
      (``ValueError``), wrong types ``ArgumentTypeError`` (``TypeError``),
      socket failures :class:`~dtlspeer.errors.SocketError` (``OSError`` with
      ``errno``), misuse of a closed/unbound or server-owned peer
      :class:`~dtlspeer.errors.StateError`.
    * ``recv_buf_size`` is the exact byte limit of the receive queue; each
      datagram costs its length + 24 bytes (Godot: the same 24-byte cost, but
      the ring is rounded up to a power of two above the value, so Godot's
      default holds 131072 bytes). A datagram that does not fit is dropped
      and counted (``get_stats()["drop_queue_full"]``).
    * ``connect_to_host`` and ``set_dest_address`` accept host names
      (Godot: only ``set_dest_address`` does); resolution failures raise
      :class:`~dtlspeer.errors.ResolveError`.
    * ``wait(timeout=None)`` takes an optional timeout in seconds and returns
      whether a packet is ready (Godot's ``wait()`` blocks forever).
    * ``get_packet`` reads the socket only when the queue is empty (Godot
      reads it on every call); ``get_available_packet_count`` reads it first,
      as Godot does. ``get_packet_into`` fills a caller's buffer.
    * Sockets are non-blocking: a full OS send buffer raises
      ``WouldBlockError`` (Godot's blocking peers retry in a busy loop).
    * Remote ICMP errors never raise, whichever errno the system turns them
      into (``ECONNREFUSED``, ``EHOSTUNREACH``, ``ENOPROTOOPT``, ``EHOSTDOWN``,
      ``ENONET``, ``EPROTO``, ``EMSGSIZE``, ``EACCES``...); they are counted
      (``recv_errors``), and a ``put_packet`` that the pending error was
      reported on is sent again. Godot reports them as errors.
    * Peers taken from a :class:`UDPServer` stay routed to this object until
      ``close()`` or garbage collection; ``close()`` detaches from the server
      like Godot's. After ``UDPServer.stop()`` they are detached: unbound,
      the destination kept (so ``put_packet`` opens a fresh ephemeral
      socket, as in Godot).
    """

    def __init__(self) -> None:
        """A closed peer; ``bind``, ``connect_to_host`` or ``put_packet`` opens it."""
        self._ep: Optional[_Endpoint] = None
        self._handle = 0
        self._server_owned = False
        self._finalizer: Optional[weakref.finalize[[_Endpoint, int], PacketPeerUDP]] = None
        self._connected = False
        self._dest: Any = None  # dp_addr* or None
        self._last = ffi.new("dp_addr *")
        self._has_last = False
        self._broadcast = False
        self._packet_error: Optional[DTLSPeerError] = None
        # The PacketPeerDTLS whose session runs over this peer (set and
        # cleared by dtls.py): one at a time, or they would split its datagrams.
        self._dtls_user: Optional[weakref.ref[Any]] = None

    @classmethod
    def _from_server(cls, endpoint: _Endpoint, handle: int) -> PacketPeerUDP:
        peer = cls()
        peer._ep = endpoint
        peer._handle = handle
        peer._server_owned = True
        peer._finalizer = weakref.finalize(peer, _release_slot, endpoint, handle)
        dest = ffi.new("dp_addr *")
        check(lib.dp_endpoint_slot_addr(endpoint.ptr, handle, dest), "taking a UDP peer")
        peer._dest = dest
        # Godot's connect_shared_socket: the packet address is the client's
        # from the start, before any get_packet().
        peer._last[0] = dest[0]
        peer._has_last = True
        return peer

    # -- internal helpers

    def _live(self) -> Optional[_Endpoint]:
        """The endpoint, after detaching from a stopped server."""
        ep = self._ep
        if ep is not None and ep.closed:
            self._detach()
            return None
        return ep

    def _require(self, action: str) -> _Endpoint:
        ep = self._live()
        if ep is None:
            raise StateError(f"cannot {action}: the UDP peer is not bound (closed)")
        return ep

    def _detach(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # unroutes the slot (once)
            self._finalizer = None
        self._ep = None
        self._handle = 0
        self._server_owned = False
        self._connected = False

    def _open_for(self, family: int) -> _Endpoint:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if self._broadcast:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            ep = _Endpoint(sock, _CLIENT, _DEFAULT_RECV_BUF)
        except BaseException:
            sock.close()
            raise
        self._ep = ep
        return ep

    def _recv_failed(self, code: int, context: str) -> None:
        if code == _CLOSED:
            self._detach()
        check(code, context)

    # -- Godot API

    def bind(self, port: int, bind_address: str = "*",
             recv_buf_size: int = _DEFAULT_RECV_BUF) -> None:
        """Open a socket bound to ``bind_address``:``port`` (Godot ``bind``).

        ``"*"`` binds IPv6 dual-stack (IPv4 where IPv6 is unavailable);
        ``"0.0.0.0"``/``"::"`` bind one family; only literal IPs (as Godot).
        Raises AlreadyInUseError if open, InvalidArgumentError for a bad
        port/address/size, SocketError if the OS refuses (port in use:
        ``errno.EADDRINUSE``; Godot: ``ERR_UNAVAILABLE``).
        """
        if self._live() is not None:
            raise AlreadyInUseError("the UDP peer is already open")
        port = _check_port(port, 0)
        size = _check_recv_buf_size(recv_buf_size)
        sock = _open_socket(bind_address, port)
        try:
            if self._broadcast:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            self._ep = _Endpoint(sock, _CLIENT, size)
        except BaseException:
            sock.close()
            raise
        self._connected = False
        self._has_last = False

    def close(self) -> None:
        """Close the socket; a server peer detaches from its server instead,
        leaving the shared socket open (Godot ``close``). Idempotent."""
        if self._server_owned:
            self._detach()
        else:
            ep = self._ep
            self._ep = None
            self._connected = False
            if ep is not None:
                ep.close()
        self._has_last = False

    def is_bound(self) -> bool:
        """Whether the socket is open (server peers: while the server listens)."""
        return self._live() is not None

    def is_socket_connected(self) -> bool:
        """True after ``connect_to_host``, and for peers taken from a UDPServer (Godot)."""
        return self._live() is not None and (self._connected or self._server_owned)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until a packet is ready, at most ``timeout`` seconds (None:
        forever, as Godot's ``wait()``). Returns False on timeout. A server
        peer waits on the shared socket, like Godot: the datagram is queued on
        the peer only at the server's next ``poll()``. ``close()`` of this
        peer (or ``stop()`` of its server) from another thread wakes the wait,
        which then returns False: the way to stop a thread blocked here."""
        ep = self._ep
        if ep is None or ep.closed:
            ep = self._require("wait")
        deadline = 0.0
        if timeout is None:
            ms = -1
        else:
            kind = type(timeout)
            if kind is not float and kind is not int:  # rare: subclasses, bad types
                if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                    raise ArgumentTypeError("timeout must be a number of seconds or None")
            if not timeout >= 0:
                raise InvalidArgumentError(f"timeout must be >= 0, not {timeout}")
            deadline = time.monotonic() + timeout
            ms = math.ceil(timeout * 1000) if timeout < 2147483.0 else _MAX_WAIT_MS
        while True:
            rc = _ep_wait(ep.ptr, self._handle, ms)
            if rc >= 0:
                return rc == 1  # type: ignore[no-any-return]
            if rc == _EINTR_CODE:  # a signal: its Python handler has run; retry
                if timeout is not None:
                    left = deadline - time.monotonic()
                    ms = max(0, math.ceil(left * 1000)) if left < 2147483.0 else _MAX_WAIT_MS
                continue
            if rc == _CLOSED:  # closed (here or by another thread) during the wait
                self._detach()
                return False
            check(rc, "waiting for a datagram")

    def connect_to_host(self, host: str, port: int) -> None:
        """Connect the socket to ``host``:``port`` (Godot ``connect_to_host``):
        afterwards only that address's packets are received, sends go there,
        and already queued packets are dropped. Opens the socket if needed.
        ``host`` may be a name (Godot: literal IPs only). Server peers raise
        StateError (Godot: ``ERR_LOCKED``); a failure closes the socket."""
        if self._server_owned and self._live() is not None:
            raise _locked("a peer taken from a UDPServer cannot connect_to_host")
        port = _check_port(port, 1)
        ep = self._live()
        ip, scope = _resolve(host, port, ep.family if ep is not None else socket.AF_UNSPEC)
        if ep is None:
            ep = self._open_for(socket.AF_INET if ip.version == 4 else socket.AF_INET6)
        target: tuple[Any, ...]
        if ep.family == socket.AF_INET6:
            text = f"::ffff:{ip}" if ip.version == 4 else str(ip)
            target = (text, port, 0, scope)
        else:
            target = (str(ip), port)
        try:
            ep.sock.connect(target)
            addr = _fill_addr(ffi.new("dp_addr *"), ip, port, scope)
            check(lib.dp_endpoint_set_connected(ep.ptr, addr), "connect_to_host")
        except OSError as exc:
            self.close()
            if isinstance(exc, DTLSPeerError):
                raise
            raise SocketError(
                exc.errno, f"cannot connect to {host}:{port}: {exc.strerror}") from exc
        self._connected = True

    def set_dest_address(self, host: str, port: int) -> None:
        """Set where ``put_packet`` sends (Godot ``set_dest_address``; names are
        resolved, failures raise ResolveError). Raises StateError on a
        connected socket (Godot logs an error and keeps the old target)."""
        if self.is_socket_connected():
            raise StateError("the socket is connected: its destination is fixed")
        port = _check_port(port, 1)
        ep = self._live()
        ip, scope = _resolve(host, port, ep.family if ep is not None else socket.AF_UNSPEC)
        self._dest = _fill_addr(ffi.new("dp_addr *"), ip, port, scope)

    def put_packet(self, data: BytesLike) -> None:
        """Send one datagram (Godot ``put_packet``). Empty data sends nothing.
        An unopened peer opens an ephemeral socket of the destination's
        family, as Godot does. Raises StateError without a destination
        (Godot ``ERR_UNCONFIGURED``), WouldBlockError if the OS buffer is
        full, SocketError (e.g. ``EMSGSIZE`` above 65507 bytes on IPv4),
        InvalidArgumentError above 65535 bytes."""
        if isinstance(data, bytes):
            payload: Any = data
        elif isinstance(data, (bytearray, memoryview)):
            payload = ffi.from_buffer(data)
        else:
            raise ArgumentTypeError(f"data must be bytes-like, not {type(data).__name__}")
        size = len(payload)
        if size == 0:
            return
        ep = self._ep
        if ep is not None and ep.closed:
            ep = self._live()
        if ep is None:
            if self._dest is None:
                raise StateError("no destination: call set_dest_address or connect_to_host")
            v4 = bytes(self._dest.ip[0:12]) == _V4_PREFIX
            ep = self._open_for(socket.AF_INET if v4 else socket.AF_INET6)
        if self._connected:  # (never set on a server peer)
            rc = _ep_send(ep.ptr, 0, _NULL, payload, size)
        elif self._server_owned:
            rc = _ep_send(ep.ptr, self._handle, _NULL, payload, size)
            if rc == _CLOSED:
                self._detach()
                self.put_packet(data)  # Godot: a detached peer reopens a socket
                return
        elif self._dest is not None:
            rc = _ep_send(ep.ptr, 0, self._dest, payload, size)
        else:
            raise StateError("no destination: call set_dest_address or connect_to_host")
        if rc < 0:
            check(rc, "put_packet")

    def get_available_packet_count(self) -> int:
        """Packets queued, after reading the socket (Godot: same; on a closed
        peer Godot returns -1, we raise StateError). Server peers are fed by
        ``UDPServer.poll()``."""
        ep = self._require("count packets")
        if not self._server_owned:
            rc = lib.dp_endpoint_poll(ep.ptr, 0)
            if rc < 0:
                check(rc, "reading the socket")
        rc = lib.dp_endpoint_queued(ep.ptr, self._handle)
        if rc == _CLOSED:
            self._detach()
            raise StateError("the UDP peer was detached (server stopped)")
        return check(rc, "counting packets")

    def get_packet(self) -> bytes:
        """Pop the oldest datagram (Godot ``get_packet``); its source becomes
        ``get_packet_ip/port``. Raises WouldBlockError when none is queued
        (Godot: empty array + ``ERR_UNAVAILABLE``)."""
        # Every outcome is the packet error, as Godot's last_get_error: a
        # closed peer's StateError too (try costs nothing when nothing raises).
        try:
            ep = self._ep
            if ep is None or ep.closed:
                ep = self._require("get_packet")
            try:
                buf = _scratch.buf
            except AttributeError:
                buf = _scratch_buffer()
            n = _ep_recv(ep.ptr, self._handle, buf, _MAX_DATAGRAM, self._last)
            if n < 0:
                self._recv_failed(n, "get_packet")
        except DTLSPeerError as exc:
            self._packet_error = _read_error(exc)
            raise
        self._packet_error = None
        self._has_last = True
        return _unpack(buf, n)  # type: ignore[no-any-return]

    def get_packet_into(self, buffer: Union[bytearray, memoryview]) -> int:
        """Copy the oldest datagram into ``buffer`` (writable, reusable) and
        return its length: one copy, no allocation (ours; not in Godot). If
        ``buffer`` is too small, raises LimitError and the datagram stays
        queued; ``peek_packet_size()`` tells the size needed."""
        try:
            ep = self._ep
            if ep is None or ep.closed:
                ep = self._require("get_packet_into")
            try:
                target = ffi.from_buffer(buffer, require_writable=True)
            except (TypeError, BufferError) as exc:
                raise ArgumentTypeError("buffer must be a writable bytes-like object") from exc
            n = lib.dp_endpoint_recv(ep.ptr, self._handle, target, len(target), self._last)
            if n < 0:
                self._recv_failed(n, "get_packet_into")
        except DTLSPeerError as exc:
            self._packet_error = _read_error(exc)
            raise
        self._packet_error = None
        self._has_last = True
        return int(n)

    def peek_packet_size(self) -> int:
        """Length of the next queued datagram (ours). WouldBlockError if none."""
        ep = self._require("peek_packet_size")
        if not self._server_owned and lib.dp_endpoint_queued(ep.ptr, 0) == 0:
            check(lib.dp_endpoint_poll(ep.ptr, 0), "reading the socket")
        rc = lib.dp_endpoint_next_len(ep.ptr, self._handle)
        if rc == _CLOSED:
            self._detach()
        return check(rc, "peek_packet_size")

    def get_packet_ip(self) -> str:
        """Source IP of the last packet read; IPv4 senders in dotted form even
        on a dual-stack socket (Godot: same). A peer taken from a UDPServer
        reports its client's address from the start (Godot: same); other
        peers ``""`` before any packet."""
        return _addr_text(self._last) if self._has_last else ""

    def get_packet_port(self) -> int:
        """Source port of the last packet read (a peer taken from a
        UDPServer: its client's port from the start); 0 before any packet."""
        return int(self._last.port) if self._has_last else 0

    def get_local_port(self) -> int:
        """Local port of the socket (server peers: the server's). Raises
        StateError when closed (Godot returns 0)."""
        ep = self._require("get_local_port")
        return int(ep.sock.getsockname()[1])

    def set_broadcast_enabled(self, enabled: bool) -> None:
        """Allow sending to broadcast addresses (Godot: off by default).
        Applies now if open and to sockets opened later. Server peers raise
        StateError (Godot: error, ``ERR_LOCKED``)."""
        if not isinstance(enabled, bool):
            raise ArgumentTypeError("enabled must be a bool")
        if self._server_owned and self._live() is not None:
            raise _locked("a peer taken from a UDPServer cannot change socket options")
        self._broadcast = enabled
        ep = self._live()
        if ep is not None:
            try:
                ep.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, int(enabled))
            except OSError as exc:
                raise SocketError(exc.errno, f"SO_BROADCAST: {exc.strerror}") from exc

    def join_multicast_group(self, multicast_address: str, interface_name: str) -> None:
        """Join a multicast group on an interface (``""``: the OS default).
        Requires a bound socket (Godot opens one if needed)."""
        self._multicast(multicast_address, interface_name, join=True)

    def leave_multicast_group(self, multicast_address: str, interface_name: str) -> None:
        """Leave a multicast group joined with ``join_multicast_group``."""
        self._multicast(multicast_address, interface_name, join=False)

    def _multicast(self, group: str, interface_name: str, join: bool) -> None:
        group = _check_str(group, "multicast_address")
        interface_name = _check_str(interface_name, "interface_name")
        if self._server_owned and self._live() is not None:
            raise _locked("a peer taken from a UDPServer cannot change socket options")
        ep = self._require("join/leave a multicast group")
        literal = _literal_ip(group)
        if literal is None or not literal[0].is_multicast:
            raise InvalidArgumentError(f"{group!r} is not a multicast address")
        ip = literal[0]
        try:
            index = socket.if_nametoindex(interface_name) if interface_name else 0
        except OSError as exc:
            raise InvalidArgumentError(f"unknown interface {interface_name!r}") from exc
        try:
            if ip.version == 4:
                # struct ip_mreqn: group, local address (any), interface index
                mreq = ip.packed + b"\x00" * 4 + index.to_bytes(4, "little")
                opt = socket.IP_ADD_MEMBERSHIP if join else socket.IP_DROP_MEMBERSHIP
                ep.sock.setsockopt(socket.IPPROTO_IP, opt, mreq)
            else:
                mreq = ip.packed + index.to_bytes(4, "little")
                opt = socket.IPV6_JOIN_GROUP if join else socket.IPV6_LEAVE_GROUP
                ep.sock.setsockopt(socket.IPPROTO_IPV6, opt, mreq)
        except OSError as exc:
            action = "join" if join else "leave"
            raise SocketError(exc.errno, f"cannot {action} {group}: {exc.strerror}") from exc

    def get_stats(self) -> dict[str, int]:
        """Counters (ours): packets/bytes in and out, drops by reason. For a
        server peer they count this peer's traffic only."""
        ep = self._require("get_stats")
        out = ffi.new("dp_udp_stats *")
        rc = lib.dp_endpoint_stats(ep.ptr, self._handle, out)
        if rc == _CLOSED:
            self._detach()
        check(rc, "get_stats")
        return _stats_dict(out)


# ---- UDPServer --------------------------------------------------------------


class UDPServer:
    """Accepts UDP "connections" on one shared socket (Godot ``UDPServer``).

    ``poll()`` is one native call: it reads every waiting datagram (recvmmsg
    batches on Linux) and routes it by source address through a hash table
    (Godot walks linked lists). Unknown senders become pending peers, at most
    ``max_pending_connections`` (default 16, 0 refuses new peers); others
    are dropped and counted. Python objects are created only when a peer is
    taken.

    Differences from Godot: pending peers expire after ``pending_timeout``
    seconds (default 30; None: never, as Godot); lowering
    ``max_pending_connections`` drops the newest pending peers beyond it
    (Godot's trimming loop is inverted); a taken peer stays routed to its
    PacketPeerUDP until that object is closed or garbage-collected (the same
    rule as Godot's, documented: drop the last reference and the next
    datagram from that address is a new pending peer); ``peer_recv_buf_size``
    sets each peer's queue limit (Godot: 65536, fixed); counters via
    ``get_stats()``; misuse raises instead of returning ``Error``.
    """

    def __init__(self) -> None:
        """A server that is not listening yet."""
        self._ep: Optional[_Endpoint] = None
        self._max_pending = 16
        self._pending_timeout: Optional[float] = 30.0
        self._peer_recv_buf_size = _DEFAULT_RECV_BUF

    def _apply_limits(self) -> None:
        if self._ep is not None:
            timeout_ms = -1 if self._pending_timeout is None else int(self._pending_timeout * 1000)
            check(
                lib.dp_endpoint_set_limits(
                    self._ep.ptr, self._max_pending, timeout_ms, self._peer_recv_buf_size
                ),
                "UDPServer limits",
            )

    @property
    def max_pending_connections(self) -> int:
        """Pending peers kept at most (Godot: default 16; 0 refuses new peers)."""
        return self._max_pending

    @max_pending_connections.setter
    def max_pending_connections(self, value: int) -> None:
        value = _check_int(value, "max_pending_connections")
        if not 0 <= value <= 1 << 24:
            raise InvalidArgumentError(f"max_pending_connections must be >= 0, not {value}")
        self._max_pending = value
        self._apply_limits()

    def set_max_pending_connections(self, value: int) -> None:
        """Godot's setter name for ``max_pending_connections``."""
        self.max_pending_connections = value

    def get_max_pending_connections(self) -> int:
        """Godot's getter name for ``max_pending_connections``."""
        return self._max_pending

    @property
    def pending_timeout(self) -> Optional[float]:
        """Seconds a pending peer waits for ``take_connection`` (from its first
        datagram) before it is dropped at the next ``poll()``; None: never
        (Godot's behaviour). Ours."""
        return self._pending_timeout

    @pending_timeout.setter
    def pending_timeout(self, value: Optional[float]) -> None:
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ArgumentTypeError("pending_timeout must be seconds or None")
            if not 0 <= value < 1e9:
                raise InvalidArgumentError(f"pending_timeout must be >= 0, not {value}")
            value = float(value)
        self._pending_timeout = value
        self._apply_limits()

    @property
    def peer_recv_buf_size(self) -> int:
        """Queue limit in bytes of each new peer (Godot: 65536). Ours."""
        return self._peer_recv_buf_size

    @peer_recv_buf_size.setter
    def peer_recv_buf_size(self, value: int) -> None:
        self._peer_recv_buf_size = _check_recv_buf_size(value)
        self._apply_limits()

    def listen(self, port: int, bind_address: str = "*") -> None:
        """Bind the shared socket (Godot ``listen``). Unlike Godot, without
        SO_REUSEADDR: with it, another local user could bind the same port
        and take its datagrams (Linux), and a second listener would silently
        take over; binding a port in use raises SocketError (EADDRINUSE).
        ``"*"``: IPv6 dual-stack. Raises AlreadyInUseError if listening,
        InvalidArgumentError for a bad port/address, SocketError from bind."""
        if self._ep is not None:
            raise AlreadyInUseError("the UDPServer is already listening")
        port = _check_port(port, 0)
        sock = _open_socket(bind_address, port)
        try:
            self._ep = _Endpoint(sock, _SERVER, self._peer_recv_buf_size)
            self._apply_limits()
        except BaseException:
            if self._ep is not None:
                self._ep.close()
                self._ep = None
            else:
                sock.close()
            raise

    def poll(self) -> int:
        """Read and route every waiting datagram (up to 8192 per call); expire
        old pending peers first. Returns the number read (Godot returns an
        ``Error``). StateError if not listening (Godot ``ERR_UNCONFIGURED``);
        SocketError on a socket failure (Godot ``FAILED``)."""
        ep = self._ep
        if ep is None:
            raise StateError("the UDPServer is not listening")
        rc = lib.dp_endpoint_poll(ep.ptr, _monotonic_ms())
        if rc < 0:
            check(rc, "UDPServer.poll")
        return int(rc)

    def is_connection_available(self) -> bool:
        """A pending peer is waiting. Does not read the socket: call ``poll()``
        first (Godot 4: same). False when not listening."""
        ep = self._ep
        return ep is not None and lib.dp_endpoint_pending_count(ep.ptr) > 0

    def take_connection(self) -> Optional[PacketPeerUDP]:
        """The oldest pending peer (FIFO by first datagram), connected and
        already holding its first packet(s); None if none is pending, also
        when not listening (Godot: null in both cases, without an error)."""
        ep = self._ep
        if ep is None:
            return None
        handle = ffi.new("uint64_t *")
        if check(lib.dp_endpoint_take(ep.ptr, handle), "take_connection") == 0:
            return None
        return PacketPeerUDP._from_server(ep, int(handle[0]))

    def stop(self) -> None:
        """Close the socket, drop pending peers and detach every taken peer
        without telling the remote side (Godot ``stop``). Idempotent."""
        ep = self._ep
        self._ep = None
        if ep is not None:
            ep.close()

    def is_listening(self) -> bool:
        """Whether ``listen`` succeeded and ``stop`` was not called."""
        return self._ep is not None

    def get_local_port(self) -> int:
        """The bound port. StateError if not listening (Godot returns 0)."""
        if self._ep is None:
            raise StateError("the UDPServer is not listening")
        return int(self._ep.sock.getsockname()[1])

    def get_pending_count(self) -> int:
        """Pending peers right now (ours)."""
        return 0 if self._ep is None else int(lib.dp_endpoint_pending_count(self._ep.ptr))

    def get_stats(self) -> dict[str, int]:
        """Server-wide counters (ours): packets/bytes in and out, drops by
        reason (queue full, pending full, truncated, no memory), pending
        peers created and expired. StateError if not listening."""
        if self._ep is None:
            raise StateError("the UDPServer is not listening")
        out = ffi.new("dp_udp_stats *")
        check(lib.dp_endpoint_stats(self._ep.ptr, 0, out), "get_stats")
        return _stats_dict(out)

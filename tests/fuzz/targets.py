"""Fuzz targets: each entry point with the invariants every outcome must meet.

A failed ``assert`` (or any exception that is not a documented error) is a
finding. The same targets run bounded in ``tests/test_fuzz.py`` and for as
long as wanted under ``tools/fuzz.py``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Optional

from dtlspeer._binding import ffi, lib
from dtlspeer._engine import Connection, CookieGate, EngineConfig, EngineStatus, GateVerdict

from .seeds import (
    FUZZ_ADDR,
    FUZZ_HOST,
    FUZZ_NOW,
    Identity,
    Transcript,
    client_config,
    fuzz_gate,
    hello_with_cookie,
    new_link,
    server_config,
)

ENDED = (EngineStatus.DISCONNECTED, EngineStatus.ERROR, EngineStatus.ERROR_HOSTNAME_MISMATCH)
MAX_DATAGRAM = 17 * 1024

# ---- the cookie gate -----------------------------------------------------------


class _Short(Exception):
    pass


class _Reader:
    def __init__(self, data: bytes, end: int) -> None:
        self.data, self.pos, self.end = data, 0, end

    def take(self, n: int) -> bytes:
        if n > self.end - self.pos:
            raise _Short
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int) -> bytes:
        return self.take(self.u(length_bytes))


def classify_hello(d: bytes) -> tuple[str, Optional[bytes]]:
    """Independent model of what the gate must make of a datagram: "malformed",
    "not_hello" or "hello" (with its cookie). The first record of the datagram
    must be an epoch-0, unfragmented, well-formed DTLS ClientHello (RFC 6347
    4.2.2, RFC 5246 7.4.1.2); anything after it is ignored."""
    if len(d) < 13 or d[1] != 0xFE:
        return "malformed", None
    rec_len = int.from_bytes(d[11:13], "big")
    if rec_len > len(d) - 13:
        return "malformed", None
    if d[0] != 22 or d[3:5] != b"\x00\x00":
        return "not_hello", None
    if rec_len < 12:
        return "malformed", None
    hs = d[13:13 + rec_len]
    if hs[0] != 1:
        return "not_hello", None
    body_len = int.from_bytes(hs[1:4], "big")
    if hs[6:9] != b"\x00\x00\x00" or int.from_bytes(hs[9:12], "big") != body_len:
        return "malformed", None
    if body_len > len(hs) - 12:
        return "malformed", None
    r = _Reader(hs[12:12 + body_len], body_len)
    try:
        version = r.take(2)
        r.take(32)  # random
        session_id = r.vector(1)
        cookie = r.vector(1)
        suites = r.vector(2)
        compression = r.vector(1)
        if r.pos < body_len:
            extensions = r.vector(2)
            if r.pos != body_len:
                return "malformed", None
            del extensions
    except _Short:
        return "malformed", None
    if (version[0] != 0xFE or len(session_id) > 32 or len(suites) < 2 or len(suites) % 2
            or not compression):
        return "malformed", None
    return "hello", cookie


class GateTarget:
    """dp_cookie_gate_check against the model, its counters and its reply."""

    def __init__(self, transcript: Transcript) -> None:
        self.gate: CookieGate = fuzz_gate()
        # The cookie a real client got for FUZZ_ADDR at FUZZ_NOW.
        kind, cookie = classify_hello(hello_with_cookie(transcript))
        assert kind == "hello" and cookie is not None and len(cookie) == 17
        self.valid_cookie = cookie
        self.inputs = 0
        self.verdicts: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()

    def run(self, datagram: bytes, addr: bytes = FUZZ_ADDR, now: int = FUZZ_NOW) -> GateVerdict:
        """Judge one datagram; assert everything about the outcome."""
        before = self.gate.stats()
        verdict, reply = self.gate.check(addr, datagram, now)
        self.inputs += 1
        after = self.gate.stats()
        delta = {k: after[k] - before[k] for k in after}
        kind, cookie = classify_hello(datagram)
        self.kinds[kind] += 1
        self.verdicts[verdict.name] += 1
        assert verdict in (GateVerdict.DROP, GateVerdict.REPLY, GateVerdict.ADMIT)
        if kind != "hello":
            assert verdict == GateVerdict.DROP and reply == b"", (kind, datagram.hex())
            expect = "dropped_malformed" if kind == "malformed" else "dropped_not_hello"
            assert delta == {**dict.fromkeys(delta, 0), expect: 1}, (kind, delta, datagram.hex())
            return verdict
        assert delta["hellos_seen"] == 1 and delta["dropped_malformed"] == 0
        assert delta["dropped_not_hello"] == 0, datagram.hex()
        # A valid cookie is exactly the one made for this address in this
        # slot (or the previous one): the test only uses FUZZ_ADDR's slots 0-1.
        should_admit = addr == FUZZ_ADDR and cookie == self.valid_cookie and now < 60_000
        assert (verdict == GateVerdict.ADMIT) == should_admit, (verdict, datagram.hex())
        assert delta["admitted"] == int(should_admit)
        assert delta["cookies_rejected"] == int(bool(cookie) and not should_admit)
        if should_admit:
            assert reply == b""
            return verdict
        if len(datagram) < lib.DP_HVR_LEN:
            assert verdict == GateVerdict.DROP and delta["dropped_too_small"] == 1
            return verdict
        assert verdict == GateVerdict.REPLY and delta["cookies_sent"] == 1, datagram.hex()
        assert len(reply) == lib.DP_HVR_LEN <= len(datagram)
        assert reply[0] == 22 and reply[1:11] == datagram[1:11]
        assert int.from_bytes(reply[11:13], "big") == len(reply) - 13
        assert reply[13] == 3 and reply[17:19] == datagram[17:19]  # HelloVerifyRequest, msg seq
        assert reply[25:27] == b"\xfe\xff" and reply[27] == 17
        if addr == FUZZ_ADDR and now < 30_000:
            assert reply[28:] == self.valid_cookie
        return verdict

    def check_totals(self) -> None:
        """The counters account for every input."""
        s = self.gate.stats()
        assert s["hellos_seen"] + s["dropped_malformed"] + s["dropped_not_hello"] == self.inputs
        assert s["hellos_seen"] == s["admitted"] + s["cookies_sent"] + s["dropped_too_small"]
        assert s["cookies_rejected"] <= s["hellos_seen"] - s["admitted"]

    def close(self) -> None:
        """Free the gate."""
        self.gate.close()


# ---- connections -----------------------------------------------------------------


def feed_checked(conn: Connection, datagram: bytes, now: int, *, server: bool,
                 authentic: Optional[Counter[bytes]] = None,
                 delivered: Optional[Counter[bytes]] = None,
                 unauthenticated: bool = False) -> EngineStatus:
    """Feed one datagram and check the status change, the counters, and that
    every record read back is one the real peer wrote (and at most as often).
    ``authentic`` None: no record may be delivered at all. ``unauthenticated``:
    the datagram holds nothing the peer's keys protect, so an established
    connection must survive it. An established connection never restarts in
    place, whatever the datagram (RFC 6347 4.2.8 reconnects are successor
    connections above the engine)."""
    before_status = conn.status
    before = conn.stats()
    status = conn.feed(datagram, now)  # an invalid status raises ValueError
    after = conn.stats()
    d = {k: after[k] - before[k] for k in after}
    assert d["datagrams_in"] == 1
    assert status == conn.status
    if before_status in ENDED:
        assert status == before_status and d["dropped_closed"] == 1
    elif before_status == EngineStatus.CONNECTED:
        # Connected: every datagram is accounted for exactly once, as
        # records, the end of the session, or discarded.
        outcomes = (d["records_in"] > 0) + (status in ENDED)
        assert d["discarded"] + d["dropped_in_full"] == (0 if outcomes else 1), (d, status)
        assert status != EngineStatus.ERROR_HOSTNAME_MISMATCH
        assert status != EngineStatus.HANDSHAKING, "an established connection restarted in place"
        if unauthenticated:
            assert status == EngineStatus.CONNECTED, f"ended by a forged datagram: {conn.reason}"
    records = conn.read_all()
    for record in records:
        assert authentic is not None and record in authentic, record[:64]
        if delivered is not None:
            delivered[record] += 1
            assert delivered[record] <= authentic[record], "record delivered twice"
    for out in conn.take_outgoing():
        assert 0 < len(out) <= MAX_DATAGRAM
    return status


def never_connected_by(conn: Connection, datagrams: list[bytes], now: int, server: bool) -> str:
    """Feed replayed or mutated handshake datagrams 7 ms apart, running the
    timers and discarding the output after each; none may complete the
    handshake. Returns the final status name."""
    for datagram in datagrams:
        now += 7
        status = feed_checked(conn, datagram, now, server=server)
        assert status != EngineStatus.CONNECTED, "handshake completed by replayed flights"
        conn.update(now)
        conn.take_outgoing()
    return conn.status.name


class ServerHandshakeTarget:
    """A server connection admitted with the captured hello (no live client),
    then fed datagrams: it must never reach CONNECTED from replayed flights."""

    def __init__(self, kind: str, identity: Optional[Identity], transcript: Transcript) -> None:
        self.gate = fuzz_gate()
        self.hello = hello_with_cookie(transcript)
        assert self.gate.check(FUZZ_ADDR, self.hello, FUZZ_NOW)[0] == GateVerdict.ADMIT
        self.config: EngineConfig = server_config(kind, self.gate, identity)
        self.statuses: Counter[str] = Counter()

    def run(self, datagrams: list[bytes]) -> None:
        """A fresh server connection: the admitted hello, then datagrams."""
        conn = Connection(self.config, FUZZ_NOW, transport_id=FUZZ_ADDR)
        try:
            now = FUZZ_NOW
            feed_checked(conn, self.hello, now, server=True)
            assert conn.status == EngineStatus.HANDSHAKING, conn.reason
            self.statuses[never_connected_by(conn, datagrams, now, server=True)] += 1
        finally:
            conn.close()

    def close(self) -> None:
        """Free the config and the gate."""
        self.config.close()
        self.gate.close()


class ClientTarget:
    """A client that sent its hello, then fed (replayed, mutated) server
    datagrams: it must never reach CONNECTED from them."""

    def __init__(self, kind: str, identity: Optional[Identity]) -> None:
        self.kind = kind
        self.config: EngineConfig = client_config(kind, identity)
        self.statuses: Counter[str] = Counter()

    def run(self, datagrams: list[bytes]) -> None:
        """A fresh client: update (ClientHello), then datagrams."""
        conn = Connection(self.config, FUZZ_NOW, hostname=FUZZ_HOST if self.kind != "psk" else None)
        try:
            now = FUZZ_NOW
            conn.update(now)
            assert len(conn.take_outgoing()) == 1
            self.statuses[never_connected_by(conn, datagrams, now, server=False)] += 1
        finally:
            conn.close()

    def close(self) -> None:
        """Free the config."""
        self.config.close()


class EstablishedTarget:
    """A live, established session (PSK or ECDHE); mutated datagrams go to
    one side, between authentic records. With ``park_after_ms`` the server
    parks while idle and mutated datagrams hit the parked connection.

    The pool of the mutator should hold this session's own records
    (:meth:`authentic_datagram`) so mutations reach the record layer with
    the right epoch and nearby sequence numbers."""

    def __init__(self, kind: str, identity: Optional[Identity], *, side: str = "server",
                 park_after_ms: Optional[int] = None, seed: int = 1) -> None:
        self.kind, self.identity, self.side = kind, identity, side
        self.park_after_ms = park_after_ms
        self.seed = seed
        self.sessions = 0
        self.link: Any = None
        self.sent: Counter[bytes] = Counter()
        self.own: set[bytes] = set()  # the peer's datagrams, as sent
        self.delivered: Counter[bytes] = Counter()
        self.counter = 0
        self.totals: Counter[str] = Counter()
        self.new_session()

    @property
    def target(self) -> Connection:
        """The connection being fuzzed."""
        conn = self.link.server if self.side == "server" else self.link.client
        assert conn is not None
        return conn

    @property
    def peer(self) -> Connection:
        """The real peer of the fuzzed connection."""
        conn = self.link.client if self.side == "server" else self.link.server
        assert conn is not None
        return conn

    def new_session(self) -> None:
        """Close the current session (counting its stats) and handshake a new one."""
        self._retire()
        common: dict[str, Any] = {}
        if self.park_after_ms is not None:
            common["park_after_ms"] = self.park_after_ms
        self.link = new_link(self.kind, self.identity, seed=self.seed + self.sessions, **common)
        self.link.handshake()
        self.sessions += 1
        self.sent.clear()
        self.own.clear()
        self.delivered.clear()
        # One authentic record each way: the server's last flight is then
        # acknowledged and the connection may park.
        self.exchange()

    def _retire(self) -> None:
        if self.link is not None:
            for name, conn in (("server", self.link.server), ("client", self.link.client)):
                if conn is not None:
                    for k, v in conn.stats().items():
                        self.totals[f"{name}.{k}"] += v
            self.link.close()
            self.link = None

    def authentic_datagram(self) -> bytes:
        """A new record written by the real peer, taken off the wire (not delivered)."""
        self.counter += 1
        payload = b"authentic-%d" % self.counter
        self.peer.write(payload, self.link.now)
        self.sent[payload] += 1
        (datagram,) = self.peer.take_outgoing()
        self.own.add(datagram)
        return datagram

    def exchange(self) -> None:
        """Both sides write a record and read it on the other side."""
        for sender, receiver in ((self.link.client, self.link.server),
                                 (self.link.server, self.link.client)):
            self.counter += 1
            payload = b"authentic-%d" % self.counter
            sender.write(payload, self.link.now)
            self.link.pump()
            got: list[bytes] = []
            self.link.run_until(lambda r=receiver, g=got: bool(g.extend(r.read_all()) or g), 1000)
            assert got == [payload], got

    def idle(self, ms: int) -> None:
        """Let time pass (the server parks if configured) without traffic."""
        self.link.now += ms
        for conn in (self.link.client, self.link.server):
            if conn is not None and conn.status not in ENDED:
                conn.update(self.link.now)
        self.link.pump()
        self.link.in_flight.clear()

    def run(self, datagrams: list[bytes]) -> None:
        """Feed datagrams to the fuzzed side; afterwards the session must
        still carry authentic data, unless the fuzzed side ended (then a new
        session starts)."""
        target = self.target
        for datagram in datagrams:
            self.link.now += 3
            status = feed_checked(target, datagram, self.link.now, server=self.side == "server",
                                  authentic=self.sent, delivered=self.delivered,
                                  unauthenticated=datagram not in self.own)
            self.totals[f"status.{status.name}"] += 1
            if status != EngineStatus.CONNECTED:
                self.new_session()
                return
        if self.peer.status != EngineStatus.CONNECTED:
            self.new_session()
            return
        # Still connected: the real peer's next record arrives intact.
        datagram = self.authentic_datagram()
        self.link.now += 3
        feed_checked(target, datagram, self.link.now, server=self.side == "server",
                     authentic=self.sent, delivered=self.delivered)
        payload = b"authentic-%d" % self.counter
        if target.status == EngineStatus.CONNECTED:
            assert self.delivered[payload] == 1, "authentic record lost after fuzzing"

    def close(self) -> None:
        """Free the session."""
        self._retire()


# ---- keys and certificates -------------------------------------------------------------

KEY_TYPES = (lib.DP_KEY_TYPE_RSA, lib.DP_KEY_TYPE_EC)
CURVES = (lib.DP_CURVE_P256, lib.DP_CURVE_P384, lib.DP_CURVE_P521)


def _is_error(ret: int) -> bool:
    return -0x20000 < ret < 0


def _key_info(key: Any) -> tuple[int, int, int, int]:
    info = ffi.new("dp_key_info *")
    assert lib.dp_key_get_info(key, info) == 0
    return info.type, info.bits, info.curve, info.public_only


def _key_der(key: Any, public_only: int) -> bytes:
    buf = ffi.new("unsigned char[]", 16384)
    n = lib.dp_key_write(key, lib.DP_FORMAT_DER, public_only, buf, 16384, ffi.NULL)
    assert n > 0, n
    return bytes(ffi.buffer(buf, n))


class KeyTarget:
    """dp_key_parse: a supported key or an error; a failed parse leaves the
    handle's previous content; a parsed key round-trips through DER."""

    def __init__(self, valid_key_der: bytes) -> None:
        self.results: Counter[str] = Counter()
        self.valid = valid_key_der

    def run(self, data: bytes, public_only: int) -> int:
        """Parse into a handle already holding a valid key."""
        key = lib.dp_key_new()
        try:
            assert lib.dp_key_parse(key, self.valid, len(self.valid), 0) == 0
            old = _key_info(key), _key_der(key, 0)
            ret = lib.dp_key_parse(key, data, len(data), public_only)
            if ret != 0:
                assert _is_error(ret), ret
                assert (_key_info(key), _key_der(key, 0)) == old, "failed parse changed the key"
                self.results["error"] += 1
                return ret
            ktype, bits, curve, pub = _key_info(key)
            assert ktype in KEY_TYPES and bits > 0 and pub in (0, 1), (ktype, bits, pub)
            assert ktype != lib.DP_KEY_TYPE_EC or curve in CURVES
            if public_only:
                assert pub == 1
            der = _key_der(key, pub)
            again = lib.dp_key_new()
            try:
                assert lib.dp_key_parse(again, der, len(der), pub) == 0
                assert _key_der(again, pub) == der, "DER does not round-trip"
            finally:
                lib.dp_key_free(again)
            self.results["parsed"] += 1
            return ret
        finally:
            lib.dp_key_free(key)


class CertTarget:
    """dp_cert_parse: a count >= 1 or an error (content kept); every accessor
    works, or fails with an error, on every certificate parsed."""

    def __init__(self, valid_cert_der: bytes) -> None:
        self.results: Counter[str] = Counter()
        self.valid = valid_cert_der

    def run(self, data: bytes, allow_partial: int) -> int:
        """Parse into a handle already holding one valid certificate."""
        cert = lib.dp_cert_new()
        skipped = ffi.new("size_t *")
        try:
            assert lib.dp_cert_parse(cert, self.valid, len(self.valid), 0, skipped) == 1
            ret = lib.dp_cert_parse(cert, data, len(data), allow_partial, skipped)
            if ret <= 0:
                assert _is_error(ret), ret
                assert lib.dp_cert_count(cert) == 1, "failed parse changed the chain"
                self.results["error"] += 1
                return ret
            assert lib.dp_cert_count(cert) == ret
            if not allow_partial:
                assert skipped[0] == 0
            for index in range(ret):
                self._inspect(cert, index)
            assert lib.dp_cert_der(cert, ret, ffi.NULL, 0, ffi.NULL) == lib.DP_ERR_INVALID_ARGUMENT
            self.results["parsed"] += 1
            return ret
        finally:
            lib.dp_cert_free(cert)

    @staticmethod
    def _inspect(cert: Any, index: int) -> None:
        needed = ffi.new("size_t *")
        buf = ffi.new("unsigned char[]", 65536)
        for call in (lib.dp_cert_der, lib.dp_cert_serial, lib.dp_cert_san_list):
            n = call(cert, index, ffi.NULL, 0, needed)
            assert n >= 0 or n in (lib.DP_ERR_BUFFER_TOO_SMALL, lib.DP_ERR_TOO_LARGE), n
            size = needed[0]
            if size <= 65536:
                n = call(cert, index, buf, 65536, needed)
                assert n == size, (n, size)
            if call is lib.dp_cert_san_list and 0 <= n:
                pos = 0
                while pos < n:  # records: type, length, value
                    assert buf[pos] in (1, 2, 6, 7) and pos + 3 <= n
                    pos += 3 + (buf[pos + 1] << 8 | buf[pos + 2])
                assert pos == n
        text = ffi.new("char[]", 4096)
        for which in (0, 1):
            n = lib.dp_cert_name(cert, index, which, text, 4096)
            assert n >= 0 or _is_error(n), n
            if n >= 0:
                assert len(ffi.string(text)) == n
        info = ffi.new("dp_cert_info *")
        n = lib.dp_cert_get_info(cert, index, info)
        assert n == 0 or _is_error(n), n
        out = ffi.new("unsigned char[]", 32)
        assert lib.dp_cert_fingerprint_sha256(cert, index, out, 32) == 32
        key = lib.dp_key_new()
        try:
            n = lib.dp_cert_public_key(cert, index, key)
            assert n == 0 or _is_error(n), n
        finally:
            lib.dp_key_free(key)


# ---- session takeover from a known address (issue 11 item 1) ---------------------------


class TakeoverTarget:
    """A Godot-style server (``UDPServer`` + ``DTLSServer`` with a shared
    cookie secret, so the gate runs in C) with one established peer. Every
    input is one datagram injected as if from that peer's address
    (``dp_endpoint_inject``, no socket needed): mutated mixes of epoch-0
    ChangeCipherSpec records, ClientHellos with a VALID cookie for the
    address, and the client's own epoch-1 records.

    Invariants after each input: the live peer is the same object and
    CONNECTED, and it only ever received records its client wrote; new
    handshakes from the address are successor connections (taken and polled
    as a Godot script would) that never connect, since no client completes
    them. Afterwards the real client's next record still arrives on the
    live peer."""

    def __init__(self) -> None:
        import socket

        from _records import SECRET, ccs_epoch0, client_config, cookie_for, first_hello, with_cookie
        from dtlspeer import DTLSServer, PacketPeerDTLS, TLSOptions, UDPServer
        from identities import make_identity

        self.Status = PacketPeerDTLS.Status
        self.udp = UDPServer()
        self.udp.listen(0, "127.0.0.1")
        self.dtls = DTLSServer()
        self.dtls.setup(TLSOptions.server(*make_identity("ec")), cookie_secret=SECRET)
        port = self.udp.get_local_port()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.connect(("127.0.0.1", port))
        self.client = Connection(client_config(), 0)
        self.peers: list[Any] = []
        self.live: Any = None
        self.now = 0
        self.client.update(self.now)
        for _ in range(4000):
            self._step()
            if self.client.status == EngineStatus.CONNECTED and self.live is not None and \
                    self.live.get_status() == self.Status.STATUS_CONNECTED:
                break
        assert self.live is not None and self.client.status == EngineStatus.CONNECTED
        ip, cport = self.sock.getsockname()
        self.addr = ffi.new("dp_addr *")
        self.addr.ip = b"\0" * 10 + b"\xff\xff" + bytes(int(x) for x in ip.split("."))
        self.addr.port = cport
        hello = first_hello()
        self.valid_hello = with_cookie(hello, cookie_for(ip, cport, hello))
        self.ccs = ccs_epoch0()
        self.sent: Counter[bytes] = Counter()
        self.delivered: Counter[bytes] = Counter()
        self.counter = 0
        self.successors = 0
        self.injected = 0
        self.last_keepalive = self._wall()

    def _wall(self) -> int:
        import time

        return int(time.monotonic() * 1000)

    def _step(self) -> None:
        """One frame: client I/O, then the Godot server loop."""
        now = self._wall()
        for datagram in self.client.take_outgoing():
            self.sock.send(datagram)
        self.udp.poll()
        while self.udp.is_connection_available():
            udp_peer = self.udp.take_connection()
            assert udp_peer is not None
            peer = self.dtls.take_connection(udp_peer)
            if peer.get_status() == self.Status.STATUS_HANDSHAKING:
                if self.live is None:
                    self.live = peer
                else:
                    self.successors += 1
                self.peers.append(peer)
        for peer in self.peers:
            peer.poll()
            while peer.get_available_packet_count() > 0:
                record = peer.get_packet()
                assert peer is self.live, "a successor received application data"
                self.delivered[record] += 1
                assert self.delivered[record] <= self.sent[record], record[:64]
        self.peers = [p for p in self.peers if p.get_status() in
                      (self.Status.STATUS_HANDSHAKING, self.Status.STATUS_CONNECTED)]
        for _ in range(64):
            try:
                self.client.feed(self.sock.recv(65535), now)
            except OSError:
                break
        due = self.client.next_timeout()
        if due is not None and due <= now:
            self.client.update(now)

    def own_record(self) -> bytes:
        """A record the real client wrote, taken off the wire (not sent)."""
        self.counter += 1
        payload = b"takeover-%d" % self.counter
        self.client.write(payload, self._wall())
        self.sent[payload] += 1
        (datagram,) = self.client.take_outgoing()
        return datagram

    def pool(self) -> list[bytes]:
        """Seeds: the pieces a takeover datagram is made of."""
        return [self.ccs, self.valid_hello, self.ccs + self.valid_hello,
                self.own_record() + self.valid_hello, self.ccs + self.own_record()]

    def run(self, datagram: bytes) -> None:
        """Inject one datagram from the live peer's address and check."""
        lib.dp_endpoint_inject(self.udp._ep.ptr, self.addr, datagram, len(datagram), -1)
        self.injected += 1
        self._step()
        assert self.live.get_status() == self.Status.STATUS_CONNECTED, self.live.get_last_error()
        for peer in self.peers:
            assert peer is self.live or peer.get_status() != self.Status.STATUS_CONNECTED, \
                "a forged handshake connected"
        if self._wall() - self.last_keepalive > 5000:
            self.keep_alive()

    def keep_alive(self) -> None:
        """Real traffic both ways, so that neither side's idle timeout (60 s,
        wall clock) ends the session during a long campaign: only forged
        input may be judged here, not the passing of time."""
        self.live.put_packet(b"keep-alive")
        self.check_live()
        self.last_keepalive = self._wall()

    def check_live(self) -> None:
        """The real client's next record reaches the live peer, once."""
        record = self.own_record()
        self.sock.send(record)
        payload = b"takeover-%d" % self.counter
        for _ in range(200):
            self._step()
            if self.delivered[payload]:
                break
        assert self.delivered[payload] == 1, "the live session lost the client's record"

    def close(self) -> None:
        for peer in self.peers:
            peer.disconnect_from_peer()
        self.peers = []
        self.live = None
        self.client.close()
        self.sock.close()
        self.udp.stop()


# ---- ENet's receive path (dp_enet.c + ENet 1.3.18) ----------------------------------------


def _alloc_bytes() -> int:
    b, n = ffi.new("int64_t *"), ffi.new("int64_t *")
    lib.dp_alloc_stats(b, n)
    return int(b[0])


class ENetTarget:
    """A live ENet session (server + client on loopback) whose server gets
    fuzzed datagrams as if from the client: in ``plain`` mode injected from
    the client's address (so they reach its ENet peer), in ``dtls`` mode sent
    by the client through its DTLS session (authentic records carrying forged
    ENet datagrams). Invariants: no call raises, every injected datagram is
    accounted for (handed to ENet or dropped as oversized), the server's
    memory stays within ``MEMORY_BOUND`` of its level after setup, and the
    session is re-established whenever ENet (legitimately) ended it."""

    MEMORY_BOUND = 8 << 20  # forged fragment totals ask for up to 4 GiB

    def __init__(self, mode: str) -> None:
        from dtlspeer import Crypto, TLSOptions
        from dtlspeer.enet import ENetConnection

        assert mode in ("plain", "dtls")
        self.mode = mode
        self._conn_cls = ENetConnection
        self.server = ENetConnection()
        self.server.create_host_bound("127.0.0.1", 0, 4)
        self._client_options: Any = None
        if mode == "dtls":
            crypto = Crypto()
            key = crypto.generate_ec("P-256")
            cert = crypto.generate_self_signed_certificate(
                key, "CN=localhost", "20240101000000", "20440101000000")  # fmt: skip
            self.server.dtls_server_setup(TLSOptions.server(key, cert))
            self._client_options = TLSOptions.client_unsafe()
        self.client: Any = None
        self.peer: Any = None
        self.src = ffi.new("dp_addr *")
        self.sessions = 0
        self.runs = 0
        self.new_session()
        self.baseline = _alloc_bytes()

    def _pump(self, until: Any, rounds: int = 4000) -> None:
        for _ in range(rounds):
            for ev in self.server.service_batch(0):
                if ev.type == self._conn_cls.EventType.EVENT_DISCONNECT:
                    self.peer = None  # ENet (or DTLS under it) ended the session
            if self.client is not None:
                for ev in self.client.service_batch(1):
                    if ev.type == self._conn_cls.EventType.EVENT_DISCONNECT:
                        self.peer = None
            if until():
                return

    def new_session(self) -> None:
        if self.client is not None:
            self.client.destroy()
        self.client = self._conn_cls()
        self.client.create_host_bound("127.0.0.1", 0, 1)
        if self.mode == "dtls":
            self.client.dtls_client_setup("localhost", self._client_options)
        peer = self.client.connect_to_host("127.0.0.1", self.server.get_local_port(), 4, 77)
        self.peer = peer
        self._pump(lambda: peer.get_state() == peer.PeerState.STATE_CONNECTED)
        assert peer.get_state() == peer.PeerState.STATE_CONNECTED, "session set-up failed"
        self.src.ip = b"\0" * 10 + b"\xff\xff" + bytes([127, 0, 0, 1])
        self.src.port = self.client.get_local_port()
        self.sessions += 1

    def authentic_datagrams(self) -> list[bytes]:
        """Seeds: what ENet itself sends on a session (CONNECT, acks, reliable,
        unsequenced, fragments), captured in plain mode through a relay."""
        return capture_enet_datagrams()

    def run(self, datagrams: list[bytes]) -> None:
        self.runs += 1
        if self.peer is None or not self.peer.is_active():
            self.new_session()
        peer = self.peer
        before = self.server.get_stats()
        info = peer._fill_info()
        # Most inputs carry this session's header (ENet checks peer id and
        # session before anything else), so they reach command processing.
        header = info.outgoing_peer_id | (info.outgoing_session_id << 12)
        for i, data in enumerate(datagrams):
            if len(data) >= 2 and (self.runs + i) % 4 != 0:
                flags = int.from_bytes(data[:2], "big") & 0xC000
                data = (header | flags).to_bytes(2, "big") + data[2:]
            if self.mode == "plain":
                lib.dp_enet_inject(self.server._ptr, self.src, data, len(data))
            else:
                host = lib.dp_enet_dtls_host(self.client._ptr)
                if info.dtls_peer and len(data) <= 4096:
                    lib.dp_host_send(host, info.dtls_peer, data, len(data), lib.DP_NOW)
                    lib.dp_host_flush(host)
        self._pump(lambda: False, rounds=3)
        after = self.server.get_stats()
        handled = (after["datagrams_in"] - before["datagrams_in"]) + (
            after["dropped_oversized"] - before["dropped_oversized"])  # fmt: skip
        if self.mode == "plain":
            assert handled >= len(datagrams), (handled, len(datagrams))
        assert _alloc_bytes() - self.baseline < self.MEMORY_BOUND, _alloc_bytes() - self.baseline

    def close(self) -> None:
        if self.client is not None:
            self.client.destroy()
        self.server.destroy()


def capture_enet_datagrams() -> list[bytes]:
    """The datagrams an ENet client sends on a real session (plain ENet over
    loopback, through a recording relay): CONNECT, VERIFY acks, pings,
    reliable / unreliable / unsequenced sends on several channels and the
    fragments of a 5 000-byte reliable packet."""
    import socket

    from dtlspeer.enet import ENetConnection

    server = ENetConnection()
    server.create_host_bound("127.0.0.1", 0, 2)
    relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relay.bind(("127.0.0.1", 0))
    relay.setblocking(False)
    client = ENetConnection()
    client.create_host_bound("127.0.0.1", 0, 1)
    server_addr = ("127.0.0.1", server.get_local_port())
    client_addr = ("127.0.0.1", client.get_local_port())
    peer = client.connect_to_host("127.0.0.1", relay.getsockname()[1], 4, 5)
    captured: list[bytes] = []
    sent = False
    try:
        for _ in range(3000):
            for ev in client.service_batch(1):
                if ev.type == ENetConnection.EventType.EVENT_CONNECT and not sent:
                    sent = True
                    peer.send(0, b"reliable", 1)
                    peer.send(1, b"unreliable", 0)
                    peer.send(2, b"unsequenced", 2)
                    peer.send(3, bytes(range(250)) * 20, 1)
                    peer.send(1, bytes(3000), 8)
            server.service_batch(0)
            while True:
                try:
                    data, addr = relay.recvfrom(65536)
                except BlockingIOError:
                    break
                if addr == client_addr:
                    captured.append(data)
                    relay.sendto(data, server_addr)
                else:
                    relay.sendto(data, client_addr)
            if sent and len(captured) >= 12:
                break
    finally:
        client.destroy()
        server.destroy()
        relay.close()
    return captured

"""Memory per connection (issue #5): parking idle established connections
(mbedtls_ssl_context_save / _load) in the in-memory simulator, and upper
bounds on heap per connection measured with dp_alloc_stats (bytes only)."""

from __future__ import annotations

import gc
import os
import time

import pytest

from _dtls_sim import (
    CLIENT_ADDR,
    PSK_ID,
    PSK_KEY,
    Link,
    alloc_stats,
    native_key,
    native_self_signed,
    psk_configs,
)
from dtlspeer import errors
from dtlspeer._engine import Connection, CookieGate, EngineConfig, EngineStatus

PARK_MS = 1000
# Measured: 1 906 B (dp_conn + the serialized context + the read guard, an
# AEAD context of ~1 KB that rejects forged records without waking the
# connection, issue 11.4 + allocator headers; 914 B before the guard).
# An active connection with 16 KiB record buffers is about 36 000 B.
PARKED_HEAP_MAX = 2200


def _link(
    *, park_after_ms: int = PARK_MS, loss: float = 0.0, seed: int = 1, **common: object
) -> Link:
    client_cfg, _, gate = psk_configs(**common)
    server_cfg = EngineConfig.server(
        gate=gate, psks={PSK_ID: PSK_KEY}, park_after_ms=park_after_ms, **common
    )  # type: ignore[arg-type]
    link = Link(
        client_cfg,
        server_cfg,
        gate,
        loss=loss,
        duplicate=loss / 2,
        reorder_ms=20 if loss else 0,
        seed=seed,
    )
    link.handshake(max_ms=60_000)
    return link


def _deliver(
    link: Link, sender: Connection, receiver: Connection, payload: bytes, max_ms: int = 5000
) -> None:
    """Send payload until it arrives (the link may be lossy)."""
    got: list[bytes] = []

    def arrived() -> bool:
        got.extend(receiver.read_all())
        return payload in got

    deadline = link.now + max_ms
    while link.now < deadline:
        sender.write(payload, link.now)
        link.pump()
        if link.run_until(arrived, 100):
            return
    raise AssertionError(f"{payload!r} never arrived")


def _park(link: Link, conn: Connection) -> None:
    """Let simulated time pass (the link calls update() at next_timeout())
    until the connection parked."""
    assert link.run_until(lambda: conn.parked, 10 * PARK_MS), conn.stats()


def _warm(link: Link) -> None:
    """The server drops its retransmission flight once the client's first
    record arrives; only then can it park."""
    assert link.server is not None
    _deliver(link, link.client, link.server, b"warm-up")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_park_and_unpark_on_lossy_link_data_both_ways(seed: int) -> None:
    link = _link(loss=0.2, seed=seed, handshake_timeout_ms=(250, 16_000))
    server = link.server
    assert server is not None
    _warm(link)
    suite, max_payload = server.ciphersuite, server.max_payload
    for round_ in range(3):
        _park(link, server)
        assert server.status == EngineStatus.CONNECTED
        # Parking is invisible: same answers without waking the connection.
        assert server.ciphersuite == suite and server.max_payload == max_payload
        assert server.parked
        if round_ % 2 == 0:
            _deliver(link, link.client, server, b"from client %d" % round_)  # a datagram wakes it
            _deliver(link, server, link.client, b"from server %d" % round_)
        else:
            _deliver(link, server, link.client, b"from server %d" % round_)  # a write wakes it
            _deliver(link, link.client, server, b"from client %d" % round_)
    stats = server.stats()
    assert stats["parks"] >= 3 and stats["unparks"] >= 3
    assert link.client.status == server.status == EngineStatus.CONNECTED
    link.close()


def test_replayed_pre_park_record_is_rejected_after_unpark() -> None:
    link = _link()
    server = link.server
    assert server is not None
    _warm(link)
    link.client.write(b"once", link.now)
    (recorded,) = link.client.take_outgoing()
    server.feed(recorded, link.now)
    assert server.read_all() == [b"once"]
    _park(link, server)
    discarded = server.stats()["discarded"]
    # The parked connection's guard holds the anti-replay window: the replay
    # (authentic, but seen before) is dropped without restoring the context.
    assert server.feed(recorded, link.now) == EngineStatus.CONNECTED
    assert server.read_all() == []
    stats = server.stats()
    assert stats["discarded"] == discarded + 1
    assert stats["unparks"] == 0 and stats["bad_mac"] == 0
    assert server.parked and stats["parks"] == 1
    _deliver(link, link.client, server, b"fresh")
    # Awake again, Mbed TLS's own window (restored from the blob) drops it too.
    assert server.feed(recorded, link.now) == EngineStatus.CONNECTED
    assert server.read_all() == []
    link.close()


def _forged(seq: int, body: int = 64, epoch: int = 1) -> bytes:
    """An application-data record with a plausible header and random bytes
    where the nonce, ciphertext and tag go: what a spoofer can send."""
    payload = os.urandom(body)
    return (
        bytes([23, 0xFE, 0xFD]) + epoch.to_bytes(2, "big") + seq.to_bytes(6, "big")
        + len(payload).to_bytes(2, "big") + payload
    )


def test_forged_record_does_not_wake_a_parked_connection() -> None:
    """Issue 11.4: a record header alone used to restore the whole context
    (~34 KB, key schedule, failed MAC, save, re-park). The guard checks the
    record's AEAD tag first: a forgery costs one AEAD check, counts as a bad
    MAC, and the connection stays parked."""
    link = _link()
    server = link.server
    assert server is not None
    _warm(link)
    _park(link, server)
    for seq in range(100, 110):
        assert server.feed(_forged(seq), link.now) == EngineStatus.CONNECTED
    stats = server.stats()
    assert server.parked and stats["unparks"] == 0 and stats["parks"] == 1
    assert stats["bad_mac"] == 10 and stats["discarded"] >= 10
    _deliver(link, link.client, server, b"the real client")
    assert server.stats()["unparks"] == 1
    link.close()


@pytest.mark.parametrize(
    "suite",
    [
        "TLS-PSK-WITH-AES-128-GCM-SHA256",
        "TLS-PSK-WITH-AES-256-GCM-SHA384",
        "TLS-PSK-WITH-AES-128-CCM",
        "TLS-PSK-WITH-AES-128-CCM-8",
        "TLS-PSK-WITH-CHACHA20-POLY1305-SHA256",
        "TLS-ECDHE-PSK-WITH-CHACHA20-POLY1305-SHA256",
    ],
)
def test_guard_accepts_every_aead_suite(suite: str) -> None:
    """The guard derives the peer's write key and IV itself (Mbed TLS's PRF
    and AEAD): every compiled-in AEAD family, both PRF hashes, short tags.
    A record the guard wrongly rejected would never wake the connection."""
    link = _link(ciphersuites=[suite])
    server = link.server
    assert server is not None
    _warm(link)
    for round_ in range(3):
        _park(link, server)
        _deliver(link, link.client, server, b"wake %d" % round_)
        assert server.stats()["bad_mac"] == 0
    assert server.stats()["unparks"] == 3
    link.close()


def test_guard_of_a_parked_client_reads_the_server_direction() -> None:
    """Clients park only when asked (park_after_ms): their guard takes the
    server's write key and IV from the key block, not the client's."""
    client_cfg = EngineConfig.client(psk=(PSK_ID, PSK_KEY), park_after_ms=PARK_MS)
    _, server_cfg, gate = psk_configs(park_after_ms=0)
    link = Link(client_cfg, server_cfg, gate)
    link.handshake(max_ms=60_000)
    server = link.server
    assert server is not None
    _deliver(link, link.client, server, b"warm-up")
    _deliver(link, server, link.client, b"warm-up back")
    _park(link, link.client)
    link.client.feed(_forged(500), link.now)
    assert link.client.parked and link.client.stats()["bad_mac"] == 1
    _deliver(link, server, link.client, b"wake the client")
    assert link.client.stats()["unparks"] == 1 and link.client.stats()["bad_mac"] == 1
    link.close()


def test_parked_bad_mac_limit_counts_while_parked() -> None:
    """A bad-MAC limit counts forgeries to a parked connection too (they no
    longer reach Mbed TLS), per session, across parks."""
    link = _link(badmac_limit=5)
    server = link.server
    assert server is not None
    _warm(link)
    _park(link, server)
    for seq in range(100, 104):
        server.feed(_forged(seq), link.now)
    assert server.status == EngineStatus.CONNECTED and server.parked
    server.feed(_forged(200), link.now)
    assert server.status == EngineStatus.ERROR
    assert "bad MAC" in server.reason
    link.close()


def test_garbage_does_not_wake_a_parked_connection() -> None:
    link = _link()
    server = link.server
    assert server is not None
    _warm(link)
    _park(link, server)
    junk = [
        b"",
        b"\x17\xfe\xfd",
        bytes(300),
        b"\x17\xfe\xfd\x00\x02" + bytes(40),  # epoch 2
        b"\x17\x03\x03\x00\x01" + bytes(40),
    ]  # TLS, not DTLS
    for datagram in junk:
        assert server.feed(datagram, link.now) == EngineStatus.CONNECTED
    stats = server.stats()
    assert stats["unparks"] == 0 and stats["discarded"] == len(junk) and server.parked
    # Epoch-1 garbage fails the guard's AEAD check: counted as a bad MAC,
    # the connection is not restored (issue 11.4; it used to be).
    forged = b"\x17\xfe\xfd\x00\x01" + b"\x00\x00\x00\x00\x10\x00" + b"\x00\x30" + bytes(48)
    assert server.feed(forged, link.now) == EngineStatus.CONNECTED
    stats = server.stats()
    assert stats["unparks"] == 0 and stats["bad_mac"] == 1 and server.parked
    _deliver(link, link.client, server, b"still fine")
    link.close()


@pytest.mark.parametrize("closer", ["client", "server"])
def test_close_notify_while_parked(closer: str) -> None:
    link = _link(park_after_ms=PARK_MS)
    server = link.server
    assert server is not None
    _warm(link)
    _park(link, server)
    if closer == "client":
        link.client.disconnect(link.now)  # the server is parked when it arrives
        link.pump()
        assert link.run_until(lambda: server.status != EngineStatus.CONNECTED, 1000)
        assert server.status == EngineStatus.DISCONNECTED and "close_notify" in server.reason
    else:
        server.disconnect(link.now)  # needs the keys: unparks to send close_notify
        assert server.status == EngineStatus.DISCONNECTED
        link.pump()
        assert link.run_until(lambda: link.client.status != EngineStatus.CONNECTED, 1000)
        assert (
            link.client.status == EngineStatus.DISCONNECTED and "close_notify" in link.client.reason
        )
    assert not server.parked and server.stats()["unparks"] == 1
    link.close()


def test_idle_timeout_while_parked() -> None:
    link = _link(idle_timeout_ms=8000)
    server = link.server
    assert server is not None
    _warm(link)
    _park(link, server)
    last_rx = link.now  # the warm-up record was the last one received (lossless link)
    deadline = server.next_timeout()
    assert deadline is not None and deadline > link.now
    server.update(deadline - 1)
    assert server.status == EngineStatus.CONNECTED and server.parked
    server.update(deadline)
    assert server.status == EngineStatus.ERROR and "idle timeout" in server.reason
    # The keys come back once, for the close_notify that tells the client.
    assert not server.parked and server.stats()["unparks"] == 1
    assert "close_notify sent" in server.reason
    (notify,) = server.take_outgoing()
    link.client.feed(notify, deadline)
    assert link.client.status == EngineStatus.DISCONNECTED
    assert deadline - last_rx <= 8000
    with pytest.raises(errors.StateError):
        server.write(b"late", deadline)
    link.close()


def test_reconnecting_hello_does_not_unpark_or_reset() -> None:
    """An epoch-0 ClientHello cannot change a parked connection any more
    (in-context client port reuse is compiled out): it is discarded without
    waking it, and the session still works afterwards."""
    client_cfg, _, gate = psk_configs()
    server_cfg = EngineConfig.server(gate=gate, psks={PSK_ID: PSK_KEY}, park_after_ms=PARK_MS)
    link = Link(client_cfg, server_cfg, gate)
    link.handshake()
    _warm(link)
    server = link.server
    assert server is not None
    _park(link, server)
    restarted = Connection(client_cfg, link.now)  # same address and port
    restarted.update(link.now)
    for datagram in restarted.take_outgoing():
        server.feed(datagram, link.now)
    assert server.parked and server.stats()["unparks"] == 0
    assert server.status == EngineStatus.CONNECTED
    _deliver(link, link.client, server, b"old session")
    restarted.close()
    link.close()


def test_parking_defaults_and_opt_out() -> None:
    never = _link(park_after_ms=0)
    _warm(never)
    assert never.server is not None
    never.run_until(lambda: False, 20_000)
    assert not never.server.parked and never.server.stats()["parks"] == 0
    # Client connections do not park unless asked to.
    assert not never.client.parked and never.client.stats()["parks"] == 0
    never.close()
    # Server default: 5 s of silence.
    client_cfg, server_cfg, gate = psk_configs()
    link = Link(client_cfg, server_cfg, gate)
    link.handshake()
    _warm(link)
    assert link.server is not None
    start = link.now
    assert link.run_until(lambda: link.server.parked, 10_000)  # type: ignore[union-attr]
    assert link.now - start == 5000
    link.close()


def test_client_side_parking_opt_in() -> None:
    gate = CookieGate()
    server_cfg = EngineConfig.server(gate=gate, psks={PSK_ID: PSK_KEY}, park_after_ms=0)
    client_cfg = EngineConfig.client(psk=(PSK_ID, PSK_KEY), park_after_ms=PARK_MS)
    link = Link(client_cfg, server_cfg, gate)
    link.handshake()
    assert link.server is not None
    _warm(link)
    _deliver(link, link.server, link.client, b"to client")
    _park(link, link.client)
    _deliver(link, link.server, link.client, b"wakes client")
    _deliver(link, link.client, link.server, b"client answers")
    assert link.client.stats()["unparks"] >= 1
    link.close()


def _server_heap(
    client_cfg: EngineConfig,
    server_cfg: EngineConfig,
    gate: CookieGate,
    *,
    park: bool,
    hostname: str | None = None,
) -> int:
    """Heap held by one established, idle server connection (configs excluded)."""
    gc.collect()
    before = alloc_stats()[0]
    link = Link(client_cfg, server_cfg, gate, hostname=hostname)
    link.handshake()
    _warm(link)
    server = link.server
    assert server is not None
    _deliver(link, server, link.client, b"reply")
    if park:
        _park(link, server)
    link.client.close()
    gc.collect()
    size = alloc_stats()[0] - before
    link.close()
    del link, server
    gc.collect()
    assert alloc_stats()[0] == before  # everything, the parked blob included, was freed
    return size


def _psk_server(park_after_ms: int) -> tuple[EngineConfig, EngineConfig, CookieGate]:
    client_cfg, _, gate = psk_configs()
    return (
        client_cfg,
        EngineConfig.server(gate=gate, psks={PSK_ID: PSK_KEY}, park_after_ms=park_after_ms),
        gate,
    )


def test_parked_connection_heap_upper_bound() -> None:
    active = _server_heap(*_psk_server(0), park=False)
    parked = _server_heap(*_psk_server(PARK_MS), park=True)
    assert active > 30_000  # 16 KiB in + out record buffers
    assert parked <= PARKED_HEAP_MAX, parked


def test_parked_certificate_connection_heap_upper_bound() -> None:
    key = native_key("ec")
    cert = native_self_signed(key, "game.example")
    gate = CookieGate()
    server_cfg = EngineConfig.server(gate=gate, key=key, certificate=cert, park_after_ms=PARK_MS)
    client_cfg = EngineConfig.client(trusted_chain=cert)
    parked = _server_heap(client_cfg, server_cfg, gate, park=True, hostname="game.example")
    assert parked <= PARKED_HEAP_MAX, parked


def test_verified_client_keeps_flags_when_parked_without_peer_certificate() -> None:
    # KEEP_PEER_CERTIFICATE is off: verification still happens during the
    # handshake, the flags are ours, and the parked client holds no chain.
    key = native_key("ec")
    cert = native_self_signed(key, "game.example")
    gate = CookieGate()
    server_cfg = EngineConfig.server(gate=gate, key=key, certificate=cert, park_after_ms=0)
    client_cfg = EngineConfig.client(trusted_chain=cert, park_after_ms=PARK_MS)
    link = Link(client_cfg, server_cfg, gate, hostname="game.example")
    link.handshake()
    assert link.client.verify_flags == 0
    _warm(link)
    _deliver(link, link.server, link.client, b"x")  # type: ignore[arg-type]
    _park(link, link.client)
    assert link.client.verify_flags == 0 and "ECDHE-ECDSA" in link.client.ciphersuite
    _deliver(link, link.client, link.server, b"y")  # type: ignore[arg-type]
    link.close()


def test_many_parked_connections_share_nothing() -> None:
    # Parked connections of one server are independent: waking one in the
    # middle does not disturb the others, and the heap scales per connection.
    client_cfg, _, gate = psk_configs()
    server_cfg = EngineConfig.server(gate=gate, psks={PSK_ID: PSK_KEY}, park_after_ms=PARK_MS)
    gc.collect()
    before = alloc_stats()[0]
    links = []
    for i in range(20):
        link = Link(client_cfg, server_cfg, gate, seed=i)
        link.handshake()
        _warm(link)
        assert link.server is not None
        _park(link, link.server)
        links.append(link)
    per_conn_pair = (alloc_stats()[0] - before) / len(links)
    # Only the server side parks here (clients default to never): one
    # active client (~36 KB) plus one parked server per pair.
    assert per_conn_pair < 36_500 + PARKED_HEAP_MAX
    middle = links[10]
    _deliver(middle, middle.client, middle.server, b"only me")  # type: ignore[arg-type]
    assert all(link.server.parked for link in links if link is not middle)  # type: ignore[union-attr]
    for link in links:
        link.close()
    assert CLIENT_ADDR  # the simulator's fixed client address: one per link object


def test_many_parks_do_not_force_a_trim_within_a_second() -> None:
    """Issue 11.4: every 256 parks used to force an immediate malloc_trim(0),
    bypassing the once-a-second limit, so whoever could make connections
    park (or, before the guard, re-park after a forgery) chose the trim rate.
    Now: at most one trim per second, whatever the cause."""
    from dtlspeer import DTLSHost
    from dtlspeer._binding import lib

    client_cfg, _, gate = psk_configs()
    server_cfg = EngineConfig.server(gate=gate, psks={PSK_ID: PSK_KEY}, park_after_ms=PARK_MS)
    servers = []
    for _ in range(300):
        link = Link(client_cfg, server_cfg, gate)
        link.handshake(max_ms=60_000)
        _warm(link)
        assert link.server is not None
        servers.append((link, link.server))
    host = DTLSHost("127.0.0.1", 0)  # its service() is a per-tick trim point
    for link, server in servers[:10]:
        server.update(link.now + PARK_MS)
        assert server.parked
    before = lib.dp_trim_count()
    deadline = time.monotonic() + 3
    while lib.dp_trim_count() == before and time.monotonic() < deadline:
        host.service(0.01)  # trims once the last trim is a second old
    assert lib.dp_trim_count() > before
    start, trims = time.monotonic(), lib.dp_trim_count()
    for link, server in servers[10:]:  # 290 parks: more than the old threshold of 256
        server.update(link.now + PARK_MS)
        assert server.parked
    host.service(0)
    if time.monotonic() - start < 1.0:
        assert lib.dp_trim_count() == trims
    host.close()
    for link, _ in servers:
        link.close()

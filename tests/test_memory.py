"""Memory per connection (issue #5): parking idle established connections
(mbedtls_ssl_context_save / _load) in the in-memory simulator, and upper
bounds on heap per connection measured with dp_alloc_stats (bytes only)."""

from __future__ import annotations

import gc

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
# Measured: 914 B (dp_conn + the serialized context + allocator headers).
# An active connection with 16 KiB record buffers is about 36 000 B.
PARKED_HEAP_MAX = 1200


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
    # The replay passes the cheap header check, so the context is restored;
    # its anti-replay window came back from the blob and drops the record.
    assert server.feed(recorded, link.now) == EngineStatus.CONNECTED
    assert server.read_all() == []
    stats = server.stats()
    assert stats["discarded"] == discarded + 1
    assert stats["unparks"] == 1
    # Nothing authentic arrived: it parks again at once.
    assert server.parked and stats["parks"] == 2
    _deliver(link, link.client, server, b"fresh")
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
    # Epoch-1 garbage needs the keys to be told apart: it wakes the
    # connection, fails authentication, and the connection parks again.
    forged = b"\x17\xfe\xfd\x00\x01" + b"\x00\x00\x00\x00\x10\x00" + b"\x00\x30" + bytes(48)
    assert server.feed(forged, link.now) == EngineStatus.CONNECTED
    stats = server.stats()
    assert stats["unparks"] == 1 and stats["bad_mac"] == 1 and server.parked
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
    assert not server.parked and server.stats()["unparks"] == 0
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

"""Bounded, seeded fuzzing of every entry point that takes untrusted bytes.

Seeds are real datagrams captured from the in-memory link (PSK and
ECDHE-ECDSA, with a fragmented variant) and real keys/certificates; the
mutations are seeded (``tests/fuzz/mutate.py``), so every run feeds the same
inputs. Each test is bounded by an iteration count and a time budget, and
asserts behaviour, not just survival: allowed statuses and verdicts,
counters that account for every input, records that are only ever the real
peer's, and ``dp_alloc_stats`` back at its baseline once everything is freed.
CI runs this file again against the AddressSanitizer build. Longer,
coverage-guided campaigns: ``tools/fuzz.py`` (see ``tests/fuzz/README.md``).
"""

from __future__ import annotations

import gc
import random
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from _dtls_sim import alloc_stats, native_key
from _host_clients import PSK_IDENTITY, PSK_KEY, EngineClients
from dtlspeer import DTLSHost
from dtlspeer._engine import EngineStatus
from fuzz.mutate import DatagramMutator, PemDerMutator, split_records
from fuzz.seeds import (
    FUZZ_ADDR,
    Identity,
    Transcript,
    capture_all,
    cert_seeds,
    hello_with_cookie,
    key_seeds,
    make_identity,
)
from fuzz.targets import (
    CertTarget,
    ClientTarget,
    ENetTarget,
    EstablishedTarget,
    GateTarget,
    KeyTarget,
    ServerHandshakeTarget,
    TakeoverTarget,
    _key_der,
    capture_enet_datagrams,
    classify_hello,
)

CONNECTED = EngineStatus.CONNECTED
# Each loop stops at its iteration count or its time budget, whichever
# comes first (the AddressSanitizer run is several times slower); the
# inputs are the same either way, only fewer of them.
TIME_BUDGET_S = 20.0


def budget(iterations: int, seconds: float = TIME_BUDGET_S) -> Iterator[int]:
    """range(iterations), cut short after ``seconds``."""
    end = time.monotonic() + seconds
    for i in range(iterations):
        if i and time.monotonic() > end:
            return
        yield i


class Corpus:
    """Identities, transcripts and key/certificate seeds (made once per module)."""

    def __init__(self) -> None:
        self.identity: Identity = make_identity()
        self.other: Identity = make_identity()
        self.transcripts: list[Transcript] = capture_all(self.identity)
        self.psk, self.ecdhe, self.fragmented = self.transcripts
        self.datagrams = [d for t in self.transcripts for d in t.all()]
        self.hellos = [d for t in self.transcripts for d in t.to_server[:2]]
        self.rsa = native_key("rsa")
        self.keys = key_seeds(self.identity, self.rsa)
        self.certs = cert_seeds(self.identity, self.other)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus()


class NoLeaks:
    """dp_alloc_stats before and after: everything the test made is freed."""

    def __enter__(self) -> NoLeaks:
        gc.collect()
        self.before = alloc_stats()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            gc.collect()
            assert alloc_stats() == self.before


def test_seeds_are_real_sessions(corpus: Corpus) -> None:
    """The corpus holds every message kind the fuzzers start from."""
    for t in corpus.transcripts:
        kinds = {(d[0], d[13]) for d in t.to_server[:2]}
        assert kinds == {(22, 1)}  # two ClientHellos, the second with the cookie
        assert classify_hello(hello_with_cookie(t))[1]
        assert t.to_client[0][13] == 3  # HelloVerifyRequest
        types = {r[0] for d in t.all() for r in split_records(d)[0]}
        assert {20, 21, 22, 23} <= types  # CCS, alert (close_notify), handshake, data
    assert len(corpus.fragmented.to_client) > len(corpus.ecdhe.to_client)  # MTU 300
    assert len(corpus.keys) == 8 and len(corpus.certs) == 3


# ---- (a) the cookie gate ------------------------------------------------------------


def test_fuzz_cookie_gate(corpus: Corpus) -> None:
    """Mutated hellos (and everything else) against an independent model of
    the gate: verdict, reply, cookie validity and every counter."""
    rng = random.Random(0xC00C1E)
    mutator = DatagramMutator(rng, corpus.datagrams)
    with NoLeaks():
        target = GateTarget(corpus.psk)
        for i in budget(6000):
            seed = rng.choice(corpus.hellos) if i % 4 else rng.choice(corpus.datagrams)
            datagram = mutator.mutate(seed) if i % 8 else seed
            addr = FUZZ_ADDR if i % 3 else rng.randbytes(rng.choice((1, 6, 22, 64)))
            target.run(datagram, addr=addr, now=rng.choice((1_000, 29_999, 30_000, 59_999)))
        target.check_totals()
        assert target.verdicts["ADMIT"] > 0 and target.verdicts["REPLY"] > 0
        assert target.kinds["malformed"] > 0 and target.kinds["not_hello"] > 0
        target.close()


# ---- (b) server connections -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["psk", "ecdhe"])
def test_fuzz_server_handshake(corpus: Corpus, kind: str) -> None:
    """A server admitted with a real hello, then fed mutated client flights
    (captured from another session): never CONNECTED, counters consistent."""
    rng = random.Random(f"server-{kind}")
    transcript = corpus.psk if kind == "psk" else corpus.ecdhe
    mutator = DatagramMutator(rng, corpus.datagrams)
    flights = transcript.to_server[1:]
    with NoLeaks():
        target = ServerHandshakeTarget(kind, corpus.identity if kind == "ecdhe" else None,
                                       transcript)
        for _ in budget(300):
            target.run([mutator.mutate(d) if rng.random() < 0.6 else d
                        for d in rng.sample(flights, rng.randint(1, len(flights)))])
        assert sum(target.statuses.values()) > 0
        target.close()


@pytest.mark.parametrize(("kind", "park_after_ms"), [("psk", None), ("ecdhe", None),
                                                     ("psk", 10)])
def test_fuzz_established_server(corpus: Corpus, kind: str, park_after_ms: Any) -> None:
    """Mutations of this session's own records (epoch, sequence, length,
    duplicates, splices) and of captured datagrams to an established (or
    parked) server: only the client's records are ever delivered, each at
    most once, and the session still carries data afterwards."""
    rng = random.Random(f"established-{kind}-{park_after_ms}")
    with NoLeaks():
        target = EstablishedTarget(kind, corpus.identity if kind == "ecdhe" else None,
                                   park_after_ms=park_after_ms)
        for _ in budget(150):
            own = [target.authentic_datagram() for _ in range(2)]
            mutator = DatagramMutator(rng, own + corpus.datagrams)
            if park_after_ms is not None:
                target.idle(park_after_ms * 2)
                assert target.target.parked
            batch = [mutator.mutate(rng.choice(own) if rng.random() < 0.8
                                    else rng.choice(corpus.datagrams)) for _ in range(3)]
            if rng.random() < 0.2:
                batch.append(rng.choice(own) * 2)  # the same record twice in one datagram
            target.run(batch)
        target.close()
        totals = target.totals
        assert totals["server.records_in"] > 0 and totals["server.discarded"] > 0
        if park_after_ms is not None:
            assert totals["server.parks"] > 0 and totals["server.unparks"] > 0


def test_fuzz_takeover_from_a_known_address() -> None:
    """Multi-record datagrams from an established Godot-style peer's address
    (issue 11 item 1): epoch-0 CCS records, ClientHellos with a valid cookie
    and the client's own records, mutated and spliced. The live peer stays
    the same CONNECTED object, only its client's records are delivered, no
    forged handshake connects, and the client's next record still arrives."""
    rng = random.Random("takeover")
    with NoLeaks():
        target = TakeoverTarget()
        for _ in budget(150):
            pool = target.pool()
            mutator = DatagramMutator(rng, pool)
            pieces = [mutator.mutate(p) if rng.random() < 0.5 else p
                      for p in rng.sample(pool, rng.randint(1, 3))]
            target.run(b"".join(pieces))
            if rng.random() < 0.1:
                target.check_live()
        target.check_live()
        assert target.injected > 0 and target.successors > 0
        target.close()
        del target
        gc.collect()


# ---- (c) client connections ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["psk", "ecdhe", "fragmented"])
def test_fuzz_client_handshake(corpus: Corpus, kind: str) -> None:
    """A client that sent its hello, fed mutated HelloVerifyRequests and
    server flights: never CONNECTED, every status allowed."""
    rng = random.Random(f"client-{kind}")
    transcript = {"psk": corpus.psk, "ecdhe": corpus.ecdhe, "fragmented": corpus.fragmented}[kind]
    mutator = DatagramMutator(rng, corpus.datagrams)
    with NoLeaks():
        target = ClientTarget("psk" if kind == "psk" else "ecdhe",
                              None if kind == "psk" else corpus.identity)
        for _ in budget(300):
            flights = transcript.to_client[:rng.randint(1, len(transcript.to_client))]
            target.run([mutator.mutate(d) if rng.random() < 0.5 else d for d in flights])
        target.close()


@pytest.mark.parametrize("kind", ["psk", "ecdhe"])
def test_fuzz_established_client(corpus: Corpus, kind: str) -> None:
    """The server's records, mutated, to an established client."""
    rng = random.Random(f"established-client-{kind}")
    with NoLeaks():
        target = EstablishedTarget(kind, corpus.identity if kind == "ecdhe" else None,
                                   side="client")
        for _ in budget(150):
            own = [target.authentic_datagram() for _ in range(2)]
            mutator = DatagramMutator(rng, own + corpus.datagrams)
            target.run([mutator.mutate(rng.choice(own)) for _ in range(3)])
        target.close()
        assert target.totals["client.records_in"] > 0


# ---- (d) keys and certificates ---------------------------------------------------------------


def test_fuzz_key_parse(corpus: Corpus) -> None:
    """Mutated PEM/DER keys: a supported key that round-trips, or an error
    that leaves the handle's key untouched."""
    rng = random.Random("keys")
    mutator = PemDerMutator(rng, corpus.keys)
    with NoLeaks():
        target = KeyTarget(_key_der(corpus.identity.key, 0))
        for i in budget(1500):
            target.run(mutator.mutate(rng.choice(corpus.keys)), i % 2)
        assert target.results["error"] > 0 and target.results["parsed"] > 0


def test_fuzz_cert_parse(corpus: Corpus) -> None:
    """Mutated PEM/DER certificates and bundles: a count and working
    accessors on every certificate, or an error that keeps the old chain."""
    rng = random.Random("certs")
    mutator = PemDerMutator(rng, corpus.certs)
    with NoLeaks():
        target = CertTarget(corpus.certs[0])
        for i in budget(1500):
            target.run(mutator.mutate(rng.choice(corpus.certs)), i % 2)
        assert target.results["error"] > 0 and target.results["parsed"] > 0


# ---- (e) the batch path over a real socket ---------------------------------------------


def _service_until(host: DTLSHost, events: list[Any], condition: Any,
                   seconds: float = 5.0) -> bool:
    """Service the host (collecting its events) until condition() holds."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        events.extend(host.service(0.002))
        if condition():
            return True
    return condition()


def test_fuzz_host_service_over_loopback(corpus: Corpus) -> None:
    """A few hundred mutated datagrams over loopback into DTLSHost.service,
    from an unknown address (the gate) and from an established peer's
    address (the connection), then a real client still connects and talks."""
    with NoLeaks():
        _host_session(corpus, random.Random("host"))
        gc.collect()  # the native host and client configs are freed on collection


def _host_session(corpus: Corpus, rng: random.Random) -> None:
    """Fuzz one DTLSHost from plain sockets, then connect a real client."""
    host = DTLSHost("127.0.0.1", 0, server_psk={PSK_IDENTITY: PSK_KEY})
    port = host.get_local_port()
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.1", 0))
    try:
        # Unknown address: every datagram is the gate's (no cookie of
        # this address is in the corpus, so nothing is admitted).
        mutator = DatagramMutator(rng, corpus.datagrams)
        sent = 0
        for i in range(300):
            seed = rng.choice(corpus.hellos if i % 2 else corpus.datagrams)
            stranger.sendto(mutator.mutate(seed), ("127.0.0.1", port))
            sent += 1
            if i % 25 == 0:
                assert host.service(0) == []
        events: list[Any] = []
        assert _service_until(host, events,
                              lambda: host.get_stats()["datagrams_in"] >= sent)
        assert events == []
        stats = host.get_stats()
        assert stats["datagrams_in"] == sent
        assert stats["hvr_sent"] + stats["gate_dropped"] == sent
        assert stats["admitted"] == 0 and stats["peers"] == 0

        # An established peer: a real client on a plain socket, then its
        # own records, mutated, from its address (the connection's path).
        clients = EngineClients(2, port, sources=2)
        clients.start(0, 1)
        assert _service_until(host, events,
                              lambda: (clients.pump(), clients.status(0) == CONNECTED)[-1])
        conn = clients.conns[0]
        assert conn is not None
        before = host.get_stats()["datagrams_in"]
        own: list[bytes] = []
        for i in range(30):
            conn.write(b"real-%d" % i, int(time.monotonic() * 1000))
            own.extend(conn.take_outgoing())
        mutator = DatagramMutator(rng, own + corpus.datagrams)
        routed = 0
        for i in range(200):
            clients.sockets[0].send(mutator.mutate(rng.choice(own)))
            routed += 1
            if i % 25 == 0:
                events.extend(host.service(0))
        assert _service_until(
            host, events, lambda: host.get_stats()["datagrams_in"] >= before + routed)
        assert host.get_stats()["datagrams_in"] == before + routed
        events.extend(host.service(0))
        # Nothing but the client's own records was delivered.
        received = [e.data for e in events if e.type.name == "RECEIVE"]
        assert set(received) <= {b"real-%d" % i for i in range(30)}
        assert len(received) == len(set(received))

        # A new real client connects and both directions work.
        clients.start(1, 2)
        assert _service_until(host, events,
                              lambda: (clients.pump(), clients.status(1) == CONNECTED)[-1])
        clients.write(1, b"hello after the fuzz")
        late: list[Any] = []

        def arrived() -> bool:
            clients.pump()
            for e in late:
                if e.type.name == "RECEIVE" and e.data == b"hello after the fuzz":
                    e.peer.put_packet(b"reply")
            late.clear()
            return b"reply" in clients.received[1]

        assert _service_until(host, late, arrived)
        clients.close()
    finally:
        stranger.close()
        host.close()


# ---- ENet's receive path -----------------------------------------------------------------


def enet_mutations(rng: random.Random, seeds: list[bytes]) -> list[bytes]:
    """ENet-aware edits of real datagrams: header peer id / flags / session,
    command number, channel, reliable sequence, length and fragment fields
    (counts, numbers, offsets, totals), plus the generic byte mutations."""
    generic = DatagramMutator(rng, seeds)
    base = bytearray(rng.choice(seeds))
    op = rng.randrange(5)
    if op == 0 and len(base) >= 2:  # peer id, session and header flags
        base[0:2] = rng.randrange(1 << 16).to_bytes(2, "big")
    elif op == 1 and len(base) >= 5:  # command number, channel
        base[4] = rng.choice((0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 0x80 | 6, 0xFF))
        if len(base) >= 6:
            base[5] = rng.choice((0, 1, 3, 0xFE, 0xFF))
    elif op == 2 and len(base) >= 12:  # a 16/32-bit field anywhere in the commands
        at = rng.randrange(4, len(base) - 2)
        width = rng.choice((2, 4)) if at + 4 <= len(base) else 2
        value = rng.choice((0, 1, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 20))
        base[at : at + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "big")
    elif op == 3:
        return [bytes(base), bytes(base)]  # duplicated
    else:
        return [generic.mutate(bytes(base))]
    return [bytes(base)]


@pytest.mark.parametrize("mode", ["plain", "dtls"])
def test_fuzz_enet_receive(mode: str) -> None:
    """Mutated real ENet datagrams into a live ENet server (plain: from the
    client's address; dtls: inside the client's authenticated DTLS session):
    no exception, every datagram accounted for, memory bounded, sessions
    re-established when ENet ends them; everything freed at the end."""
    seeds = capture_enet_datagrams()
    assert len(seeds) >= 8
    rng = random.Random(13 if mode == "plain" else 31)
    with NoLeaks():
        target = ENetTarget(mode)
        try:
            for _ in budget(1500):
                target.run(enet_mutations(rng, seeds))
            assert target.runs > 0 and target.sessions >= 1
        finally:
            target.close()
        del target

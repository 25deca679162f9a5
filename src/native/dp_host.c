/*
 * dp_host.c: the DTLS host, the batch path for servers and clients with many
 * peers (ENet-style). One dp_host_service call does everything for every
 * peer: wait, read, route, gate, handshake, decrypt, timers, events, send.
 *
 * Parts reused, not re-implemented:
 *   dp_endpoint  the socket, recvmmsg batches and the address -> slot hash
 *                table. The host installs a sink, so each datagram comes
 *                straight here with its slot handle (0 = unknown sender)
 *                instead of being queued; peers are created with
 *                dp_ep_slot_open only after the gate admitted them, so
 *                spoofed floods allocate nothing (no pending slots either).
 *   dp_cookie    the stateless HelloVerifyRequest gate.
 *   dp_conn      the DTLS engine (one per peer).
 *
 * Peers
 *   A peer's id is its endpoint slot handle. The peer table is indexed by
 *   the slot index (the low 32 bits of the handle) and checked against the
 *   whole handle, so lookup is O(1) and stale ids are refused.
 *   Life: live (conn != NULL) -> ended (conn freed, `final` holds status,
 *   reason and counters) -> its DISCONNECT/ERROR event is written ->
 *   released at the start of the next service (slot closed, address
 *   unknown again). Until then datagrams from its address are dropped.
 *
 * Timers
 *   A binary min-heap of peers keyed by the absolute time of their next
 *   dp_conn_next_timeout. A service pops only due entries, so 10 000 idle
 *   peers cost nothing per call. Keys are lowered eagerly and raised lazily:
 *   a record received pushes the idle deadline later but leaves the heap
 *   alone; when the stale (early) key comes up, the entry is re-keyed
 *   without running the connection. O(log n) per real timer.
 *
 * Events
 *   Peers with something to report sit in a FIFO ready list. Emission
 *   writes, per peer and in order, CONNECT, RECEIVE (records read straight
 *   from the connection into the payload buffer) and DISCONNECT/ERROR (the
 *   reason text as payload). When the event array or the payload buffer is
 *   full, emission stops and the peer keeps its place: records stay in its
 *   connection, nothing is lost, order is kept. While the budget of the
 *   call is used up, the socket is not read further (the kernel keeps the
 *   rest).
 *
 * Sending
 *   dp_host_send encrypts at once into the connection's outgoing queue and
 *   marks the peer dirty. A flush moves dirty peers' datagrams into one
 *   arena and hands them to dp_ep_send_batch (sendmmsg). Ending a
 *   peer flushes its last datagrams (close_notify, alerts) into the arena
 *   before its connection is freed.
 *
 * Threads
 *   The host's lock is its endpoint's mutex: every public dp_host_* call
 *   holds it (host_* are the bodies) and uses the dp_ep_* endpoint forms.
 *   Only the wait inside dp_host_service releases it, so HostPeer calls on
 *   other threads never wait behind a blocked service. dp_host_close marks
 *   the host closed, sends close_notify, then dp_ep_close wakes the waiting
 *   service (which sees `closed` and returns DP_ERR_CLOSED without touching
 *   anything) and closes the socket, which the host owns.
 */
#include "dp_engine.h"

#include <errno.h>
#include <string.h>

#define DP_NONE UINT32_MAX
#define DP_HOST_ARENA (256u * 1024u) /* outgoing bytes per send batch */
#define DP_HOST_BATCH 256u           /* datagrams per send batch */
#define DP_HOST_DEEP_QUEUE 32        /* a peer's outgoing queue flushed early */
#define DP_HOST_REASON_LEN 320
#define DP_HOST_SUITE_LEN 96
#define DP_RECV_BUF 65536u           /* endpoint slot queues are unused (sink) */

typedef struct dp_host_final {
    int status;
    int last_error;
    uint32_t verify_flags;
    dp_conn_stats stats;
    char reason[DP_HOST_REASON_LEN];
    char suite[DP_HOST_SUITE_LEN];
    uint8_t own_cid[DP_CID_MAX]; /* dp_conn_cid, kept like the suite */
    uint8_t peer_cid[DP_CID_MAX];
    size_t own_cid_len;
    size_t peer_cid_len;
    int cid_negotiated;
    int resumed;
    unsigned char *session; /* outgoing: the saved session (secret), NULL if none */
    size_t session_len;
    dp_peer_info *peer;     /* server with client_auth: the verified client certificate */
} dp_host_final;

static void final_free(dp_host_final *f)
{
    if (f != NULL) {
        dp_session_blob_free(f->session, f->session_len);
        dp_peer_info_free(f->peer);
        dp_free(f);
    }
}

typedef struct dp_host_peer {
    uint64_t handle;      /* slot handle = peer id; 0 = free entry */
    dp_conn *conn;        /* NULL once ended */
    dp_conn *successor;   /* a new handshake from this connected peer's address */
    dp_conn *orphan;      /* the successor, once this peer ended first (promote_orphans) */
    uint32_t orphan_next;
    uint32_t hs_prev;     /* handshake FIFO links (see hs_sync) */
    uint32_t hs_next;
    dp_host_final *final; /* set once ended */
    int64_t due_ms;       /* heap key */
    uint32_t heap_pos;    /* DP_NONE: not in the heap */
    uint32_t ready_next;
    uint32_t dirty_next;
    uint32_t release_next;
    uint8_t in_ready;
    uint8_t in_dirty;
    uint8_t outgoing;         /* created by dp_host_connect */
    uint8_t connected_seen;   /* reached CONNECTED */
    uint8_t connect_reported; /* CONNECT event written */
    uint8_t end_reported;     /* DISCONNECT/ERROR event written */
    uint8_t excluded;         /* scratch flag of dp_host_broadcast */
    uint8_t reason;           /* DP_HOST_REASON_* once ended */
    uint8_t in_hs;            /* in the handshake FIFO */
    uint8_t address_changed;  /* ADDRESS_CHANGED event to write (RFC 9146 move) */
} dp_host_peer;

struct dp_host {
    dp_endpoint *ep;
    int closed;
    dp_config *server_cfg;
    dp_cookie_gate *gate;
    dp_config *client_cfg;
    uint32_t max_peers;

    dp_host_peer *peers; /* indexed by slot index */
    uint32_t peers_cap;
    uint32_t live;      /* entries in use */
    int clock_injected; /* this service() was given a time (tests), not DP_NOW */
    uint32_t connected; /* connected_seen and not ended */
    uint32_t ended;     /* ended, not released */

    uint32_t *heap; /* peer indices */
    uint32_t heap_len, heap_cap;

    uint32_t ready_head, ready_tail;
    uint32_t dirty_head;

    /* Handshakes the gate admitted (server peers still handshaking, and
     * successors), oldest first: bounded in total and per IP address; the
     * oldest without progress makes room for a newcomer. */
    uint32_t hs_head, hs_tail, hs_count;
    uint32_t max_handshaking;
    uint32_t max_handshaking_per_address;
    uint32_t release_head;
    /* Ended entries whose successor waits to become a peer of its own
     * (finalize -> promote_orphans, within the same API call). */
    uint32_t orphan_head;

    /* outgoing batch */
    uint8_t *arena;
    size_t arena_used;
    dp_endpoint_out *batch;
    uint32_t batch_len;

    /* service budget: what the current call can still return */
    uint32_t room_events;
    size_t room_bytes;
    uint32_t fed_events;
    size_t fed_bytes;

    dp_host_stats stats;
};

/* ---- Small helpers ---------------------------------------------------------- */

static int status_ended(int st)
{
    return st != DP_STATUS_HANDSHAKING && st != DP_STATUS_CONNECTED;
}

static uint32_t peer_index(uint64_t handle)
{
    return (uint32_t)(handle & 0xFFFFFFFFu);
}

static dp_host_peer *peer_get(const dp_host *h, uint64_t handle)
{
    uint32_t i = peer_index(handle);
    if (handle == 0 || i >= h->peers_cap || h->peers[i].handle != handle) {
        return NULL;
    }
    return &h->peers[i];
}

static size_t copy_text(const char *text, char *buf, size_t cap)
{
    size_t n = strlen(text);
    if (n >= cap) {
        n = cap - 1;
    }
    memcpy(buf, text, n);
    buf[n] = '\0';
    return n;
}

/* ---- Timer heap ------------------------------------------------------------- */

static int heap_less(const dp_host *h, uint32_t a, uint32_t b)
{
    return h->peers[h->heap[a]].due_ms < h->peers[h->heap[b]].due_ms;
}

static void heap_swap(dp_host *h, uint32_t a, uint32_t b)
{
    uint32_t pa = h->heap[a];
    h->heap[a] = h->heap[b];
    h->heap[b] = pa;
    h->peers[h->heap[a]].heap_pos = a;
    h->peers[h->heap[b]].heap_pos = b;
}

static void heap_up(dp_host *h, uint32_t pos)
{
    while (pos > 0) {
        uint32_t parent = (pos - 1) / 2;
        if (!heap_less(h, pos, parent)) {
            break;
        }
        heap_swap(h, pos, parent);
        pos = parent;
    }
}

static void heap_down(dp_host *h, uint32_t pos)
{
    for (;;) {
        uint32_t l = 2 * pos + 1, r = l + 1, best = pos;
        if (l < h->heap_len && heap_less(h, l, best)) {
            best = l;
        }
        if (r < h->heap_len && heap_less(h, r, best)) {
            best = r;
        }
        if (best == pos) {
            break;
        }
        heap_swap(h, pos, best);
        pos = best;
    }
}

static void heap_remove(dp_host *h, dp_host_peer *p)
{
    uint32_t pos = p->heap_pos;
    if (pos == DP_NONE) {
        return;
    }
    uint32_t last = --h->heap_len;
    p->heap_pos = DP_NONE;
    if (pos != last) {
        h->heap[pos] = h->heap[last];
        h->peers[h->heap[pos]].heap_pos = pos;
        heap_down(h, pos);
        heap_up(h, pos);
    }
}

/* exact = 1: the key becomes due (timer path). exact = 0: only an earlier
 * deadline moves the entry; a later one is fixed when the entry comes up. */
static void heap_schedule(dp_host *h, dp_host_peer *p, int64_t due, int exact)
{
    if (due < 0) {
        heap_remove(h, p);
        return;
    }
    if (p->heap_pos == DP_NONE) {
        /* heap_cap >= peers_cap, reserved when the peer was created */
        uint32_t pos = h->heap_len++;
        h->heap[pos] = peer_index(p->handle);
        p->heap_pos = pos;
        p->due_ms = due;
        heap_up(h, pos);
    } else if (due < p->due_ms) {
        p->due_ms = due;
        heap_up(h, p->heap_pos);
    } else if (exact && due > p->due_ms) {
        p->due_ms = due;
        heap_down(h, p->heap_pos);
    }
}

/* ---- Lists -------------------------------------------------------------------- */

static void mark_ready(dp_host *h, dp_host_peer *p)
{
    if (p->in_ready) {
        return;
    }
    uint32_t i = peer_index(p->handle);
    p->in_ready = 1;
    p->ready_next = DP_NONE;
    if (h->ready_tail != DP_NONE) {
        h->peers[h->ready_tail].ready_next = i;
    } else {
        h->ready_head = i;
    }
    h->ready_tail = i;
}

static void pop_ready(dp_host *h)
{
    dp_host_peer *p = &h->peers[h->ready_head];
    h->ready_head = p->ready_next;
    if (h->ready_head == DP_NONE) {
        h->ready_tail = DP_NONE;
    }
    p->in_ready = 0;
    p->ready_next = DP_NONE;
}

static void mark_dirty(dp_host *h, dp_host_peer *p)
{
    if (!p->in_dirty) {
        p->in_dirty = 1;
        p->dirty_next = h->dirty_head;
        h->dirty_head = peer_index(p->handle);
    }
}

/* ---- Handshake FIFO ------------------------------------------------------------ */

static int hs_member(const dp_host_peer *p)
{
    if (p->successor != NULL) {
        return 1;
    }
    return p->conn != NULL && !p->outgoing && dp_conn_status(p->conn) == DP_STATUS_HANDSHAKING;
}

static void hs_unlink(dp_host *h, dp_host_peer *p)
{
    if (!p->in_hs) {
        return;
    }
    if (p->hs_prev != DP_NONE) {
        h->peers[p->hs_prev].hs_next = p->hs_next;
    } else {
        h->hs_head = p->hs_next;
    }
    if (p->hs_next != DP_NONE) {
        h->peers[p->hs_next].hs_prev = p->hs_prev;
    } else {
        h->hs_tail = p->hs_prev;
    }
    p->hs_prev = p->hs_next = DP_NONE;
    p->in_hs = 0;
    h->hs_count--;
}

/* Put the entry in the FIFO (at the tail: newest) or take it out, as its
 * connections say. */
static void hs_sync(dp_host *h, dp_host_peer *p)
{
    int member = hs_member(p);
    if (member && !p->in_hs) {
        uint32_t i = peer_index(p->handle);
        p->in_hs = 1;
        p->hs_next = DP_NONE;
        p->hs_prev = h->hs_tail;
        if (h->hs_tail != DP_NONE) {
            h->peers[h->hs_tail].hs_next = i;
        } else {
            h->hs_head = i;
        }
        h->hs_tail = i;
        h->hs_count++;
    } else if (!member && p->in_hs) {
        hs_unlink(h, p);
    }
}

/* ---- Sending ------------------------------------------------------------------ */

static void send_batch(dp_host *h)
{
    if (h->batch_len == 0) {
        return;
    }
    size_t failed = 0;
    int last_error = 0;
    int sent = dp_ep_send_batch(h->ep, h->batch, h->batch_len, &failed, &last_error);
    if (sent > 0) {
        h->stats.datagrams_out += (uint64_t)sent;
    }
    h->stats.send_batches++;
    h->stats.send_dropped += failed;
    if (last_error != 0) {
        h->stats.last_send_error = last_error;
    }
    h->batch_len = 0;
    h->arena_used = 0;
}

/* Move every datagram the peer's connection produced into the batch. */
static void flush_conn(dp_host *h, dp_host_peer *p, dp_conn *c)
{
    if (c == NULL) {
        return;
    }
    /* Bounded by the connection's outgoing queue; one retry per datagram
     * after making room. */
    for (int guard = 0; guard < 4096; guard++) {
        if (h->batch_len == DP_HOST_BATCH) {
            send_batch(h);
        }
        int n = dp_conn_pop_outgoing(c, h->arena + h->arena_used,
                                     DP_HOST_ARENA - h->arena_used);
        if (n == DP_ERR_WOULD_BLOCK) {
            break;
        }
        if (n == DP_ERR_BUFFER_TOO_SMALL && h->arena_used > 0) {
            send_batch(h);
            continue;
        }
        if (n < 0) {
            h->stats.send_dropped++; /* cannot happen: the arena holds any record */
            break;
        }
        dp_endpoint_out *m = &h->batch[h->batch_len++];
        m->handle = p->handle;
        m->dst = NULL;
        m->data = h->arena + h->arena_used;
        m->len = (size_t)n;
        h->arena_used += (size_t)n;
    }
}

static void flush_peer(dp_host *h, dp_host_peer *p)
{
    flush_conn(h, p, p->conn);
    flush_conn(h, p, p->successor); /* same address: the new session's flight */
}

static void flush_dirty(dp_host *h)
{
    while (h->dirty_head != DP_NONE) {
        dp_host_peer *p = &h->peers[h->dirty_head];
        h->dirty_head = p->dirty_next;
        p->in_dirty = 0;
        p->dirty_next = DP_NONE;
        flush_peer(h, p);
    }
    send_batch(h);
}

/* ---- Peer lifetime -------------------------------------------------------------- */

static int reserve_peers(dp_host *h, uint32_t index)
{
    if (index < h->peers_cap) {
        return DP_OK;
    }
    uint64_t cap = h->peers_cap ? h->peers_cap : 64;
    while (cap <= index) {
        cap *= 2;
    }
    if (cap > UINT32_MAX / 2) {
        return DP_ERR_LIMIT;
    }
    dp_host_peer *np = dp_calloc((size_t)cap, sizeof(dp_host_peer));
    uint32_t *nh = dp_calloc((size_t)cap, sizeof(uint32_t));
    if (np == NULL || nh == NULL) {
        dp_free(np);
        dp_free(nh);
        return DP_ERR_NO_MEMORY;
    }
    if (h->peers_cap) {
        memcpy(np, h->peers, (size_t)h->peers_cap * sizeof(dp_host_peer));
    }
    if (h->heap_len) {
        memcpy(nh, h->heap, (size_t)h->heap_len * sizeof(uint32_t));
    }
    dp_free(h->peers);
    dp_free(h->heap);
    h->peers = np;
    h->heap = nh;
    h->peers_cap = (uint32_t)cap;
    h->heap_cap = (uint32_t)cap;
    return DP_OK;
}

/* A table entry for a freshly opened slot. */
static dp_host_peer *peer_add(dp_host *h, uint64_t handle)
{
    if (reserve_peers(h, peer_index(handle)) < 0) {
        return NULL;
    }
    dp_host_peer *p = &h->peers[peer_index(handle)];
    memset(p, 0, sizeof(*p));
    p->handle = handle;
    p->heap_pos = DP_NONE;
    p->ready_next = p->dirty_next = p->release_next = p->hs_prev = p->hs_next = DP_NONE;
    p->orphan_next = DP_NONE;
    h->live++;
    return p;
}

/* Forget an entry whose slot is closed by the caller. */
static void peer_drop(dp_host *h, dp_host_peer *p)
{
    heap_remove(h, p);
    hs_unlink(h, p);
    dp_conn_free(p->successor);
    dp_conn_free(p->orphan);
    dp_conn_free(p->conn);
    final_free(p->final);
    memset(p, 0, sizeof(*p));
    p->heap_pos = DP_NONE;
    h->live--;
}

static uint8_t natural_reason(const dp_host_peer *p, int status, int last_error)
{
    if (status == DP_STATUS_DISCONNECTED) {
        return DP_HOST_REASON_PEER_CLOSED;
    }
    if (last_error == MBEDTLS_ERR_SSL_TIMEOUT) {
        return p->connected_seen ? DP_HOST_REASON_IDLE_TIMEOUT : DP_HOST_REASON_HANDSHAKE_TIMEOUT;
    }
    return p->connected_seen ? DP_HOST_REASON_TLS_ERROR : DP_HOST_REASON_HANDSHAKE_FAILED;
}

/* End a live peer: keep its outcome, send its last datagrams, free the TLS
 * state. reason: DP_HOST_REASON_* or NONE to derive it from the status. */
static int finalize(dp_host *h, dp_host_peer *p, uint8_t reason, const char *text)
{
    dp_host_final *f = dp_calloc(1, sizeof(*f));
    if (f == NULL) {
        return DP_ERR_NO_MEMORY;
    }
    dp_conn *c = p->conn;
    f->status = dp_conn_status(c);
    f->last_error = dp_conn_last_error(c);
    f->verify_flags = dp_conn_verify_flags(c);
    dp_conn_get_stats(c, &f->stats);
    (void)dp_conn_reason(c, f->reason, sizeof(f->reason));
    (void)dp_conn_ciphersuite(c, f->suite, sizeof(f->suite));
    f->cid_negotiated = dp_conn_cid(c, f->own_cid, &f->own_cid_len, f->peer_cid,
                                    &f->peer_cid_len) == 1;
    f->resumed = dp_conn_resumed(c);
    dp_conn_detach_outcome(c, &f->session, &f->session_len, &f->peer);
    if (reason == DP_HOST_REASON_NONE) {
        reason = natural_reason(p, f->status, f->last_error);
    } else {
        f->status = DP_STATUS_DISCONNECTED;
        f->last_error = 0;
    }
    if (text != NULL) {
        copy_text(text, f->reason, sizeof(f->reason));
    }
    flush_peer(h, p); /* copies close_notify / alerts into the batch */
    heap_remove(h, p);
    if (p->successor != NULL) {
        /* The live session ended first (idle timeout, close, error): the
         * client is past its hello, so the new handshake goes on as an
         * ordinary handshaking peer of the address. Not here: the callers
         * hold entry pointers and a new entry may move the table; every
         * caller's API call ends with promote_orphans. */
        p->orphan = p->successor;
        p->successor = NULL;
        p->orphan_next = h->orphan_head;
        h->orphan_head = peer_index(p->handle);
    }
    hs_unlink(h, p);
    if (p->connected_seen) {
        h->connected--;
    }
    h->ended++;
    dp_conn_free(c);
    p->conn = NULL;
    p->final = f;
    p->reason = reason;
    return DP_OK;
}

/* Release the entries whose last event the previous call returned. */
static void release_reported(dp_host *h)
{
    while (h->release_head != DP_NONE) {
        dp_host_peer *p = &h->peers[h->release_head];
        h->release_head = p->release_next;
        (void)dp_ep_slot_close(h->ep, p->handle);
        h->ended--;
        peer_drop(h, p);
    }
}

/* What the gate judges by: an injected time as it is, else DP_NOW, which
 * the gate reads from its own clock (the wall clock for a shared secret;
 * connections always run on the monotonic one). */
static int64_t gate_clock(const dp_host *h, int64_t now_ms)
{
    return h->clock_injected ? now_ms : DP_NOW;
}

/* After any call into a peer's connection: note what it now needs. */
static int64_t peer_due(const dp_host_peer *p)
{
    int64_t a = dp_conn_next_timeout(p->conn);
    int64_t b = p->successor != NULL ? dp_conn_next_timeout(p->successor) : -1;
    if (a < 0) {
        return b;
    }
    return (b >= 0 && b < a) ? b : a;
}

/* A connected peer whose session negotiated our CID: from now on its
 * records reach it from any address (dp_ep_slot_set_cid). A random
 * collision with another peer's CID leaves it routed by address only. */
static void route_cid(dp_host *h, const dp_host_peer *p)
{
    uint8_t cid[DP_CID_MAX];
    size_t cid_len = 0;
    if (dp_conn_cid(p->conn, cid, &cid_len, NULL, NULL) == 1 && cid_len != 0 &&
        dp_ep_slot_set_cid(h->ep, p->handle, cid, cid_len) != DP_OK) {
        h->stats.cid_collisions++;
    }
}

static void after_conn(dp_host *h, dp_host_peer *p, int exact_timer)
{
    dp_conn *c = p->conn;
    int st = dp_conn_status(c);
    hs_sync(h, p);
    if (st == DP_STATUS_CONNECTED && !p->connected_seen) {
        p->connected_seen = 1;
        h->connected++;
        mark_ready(h, p);
        route_cid(h, p);
    }
    if (dp_conn_outgoing_count(c) > 0) {
        mark_dirty(h, p);
    }
    if (status_ended(st)) {
        heap_remove(h, p);
        mark_ready(h, p);
        return;
    }
    if (dp_conn_pending_count(c) > 0) {
        mark_ready(h, p);
    }
    heap_schedule(h, p, peer_due(p), exact_timer);
}

/* ---- Receiving -------------------------------------------------------------------- */

/* Handshaking entries and successors from src's IP address (any port). */
static uint32_t hs_from(const dp_host *h, const dp_addr *src)
{
    uint32_t n = 0;
    for (uint32_t i = h->hs_head; i != DP_NONE; i = h->peers[i].hs_next) {
        dp_addr a;
        if (dp_ep_slot_addr(h->ep, h->peers[i].handle, &a) == DP_OK &&
            memcmp(a.ip, src->ip, sizeof(a.ip)) == 0) {
            n++;
        }
    }
    return n;
}

/* Drop the oldest admitted handshake that made no progress (the client's key
 * exchange never arrived: SYN-queue pruning). Connected peers are never
 * touched; an evicted server handshake was never reported, so it goes
 * without an event. entries_only: only a handshake that holds a peer entry
 * (a successor lives in its connected peer's entry: dropping it frees no
 * entry). 1 if one was evicted. */
static int evict_stalled(dp_host *h, int entries_only)
{
    for (uint32_t i = h->hs_head; i != DP_NONE; i = h->peers[i].hs_next) {
        dp_host_peer *p = &h->peers[i];
        if (p->successor != NULL) {
            if (entries_only || dp_conn_handshake_progressed(p->successor)) {
                continue;
            }
            dp_conn_free(p->successor);
            p->successor = NULL;
            hs_sync(h, p);
        } else {
            if (p->in_ready || p->in_dirty || dp_conn_handshake_progressed(p->conn)) {
                continue;
            }
            (void)dp_ep_slot_close(h->ep, p->handle);
            peer_drop(h, p);
        }
        h->stats.evicted_handshakes++;
        return 1;
    }
    return 0;
}

/* Room for one more admitted handshake from src (needs_entry: it takes a
 * peer entry, i.e. it is not a successor). 0: refused, counted. */
static int make_room(dp_host *h, const dp_addr *src, int needs_entry)
{
    if (hs_from(h, src) >= h->max_handshaking_per_address) {
        h->stats.dropped_handshake_per_address++;
        return 0;
    }
    while (h->hs_count >= h->max_handshaking || (needs_entry && h->live >= h->max_peers)) {
        if (!evict_stalled(h, needs_entry && h->live >= h->max_peers)) {
            if (needs_entry && h->live >= h->max_peers) {
                h->stats.dropped_peer_limit++;
            } else {
                h->stats.dropped_handshake_limit++;
            }
            return 0;
        }
    }
    return 1;
}

/* A new slot for a successor (dp_ep_slot_rebind: it takes the address; the
 * old slot stays for the old peer's last datagrams and event) and a table
 * entry reserved for it. On an error (no memory) the caller frees the
 * successor: the client retries as a new peer. The table may move: the
 * caller re-reads its entry pointers. */
static int successor_slot(dp_host *h, uint64_t old_handle, int64_t now_ms, uint64_t *handle)
{
    int rc = dp_ep_slot_rebind(h->ep, old_handle, now_ms, handle);
    if (rc == DP_OK && reserve_peers(h, peer_index(*handle)) < 0) {
        (void)dp_ep_slot_close(h->ep, *handle);
        rc = DP_ERR_NO_MEMORY; /* rebind left the old slot superseded */
    }
    return rc;
}

/* The successor's own peer entry (new id) at the slot successor_slot made. */
static void successor_peer(dp_host *h, uint64_t handle, dp_conn *succ)
{
    dp_host_peer *np = peer_add(h, handle); /* reserved: cannot fail */
    np->conn = succ;
    after_conn(h, np, 1);
}

/* The successor connected (its Finished was verified): the old peer ends
 * (RECONNECT; nothing sent, the address is the new session's) and the new
 * session becomes a NEW peer with its own id. p is invalid afterwards. */
static void takeover(dp_host *h, dp_host_peer *p, int64_t now_ms)
{
    uint32_t old_index = peer_index(p->handle);
    uint64_t handle = 0;
    int rc = successor_slot(h, p->handle, now_ms, &handle);
    p = &h->peers[old_index]; /* the table may have moved */
    dp_conn *succ = p->successor;
    p->successor = NULL;
    hs_sync(h, p);
    if (rc != DP_OK) {
        dp_conn_free(succ); /* no memory: the client retries as a new peer */
        h->stats.successors_failed++;
        return;
    }
    if (finalize(h, p, DP_HOST_REASON_RECONNECT,
                 "the client completed a new session from the same address and port") == DP_OK) {
        mark_ready(h, p);
    }
    h->stats.reconnects++;
    successor_peer(h, handle, succ);
}

/* The successors whose old session ended first (finalize) become handshaking
 * peers of their address, as takeover moves a connected one: a new slot
 * takes the address (the old entry stays until its event is released), a
 * new peer id, a place in the handshake FIFO; CONNECT when it connects.
 * Called where no entry pointer is held, before the entries are released. */
static void promote_orphans(dp_host *h, int64_t now_ms)
{
    while (h->orphan_head != DP_NONE) {
        uint32_t old_index = h->orphan_head;
        dp_host_peer *p = &h->peers[old_index];
        h->orphan_head = p->orphan_next;
        p->orphan_next = DP_NONE;
        dp_conn *orphan = p->orphan;
        p->orphan = NULL;
        uint64_t handle = 0;
        if (successor_slot(h, p->handle, now_ms, &handle) != DP_OK) {
            dp_conn_free(orphan);
            h->stats.successors_failed++;
            continue;
        }
        h->stats.successors_orphaned++;
        successor_peer(h, handle, orphan);
    }
}

/* After feeding or updating a successor. p is invalid afterwards. */
static void after_successor(dp_host *h, dp_host_peer *p, int64_t now_ms)
{
    dp_conn *c = p->successor;
    int st = dp_conn_status(c);
    if (dp_conn_outgoing_count(c) > 0) {
        mark_dirty(h, p);
    }
    if (st == DP_STATUS_CONNECTED) {
        takeover(h, p, now_ms);
        return;
    }
    if (status_ended(st)) {
        flush_conn(h, p, c); /* its alert, if any */
        dp_conn_free(c);
        p->successor = NULL;
        h->stats.successors_failed++;
        hs_sync(h, p);
    }
    heap_schedule(h, p, peer_due(p), 0);
}

/* An epoch-0 ClientHello record from a connected peer's address (RFC 6347
 * 4.2.8): judged by the gate, never given to the live connection. A valid
 * cookie starts (or feeds) the peer's successor. */
static void successor_hello(dp_host *h, dp_host_peer *p, const dp_addr *src, const uint8_t *data,
                            size_t len, int64_t now_ms)
{
    unsigned char tid[32];
    unsigned char reply[DP_HVR_LEN];
    size_t reply_len = 0;
    size_t tid_len = dp_addr_transport_id(src, tid);
    int verdict = dp_cookie_gate_check(h->gate, tid, tid_len, data, len, gate_clock(h, now_ms),
                                       reply,
                                       sizeof(reply), &reply_len);
    if (verdict == DP_GATE_REPLY) {
        if (dp_ep_send(h->ep, p->handle, NULL, reply, reply_len) >= 0) {
            h->stats.hvr_sent++;
            h->stats.datagrams_out++;
        }
        return;
    }
    if (verdict != DP_GATE_ADMIT) {
        h->stats.gate_dropped++;
        return;
    }
    if (p->successor == NULL) {
        uint32_t index = peer_index(p->handle);
        if (!make_room(h, src, 0)) {
            return;
        }
        p = &h->peers[index];
        if (p->handle == 0 || p->conn == NULL) {
            return; /* cannot happen: connected entries are never evicted */
        }
        if (dp_conn_new(h->server_cfg, NULL, tid, tid_len, now_ms, &p->successor) < 0) {
            h->stats.dropped_peer_limit++;
            return;
        }
        h->stats.successors++;
        hs_sync(h, p);
    }
    (void)dp_conn_feed(p->successor, data, len, now_ms);
    after_successor(h, p, now_ms);
}

/* A datagram for a peer's live connection: its records dropped above the
 * receive limit join the host's total. */
static void feed_live(dp_host *h, dp_host_peer *p, const uint8_t *data, size_t len,
                      int64_t now_ms)
{
    uint64_t over_limit = dp_conn_dropped_over_limit(p->conn);
    (void)dp_conn_feed(p->conn, data, len, now_ms);
    h->stats.dropped_over_limit += dp_conn_dropped_over_limit(p->conn) - over_limit;
    after_conn(h, p, 0);
    /* Plaintext is never longer than the datagram: a conservative estimate
     * of what this datagram adds to the payload buffer. */
    h->fed_events++;
    h->fed_bytes += len;
}

/* A datagram from a connected server peer's address. Routing while a
 * successor exists: a datagram whose first record is of epoch 0 is the new
 * handshake's (successor only); any other goes to the live connection
 * first, and to the successor only if the live one found nothing authentic
 * in it (both sessions use epoch 1: the new Finished, the old data; only
 * the keys tell them apart). A forged handshake can thus never take a
 * record from the live session. */
static void route_known(dp_host *h, dp_host_peer *p, const dp_addr *src, const uint8_t *data,
                        size_t len, int64_t now_ms)
{
    long hello = dp_find_client_hello(data, len);
    if (hello >= 0) {
        successor_hello(h, p, src, data + hello, len - (size_t)hello, now_ms);
        return;
    }
    if (p->successor != NULL && dp_first_record_epoch0(data, len)) {
        (void)dp_conn_feed(p->successor, data, len, now_ms);
        after_successor(h, p, now_ms);
        return;
    }
    /* The live connection's counters matter only with a successor beside
     * it: no copy of them per datagram otherwise. */
    dp_conn_stats before = {0};
    if (p->successor != NULL) {
        dp_conn_get_stats(p->conn, &before);
    }
    feed_live(h, p, data, len, now_ms);
    if (p->successor != NULL && p->conn != NULL &&
        dp_conn_status(p->conn) == DP_STATUS_CONNECTED) {
        dp_conn_stats after;
        dp_conn_get_stats(p->conn, &after);
        if (after.discarded > before.discarded) {
            (void)dp_conn_feed(p->successor, data, len, now_ms);
            after_successor(h, p, now_ms);
        }
    }
}

/* RFC 9146 section 6: a datagram with this peer's CID from another address
 * (its NAT rebound, or someone replays or forges). The peer moves there
 * only if its connection authenticated a record in it that is newer than
 * every record before (dp_conn_rx_newest): forged headers fail the AEAD,
 * and a replayed authentic record, from any address, is never newer. The
 * application learns it from an ADDRESS_CHANGED event. */
static void feed_from_new_address(dp_host *h, dp_host_peer *p, const dp_addr *src,
                                  const uint8_t *data, size_t len, int64_t now_ms)
{
    uint64_t newest = dp_conn_rx_newest(p->conn);
    feed_live(h, p, data, len, now_ms);
    if (p->conn == NULL || dp_conn_status(p->conn) != DP_STATUS_CONNECTED ||
        dp_conn_rx_newest(p->conn) <= newest) {
        h->stats.address_unmoved++;
        return;
    }
    if (dp_ep_slot_move(h->ep, p->handle, src) != DP_OK) {
        h->stats.address_refused++;
        return;
    }
    h->stats.address_changes++;
    p->address_changed = 1;
    mark_ready(h, p);
}

static void accept_new(dp_host *h, const dp_addr *src, const uint8_t *data, size_t len,
                       int64_t now_ms)
{
    if (h->server_cfg == NULL || h->gate == NULL) {
        h->stats.dropped_not_accepting++;
        return;
    }
    unsigned char tid[32];
    unsigned char reply[DP_HVR_LEN];
    size_t reply_len = 0;
    size_t tid_len = dp_addr_transport_id(src, tid);
    int verdict = dp_cookie_gate_check(h->gate, tid, tid_len, data, len, gate_clock(h, now_ms),
                                       reply,
                                       sizeof(reply), &reply_len);
    if (verdict == DP_GATE_REPLY) {
        /* Sent with the rest of the receive batch's replies (one sendmmsg). */
        if (dp_ep_queue_reply(h->ep, src, reply, reply_len) == DP_OK) {
            h->stats.hvr_sent++;
        }
        return;
    }
    if (verdict != DP_GATE_ADMIT) {
        h->stats.gate_dropped++;
        return;
    }
    if (!make_room(h, src, 1)) {
        return;
    }
    uint64_t handle = 0;
    if (dp_ep_slot_open(h->ep, src, now_ms, &handle) < 0) {
        h->stats.dropped_peer_limit++; /* out of memory for the slot */
        return;
    }
    dp_conn *conn = NULL;
    dp_host_peer *p = NULL;
    if (dp_conn_new(h->server_cfg, NULL, tid, tid_len, now_ms, &conn) < 0 ||
        (p = peer_add(h, handle)) == NULL) {
        dp_conn_free(conn);
        (void)dp_ep_slot_close(h->ep, handle);
        h->stats.dropped_peer_limit++;
        return;
    }
    p->conn = conn;
    h->stats.admitted++;
    (void)dp_conn_feed(conn, data, len, now_ms);
    after_conn(h, p, 1);
}

/* The endpoint's sink: every datagram read in this service. */
static int host_sink(void *ctx, uint64_t handle, const dp_addr *src, const uint8_t *data,
                     size_t len, int64_t now_ms)
{
    dp_host *h = ctx;
    h->stats.datagrams_in++;
    if (handle == 0) {
        accept_new(h, src, data, len, now_ms);
    } else {
        dp_host_peer *p = peer_get(h, handle);
        if (p == NULL || p->conn == NULL) {
            h->stats.dropped_ended++;
        } else if (len != 0 && data[0] == DP_CT_CID && dp_ep_slot_addr_differs(h->ep, handle, src)) {
            feed_from_new_address(h, p, src, data, len, now_ms); /* the endpoint routed it by CID */
        } else if (!p->outgoing && h->gate != NULL &&
                   dp_conn_status(p->conn) == DP_STATUS_CONNECTED) {
            route_known(h, p, src, data, len, now_ms);
        } else {
            feed_live(h, p, data, len, now_ms);
        }
    }
    return h->fed_events >= h->room_events || h->fed_bytes >= h->room_bytes;
}

/* ---- Events ------------------------------------------------------------------------- */

typedef struct {
    dp_host_event *events;
    uint32_t max_events;
    uint32_t n;
    uint8_t *payload;
    size_t cap;
    size_t used;
} dp_out;

static void push_event(dp_host *h, dp_out *o, uint8_t type, const dp_host_peer *p, size_t offset,
                       size_t length, int code, uint8_t reason, int status)
{
    dp_host_event *e = &o->events[o->n++];
    e->peer = p->handle;
    e->offset = (uint32_t)offset;
    e->length = (uint32_t)length;
    e->code = code;
    e->type = type;
    e->reason = reason;
    e->status = (uint8_t)status;
    e->reserved = 0;
    h->stats.events++;
}

/* Write what the peer has to report. 1: done with it; 0: out of room. */
static int emit_peer(dp_host *h, dp_host_peer *p, dp_out *o)
{
    if (p->connected_seen && !p->connect_reported) {
        if (o->n == o->max_events) {
            return 0;
        }
        push_event(h, o, DP_HOST_EVENT_CONNECT, p, 0, 0, 0, DP_HOST_REASON_NONE,
                   DP_STATUS_CONNECTED);
        p->connect_reported = 1;
        h->stats.connects++;
    }
    if (p->address_changed && p->connect_reported) {
        if (o->n == o->max_events) {
            return 0;
        }
        push_event(h, o, DP_HOST_EVENT_ADDRESS_CHANGED, p, 0, 0, 0, DP_HOST_REASON_NONE,
                   DP_STATUS_CONNECTED);
        p->address_changed = 0;
    }
    if (p->conn != NULL) {
        while (dp_conn_pending_count(p->conn) > 0) {
            if (o->n == o->max_events) {
                return 0;
            }
            int n = dp_conn_read(p->conn, o->payload + o->used, o->cap - o->used);
            if (n == DP_ERR_BUFFER_TOO_SMALL) {
                return 0; /* stays in the connection for the next call */
            }
            if (n < 0) {
                break;
            }
            push_event(h, o, DP_HOST_EVENT_RECEIVE, p, o->used, (size_t)n, 0,
                       DP_HOST_REASON_NONE, DP_STATUS_CONNECTED);
            o->used += (size_t)n;
            h->stats.records_in++;
        }
        if (!status_ended(dp_conn_status(p->conn))) {
            return 1;
        }
        if (finalize(h, p, DP_HOST_REASON_NONE, NULL) < 0) {
            return 0; /* no memory for the outcome: try again next call */
        }
    }
    if (p->final == NULL || p->end_reported) {
        return 1;
    }
    size_t text_len = strlen(p->final->reason);
    if (o->n == o->max_events || o->cap - o->used < text_len) {
        return 0;
    }
    memcpy(o->payload + o->used, p->final->reason, text_len);
    int known = p->connect_reported || p->outgoing;
    push_event(h, o, known ? DP_HOST_EVENT_DISCONNECT : DP_HOST_EVENT_ERROR, p, o->used, text_len,
               p->final->last_error, p->reason, p->final->status);
    o->used += text_len;
    if (known) {
        h->stats.disconnects++;
    } else {
        h->stats.errors++;
    }
    p->end_reported = 1;
    p->release_next = h->release_head;
    h->release_head = peer_index(p->handle);
    return 1;
}

/* 1: every ready peer emitted; 0: out of room (the rest carries over). */
static int emit_ready(dp_host *h, dp_out *o)
{
    /* Each pass either removes the head or stops. */
    while (h->ready_head != DP_NONE) {
        if (!emit_peer(h, &h->peers[h->ready_head], o)) {
            return 0;
        }
        pop_ready(h);
    }
    return 1;
}

static void run_timers(dp_host *h, int64_t now_ms)
{
    /* Each entry runs at most once per call, whatever the connection says. */
    for (uint32_t guard = h->heap_len; guard > 0 && h->heap_len > 0; guard--) {
        uint32_t index = h->heap[0];
        dp_host_peer *p = &h->peers[index];
        if (p->due_ms > now_ms) {
            break;
        }
        int64_t due = peer_due(p);
        if (due > now_ms) {
            heap_schedule(h, p, due, 1); /* a lazily raised key: nothing to run */
            continue;
        }
        if (due < 0) {
            heap_remove(h, p);
            continue;
        }
        int64_t succ_due = p->successor != NULL ? dp_conn_next_timeout(p->successor) : -1;
        if (succ_due >= 0 && succ_due <= now_ms) {
            (void)dp_conn_update(p->successor, now_ms);
            h->stats.timer_runs++;
            after_successor(h, p, now_ms);
            p = &h->peers[index]; /* a takeover may have moved the table */
            if (p->conn == NULL) {
                continue; /* the old session ended (takeover) */
            }
        }
        int64_t own_due = dp_conn_next_timeout(p->conn);
        if (own_due >= 0 && own_due <= now_ms) {
            (void)dp_conn_update(p->conn, now_ms);
            h->stats.timer_runs++;
        }
        after_conn(h, p, 1);
        if (p->heap_pos == 0 && p->due_ms <= now_ms) {
            /* The connection asks again at once: wait for the next call. */
            heap_schedule(h, p, now_ms + 1, 1);
        }
    }
}

/* The endpoint's error sink: an ICMP error for a peer (only a connected
 * socket names one, see dp_host_connect). The connection decides: a
 * handshaking client fails at once, anything else only counts it. */
static void host_unreachable(void *ctx, uint64_t handle, const dp_addr *peer, int err,
                             int64_t now_ms)
{
    (void)peer;
    dp_host *h = ctx;
    dp_host_peer *p = peer_get(h, handle);
    if (p == NULL || p->conn == NULL) {
        return;
    }
    (void)dp_conn_note_unreachable(p->conn, err, now_ms);
    after_conn(h, p, 0);
}

/* ---- Public API ------------------------------------------------------------------- */

int dp_host_new(int64_t fd, int family, uint32_t max_peers, dp_host **out)
{
    if (out == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    *out = NULL;
    dp_host *h = dp_calloc(1, sizeof(*h));
    if (h == NULL) {
        return DP_ERR_NO_MEMORY;
    }
    int rc = dp_endpoint_new(&h->ep, fd, family, DP_ENDPOINT_SERVER, DP_RECV_BUF);
    if (rc == DP_OK) {
        /* No pending slots: unknown senders go through the gate in the sink. */
        rc = dp_ep_set_limits(h->ep, 0, -1, DP_RECV_BUF);
    }
    if (rc == DP_OK) {
        rc = dp_ep_set_sink(h->ep, host_sink, h);
    }
    if (rc == DP_OK) {
        rc = dp_ep_set_error_sink(h->ep, host_unreachable, h);
    }
    h->arena = dp_calloc(1, DP_HOST_ARENA);
    h->batch = dp_calloc(DP_HOST_BATCH, sizeof(dp_endpoint_out));
    if (rc == DP_OK && (h->arena == NULL || h->batch == NULL)) {
        rc = DP_ERR_NO_MEMORY;
    }
    if (rc != DP_OK) {
        dp_endpoint_free(h->ep);
        dp_free(h->arena);
        dp_free(h->batch);
        dp_free(h);
        return rc;
    }
    dp_ep_own_fd(h->ep); /* closed by dp_host_close, after the last close_notify */
    h->max_peers = max_peers ? max_peers : DP_HOST_DEFAULT_MAX_PEERS;
    h->max_handshaking = h->max_peers < DP_HOST_DEFAULT_MAX_HANDSHAKING
                             ? h->max_peers
                             : DP_HOST_DEFAULT_MAX_HANDSHAKING;
    h->max_handshaking_per_address = DP_HOST_DEFAULT_MAX_HANDSHAKING_PER_ADDRESS;
    h->hs_head = h->hs_tail = DP_NONE;
    h->ready_head = h->ready_tail = DP_NONE;
    h->dirty_head = DP_NONE;
    h->release_head = DP_NONE;
    h->orphan_head = DP_NONE;
    *out = h;
    return DP_OK;
}

static int host_close(dp_host *h, int64_t now_ms)
{
    now_ms = dp_resolve_now(now_ms);
    if (h == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (h->closed) {
        return DP_OK;
    }
    for (uint32_t i = 0; i < h->peers_cap; i++) {
        dp_host_peer *p = &h->peers[i];
        if (p->handle != 0 && p->conn != NULL) {
            if (dp_conn_status(p->conn) == DP_STATUS_CONNECTED) {
                (void)dp_conn_close(p->conn, now_ms);
            }
            flush_peer(h, p);
        }
    }
    send_batch(h);
    for (uint32_t i = 0; i < h->peers_cap; i++) {
        if (h->peers[i].handle != 0) {
            peer_drop(h, &h->peers[i]);
        }
    }
    /* A service blocked on another thread wakes and leaves (DP_ERR_CLOSED)
     * while dp_ep_close waits for it with the lock released: it must see
     * the host closed. After dp_ep_close the socket is closed. */
    h->closed = 1;
    (void)dp_ep_close(h->ep);
    dp_free(h->peers);
    dp_free(h->heap);
    h->peers = NULL;
    h->heap = NULL;
    h->peers_cap = h->heap_cap = h->heap_len = 0;
    h->connected = h->ended = 0;
    h->hs_count = 0;
    h->hs_head = h->hs_tail = DP_NONE;
    h->ready_head = h->ready_tail = h->dirty_head = h->release_head = DP_NONE;
    h->orphan_head = DP_NONE; /* peer_drop freed the orphans */
    dp_config_free(h->server_cfg);
    dp_config_free(h->client_cfg);
    dp_cookie_gate_free(h->gate);
    h->server_cfg = h->client_cfg = NULL;
    h->gate = NULL;
    h->closed = 1;
    return DP_OK;
}

void dp_host_free(dp_host *h)
{
    if (h == NULL) {
        return;
    }
    dp_endpoint_lock(h->ep);
    (void)host_close(h, 0);
    dp_endpoint_unlock(h->ep);
    dp_endpoint_free(h->ep);
    dp_free(h->arena);
    dp_free(h->batch);
    dp_free(h);
}

static int host_set_server(dp_host *h, dp_config *cfg, dp_cookie_gate *gate)
{
    if (h == NULL || (cfg != NULL && (gate == NULL || cfg->role != DP_ROLE_SERVER))) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (h->closed) {
        return DP_ERR_CLOSED;
    }
    if (cfg != NULL && !cfg->finished) {
        return DP_ERR_BAD_STATE;
    }
    if (cfg != NULL) {
        dp_config_ref(cfg);
        dp_cookie_gate_ref(gate);
    }
    if (cfg != NULL) {
        /* Serving: datagrams come from anyone (see dp_host_connect). */
        (void)dp_ep_connect_socket(h->ep, NULL);
    }
    dp_config_free(h->server_cfg);
    dp_cookie_gate_free(h->gate);
    h->server_cfg = cfg;
    h->gate = cfg != NULL ? gate : NULL;
    return DP_OK;
}

static int host_set_handshake_limits(dp_host *h, uint32_t max_handshaking, uint32_t per_address)
{
    if (h == NULL || max_handshaking == 0 || per_address == 0) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (h->closed) {
        return DP_ERR_CLOSED;
    }
    h->max_handshaking = max_handshaking;
    h->max_handshaking_per_address = per_address;
    return DP_OK;
}

static int host_set_client(dp_host *h, dp_config *cfg)
{
    if (h == NULL || (cfg != NULL && cfg->role != DP_ROLE_CLIENT)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (h->closed) {
        return DP_ERR_CLOSED;
    }
    if (cfg != NULL && !cfg->finished) {
        return DP_ERR_BAD_STATE;
    }
    if (cfg != NULL) {
        dp_config_ref(cfg);
    }
    dp_config_free(h->client_cfg);
    h->client_cfg = cfg;
    return DP_OK;
}

static int host_connect(dp_host *h, const dp_addr *addr, const char *hostname,
                        const unsigned char *session, size_t session_len, int64_t now_ms,
                        uint64_t *peer)
{
    now_ms = dp_resolve_now(now_ms);
    if (h == NULL || addr == NULL || peer == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    *peer = 0;
    if (h->closed) {
        return DP_ERR_CLOSED;
    }
    if (h->client_cfg == NULL) {
        return DP_ERR_BAD_STATE;
    }
    if (h->live >= h->max_peers) {
        return DP_ERR_LIMIT;
    }
    /* A client-only host with this one association connect()s its socket:
     * the kernel then reports the peer's ICMP errors (port unreachable ends
     * the handshake at once, as a Godot-style client's connected socket
     * does, instead of after the handshake timeout) and drops datagrams
     * from any other address. A second association, or serving, needs the
     * socket unconnected again. Best effort: without it, no fast fail. */
    if (h->server_cfg == NULL && h->live == h->ended) {
        (void)dp_ep_connect_socket(h->ep, addr);
    } else {
        (void)dp_ep_connect_socket(h->ep, NULL);
    }
    uint64_t handle = 0;
    int rc = dp_ep_slot_open(h->ep, addr, now_ms, &handle);
    if (rc < 0) {
        return rc;
    }
    dp_conn *conn = NULL;
    rc = dp_conn_new(h->client_cfg, hostname, NULL, 0, now_ms, &conn);
    if (rc == DP_OK && session != NULL) {
        rc = dp_conn_set_session(conn, session, session_len);
    }
    dp_host_peer *p = NULL;
    if (rc == DP_OK && (p = peer_add(h, handle)) == NULL) {
        rc = DP_ERR_NO_MEMORY;
    }
    if (rc < 0) {
        dp_conn_free(conn);
        (void)dp_ep_slot_close(h->ep, handle);
        return rc;
    }
    p->conn = conn;
    p->outgoing = 1;
    (void)dp_conn_update(conn, now_ms); /* queues the ClientHello */
    after_conn(h, p, 1);
    *peer = handle;
    return DP_OK;
}

static int host_service(dp_host *h, int64_t now_ms, int timeout_ms, dp_host_event *events,
                    uint32_t max_events, uint8_t *payload_buf, size_t payload_cap,
                    uint32_t *n_events)
{
    if (n_events != NULL) {
        *n_events = 0;
    }
    if (h == NULL || events == NULL || max_events == 0 || payload_buf == NULL ||
        payload_cap < DP_HOST_MIN_PAYLOAD || payload_cap > UINT32_MAX || n_events == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (h->closed) {
        return DP_ERR_CLOSED;
    }
    h->clock_injected = now_ms >= 0;
    now_ms = dp_resolve_now(now_ms);
    h->stats.services++;
    dp_out o = {events, max_events, 0, payload_buf, payload_cap, 0};
    send_batch(h); /* datagrams of ended peers still reference their slots */
    release_reported(h);
    int full = !emit_ready(h, &o);
    promote_orphans(h, now_ms); /* before the socket is read: the address is theirs */
    flush_dirty(h); /* sends queued since the last call go before any wait */

    if (!full) {
        /* What the sink may feed before this call's events are full. */
        h->room_events = o.max_events - o.n;
        h->room_bytes = o.cap - o.used;
        h->fed_events = 0;
        h->fed_bytes = 0;
    }
    int read_all = 0; /* the wait itself read the socket empty */
    if (!full && o.n == 0 && timeout_ms != 0) {
        int64_t wait = timeout_ms < 0 ? -1 : timeout_ms;
        if (h->heap_len > 0) {
            int64_t until = h->peers[h->heap[0]].due_ms - now_ms;
            until = until < 0 ? 0 : until;
            wait = (wait < 0 || until < wait) ? until : wait;
        }
        if (wait != 0) {
            int rc = dp_ep_sink_wait(h->ep, wait > INT32_MAX ? INT32_MAX : (int)wait, &now_ms);
            if (h->closed) {
                return DP_ERR_CLOSED; /* closed by another thread while we waited */
            }
            if (rc < 0 && rc != DP_ERR_ERRNO_BASE - EINTR) {
                return rc;
            }
            read_all = rc == 2;
        }
    }

    if (!full && !read_all) {
        int rc = dp_ep_poll(h->ep, now_ms);
        if (rc < 0) {
            flush_dirty(h);
            return rc; /* the socket failed: local, not a peer's doing */
        }
    }
    run_timers(h, now_ms);
    dp_trim_after_parks();
    if (!full) {
        full = !emit_ready(h, &o);
    }
    promote_orphans(h, now_ms);
    if (full || h->ready_head != DP_NONE) {
        h->stats.carried_over++;
    }
    flush_dirty(h);
    *n_events = o.n;
    return (int)o.n;
}

static int host_send(dp_host *h, uint64_t peer, const uint8_t *data, size_t len, int64_t now_ms)
{
    if (h == NULL || (data == NULL && len != 0)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (h->closed) {
        return DP_ERR_CLOSED;
    }
    dp_host_peer *p = peer_get(h, peer);
    if (p == NULL || p->conn == NULL || status_ended(dp_conn_status(p->conn))) {
        h->stats.send_to_ended++; /* the peer's doing: its DISCONNECT event tells */
        return DP_ERR_CLOSED;
    }
    if (dp_conn_status(p->conn) != DP_STATUS_CONNECTED) {
        return DP_ERR_BAD_STATE;
    }
    if (dp_conn_outgoing_count(p->conn) >= DP_HOST_DEEP_QUEUE) {
        flush_peer(h, p); /* keeps the connection's bounded queue from dropping */
    }
    /* The record goes straight into the send batch (no queue node) when the
     * peer has nothing queued and the batch has room; else it is queued. */
    if (h->batch_len == DP_HOST_BATCH) {
        send_batch(h);
    }
    size_t direct = 0;
    int rc = dp_conn_write_direct(p->conn, data, len, now_ms, h->arena + h->arena_used,
                                  DP_HOST_ARENA - h->arena_used, &direct);
    if (direct > 0) {
        dp_endpoint_out *m = &h->batch[h->batch_len++];
        m->handle = p->handle;
        m->dst = NULL;
        m->data = h->arena + h->arena_used;
        m->len = direct;
        h->arena_used += direct;
    }
    if (rc > 0) {
        h->stats.records_out++;
    }
    after_conn(h, p, 0);
    return rc;
}

static int host_broadcast(dp_host *h, const uint8_t *data, size_t len, const uint64_t *exclude,
                      size_t n_exclude, int64_t now_ms)
{
    if (h == NULL || (data == NULL && len != 0) || (exclude == NULL && n_exclude != 0)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (h->closed) {
        return DP_ERR_CLOSED;
    }
    now_ms = dp_resolve_now(now_ms); /* once for every peer */
    for (size_t i = 0; i < n_exclude; i++) {
        dp_host_peer *p = peer_get(h, exclude[i]);
        if (p != NULL) {
            p->excluded = 1;
        }
    }
    int rc = DP_OK;
    /* First pass: refuse the whole broadcast rather than reach only some. */
    for (uint32_t i = 0; i < h->peers_cap && rc == DP_OK; i++) {
        dp_host_peer *p = &h->peers[i];
        if (p->handle != 0 && p->conn != NULL && !p->excluded &&
            dp_conn_status(p->conn) == DP_STATUS_CONNECTED) {
            int max = dp_conn_max_payload(p->conn);
            if (max < 0 || len > (size_t)max) {
                rc = DP_ERR_TOO_LARGE;
            }
        }
    }
    int count = 0;
    for (uint32_t i = 0; i < h->peers_cap && rc == DP_OK; i++) {
        dp_host_peer *p = &h->peers[i];
        if (p->handle != 0 && p->conn != NULL && !p->excluded &&
            dp_conn_status(p->conn) == DP_STATUS_CONNECTED) {
            if (host_send(h, p->handle, data, len, now_ms) >= 0) {
                count++;
            }
        }
    }
    for (size_t i = 0; i < n_exclude; i++) {
        dp_host_peer *p = peer_get(h, exclude[i]);
        if (p != NULL) {
            p->excluded = 0;
        }
    }
    return rc < 0 ? rc : count;
}

/* ---- send_many: one native call for a tick's per-peer records ---------------------------
 * A game server sends every player its own snapshot each tick; one call for
 * all of them replaces a Python method call plus a cffi call (argument
 * conversion, GIL release) per player. Payload i is data[off_i, off_i +
 * lengths[i]) with off_i the sum of the lengths before it. */

static int send_many_check(dp_host *h, const uint64_t *peers, const uint32_t *lengths,
                           size_t count, size_t data_len, size_t *failed_at)
{
    size_t total = 0;
    for (size_t i = 0; i < count; i++) {
        *failed_at = i;
        if (lengths[i] > data_len - total) {
            return DP_ERR_INVALID_ARGUMENT; /* lengths overrun the buffer */
        }
        total += lengths[i];
        dp_host_peer *p = peer_get(h, peers[i]);
        if (p == NULL || p->conn == NULL) {
            continue; /* ended or released: host_send drops it and counts it */
        }
        int status = dp_conn_status(p->conn);
        if (status_ended(status)) {
            continue;
        }
        if (status != DP_STATUS_CONNECTED) {
            return DP_ERR_BAD_STATE;
        }
        int max = dp_conn_max_payload(p->conn);
        if (max < 0 || lengths[i] > (uint32_t)max) {
            return DP_ERR_TOO_LARGE;
        }
    }
    *failed_at = count;
    return total == data_len ? DP_OK : DP_ERR_INVALID_ARGUMENT;
}

static int host_send_many(dp_host *h, const uint64_t *peers, const uint8_t *data,
                          size_t data_len, const uint32_t *lengths, size_t count, int64_t now_ms,
                          size_t *failed_at)
{
    if (h == NULL || failed_at == NULL || count > INT32_MAX ||
        (count != 0 && (peers == NULL || lengths == NULL)) || (data == NULL && data_len != 0)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    *failed_at = 0;
    if (h->closed) {
        return DP_ERR_CLOSED;
    }
    /* First pass: refuse the whole call (nothing queued) for local misuse. */
    int rc = send_many_check(h, peers, lengths, count, data_len, failed_at);
    if (rc != DP_OK) {
        return rc;
    }
    now_ms = dp_resolve_now(now_ms); /* once for every record */
    int queued = 0;
    size_t offset = 0;
    for (size_t i = 0; i < count; i++) {
        if (host_send(h, peers[i], data + offset, lengths[i], now_ms) >= 0) {
            queued++;
        }
        offset += lengths[i];
    }
    return queued;
}

static int host_flush(dp_host *h)
{
    if (h == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (h->closed) {
        return DP_ERR_CLOSED;
    }
    uint64_t before = h->stats.datagrams_out;
    flush_dirty(h);
    return (int)(h->stats.datagrams_out - before);
}

static int host_disconnect(dp_host *h, uint64_t peer, int64_t now_ms)
{
    now_ms = dp_resolve_now(now_ms);
    if (h == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (h->closed) {
        return DP_ERR_CLOSED;
    }
    dp_host_peer *p = peer_get(h, peer);
    if (p == NULL) {
        return DP_ERR_CLOSED;
    }
    if (p->conn == NULL) {
        return DP_OK; /* already ended */
    }
    (void)dp_conn_close(p->conn, now_ms); /* queues close_notify when connected */
    int rc = finalize(h, p, DP_HOST_REASON_LOCAL, "closed locally");
    if (rc < 0) {
        return rc;
    }
    mark_ready(h, p);
    send_batch(h);
    promote_orphans(h, now_ms);
    return DP_OK;
}

static int64_t host_next_timeout(const dp_host *h)
{
    if (h == NULL || h->heap_len == 0) {
        return -1;
    }
    return h->peers[h->heap[0]].due_ms;
}

static int host_peer_get_info(const dp_host *h, uint64_t peer, dp_host_peer_info *out)
{
    if (h == NULL || out == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    memset(out, 0, sizeof(*out));
    const dp_host_peer *p = h->closed ? NULL : peer_get(h, peer);
    if (p == NULL) {
        return DP_ERR_CLOSED;
    }
    (void)dp_ep_slot_addr(h->ep, peer, &out->addr);
    out->outgoing = p->outgoing;
    if (p->conn != NULL) {
        out->status = dp_conn_status(p->conn);
        out->last_error = dp_conn_last_error(p->conn);
        out->verify_flags = dp_conn_verify_flags(p->conn);
        int max = out->status == DP_STATUS_CONNECTED ? dp_conn_max_payload(p->conn) : 0;
        out->max_payload = max > 0 ? max : 0;
        out->queued_out = dp_conn_outgoing_count(p->conn);
        out->pending_in = dp_conn_pending_count(p->conn);
    } else {
        out->status = p->final->status;
        out->last_error = p->final->last_error;
        out->verify_flags = p->final->verify_flags;
        out->ended = 1;
    }
    return DP_OK;
}

static int host_peer_reason(const dp_host *h, uint64_t peer, char *buf, size_t cap)
{
    if (h == NULL || buf == NULL || cap == 0) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    const dp_host_peer *p = h->closed ? NULL : peer_get(h, peer);
    if (p == NULL) {
        return DP_ERR_CLOSED;
    }
    if (p->conn != NULL) {
        return dp_conn_reason(p->conn, buf, cap);
    }
    return (int)copy_text(p->final->reason, buf, cap);
}

static int host_peer_ciphersuite(const dp_host *h, uint64_t peer, char *buf, size_t cap)
{
    if (h == NULL || buf == NULL || cap == 0) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    const dp_host_peer *p = h->closed ? NULL : peer_get(h, peer);
    if (p == NULL) {
        return DP_ERR_CLOSED;
    }
    if (p->conn != NULL) {
        return dp_conn_ciphersuite(p->conn, buf, cap);
    }
    return (int)copy_text(p->final->suite, buf, cap);
}

static int host_peer_stats(const dp_host *h, uint64_t peer, dp_conn_stats *out)
{
    if (h == NULL || out == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    const dp_host_peer *p = h->closed ? NULL : peer_get(h, peer);
    if (p == NULL) {
        return DP_ERR_CLOSED;
    }
    if (p->conn != NULL) {
        dp_conn_get_stats(p->conn, out);
    } else {
        *out = p->final->stats;
    }
    return DP_OK;
}

/* Live peers answer from their connection, ended ones from their outcome. */
static int host_peer_session(const dp_host *h, uint64_t peer, unsigned char *buf, size_t cap)
{
    const dp_host_peer *p = h->closed ? NULL : peer_get(h, peer);
    if (p == NULL) {
        return DP_ERR_CLOSED;
    }
    if (p->conn != NULL) {
        return dp_conn_get_session(p->conn, buf, cap);
    }
    const dp_host_final *f = p->final;
    if (f->session == NULL) {
        return DP_ERR_BAD_STATE;
    }
    if (cap == 0) {
        return (int)f->session_len;
    }
    if (buf == NULL || cap < f->session_len) {
        return DP_ERR_BUFFER_TOO_SMALL;
    }
    memcpy(buf, f->session, f->session_len);
    return (int)f->session_len;
}

static int host_peer_resumed(const dp_host *h, uint64_t peer)
{
    const dp_host_peer *p = h->closed ? NULL : peer_get(h, peer);
    if (p == NULL) {
        return DP_ERR_CLOSED;
    }
    return p->conn != NULL ? dp_conn_resumed(p->conn) : p->final->resumed;
}

static int host_peer_certificate(const dp_host *h, uint64_t peer, char *subject,
                                 size_t subject_cap, char *san, size_t san_cap,
                                 unsigned char *fingerprint)
{
    const dp_host_peer *p = h->closed ? NULL : peer_get(h, peer);
    if (p == NULL) {
        return DP_ERR_CLOSED;
    }
    if (p->conn != NULL) {
        return dp_conn_peer_certificate(p->conn, subject, subject_cap, san, san_cap,
                                        fingerprint);
    }
    return dp_peer_info_read(p->final->peer, subject, subject_cap, san, san_cap, fingerprint);
}

static int host_get_stats(const dp_host *h, dp_host_stats *out)
{
    if (h == NULL || out == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    *out = h->stats;
    out->peers = h->live;
    out->connected = h->connected;
    out->handshaking = h->live - h->connected - h->ended;
    out->timers = h->heap_len;
    return DP_OK;
}

static int host_udp_stats(const dp_host *h, dp_udp_stats *out)
{
    if (h == NULL || out == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    return dp_ep_stats(h->ep, 0, out);
}

/* ---- The public calls: the same under the host's lock (its endpoint's) ---- */

#define DP_HOST_LOCKED(type, h, call)                                              \
    do {                                                                           \
        if ((h) == NULL) {                                                         \
            return DP_ERR_INVALID_ARGUMENT;                                        \
        }                                                                          \
        dp_endpoint *ep_ = (h)->ep;                                                \
        dp_endpoint_lock(ep_);                                                     \
        type rc_ = (call);                                                         \
        dp_endpoint_unlock(ep_);                                                   \
        return rc_;                                                                \
    } while (0)

int dp_host_close(dp_host *h, int64_t now_ms)
{
    DP_HOST_LOCKED(int, h, host_close(h, now_ms));
}

int dp_host_set_server(dp_host *h, dp_config *cfg, dp_cookie_gate *gate)
{
    DP_HOST_LOCKED(int, h, host_set_server(h, cfg, gate));
}

int dp_host_set_client(dp_host *h, dp_config *cfg)
{
    DP_HOST_LOCKED(int, h, host_set_client(h, cfg));
}

int dp_host_set_handshake_limits(dp_host *h, uint32_t max_handshaking, uint32_t per_address)
{
    DP_HOST_LOCKED(int, h, host_set_handshake_limits(h, max_handshaking, per_address));
}

int dp_host_connect(dp_host *h, const dp_addr *addr, const char *hostname, int64_t now_ms,
                    uint64_t *peer)
{
    DP_HOST_LOCKED(int, h, host_connect(h, addr, hostname, NULL, 0, now_ms, peer));
}

int dp_host_connect_session(dp_host *h, const dp_addr *addr, const char *hostname,
                            const unsigned char *session, size_t session_len, int64_t now_ms,
                            uint64_t *peer)
{
    if (session == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    DP_HOST_LOCKED(int, h, host_connect(h, addr, hostname, session, session_len, now_ms, peer));
}

int dp_host_service(dp_host *h, int64_t now_ms, int timeout_ms, dp_host_event *events,
                    uint32_t max_events, uint8_t *payload_buf, size_t payload_cap,
                    uint32_t *n_events)
{
    DP_HOST_LOCKED(int, h, host_service(h, now_ms, timeout_ms, events, max_events, payload_buf,
                                        payload_cap, n_events));
}

int dp_host_service_args_run(dp_host *h, dp_host_service_args *a, int timeout_ms)
{
    if (a == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    return dp_host_service(h, a->now_ms, timeout_ms, a->events, a->max_events, a->payload_buf,
                           a->payload_cap, &a->n_events);
}

int dp_host_send(dp_host *h, uint64_t peer, const uint8_t *data, size_t len, int64_t now_ms)
{
    DP_HOST_LOCKED(int, h, host_send(h, peer, data, len, now_ms));
}

int dp_host_broadcast(dp_host *h, const uint8_t *data, size_t len, const uint64_t *exclude,
                      size_t n_exclude, int64_t now_ms)
{
    DP_HOST_LOCKED(int, h, host_broadcast(h, data, len, exclude, n_exclude, now_ms));
}

int dp_host_send_many(dp_host *h, const uint64_t *peers, const uint8_t *data, size_t data_len,
                      const uint32_t *lengths, size_t count, int64_t now_ms, size_t *failed_at)
{
    DP_HOST_LOCKED(int, h,
                   host_send_many(h, peers, data, data_len, lengths, count, now_ms, failed_at));
}

int dp_host_flush(dp_host *h)
{
    DP_HOST_LOCKED(int, h, host_flush(h));
}

int dp_host_disconnect(dp_host *h, uint64_t peer, int64_t now_ms)
{
    DP_HOST_LOCKED(int, h, host_disconnect(h, peer, now_ms));
}

int64_t dp_host_next_timeout(const dp_host *h)
{
    if (h == NULL) {
        return -1;
    }
    DP_HOST_LOCKED(int64_t, h, host_next_timeout(h));
}

int dp_host_peer_get_info(const dp_host *h, uint64_t peer, dp_host_peer_info *out)
{
    DP_HOST_LOCKED(int, h, host_peer_get_info(h, peer, out));
}

int dp_host_peer_reason(const dp_host *h, uint64_t peer, char *buf, size_t cap)
{
    DP_HOST_LOCKED(int, h, host_peer_reason(h, peer, buf, cap));
}

int dp_host_peer_ciphersuite(const dp_host *h, uint64_t peer, char *buf, size_t cap)
{
    DP_HOST_LOCKED(int, h, host_peer_ciphersuite(h, peer, buf, cap));
}

static int host_peer_cid(const dp_host *h, uint64_t peer, uint8_t *own, size_t *own_len,
                         uint8_t *peer_cid, size_t *peer_len)
{
    const dp_host_peer *p = h == NULL || h->closed ? NULL : peer_get(h, peer);
    if (own_len != NULL) {
        *own_len = 0;
    }
    if (peer_len != NULL) {
        *peer_len = 0;
    }
    if (p == NULL) {
        return DP_ERR_CLOSED;
    }
    if (p->conn != NULL) {
        return dp_conn_cid(p->conn, own, own_len, peer_cid, peer_len);
    }
    const dp_host_final *f = p->final;
    if (!f->cid_negotiated) {
        return 0;
    }
    if (own != NULL) {
        memcpy(own, f->own_cid, f->own_cid_len);
    }
    if (own_len != NULL) {
        *own_len = f->own_cid_len;
    }
    if (peer_cid != NULL) {
        memcpy(peer_cid, f->peer_cid, f->peer_cid_len);
    }
    if (peer_len != NULL) {
        *peer_len = f->peer_cid_len;
    }
    return 1;
}

int dp_host_peer_cid(const dp_host *h, uint64_t peer, uint8_t *own, size_t *own_len,
                     uint8_t *peer_cid, size_t *peer_len)
{
    DP_HOST_LOCKED(int, h, host_peer_cid(h, peer, own, own_len, peer_cid, peer_len));
}

int dp_host_peer_session(const dp_host *h, uint64_t peer, unsigned char *buf, size_t cap)
{
    DP_HOST_LOCKED(int, h, host_peer_session(h, peer, buf, cap));
}

int dp_host_peer_resumed(const dp_host *h, uint64_t peer)
{
    DP_HOST_LOCKED(int, h, host_peer_resumed(h, peer));
}

int dp_host_peer_certificate(const dp_host *h, uint64_t peer, char *subject, size_t subject_cap,
                             char *san, size_t san_cap, unsigned char *fingerprint)
{
    DP_HOST_LOCKED(int, h, host_peer_certificate(h, peer, subject, subject_cap, san, san_cap,
                                                 fingerprint));
}

int dp_host_peer_stats(const dp_host *h, uint64_t peer, dp_conn_stats *out)
{
    DP_HOST_LOCKED(int, h, host_peer_stats(h, peer, out));
}

int dp_host_get_stats(const dp_host *h, dp_host_stats *out)
{
    DP_HOST_LOCKED(int, h, host_get_stats(h, out));
}

int dp_host_udp_stats(const dp_host *h, dp_udp_stats *out)
{
    DP_HOST_LOCKED(int, h, host_udp_stats(h, out));
}

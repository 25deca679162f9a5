/*
 * dp_link.c: the datagram path between a UDP endpoint (dp_endpoint.c) and a
 * DTLS connection (dp_conn.c). One call per poll moves every datagram queued
 * for a peer into its connection, runs the connection's timers and sends
 * everything it produced, so Python only ever handles payload bytes.
 *
 * Nothing here owns state: the endpoint owns the queues and the socket, the
 * connection owns the TLS state, the gate owns the cookie keys. The only
 * memory is a per-thread scratch buffer (cffi releases the GIL, so two
 * threads may pump two different connections at once).
 *
 * Threads: every call holds the endpoint's lock from start to end, so a
 * peer's poll on one thread, its server's UDPServer.poll on another and a
 * disconnect_from_peer (dp_link_close) on a third are serialised: one lock
 * per call, not per datagram. The connection has no lock of its own: the
 * Godot-style classes only reach it under this lock, except for reads of
 * its queue and counters by its one PacketPeerDTLS.
 */
#include "dp_engine.h"
#include "dtlspeer.h"

#include <string.h>

/* Receive side: any UDP datagram fits; dp_conn_feed drops (and counts) the
 * ones longer than its record buffer. Send side: a whole record (16 KiB plus
 * the record expansion) fits as well. */
#define DP_LINK_BUF DP_MAX_DATAGRAM

#if defined(_MSC_VER)
#define DP_THREAD_LOCAL __declspec(thread)
#else
#define DP_THREAD_LOCAL _Thread_local
#endif

static DP_THREAD_LOCAL unsigned char dp_link_buf[DP_LINK_BUF];

/* DTLS record header (13 bytes) + handshake message type. */
#define DP_RECORD_HEADER 13
#define DP_CT_HANDSHAKE 22
#define DP_HS_CLIENT_HELLO 1

/* What the gate judges by: an injected time as it is, else DP_NOW, which
 * the gate reads from its own clock (the wall clock for a shared secret;
 * connections always run on the monotonic one). */
static int64_t gate_clock(int64_t now_ms)
{
    return now_ms >= 0 ? now_ms : DP_NOW;
}

static void result_init(dp_link_result *res)
{
    memset(res, 0, sizeof(*res));
}

/* Anything the binding must look at beyond the status (see dp_link_result). */
static void note_notable(dp_link_result *res)
{
    res->notable = res->send_dropped != 0 || res->send_error != 0 || res->hvr_sent != 0 ||
                   res->gate_dropped != 0 || res->restarted != 0 || res->address_changed != 0;
}

/* Record walking shared by the link, the endpoint and the host. A record
 * header is 13 bytes (type, version, epoch, sequence number, length); a CID
 * record's header is longer (DP_CT_CID; its length is the connection's), so
 * the walk stops there, as it does at an incomplete record: a reconnecting
 * client's ClientHello is never behind one. */

static size_t record_len_at(const unsigned char *d)
{
    return DP_RECORD_HEADER + (((size_t)d[11] << 8) | d[12]);
}

/* Offset of the first epoch-0 ClientHello record (RFC 6347 4.2.8: a client
 * starting over) anywhere in the datagram, or -1. On a live association
 * every such record goes to the cookie gate, never to the connection. */
long dp_find_client_hello(const unsigned char *d, size_t len)
{
    size_t pos = 0;
    while (len - pos > DP_RECORD_HEADER) {
        const unsigned char *r = d + pos;
        if (r[0] == DP_CT_HANDSHAKE && r[3] == 0 && r[4] == 0 &&
            r[DP_RECORD_HEADER] == DP_HS_CLIENT_HELLO) {
            return (long)pos;
        }
        if (r[0] == DP_CT_CID) {
            return -1;
        }
        size_t rec = record_len_at(r);
        if (rec > len - pos) {
            return -1;
        }
        pos += rec;
    }
    return -1;
}

/* 1 if the datagram's first record is of epoch 0 (handshake traffic before
 * the ChangeCipherSpec: a new session's), else 0 (epoch >= 1, or no record). */
int dp_first_record_epoch0(const unsigned char *d, size_t len)
{
    return len >= DP_RECORD_HEADER && d[0] != DP_CT_CID && d[3] == 0 && d[4] == 0;
}

/* The bytes a server's cookies are bound to: address, port, scope. */
size_t dp_addr_transport_id(const dp_addr *a, unsigned char *out)
{
    memcpy(out, a->ip, 16);
    out[16] = (unsigned char)(a->port >> 8);
    out[17] = (unsigned char)(a->port & 0xFF);
    out[18] = (unsigned char)(a->scope_id >> 24);
    out[19] = (unsigned char)(a->scope_id >> 16);
    out[20] = (unsigned char)(a->scope_id >> 8);
    out[21] = (unsigned char)(a->scope_id);
    return 22;
}

static void send_one(dp_endpoint *ep, uint64_t handle, const unsigned char *data, size_t len,
                     dp_link_result *res)
{
    int rc = dp_ep_send(ep, handle, NULL, data, len);
    if (rc >= 0) {
        res->sent++;
    } else {
        /* Lost like any datagram; DTLS retransmits handshake flights and
         * games tolerate lost records. The code tells the caller why. */
        res->send_dropped++;
        res->send_error = rc;
    }
}

static void flush_output(dp_endpoint *ep, uint64_t handle, dp_conn *conn, dp_link_result *res)
{
    /* Bounded by the connection's outgoing queue (one flight, dp_config.c). */
    for (;;) {
        int n = dp_conn_pop_outgoing(conn, dp_link_buf, sizeof(dp_link_buf));
        if (n == DP_ERR_WOULD_BLOCK) {
            break;
        }
        if (n < 0) {
            res->send_dropped++; /* cannot happen: the buffer holds any record */
            res->send_error = n;
            break;
        }
        send_one(ep, handle, dp_link_buf, (size_t)n, res);
    }
}

static void run_timers(dp_conn *conn, int64_t now_ms)
{
    int64_t due = dp_conn_next_timeout(conn);
    if (due >= 0 && due <= now_ms) {
        (void)dp_conn_update(conn, now_ms);
    }
}

/* A client's own (connected) socket reports ICMP errors only for its one
 * peer: tell the connection about those that arrived since `before` (on a
 * receive or consumed by a send of this call). A server peer's socket is
 * shared and unconnected: the kernel names no address, nothing to tell. */
static void tell_unreachable(dp_endpoint *ep, uint64_t handle, dp_conn *conn, uint64_t before,
                             int64_t now_ms, dp_link_result *res)
{
    uint64_t after = dp_ep_remote_errors(ep);
    res->remote_errors = after;
    if (handle == 0 && after > before) {
        (void)dp_conn_note_unreachable(conn, dp_ep_last_remote_error(ep), now_ms);
    }
}

static void finish(dp_endpoint *ep, uint64_t handle, dp_conn *conn, uint64_t errors_before,
                   int64_t now_ms, dp_link_result *res)
{
    run_timers(conn, now_ms);
    dp_trim_after_parks(); /* a timer may have parked the connection */
    flush_output(ep, handle, conn, res);
    tell_unreachable(ep, handle, conn, errors_before, now_ms, res);
    res->status = dp_conn_status(conn);
    note_notable(res);
}

/* The session's own CID, registered with the endpoint (idempotent): the
 * router then hands its records to this slot from any address. A random
 * collision leaves it routed by address only. */
static void route_cid(dp_endpoint *ep, uint64_t handle, const dp_conn *conn)
{
    uint8_t cid[DP_CID_MAX];
    size_t cid_len = 0;
    if (dp_conn_cid(conn, cid, &cid_len, NULL, NULL) == 1 && cid_len != 0) {
        (void)dp_ep_slot_set_cid(ep, handle, cid, cid_len);
    }
}

/* RFC 9146 section 6, as the host does it (dp_host.c): a record with this
 * session's CID from another address moves the slot there only if the
 * connection authenticated something in it newer than every record before
 * (dp_conn_rx_newest); forgeries and replays never move it. */
static void feed_from_new_address(dp_endpoint *ep, uint64_t handle, dp_conn *conn,
                                  const dp_addr *src, size_t len, int64_t now_ms,
                                  dp_link_result *res)
{
    uint64_t newest = dp_conn_rx_newest(conn);
    (void)dp_conn_feed(conn, dp_link_buf, len, now_ms);
    if (dp_conn_status(conn) == DP_STATUS_CONNECTED && dp_conn_rx_newest(conn) > newest &&
        dp_ep_slot_move(ep, handle, src) == DP_OK) {
        res->address_changed = 1;
    }
}

static int link_pump(dp_endpoint *ep, uint64_t handle, dp_conn *conn, dp_cookie_gate *gate,
                     int64_t now_ms, dp_link_result *res)
{
    if (ep == NULL || conn == NULL || res == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    now_ms = dp_resolve_now(now_ms);
    result_init(res);
    uint64_t errors_before = dp_ep_remote_errors(ep);
    if (handle == 0) {
        int rc = dp_ep_poll(ep, now_ms); /* CLIENT: read the socket once */
        if (rc < 0) {
            return rc;
        }
    }
    if (handle != 0 && dp_ep_slot_superseded(ep, handle)) {
        /* The same client completed a new handshake from this address (its
         * Finished was verified): this session is over. Nothing is sent:
         * the address belongs to the new session now. */
        res->restarted = 1;
        res->status = dp_conn_status(conn);
        note_notable(res);
        return DP_OK;
    }
    int queued = dp_ep_queued(ep, handle);
    if (queued < 0) {
        return queued;
    }
    /* Only what was queued on entry: bounded even if the socket keeps
     * delivering (CLIENT recv would otherwise read it again). Epoch-0
     * ClientHellos from a live peer's address never get here: the
     * endpoint's gate judged them (route_known in dp_endpoint.c). */
    for (int i = 0; i < queued; i++) {
        dp_addr src;
        int n = dp_ep_recv(ep, handle, dp_link_buf, sizeof(dp_link_buf), &src);
        if (n < 0) {
            break; /* DP_ERR_WOULD_BLOCK: nothing more */
        }
        if (handle != 0 && n > 0 && dp_link_buf[0] == DP_CT_CID &&
            dp_ep_slot_addr_differs(ep, handle, &src)) {
            feed_from_new_address(ep, handle, conn, &src, (size_t)n, now_ms, res);
        } else {
            (void)dp_conn_feed(conn, dp_link_buf, (size_t)n, now_ms);
        }
        res->fed++;
    }
    if (handle != 0 && gate != NULL && dp_conn_status(conn) == DP_STATUS_CONNECTED) {
        /* A server session: from now on its address's new handshakes go to
         * a successor slot; a successor that connected takes over. With a
         * CID, its records reach it from any address. */
        dp_ep_slot_mark_established(ep, handle);
        (void)dp_ep_slot_promote(ep, handle);
        route_cid(ep, handle, conn);
    }
    finish(ep, handle, conn, errors_before, now_ms, res);
    return DP_OK;
}

/* The records dp_link_poll hands over: each is removed from the connection's
 * queue (and wiped there) as it is copied; the first that does not fit stops
 * the copy, so the order is kept across calls. */
static int take_records(dp_conn *conn, unsigned char *out, size_t cap, uint32_t *lens,
                        uint32_t max_records, dp_link_result *res)
{
    size_t used = 0;
    uint32_t n = 0;
    while (n < max_records) {
        int len = dp_conn_read(conn, out + used, cap - used);
        if (len < 0) {
            break; /* DP_ERR_WOULD_BLOCK (none left) or DP_ERR_BUFFER_TOO_SMALL */
        }
        lens[n++] = (uint32_t)len;
        used += (size_t)len;
    }
    int left = dp_conn_pending_count(conn);
    res->records_left = left > 0 ? (uint32_t)left : 0;
    res->notable |= res->records_left != 0; /* the binding reads the rest */
    return (int)n;
}

/* A status the binding does not show yet is notable too (until the binding
 * writes it to seen_status: a change it failed to apply is reported again). */
static void note_status(dp_link_peer *p)
{
    if (p->res->status != p->seen_status) {
        p->res->notable = 1;
    }
}

static int link_poll(dp_link_peer *p, unsigned char *out, size_t cap, uint32_t *lens,
                     uint32_t max_records)
{
    if (out == NULL || lens == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    dp_conn_set_app_held(p->conn, p->held_bytes);
    int rc = link_pump(p->ep, p->handle, p->conn, p->gate, p->now_ms, p->res);
    if (rc < 0) {
        return rc;
    }
    note_status(p);
    return take_records(p->conn, out, cap, lens, max_records, p->res);
}

static int link_accept(dp_endpoint *ep, uint64_t handle, dp_cookie_gate *gate, dp_config *cfg,
                   int64_t now_ms, dp_conn **out, dp_link_result *res)
{
    int64_t gate_now = gate_clock(now_ms);
    now_ms = dp_resolve_now(now_ms);
    if (ep == NULL || gate == NULL || cfg == NULL || out == NULL || res == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    *out = NULL;
    result_init(res);
    res->status = DP_STATUS_ERROR;
    /* Handle 0: a connected CLIENT socket's one peer (its address, or
     * DP_ERR_BAD_STATE when unconnected; a SERVER's handle 0 is no slot). */
    dp_addr addr;
    int rc = dp_ep_slot_addr(ep, handle, &addr);
    if (rc < 0) {
        return rc;
    }
    if (handle == 0) {
        /* Nobody feeds a client socket's queue: read what arrived, as
         * link_pump does. The kernel delivers only the connected peer's
         * datagrams, and the gate below judges them like a slot's. */
        rc = dp_ep_poll(ep, now_ms);
        if (rc < 0) {
            return rc;
        }
    }
    unsigned char tid[32];
    size_t tid_len = dp_addr_transport_id(&addr, tid);
    int queued = dp_ep_queued(ep, handle);
    if (queued < 0) {
        return queued;
    }
    dp_conn *conn = NULL;
    /* The endpoint's gate admitted the first datagram already (counted
     * there): judging it again would count it twice. */
    int admitted = dp_ep_slot_admitted(ep, handle);
    for (int i = 0; i < queued; i++) {
        int n = dp_ep_recv(ep, handle, dp_link_buf, sizeof(dp_link_buf), NULL);
        if (n < 0) {
            break;
        }
        if (conn != NULL) {
            (void)dp_conn_feed(conn, dp_link_buf, (size_t)n, now_ms);
            res->fed++;
            continue;
        }
        unsigned char reply[DP_HVR_LEN];
        size_t reply_len = 0;
        int verdict = DP_GATE_ADMIT;
        if (i != 0 || !admitted) {
            verdict = dp_cookie_gate_check(gate, tid, tid_len, dp_link_buf, (size_t)n, gate_now,
                                           reply, sizeof(reply), &reply_len);
        }
        if (verdict == DP_GATE_REPLY) {
            send_one(ep, handle, reply, reply_len, res);
            res->hvr_sent++;
        } else if (verdict == DP_GATE_ADMIT) {
            rc = dp_conn_new(cfg, NULL, tid, tid_len, now_ms, &conn);
            if (rc < 0) {
                return rc;
            }
            (void)dp_conn_feed(conn, dp_link_buf, (size_t)n, now_ms);
            res->fed++;
        } else {
            res->gate_dropped++;
        }
    }
    if (conn == NULL) {
        return 0;
    }
    finish(ep, handle, conn, dp_ep_remote_errors(ep), now_ms, res);
    *out = conn;
    return 1;
}

static int link_write(dp_endpoint *ep, uint64_t handle, dp_conn *conn, const uint8_t *data,
                  size_t len, int64_t now_ms, dp_link_result *res)
{
    if (ep == NULL || conn == NULL || res == NULL || (data == NULL && len != 0)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    result_init(res);
    uint64_t errors_before = dp_ep_remote_errors(ep);
    /* The record's datagram straight into the send buffer when nothing is
     * queued before it: no queue node, one copy less (the per-tick path). */
    size_t direct = 0;
    int rc = dp_conn_write_direct(conn, data, len, now_ms, dp_link_buf, sizeof(dp_link_buf),
                                  &direct);
    if (direct > 0) {
        send_one(ep, handle, dp_link_buf, direct, res);
    }
    if (rc >= 0) {
        flush_output(ep, handle, conn, res);
        tell_unreachable(ep, handle, conn, errors_before, now_ms, res);
    }
    res->status = dp_conn_status(conn);
    note_notable(res);
    res->notable |= rc < 0 || res->status != DP_STATUS_CONNECTED;
    return rc;
}

static int link_send(dp_link_peer *p, const uint8_t *data, size_t len)
{
    int rc = link_write(p->ep, p->handle, p->conn, data, len, p->now_ms, p->res);
    if (rc < 0) {
        return rc;
    }
    note_status(p);
    return p->res->notable ? 1 : 0;
}

static int link_flush(dp_endpoint *ep, uint64_t handle, dp_conn *conn, dp_link_result *res)
{
    if (ep == NULL || conn == NULL || res == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    result_init(res);
    uint64_t errors_before = dp_ep_remote_errors(ep);
    flush_output(ep, handle, conn, res);
    tell_unreachable(ep, handle, conn, errors_before, DP_NOW, res);
    res->status = dp_conn_status(conn);
    return DP_OK;
}

int dp_link_close(dp_endpoint *ep, uint64_t handle, dp_conn *conn, int64_t now_ms,
                  dp_link_result *res)
{
    if (ep == NULL || conn == NULL || res == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    now_ms = dp_resolve_now(now_ms);
    dp_endpoint_lock(ep);
    (void)dp_conn_close(conn, now_ms); /* queues close_notify when connected */
    int rc = link_flush(ep, handle, conn, res);
    dp_endpoint_unlock(ep);
    return rc;
}

/* ---- The public calls: each under the endpoint's lock --------------------- */

#define DP_LINK_LOCKED(ep, call)                                                   \
    do {                                                                           \
        if ((ep) == NULL) {                                                        \
            return DP_ERR_INVALID_ARGUMENT;                                        \
        }                                                                          \
        dp_endpoint_lock(ep);                                                      \
        int rc_ = (call);                                                          \
        dp_endpoint_unlock(ep);                                                    \
        return rc_;                                                                \
    } while (0)

/* A peer struct without its endpoint or result is refused before locking. */
#define DP_LINK_PEER_LOCKED(p, call)                                               \
    do {                                                                           \
        if ((p) == NULL || (p)->conn == NULL || (p)->res == NULL) {                \
            return DP_ERR_INVALID_ARGUMENT;                                        \
        }                                                                          \
        DP_LINK_LOCKED((p)->ep, call);                                             \
    } while (0)

int dp_link_poll(dp_link_peer *p, unsigned char *out, size_t cap, uint32_t *lens,
                 uint32_t max_records)
{
    DP_LINK_PEER_LOCKED(p, link_poll(p, out, cap, lens, max_records));
}

int dp_link_accept(dp_endpoint *ep, uint64_t handle, dp_cookie_gate *gate, dp_config *cfg,
                   int64_t now_ms, dp_conn **out, dp_link_result *res)
{
    DP_LINK_LOCKED(ep, link_accept(ep, handle, gate, cfg, now_ms, out, res));
}

int dp_link_send(dp_link_peer *p, const uint8_t *data, size_t len)
{
    DP_LINK_PEER_LOCKED(p, link_send(p, data, len));
}

int dp_link_flush(dp_endpoint *ep, uint64_t handle, dp_conn *conn, dp_link_result *res)
{
    DP_LINK_LOCKED(ep, link_flush(ep, handle, conn, res));
}

/*
 * dp_enet.c: ENet 1.3.18 (upstream protocol sources, unmodified) over our
 * transports. The only file where ENet and our endpoint/DTLS code meet.
 *
 * ENet's platform layer (unix.c / win32.c: enet_socket_*, enet_time_*,
 * enet_initialize, enet_host_random_seed) is not compiled; this file
 * provides the functions ENet's protocol sources call, as Godot does with
 * its own socket patch. ENet then reads and writes datagrams through us:
 *
 *   plain  a dp_endpoint (SERVER mode with a sink: recvmmsg batches, no
 *          slots): received datagrams go to a bounded ring that
 *          enet_socket_receive pops; enet_socket_send copies each datagram
 *          into an arena that leaves in sendmmsg batches (dp_ep_send_batch).
 *          ENet sees real IPv4 addresses.
 *   DTLS   a dp_host (cookie gate, one dp_conn per remote address, timers,
 *          sendmmsg): every ENet datagram is ONE record (dp_host_send), every
 *          received record is one ENet datagram. ENet sees a synthetic
 *          address per DTLS session: host = slot index + 1, port = the low
 *          16 bits of the slot generation, so a record of a new session
 *          never reaches an ENet peer of an old one, and IPv6 works although
 *          ENet's ENetAddress is IPv4-sized. The real address is kept per
 *          slot (and per ENet peer once connected).
 *
 * ENet calls the socket layer only from inside the ENet calls made here, so
 * the socket functions find their dp_enet in a thread-local set around each
 * of those calls (enter/leave): no registry, no global state beyond ENet's
 * allocator callbacks (dp_calloc/dp_free, so ENet's memory is counted too).
 *
 * One dp_enet_service call per tick: pump the transport (socket, DTLS) into
 * the ring, run enet_host_service(…, 0) until it has nothing more, write
 * ENet's events into the caller's event array + ONE payload buffer, repeat
 * while the ring refilled, wait (in the transport, never past a DTLS timer)
 * only if nothing happened, and flush the datagrams ENet produced.
 *
 * Threads: one object, one thread at a time (the Python class serialises).
 */
#include "dp_engine.h"

#include <enet/enet.h>
#include <errno.h>
#include <string.h>

#if defined(_WIN32)
#include <winsock2.h>
#else
#include <unistd.h>
#endif

#if defined(_MSC_VER)
#define DP_ENET_THREAD_LOCAL __declspec(thread)
#else
#define DP_ENET_THREAD_LOCAL _Thread_local
#endif

#define DP_ENET_RING 256          /* received datagrams waiting for ENet */
#define DP_ENET_RING_MARGIN 32    /* the sink stops the socket read this early */
#define DP_ENET_DGRAM ENET_PROTOCOL_MAXIMUM_MTU /* largest datagram ENet reads */
#define DP_ENET_TX_ARENA (256 * 1024)
#define DP_ENET_TX_BATCH 256
#define DP_ENET_HOST_EVENTS 64
#define DP_ENET_HOST_PAYLOAD (DP_HOST_MIN_PAYLOAD * 4)
#define DP_ENET_MAX_SLOTS (1u << 20)
#define DP_ENET_ROUNDS 64 /* pump/drain rounds per service call */
#define DP_ENET_REASON 120 /* bytes of a DTLS session's end reason kept per ENet peer */

enum { DP_ENET_MODE_UNSET = 0, DP_ENET_MODE_PLAIN = 1, DP_ENET_MODE_DTLS = 2 };

typedef struct {
    uint64_t id; /* dp_host peer id of the slot's current session, 0: none */
    dp_addr addr;
} dp_enet_slot;

typedef struct {
    uint32_t len;
    uint32_t host; /* ENet address of the sender */
    uint16_t port;
} dp_enet_rx;

struct dp_enet {
    int64_t fd;
    int family;
    int fd_owned; /* 1 until a transport took the descriptor over */
    int mode;
    int closed;
    ENetHost *host;
    dp_endpoint *ep; /* plain */
    dp_host *dtls;   /* DTLS */
    dp_config *server_cfg;
    dp_cookie_gate *gate;
    dp_config *client_cfg;
    char *hostname;
    int refuse;

    dp_enet_rx ring[DP_ENET_RING];
    uint8_t *ring_data; /* DP_ENET_RING * DP_ENET_DGRAM */
    uint32_t ring_head, ring_count;
    int transport_more; /* the last pump stopped before the socket was empty */

    uint8_t *tx_arena;
    size_t tx_used;
    dp_endpoint_out tx[DP_ENET_TX_BATCH];
    dp_addr tx_addr[DP_ENET_TX_BATCH];
    uint32_t tx_count;

    dp_host_event *hev;
    uint8_t *hbuf;
    dp_enet_slot *slots;
    uint32_t slots_cap;
    dp_addr *peer_addr; /* real address per ENet peer index */
    /* DTLS mode, per ENet peer index: why its DTLS session ended (Mbed TLS /
     * DP code and text), and a DISCONNECT event owed to the caller for an
     * outgoing connection whose handshake failed (ENet itself would only
     * notice at its timeout, ~30 s). */
    int32_t *fail_code;
    char (*fail_reason)[DP_ENET_REASON];
    uint32_t *owed_connect_id; /* 0: no event owed */
    uint32_t owed;

    ENetEvent carry; /* an event whose packet did not fit the payload buffer */
    int has_carry;
    dp_enet_stats stats;
};

static DP_ENET_THREAD_LOCAL dp_enet *dp_enet_current;

/* ---- ENet's platform layer, ours ------------------------------------------ */

static void *enet_alloc_cb(size_t size)
{
    return dp_malloc_uninit(1, size ? size : 1);
}

static void enet_no_memory_cb(void)
{
    /* ENet's default aborts the process; every ENet allocation site checks
     * for NULL, so failing the operation is enough. */
}

int enet_initialize(void)
{
    return 0;
}

void enet_deinitialize(void)
{
}

enet_uint32 enet_host_random_seed(void)
{
    enet_uint32 seed = 0;
    if (dp_rng(NULL, (unsigned char *)&seed, sizeof(seed)) != 0) {
        seed = (enet_uint32)dp_clock_ms(1);
    }
    return seed;
}

enet_uint32 enet_time_get(void)
{
    return (enet_uint32)dp_clock_ms(0);
}

void enet_time_set(enet_uint32 t)
{
    (void)t; /* one monotonic clock for the whole library */
}

ENetSocket enet_socket_create(ENetSocketType type)
{
    (void)type;
    return dp_enet_current != NULL ? (ENetSocket)dp_enet_current->fd : ENET_SOCKET_NULL;
}

int enet_socket_bind(ENetSocket socket, const ENetAddress *address)
{
    (void)socket; /* Python bound the socket (port checks, no SO_REUSEADDR) */
    (void)address;
    return 0;
}

int enet_socket_get_address(ENetSocket socket, ENetAddress *address)
{
    (void)socket;
    address->host = ENET_HOST_ANY;
    address->port = 0;
    return 0;
}

int enet_socket_set_option(ENetSocket socket, ENetSocketOption option, int value)
{
    (void)socket; /* non-blocking already; buffer sizes are Python's choice */
    (void)option;
    (void)value;
    return 0;
}

void enet_socket_destroy(ENetSocket socket)
{
    (void)socket; /* the transport owns the descriptor */
}

int enet_socket_wait(ENetSocket socket, enet_uint32 *condition, enet_uint32 timeout)
{
    (void)socket; /* enet_host_service is only called with timeout 0 */
    (void)timeout;
    *condition = ENET_SOCKET_WAIT_NONE;
    return 0;
}

static void addr_to_enet_plain(const dp_addr *a, ENetAddress *out, int *ok)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    *ok = memcmp(a->ip, mapped, 12) == 0;
    memcpy(&out->host, a->ip + 12, 4); /* network order, as ENet keeps it */
    out->port = a->port;
}

static void enet_to_addr_plain(const ENetAddress *in, dp_addr *out)
{
    memset(out, 0, sizeof(*out));
    out->ip[10] = 0xff;
    out->ip[11] = 0xff;
    memcpy(out->ip + 12, &in->host, 4);
    out->port = in->port;
}

static void synthetic_address(uint64_t id, ENetAddress *out)
{
    out->host = (enet_uint32)(id & 0xFFFFFFFFu) + 1u;
    out->port = (enet_uint16)((id >> 32) & 0xFFFFu);
}

/* The dp_host peer behind a synthetic address, 0 if none (any more). */
static uint64_t synthetic_peer(const dp_enet *e, const ENetAddress *a)
{
    if (a->host == 0) {
        return 0;
    }
    uint32_t slot = a->host - 1u;
    if (slot >= e->slots_cap || e->slots[slot].id == 0) {
        return 0;
    }
    uint64_t id = e->slots[slot].id;
    return (enet_uint16)((id >> 32) & 0xFFFFu) == a->port ? id : 0;
}

int enet_socket_receive(ENetSocket socket, ENetAddress *address, ENetBuffer *buffers,
                        size_t bufferCount)
{
    (void)socket;
    dp_enet *e = dp_enet_current;
    if (e == NULL || bufferCount < 1 || e->ring_count == 0) {
        return 0;
    }
    const dp_enet_rx *rx = &e->ring[e->ring_head];
    uint32_t len = rx->len;
    if (len > buffers[0].dataLength) {
        len = 0; /* cannot happen: the sink keeps only <= DP_ENET_DGRAM */
    }
    memcpy(buffers[0].data, e->ring_data + (size_t)e->ring_head * DP_ENET_DGRAM, len);
    address->host = rx->host;
    address->port = rx->port;
    e->ring_head = (e->ring_head + 1) % DP_ENET_RING;
    e->ring_count--;
    e->stats.datagrams_in++;
    return (int)len;
}

static int tx_flush_plain(dp_enet *e)
{
    if (e->tx_count == 0 || e->ep == NULL) {
        e->tx_count = 0;
        e->tx_used = 0;
        return 0;
    }
    size_t failed = 0;
    int last_error = 0;
    dp_endpoint_lock(e->ep);
    int sent = dp_ep_send_batch(e->ep, e->tx, e->tx_count, &failed, &last_error);
    dp_endpoint_unlock(e->ep);
    if (sent < 0) {
        e->stats.send_dropped += e->tx_count;
        e->stats.last_send_error = sent;
    } else if (failed > 0) {
        e->stats.send_dropped += failed;
        e->stats.last_send_error = last_error;
    }
    e->tx_count = 0;
    e->tx_used = 0;
    return sent;
}

static size_t gather(const ENetBuffer *buffers, size_t count, uint8_t *out, size_t cap)
{
    size_t total = 0;
    for (size_t i = 0; i < count; i++) {
        if (buffers[i].dataLength > cap - total) {
            return (size_t)-1;
        }
        memcpy(out + total, buffers[i].data, buffers[i].dataLength);
        total += buffers[i].dataLength;
    }
    return total;
}

/* Never negative: ENet fails its whole service on a send error, and a lost
 * datagram is UDP's normal case (ENet retransmits what is reliable). */
int enet_socket_send(ENetSocket socket, const ENetAddress *address, const ENetBuffer *buffers,
                     size_t bufferCount)
{
    (void)socket;
    dp_enet *e = dp_enet_current;
    if (e == NULL) {
        return 0;
    }
    if (e->mode == DP_ENET_MODE_DTLS) {
        uint8_t scratch[DP_ENET_DGRAM];
        size_t len = gather(buffers, bufferCount, scratch, sizeof(scratch));
        uint64_t id = synthetic_peer(e, address);
        if (len == (size_t)-1 || id == 0) {
            e->stats.send_no_session++;
            return 0;
        }
        int rc = dp_host_send(e->dtls, id, scratch, len, DP_NOW);
        if (rc < 0) {
            /* handshaking (Godot: "busy"), ended, or above the record size */
            e->stats.send_no_session++;
            return 0;
        }
        e->stats.datagrams_out++;
        return (int)len;
    }
    if (e->tx_count == DP_ENET_TX_BATCH || e->tx_used + DP_ENET_DGRAM > DP_ENET_TX_ARENA) {
        tx_flush_plain(e);
    }
    uint8_t *dst = e->tx_arena + e->tx_used;
    size_t len = gather(buffers, bufferCount, dst, DP_ENET_DGRAM);
    if (len == (size_t)-1) {
        e->stats.send_dropped++;
        return 0;
    }
    uint32_t i = e->tx_count++;
    enet_to_addr_plain(address, &e->tx_addr[i]);
    e->tx[i].handle = 0;
    e->tx[i].dst = &e->tx_addr[i];
    e->tx[i].data = dst;
    e->tx[i].len = len;
    e->tx_used += len;
    e->stats.datagrams_out++;
    return (int)len;
}

/* ---- receive side: transports -> ring ------------------------------------- */

static int ring_push(dp_enet *e, enet_uint32 host, enet_uint16 port, const uint8_t *data,
                     size_t len)
{
    if (len > DP_ENET_DGRAM) {
        e->stats.dropped_oversized++;
        return 0;
    }
    if (e->ring_count == DP_ENET_RING) {
        e->stats.dropped_ring_full++;
        return 0;
    }
    uint32_t i = (e->ring_head + e->ring_count) % DP_ENET_RING;
    e->ring[i].len = (uint32_t)len;
    e->ring[i].host = host;
    e->ring[i].port = port;
    memcpy(e->ring_data + (size_t)i * DP_ENET_DGRAM, data, len);
    e->ring_count++;
    return 1;
}

static int plain_sink(void *ctx, uint64_t handle, const dp_addr *src, const uint8_t *data,
                      size_t len, int64_t now_ms)
{
    (void)handle;
    (void)now_ms;
    dp_enet *e = ctx;
    ENetAddress a;
    int ok;
    addr_to_enet_plain(src, &a, &ok);
    if (!ok) {
        e->stats.dropped_not_ipv4++;
    } else {
        ring_push(e, a.host, a.port, data, len);
    }
    return e->ring_count + DP_ENET_RING_MARGIN >= DP_ENET_RING;
}

static int slot_set(dp_enet *e, uint64_t id, const dp_addr *addr)
{
    uint32_t slot = (uint32_t)(id & 0xFFFFFFFFu);
    if (slot >= DP_ENET_MAX_SLOTS) {
        return DP_ERR_LIMIT;
    }
    if (slot >= e->slots_cap) {
        uint32_t cap = e->slots_cap ? e->slots_cap : 64;
        while (cap <= slot) {
            cap *= 2;
        }
        dp_enet_slot *grown = dp_calloc(cap, sizeof(*grown));
        if (grown == NULL) {
            return DP_ERR_NO_MEMORY;
        }
        if (e->slots != NULL) {
            memcpy(grown, e->slots, (size_t)e->slots_cap * sizeof(*grown));
            dp_free(e->slots);
        }
        e->slots = grown;
        e->slots_cap = cap;
    }
    e->slots[slot].id = id;
    e->slots[slot].addr = *addr;
    return DP_OK;
}

static void slot_clear(dp_enet *e, uint64_t id)
{
    uint32_t slot = (uint32_t)(id & 0xFFFFFFFFu);
    if (slot < e->slots_cap && e->slots[slot].id == id) {
        e->slots[slot].id = 0;
    }
}

/* A DTLS session ended (DISCONNECT / ERROR event). Its ENet peer keeps the
 * reason. A connected ENet peer then times out, as with Godot, which hides
 * DTLS failures from ENet; an outgoing connection still handshaking is reset
 * at once and owes the caller a DISCONNECT event. */
static void dtls_session_ended(dp_enet *e, const dp_host_event *ev)
{
    ENetAddress a;
    synthetic_address(ev->peer, &a);
    if (e->fail_code == NULL || synthetic_peer(e, &a) != ev->peer) {
        return;
    }
    for (size_t i = 0; i < e->host->peerCount; i++) {
        ENetPeer *p = &e->host->peers[i];
        if (p->state == ENET_PEER_STATE_DISCONNECTED || p->address.host != a.host ||
            p->address.port != a.port) {
            continue;
        }
        size_t len = ev->length < DP_ENET_REASON - 1 ? ev->length : DP_ENET_REASON - 1;
        memcpy(e->fail_reason[i], e->hbuf + ev->offset, len);
        e->fail_reason[i][len] = '\0';
        e->fail_code[i] = ev->code;
        if (p->state == ENET_PEER_STATE_CONNECTING && p->connectID != 0) {
            e->owed_connect_id[i] = p->connectID;
            e->owed++;
            ENetPeer *saved = p;
            dp_enet *saved_current = dp_enet_current;
            dp_enet_current = e;
            enet_peer_reset(saved);
            dp_enet_current = saved_current;
        }
        return;
    }
}

/* Take the DTLS host's events: sessions come and go, records go to the ring. */
static void dtls_events(dp_enet *e, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        const dp_host_event *ev = &e->hev[i];
        if (ev->type == DP_HOST_EVENT_CONNECT) {
            dp_host_peer_info info;
            if (dp_host_peer_get_info(e->dtls, ev->peer, &info) != DP_OK ||
                slot_set(e, ev->peer, &info.addr) != DP_OK) {
                dp_host_disconnect(e->dtls, ev->peer, DP_NOW);
                e->stats.dtls_dropped++;
            } else {
                e->stats.dtls_sessions++;
            }
        } else if (ev->type == DP_HOST_EVENT_RECEIVE) {
            ENetAddress a;
            synthetic_address(ev->peer, &a);
            if (synthetic_peer(e, &a) == ev->peer) {
                ring_push(e, a.host, a.port, e->hbuf + ev->offset, ev->length);
            }
        } else {
            dtls_session_ended(e, ev);
            slot_clear(e, ev->peer);
        }
    }
}

/* Read what the transport has (waiting up to timeout_ms if > 0). */
static int pump(dp_enet *e, int timeout_ms)
{
    if (e->mode == DP_ENET_MODE_DTLS) {
        uint32_t n = 0;
        int rc = dp_host_service(e->dtls, DP_NOW, timeout_ms, e->hev, DP_ENET_HOST_EVENTS, e->hbuf,
                                 DP_ENET_HOST_PAYLOAD, &n);
        if (rc < 0) {
            return rc;
        }
        /* The host stops at its event or payload bound with records still
         * waiting; service() goes round again for them. */
        e->transport_more = n == DP_ENET_HOST_EVENTS ||
                            (n > 0 && e->hev[n - 1].offset + e->hev[n - 1].length +
                                              DP_HOST_MIN_PAYLOAD > DP_ENET_HOST_PAYLOAD);
        dtls_events(e, n);
        return (int)n;
    }
    int64_t now = dp_clock_ms(0);
    dp_endpoint_lock(e->ep);
    int rc = 1;
    if (timeout_ms > 0) {
        rc = dp_ep_sink_wait(e->ep, timeout_ms, &now);
        if (rc == DP_ERR_ERRNO_BASE - EINTR) {
            rc = 0;
        }
    }
    if (rc == 1 || (rc == 0 && timeout_ms == 0)) {
        rc = dp_ep_poll(e->ep, now);
    }
    dp_endpoint_unlock(e->ep);
    /* plain_sink stopped the read to keep ring room: more may be waiting. */
    e->transport_more = e->ring_count + DP_ENET_RING_MARGIN >= DP_ENET_RING;
    return rc;
}

/* ---- transports ----------------------------------------------------------- */

static void close_fd(int64_t fd)
{
#if defined(_WIN32)
    closesocket((SOCKET)fd);
#else
    close((int)fd);
#endif
}

static int ensure_transport(dp_enet *e)
{
    if (e->closed) {
        return DP_ERR_CLOSED;
    }
    if (e->mode != DP_ENET_MODE_UNSET) {
        return DP_OK;
    }
    int rc;
    if (e->server_cfg != NULL || e->client_cfg != NULL) {
        rc = dp_host_new(e->fd, e->family, 0, &e->dtls);
        if (rc == DP_OK && e->server_cfg != NULL && !e->refuse) {
            rc = dp_host_set_server(e->dtls, e->server_cfg, e->gate);
        }
        if (rc == DP_OK && e->client_cfg != NULL) {
            rc = dp_host_set_client(e->dtls, e->client_cfg);
        }
        if (rc != DP_OK) {
            if (e->dtls != NULL) {
                dp_host_free(e->dtls); /* closes the descriptor it owns */
                e->dtls = NULL;
                e->fd_owned = 0;
            }
            return rc;
        }
        e->fd_owned = 0;
        e->mode = DP_ENET_MODE_DTLS;
        return DP_OK;
    }
    rc = dp_endpoint_new(&e->ep, e->fd, e->family, DP_ENDPOINT_SERVER, 64 * 1024);
    if (rc == DP_OK) {
        dp_endpoint_lock(e->ep);
        rc = dp_ep_set_limits(e->ep, 0, -1, 64 * 1024);
        if (rc == DP_OK) {
            rc = dp_ep_set_sink(e->ep, plain_sink, e);
        }
        if (rc == DP_OK) {
            dp_ep_own_fd(e->ep);
        }
        dp_endpoint_unlock(e->ep);
    }
    if (rc != DP_OK) {
        dp_endpoint_free(e->ep);
        e->ep = NULL;
        return rc;
    }
    e->fd_owned = 0;
    e->mode = DP_ENET_MODE_PLAIN;
    return DP_OK;
}

static void flush_transport(dp_enet *e)
{
    if (e->mode == DP_ENET_MODE_PLAIN) {
        tx_flush_plain(e);
    } else if (e->mode == DP_ENET_MODE_DTLS) {
        dp_host_flush(e->dtls);
    }
}

/* ---- the object ------------------------------------------------------------ */

static int enet_init_once_done;

static void enet_init_once(void)
{
    /* Idempotent: the same callbacks every time (no threads race on a
     * different value), set before the first ENet allocation. */
    ENetCallbacks cb = {enet_alloc_cb, dp_free, enet_no_memory_cb};
    enet_initialize_with_callbacks(ENET_VERSION, &cb);
    enet_init_once_done = 1;
}

#define ENTER(e)                                                                                   \
    dp_enet *saved_current_ = dp_enet_current;                                                     \
    dp_enet_current = (e)
#define LEAVE() dp_enet_current = saved_current_

int dp_enet_new(int64_t fd, int family, uint32_t peer_count, uint32_t channel_limit,
                uint32_t in_bandwidth, uint32_t out_bandwidth, dp_enet **out)
{
    if (out == NULL || (family != 4 && family != 6) || peer_count == 0 ||
        peer_count > ENET_PROTOCOL_MAXIMUM_PEER_ID || channel_limit > 255) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    *out = NULL;
    if (!enet_init_once_done) {
        enet_init_once();
    }
    dp_enet *e = dp_calloc(1, sizeof(*e));
    if (e == NULL) {
        return DP_ERR_NO_MEMORY;
    }
    e->fd = fd;
    e->family = family;
    e->ring_data = dp_malloc_uninit(DP_ENET_RING, DP_ENET_DGRAM);
    e->tx_arena = dp_malloc_uninit(1, DP_ENET_TX_ARENA);
    e->peer_addr = dp_calloc(peer_count, sizeof(dp_addr));
    if (e->ring_data == NULL || e->tx_arena == NULL || e->peer_addr == NULL) {
        dp_free(e->ring_data);
        dp_free(e->tx_arena);
        dp_free(e->peer_addr);
        dp_free(e);
        return DP_ERR_NO_MEMORY;
    }
    ENTER(e);
    ENetAddress any = {ENET_HOST_ANY, 0};
    e->host = enet_host_create(&any, peer_count, channel_limit ? channel_limit : 255,
                               in_bandwidth, out_bandwidth);
    LEAVE();
    if (e->host == NULL) {
        dp_free(e->ring_data);
        dp_free(e->tx_arena);
        dp_free(e->peer_addr);
        dp_free(e);
        return DP_ERR_NO_MEMORY;
    }
    e->fd_owned = 1;
    *out = e;
    return DP_OK;
}

static void close_transport(dp_enet *e)
{
    if (e->dtls != NULL) {
        dp_host_close(e->dtls, DP_NOW);
    }
    if (e->ep != NULL) {
        dp_endpoint_close(e->ep);
    }
    if (e->fd_owned) {
        close_fd(e->fd);
        e->fd_owned = 0;
    }
}

int dp_enet_close(dp_enet *e)
{
    if (e == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (e->closed) {
        return DP_OK;
    }
    ENTER(e);
    flush_transport(e);
    e->closed = 1;
    LEAVE();
    close_transport(e);
    return DP_OK;
}

void dp_enet_free(dp_enet *e)
{
    if (e == NULL) {
        return;
    }
    dp_enet_close(e);
    ENTER(e);
    if (e->has_carry && e->carry.packet != NULL) {
        enet_packet_destroy(e->carry.packet);
    }
    enet_host_destroy(e->host);
    LEAVE();
    dp_host_free(e->dtls);
    dp_endpoint_free(e->ep);
    dp_config_free(e->server_cfg);
    dp_config_free(e->client_cfg);
    dp_cookie_gate_free(e->gate);
    dp_free(e->hostname);
    dp_free(e->hev);
    dp_free(e->hbuf);
    dp_free(e->slots);
    dp_free(e->ring_data);
    dp_free(e->tx_arena);
    dp_free(e->peer_addr);
    dp_free(e->fail_code);
    dp_free(e->fail_reason);
    dp_free(e->owed_connect_id);
    dp_free(e);
}

static int dtls_buffers(dp_enet *e)
{
    if (e->fail_code == NULL) {
        e->fail_code = dp_calloc(e->host->peerCount, sizeof(*e->fail_code));
        e->fail_reason = dp_calloc(e->host->peerCount, sizeof(*e->fail_reason));
        e->owed_connect_id = dp_calloc(e->host->peerCount, sizeof(*e->owed_connect_id));
        if (e->fail_code == NULL || e->fail_reason == NULL || e->owed_connect_id == NULL) {
            dp_free(e->fail_code);
            dp_free(e->fail_reason);
            dp_free(e->owed_connect_id);
            e->fail_code = NULL;
            e->fail_reason = NULL;
            e->owed_connect_id = NULL;
            return DP_ERR_NO_MEMORY;
        }
    }
    if (e->hev == NULL) {
        e->hev = dp_calloc(DP_ENET_HOST_EVENTS, sizeof(dp_host_event));
        e->hbuf = dp_malloc_uninit(1, DP_ENET_HOST_PAYLOAD);
        if (e->hev == NULL || e->hbuf == NULL) {
            dp_free(e->hev);
            dp_free(e->hbuf);
            e->hev = NULL;
            e->hbuf = NULL;
            return DP_ERR_NO_MEMORY;
        }
    }
    return DP_OK;
}

int dp_enet_dtls_server_setup(dp_enet *e, dp_config *cfg, dp_cookie_gate *gate)
{
    if (e == NULL || cfg == NULL || gate == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (e->mode != DP_ENET_MODE_UNSET || e->server_cfg != NULL || e->client_cfg != NULL) {
        return DP_ERR_BAD_STATE; /* once, before the first use (Godot: FAILED) */
    }
    int rc = dtls_buffers(e);
    if (rc != DP_OK) {
        return rc;
    }
    dp_config_ref(cfg);
    dp_cookie_gate_ref(gate);
    e->server_cfg = cfg;
    e->gate = gate;
    return DP_OK;
}

int dp_enet_dtls_client_setup(dp_enet *e, dp_config *cfg, const char *hostname)
{
    if (e == NULL || cfg == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (e->mode != DP_ENET_MODE_UNSET || e->server_cfg != NULL || e->client_cfg != NULL) {
        return DP_ERR_BAD_STATE;
    }
    int rc = dtls_buffers(e);
    if (rc != DP_OK) {
        return rc;
    }
    if (hostname != NULL) {
        size_t n = strlen(hostname);
        e->hostname = dp_calloc(1, n + 1);
        if (e->hostname == NULL) {
            return DP_ERR_NO_MEMORY;
        }
        memcpy(e->hostname, hostname, n);
    }
    dp_config_ref(cfg);
    e->client_cfg = cfg;
    return DP_OK;
}

static ENetPeer *peer_of(dp_enet *e, uint32_t index, uint32_t connect_id)
{
    if (e->closed || index >= e->host->peerCount) {
        return NULL;
    }
    ENetPeer *p = &e->host->peers[index];
    if (p->state == ENET_PEER_STATE_DISCONNECTED || p->connectID != connect_id) {
        return NULL;
    }
    return p;
}

int dp_enet_connect(dp_enet *e, const dp_addr *addr, uint32_t channels, uint32_t data,
                    uint32_t *index, uint32_t *connect_id)
{
    if (e == NULL || addr == NULL || index == NULL || connect_id == NULL || channels > 255) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    int rc = ensure_transport(e);
    if (rc != DP_OK) {
        return rc;
    }
    ENetAddress a;
    uint64_t id = 0;
    if (e->mode == DP_ENET_MODE_DTLS) {
        if (e->client_cfg == NULL) {
            return DP_ERR_BAD_STATE; /* a DTLS server host does not connect out */
        }
        rc = dp_host_connect(e->dtls, addr, e->hostname, DP_NOW, &id);
        if (rc != DP_OK) {
            return rc;
        }
        rc = slot_set(e, id, addr);
        if (rc != DP_OK) {
            dp_host_disconnect(e->dtls, id, DP_NOW);
            return rc;
        }
        synthetic_address(id, &a);
    } else {
        int ok;
        addr_to_enet_plain(addr, &a, &ok);
        if (!ok) {
            return DP_ERR_UNSUPPORTED; /* plain ENet addresses are IPv4 */
        }
    }
    ENTER(e);
    ENetPeer *p = enet_host_connect(e->host, &a, channels ? channels : 255, data);
    LEAVE();
    if (p == NULL) {
        if (id != 0) {
            slot_clear(e, id);
            dp_host_disconnect(e->dtls, id, DP_NOW);
        }
        return DP_ERR_LIMIT; /* no free peer (or no memory for its channels) */
    }
    *index = p->incomingPeerID;
    *connect_id = p->connectID;
    e->peer_addr[p->incomingPeerID] = *addr;
    if (e->fail_code != NULL) {
        e->fail_code[p->incomingPeerID] = 0;
        e->fail_reason[p->incomingPeerID][0] = '\0';
    }
    return DP_OK;
}

/* Copy one ENet event into the caller's arrays. 0: it did not fit (kept). */
static int emit(dp_enet *e, const ENetEvent *ev, dp_enet_event *events, uint32_t *n,
                uint8_t *payload, size_t cap, size_t *used)
{
    dp_enet_event *o = &events[*n];
    memset(o, 0, sizeof(*o));
    o->type = (uint8_t)ev->type;
    o->peer = ev->peer != NULL ? ev->peer->incomingPeerID : 0;
    /* ENet leaves channelID unset outside RECEIVE, and data unset in it. */
    o->data = ev->type == ENET_EVENT_TYPE_RECEIVE ? 0 : ev->data;
    o->channel = ev->type == ENET_EVENT_TYPE_RECEIVE ? ev->channelID : 0;
    if (ev->type == ENET_EVENT_TYPE_RECEIVE && ev->packet != NULL) {
        size_t len = ev->packet->dataLength;
        if (len > cap - *used) {
            return 0;
        }
        memcpy(payload + *used, ev->packet->data, len);
        o->offset = (uint32_t)*used;
        o->length = (uint32_t)len;
        o->flags = (uint8_t)(ev->packet->flags & 0xFF);
        *used += len;
        enet_packet_destroy(ev->packet);
        e->stats.packets_in++;
    }
    if (ev->peer != NULL) {
        o->connect_id = ev->peer->connectID;
        if (ev->type == ENET_EVENT_TYPE_CONNECT && e->mode == DP_ENET_MODE_DTLS) {
            uint32_t slot = ev->peer->address.host - 1u;
            if (e->fail_code != NULL) {
                e->fail_code[ev->peer->incomingPeerID] = 0;
                e->fail_reason[ev->peer->incomingPeerID][0] = '\0';
            }
            if (slot < e->slots_cap) {
                e->peer_addr[ev->peer->incomingPeerID] = e->slots[slot].addr;
            }
            o->addr = e->peer_addr[ev->peer->incomingPeerID];
        } else if (ev->type == ENET_EVENT_TYPE_CONNECT) {
            enet_to_addr_plain(&ev->peer->address, &e->peer_addr[ev->peer->incomingPeerID]);
            o->addr = e->peer_addr[ev->peer->incomingPeerID];
        } else if (ev->type == ENET_EVENT_TYPE_DISCONNECT && e->mode == DP_ENET_MODE_DTLS) {
            /* ENet is done with the peer: end its DTLS session too (close_notify). */
            uint64_t id = synthetic_peer(e, &ev->peer->address);
            if (id != 0) {
                dp_host_disconnect(e->dtls, id, DP_NOW);
                slot_clear(e, id);
            }
        }
    }
    (*n)++;
    return 1;
}

static int host_service(dp_enet *e, int timeout_ms, dp_enet_event *events, uint32_t max_events,
                        uint8_t *payload, size_t cap, uint32_t *n_events)
{
    uint32_t n = 0;
    size_t used = 0;
    int rc = ensure_transport(e);
    if (rc != DP_OK) {
        return rc;
    }
    int64_t deadline = timeout_ms > 0 ? dp_clock_ms(0) + timeout_ms : 0;
    int full = 0;
    if (e->has_carry) {
        if (!emit(e, &e->carry, events, &n, payload, cap, &used)) {
            if (e->carry.packet != NULL && e->carry.packet->dataLength > cap) {
                /* never fits: the caller's buffer is smaller than the limit */
                enet_packet_destroy(e->carry.packet);
                e->has_carry = 0;
                e->stats.dropped_oversized++;
            }
            *n_events = 0;
            return 0;
        }
        e->has_carry = 0;
    }
    for (int round = 0; round < DP_ENET_ROUNDS && !full; round++) {
        if (e->owed > 0) {
            for (uint32_t i = 0; i < e->host->peerCount && n < max_events; i++) {
                if (e->owed_connect_id[i] != 0) {
                    dp_enet_event *o = &events[n++];
                    memset(o, 0, sizeof(*o));
                    o->type = DP_ENET_EVENT_DISCONNECT;
                    o->peer = (uint32_t)i;
                    o->connect_id = e->owed_connect_id[i];
                    e->owed_connect_id[i] = 0;
                    e->owed--;
                }
            }
            if (n == max_events) {
                break;
            }
        }
        rc = pump(e, 0);
        if (rc < 0) {
            break;
        }
        /* enet_host_service sends for and receives from every peer before
         * it dispatches ONE event; the events it queued meanwhile come from
         * enet_host_check_events (dispatch only), so a batch costs one pass
         * over the peers, not one per event. */
        ENetEvent ev;
        int got = n < max_events ? enet_host_service(e->host, &ev, 0) : 0;
        while (got > 0) {
            if (!emit(e, &ev, events, &n, payload, cap, &used)) {
                e->carry = ev;
                e->has_carry = 1;
                full = 1;
                break;
            }
            if (n == max_events) {
                break;
            }
            got = enet_host_check_events(e->host, &ev);
            if (got == 0 && e->ring_count > 0) {
                got = enet_host_service(e->host, &ev, 0);
            }
        }
        if (n == max_events) {
            full = 1;
        }
        if (full || e->ring_count > 0 || e->transport_more) {
            continue; /* bounded by DP_ENET_ROUNDS */
        }
        if (n > 0 || timeout_ms == 0) {
            break;
        }
        int64_t left = deadline - dp_clock_ms(0);
        if (timeout_ms > 0 && left <= 0) {
            break;
        }
        /* Nothing happened: wait in the transport (a DTLS host never waits
         * past its own timers), then go round once more. */
        enet_host_flush(e->host);
        flush_transport(e);
        rc = pump(e, timeout_ms < 0 ? 1000 : (int)left);
        if (rc < 0) {
            break;
        }
        round = 0; /* a wait that returned starts a fresh budget */
        if (rc == 0 && e->ring_count == 0 && timeout_ms > 0 && dp_clock_ms(0) >= deadline) {
            enet_host_service(e->host, NULL, 0); /* timers, acks */
            break;
        }
    }
    /* The acknowledgements and replies ENet queued while the events were
     * dispatched leave now, not at the caller's next call. */
    enet_host_flush(e->host);
    flush_transport(e);
    *n_events = n;
    return rc < 0 && rc != DP_ERR_WOULD_BLOCK ? rc : (int)n;
}

int dp_enet_service(dp_enet *e, int timeout_ms, dp_enet_event *events, uint32_t max_events,
                    uint8_t *payload, size_t payload_cap, uint32_t *n_events)
{
    if (n_events != NULL) {
        *n_events = 0;
    }
    if (e == NULL || events == NULL || max_events == 0 || payload == NULL || n_events == NULL ||
        payload_cap > UINT32_MAX) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (e->closed) {
        return DP_ERR_CLOSED;
    }
    ENTER(e);
    int rc = host_service(e, timeout_ms, events, max_events, payload, payload_cap, n_events);
    LEAVE();
    return rc;
}

int dp_enet_flush(dp_enet *e)
{
    if (e == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    int rc = ensure_transport(e);
    if (rc != DP_OK) {
        return rc;
    }
    ENTER(e);
    enet_host_flush(e->host);
    flush_transport(e);
    LEAVE();
    return DP_OK;
}

static ENetPacket *make_packet(dp_enet *e, const uint8_t *data, size_t len, uint32_t flags)
{
    if (len > e->host->maximumPacketSize) {
        return NULL;
    }
    /* Only the flags a sender may choose; ENet's internal ones stay ENet's. */
    flags &= ENET_PACKET_FLAG_RELIABLE | ENET_PACKET_FLAG_UNSEQUENCED |
             ENET_PACKET_FLAG_UNRELIABLE_FRAGMENT;
    return enet_packet_create(data, len, flags);
}

int dp_enet_send(dp_enet *e, uint32_t index, uint32_t connect_id, uint32_t channel,
                 const uint8_t *data, size_t len, uint32_t flags)
{
    if (e == NULL || (data == NULL && len > 0)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    ENetPeer *p = peer_of(e, index, connect_id);
    if (p == NULL) {
        return DP_ERR_CLOSED;
    }
    if (p->state != ENET_PEER_STATE_CONNECTED) {
        return DP_ERR_BAD_STATE;
    }
    if (channel >= p->channelCount) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (len > e->host->maximumPacketSize) {
        return DP_ERR_TOO_LARGE;
    }
    ENTER(e);
    ENetPacket *packet = make_packet(e, data, len, flags);
    int rc = packet == NULL ? DP_ERR_NO_MEMORY : enet_peer_send(p, (enet_uint8)channel, packet);
    if (rc < 0 && packet != NULL) {
        enet_packet_destroy(packet);
        rc = DP_ERR_NO_MEMORY;
    }
    LEAVE();
    if (rc == 0) {
        e->stats.packets_out++;
    }
    return rc;
}

int dp_enet_broadcast(dp_enet *e, uint32_t channel, const uint8_t *data, size_t len,
                      uint32_t flags)
{
    if (e == NULL || (data == NULL && len > 0) || channel > 255) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (e->closed) {
        return DP_ERR_CLOSED;
    }
    if (len > e->host->maximumPacketSize) {
        return DP_ERR_TOO_LARGE;
    }
    ENTER(e);
    ENetPacket *packet = make_packet(e, data, len, flags);
    if (packet != NULL) {
        enet_host_broadcast(e->host, (enet_uint8)channel, packet); /* destroys it if unused */
    }
    LEAVE();
    return packet == NULL ? DP_ERR_NO_MEMORY : DP_OK;
}

int dp_enet_peer_disconnect(dp_enet *e, uint32_t index, uint32_t connect_id, uint32_t data,
                            int how)
{
    if (e == NULL || how < 0 || how > 3) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    ENetPeer *p = peer_of(e, index, connect_id);
    if (p == NULL) {
        return DP_ERR_CLOSED;
    }
    uint64_t id = e->mode == DP_ENET_MODE_DTLS ? synthetic_peer(e, &p->address) : 0;
    ENTER(e);
    switch (how) {
    case DP_ENET_DISCONNECT:
        enet_peer_disconnect(p, data);
        break;
    case DP_ENET_DISCONNECT_LATER:
        enet_peer_disconnect_later(p, data);
        break;
    case DP_ENET_DISCONNECT_NOW:
        enet_peer_disconnect_now(p, data); /* sends the command at once */
        flush_transport(e);
        break;
    default:
        enet_peer_reset(p);
        break;
    }
    LEAVE();
    if (how >= DP_ENET_DISCONNECT_NOW && id != 0) {
        /* No DISCONNECT event follows: end the DTLS session here. */
        dp_host_disconnect(e->dtls, id, DP_NOW);
        slot_clear(e, id);
        dp_host_flush(e->dtls);
    }
    return DP_OK;
}

int dp_enet_peer_ping(dp_enet *e, uint32_t index, uint32_t connect_id)
{
    ENetPeer *p = e != NULL ? peer_of(e, index, connect_id) : NULL;
    if (p == NULL) {
        return DP_ERR_CLOSED;
    }
    ENTER(e);
    enet_peer_ping(p);
    LEAVE();
    return DP_OK;
}

int dp_enet_peer_configure(dp_enet *e, uint32_t index, uint32_t connect_id, int what, uint32_t a,
                           uint32_t b, uint32_t c)
{
    ENetPeer *p = e != NULL ? peer_of(e, index, connect_id) : NULL;
    if (p == NULL) {
        return DP_ERR_CLOSED;
    }
    switch (what) {
    case DP_ENET_PEER_PING_INTERVAL:
        enet_peer_ping_interval(p, a);
        return DP_OK;
    case DP_ENET_PEER_TIMEOUT:
        enet_peer_timeout(p, a, b, c);
        return DP_OK;
    case DP_ENET_PEER_THROTTLE:
        if (b > ENET_PEER_PACKET_THROTTLE_SCALE || c > ENET_PEER_PACKET_THROTTLE_SCALE) {
            return DP_ERR_INVALID_ARGUMENT;
        }
        ENTER(e);
        enet_peer_throttle_configure(p, a, b, c);
        LEAVE();
        return DP_OK;
    default:
        return DP_ERR_INVALID_ARGUMENT;
    }
}

int dp_enet_peer_get_info(const dp_enet *e, uint32_t index, uint32_t connect_id,
                          dp_enet_peer_info *out)
{
    if (e == NULL || out == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    ENetPeer *p = peer_of((dp_enet *)e, index, connect_id);
    if (p == NULL) {
        return DP_ERR_CLOSED;
    }
    memset(out, 0, sizeof(*out));
    out->state = (int)p->state;
    out->channels = (uint32_t)p->channelCount;
    out->addr = e->peer_addr[index];
    out->mtu = p->mtu;
    out->round_trip_time = p->roundTripTime;
    out->round_trip_time_variance = p->roundTripTimeVariance;
    out->last_round_trip_time = p->lastRoundTripTime;
    out->last_round_trip_time_variance = p->lastRoundTripTimeVariance;
    out->packet_loss = p->packetLoss;
    out->packet_loss_variance = p->packetLossVariance;
    out->packet_loss_epoch = p->packetLossEpoch;
    out->packet_throttle = p->packetThrottle;
    out->packet_throttle_limit = p->packetThrottleLimit;
    out->packet_throttle_counter = p->packetThrottleCounter;
    out->packet_throttle_epoch = p->packetThrottleEpoch;
    out->packet_throttle_acceleration = p->packetThrottleAcceleration;
    out->packet_throttle_deceleration = p->packetThrottleDeceleration;
    out->packet_throttle_interval = p->packetThrottleInterval;
    out->ping_interval = p->pingInterval;
    out->timeout_limit = p->timeoutLimit;
    out->timeout_minimum = p->timeoutMinimum;
    out->timeout_maximum = p->timeoutMaximum;
    out->incoming_bandwidth = p->incomingBandwidth;
    out->outgoing_bandwidth = p->outgoingBandwidth;
    out->incoming_data_total = p->incomingDataTotal;
    out->outgoing_data_total = p->outgoingDataTotal;
    out->reliable_data_in_transit = p->reliableDataInTransit;
    out->dtls_peer = e->mode == DP_ENET_MODE_DTLS ? synthetic_peer(e, &p->address) : 0;
    out->incoming_peer_id = p->incomingPeerID;
    out->outgoing_peer_id = p->outgoingPeerID;
    out->incoming_session_id = p->incomingSessionID;
    out->outgoing_session_id = p->outgoingSessionID;
    return DP_OK;
}

int dp_enet_set(dp_enet *e, int what, uint32_t a, uint32_t b)
{
    if (e == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    switch (what) {
    case DP_ENET_SET_CHANNEL_LIMIT:
        if (a > 255) {
            return DP_ERR_INVALID_ARGUMENT;
        }
        enet_host_channel_limit(e->host, a ? a : 255);
        return DP_OK;
    case DP_ENET_SET_BANDWIDTH_LIMIT:
        enet_host_bandwidth_limit(e->host, a, b);
        return DP_OK;
    case DP_ENET_SET_COMPRESS:
        if (a == 0) {
            enet_host_compress(e->host, NULL);
            return DP_OK;
        }
        if (a == 1) {
            return enet_host_compress_with_range_coder(e->host) == 0 ? DP_OK : DP_ERR_NO_MEMORY;
        }
        return DP_ERR_UNSUPPORTED;
    case DP_ENET_SET_MAX_PACKET_SIZE:
        if (a == 0) {
            return DP_ERR_INVALID_ARGUMENT;
        }
        e->host->maximumPacketSize = a;
        e->host->maximumWaitingData = b ? b : a;
        return DP_OK;
    case DP_ENET_SET_REFUSE:
        e->refuse = a != 0;
        if (e->dtls != NULL && e->server_cfg != NULL) {
            return dp_host_set_server(e->dtls, e->refuse ? NULL : e->server_cfg,
                                      e->refuse ? NULL : e->gate);
        }
        return DP_OK;
    case DP_ENET_SET_DUPLICATE_PEERS:
        e->host->duplicatePeers = a ? a : ENET_PROTOCOL_MAXIMUM_PEER_ID;
        return DP_OK;
    default:
        return DP_ERR_INVALID_ARGUMENT;
    }
}

int dp_enet_pop_statistic(dp_enet *e, int which, uint32_t *out)
{
    if (e == NULL || out == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    enet_uint32 *field;
    switch (which) {
    case 0:
        field = &e->host->totalSentData;
        break;
    case 1:
        field = &e->host->totalSentPackets;
        break;
    case 2:
        field = &e->host->totalReceivedData;
        break;
    case 3:
        field = &e->host->totalReceivedPackets;
        break;
    default:
        return DP_ERR_INVALID_ARGUMENT;
    }
    *out = *field;
    *field = 0;
    return DP_OK;
}

int dp_enet_get_stats(const dp_enet *e, dp_enet_stats *out)
{
    if (e == NULL || out == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    *out = e->stats;
    out->connected_peers = (uint32_t)e->host->connectedPeers;
    out->peer_count = (uint32_t)e->host->peerCount;
    out->mode = e->mode;
    return DP_OK;
}

dp_host *dp_enet_dtls_host(const dp_enet *e)
{
    return e != NULL ? e->dtls : NULL;
}

int dp_enet_inject(dp_enet *e, const dp_addr *src, const uint8_t *data, size_t len)
{
    if (e == NULL || src == NULL || (data == NULL && len > 0)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    int rc = ensure_transport(e);
    if (rc != DP_OK) {
        return rc;
    }
    if (e->mode != DP_ENET_MODE_PLAIN) {
        return DP_ERR_BAD_STATE;
    }
    ENetAddress a;
    int ok;
    addr_to_enet_plain(src, &a, &ok);
    return ok ? ring_push(e, a.host, a.port, data, len) : 0;
}

int dp_enet_peer_last_error(const dp_enet *e, uint32_t index, char *buf, size_t cap,
                            int32_t *code)
{
    if (e == NULL || buf == NULL || cap == 0 || code == NULL || index >= e->host->peerCount) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    *code = 0;
    buf[0] = '\0';
    if (e->fail_code == NULL) {
        return 0;
    }
    size_t len = strlen(e->fail_reason[index]);
    if (len >= cap) {
        len = cap - 1;
    }
    memcpy(buf, e->fail_reason[index], len);
    buf[len] = '\0';
    *code = e->fail_code[index];
    return (int)len;
}

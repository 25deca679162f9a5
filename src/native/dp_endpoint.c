/*
 * dp_endpoint.c: the UDP I/O driver. One endpoint wraps one non-blocking
 * socket that Python created; every syscall on it happens here.
 *
 * Modes
 *   CLIENT  one byte-bounded queue (the endpoint's own, handle 0) receives
 *           every datagram with its source address. Optional "connected"
 *           filter: datagrams from any other address are dropped (counted).
 *   SERVER  datagrams are routed by (IPv6-mapped address, port, scope) to
 *           peer slots through an open-addressing hash table (linear probing,
 *           backward-shift deletion, seeded mixer: O(1) per datagram).
 *
 * Slot lifecycle (SERVER)
 *   FREE --(datagram from an unknown sender, pending < max_pending)--> PENDING
 *     The slot is inserted in the hash table and appended to the pending
 *     FIFO, holding its first datagram. A sender whose first datagram does not
 *     fit the peer queue creates no slot (drop_queue_full). When the pending
 *     list is full (or max_pending is 0) the datagram is dropped
 *     (drop_pending_full): memory is bounded by max_pending.
 *   PENDING --(dp_endpoint_take, oldest first)--> TAKEN
 *     The owner (a Python PacketPeerUDP, later a dp_conn) keeps the handle;
 *     the slot stays routed until the owner closes it.
 *   PENDING --(pending_timeout, max_pending lowered, close)--> FREE
 *   TAKEN --(dp_endpoint_slot_close, close)--> FREE
 *   Freeing a slot removes it from the table, discards its queue and bumps
 *   its generation: every old handle (generation << 32 | index) is now stale
 *   and returns DP_ERR_CLOSED, even after the index is reused.
 *
 * Threads
 *   A UDPServer and every peer it hands out (or a DTLS host and its peers)
 *   are different Python objects over one endpoint, and cffi releases the
 *   GIL around every call, so the endpoint has one mutex. Each public
 *   dp_endpoint_* function holds it for the whole call; C callers that need
 *   several steps at once (dp_link.c, dp_host.c) hold it with
 *   dp_endpoint_lock and call the dp_ep_* forms, which expect it held.
 *   Only waits release it: a blocked wait holds no lock, so other threads
 *   (and a fork()ed child) are never stuck behind it.
 *
 * Closing while a wait is blocked on another thread
 *   Waiting releases the lock, so dp_ep_close can run meanwhile. It marks
 *   the endpoint closed, wakes every waiter (a self-pipe polled with the
 *   socket; shutdown(SHUT_RD) for a recvmmsg blocked in the kernel, Linux
 *   only) and returns only once none is left inside: after it returns, no
 *   call touches the socket or the endpoint's buffers again, so the owner
 *   may close the descriptor. A woken wait returns DP_ERR_CLOSED. Closing a
 *   slot wakes the waits on that slot the same way (Linux: the pipe is one
 *   eventfd in semaphore mode). Without a pipe (Windows,
 *   or pipe() failed) waits run in slices of DP_WAKE_SLICE_MS and look at
 *   the state between slices.
 *
 * Queues count bytes like Godot's recv_buf_size: each datagram costs its
 * length + DP_QUEUE_ENTRY_OVERHEAD; a datagram that does not fit is dropped.
 * The limit is exact (Godot rounds it up to a power of two). Storage grows
 * on demand up to the limit and is released when a large queue empties, so
 * idle peers cost only their slot.
 */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* recvmmsg, and the POSIX socket API under -std=c11 */
#endif
#include "dtlspeer.h"

#include <errno.h>
#include <string.h>

#include "mbedtls/threading.h"

#if defined(_WIN32)
#include <winsock2.h>
#include <ws2tcpip.h>
typedef SOCKET dp_socket_t;
#define DP_INVALID_SOCKET INVALID_SOCKET
#define DP_LAST_ERROR() WSAGetLastError()
#define DP_EAGAIN WSAEWOULDBLOCK
#define DP_EINTR WSAEINTR
typedef int dp_socklen_t;
#else
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>
#define DP_WAKE_PIPE 1 /* waits poll a self-pipe next to the socket (see wait_poll) */
#if defined(__linux__) && !defined(DP_PORTABLE_IO) /* the portable build tests the pipe */
#include <sys/eventfd.h>
#define DP_WAKE_EVENTFD 1 /* the "pipe" is one eventfd in semaphore mode */
#endif
typedef int dp_socket_t;
#define DP_INVALID_SOCKET (-1)
#define DP_LAST_ERROR() errno
#define DP_EAGAIN EAGAIN
#define DP_EINTR EINTR
typedef socklen_t dp_socklen_t;
#endif

#if defined(__linux__) && !defined(DP_PORTABLE_IO)
#define DP_USE_MMSG 1
#define DP_USE_BLOCKING_WAIT 1 /* long waits block in recvmmsg itself (see blocking_wait) */
#include <fcntl.h>
#include <sys/time.h>
#include <time.h>
#endif

#define DP_SERVER_BATCH 16 /* datagrams per recvmmsg in SERVER mode */
#define DP_CLIENT_BATCH 4  /* CLIENT mode: usually one in flight */
/* Waits (CLIENT, or a host's sink) at least this long block in recvmmsg; shorter
 * ones poll(), whose timer is precise (SO_RCVTIMEO counts in jiffies: +4-8 ms). */
#define DP_BLOCKING_WAIT_MIN_MS 40
/* Waits without a wake pipe look at the endpoint's state this often. */
#define DP_WAKE_SLICE_MS 100
#define DP_QUEUE_MIN_CAP 512u
#define DP_QUEUE_KEEP_CAP 16384u /* an emptied queue above this frees its storage */
#define DP_SLOT_FREE 0
#define DP_SLOT_PENDING 1
#define DP_SLOT_TAKEN 2
#define DP_NO_INDEX UINT32_MAX
#define DP_MAX_SLOTS (1u << 30)
/* Pending slots one IP address may hold once a gate judges new senders
 * (ports differ): one host cannot fill a Godot-sized pending list (16). */
#define DP_PENDING_PER_ADDRESS 4u
/* HelloVerifyRequests queued while a receive batch is routed, then sent
 * with one sendmmsg (a spoofed flood costs one syscall per batch, not one
 * per hello). */
#define DP_REPLY_BATCH 32

typedef struct dp_reply {
    dp_addr dst;
    uint32_t len;
    uint8_t data[DP_HVR_LEN];
} dp_reply;

/* ---- Byte ring of datagrams ---------------------------------------------- */

typedef struct {
    uint8_t *buf;
    uint32_t cap;   /* storage bytes */
    uint32_t head;  /* offset of the oldest entry */
    uint32_t used;  /* bytes in use */
    uint32_t count; /* entries */
    uint32_t limit; /* recv_buf_size */
} dp_queue;

/* An entry: this header (DP_QUEUE_ENTRY_OVERHEAD bytes) then the payload. */
typedef struct {
    uint32_t len;
    uint16_t port;
    uint16_t reserved;
    uint8_t ip[16];
} dp_entry_header;

typedef char dp_entry_header_is_overhead[sizeof(dp_entry_header) == DP_QUEUE_ENTRY_OVERHEAD ? 1 : -1];

static void ring_put(dp_queue *q, uint32_t pos, const void *src, uint32_t n)
{
    uint32_t first = q->cap - pos < n ? q->cap - pos : n;
    memcpy(q->buf + pos, src, first);
    if (n > first) {
        memcpy(q->buf, (const uint8_t *)src + first, n - first);
    }
}

static void ring_get(const dp_queue *q, uint32_t pos, void *dst, uint32_t n)
{
    uint32_t first = q->cap - pos < n ? q->cap - pos : n;
    memcpy(dst, q->buf + pos, first);
    if (n > first) {
        memcpy((uint8_t *)dst + first, q->buf, n - first);
    }
}

static void queue_release(dp_queue *q)
{
    dp_free(q->buf);
    q->buf = NULL;
    q->cap = q->head = q->used = q->count = 0;
}

/* Grow storage to hold at least `need` bytes (need <= limit). */
static int queue_grow(dp_queue *q, uint32_t need)
{
    uint64_t cap = q->cap ? q->cap : DP_QUEUE_MIN_CAP;
    while (cap < need) {
        cap *= 2;
    }
    if (cap > q->limit) {
        cap = q->limit;
    }
    uint8_t *nb = dp_calloc(1, (size_t)cap);
    if (nb == NULL) {
        return DP_ERR_NO_MEMORY;
    }
    if (q->used) {
        ring_get(q, q->head, nb, q->used); /* linearise */
    }
    dp_free(q->buf);
    q->buf = nb;
    q->cap = (uint32_t)cap;
    q->head = 0;
    return DP_OK;
}

/* 0 queued, 1 no room (limit), DP_ERR_NO_MEMORY. */
static int queue_push(dp_queue *q, const dp_addr *src, const uint8_t *data, uint32_t len)
{
    uint64_t need = (uint64_t)q->used + DP_QUEUE_ENTRY_OVERHEAD + len;
    if (need > q->limit) {
        return 1;
    }
    if (need > q->cap) {
        int rc = queue_grow(q, (uint32_t)need);
        if (rc < 0) {
            return rc;
        }
    }
    dp_entry_header h;
    memset(&h, 0, sizeof(h));
    h.len = len;
    h.port = src->port;
    memcpy(h.ip, src->ip, 16);
    uint32_t tail = (uint32_t)(((uint64_t)q->head + q->used) % q->cap);
    ring_put(q, tail, &h, sizeof(h));
    ring_put(q, (uint32_t)(((uint64_t)tail + sizeof(h)) % q->cap), data, len);
    q->used += DP_QUEUE_ENTRY_OVERHEAD + len;
    q->count++;
    return 0;
}

static void queue_peek(const dp_queue *q, dp_entry_header *h)
{
    ring_get(q, q->head, h, sizeof(*h));
}

static void queue_drop_head(dp_queue *q, uint32_t len)
{
    q->head = (uint32_t)(((uint64_t)q->head + DP_QUEUE_ENTRY_OVERHEAD + len) % q->cap);
    q->used -= DP_QUEUE_ENTRY_OVERHEAD + len;
    q->count--;
    if (q->count == 0) {
        q->head = 0;
        if (q->cap > DP_QUEUE_KEEP_CAP) {
            queue_release(q);
        }
    }
}

/* ---- Slots and the endpoint ------------------------------------------------ */

typedef struct {
    dp_addr addr;
    uint32_t gen;  /* bumped on every free; starts at 1 so no handle is 0 */
    uint8_t state; /* DP_SLOT_* */
    uint32_t prev; /* pending FIFO links, or free-list link in `next` */
    uint32_t next;
    uint32_t waiters; /* dp_endpoint_wait calls blocked on this slot */
    int64_t created_ms;
    dp_queue queue;
    dp_udp_stats stats;
    /* New session from a live address (RFC 6347 4.2.8, see route_known):
     * `succ` is the slot of the handshake that may replace this one, `pred`
     * the live slot it may replace. A successor is not in the hash table
     * until it connects (dp_ep_slot_promote) or its predecessor is
     * freed. */
    uint32_t succ;
    uint32_t pred;
    uint8_t routed;      /* in the hash table */
    uint8_t established; /* the link's connection is CONNECTED */
    uint8_t superseded;  /* a successor connected: this session is over */
    uint8_t admitted;    /* its first datagram is a hello the gate admitted */
    /* RFC 9146: the CID its owner registered (dp_ep_slot_set_cid), in the
     * CID index while cid_routed. Only an established DTLS session has one,
     * so unauthenticated traffic cannot add entries. */
    uint8_t cid_routed;
    uint8_t cid[DP_CID_MAX];
} dp_slot;

/* An open-addressing hash index of slots (linear probing, backward-shift
 * deletion), keyed by each slot's address or by its CID. */
typedef struct {
    uint32_t *cells; /* slot index + 1; 0 = empty */
    uint32_t cap;    /* power of two */
    uint8_t by_cid;
} dp_index;

struct dp_endpoint {
    mbedtls_threading_mutex_t lock; /* every call holds it (see "Threads") */
    dp_socket_t fd;
    int family; /* 4 or 6 */
    int mode;
    int closed;
    int owns_fd;  /* close fd in dp_ep_close (a DTLS host's socket) */
    int waiters;  /* calls waiting with the lock released */
    int rx_lent;  /* a blocking recvmmsg (lock released) is writing rx/msgs/names */
#if defined(DP_WAKE_PIPE)
    int wake_rd, wake_wr; /* self-pipe (or one eventfd) waking the waits; -1 until the first wait */
    int wake_failed;      /* pipe() failed: waits run in slices */
#endif
    int connected;
    dp_addr connected_addr;
    dp_queue queue; /* CLIENT mode */
    dp_udp_stats stats;
    int fd_blocking; /* O_NONBLOCK cleared for blocking waits (blocking_wait) */
    int rcvtimeo_ms; /* SO_RCVTIMEO in force once fd_blocking (-1: none) */

    /* SERVER routing */
    dp_slot *slots;
    uint32_t slots_cap;
    uint32_t slots_used; /* PENDING + TAKEN */
    uint32_t free_head;
    dp_index by_addr; /* routed slots by address */
    dp_index by_cid;  /* slots with a registered CID, by CID */
    uint32_t cids;    /* entries in by_cid */
    uint8_t cid_len;  /* length of every registered CID (fixed by the first) */
    uint64_t seed;
    uint32_t pending_head, pending_tail, pending_count;
    uint32_t max_pending;
    int64_t pending_timeout_ms;
    uint32_t peer_recv_buf_size;

    /* SERVER: when set, every datagram goes to the sink instead of a queue
     * (dp_host.c); a nonzero return stops reading after the current batch. */
    dp_endpoint_sink_fn sink;
    void *sink_ctx;
    int sink_stop;
    /* Remote (ICMP-induced) errors: told to error_sink with the slot they
     * concern (the connected slot on a connected socket, else 0). A send
     * that consumed one keeps it here until the next receive tells it. */
    dp_endpoint_error_fn error_sink;
    void *error_ctx;
    int remote_errno;       /* last one seen, 0 if none */
    int remote_unreported;  /* consumed by a send, not told yet */

    /* SERVER used by a DTLSServer (dp_endpoint_set_gate): unknown senders go
     * through the cookie gate before any pending slot exists. */
    dp_cookie_gate *gate;
    int64_t gate_clock; /* DP_NOW or DP_NOW_WALL: the gate's clock */

    /* stateless replies waiting for the end of the receive batch */
    dp_reply replies[DP_REPLY_BATCH];
    uint32_t n_replies;

    /* receive buffers, allocated on first receive */
    int batch;
    uint8_t *rx;
#if defined(DP_USE_MMSG)
    struct mmsghdr *msgs;
    struct iovec *iovs;
    struct sockaddr_storage *names;
#endif
};

static int dp_os_error(int err)
{
    return DP_ERR_ERRNO_BASE - err;
}

/* ---- Lock and wake-up ------------------------------------------------------- */

void dp_endpoint_lock(dp_endpoint *ep)
{
    (void)mbedtls_mutex_lock(&ep->lock);
}

void dp_endpoint_unlock(dp_endpoint *ep)
{
    (void)mbedtls_mutex_unlock(&ep->lock);
}

/* The self-pipe, made by the first wait (most endpoints never wait). */
static void wake_setup(dp_endpoint *ep)
{
#if defined(DP_WAKE_PIPE)
    if (ep->wake_rd >= 0 || ep->wake_failed) {
        return;
    }
#if defined(DP_WAKE_EVENTFD)
    /* Semaphore mode: each read takes one unit, as each woken waiter of a
     * closed slot must; one descriptor instead of two. */
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC | EFD_SEMAPHORE);
    if (efd < 0) {
        ep->wake_failed = 1;
        return;
    }
    ep->wake_rd = ep->wake_wr = efd;
#else
    int p[2];
    if (pipe(p) != 0) {
        ep->wake_failed = 1;
        return;
    }
    for (int i = 0; i < 2; i++) {
        int fl = fcntl(p[i], F_GETFL);
        if (fl < 0 || fcntl(p[i], F_SETFL, fl | O_NONBLOCK) < 0 ||
            fcntl(p[i], F_SETFD, FD_CLOEXEC) < 0) {
            close(p[0]);
            close(p[1]);
            ep->wake_failed = 1;
            return;
        }
    }
    ep->wake_rd = p[0];
    ep->wake_wr = p[1];
#endif
#else
    (void)ep;
#endif
}

/* Make the pipe readable: n bytes, one per waiter meant to consume one
 * (slot close), or one that nobody consumes (endpoint close). A full pipe
 * is readable anyway. */
static void wake_signal(dp_endpoint *ep, uint32_t n)
{
#if defined(DP_WAKE_EVENTFD)
    uint64_t units = n;
    if (ep->wake_wr >= 0 && n > 0 && write(ep->wake_wr, &units, sizeof(units)) < 0) {
        return; /* the counter is at its maximum: readable anyway */
    }
#elif defined(DP_WAKE_PIPE)
    static const unsigned char bytes[16] = {0};
    while (ep->wake_wr >= 0 && n > 0) {
        size_t chunk = n > sizeof(bytes) ? sizeof(bytes) : n;
        ssize_t w = write(ep->wake_wr, bytes, chunk);
        if (w <= 0) {
            break;
        }
        n -= (uint32_t)w;
    }
#else
    (void)ep;
    (void)n;
#endif
}

static void wake_consume(dp_endpoint *ep)
{
#if defined(DP_WAKE_EVENTFD)
    uint64_t unit;
    if (ep->wake_rd >= 0 && read(ep->wake_rd, &unit, sizeof(unit)) < 0) {
        return; /* already consumed by a spurious reader: harmless */
    }
#elif defined(DP_WAKE_PIPE)
    unsigned char b;
    if (ep->wake_rd >= 0 && read(ep->wake_rd, &b, 1) < 0) {
        return; /* already consumed by a spurious reader: harmless */
    }
#else
    (void)ep;
#endif
}

static void sleep_1ms(void)
{
#if defined(_WIN32)
    Sleep(1);
#else
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
#endif
}

static uint64_t dp_mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* Seeded, so remote senders cannot aim at one probe chain without the seed. */
static uint64_t addr_hash(const dp_endpoint *ep, const dp_addr *a)
{
    uint64_t lo, hi;
    memcpy(&lo, a->ip, 8);
    memcpy(&hi, a->ip + 8, 8);
    uint64_t h = dp_mix(ep->seed ^ lo);
    h = dp_mix(h ^ hi);
    return dp_mix(h ^ ((uint64_t)a->port | ((uint64_t)a->scope_id << 16)));
}

static int addr_equal(const dp_addr *a, const dp_addr *b)
{
    return a->port == b->port && a->scope_id == b->scope_id && memcmp(a->ip, b->ip, 16) == 0;
}

static const uint8_t k_v4_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static void addr_from_sockaddr(const struct sockaddr *sa, dp_addr *out)
{
    memset(out, 0, sizeof(*out));
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;
        memcpy(out->ip, k_v4_prefix, 12);
        memcpy(out->ip + 12, &s4->sin_addr, 4);
        out->port = ntohs(s4->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;
        memcpy(out->ip, &s6->sin6_addr, 16);
        out->port = ntohs(s6->sin6_port);
        out->scope_id = s6->sin6_scope_id;
    }
}

static int addr_to_sockaddr(const dp_endpoint *ep, const dp_addr *a, struct sockaddr_storage *ss,
                            dp_socklen_t *len)
{
    memset(ss, 0, sizeof(*ss));
    if (ep->family == 4) {
        if (memcmp(a->ip, k_v4_prefix, 12) != 0) {
            return DP_ERR_INVALID_ARGUMENT; /* IPv6 destination on an IPv4 socket */
        }
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        s4->sin_family = AF_INET;
        memcpy(&s4->sin_addr, a->ip + 12, 4);
        s4->sin_port = htons(a->port);
        *len = (dp_socklen_t)sizeof(*s4);
    } else {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        memcpy(&s6->sin6_addr, a->ip, 16);
        s6->sin6_port = htons(a->port);
        s6->sin6_scope_id = a->scope_id;
        *len = (dp_socklen_t)sizeof(*s6);
    }
    return DP_OK;
}

/* ---- Hash indexes ---------------------------------------------------------- */

/* Seeded like addr_hash: a sender cannot aim CIDs at one probe chain. */
static uint64_t cid_hash(const dp_endpoint *ep, const uint8_t *cid)
{
    uint64_t h = dp_mix(ep->seed ^ 0x9e3779b97f4a7c15ULL ^ ep->cid_len);
    for (uint8_t i = 0; i < ep->cid_len; i += 8) {
        uint64_t w = 0;
        uint8_t n = (uint8_t)(ep->cid_len - i < 8 ? ep->cid_len - i : 8);
        memcpy(&w, cid + i, n);
        h = dp_mix(h ^ w);
    }
    return h;
}

static uint64_t slot_key_hash(const dp_endpoint *ep, const dp_index *t, uint32_t index)
{
    const dp_slot *s = &ep->slots[index];
    return t->by_cid ? cid_hash(ep, s->cid) : addr_hash(ep, &s->addr);
}

static int slot_key_equal(const dp_endpoint *ep, const dp_index *t, uint32_t index,
                          const void *key)
{
    const dp_slot *s = &ep->slots[index];
    return t->by_cid ? memcmp(s->cid, key, ep->cid_len) == 0 : addr_equal(&s->addr, key);
}

/* key: a dp_addr (by_addr) or ep->cid_len CID bytes (by_cid). */
static uint32_t index_find(const dp_endpoint *ep, const dp_index *t, uint64_t hash,
                           const void *key)
{
    if (t->cap == 0) {
        return DP_NO_INDEX;
    }
    uint32_t mask = t->cap - 1;
    for (uint32_t i = (uint32_t)hash & mask, n = 0; n < t->cap; i = (i + 1) & mask, n++) {
        uint32_t v = t->cells[i];
        if (v == 0) {
            return DP_NO_INDEX;
        }
        if (slot_key_equal(ep, t, v - 1, key)) {
            return v - 1;
        }
    }
    return DP_NO_INDEX;
}

static uint32_t table_find(const dp_endpoint *ep, const dp_addr *a)
{
    return index_find(ep, &ep->by_addr, addr_hash(ep, a), a);
}

static void table_insert_raw(uint32_t *table, uint32_t cap, uint64_t hash, uint32_t index)
{
    uint32_t mask = cap - 1;
    uint32_t i = (uint32_t)hash & mask;
    while (table[i] != 0) {
        i = (i + 1) & mask;
    }
    table[i] = index + 1;
}

/* Keep the load factor <= 1/2 for `entries` entries. */
static int index_reserve(dp_endpoint *ep, dp_index *t, uint32_t entries)
{
    uint64_t want = (uint64_t)entries * 2;
    if (t->cap >= want) {
        return DP_OK;
    }
    uint32_t cap = t->cap ? t->cap : 16;
    while (cap < want) {
        cap *= 2;
    }
    uint32_t *nt = dp_calloc(cap, sizeof(uint32_t));
    if (nt == NULL) {
        return DP_ERR_NO_MEMORY;
    }
    for (uint32_t i = 0; i < t->cap; i++) {
        uint32_t v = t->cells[i];
        if (v != 0) {
            table_insert_raw(nt, cap, slot_key_hash(ep, t, v - 1), v - 1);
        }
    }
    dp_free(t->cells);
    t->cells = nt;
    t->cap = cap;
    return DP_OK;
}

/* Keep the load factor <= 1/2 for slots_used + 1 entries. */
static int table_reserve(dp_endpoint *ep)
{
    return index_reserve(ep, &ep->by_addr, ep->slots_used + 1);
}

static void index_remove(dp_endpoint *ep, dp_index *t, uint32_t index)
{
    uint32_t mask = t->cap - 1;
    uint32_t i = (uint32_t)slot_key_hash(ep, t, index) & mask;
    for (uint32_t n = 0; n < t->cap && t->cells[i] != index + 1; n++) {
        if (t->cells[i] == 0) {
            return; /* not present: nothing to do */
        }
        i = (i + 1) & mask;
    }
    if (t->cells[i] != index + 1) {
        return;
    }
    /* Backward-shift deletion keeps probe chains intact without tombstones. */
    uint32_t hole = i;
    for (uint32_t j = (i + 1) & mask, n = 0; n < t->cap; j = (j + 1) & mask, n++) {
        uint32_t v = t->cells[j];
        if (v == 0) {
            break;
        }
        uint32_t home = (uint32_t)slot_key_hash(ep, t, v - 1) & mask;
        /* Move v into the hole if its home is not cyclically in (hole, j]. */
        int in_range = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!in_range) {
            t->cells[hole] = v;
            hole = j;
        }
    }
    t->cells[hole] = 0;
}

static void table_remove(dp_endpoint *ep, uint32_t index)
{
    index_remove(ep, &ep->by_addr, index);
}

/* ---- Slot management ------------------------------------------------------ */

static uint64_t slot_handle(const dp_endpoint *ep, uint32_t index)
{
    return ((uint64_t)ep->slots[index].gen << 32) | index;
}

/* The slot a handle names, or NULL if stale/invalid. */
static dp_slot *slot_get(const dp_endpoint *ep, uint64_t handle)
{
    uint32_t index = (uint32_t)(handle & 0xFFFFFFFFu);
    uint32_t gen = (uint32_t)(handle >> 32);
    if (ep->mode != DP_ENDPOINT_SERVER || index >= ep->slots_cap) {
        return NULL;
    }
    dp_slot *s = &ep->slots[index];
    if (s->state == DP_SLOT_FREE || s->gen != gen) {
        return NULL;
    }
    return s;
}

static int slots_reserve(dp_endpoint *ep)
{
    if (ep->free_head != DP_NO_INDEX) {
        return DP_OK;
    }
    if (ep->slots_cap >= DP_MAX_SLOTS) {
        return DP_ERR_LIMIT;
    }
    uint32_t cap = ep->slots_cap ? ep->slots_cap * 2 : 16;
    dp_slot *ns = dp_calloc(cap, sizeof(dp_slot));
    if (ns == NULL) {
        return DP_ERR_NO_MEMORY;
    }
    if (ep->slots_cap) {
        memcpy(ns, ep->slots, (size_t)ep->slots_cap * sizeof(dp_slot));
    }
    for (uint32_t i = ep->slots_cap; i < cap; i++) {
        ns[i].gen = 1;
        ns[i].state = DP_SLOT_FREE;
        ns[i].next = i + 1 < cap ? i + 1 : DP_NO_INDEX;
    }
    dp_free(ep->slots);
    ep->slots = ns;
    ep->free_head = ep->slots_cap;
    ep->slots_cap = cap;
    return DP_OK;
}

static void pending_unlink(dp_endpoint *ep, uint32_t index)
{
    dp_slot *s = &ep->slots[index];
    if (s->prev != DP_NO_INDEX) {
        ep->slots[s->prev].next = s->next;
    } else {
        ep->pending_head = s->next;
    }
    if (s->next != DP_NO_INDEX) {
        ep->slots[s->next].prev = s->prev;
    } else {
        ep->pending_tail = s->prev;
    }
    s->prev = s->next = DP_NO_INDEX;
    ep->pending_count--;
}

static void slot_route(dp_endpoint *ep, uint32_t index)
{
    /* table_reserve ran when the slot was made: a free cell exists */
    dp_slot *s = &ep->slots[index];
    table_insert_raw(ep->by_addr.cells, ep->by_addr.cap, addr_hash(ep, &s->addr), index);
    s->routed = 1;
}

static void slot_unroute(dp_endpoint *ep, uint32_t index)
{
    if (ep->slots[index].routed) {
        table_remove(ep, index);
        ep->slots[index].routed = 0;
    }
}

static void cid_unroute(dp_endpoint *ep, uint32_t index)
{
    if (ep->slots[index].cid_routed) {
        index_remove(ep, &ep->by_cid, index);
        ep->slots[index].cid_routed = 0;
        ep->cids--;
    }
}

/* A fresh slot off the free list (slots_reserve and table_reserve ran),
 * unlinked and unrouted. */
static uint32_t slot_take_free(dp_endpoint *ep, const dp_addr *addr, uint8_t state, int64_t now_ms)
{
    uint32_t index = ep->free_head;
    dp_slot *s = &ep->slots[index];
    ep->free_head = s->next;
    uint32_t gen = s->gen;
    memset(s, 0, sizeof(*s));
    s->gen = gen;
    s->addr = *addr;
    s->state = state;
    s->created_ms = now_ms;
    s->queue.limit = ep->peer_recv_buf_size;
    s->prev = s->next = s->succ = s->pred = DP_NO_INDEX;
    ep->slots_used++;
    return index;
}

static void slot_free(dp_endpoint *ep, uint32_t index)
{
    dp_slot *s = &ep->slots[index];
    if (s->state == DP_SLOT_PENDING) {
        pending_unlink(ep, index);
    }
    slot_unroute(ep, index);
    cid_unroute(ep, index);
    if (s->succ != DP_NO_INDEX) {
        /* The live session is gone: the new one owns the address now. */
        dp_slot *n = &ep->slots[s->succ];
        n->pred = DP_NO_INDEX;
        if (!n->routed) {
            slot_route(ep, s->succ);
        }
        s->succ = DP_NO_INDEX;
    }
    if (s->pred != DP_NO_INDEX) {
        ep->slots[s->pred].succ = DP_NO_INDEX;
        s->pred = DP_NO_INDEX;
    }
    queue_release(&s->queue);
    if (s->waiters > 0) {
        wake_signal(ep, s->waiters); /* each wakes, finds its handle stale, takes one */
        s->waiters = 0;
    }
    s->state = DP_SLOT_FREE;
    s->gen = s->gen == UINT32_MAX ? 1 : s->gen + 1;
    s->next = ep->free_head;
    ep->free_head = index;
    ep->slots_used--;
}

static void free_all_slots(dp_endpoint *ep)
{
    for (uint32_t i = 0; i < ep->slots_cap; i++) {
        if (ep->slots[i].state != DP_SLOT_FREE) {
            slot_free(ep, i);
        }
    }
}

/* ---- Lifecycle ------------------------------------------------------------ */

int dp_endpoint_new(dp_endpoint **out, int64_t fd, int family, int mode, uint32_t recv_buf_size)
{
    if (out == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    *out = NULL;
    if (fd < 0 || (family != 4 && family != 6) ||
        (mode != DP_ENDPOINT_CLIENT && mode != DP_ENDPOINT_SERVER)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
#if !defined(_WIN32)
    if (fd > INT32_MAX) {
        return DP_ERR_INVALID_ARGUMENT;
    }
#endif
    dp_endpoint *ep = dp_calloc(1, sizeof(*ep));
    if (ep == NULL) {
        return DP_ERR_NO_MEMORY;
    }
    ep->fd = (dp_socket_t)fd;
#if defined(DP_WAKE_PIPE)
    ep->wake_rd = ep->wake_wr = -1;
#endif
    ep->family = family;
    ep->mode = mode;
    ep->queue.limit = recv_buf_size;
    ep->peer_recv_buf_size = recv_buf_size;
    ep->free_head = DP_NO_INDEX;
    ep->pending_head = ep->pending_tail = DP_NO_INDEX;
    ep->max_pending = 16;
    ep->pending_timeout_ms = -1;
    ep->batch = mode == DP_ENDPOINT_SERVER ? DP_SERVER_BATCH : DP_CLIENT_BATCH;
    ep->by_cid.by_cid = 1;
    int rc = dp_random((unsigned char *)&ep->seed, sizeof(ep->seed));
    if (rc < 0) {
        dp_free(ep);
        return rc;
    }
    mbedtls_mutex_init(&ep->lock);
    *out = ep;
    return DP_OK;
}

static void free_rx(dp_endpoint *ep)
{
    dp_free(ep->rx);
    ep->rx = NULL;
#if defined(DP_USE_MMSG)
    dp_free(ep->msgs);
    dp_free(ep->iovs);
    dp_free(ep->names);
    ep->msgs = NULL;
    ep->iovs = NULL;
    ep->names = NULL;
#endif
}

int dp_ep_close(dp_endpoint *ep)
{
    if (ep == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (!ep->closed) {
        ep->closed = 1;
        if (ep->waiters > 0) {
            wake_signal(ep, 1);
#if defined(DP_USE_BLOCKING_WAIT)
            if (ep->rx_lent) {
                /* Wakes a recvmmsg blocked in the kernel (Linux does this for
                 * unconnected UDP sockets too, returning ENOTCONN). */
                (void)shutdown(ep->fd, SHUT_RD);
            }
#endif
        }
    }
    /* Woken waiters take the lock back to leave; after this loop nothing
     * uses the socket, the receive buffers or the wake pipe any more. A
     * second closer waits here too. */
    while (ep->waiters > 0) {
        dp_endpoint_unlock(ep);
        sleep_1ms();
        dp_endpoint_lock(ep);
    }
    if (ep->owns_fd && ep->fd != DP_INVALID_SOCKET) {
#if defined(_WIN32)
        closesocket(ep->fd);
#else
        close(ep->fd);
#endif
    }
    ep->fd = DP_INVALID_SOCKET;
#if defined(DP_WAKE_PIPE)
    if (ep->wake_rd >= 0) {
        close(ep->wake_rd);
        if (ep->wake_wr != ep->wake_rd) {
            close(ep->wake_wr);
        }
        ep->wake_rd = ep->wake_wr = -1;
    }
#endif
    ep->connected = 0;
    free_all_slots(ep);
    queue_release(&ep->queue);
    dp_free(ep->slots);
    dp_free(ep->by_addr.cells);
    dp_free(ep->by_cid.cells);
    ep->slots = NULL;
    ep->by_addr.cells = ep->by_cid.cells = NULL;
    ep->slots_cap = ep->by_addr.cap = ep->by_cid.cap = 0;
    ep->free_head = DP_NO_INDEX;
    free_rx(ep);
    dp_cookie_gate_free(ep->gate);
    ep->gate = NULL;
    ep->n_replies = 0;
    return DP_OK;
}

void dp_endpoint_free(dp_endpoint *ep)
{
    if (ep == NULL) {
        return;
    }
    dp_endpoint_lock(ep);
    dp_ep_close(ep);
    dp_endpoint_unlock(ep);
    mbedtls_mutex_free(&ep->lock);
    dp_free(ep);
}

void dp_ep_own_fd(dp_endpoint *ep)
{
    ep->owns_fd = 1;
}

int dp_ep_is_closed(const dp_endpoint *ep)
{
    return ep == NULL || ep->closed;
}

int dp_ep_set_limits(dp_endpoint *ep, uint32_t max_pending, int64_t pending_timeout_ms,
                           uint32_t peer_recv_buf_size)
{
    if (ep == NULL || ep->mode != DP_ENDPOINT_SERVER) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (ep->closed) {
        return DP_ERR_CLOSED;
    }
    ep->max_pending = max_pending;
    ep->pending_timeout_ms = pending_timeout_ms;
    ep->peer_recv_buf_size = peer_recv_buf_size;
    /* Trim the newest pending slots beyond the new limit (Godot's intent). */
    while (ep->pending_count > max_pending) {
        slot_free(ep, ep->pending_tail);
    }
    return DP_OK;
}

/* ---- Stateless replies ------------------------------------------------------ */


/* Send the queued replies (one sendmmsg on Linux). A reply the socket
 * refuses is lost like any datagram: the client retransmits its hello. */
static void flush_replies(dp_endpoint *ep)
{
    uint32_t n = ep->n_replies;
    ep->n_replies = 0;
    if (n == 0 || ep->closed) {
        return;
    }
    dp_endpoint_out out[DP_REPLY_BATCH];
    for (uint32_t i = 0; i < n; i++) {
        out[i].handle = 0;
        out[i].dst = &ep->replies[i].dst;
        out[i].data = ep->replies[i].data;
        out[i].len = ep->replies[i].len;
    }
    size_t failed = 0;
    int last_error = 0;
    (void)dp_ep_send_batch(ep, out, n, &failed, &last_error);
}

int dp_ep_queue_reply(dp_endpoint *ep, const dp_addr *dst, const uint8_t *data, size_t len)
{
    if (ep == NULL || dst == NULL || data == NULL || len > DP_HVR_LEN) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (ep->closed) {
        return DP_ERR_CLOSED;
    }
    if (ep->n_replies == DP_REPLY_BATCH) {
        flush_replies(ep);
    }
    dp_reply *r = &ep->replies[ep->n_replies++];
    r->dst = *dst;
    r->len = (uint32_t)len;
    memcpy(r->data, data, len);
    return DP_OK;
}

/* ---- Receiving ------------------------------------------------------------ */

static int ensure_rx(dp_endpoint *ep)
{
    if (ep->rx != NULL) {
        return DP_OK;
    }
    /* Not zeroed: the kernel writes each datagram before it is read, and a
     * client's 4 x 64 KiB (a server's 16 x 64 KiB) would otherwise be cleared
     * (and every page faulted in) for each new socket, e.g. once per
     * handshake for a client that opens one socket per connection. */
    ep->rx = dp_malloc_uninit((size_t)ep->batch, DP_MAX_DATAGRAM);
#if defined(DP_USE_MMSG)
    ep->msgs = dp_calloc((size_t)ep->batch, sizeof(struct mmsghdr));
    ep->iovs = dp_calloc((size_t)ep->batch, sizeof(struct iovec));
    ep->names = dp_calloc((size_t)ep->batch, sizeof(struct sockaddr_storage));
    if (ep->msgs == NULL || ep->iovs == NULL || ep->names == NULL) {
        free_rx(ep);
        return DP_ERR_NO_MEMORY;
    }
#endif
    if (ep->rx == NULL) {
        free_rx(ep);
        return DP_ERR_NO_MEMORY;
    }
    return DP_OK;
}

static void count_in(dp_udp_stats *st, size_t len)
{
    st->packets_in++;
    st->bytes_in += len;
}

static void route_client(dp_endpoint *ep, const dp_addr *src, const uint8_t *data, uint32_t len,
                         int truncated)
{
    count_in(&ep->stats, len);
    if (truncated) {
        ep->stats.drop_truncated++;
        return;
    }
    if (ep->connected && !addr_equal(src, &ep->connected_addr)) {
        ep->stats.drop_filtered++;
        return;
    }
    int rc = queue_push(&ep->queue, src, data, len);
    if (rc == 1) {
        ep->stats.drop_queue_full++;
    } else if (rc < 0) {
        ep->stats.drop_no_memory++;
    }
}

static void push_slot(dp_endpoint *ep, uint32_t index, const dp_addr *src, const uint8_t *data,
                      uint32_t len)
{
    dp_slot *s = &ep->slots[index];
    int rc = queue_push(&s->queue, src, data, len);
    if (rc == 1) {
        s->stats.drop_queue_full++;
        ep->stats.drop_queue_full++;
    } else if (rc < 0) {
        s->stats.drop_no_memory++;
        ep->stats.drop_no_memory++;
    }
}

/* Judge a datagram (or the tail from its ClientHello record) with the gate:
 * a HelloVerifyRequest goes straight back to src, garbage is counted. */
static int gate_judge(dp_endpoint *ep, const dp_addr *src, const uint8_t *data, uint32_t len)
{
    unsigned char tid[32];
    unsigned char reply[DP_HVR_LEN];
    size_t reply_len = 0;
    size_t tid_len = dp_addr_transport_id(src, tid);
    int verdict = dp_cookie_gate_check(ep->gate, tid, tid_len, data, len, ep->gate_clock, reply,
                                       sizeof(reply), &reply_len);
    if (verdict == DP_GATE_REPLY) {
        if (dp_ep_queue_reply(ep, src, reply, reply_len) == DP_OK) {
            ep->stats.hvr_sent++;
        }
    } else if (verdict != DP_GATE_ADMIT) {
        ep->stats.gate_dropped++;
    }
    return verdict;
}

/* Pending slots from one IP address (any port): a bound per address keeps
 * one host from filling the pending list (SYN-queue style). Linear in the
 * pending list, which max_pending bounds; runs only for admitted senders. */
static uint32_t pending_from(const dp_endpoint *ep, const dp_addr *src)
{
    uint32_t n = 0;
    for (uint32_t i = ep->pending_head; i != DP_NO_INDEX; i = ep->slots[i].next) {
        n += memcmp(ep->slots[i].addr.ip, src->ip, sizeof(src->ip)) == 0;
    }
    return n;
}

/* A new PENDING slot holding its first datagram. pred: the live slot of the
 * same address it may replace (then it is not routed), or DP_NO_INDEX. */
static int open_pending(dp_endpoint *ep, const dp_addr *src, const uint8_t *data, uint32_t len,
                        int64_t now_ms, uint32_t pred)
{
    if (ep->gate != NULL && pending_from(ep, src) >= DP_PENDING_PER_ADDRESS) {
        ep->stats.drop_pending_per_address++;
        return -1;
    }
    if (ep->pending_count >= ep->max_pending) {
        if (ep->gate == NULL || ep->pending_head == DP_NO_INDEX) {
            ep->stats.drop_pending_full++;
            return -1;
        }
        /* Every pending slot passed the gate and none was taken yet: the
         * oldest makes room for a verified newcomer (SYN-queue pruning). */
        ep->stats.pending_evicted++;
        slot_free(ep, ep->pending_head);
    }
    if ((uint64_t)DP_QUEUE_ENTRY_OVERHEAD + len > ep->peer_recv_buf_size) {
        ep->stats.drop_queue_full++; /* no empty pending peers */
        return -1;
    }
    if (slots_reserve(ep) < 0 || table_reserve(ep) < 0) {
        ep->stats.drop_no_memory++;
        return -1;
    }
    uint32_t index = slot_take_free(ep, src, DP_SLOT_PENDING, now_ms);
    dp_slot *s = &ep->slots[index];
    s->prev = ep->pending_tail;
    if (ep->pending_tail != DP_NO_INDEX) {
        ep->slots[ep->pending_tail].next = index;
    } else {
        ep->pending_head = index;
    }
    ep->pending_tail = index;
    ep->pending_count++;
    s->admitted = ep->gate != NULL;
    if (pred == DP_NO_INDEX) {
        slot_route(ep, index);
    } else {
        s->pred = pred;
        ep->slots[pred].succ = index;
        ep->stats.successors++;
    }
    count_in(&s->stats, len);
    if (queue_push(&s->queue, src, data, len) != 0) {
        ep->stats.drop_no_memory++;
        slot_free(ep, index); /* could not store the first datagram */
        return -1;
    }
    ep->stats.pending_created++;
    return (int)index;
}

/* A datagram from the address of an established DTLS session (Godot-style
 * server). RFC 6347 4.2.8: a new handshake from that address must not
 * touch the live association before it completes.
 *   - Any epoch-0 ClientHello record, wherever it sits, goes to the gate
 *     (from that record on): a cookieless one gets a HelloVerifyRequest, a
 *     valid cookie opens (or feeds) a successor slot, a NEW pending
 *     connection that is not routed; the live slot never sees it.
 *   - With a successor: a datagram whose first record is of epoch 0 (the new
 *     handshake's flight) goes to the successor only; any other goes to the
 *     live slot AND a copy to the successor, because both sessions use epoch
 *     1 (the new Finished) and only the keys tell them apart. The live
 *     session thus never loses a record to a forged handshake; the
 *     successor discards the old session's records (bad MAC, counted).
 *   - The successor's connection reaching CONNECTED (its Finished verified)
 *     makes it the routed slot and marks the old one superseded (the link
 *     then ends the old session: dp_ep_slot_promote). */
static void route_known(dp_endpoint *ep, uint32_t index, const dp_addr *src, const uint8_t *data,
                        uint32_t len, int64_t now_ms)
{
    long hello = dp_find_client_hello(data, len);
    uint32_t succ = ep->slots[index].succ;
    if (hello >= 0) {
        const uint8_t *h = data + hello;
        uint32_t hlen = len - (uint32_t)hello;
        if (gate_judge(ep, src, h, hlen) != DP_GATE_ADMIT) {
            return;
        }
        if (succ != DP_NO_INDEX) {
            push_slot(ep, succ, src, h, hlen); /* a retransmitted hello */
        } else {
            (void)open_pending(ep, src, h, hlen, now_ms, index);
        }
        return;
    }
    if (succ != DP_NO_INDEX && dp_first_record_epoch0(data, len)) {
        push_slot(ep, succ, src, data, len);
        return;
    }
    push_slot(ep, index, src, data, len);
    if (succ != DP_NO_INDEX) {
        push_slot(ep, succ, src, data, len);
    }
}

/* The slot a datagram belongs to. RFC 9146: a datagram starting with a CID
 * record (content type 25, the CID at DP_CID_OFFSET) whose CID a slot
 * registered belongs to that slot, whatever address it came from (a NAT
 * rebinding); its owner authenticates it before moving the address
 * (dp_ep_slot_move). Everything else is routed by address. */
static uint32_t route_lookup(const dp_endpoint *ep, const dp_addr *src, const uint8_t *data,
                             uint32_t len)
{
    if (ep->cids != 0 && data[0] == DP_CT_CID && len >= DP_CID_OFFSET + ep->cid_len + 2u) {
        const uint8_t *cid = data + DP_CID_OFFSET;
        uint32_t index = index_find(ep, &ep->by_cid, cid_hash(ep, cid), cid);
        if (index != DP_NO_INDEX) {
            return index;
        }
    }
    return table_find(ep, src);
}

static void route_server(dp_endpoint *ep, const dp_addr *src, const uint8_t *data, uint32_t len,
                         int truncated, int64_t now_ms)
{
    count_in(&ep->stats, len);
    uint32_t index = len != 0 ? route_lookup(ep, src, data, len) : table_find(ep, src);
    if (ep->sink != NULL) {
        uint64_t handle = 0;
        if (index != DP_NO_INDEX) {
            count_in(&ep->slots[index].stats, len);
            handle = slot_handle(ep, index);
        }
        if (truncated) {
            if (index != DP_NO_INDEX) {
                ep->slots[index].stats.drop_truncated++;
            }
            ep->stats.drop_truncated++;
            return;
        }
        /* Last use of ep's slot storage here: the sink may open slots. */
        if (ep->sink(ep->sink_ctx, handle, src, data, len, now_ms) != 0) {
            ep->sink_stop = 1;
        }
        return;
    }
    if (index != DP_NO_INDEX) {
        dp_slot *s = &ep->slots[index];
        count_in(&s->stats, len);
        if (truncated) {
            s->stats.drop_truncated++;
            ep->stats.drop_truncated++;
            return;
        }
        /* A CID datagram from another address only ever reaches the slot's
         * own session (never the successor logic, which is per address). */
        if (ep->gate != NULL && s->established && addr_equal(src, &s->addr)) {
            route_known(ep, index, src, data, len, now_ms);
            return;
        }
        push_slot(ep, index, src, data, len);
        return;
    }
    if (truncated) {
        ep->stats.drop_truncated++;
        return;
    }
    if (ep->gate != NULL && gate_judge(ep, src, data, len) != DP_GATE_ADMIT) {
        return; /* answered or dropped statelessly: no slot, no memory */
    }
    (void)open_pending(ep, src, data, len, now_ms, DP_NO_INDEX);
}

static void route(dp_endpoint *ep, const struct sockaddr *sa, const uint8_t *data, size_t n,
                  int truncated, int64_t now_ms)
{
    dp_addr src;
    addr_from_sockaddr(sa, &src);
    uint32_t len = n > DP_MAX_DATAGRAM ? DP_MAX_DATAGRAM : (uint32_t)n;
    if (ep->mode == DP_ENDPOINT_SERVER) {
        route_server(ep, &src, data, len, truncated, now_ms);
    } else {
        route_client(ep, &src, data, len, truncated);
    }
}

/* A socket error a remote host caused (an ICMP error the kernel turned into
 * errno on the next receive or send): skip it, the socket stays usable.
 * Linux's mapping (icmp_err_convert, icmpv6_err_convert): port unreachable
 * ECONNREFUSED, protocol unreachable ENOPROTOOPT, net/host unreachable and
 * time exceeded ENETUNREACH/EHOSTUNREACH, host unknown EHOSTDOWN, host
 * isolated ENONET, administratively prohibited EACCES, source route failed
 * EOPNOTSUPP, fragmentation needed / packet too big EMSGSIZE, parameter
 * problem EPROTO. ICMP is unauthenticated: none of them may end anything. */
int dp_is_remote_error(int err)
{
#if defined(_WIN32)
    return err == WSAECONNRESET || err == WSAENETRESET || err == WSAEHOSTUNREACH ||
           err == WSAENETUNREACH;
#else
    switch (err) {
    case ECONNREFUSED:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case ECONNRESET:
    case ENOPROTOOPT:
    case EHOSTDOWN:
#if defined(ENONET)
    case ENONET:
#endif
    case EPROTO:
    case EMSGSIZE:
    case EACCES:
    case EOPNOTSUPP:
        return 1;
    default:
        return 0;
    }
#endif
}

/* Of the remote errors, those a send can also fail with for a reason of
 * its own (a datagram too large, broadcast not allowed, no route): a send
 * retried after one that fails again the same way keeps its error. The
 * others (port/protocol unreachable...) can only come from an ICMP error. */
static int send_error_may_be_local(int err)
{
#if defined(_WIN32)
    (void)err;
    return 1;
#else
    return err == EMSGSIZE || err == EACCES || err == EHOSTUNREACH || err == ENETUNREACH ||
           err == EOPNOTSUPP;
#endif
}

const char *dp_remote_error_text(int err)
{
#if defined(_WIN32)
    switch (err) {
    case WSAECONNRESET: return "port unreachable";
    case WSAENETRESET: return "TTL expired";
    case WSAEHOSTUNREACH: return "host unreachable";
    case WSAENETUNREACH: return "network unreachable";
    default: return "destination unreachable";
    }
#else
    switch (err) {
    case ECONNREFUSED: return "port unreachable";
    case ECONNRESET: return "port unreachable";
    case EHOSTUNREACH: return "host unreachable";
    case ENETUNREACH: return "network unreachable";
    case ENOPROTOOPT: return "protocol unreachable";
    case EHOSTDOWN: return "host unknown";
#if defined(ENONET)
    case ENONET: return "host isolated";
#endif
    case EPROTO: return "parameter problem";
    case EMSGSIZE: return "fragmentation needed";
    case EACCES: return "communication administratively prohibited";
    case EOPNOTSUPP: return "source route failed";
    default: return "destination unreachable";
    }
#endif
}

/* Count a remote error and tell the error sink which slot it concerns: on a
 * connected socket the kernel only reports errors for the connected address;
 * an unconnected one reports none (no IP_RECVERR: its queue would be one
 * more thing a spoofer fills). from_send: a send consumed it; it is told at
 * the next receive (a send may run in the middle of the sink's own work). */
static void tell_remote_error(dp_endpoint *ep, int err, int64_t now_ms)
{
    ep->remote_unreported = 0;
    if (ep->error_sink == NULL) {
        return;
    }
    uint64_t handle = 0;
    if (ep->connected && ep->mode == DP_ENDPOINT_SERVER) {
        uint32_t index = table_find(ep, &ep->connected_addr);
        if (index != DP_NO_INDEX) {
            ep->slots[index].stats.recv_errors++;
            handle = slot_handle(ep, index);
        }
    }
    ep->error_sink(ep->error_ctx, handle, &ep->connected_addr, err, now_ms);
}

static void note_remote_error(dp_endpoint *ep, int err, int from_send, int64_t now_ms)
{
    ep->stats.recv_errors++;
    ep->remote_errno = err;
    if (from_send) {
        ep->remote_unreported = err;
    } else {
        tell_remote_error(ep, err, now_ms);
    }
}

static void report_unreported(dp_endpoint *ep, int64_t now_ms)
{
    if (ep->remote_unreported != 0) {
        tell_remote_error(ep, ep->remote_unreported, now_ms);
    }
}

static void expire_pending(dp_endpoint *ep, int64_t now_ms)
{
    if (ep->pending_timeout_ms < 0) {
        return;
    }
    while (ep->pending_head != DP_NO_INDEX &&
           now_ms - ep->slots[ep->pending_head].created_ms >= ep->pending_timeout_ms) {
        ep->stats.pending_expired++;
        slot_free(ep, ep->pending_head);
    }
}

#if defined(DP_USE_MMSG)
/* Point the first `want` recvmmsg headers at their receive buffers and
 * address slots (recvmmsg overwrites msg_namelen and msg_flags). */
static void prepare_rx_batch(dp_endpoint *ep, int want)
{
    for (int i = 0; i < want; i++) {
        ep->iovs[i].iov_base = ep->rx + (size_t)i * DP_MAX_DATAGRAM;
        ep->iovs[i].iov_len = DP_MAX_DATAGRAM;
        memset(&ep->msgs[i].msg_hdr, 0, sizeof(ep->msgs[i].msg_hdr));
        ep->msgs[i].msg_hdr.msg_iov = &ep->iovs[i];
        ep->msgs[i].msg_hdr.msg_iovlen = 1;
        ep->msgs[i].msg_hdr.msg_name = &ep->names[i];
        ep->msgs[i].msg_hdr.msg_namelen = sizeof(ep->names[i]);
    }
}
#endif

/* What drain() does after a failed receive: stop (socket empty), retry
 * (interrupted, or an ICMP-induced error, counted and skipped up to a
 * bound), or fail with the error. */
enum { DP_RX_STOP, DP_RX_RETRY, DP_RX_FAIL };

static int rx_error_action(dp_endpoint *ep, int err, int *errors_skipped, int64_t now_ms)
{
#if !defined(_WIN32)
    if (err == EWOULDBLOCK) {
        err = DP_EAGAIN;
    }
#endif
    if (err == DP_EAGAIN) {
        return DP_RX_STOP;
    }
    if (err == DP_EINTR) {
        return DP_RX_RETRY;
    }
    if (dp_is_remote_error(err) && *errors_skipped < DP_POLL_MAX_DATAGRAMS) {
        note_remote_error(ep, err, 0, now_ms);
        (*errors_skipped)++;
        return DP_RX_RETRY;
    }
    return DP_RX_FAIL;
}

static int drain(dp_endpoint *ep, int64_t now_ms)
{
    if (ep->rx_lent) {
        return 0; /* a wait on another thread is reading the socket: it routes what comes */
    }
    int rc = ensure_rx(ep);
    if (rc < 0) {
        return rc;
    }
    int total = 0;
    int errors_skipped = 0;
    report_unreported(ep, now_ms);
    while (total < DP_POLL_MAX_DATAGRAMS) {
#if defined(DP_USE_MMSG)
        int want = ep->batch;
        if (want > DP_POLL_MAX_DATAGRAMS - total) {
            want = DP_POLL_MAX_DATAGRAMS - total;
        }
        prepare_rx_batch(ep, want);
        int got = recvmmsg(ep->fd, ep->msgs, (unsigned int)want, MSG_DONTWAIT, NULL);
        if (got < 0) {
            int err = errno;
            int action = rx_error_action(ep, err, &errors_skipped, now_ms);
            if (action == DP_RX_STOP) {
                break;
            }
            if (action == DP_RX_RETRY) {
                continue;
            }
            return total > 0 ? total : dp_os_error(err);
        }
        for (int i = 0; i < got; i++) {
            route(ep, (const struct sockaddr *)&ep->names[i],
                  ep->rx + (size_t)i * DP_MAX_DATAGRAM, ep->msgs[i].msg_len,
                  (ep->msgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0, now_ms);
        }
        flush_replies(ep);
        total += got;
        if (got < want || ep->sink_stop) {
            break; /* the socket had no more, or the sink is full */
        }
#else
        struct sockaddr_storage name;
        dp_socklen_t namelen = (dp_socklen_t)sizeof(name);
#if defined(_WIN32)
        int n = recvfrom(ep->fd, (char *)ep->rx, DP_MAX_DATAGRAM, 0, (struct sockaddr *)&name,
                         &namelen);
        int truncated = 0;
        if (n < 0 && WSAGetLastError() == WSAEMSGSIZE) {
            truncated = 1; /* Windows reports a truncated datagram as an error */
            n = DP_MAX_DATAGRAM;
        }
#else
        struct iovec iov;
        struct msghdr mh;
        iov.iov_base = ep->rx;
        iov.iov_len = DP_MAX_DATAGRAM;
        memset(&mh, 0, sizeof(mh));
        mh.msg_name = &name;
        mh.msg_namelen = namelen;
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        ssize_t n = recvmsg(ep->fd, &mh, MSG_DONTWAIT);
        int truncated = n >= 0 && (mh.msg_flags & MSG_TRUNC) != 0;
#endif
        if (n < 0) {
            int err = DP_LAST_ERROR();
            int action = rx_error_action(ep, err, &errors_skipped, now_ms);
            if (action == DP_RX_STOP) {
                break;
            }
            if (action == DP_RX_RETRY) {
                continue;
            }
            return total > 0 ? total : dp_os_error(err);
        }
        route(ep, (const struct sockaddr *)&name, ep->rx, (size_t)n, truncated, now_ms);
        flush_replies(ep);
        total++;
        if (ep->sink_stop) {
            break;
        }
#endif
    }
    return total;
}

int dp_ep_poll(dp_endpoint *ep, int64_t now_ms)
{
    now_ms = dp_resolve_now(now_ms);
    if (ep == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (ep->closed) {
        return DP_ERR_CLOSED;
    }
    if (ep->mode == DP_ENDPOINT_SERVER) {
        expire_pending(ep, now_ms);
    }
    ep->sink_stop = 0;
    return drain(ep, now_ms);
}

static const dp_queue *queue_of_const(const dp_endpoint *ep, uint64_t handle)
{
    if (handle == 0) {
        return ep->mode == DP_ENDPOINT_CLIENT ? &ep->queue : NULL;
    }
    const dp_slot *s = slot_get(ep, handle);
    return s ? &s->queue : NULL;
}

static dp_queue *queue_of(dp_endpoint *ep, uint64_t handle)
{
    return (dp_queue *)queue_of_const(ep, handle);
}

/* Wait with the lock released (held on entry and on return) until the
 * socket is readable, the wait is woken, or timeout_ms (< 0: no limit)
 * passes; CLIENT mode drains the socket when readable. handle != 0: the
 * wait is on that slot, which dp_ep_slot_close may end meanwhile.
 * 1 readable, 0 timed out, DP_ERR_CLOSED when the endpoint or the slot was
 * closed meanwhile, the EINTR code for the caller to retry. */
static int wait_poll(dp_endpoint *ep, uint64_t handle, int timeout_ms)
{
    wake_setup(ep);
    int64_t start = dp_clock_ms(0);
    int left = timeout_ms;
    for (;;) {
        int slice = left;
        int wake_fd = -1;
#if defined(DP_WAKE_PIPE)
        wake_fd = ep->wake_rd;
#endif
        if (wake_fd < 0 && (slice < 0 || slice > DP_WAKE_SLICE_MS)) {
            slice = DP_WAKE_SLICE_MS; /* nothing can wake us: look again now and then */
        }
        dp_slot *s = handle != 0 ? slot_get(ep, handle) : NULL;
        if (handle != 0 && s == NULL) {
            return DP_ERR_CLOSED;
        }
        if (s != NULL) {
            s->waiters++;
        }
        ep->waiters++;
        dp_socket_t fd = ep->fd;
        dp_endpoint_unlock(ep);
#if defined(_WIN32)
        WSAPOLLFD pfd[1];
        pfd[0].fd = fd;
        pfd[0].events = POLLRDNORM;
        pfd[0].revents = 0;
        int r = WSAPoll(pfd, 1, slice < 0 ? -1 : slice);
#else
        struct pollfd pfd[2];
        pfd[0].fd = fd;
        pfd[0].events = POLLIN;
        pfd[0].revents = 0;
        pfd[1].fd = wake_fd;
        pfd[1].events = POLLIN;
        pfd[1].revents = 0;
        int r = poll(pfd, wake_fd >= 0 ? 2 : 1, slice < 0 ? -1 : slice);
#endif
        int err = r < 0 ? DP_LAST_ERROR() : 0;
        dp_endpoint_lock(ep);
        ep->waiters--;
        if (handle != 0) {
            s = slot_get(ep, handle); /* the slot array may have moved */
            if (s == NULL) {
                wake_consume(ep); /* slot_free wrote one byte for this wait */
                return DP_ERR_CLOSED;
            }
            s->waiters--;
        }
        if (ep->closed) {
            return DP_ERR_CLOSED;
        }
        if (r < 0) {
            return dp_os_error(err); /* EINTR: the caller retries */
        }
        if (r > 0 && pfd[0].revents != 0) {
            if (ep->mode == DP_ENDPOINT_CLIENT) {
                int rc = drain(ep, 0);
                if (rc < 0) {
                    return rc;
                }
            }
            return 1;
        }
        /* Timed out, or woken for another slot's waiter: wait on. */
        if (timeout_ms >= 0) {
            int64_t waited = dp_clock_ms(0) - start;
            if (waited >= timeout_ms || (r == 0 && slice == left)) {
                return 0;
            }
            left = (int)(timeout_ms - waited);
        }
    }
}

#if defined(DP_USE_BLOCKING_WAIT)
/* Clear O_NONBLOCK once (every other call on the socket passes MSG_DONTWAIT,
 * so only this wait ever blocks) and keep SO_RCVTIMEO at block_ms. */
static int blocking_setup(dp_endpoint *ep, int block_ms)
{
    if (!ep->fd_blocking) {
        int fl = fcntl(ep->fd, F_GETFL);
        if (fl < 0 || ((fl & O_NONBLOCK) && fcntl(ep->fd, F_SETFL, fl & ~O_NONBLOCK) < 0)) {
            return dp_os_error(errno);
        }
        ep->fd_blocking = 1;
        ep->rcvtimeo_ms = -2; /* unknown: set it below */
    }
    if (ep->rcvtimeo_ms != block_ms) {
        struct timeval tv; /* {0, 0}: no timeout */
        tv.tv_sec = block_ms < 0 ? 0 : block_ms / 1000;
        tv.tv_usec = block_ms < 0 ? 0 : (block_ms % 1000) * 1000;
        if (setsockopt(ep->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, (socklen_t)sizeof(tv)) < 0) {
            return dp_os_error(errno);
        }
        ep->rcvtimeo_ms = block_ms;
    }
    return DP_OK;
}

/* Wait with an empty queue, timeout_ms < 0 (forever) or >=
 * DP_BLOCKING_WAIT_MIN_MS: one blocking recvmmsg(MSG_WAITFORONE) both waits
 * for and reads the datagrams (poll() + recvmmsg took two syscalls per
 * wait). SO_RCVTIMEO fires late (jiffies, timer-wheel slack up to 1/8), so
 * the blocking part stops early and poll() waits out the exact remainder;
 * its value is rounded down to a power of two so it is rarely reset.
 * The lock is released during the recvmmsg: the receive buffers are lent to
 * it (rx_lent; a second waiter meanwhile polls instead, and drain() leaves
 * the socket to it), and dp_ep_close wakes it with shutdown(SHUT_RD).
 * Datagrams are routed with *now_ms moved on by the time waited. Returns 2
 * when something was read (a full batch, or a skipped ICMP error, is
 * followed by a non-blocking drain unless a sink asked to stop), else what
 * wait_poll returns for the remainder: 1 readable (a CLIENT has drained),
 * 0 timed out; EINTR as an error for the caller to retry; DP_ERR_CLOSED
 * when closed meanwhile. */
static int blocking_wait(dp_endpoint *ep, int timeout_ms, int64_t *now_ms)
{
    int64_t start = dp_clock_ms(0);
    int rc;
    if (ep->rx_lent) { /* another thread is blocked reading: wait beside it */
        rc = wait_poll(ep, 0, timeout_ms);
        int64_t waited = dp_clock_ms(0) - start;
        *now_ms += waited > 0 ? waited : 0;
        return rc;
    }
    rc = ensure_rx(ep);
    if (rc < 0) {
        return rc;
    }
    report_unreported(ep, *now_ms);
    int block_ms = -1;
    if (timeout_ms >= 0) {
        int most = timeout_ms - timeout_ms / 8 - 10; /* >= 25 for >= 40 */
        block_ms = 16;
        while (block_ms <= most / 2) {
            block_ms *= 2;
        }
    }
    rc = blocking_setup(ep, block_ms);
    if (rc < 0) {
        return rc;
    }
    int want = ep->batch;
    prepare_rx_batch(ep, want);
    struct mmsghdr *msgs = ep->msgs;
    int fd = ep->fd;
    ep->rx_lent = 1;
    ep->waiters++;
    dp_endpoint_unlock(ep);
    int got = recvmmsg(fd, msgs, (unsigned int)want, MSG_WAITFORONE, NULL);
    int err = got < 0 ? errno : 0;
    dp_endpoint_lock(ep);
    ep->waiters--;
    ep->rx_lent = 0;
    if (ep->closed) {
        return DP_ERR_CLOSED; /* what shutdown() made it return is not a datagram */
    }
    int64_t waited = dp_clock_ms(0) - start;
    *now_ms += waited > 0 ? waited : 0;
    if (got < 0) {
        if (err == EAGAIN || err == EWOULDBLOCK) { /* the blocking part timed out */
            int64_t left = (int64_t)timeout_ms - waited;
            if (timeout_ms < 0 || left <= 0) {
                return 0;
            }
            start = dp_clock_ms(0);
            rc = wait_poll(ep, 0, (int)left);
            waited = dp_clock_ms(0) - start;
            *now_ms += waited > 0 ? waited : 0;
            return rc;
        }
        if (!dp_is_remote_error(err)) {
            return dp_os_error(err); /* EINTR included */
        }
        note_remote_error(ep, err, 0, *now_ms); /* skipped, as drain() does */
        got = 0;
    }
    ep->sink_stop = 0;
    for (int i = 0; i < got; i++) {
        route(ep, (const struct sockaddr *)&ep->names[i], ep->rx + (size_t)i * DP_MAX_DATAGRAM,
              ep->msgs[i].msg_len, (ep->msgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0, *now_ms);
    }
    flush_replies(ep);
    if ((got == 0 || got == want) && !ep->sink_stop) {
        rc = drain(ep, *now_ms); /* read whatever else is waiting, without blocking */
        if (rc < 0 && got == 0) {
            return rc;
        }
    }
    return 2;
}
#endif

int dp_ep_wait(dp_endpoint *ep, uint64_t handle, int timeout_ms)
{
    if (ep == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (ep->closed) {
        return DP_ERR_CLOSED;
    }
    /* SERVER with handle 0: the socket itself (nothing is queued there). */
    if (!(ep->mode == DP_ENDPOINT_SERVER && handle == 0)) {
        const dp_queue *q = queue_of_const(ep, handle);
        if (q == NULL) {
            return DP_ERR_CLOSED;
        }
        if (q->count > 0) {
            return 1;
        }
    }
#if defined(DP_USE_BLOCKING_WAIT)
    if (ep->mode == DP_ENDPOINT_CLIENT && (timeout_ms < 0 || timeout_ms >= DP_BLOCKING_WAIT_MIN_MS)) {
        int64_t now_ms = 0; /* CLIENT queues ignore the time */
        int rc = blocking_wait(ep, timeout_ms, &now_ms);
        return rc == 2 ? 1 : rc;
    }
#endif
    return wait_poll(ep, handle, timeout_ms);
}

/* SERVER endpoint with a sink (the DTLS host): wait up to timeout_ms (< 0:
 * no limit) for datagrams, moving *now_ms on by the time waited. On Linux a
 * long wait is blocking_wait, which hands what it reads to the sink (one
 * syscall per wake instead of poll() + recvmmsg). 2: read (nothing for
 * dp_ep_poll to do), 1: readable, 0: timed out, < 0: error
 * (DP_ERR_CLOSED: closed meanwhile). */
int dp_ep_sink_wait(dp_endpoint *ep, int timeout_ms, int64_t *now_ms)
{
    if (ep == NULL || now_ms == NULL || ep->mode != DP_ENDPOINT_SERVER || ep->sink == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (ep->closed) {
        return DP_ERR_CLOSED;
    }
#if defined(DP_USE_BLOCKING_WAIT)
    if (timeout_ms < 0 || timeout_ms >= DP_BLOCKING_WAIT_MIN_MS) {
        return blocking_wait(ep, timeout_ms, now_ms);
    }
#endif
    int64_t start = dp_clock_ms(0);
    int rc = wait_poll(ep, 0, timeout_ms);
    int64_t waited = dp_clock_ms(0) - start;
    *now_ms += waited > 0 ? waited : 0;
    return rc;
}

/* ---- Taking, queues, sending --------------------------------------------- */

int dp_ep_pending_count(const dp_endpoint *ep)
{
    if (ep == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    return ep->closed ? 0 : (int)ep->pending_count;
}

int dp_ep_take(dp_endpoint *ep, uint64_t *handle)
{
    if (ep == NULL || handle == NULL || ep->mode != DP_ENDPOINT_SERVER) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    *handle = 0;
    if (ep->closed) {
        return DP_ERR_CLOSED;
    }
    if (ep->pending_head == DP_NO_INDEX) {
        return 0;
    }
    uint32_t index = ep->pending_head;
    pending_unlink(ep, index);
    ep->slots[index].state = DP_SLOT_TAKEN;
    *handle = slot_handle(ep, index);
    return 1;
}

int dp_ep_slot_close(dp_endpoint *ep, uint64_t handle)
{
    if (ep == NULL || handle == 0) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (slot_get(ep, handle) == NULL) {
        return DP_ERR_CLOSED;
    }
    slot_free(ep, (uint32_t)(handle & 0xFFFFFFFFu));
    return DP_OK;
}

int dp_ep_slot_addr(const dp_endpoint *ep, uint64_t handle, dp_addr *out)
{
    if (ep == NULL || out == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (handle == 0 && ep->mode == DP_ENDPOINT_CLIENT) {
        /* A connected socket's one peer (dp_ep_set_connected). */
        if (ep->closed) {
            return DP_ERR_CLOSED;
        }
        if (!ep->connected) {
            return DP_ERR_BAD_STATE;
        }
        *out = ep->connected_addr;
        return DP_OK;
    }
    const dp_slot *s = slot_get(ep, handle);
    if (s == NULL) {
        return DP_ERR_CLOSED;
    }
    *out = s->addr;
    return DP_OK;
}

int dp_ep_queued(const dp_endpoint *ep, uint64_t handle)
{
    if (ep == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    const dp_queue *q = queue_of_const(ep, handle);
    if (q == NULL || ep->closed) {
        return DP_ERR_CLOSED;
    }
    return (int)q->count;
}

int dp_ep_next_len(const dp_endpoint *ep, uint64_t handle)
{
    if (ep == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    const dp_queue *q = queue_of_const(ep, handle);
    if (q == NULL || ep->closed) {
        return DP_ERR_CLOSED;
    }
    if (q->count == 0) {
        return DP_ERR_WOULD_BLOCK;
    }
    dp_entry_header h;
    queue_peek(q, &h);
    return (int)h.len;
}

int dp_ep_recv(dp_endpoint *ep, uint64_t handle, uint8_t *buf, size_t cap, dp_addr *src)
{
    if (ep == NULL || (buf == NULL && cap != 0)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (ep->closed) {
        return DP_ERR_CLOSED;
    }
    dp_queue *q = queue_of(ep, handle);
    if (q == NULL) {
        return DP_ERR_CLOSED;
    }
    if (q->count == 0 && ep->mode == DP_ENDPOINT_CLIENT) {
        int rc = drain(ep, 0);
        if (rc < 0) {
            return rc;
        }
    }
    if (q->count == 0) {
        return DP_ERR_WOULD_BLOCK;
    }
    dp_entry_header h;
    queue_peek(q, &h);
    if (h.len > cap) {
        return DP_ERR_BUFFER_TOO_SMALL;
    }
    if (h.len) {
        ring_get(q, (uint32_t)(((uint64_t)q->head + sizeof(h)) % q->cap), buf, h.len);
    }
    if (src != NULL) {
        memset(src, 0, sizeof(*src));
        memcpy(src->ip, h.ip, 16);
        src->port = h.port;
        const dp_slot *s = handle != 0 ? slot_get(ep, handle) : NULL;
        if (s != NULL && s->addr.port == h.port && memcmp(s->addr.ip, h.ip, 16) == 0) {
            *src = s->addr; /* keeps the scope id (entries have no room for it) */
        }
        /* else: a CID record from a new address (route_lookup), told as it came */
    }
    queue_drop_head(q, h.len);
    return (int)h.len;
}

int dp_ep_flush(dp_endpoint *ep, uint64_t handle)
{
    if (ep == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    dp_queue *q = queue_of(ep, handle);
    if (q == NULL || ep->closed) {
        return DP_ERR_CLOSED;
    }
    int n = (int)q->count;
    queue_release(q);
    return n;
}

int dp_ep_send(dp_endpoint *ep, uint64_t handle, const dp_addr *dst, const uint8_t *data,
                     size_t len)
{
    if (ep == NULL || (data == NULL && len != 0)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (ep->closed) {
        return DP_ERR_CLOSED;
    }
    if (len > DP_MAX_DATAGRAM) {
        return DP_ERR_TOO_LARGE;
    }
    dp_udp_stats *slot_stats = NULL;
    if (handle != 0) {
        dp_slot *s = slot_get(ep, handle);
        if (s == NULL) {
            return DP_ERR_CLOSED;
        }
        dst = &s->addr;
        slot_stats = &s->stats;
    }
    struct sockaddr_storage ss;
    dp_socklen_t sslen = 0;
    if (dst != NULL) {
        int rc = addr_to_sockaddr(ep, dst, &ss, &sslen);
        if (rc < 0) {
            return rc;
        }
    } else if (!ep->connected) {
        return DP_ERR_BAD_STATE; /* no destination */
    }
    int remote_skipped = 0;
    int last_remote = 0;
    for (int attempt = 0; attempt < 8; attempt++) {
#if defined(_WIN32)
        int n = dst ? sendto(ep->fd, (const char *)data, (int)len, 0, (const struct sockaddr *)&ss,
                             sslen)
                    : send(ep->fd, (const char *)data, (int)len, 0);
#else
        ssize_t n = dst ? sendto(ep->fd, data, len, MSG_DONTWAIT, (const struct sockaddr *)&ss, sslen)
                        : send(ep->fd, data, len, MSG_DONTWAIT);
#endif
        if (n >= 0) {
            ep->stats.packets_out++;
            ep->stats.bytes_out += (uint64_t)n;
            if (slot_stats) {
                slot_stats->packets_out++;
                slot_stats->bytes_out += (uint64_t)n;
            }
            return (int)n;
        }
        int err = DP_LAST_ERROR();
#if !defined(_WIN32)
        if (err == EWOULDBLOCK) {
            err = DP_EAGAIN;
        }
#endif
        if (err == DP_EINTR) {
            continue;
        }
        if (err == DP_EAGAIN) {
            return DP_ERR_WOULD_BLOCK;
        }
        if (dp_is_remote_error(err) && (!remote_skipped || !send_error_may_be_local(err))) {
            /* A pending ICMP error is reported by (and consumed with) the
             * next send, which sent nothing: count it and send again. An
             * error a send can also have for itself (EMSGSIZE, EACCES...)
             * twice in a row is this datagram's own. */
            remote_skipped = 1;
            last_remote = err;
            note_remote_error(ep, err, 1, 0);
            continue;
        }
        return dp_os_error(err);
    }
    if (last_remote != 0 && !send_error_may_be_local(last_remote)) {
        /* ICMP errors arriving faster than we can send (a forged flood):
         * the datagram is lost, as UDP datagrams are; never an error. */
        return (int)len;
    }
    return dp_os_error(DP_EINTR);
}

int dp_ep_set_connected(dp_endpoint *ep, const dp_addr *peer)
{
    if (ep == NULL || ep->mode != DP_ENDPOINT_CLIENT) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (ep->closed) {
        return DP_ERR_CLOSED;
    }
    if (peer == NULL) {
        ep->connected = 0;
        memset(&ep->connected_addr, 0, sizeof(ep->connected_addr));
        return DP_OK;
    }
    ep->connected = 1;
    ep->connected_addr = *peer;
    ep->connected_addr.reserved = 0;
    queue_release(&ep->queue);
    return DP_OK;
}

int dp_ep_stats(const dp_endpoint *ep, uint64_t handle, dp_udp_stats *out)
{
    if (ep == NULL || out == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (handle == 0) {
        *out = ep->stats;
        return DP_OK;
    }
    const dp_slot *s = slot_get(ep, handle);
    if (s == NULL) {
        return DP_ERR_CLOSED;
    }
    *out = s->stats;
    return DP_OK;
}

int dp_ep_inject(dp_endpoint *ep, const dp_addr *src, const uint8_t *data, size_t len,
                       int64_t now_ms)
{
    now_ms = dp_resolve_now(now_ms);
    if (ep == NULL || src == NULL || (data == NULL && len != 0) || ep->mode != DP_ENDPOINT_SERVER ||
        len > DP_MAX_DATAGRAM) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (ep->closed) {
        return DP_ERR_CLOSED;
    }
    uint64_t created = ep->stats.pending_created;
    uint32_t index = table_find(ep, src);
    uint32_t queued = index != DP_NO_INDEX ? ep->slots[index].queue.count : 0;
    route_server(ep, src, data, (uint32_t)len, 0, now_ms);
    flush_replies(ep);
    if (index != DP_NO_INDEX) {
        return ep->slots[index].queue.count > queued;
    }
    return ep->stats.pending_created > created;
}

/* ---- Hooks for the DTLS host (dp_host.c) ---------------------------------- */

int dp_ep_set_error_sink(dp_endpoint *ep, dp_endpoint_error_fn fn, void *ctx)
{
    if (ep == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    ep->error_sink = fn;
    ep->error_ctx = ctx;
    return DP_OK;
}

int dp_ep_last_remote_error(const dp_endpoint *ep)
{
    return ep == NULL ? DP_ERR_INVALID_ARGUMENT : ep->remote_errno;
}

uint64_t dp_ep_remote_errors(const dp_endpoint *ep)
{
    return ep == NULL ? 0 : ep->stats.recv_errors;
}

/* SERVER endpoint of a host whose only association is one it started:
 * connect() the socket to that peer so the kernel reports its ICMP errors
 * (a fast failure while handshaking) and drops datagrams from anyone else.
 * peer NULL dissolves the association (AF_UNSPEC). */
int dp_ep_connect_socket(dp_endpoint *ep, const dp_addr *peer)
{
    if (ep == NULL || ep->mode != DP_ENDPOINT_SERVER) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (ep->closed) {
        return DP_ERR_CLOSED;
    }
    struct sockaddr_storage ss;
    dp_socklen_t sslen = 0;
    if (peer != NULL) {
        int rc = addr_to_sockaddr(ep, peer, &ss, &sslen);
        if (rc < 0) {
            return rc;
        }
    } else {
        if (!ep->connected) {
            return DP_OK;
        }
        memset(&ss, 0, sizeof(ss));
        ss.ss_family = AF_UNSPEC;
        sslen = (dp_socklen_t)sizeof(ss);
    }
    if (connect(ep->fd, (const struct sockaddr *)&ss, sslen) != 0) {
        int err = DP_LAST_ERROR();
#if !defined(_WIN32)
        if (peer == NULL && err == EAFNOSUPPORT) {
            err = 0; /* some systems dissolve and still report this */
        }
#endif
        if (err != 0) {
            return dp_os_error(err);
        }
    }
    ep->connected = peer != NULL;
    if (peer != NULL) {
        ep->connected_addr = *peer;
        ep->connected_addr.reserved = 0;
    } else {
        memset(&ep->connected_addr, 0, sizeof(ep->connected_addr));
    }
    return DP_OK;
}

int dp_ep_set_sink(dp_endpoint *ep, dp_endpoint_sink_fn sink, void *ctx)
{
    if (ep == NULL || ep->mode != DP_ENDPOINT_SERVER) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    ep->sink = sink;
    ep->sink_ctx = ctx;
    ep->sink_stop = 0;
    return DP_OK;
}

int dp_ep_slot_open(dp_endpoint *ep, const dp_addr *addr, int64_t now_ms, uint64_t *handle)
{
    now_ms = dp_resolve_now(now_ms);
    if (ep == NULL || addr == NULL || handle == NULL || ep->mode != DP_ENDPOINT_SERVER) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    *handle = 0;
    if (ep->closed) {
        return DP_ERR_CLOSED;
    }
    struct sockaddr_storage ss;
    dp_socklen_t sslen = 0;
    int rc = addr_to_sockaddr(ep, addr, &ss, &sslen);
    if (rc < 0) {
        return rc; /* an address this socket cannot reach */
    }
    dp_addr key = *addr;
    key.reserved = 0;
    if (table_find(ep, &key) != DP_NO_INDEX) {
        return DP_ERR_BAD_STATE;
    }
    rc = slots_reserve(ep);
    if (rc == DP_OK) {
        rc = table_reserve(ep);
    }
    if (rc < 0) {
        return rc;
    }
    uint32_t index = slot_take_free(ep, &key, DP_SLOT_TAKEN, now_ms);
    slot_route(ep, index);
    *handle = slot_handle(ep, index);
    return DP_OK;
}

#if defined(DP_USE_MMSG)
static void count_out(dp_endpoint *ep, uint64_t handle, size_t len)
{
    ep->stats.packets_out++;
    ep->stats.bytes_out += (uint64_t)len;
    dp_slot *s = handle != 0 ? slot_get(ep, handle) : NULL;
    if (s != NULL) {
        s->stats.packets_out++;
        s->stats.bytes_out += (uint64_t)len;
    }
}
#endif

#define DP_SEND_BATCH 64 /* datagrams per sendmmsg */

int dp_ep_send_batch(dp_endpoint *ep, const dp_endpoint_out *msgs, size_t count,
                           size_t *failed, int *last_error)
{
    if (ep == NULL || (msgs == NULL && count != 0) || failed == NULL || last_error == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    *failed = 0;
    *last_error = 0;
    if (ep->closed) {
        *failed = count;
        *last_error = DP_ERR_CLOSED;
        return DP_ERR_CLOSED;
    }
    size_t sent = 0;
#if defined(DP_USE_MMSG)
    struct mmsghdr vec[DP_SEND_BATCH];
    struct iovec iov[DP_SEND_BATCH];
    struct sockaddr_storage names[DP_SEND_BATCH];
    size_t origin[DP_SEND_BATCH]; /* msgs index of each vec entry */
    size_t next = 0;
    while (next < count) {
        unsigned fill = 0;
        for (; next < count && fill < DP_SEND_BATCH; next++) {
            const dp_endpoint_out *m = &msgs[next];
            dp_slot *s = m->handle != 0 ? slot_get(ep, m->handle) : NULL;
            const dp_addr *dst = s != NULL ? &s->addr : (m->handle == 0 ? m->dst : NULL);
            dp_socklen_t sslen = 0;
            if (dst == NULL || m->len > DP_MAX_DATAGRAM ||
                addr_to_sockaddr(ep, dst, &names[fill], &sslen) < 0) {
                (*failed)++;
                *last_error = dst == NULL ? DP_ERR_CLOSED : DP_ERR_INVALID_ARGUMENT;
                continue;
            }
            iov[fill].iov_base = (void *)(uintptr_t)m->data;
            iov[fill].iov_len = m->len;
            memset(&vec[fill], 0, sizeof(vec[fill]));
            vec[fill].msg_hdr.msg_name = &names[fill];
            vec[fill].msg_hdr.msg_namelen = sslen;
            vec[fill].msg_hdr.msg_iov = &iov[fill];
            vec[fill].msg_hdr.msg_iovlen = 1;
            origin[fill] = next;
            fill++;
        }
        unsigned off = 0;
        unsigned remote_retries = 0; /* of the datagram at off, after ICMP errors */
        int interrupted = 0;
        /* Every pass advances off or ends the batch; EINTR retries are bounded. */
        while (off < fill) {
            int n = sendmmsg(ep->fd, vec + off, fill - off, MSG_DONTWAIT);
            if (n > 0) {
                for (int i = 0; i < n; i++) {
                    unsigned k = off + (unsigned)i;
                    count_out(ep, msgs[origin[k]].handle, vec[k].msg_len);
                }
                sent += (size_t)n;
                off += (unsigned)n;
                remote_retries = 0;
                continue;
            }
            int err = n < 0 ? errno : EAGAIN;
            if (err == EINTR && interrupted++ < 8) {
                continue;
            }
            if (dp_is_remote_error(err) &&
                remote_retries < (send_error_may_be_local(err) ? 1u : 8u)) {
                /* A pending ICMP error, consumed by this send (see
                 * dp_endpoint_send): count it and send this datagram again. */
                remote_retries++;
                note_remote_error(ep, err, 1, 0);
                continue;
            }
            remote_retries = 0;
            if (err == EAGAIN || err == EWOULDBLOCK) {
                /* The send buffer is full: the rest of the batch is lost like
                 * any UDP datagram (DTLS retransmits handshakes). */
                *failed += fill - off;
                *last_error = DP_ERR_WOULD_BLOCK;
                off = fill;
                break;
            }
            (*failed)++; /* this datagram alone was refused (EMSGSIZE, EPERM...) */
            *last_error = dp_os_error(err);
            off++;
        }
    }
#else
    for (size_t i = 0; i < count; i++) {
        int rc = dp_ep_send(ep, msgs[i].handle, msgs[i].handle == 0 ? msgs[i].dst : NULL,
                            msgs[i].data, msgs[i].len);
        if (rc >= 0) {
            sent++;
        } else {
            (*failed)++;
            *last_error = rc;
        }
    }
#endif
    return (int)sent;
}

/* ---- Cookie gate and session succession (DTLSServer, dp_link.c) ----------- */

static int dp_ep_set_gate(dp_endpoint *ep, dp_cookie_gate *gate, int64_t clock)
{
    if (ep == NULL || ep->mode != DP_ENDPOINT_SERVER ||
        (clock != DP_NOW && clock != DP_NOW_WALL)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (ep->closed) {
        return DP_ERR_CLOSED;
    }
    if (gate != NULL) {
        dp_cookie_gate_ref(gate);
    }
    dp_cookie_gate_free(ep->gate);
    ep->gate = gate;
    ep->gate_clock = clock;
    return DP_OK;
}

void dp_ep_slot_mark_established(dp_endpoint *ep, uint64_t handle)
{
    dp_slot *s = ep != NULL && !ep->closed ? slot_get(ep, handle) : NULL;
    if (s != NULL) {
        s->established = 1;
    }
}

int dp_ep_slot_admitted(const dp_endpoint *ep, uint64_t handle)
{
    const dp_slot *s = ep != NULL && !ep->closed ? slot_get(ep, handle) : NULL;
    return s != NULL && s->admitted;
}

int dp_ep_slot_superseded(const dp_endpoint *ep, uint64_t handle)
{
    const dp_slot *s = ep != NULL && !ep->closed ? slot_get(ep, handle) : NULL;
    return s != NULL && s->superseded;
}

int dp_ep_slot_promote(dp_endpoint *ep, uint64_t handle)
{
    dp_slot *s = ep != NULL && !ep->closed ? slot_get(ep, handle) : NULL;
    if (s == NULL) {
        return DP_ERR_CLOSED;
    }
    uint32_t index = (uint32_t)(handle & 0xFFFFFFFFu);
    if (s->pred == DP_NO_INDEX) {
        return 0;
    }
    dp_slot *old = &ep->slots[s->pred];
    slot_unroute(ep, s->pred);
    old->superseded = 1;
    old->succ = DP_NO_INDEX;
    s->pred = DP_NO_INDEX;
    slot_route(ep, index);
    return 1;
}

int dp_ep_slot_rebind(dp_endpoint *ep, uint64_t handle, int64_t now_ms, uint64_t *out)
{
    if (ep == NULL || out == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    *out = 0;
    dp_slot *s = !ep->closed ? slot_get(ep, handle) : NULL;
    if (s == NULL || !s->routed) {
        return DP_ERR_CLOSED;
    }
    uint32_t index = (uint32_t)(handle & 0xFFFFFFFFu);
    dp_addr addr = s->addr;
    slot_unroute(ep, index);
    int rc = dp_ep_slot_open(ep, &addr, now_ms, out);
    if (rc < 0) {
        slot_route(ep, index); /* nothing changed */
        return rc;
    }
    ep->slots[index].superseded = 1;
    return DP_OK;
}

/* ---- Connection IDs (RFC 9146) and address moves ------------------------------ */

int dp_ep_slot_set_cid(dp_endpoint *ep, uint64_t handle, const uint8_t *cid, size_t len)
{
    dp_slot *s = ep != NULL && !ep->closed ? slot_get(ep, handle) : NULL;
    if (s == NULL) {
        return DP_ERR_CLOSED;
    }
    if (cid == NULL || len == 0 || len > DP_CID_MAX || (ep->cids != 0 && len != ep->cid_len)) {
        return DP_ERR_INVALID_ARGUMENT; /* one length per endpoint: the router reads it */
    }
    uint32_t index = (uint32_t)(handle & 0xFFFFFFFFu);
    if (s->cid_routed && memcmp(s->cid, cid, len) == 0) {
        return DP_OK; /* already routed (the link registers at every pump) */
    }
    cid_unroute(ep, index);
    ep->cid_len = (uint8_t)len;
    if (index_find(ep, &ep->by_cid, cid_hash(ep, cid), cid) != DP_NO_INDEX) {
        return DP_ERR_BAD_STATE; /* another session has it (random collision) */
    }
    int rc = index_reserve(ep, &ep->by_cid, ep->cids + 1);
    if (rc < 0) {
        return rc;
    }
    memcpy(s->cid, cid, len);
    table_insert_raw(ep->by_cid.cells, ep->by_cid.cap, cid_hash(ep, cid), index);
    s->cid_routed = 1;
    ep->cids++;
    return DP_OK;
}

int dp_ep_slot_addr_differs(const dp_endpoint *ep, uint64_t handle, const dp_addr *addr)
{
    const dp_slot *s = ep != NULL && addr != NULL ? slot_get(ep, handle) : NULL;
    return s != NULL && !addr_equal(&s->addr, addr);
}

int dp_ep_slot_move(dp_endpoint *ep, uint64_t handle, const dp_addr *addr)
{
    dp_slot *s = ep != NULL && addr != NULL && !ep->closed ? slot_get(ep, handle) : NULL;
    if (s == NULL || !s->routed) {
        return DP_ERR_CLOSED;
    }
    struct sockaddr_storage ss;
    dp_socklen_t sslen = 0;
    dp_addr key = *addr;
    key.reserved = 0;
    if (addr_to_sockaddr(ep, &key, &ss, &sslen) < 0) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    /* Another session owns the address (the NAT gave this port to another
     * client before), or a reconnect is under way on this one: the address
     * stays; a later record moves it once that is over. */
    if (s->succ != DP_NO_INDEX || s->pred != DP_NO_INDEX || table_find(ep, &key) != DP_NO_INDEX) {
        return DP_ERR_BAD_STATE;
    }
    uint32_t index = (uint32_t)(handle & 0xFFFFFFFFu);
    slot_unroute(ep, index);
    s->addr = key;
    slot_route(ep, index); /* the table kept its size: one entry out, one in */
    return DP_OK;
}

/* ---- The public calls: the same under the endpoint's lock ------------------ */

#define DP_EP_LOCKED(ep, call)                                                     \
    do {                                                                           \
        if ((ep) == NULL) {                                                        \
            return DP_ERR_INVALID_ARGUMENT;                                        \
        }                                                                          \
        dp_endpoint *locked_ = (dp_endpoint *)(uintptr_t)(ep);                     \
        dp_endpoint_lock(locked_);                                                 \
        int rc_ = (call);                                                          \
        dp_endpoint_unlock(locked_);                                               \
        return rc_;                                                                \
    } while (0)

int dp_endpoint_close(dp_endpoint *ep)
{
    DP_EP_LOCKED(ep, dp_ep_close(ep));
}

int dp_endpoint_is_closed(const dp_endpoint *ep)
{
    if (ep == NULL) {
        return 1;
    }
    DP_EP_LOCKED(ep, dp_ep_is_closed(ep));
}

int dp_endpoint_set_limits(dp_endpoint *ep, uint32_t max_pending, int64_t pending_timeout_ms,
                           uint32_t peer_recv_buf_size)
{
    DP_EP_LOCKED(ep, dp_ep_set_limits(ep, max_pending, pending_timeout_ms, peer_recv_buf_size));
}

int dp_endpoint_poll(dp_endpoint *ep, int64_t now_ms)
{
    DP_EP_LOCKED(ep, dp_ep_poll(ep, now_ms));
}

int dp_endpoint_wait(dp_endpoint *ep, uint64_t handle, int timeout_ms)
{
    DP_EP_LOCKED(ep, dp_ep_wait(ep, handle, timeout_ms));
}

int dp_endpoint_pending_count(const dp_endpoint *ep)
{
    DP_EP_LOCKED(ep, dp_ep_pending_count(ep));
}

int dp_endpoint_take(dp_endpoint *ep, uint64_t *handle)
{
    DP_EP_LOCKED(ep, dp_ep_take(ep, handle));
}

int dp_endpoint_slot_close(dp_endpoint *ep, uint64_t handle)
{
    DP_EP_LOCKED(ep, dp_ep_slot_close(ep, handle));
}

int dp_endpoint_slot_addr(const dp_endpoint *ep, uint64_t handle, dp_addr *out)
{
    DP_EP_LOCKED(ep, dp_ep_slot_addr(ep, handle, out));
}

int dp_endpoint_queued(const dp_endpoint *ep, uint64_t handle)
{
    DP_EP_LOCKED(ep, dp_ep_queued(ep, handle));
}

int dp_endpoint_next_len(const dp_endpoint *ep, uint64_t handle)
{
    DP_EP_LOCKED(ep, dp_ep_next_len(ep, handle));
}

int dp_endpoint_recv(dp_endpoint *ep, uint64_t handle, uint8_t *buf, size_t cap, dp_addr *src)
{
    DP_EP_LOCKED(ep, dp_ep_recv(ep, handle, buf, cap, src));
}

int dp_endpoint_flush(dp_endpoint *ep, uint64_t handle)
{
    DP_EP_LOCKED(ep, dp_ep_flush(ep, handle));
}

int dp_endpoint_send(dp_endpoint *ep, uint64_t handle, const dp_addr *dst, const uint8_t *data,
                     size_t len)
{
    DP_EP_LOCKED(ep, dp_ep_send(ep, handle, dst, data, len));
}

int dp_endpoint_set_connected(dp_endpoint *ep, const dp_addr *peer)
{
    DP_EP_LOCKED(ep, dp_ep_set_connected(ep, peer));
}

int dp_endpoint_stats(const dp_endpoint *ep, uint64_t handle, dp_udp_stats *out)
{
    DP_EP_LOCKED(ep, dp_ep_stats(ep, handle, out));
}

int dp_endpoint_inject(dp_endpoint *ep, const dp_addr *src, const uint8_t *data, size_t len,
                       int64_t now_ms)
{
    DP_EP_LOCKED(ep, dp_ep_inject(ep, src, data, len, now_ms));
}

int dp_endpoint_set_gate(dp_endpoint *ep, dp_cookie_gate *gate, int64_t clock)
{
    DP_EP_LOCKED(ep, dp_ep_set_gate(ep, gate, clock));
}

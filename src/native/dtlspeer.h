/*
 * dtlspeer.h: the C API of dtlspeer._native, the only header cffi sees.
 *
 * Everything between the CDEF markers is handed to cffi's cdef() verbatim, so
 * it must stay plain C declarations: no #include, no #if, no macros (constants
 * are enums). Mbed TLS types never appear here; objects are opaque handles.
 *
 * Return convention for int-returning functions: >= 0 is success (often a
 * count or a length), < 0 is an error code: an MBEDTLS_ERR_* / PSA_ERROR_*
 * value (above -0x10000), a DP_ERR_* value (-0x10000 .. -0x1FFFF), or
 * DP_ERR_ERRNO_BASE - errno for operating-system failures. Python turns
 * codes into exceptions in exactly one place (dtlspeer._binding.check).
 */
#ifndef DTLSPEER_H
#define DTLSPEER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* BEGIN CDEF */

/* ---- Return codes (dp_common.c) ----------------------------------------- */

enum {
    DP_OK = 0,
    DP_ERR_BASE = -0x10000,
    DP_ERR_INVALID_ARGUMENT = -0x10001, /* a caller passed a bad value */
    DP_ERR_NO_MEMORY = -0x10002,        /* an allocation failed */
    DP_ERR_BUFFER_TOO_SMALL = -0x10003, /* output buffer too small for the result */
    DP_ERR_KEY_MISMATCH = -0x10004,     /* private key does not match certificate */
    DP_ERR_UNSUPPORTED = -0x10005,      /* valid request this build cannot do */
    DP_ERR_BAD_STATE = -0x10006,        /* object not in a state that allows this */
    DP_ERR_WOULD_BLOCK = -0x10007,      /* non-blocking operation would block */
    DP_ERR_LIMIT = -0x10008,            /* a configured limit was reached */
    DP_ERR_CLOSED = -0x10009,           /* object was closed */
    DP_ERR_TOO_LARGE = -0x1000A,        /* payload larger than allowed */
    DP_ERR_LAST = -0x1FFFF,
    DP_ERR_ERRNO_BASE = -0x20000        /* DP_ERR_ERRNO_BASE - errno */
};

/* ---- Library state (dp_common.c) ---------------------------------------- */

/* Initialise PSA crypto, the shared RNG, threading and the counting
 * allocator. Idempotent and thread-safe; the binding calls it on import. */
int dp_init(void);

/* Message for any return code of this API (Mbed TLS, PSA, DP or errno). */
void dp_strerror(int code, char *buf, size_t buflen);

/* Mbed TLS version string, e.g. "3.6.7". */
const char *dp_mbedtls_version(void);

/* Build configuration as "name=value" lines (compile-time options). */
const char *dp_build_config(void);

/* Newline-separated names of the ciphersuites this build can negotiate.
 * Returns the length written (excluding NUL) or DP_ERR_BUFFER_TOO_SMALL. */
int dp_ciphersuite_names(char *buf, size_t buflen);

/* Fill buf with len bytes from the shared, fork-safe PSA RNG. */
int dp_random(unsigned char *buf, size_t len);

/* Bytes and blocks currently allocated through dp_calloc (all Mbed TLS heap
 * use and every dtlspeer C object). For tests and diagnostics. */
void dp_alloc_stats(int64_t *bytes, int64_t *blocks);

/* ---- Crypto objects (dp_key.c, dp_cert.c; structs in dp_crypto.h) ------- */

typedef struct dp_key dp_key;   /* a private or public key (RSA or EC) */
typedef struct dp_cert dp_cert; /* an X.509 certificate chain, leaf first */

/* ---- UDP endpoint (dp_endpoint.c) ---------------------------------------- */

/* A UDP socket driven from C. Python creates the socket (non-blocking) and
 * hands over its descriptor; the endpoint never closes it (Python does, after
 * dp_endpoint_close). CLIENT mode: one receive queue fed by every datagram
 * (PacketPeerUDP). SERVER mode: datagrams are routed by source address to
 * peer slots through a hash table; unknown senders become pending slots
 * (UDPServer). Slots are named by 64-bit handles carrying a generation, so a
 * stale handle can never reach a reused slot (it gets DP_ERR_CLOSED).
 * Handle 0 names the endpoint itself (its own queue in CLIENT mode, its
 * totals in dp_endpoint_stats). The slot lifecycle is described at the top of
 * dp_endpoint.c. One thread at a time per endpoint. */

typedef struct dp_endpoint dp_endpoint;

typedef struct {
    uint8_t ip[16];    /* IPv6 address; IPv4 as IPv4-mapped ::ffff:a.b.c.d */
    uint16_t port;     /* host byte order */
    uint16_t reserved; /* zero */
    uint32_t scope_id; /* IPv6 scope (interface index), else 0 */
} dp_addr;

typedef struct {
    uint64_t packets_in;        /* datagrams read from the socket (incl. dropped) */
    uint64_t bytes_in;
    uint64_t packets_out;       /* datagrams sent */
    uint64_t bytes_out;
    uint64_t drop_queue_full;   /* no room in the peer's queue (recv_buf_size) */
    uint64_t drop_pending_full; /* new sender while the pending list was full */
    uint64_t drop_filtered;     /* not from the connected address */
    uint64_t drop_truncated;    /* datagram larger than the receive buffer */
    uint64_t drop_no_memory;    /* an allocation for queueing it failed */
    uint64_t pending_created;   /* new pending peers */
    uint64_t pending_expired;   /* pending peers dropped by pending_timeout */
    uint64_t recv_errors;       /* ICMP-induced recv errors skipped (ECONNREFUSED...) */
} dp_udp_stats;

enum {
    DP_ENDPOINT_CLIENT = 0,
    DP_ENDPOINT_SERVER = 1,
    DP_QUEUE_ENTRY_OVERHEAD = 24, /* bytes a queued datagram costs beyond its payload */
    DP_MAX_DATAGRAM = 65535,      /* receive buffer size per datagram */
    DP_POLL_MAX_DATAGRAMS = 8192  /* upper bound of datagrams read per poll call */
};

/* fd: the socket (int fd, or a SOCKET on Windows); family: 4 or 6 (the
 * socket's address family); recv_buf_size: queue limit in bytes for the
 * CLIENT queue and, in SERVER mode, for each peer slot. */
int dp_endpoint_new(dp_endpoint **out, int64_t fd, int family, int mode, uint32_t recv_buf_size);
/* Free the endpoint and every slot. Does not close the socket. NULL is fine. */
void dp_endpoint_free(dp_endpoint *ep);
/* Stop using the socket and release every slot (their handles go stale);
 * later calls return DP_ERR_CLOSED. Idempotent. */
int dp_endpoint_close(dp_endpoint *ep);
int dp_endpoint_is_closed(const dp_endpoint *ep);
/* SERVER limits. max_pending: pending slots allowed (0 refuses new peers;
 * lowering it frees the newest pending slots beyond it). pending_timeout_ms:
 * a pending slot older than this (since its first datagram) is freed at the
 * next poll; < 0 never. peer_recv_buf_size: queue bytes of new slots. */
int dp_endpoint_set_limits(dp_endpoint *ep, uint32_t max_pending, int64_t pending_timeout_ms,
                           uint32_t peer_recv_buf_size);
/* Read every waiting datagram (recvmmsg batches on Linux; at most
 * DP_POLL_MAX_DATAGRAMS) and queue or route it; in SERVER mode, first expire
 * pending slots against now_ms. Returns the number of datagrams read. */
int dp_endpoint_poll(dp_endpoint *ep, int64_t now_ms);
/* Block up to timeout_ms (< 0: forever) until the slot (0: the endpoint
 * queue) has a datagram queued or the socket is readable. CLIENT mode
 * drains the socket when it wakes. Returns 1 ready, 0 timed out. */
int dp_endpoint_wait(dp_endpoint *ep, uint64_t handle, int timeout_ms);
/* SERVER: pending slots waiting for dp_endpoint_take. */
int dp_endpoint_pending_count(const dp_endpoint *ep);
/* SERVER: take the oldest pending slot (FIFO); it stays routed to its
 * handle until dp_endpoint_slot_close. Returns 1 and sets *handle, or 0. */
int dp_endpoint_take(dp_endpoint *ep, uint64_t *handle);
/* SERVER: free a slot (its queue is discarded; the address becomes unknown
 * again). DP_ERR_CLOSED if the handle is stale. */
int dp_endpoint_slot_close(dp_endpoint *ep, uint64_t handle);
/* The address a slot is routed by. */
int dp_endpoint_slot_addr(const dp_endpoint *ep, uint64_t handle, dp_addr *out);
/* Datagrams queued on the slot (0: endpoint queue). */
int dp_endpoint_queued(const dp_endpoint *ep, uint64_t handle);
/* Length of the next queued datagram, DP_ERR_WOULD_BLOCK if none. */
int dp_endpoint_next_len(const dp_endpoint *ep, uint64_t handle);
/* Pop the oldest datagram of the slot into buf (up to cap bytes), its source
 * into *src (may be NULL). Returns its length. Empty queue: CLIENT mode
 * first drains the socket; then DP_ERR_WOULD_BLOCK. cap too small:
 * DP_ERR_BUFFER_TOO_SMALL and the datagram stays queued. */
int dp_endpoint_recv(dp_endpoint *ep, uint64_t handle, uint8_t *buf, size_t cap, dp_addr *src);
/* Drop every queued datagram of the slot; returns how many. */
int dp_endpoint_flush(dp_endpoint *ep, uint64_t handle);
/* Send one datagram. SERVER: to the slot's address (handle != 0) or to dst
 * (handle 0). CLIENT: to dst, or with dst NULL on a connected socket.
 * Returns len; DP_ERR_WOULD_BLOCK when the OS send buffer is full. */
int dp_endpoint_send(dp_endpoint *ep, uint64_t handle, const dp_addr *dst, const uint8_t *data,
                     size_t len);
/* CLIENT: only accept datagrams from peer (NULL: accept all again) and drop
 * the queued ones (Godot's connect_to_host flushes). Python connect()s the
 * socket itself; this keeps the queue consistent with it. */
int dp_endpoint_set_connected(dp_endpoint *ep, const dp_addr *peer);
/* Counters of a slot, or of the whole endpoint with handle 0. */
int dp_endpoint_stats(const dp_endpoint *ep, uint64_t handle, dp_udp_stats *out);

/* ---- DTLS engine (dp_config.c, dp_conn.c, dp_cookie.c) ------------------- */

/* END CDEF */

/* ---- Internal helpers shared by our C files (not seen by cffi) ---------- */

void *dp_calloc(size_t count, size_t size);
void dp_free(void *ptr);
/* mbedtls f_rng-compatible callback over the shared RNG. */
int dp_rng(void *ctx, unsigned char *out, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* DTLSPEER_H */

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

/* The one clock of the library, in milliseconds: monotonic (wall = 0), or
 * the wall clock (wall = 1: Unix time). Every now_ms argument below comes
 * from it, and every function taking one also accepts DP_NOW / DP_NOW_WALL
 * and reads the clock itself: the binding passes DP_NOW, which saves it a
 * clock call per packet. Connections run on the monotonic clock; only a
 * cookie gate with a shared secret resolves DP_NOW to the wall clock (gates
 * of several processes must agree on the time slot), so a clock step moves
 * cookie slots, never connection timers. */
enum { DP_NOW = -1, DP_NOW_WALL = -2 };
int64_t dp_clock_ms(int wall);

/* Bytes and blocks currently allocated through dp_calloc (all Mbed TLS heap
 * use and every dtlspeer C object). For tests and diagnostics. */
void dp_alloc_stats(int64_t *bytes, int64_t *blocks);
/* How often the engine has handed parked connections' freed memory back to
 * the system (malloc_trim on glibc; counted on every platform). */
int64_t dp_trim_count(void);

/* ---- Crypto objects (dp_key.c, dp_cert.c; structs in dp_crypto.h) ------- */

typedef struct dp_key dp_key;   /* a private or public key (RSA or EC) */
typedef struct dp_cert dp_cert; /* an X.509 certificate chain, leaf first */

enum {
    DP_KEY_TYPE_NONE = 0, /* empty handle */
    DP_KEY_TYPE_RSA = 1,
    DP_KEY_TYPE_EC = 2
};

enum {
    DP_CURVE_NONE = 0, /* not an EC key */
    DP_CURVE_P256 = 1, /* secp256r1 */
    DP_CURVE_P384 = 2, /* secp384r1 */
    DP_CURVE_P521 = 3  /* secp521r1 */
};

enum {
    DP_FORMAT_PEM = 0,
    DP_FORMAT_DER = 1
};

/* GeneralName tags of subjectAltName entries (RFC 5280), as used in SAN lists. */
enum {
    DP_SAN_EMAIL = 1, /* rfc822Name */
    DP_SAN_DNS = 2,   /* dNSName */
    DP_SAN_URI = 6,   /* uniformResourceIdentifier */
    DP_SAN_IP = 7     /* iPAddress: 4 or 16 raw bytes */
};

enum {
    DP_RSA_GEN_MIN_BITS = 2048,
    DP_RSA_GEN_MAX_BITS = 4096,
    DP_KEY_MAX_INPUT = 1048576,   /* longest key text/DER we parse */
    DP_CERT_MAX_INPUT = 16777216, /* longest certificate bundle we parse */
    DP_CERT_MAX_SANS = 64,        /* SAN entries accepted when generating */
    DP_SHA256_LEN = 32
};

typedef struct dp_key_info {
    int type;        /* DP_KEY_TYPE_* */
    int bits;        /* modulus or curve size in bits */
    int curve;       /* DP_CURVE_* (EC keys) */
    int public_only; /* 1 when the handle holds no private part */
} dp_key_info;

typedef struct dp_cert_info {
    int version;        /* X.509 version: 1, 2 or 3 */
    int is_ca;          /* basicConstraints cA = TRUE */
    int max_pathlen;    /* basicConstraints pathLenConstraint, -1 if none */
    int not_before[6];  /* UTC year, month, day, hour, minute, second */
    int not_after[6];
} dp_cert_info;

/* Keys (dp_key.c). A key handle starts empty; parse and generate REPLACE its
 * content and leave it unchanged when they fail. */
dp_key *dp_key_new(void);
void dp_key_free(dp_key *key);
/* Parse PEM or DER (PKCS#1, PKCS#8, SEC1; private or SubjectPublicKeyInfo).
 * public_only=1 keeps only the public part (a private key input is accepted
 * and stripped). Encrypted keys: MBEDTLS_ERR_PK_PASSWORD_REQUIRED.
 * Curves other than P-256/384/521: MBEDTLS_ERR_PK_UNKNOWN_NAMED_CURVE. */
int dp_key_parse(dp_key *key, const unsigned char *data, size_t len, int public_only);
int dp_key_get_info(const dp_key *key, dp_key_info *info);
/* Write PEM (NUL not counted, not written) or DER; public_only=1 writes the
 * SubjectPublicKeyInfo. Returns the length; DP_ERR_BUFFER_TOO_SMALL if
 * buflen is too small, with *needed (if not NULL) set to the length. */
int dp_key_write(const dp_key *key, int format, int public_only,
                 unsigned char *buf, size_t buflen, size_t *needed);
/* RSA with exponent 65537, bits in DP_RSA_GEN_MIN_BITS..MAX_BITS, multiple of 8. */
int dp_key_generate_rsa(dp_key *key, unsigned int bits);
int dp_key_generate_ec(dp_key *key, int curve);
/* 0 if the private key belongs to the public key of certificate index
 * (0 = leaf), DP_ERR_KEY_MISMATCH if not. */
int dp_key_matches_cert(const dp_key *key, const dp_cert *cert, size_t index);

/* Certificates (dp_cert.c). */
dp_cert *dp_cert_new(void);
void dp_cert_free(dp_cert *cert);
/* Parse one DER certificate or PEM holding one or more; REPLACES the
 * content (Godot appends). With allow_partial=0 any certificate that fails
 * fails the call; with allow_partial=1 unparsable PEM blocks are skipped and
 * counted in *skipped. Returns the number of certificates now held (>= 1). */
int dp_cert_parse(dp_cert *cert, const unsigned char *data, size_t len,
                  int allow_partial, size_t *skipped);
int dp_cert_count(const dp_cert *cert);
/* DER of certificate index; same size convention as dp_key_write. */
int dp_cert_der(const dp_cert *cert, size_t index, unsigned char *buf, size_t buflen,
                size_t *needed);
/* Distinguished name as text ("CN=x, O=y"); which: 0 subject, 1 issuer.
 * Returns the length (NUL written, not counted) or DP_ERR_BUFFER_TOO_SMALL. */
int dp_cert_name(const dp_cert *cert, size_t index, int which, char *buf, size_t buflen);
int dp_cert_get_info(const dp_cert *cert, size_t index, dp_cert_info *info);
/* Serial number bytes (big-endian, as encoded). Returns the length. */
int dp_cert_serial(const dp_cert *cert, size_t index, unsigned char *buf, size_t buflen,
                   size_t *needed);
/* subjectAltName entries as a list of records: 1 byte DP_SAN_* type, 2 bytes
 * big-endian length, the value. Other GeneralName kinds are skipped. */
int dp_cert_san_list(const dp_cert *cert, size_t index, unsigned char *buf, size_t buflen,
                     size_t *needed);
/* SHA-256 of the DER of certificate index into out[DP_SHA256_LEN]. */
int dp_cert_fingerprint_sha256(const dp_cert *cert, size_t index, unsigned char *out,
                               size_t outlen);
/* Replace out with the public key of certificate index. */
int dp_cert_public_key(const dp_cert *cert, size_t index, dp_key *out);
/* Replace cert with a new self-signed X.509 v3 certificate (SHA-256, 20-byte
 * random serial, basicConstraints CA:TRUE pathlen 0, subject = issuer = name,
 * dates "YYYYMMDDhhmmss" UTC). sans: records as in dp_cert_san_list (DNS
 * and IP only), may be NULL when sans_len is 0. */
int dp_cert_generate_self_signed(dp_cert *cert, const dp_key *key, const char *name,
                                 const char *not_before, const char *not_after,
                                 const unsigned char *sans, size_t sans_len);

/* ---- Crypto family: hashes, HMAC, AES, signatures, RSA encryption --------- */
/* Godot's HashingContext/HMACContext (dp_digest.c), AESContext (dp_cipher.c)
 * and Crypto.sign/verify/encrypt/decrypt (dp_keyops.c). The numbers are
 * Godot 4's enum values. */

enum {
    DP_HASH_MD5 = 0,    /* HashingContext.HASH_MD5: 16-byte digest */
    DP_HASH_SHA1 = 1,   /* HASH_SHA1: 20 bytes */
    DP_HASH_SHA256 = 2, /* HASH_SHA256: 32 bytes */
    DP_HASH_MAX_SIZE = 32
};

enum {
    DP_AES_ECB_ENCRYPT = 0, /* AESContext.MODE_ECB_ENCRYPT */
    DP_AES_ECB_DECRYPT = 1,
    DP_AES_CBC_ENCRYPT = 2,
    DP_AES_CBC_DECRYPT = 3,
    DP_AES_MODE_MAX = 4,    /* not a mode */
    DP_AES_BLOCK = 16
};

enum {
    DP_SIGNATURE_MAX = 1024 /* RSA-8192 signature / ciphertext, and any ECDSA DER */
};

typedef struct dp_digest dp_digest; /* one hash or HMAC computation */
typedef struct dp_aes dp_aes;       /* one AES-ECB/CBC stream */

/* Hashes and HMACs (dp_digest.c). A digest is idle until started; finish
 * returns it to idle. */
dp_digest *dp_digest_new(void);
void dp_digest_free(dp_digest *digest);
/* Digest size in bytes of a DP_HASH_*, DP_ERR_UNSUPPORTED otherwise. */
int dp_digest_size(int hash_type);
/* Start a hash (hmac = 0; key ignored) or an HMAC keyed with key[key_len]
 * (hmac = 1; key_len >= 1). DP_ERR_BAD_STATE if already started. */
int dp_digest_start(dp_digest *digest, int hash_type, int hmac, const unsigned char *key,
                    size_t key_len);
int dp_digest_update(dp_digest *digest, const unsigned char *data, size_t len);
/* Write the digest into out (outlen >= its size), return its size and go
 * back to idle. DP_ERR_BAD_STATE if not started. */
int dp_digest_finish(dp_digest *digest, unsigned char *out, size_t outlen);
/* 1 while started, 0 when idle. */
int dp_digest_active(const dp_digest *digest);

/* AES without padding (dp_cipher.c). */
dp_aes *dp_aes_new(void);
void dp_aes_free(dp_aes *aes);
/* mode: DP_AES_*; key_len 16 or 32; CBC modes need iv_len 16, ECB ignores
 * the IV. DP_ERR_BAD_STATE if already started. */
int dp_aes_start(dp_aes *aes, int mode, const unsigned char *key, size_t key_len,
                 const unsigned char *iv, size_t iv_len);
/* len a multiple of 16 (0 allowed), out holds len bytes; CBC chains across
 * calls. Returns 0. */
int dp_aes_update(dp_aes *aes, const unsigned char *in, size_t len, unsigned char *out,
                  size_t outlen);
/* The CBC chaining value (the IV the next update starts from) into
 * out[16]; DP_ERR_BAD_STATE unless started in a CBC mode. */
int dp_aes_iv_state(const dp_aes *aes, unsigned char *out, size_t outlen);
/* Wipe the key schedule and IV; back to idle (also when idle). */
void dp_aes_finish(dp_aes *aes);
/* The mode while started, -1 when idle. */
int dp_aes_mode(const dp_aes *aes);

/* Signatures and RSA encryption with a key (dp_keyops.c). Empty key:
 * DP_ERR_BAD_STATE; public-only key where a private one is needed:
 * DP_ERR_INVALID_ARGUMENT. */
/* RSA: PKCS#1 v1.5 signature of a precomputed hash; EC: ECDSA (DER).
 * hash_len must be the size of hash_type. Returns the signature length. */
int dp_key_sign(dp_key *key, int hash_type, const unsigned char *hash, size_t hash_len,
                unsigned char *sig, size_t sig_cap);
/* 1 if sig is a valid signature of hash by key, 0 if not. */
int dp_key_verify(dp_key *key, int hash_type, const unsigned char *hash, size_t hash_len,
                  const unsigned char *sig, size_t sig_len);
/* RSA PKCS#1 v1.5 encryption (type 2 padding) of at most modulus - 11
 * bytes; EC keys: DP_ERR_UNSUPPORTED. Returns the ciphertext length. */
int dp_key_encrypt(dp_key *key, const unsigned char *in, size_t in_len, unsigned char *out,
                   size_t out_cap);
/* RSA PKCS#1 v1.5 decryption; every bad ciphertext (length, padding) gives
 * MBEDTLS_ERR_RSA_INVALID_PADDING. Returns the plaintext length. */
int dp_key_decrypt(dp_key *key, const unsigned char *in, size_t in_len, unsigned char *out,
                   size_t out_cap);

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
 * dp_endpoint.c. Threads: every call holds the endpoint's mutex (a server and
 * its peers are used from different threads); waits release it, and
 * dp_endpoint_close wakes them (they return DP_ERR_CLOSED) and returns only
 * once none is left inside, so the caller may then close the socket. */

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
    /* Endpoints with a cookie gate (dp_endpoint_set_gate) only: */
    uint64_t hvr_sent;          /* HelloVerifyRequests handed to the socket statelessly */
    uint64_t gate_dropped;      /* unknown senders' datagrams the gate dropped */
    uint64_t drop_pending_per_address; /* verified sender, but its IP holds enough pending slots */
    uint64_t pending_evicted;   /* oldest pending slot dropped for a verified newcomer */
    uint64_t successors;        /* new-session slots opened for a live peer's address */
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
/* Free the endpoint and every slot. Does not close the socket. NULL is fine.
 * Only when no call on it can be in flight (the binding: garbage collection). */
void dp_endpoint_free(dp_endpoint *ep);
/* Stop using the socket and release every slot (their handles go stale);
 * later calls return DP_ERR_CLOSED. Waits blocked on another thread are woken
 * (they return DP_ERR_CLOSED) and this returns once they have left: from
 * then on nothing touches the socket. Idempotent. */
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
 * drains the socket when it wakes. Returns 1 ready, 0 timed out; a signal
 * returns the EINTR code (retry with the time left); DP_ERR_CLOSED when the
 * endpoint (or the slot) was closed, also by another thread during the wait. On Linux a CLIENT wait
 * (< 0 or >= 40 ms) blocks in recvmmsg itself: the first such wait clears
 * O_NONBLOCK on the socket, whose other calls all pass MSG_DONTWAIT. */
int dp_endpoint_wait(dp_endpoint *ep, uint64_t handle, int timeout_ms);
/* SERVER: pending slots waiting for dp_endpoint_take. */
int dp_endpoint_pending_count(const dp_endpoint *ep);
/* SERVER: take the oldest pending slot (FIFO); it stays routed to its
 * handle until dp_endpoint_slot_close. Returns 1 and sets *handle, or 0. */
int dp_endpoint_take(dp_endpoint *ep, uint64_t *handle);
/* SERVER: free a slot (its queue is discarded; the address becomes unknown
 * again). DP_ERR_CLOSED if the handle is stale. */
int dp_endpoint_slot_close(dp_endpoint *ep, uint64_t handle);
/* The address a slot is routed by. Handle 0 of a CLIENT endpoint: the
 * address it is connected to (DP_ERR_BAD_STATE if it is not connected). */
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

/* The engine is sans-I/O: the caller feeds whole datagrams in, takes whole
 * datagrams out and passes the current time (milliseconds, any monotonic
 * origin) to every call that may run timers. */

typedef struct dp_config dp_config;           /* immutable once finished; refcounted */
typedef struct dp_conn dp_conn;               /* one DTLS association */
typedef struct dp_cookie_gate dp_cookie_gate; /* stateless HelloVerifyRequest gate */
typedef struct dp_ticket_keys dp_ticket_keys; /* session ticket keys (dp_ticket.c) */

enum { DP_ROLE_CLIENT = 0, DP_ROLE_SERVER = 1 };

/* Client certificate checks: chain and name (TLSOptions.client), chain
 * only (client_unsafe with a chain), nothing (client_unsafe without). */
enum { DP_VERIFY_FULL = 0, DP_VERIFY_CHAIN_ONLY = 1, DP_VERIFY_NONE = 2 };

enum {
    DP_STATUS_DISCONNECTED = 0,
    DP_STATUS_HANDSHAKING = 1,
    DP_STATUS_CONNECTED = 2,
    DP_STATUS_ERROR = 3,
    DP_STATUS_ERROR_HOSTNAME_MISMATCH = 4
};

/* TLS group identifiers (IANA) accepted by dp_config_set_groups. */
enum {
    DP_GROUP_SECP256R1 = 23,
    DP_GROUP_SECP384R1 = 24,
    DP_GROUP_SECP521R1 = 25,
    DP_GROUP_X25519 = 29
};

/* Verdicts of dp_cookie_gate_check. */
enum { DP_GATE_DROP = 0, DP_GATE_REPLY = 1, DP_GATE_ADMIT = 2 };

enum {
    DP_COOKIE_LEN = 17,        /* 1 byte time-slot tag + 16 bytes HMAC-SHA-256 */
    DP_HVR_LEN = 45,           /* record 13 + handshake 12 + version 2 + len 1 + cookie */
    DP_TRANSPORT_ID_MAX = 64,  /* longest peer address blob a server accepts */
    DP_MAX_RECORD_PLAINTEXT = 16384, /* largest DTLS record plaintext (RFC 6347) */
    DP_CID_MAX = 32,           /* longest Connection ID (MBEDTLS_SSL_CID_IN/OUT_LEN_MAX) */
    DP_CID_DEFAULT_LEN = 6,    /* a server's own CID by default */
    DP_CID_OFFSET = 11,        /* where the CID starts in a CID record */
    DP_CT_CID = 25             /* content type of a CID record (RFC 9146 tls12_cid) */
};

/* Build a configuration: new, then setters, then finish. Setters after
 * finish return DP_ERR_BAD_STATE. dp_config_free drops the caller's
 * reference; connections keep their own. */
int dp_config_new(int role, dp_config **out);
void dp_config_free(dp_config *cfg);
/* Own certificate chain (leaf first) and its private key; both are copied. */
int dp_config_set_own_cert(dp_config *cfg, const dp_cert *chain, const dp_key *key);
/* Trust anchors for verifying the peer; copied. */
int dp_config_set_ca_chain(dp_config *cfg, const dp_cert *chain);
/* Client: DP_VERIFY_* and an optional name that replaces the hostname given
 * to dp_conn_new for SNI and verification (NULL or "" = none). */
int dp_config_set_verify(dp_config *cfg, int mode, const char *common_name_override);
/* Client: the one identity + key. Server: add an identity -> key entry
 * (called once per identity). Keys are 1..64 bytes. */
int dp_config_set_psk(dp_config *cfg, const unsigned char *identity, size_t identity_len,
                      const unsigned char *key, size_t key_len);
/* Ciphersuite names (IANA-style Mbed TLS names, separated by ',' or newline),
 * most preferred first. Unknown or unsupported names: DP_ERR_UNSUPPORTED. */
int dp_config_set_ciphersuites(dp_config *cfg, const char *names);
/* Key exchange groups (DP_GROUP_*), most preferred first. */
int dp_config_set_groups(dp_config *cfg, const uint16_t *groups, size_t count);
/* Retransmission timeout doubling from min_ms to max_ms (Mbed TLS gives up
 * after max_ms), and a hard deadline for the whole handshake (0 = none). */
int dp_config_set_handshake_timeout(dp_config *cfg, uint32_t min_ms, uint32_t max_ms,
                                    uint32_t deadline_ms);
/* A connected peer that sends no valid record for idle_ms is dropped
 * (status ERROR, reason "idle timeout"). 0 = never. */
int dp_config_set_idle_timeout(dp_config *cfg, uint32_t idle_ms);
/* Park an established connection after park_after_ms without authentic
 * traffic (records in or out): its Mbed TLS context is serialized into a
 * ~200-byte blob and freed (~1 KB per parked connection instead of ~36 KB).
 * Transparent: the next datagram that may hold a record, write or close
 * restores it; timers, idle timeout, anti-replay window, sequence numbers
 * and CID carry over and the peer sees nothing. 0 = never. Default: 5000 ms
 * for servers, 0 for clients. */
int dp_config_set_park_after(dp_config *cfg, uint32_t park_after_ms);
/* Largest datagram the connection sends (0 = no limit; 1200 is safe). */
int dp_config_set_mtu(dp_config *cfg, uint16_t mtu);
/* Largest application record (plaintext bytes) the connection accepts from
 * its peer: bigger ones are decrypted (they are authentic and keep the
 * connection alive), then dropped and counted in dropped_over_limit; the
 * connection goes on. 1..DP_MAX_RECORD_PLAINTEXT, 0 = no limit (16 KiB, the
 * DTLS maximum). Default 0; the Python layer's DTLSSettings sets 1392. */
int dp_config_set_max_record_in(dp_config *cfg, uint32_t max_bytes);
/* Records failing authentication tolerated before the connection fails
 * (0 = unlimited; they are dropped and counted either way). */
int dp_config_set_badmac_limit(dp_config *cfg, unsigned limit);
/* RFC 9146 Connection ID. enabled: servers answer a client that offers a
 * CID, clients offer one (a peer that does not ask gets plain records:
 * nothing changes for it). own_len (0..DP_CID_MAX): the length of the CID
 * this side chooses, i.e. what the peer writes into every record it sends
 * us; a client may choose 0 (it sends with the server's CID but receives
 * plain records). The CID starts with prefix (prefix_len <= own_len bytes,
 * e.g. a worker id a load balancer reads at a fixed offset: byte 11 of the
 * datagram is the CID's first byte), the rest is random per connection.
 * Defaults: servers enabled with DP_CID_DEFAULT_LEN random bytes, clients
 * disabled. */
int dp_config_set_cid(dp_config *cfg, int enabled, uint32_t own_len, const uint8_t *prefix,
                      size_t prefix_len);
/* Linux: attach to fd (bound with SO_REUSEPORT) the classic-BPF program
 * that sends a datagram starting with a CID record (cid_len-byte CIDs) to
 * the socket whose index in the reuseport group is the CID's first byte
 * (a worker id); everything else keeps the kernel's hash (dp_steer.c).
 * DP_ERR_UNSUPPORTED elsewhere. */
int dp_socket_steer_by_cid(int64_t fd, uint32_t cid_len);
/* Server: the gate whose keys also check cookies on live connections. */
int dp_config_set_cookie_gate(dp_config *cfg, dp_cookie_gate *gate);
/* Server: who must present a certificate (TLSOptions.server client_auth;
 * not in Godot). OPTIONAL/REQUIRED need a CA chain (dp_config_set_ca_chain)
 * to verify it against; a client certificate is then requested. */
enum { DP_CLIENT_AUTH_NONE = 0, DP_CLIENT_AUTH_OPTIONAL = 1, DP_CLIENT_AUTH_REQUIRED = 2 };
int dp_config_set_client_auth(dp_config *cfg, int mode);
/* Server: issue and accept RFC 5077 session tickets sealed with these keys
 * (referenced; NULL = no tickets, full handshakes only). */
int dp_config_set_ticket_keys(dp_config *cfg, dp_ticket_keys *keys);
int dp_config_finish(dp_config *cfg);

typedef struct dp_conn_stats {
    uint64_t datagrams_in;        /* fed to the connection */
    uint64_t datagrams_out;       /* produced by the connection */
    uint64_t records_in;          /* application records received */
    uint64_t records_out;         /* application records sent */
    uint64_t dropped_too_long;    /* datagram larger than the record buffer */
    uint64_t dropped_out_full;    /* outgoing queue full: datagram lost */
    uint64_t dropped_in_full;     /* received plaintext queue full: record lost */
    uint64_t dropped_closed;      /* fed after the connection ended */
    uint64_t discarded;           /* connected, datagram had no usable record
                                     (replay, duplicate, garbage, bad MAC) */
    uint64_t bad_mac;             /* records that failed authentication */
    uint64_t retransmit_updates;  /* timer expiries that ran the handshake */
    uint64_t parks;               /* times the idle connection was parked */
    uint64_t unparks;             /* times it was restored */
    uint64_t park_refused;        /* park attempts Mbed TLS refused (retried later) */
    uint64_t dropped_over_limit;  /* authentic records above max_record_in: dropped */
    uint64_t icmp_ignored;        /* ICMP errors (port unreachable...) for this peer after
                                     the handshake: counted only, never fatal */
} dp_conn_stats;

/* hostname: client only (SNI + name check), NULL = none. transport_id:
 * server only, the peer's address bytes the cookies are bound to. */
int dp_conn_new(dp_config *cfg, const char *hostname, const unsigned char *transport_id,
                size_t transport_id_len, int64_t now_ms, dp_conn **out);
void dp_conn_free(dp_conn *conn);
/* Process one received datagram; returns the status afterwards. */
int dp_conn_feed(dp_conn *conn, const unsigned char *datagram, size_t len, int64_t now_ms);
/* Run timers (retransmission, deadlines, idle) and start a client's
 * handshake; returns the status afterwards. */
int dp_conn_update(dp_conn *conn, int64_t now_ms);
/* The socket reported an ICMP error (errno err: port unreachable...) for
 * this connection's peer. A client still handshaking fails at once (nobody
 * listens there); afterwards it is unauthenticated news: counted
 * (stats.icmp_ignored) and shown in the reason, never fatal (the idle
 * timeout decides). Servers only count. Returns the status afterwards. */
int dp_conn_note_unreachable(dp_conn *conn, int err, int64_t now_ms);
/* Absolute time (ms) at which dp_conn_update must be called next, or -1. */
int64_t dp_conn_next_timeout(const dp_conn *conn);
int dp_conn_outgoing_count(const dp_conn *conn);
/* Copy the oldest outgoing datagram into buf and remove it; returns its
 * length, DP_ERR_WOULD_BLOCK if none, DP_ERR_BUFFER_TOO_SMALL (kept). */
int dp_conn_pop_outgoing(dp_conn *conn, unsigned char *buf, size_t cap);
int dp_conn_pending_count(const dp_conn *conn);
/* One received application record; same returns as dp_conn_pop_outgoing. */
int dp_conn_read(dp_conn *conn, unsigned char *buf, size_t cap);
/* What one received record costs against a connection's receive queue
 * limit besides its payload (the queue node's header). */
#define DP_APP_RECORD_OVERHEAD 16
/* Bytes of received records the application took out of the connection but
 * has not read yet (payloads + DP_APP_RECORD_OVERHEAD each): the receive
 * queue limit (64 KiB) counts them too, so records moved to the binding stay
 * bounded; beyond it new records are dropped and counted (dropped_in_full). */
void dp_conn_set_app_held(dp_conn *c, size_t bytes);
/* Send one record; DP_ERR_TOO_LARGE above dp_conn_max_payload,
 * DP_ERR_BAD_STATE unless connected. Returns len. */
int dp_conn_write(dp_conn *conn, const unsigned char *data, size_t len, int64_t now_ms);
int dp_conn_max_payload(const dp_conn *conn);
/* Send close_notify when connected; status becomes DISCONNECTED. */
int dp_conn_close(dp_conn *conn, int64_t now_ms);
int dp_conn_status(const dp_conn *conn);
/* Last Mbed TLS / DP error code behind an ERROR status (0 if none). */
int dp_conn_last_error(const dp_conn *conn);
/* X.509 verification flags of the peer certificate (MBEDTLS_X509_BADCERT_*). */
uint32_t dp_conn_verify_flags(const dp_conn *conn);
/* Readable reason for the last status change; returns the length. */
int dp_conn_reason(const dp_conn *conn, char *buf, size_t cap);
/* Ciphersuite of the last completed handshake ("" before one; kept after the
 * session ended); returns the length. */
int dp_conn_ciphersuite(const dp_conn *conn, char *buf, size_t cap);
/* 1 while parked (see dp_config_set_park_after), else 0. */
int dp_conn_parked(const dp_conn *conn);
/* 1 unless a server connection still waits for the client's key exchange
 * after its first flight (the client proved no more than a cookie), or is in
 * a resumed handshake that has not completed (a cookie and a replayable
 * ticket): what half-open handshake eviction looks at. */
int dp_conn_handshake_progressed(const dp_conn *conn);
void dp_conn_get_stats(const dp_conn *conn, dp_conn_stats *out);
/* RFC 9146 Connection ID of an established session: 1 if negotiated, 0 if
 * not (then the lengths are 0). own: the CID we chose (what the peer writes
 * into its records; may be empty for a client), peer: the peer's. Buffers
 * hold DP_CID_MAX bytes; either may be NULL. Kept while parked and after
 * the session ended. */
int dp_conn_cid(const dp_conn *conn, uint8_t *own, size_t *own_len, uint8_t *peer,
                size_t *peer_len);
/* The newest authenticated record so far: (epoch << 48) | sequence number
 * (Mbed TLS's anti-replay window top), 0 before any. It grows only when a
 * record that is authentic and newer than every earlier one arrives, which
 * is the test RFC 9146 section 6 asks for before a peer's address moves:
 * a replayed record (even from before the newest) never moves it. */
uint64_t dp_conn_rx_newest(const dp_conn *conn);

/* ---- Resumption and peer certificates (dp_conn.c) ---- */
/* Client, before the first dp_conn_update: offer a session saved by
 * dp_conn_get_session (ours: magic + format version + Mbed TLS's session
 * serialization, which checks its own version and build options).
 * DP_ERR_INVALID_ARGUMENT: not a dtlspeer session blob or another format
 * version; Mbed TLS's error (MBEDTLS_ERR_SSL_VERSION_MISMATCH,
 * MBEDTLS_ERR_SSL_BAD_INPUT_DATA) when its part does not load;
 * MBEDTLS_ERR_X509_CERT_VERIFY_FAILED when the session's server was
 * authenticated less strictly than this client's verify mode asks (saved by
 * an unsafe client, or a failed verification): resumption checks nothing;
 * DP_ERR_BAD_STATE once the handshake started or on a server. */
int dp_conn_set_session(dp_conn *conn, const unsigned char *blob, size_t len);
/* Client, once connected: the session to resume later (it holds the
 * master secret: keep it as secret as a key). Returns the length written;
 * with cap 0 (buf may be NULL), the length needed. DP_ERR_BAD_STATE if
 * there is none (server, not connected yet, handshake failed). */
int dp_conn_get_session(const dp_conn *conn, unsigned char *buf, size_t cap);
/* 1 if the last handshake resumed a session (abbreviated), else 0. */
int dp_conn_resumed(const dp_conn *conn);

enum { DP_FINGERPRINT_LEN = 32, DP_PEER_SUBJECT_MAX = 256, DP_PEER_SAN_MAX = 512 };
/* Server with client_auth, once connected: the client's verified leaf
 * certificate. Returns a bitmask: 1 = subject and SAN filled (full
 * handshake), 2 = SHA-256 fingerprint of the DER filled (also after a
 * resumed handshake, from the session); 0 = no verified certificate. SAN
 * entries are "DNS:name", "IP:addr", "URI:uri", "email:addr", joined by
 * ", ". Buffers: subject DP_PEER_SUBJECT_MAX, san DP_PEER_SAN_MAX,
 * fingerprint DP_FINGERPRINT_LEN bytes. */
int dp_conn_peer_certificate(const dp_conn *conn, char *subject, size_t subject_cap, char *san,
                             size_t san_cap, unsigned char *fingerprint);

/* ---- Session ticket keys (dp_ticket.c) ---- */
typedef struct dp_ticket_stats {
    uint64_t issued;    /* tickets sealed */
    uint64_t accepted;  /* tickets opened (the handshake resumes) */
    uint64_t rejected;  /* tickets that did not open: forged, foreign, expired */
    uint64_t rotations; /* keys installed */
} dp_ticket_stats;
enum {
    DP_TICKET_SECRET_MIN = 16,
    DP_TICKET_SECRET_MAX = 64,
    DP_TICKET_LIFETIME_MIN = 60,      /* seconds */
    DP_TICKET_LIFETIME_MAX = 604800   /* 7 days (RFC 5077 lifetime hint bound) */
};
/* secret NULL: a random 32-byte one. Keys of slot n = unix time /
 * lifetime_s are derived from the secret, so servers sharing it (and a
 * clock) open each other's tickets; a ticket is accepted for lifetime_s. */
int dp_ticket_keys_new(const unsigned char *secret, size_t secret_len, uint32_t lifetime_s,
                       dp_ticket_keys **out);
void dp_ticket_keys_free(dp_ticket_keys *keys);
/* Copy the secret (what another process needs); returns its length. */
int dp_ticket_keys_export(dp_ticket_keys *keys, unsigned char *buf, size_t cap);
/* Tests: judge slots at unix_s instead of the wall clock (0 = wall clock). */
int dp_ticket_keys_set_time(dp_ticket_keys *keys, int64_t unix_s);
void dp_ticket_keys_get_stats(dp_ticket_keys *keys, dp_ticket_stats *out);

typedef struct dp_cookie_stats {
    uint64_t hellos_seen;        /* well-formed ClientHellos examined */
    uint64_t cookies_sent;       /* HelloVerifyRequests produced */
    uint64_t cookies_rejected;   /* ClientHellos carrying a wrong or expired cookie */
    uint64_t admitted;           /* ClientHellos with a valid cookie */
    uint64_t dropped_malformed;  /* not a DTLS handshake record / bad lengths */
    uint64_t dropped_not_hello;  /* a valid record that is not an initial ClientHello */
    uint64_t dropped_too_small;  /* a reply would be larger than the hello */
} dp_cookie_stats;

/* secret NULL: a random one (cookies only valid in this process). Several
 * gates given the same secret accept each other's cookies as long as their
 * clocks agree (use wall-clock milliseconds then). A cookie is valid in the
 * slot it was made in and the next one: slot_ms .. 2 * slot_ms. */
int dp_cookie_gate_new(const unsigned char *secret, size_t secret_len, uint32_t slot_ms,
                       dp_cookie_gate **out);
void dp_cookie_gate_free(dp_cookie_gate *gate);
/* Judge a datagram from an address with no connection. DP_GATE_REPLY: send
 * the reply (*reply_len bytes, cap >= DP_HVR_LEN). DP_GATE_ADMIT: create a
 * server dp_conn for this transport_id and feed it this datagram. */
int dp_cookie_gate_check(dp_cookie_gate *gate, const unsigned char *transport_id,
                         size_t transport_id_len, const unsigned char *datagram, size_t len,
                         int64_t now_ms, unsigned char *reply, size_t cap, size_t *reply_len);
void dp_cookie_gate_get_stats(dp_cookie_gate *gate, dp_cookie_stats *out);

/* ---- DTLS link (dp_link.c) ------------------------------------------------ */

/* Joins a UDP endpoint slot to a dp_conn so one call per poll moves every
 * queued datagram into the connection, runs its timers and sends its output.
 * handle: a SERVER slot, or 0 for a CLIENT endpoint (whose socket is read
 * first). gate (SERVER slots; NULL for clients): marks the slot established
 * once the connection is CONNECTED, so the endpoint's gate sends new
 * handshakes from its address to a successor slot (RFC 6347 4.2.8, see
 * dp_endpoint_set_gate); a successor that connected takes the address over,
 * and the old slot's next pump reports restarted = 1 (the session is over,
 * nothing is sent). */

typedef struct dp_link_result {
    int status;              /* connection status afterwards (DP_STATUS_*) */
    uint32_t fed;            /* datagrams fed to the connection */
    uint32_t sent;           /* datagrams sent */
    uint32_t send_dropped;   /* outgoing datagrams the socket did not take */
    int send_error;          /* code of the last failed send, 0 if none */
    uint32_t hvr_sent;       /* HelloVerifyRequests sent for the gate */
    uint32_t gate_dropped;   /* datagrams the gate dropped (no connection yet) */
    uint32_t restarted;      /* 1: the client completed a new session (see above) */
    uint64_t remote_errors;  /* endpoint total of ICMP-induced recv errors */
    uint32_t address_changed; /* 1: a CID record moved this server peer's address (RFC 9146) */
    uint32_t notable;        /* 0: no drop, send error, HelloVerifyRequest, gate drop,
                                restart or address change (the binding then only compares
                                the status);
                                dp_link_send also sets it unless the record left and
                                the peer is still CONNECTED */
    uint32_t records_left;   /* dp_link_poll: records still queued in the connection */
} dp_link_result;

/* One PacketPeerDTLS's fixed arguments, set once when its session starts:
 * the per-frame calls (dp_link_poll, dp_link_send) then take one pointer
 * instead of seven (argument conversion was a fifth of their cost). */
typedef struct dp_link_peer {
    dp_endpoint *ep;
    uint64_t handle;         /* its slot of a SERVER endpoint; 0: its own socket */
    dp_conn *conn;
    dp_cookie_gate *gate;    /* server peers: the DTLSServer's gate; NULL for clients */
    int64_t now_ms;          /* DP_NOW, or an injected clock */
    dp_link_result *res;     /* where each call reports */
    int seen_status;         /* the status the binding shows; another one is notable until
                                the binding has applied it and written it here */
    uint32_t held_bytes;     /* received records the binding holds, DP_APP_RECORD_OVERHEAD
                                each plus their sizes: they count against the connection's
                                receive queue limit (dp_conn_set_app_held) */
} dp_link_peer;

/* Godot's poll, then its reads, in one call: feed every queued datagram,
 * run timers due at now_ms, send the output, then move the connection's
 * received records, oldest first, into out (back to back; their sizes in
 * lens) while they fit in cap and max_records. Returns the number of records
 * copied; res->records_left counts those that did not fit, still readable
 * with dp_conn_read. res->notable is also set when the status differs from
 * p->seen_status (what the binding shows), and when records are left. */
int dp_link_poll(dp_link_peer *p, unsigned char *out, size_t cap, uint32_t *lens,
                 uint32_t max_records);
/* SERVER accept: judge the slot's queued datagrams with the gate (send a
 * HelloVerifyRequest for each cookieless hello, drop garbage); the first
 * with a valid cookie creates a server dp_conn (*out) that is fed it and
 * every later datagram, then its output is sent. Returns 1 with *out set,
 * 0 when no datagram was admitted (no TLS state was created). Handle 0 of
 * a connected CLIENT endpoint (Godot's DTLSServer over any connected
 * PacketPeerUDP) reads the socket first and serves its one peer; an
 * unconnected one is DP_ERR_BAD_STATE. */
int dp_link_accept(dp_endpoint *ep, uint64_t handle, dp_cookie_gate *gate, dp_config *cfg,
                   int64_t now_ms, dp_conn **out, dp_link_result *res);
/* dp_conn_write (one record) then send the output. Returns 0 when the
 * record left and the connection is still CONNECTED, 1 when res must be
 * looked at (res->notable: a drop, a send error, another status), or the
 * negative code of dp_conn_write (DP_ERR_TOO_LARGE, DP_ERR_BAD_STATE...). */
int dp_link_send(dp_link_peer *p, const uint8_t *data, size_t len);
/* Send every datagram the connection has queued (after update/close). */
int dp_link_flush(dp_endpoint *ep, uint64_t handle, dp_conn *conn, dp_link_result *res);
/* dp_conn_close (close_notify when connected) then send it, under the
 * endpoint's lock: safe while another thread pumps the same connection. */
int dp_link_close(dp_endpoint *ep, uint64_t handle, dp_conn *conn, int64_t now_ms,
                  dp_link_result *res);
/* SERVER endpoint a DTLSServer accepts from: from now on every datagram of
 * an unknown sender is judged by the gate before a pending slot exists (a
 * cookieless ClientHello is answered statelessly, garbage dropped, only a
 * valid cookie makes a pending slot; at most 4 per IP address, the oldest
 * pending slot evicted for a newcomer when the list is full), and a new
 * handshake from an established peer's address becomes a successor slot
 * (see route_known in dp_endpoint.c). clock: DP_NOW or DP_NOW_WALL, the
 * gate's clock. gate NULL: back to plain UDP. The endpoint holds a
 * reference to the gate. */
int dp_endpoint_set_gate(dp_endpoint *ep, dp_cookie_gate *gate, int64_t clock);
/* SERVER: route a datagram as if it had just arrived from src (a new
 * pending slot when src is unknown). Returns 1 if it was queued, else 0. */
int dp_endpoint_inject(dp_endpoint *ep, const dp_addr *src, const uint8_t *data, size_t len,
                       int64_t now_ms);

/* ---- DTLS host (dp_host.c) ------------------------------------------------ */

/* The batch path (ENet-style): one host owns one UDP endpoint (SERVER mode
 * routing: address -> slot handle) and every DTLS connection on it, as a
 * server (config + cookie gate: unknown senders pass the stateless gate, a
 * valid cookie creates a dp_conn) and/or a client (dp_host_connect). One
 * dp_host_service call waits for readability, drains the socket (recvmmsg),
 * feeds the connections, runs the due timers (a min-heap keyed by
 * dp_conn_next_timeout: idle peers cost nothing per call), and fills an
 * event array plus ONE payload buffer; what does not fit stays queued for
 * the next call. Sends are encrypted into per-peer queues and leave in
 * sendmmsg batches at the end of dp_host_service or dp_host_flush.
 *
 * Peer ids are the endpoint slot handles (generation-tagged, never 0): a
 * stale id gets DP_ERR_CLOSED. A peer the application knows (it saw its
 * CONNECT event, or created it with dp_host_connect) ends with exactly one
 * DISCONNECT event; a server-side peer that failed before connecting ends
 * with an ERROR event instead. DISCONNECT/ERROR carry the reason text as
 * their payload. An ended peer stays queryable (status, reason, stats)
 * until the start of the next dp_host_service; its address is released
 * then. Threads: every call holds the host's mutex (its endpoint's), so the
 * host and its peers may be used from different threads; dp_host_service
 * releases it only while it waits for the socket. */

typedef struct dp_host dp_host;

enum {
    DP_HOST_EVENT_CONNECT = 1,    /* handshake finished */
    DP_HOST_EVENT_RECEIVE = 2,    /* one record: payload[offset .. offset+length) */
    DP_HOST_EVENT_DISCONNECT = 3, /* a known peer ended; payload = reason text */
    DP_HOST_EVENT_ERROR = 4,      /* an accepted handshake failed; payload = reason text */
    DP_HOST_EVENT_ADDRESS_CHANGED = 5 /* a CID peer's address moved (RFC 9146); see peer info */
};

enum {
    DP_HOST_REASON_NONE = 0,
    DP_HOST_REASON_PEER_CLOSED = 1,       /* close_notify received */
    DP_HOST_REASON_LOCAL = 2,             /* dp_host_disconnect */
    DP_HOST_REASON_IDLE_TIMEOUT = 3,      /* connected, no record for idle_ms */
    DP_HOST_REASON_HANDSHAKE_TIMEOUT = 4, /* retransmissions or the deadline ran out */
    DP_HOST_REASON_HANDSHAKE_FAILED = 5,  /* TLS failure before connecting */
    DP_HOST_REASON_TLS_ERROR = 6,         /* TLS failure or fatal alert while connected */
    DP_HOST_REASON_RECONNECT = 7          /* the client began a new session (same address) */
};

enum {
    DP_HOST_MIN_PAYLOAD = 16384, /* payload_cap must hold the largest record */
    DP_HOST_DEFAULT_MAX_PEERS = 4096,
    DP_HOST_DEFAULT_MAX_HANDSHAKING = 1024,           /* also at most max_peers */
    DP_HOST_DEFAULT_MAX_HANDSHAKING_PER_ADDRESS = 16  /* per IP address, any port */
};

typedef struct dp_host_event {
    uint64_t peer;   /* peer id */
    uint32_t offset; /* payload bytes: payload_buf[offset .. offset + length) */
    uint32_t length;
    int32_t code;    /* DISCONNECT/ERROR: Mbed TLS / DP code behind it (0 if none) */
    uint8_t type;    /* DP_HOST_EVENT_* */
    uint8_t reason;  /* DP_HOST_REASON_* */
    uint8_t status;  /* DP_STATUS_* of the peer after the event */
    uint8_t reserved;
} dp_host_event;

typedef struct dp_host_stats {
    uint32_t peers;              /* entries: handshaking + connected + ended not yet released */
    uint32_t connected;          /* connected and not ended */
    uint32_t handshaking;
    uint32_t timers;             /* peers in the timer heap */
    uint64_t services;           /* dp_host_service calls */
    uint64_t datagrams_in;       /* datagrams the endpoint delivered to the host */
    uint64_t datagrams_out;      /* connections' datagrams the socket took (HelloVerifyRequests
                                    to unknown senders: hvr_sent) */
    uint64_t send_batches;       /* batches handed to sendmmsg */
    uint64_t send_dropped;       /* datagrams the socket refused (lost) */
    uint64_t events;             /* events returned */
    uint64_t records_in;         /* RECEIVE events */
    uint64_t records_out;        /* records queued by send/broadcast */
    uint64_t connects;           /* CONNECT events */
    uint64_t disconnects;        /* DISCONNECT events */
    uint64_t errors;             /* ERROR events */
    uint64_t timer_runs;         /* connection timers run (dp_conn_update) */
    uint64_t hvr_sent;           /* HelloVerifyRequests the gate handed to the socket */
    uint64_t gate_dropped;       /* unknown senders' datagrams the gate dropped */
    uint64_t admitted;           /* connections created for valid cookies */
    uint64_t dropped_not_accepting; /* unknown sender while the host accepts nobody */
    uint64_t dropped_peer_limit; /* valid cookie while max_peers were in use */
    uint64_t dropped_ended;      /* datagram for a peer that already ended */
    uint64_t send_to_ended;      /* dp_host_send to an ended or released peer (dropped) */
    uint64_t carried_over;       /* calls that left events for the next call (buffer full) */
    uint64_t dropped_over_limit; /* records above the receive limit, all peers (dp_conn_stats) */
    uint64_t dropped_handshake_per_address; /* valid cookie, but its IP had enough handshakes */
    uint64_t dropped_handshake_limit; /* valid cookie, max handshakes in progress, none stalled */
    uint64_t evicted_handshakes; /* stalled handshakes dropped for a newcomer */
    uint64_t successors;         /* new handshakes from a connected peer's address (4.2.8) */
    uint64_t successors_failed;  /* ... that failed or timed out (beside the old session) */
    uint64_t reconnects;         /* ... that completed: old peer ended (RECONNECT), new peer */
    uint64_t successors_orphaned; /* ... whose old peer ended first: now handshaking peers */
    uint64_t address_changes;    /* CID peers moved to a new address (ADDRESS_CHANGED) */
    uint64_t address_unmoved;    /* CID datagrams from another address with nothing newer
                                    and authentic in them (forged, replayed, reordered) */
    uint64_t address_refused;    /* authentic, but the new address had a peer of its own */
    uint64_t cid_collisions;     /* negotiated CIDs another peer held (routed by address) */
    int32_t last_send_error;     /* code of the last refused datagram, 0 if none */
    int32_t reserved;
} dp_host_stats;

typedef struct dp_host_peer_info {
    int status;           /* DP_STATUS_* */
    int last_error;       /* code behind an ERROR status */
    uint32_t verify_flags;
    int max_payload;      /* largest send payload; 0 unless connected */
    int outgoing;         /* 1: created by dp_host_connect */
    int ended;            /* 1: ended, waiting for release */
    int queued_out;       /* datagrams waiting for the next flush */
    int pending_in;       /* records received, not yet returned as events */
    dp_addr addr;
} dp_host_peer_info;

/* fd: a bound, non-blocking UDP socket; on success the host OWNS it and
 * closes it in dp_host_close, after its last datagram (the caller must give
 * it up, e.g. Python's socket.detach()). family 4 or 6; max_peers 0 =
 * DP_HOST_DEFAULT_MAX_PEERS. */
int dp_host_new(int64_t fd, int family, uint32_t max_peers, dp_host **out);
/* Bounds on admitted handshakes (server peers not yet connected, and new
 * handshakes from connected peers' addresses): in total and per IP address.
 * When the total (or max_peers) is reached, a newcomer with a valid cookie
 * evicts the oldest handshake whose client never sent its key exchange;
 * connected peers are never evicted. Defaults: min(max_peers,
 * DP_HOST_DEFAULT_MAX_HANDSHAKING), DP_HOST_DEFAULT_MAX_HANDSHAKING_PER_ADDRESS. */
int dp_host_set_handshake_limits(dp_host *h, uint32_t max_handshaking, uint32_t per_address);
/* dp_host_close, then free everything. NULL is fine. Only when no call on
 * the host can be in flight (the binding: garbage collection). */
void dp_host_free(dp_host *host);
/* Send close_notify to every connected peer, free every connection, close
 * the endpoint and the socket. No events. Idempotent. A dp_host_service
 * blocked on another thread is woken and returns DP_ERR_CLOSED; this
 * returns once it has left the socket. */
int dp_host_close(dp_host *host, int64_t now_ms);
/* Accept DTLS clients with cfg (server role) through gate; both are
 * referenced. cfg NULL: accept nobody from now on (live peers stay). */
int dp_host_set_server(dp_host *host, dp_config *cfg, dp_cookie_gate *gate);
/* Client role configuration for dp_host_connect (referenced). */
int dp_host_set_client(dp_host *host, dp_config *cfg);
/* Start a handshake with addr (ClientHello leaves at the next flush).
 * hostname: SNI + name check (NULL = none). DP_ERR_BAD_STATE when addr
 * already has a peer or no client config is set; DP_ERR_LIMIT at max_peers. */
int dp_host_connect(dp_host *host, const dp_addr *addr, const char *hostname, int64_t now_ms,
                    uint64_t *peer);
/* dp_host_connect offering a saved session (dp_conn_set_session's
 * errors for a blob that does not load; nothing is created then). */
int dp_host_connect_session(dp_host *host, const dp_addr *addr, const char *hostname,
                            const unsigned char *session, size_t session_len, int64_t now_ms,
                            uint64_t *peer);
/* A peer's dp_conn_get_session / dp_conn_resumed / dp_conn_peer_certificate,
 * also after it ended (until its entry is released by the next service). */
int dp_host_peer_session(const dp_host *host, uint64_t peer, unsigned char *buf, size_t cap);
int dp_host_peer_resumed(const dp_host *host, uint64_t peer);
int dp_host_peer_certificate(const dp_host *host, uint64_t peer, char *subject,
                             size_t subject_cap, char *san, size_t san_cap,
                             unsigned char *fingerprint);
/* Everything in one call (see above). timeout_ms: 0 = do not wait, < 0 =
 * wait until a datagram or a timer; only waits when no event is ready.
 * Fills events[0 .. *n_events). payload_cap >= DP_HOST_MIN_PAYLOAD. */
int dp_host_service(dp_host *host, int64_t now_ms, int timeout_ms, dp_host_event *events,
                    uint32_t max_events, uint8_t *payload_buf, size_t payload_cap,
                    uint32_t *n_events);
/* The binding's per-call arguments of dp_host_service that never change,
 * set once per host: each tick's call then converts three arguments instead
 * of eight (argument conversion was a sixth of the call's fixed cost). */
typedef struct dp_host_service_args {
    int64_t now_ms;
    dp_host_event *events;
    uint32_t max_events;
    uint8_t *payload_buf;
    size_t payload_cap;
    uint32_t n_events; /* out: events filled */
} dp_host_service_args;
/* dp_host_service with a's arguments; returns what it returns. */
int dp_host_service_args_run(dp_host *host, dp_host_service_args *a, int timeout_ms);
/* Encrypt one record for peer (queued; leaves at the next flush). Returns
 * len. DP_ERR_BAD_STATE while handshaking, DP_ERR_TOO_LARGE above its
 * max_payload, DP_ERR_CLOSED for a peer that ended or a stale id (the
 * record is dropped and counted: its DISCONNECT event may still be on its
 * way, and a reply to it is no error). */
int dp_host_send(dp_host *host, uint64_t peer, const uint8_t *data, size_t len, int64_t now_ms);
/* dp_host_send to every connected peer except the exclude[0 .. n_exclude)
 * ids. Nothing is queued (DP_ERR_TOO_LARGE) if len exceeds any target's
 * max_payload. Returns the number of peers it was queued for. */
int dp_host_broadcast(dp_host *host, const uint8_t *data, size_t len, const uint64_t *exclude,
                      size_t n_exclude, int64_t now_ms);
/* dp_host_send of count records in one call: record i goes to peers[i]
 * and is data[off, off + lengths[i]) where off is the sum of the lengths
 * before it; the lengths must add up to data_len. Checked first, nothing
 * queued on failure, *failed_at = the offending index: DP_ERR_BAD_STATE
 * (a peer still handshaking), DP_ERR_TOO_LARGE (above that peer's
 * max_payload), DP_ERR_INVALID_ARGUMENT (lengths do not match data_len;
 * *failed_at = count when they fall short). Ended or released peers are
 * skipped and counted in send_to_ended, as by dp_host_send. Returns the
 * number of records queued. */
int dp_host_send_many(dp_host *host, const uint64_t *peers, const uint8_t *data, size_t data_len,
                      const uint32_t *lengths, size_t count, int64_t now_ms, size_t *failed_at);
/* Send every queued datagram now (sendmmsg). Returns how many left. */
int dp_host_flush(dp_host *host);
/* Send close_notify (if connected) and end the peer now (reason LOCAL, its
 * unread records dropped); its DISCONNECT event comes from the next
 * dp_host_service. An already ended peer: no-op. */
int dp_host_disconnect(dp_host *host, uint64_t peer, int64_t now_ms);
/* Earliest timer deadline (absolute ms), -1 if none. */
int64_t dp_host_next_timeout(const dp_host *host);
int dp_host_peer_get_info(const dp_host *host, uint64_t peer, dp_host_peer_info *out);
/* Readable reason of the peer's last status change; returns the length. */
int dp_host_peer_reason(const dp_host *host, uint64_t peer, char *buf, size_t cap);
int dp_host_peer_ciphersuite(const dp_host *host, uint64_t peer, char *buf, size_t cap);
/* The peer's negotiated RFC 9146 CIDs (dp_conn_cid, kept once it ended,
 * until it is released): 1 negotiated, 0 not, DP_ERR_CLOSED for an unknown
 * peer. */
int dp_host_peer_cid(const dp_host *host, uint64_t peer, uint8_t *own, size_t *own_len,
                     uint8_t *peer_cid, size_t *peer_len);
int dp_host_peer_stats(const dp_host *host, uint64_t peer, dp_conn_stats *out);
int dp_host_get_stats(const dp_host *host, dp_host_stats *out);
/* Counters of the host's UDP endpoint (all slots). */
int dp_host_udp_stats(const dp_host *host, dp_udp_stats *out);

/* ---- ENet (dp_enet.c over ENet 1.3.18) ------------------------------------- */

/* One ENet host on one UDP socket: plain ENet through a dp_endpoint, or ENet
 * inside DTLS (every ENet datagram one record) through a dp_host, set up
 * before the first use with dp_enet_dtls_server_setup / _client_setup.
 * Peers are named by their ENet index plus the connectID of the connection
 * (so a stale pair never reaches a reused peer: DP_ERR_CLOSED). The object
 * owns the socket descriptor (closed by dp_enet_close). One object, one
 * thread at a time. */
typedef struct dp_enet dp_enet;

enum {
    DP_ENET_EVENT_NONE = 0,
    DP_ENET_EVENT_CONNECT = 1,
    DP_ENET_EVENT_DISCONNECT = 2,
    DP_ENET_EVENT_RECEIVE = 3,
    DP_ENET_DISCONNECT = 0,       /* graceful: acknowledged, then DISCONNECT event */
    DP_ENET_DISCONNECT_LATER = 1, /* after the queued outgoing packets */
    DP_ENET_DISCONNECT_NOW = 2,   /* one unreliable notice, no event */
    DP_ENET_RESET = 3,            /* nothing sent, no event */
    DP_ENET_PEER_PING_INTERVAL = 1,
    DP_ENET_PEER_TIMEOUT = 2,
    DP_ENET_PEER_THROTTLE = 3,
    DP_ENET_SET_CHANNEL_LIMIT = 1,
    DP_ENET_SET_BANDWIDTH_LIMIT = 2,
    DP_ENET_SET_COMPRESS = 3,      /* 0 none, 1 ENet's range coder */
    DP_ENET_SET_MAX_PACKET_SIZE = 4, /* a: largest packet, b: most waiting data per peer */
    DP_ENET_SET_REFUSE = 5,        /* DTLS server: 1 admits no new handshake */
    DP_ENET_SET_DUPLICATE_PEERS = 6
};

typedef struct dp_enet_event {
    uint32_t peer;       /* ENet peer index */
    uint32_t connect_id; /* with peer: names the connection */
    uint32_t data;       /* CONNECT / DISCONNECT data */
    uint32_t offset;     /* RECEIVE: payload[offset .. offset + length) */
    uint32_t length;
    uint8_t type;        /* DP_ENET_EVENT_* */
    uint8_t channel;
    uint8_t flags;       /* RECEIVE: ENet packet flags (1 reliable, 2 unsequenced) */
    uint8_t reserved;
    dp_addr addr;        /* CONNECT: the peer's address (the peer may be gone by the
                            time the caller reads the event: a later event of the
                            same call may be its DISCONNECT) */
} dp_enet_event;

typedef struct dp_enet_peer_info {
    int state; /* ENetPeerState */
    uint32_t channels;
    dp_addr addr;
    uint32_t mtu;
    uint32_t round_trip_time, round_trip_time_variance;
    uint32_t last_round_trip_time, last_round_trip_time_variance;
    uint32_t packet_loss, packet_loss_variance, packet_loss_epoch;
    uint32_t packet_throttle, packet_throttle_limit, packet_throttle_counter;
    uint32_t packet_throttle_epoch, packet_throttle_acceleration;
    uint32_t packet_throttle_deceleration, packet_throttle_interval;
    uint32_t ping_interval, timeout_limit, timeout_minimum, timeout_maximum;
    uint32_t incoming_bandwidth, outgoing_bandwidth;
    uint32_t incoming_data_total, outgoing_data_total, reliable_data_in_transit;
    uint64_t dtls_peer; /* DTLS mode: the dp_host peer id (0 if its session ended) */
    /* ENet's header fields of this connection (diagnostics, fuzzing): the id
     * and session the remote side puts in the datagrams it sends us (incoming)
     * and the ones we put in ours (outgoing). */
    uint16_t incoming_peer_id, outgoing_peer_id;
    uint8_t incoming_session_id, outgoing_session_id;
} dp_enet_peer_info;

typedef struct dp_enet_stats {
    uint64_t datagrams_in;      /* datagrams handed to ENet */
    uint64_t datagrams_out;     /* datagrams ENet sent that the transport took */
    uint64_t packets_in;        /* RECEIVE events */
    uint64_t packets_out;       /* packets queued by dp_enet_send */
    uint64_t dropped_oversized; /* datagrams above ENet's 4096-byte maximum (or the buffer) */
    uint64_t dropped_ring_full; /* received while ENet's queue was full */
    uint64_t dropped_not_ipv4;  /* plain mode: IPv6 senders (ENet addresses are IPv4) */
    uint64_t send_no_session;   /* DTLS: datagrams for a session handshaking or gone */
    uint64_t send_dropped;      /* plain: datagrams the socket refused */
    uint64_t dtls_sessions;     /* DTLS sessions that connected */
    uint64_t dtls_dropped;      /* DTLS sessions ended for lack of memory */
    int32_t last_send_error;
    uint32_t connected_peers;
    uint32_t peer_count;
    int32_t mode;               /* 0 unused yet, 1 plain, 2 DTLS */
} dp_enet_stats;

int dp_enet_new(int64_t fd, int family, uint32_t peer_count, uint32_t channel_limit,
                uint32_t in_bandwidth, uint32_t out_bandwidth, dp_enet **out);
/* Flush, then close the transport and the socket (close_notify to DTLS peers). */
int dp_enet_close(dp_enet *e);
void dp_enet_free(dp_enet *e);
/* Before the first connect/service; once (DP_ERR_BAD_STATE after). */
int dp_enet_dtls_server_setup(dp_enet *e, dp_config *cfg, dp_cookie_gate *gate);
int dp_enet_dtls_client_setup(dp_enet *e, dp_config *cfg, const char *hostname);
int dp_enet_connect(dp_enet *e, const dp_addr *addr, uint32_t channels, uint32_t data,
                    uint32_t *index, uint32_t *connect_id);
/* Socket, DTLS and ENet in one call; events[0 .. *n_events). timeout_ms: 0 =
 * no wait, < 0 = until something happens. */
int dp_enet_service(dp_enet *e, int timeout_ms, dp_enet_event *events, uint32_t max_events,
                    uint8_t *payload, size_t payload_cap, uint32_t *n_events);
int dp_enet_flush(dp_enet *e);
int dp_enet_send(dp_enet *e, uint32_t index, uint32_t connect_id, uint32_t channel,
                 const uint8_t *data, size_t len, uint32_t flags);
int dp_enet_broadcast(dp_enet *e, uint32_t channel, const uint8_t *data, size_t len,
                      uint32_t flags);
int dp_enet_peer_disconnect(dp_enet *e, uint32_t index, uint32_t connect_id, uint32_t data,
                            int how);
int dp_enet_peer_ping(dp_enet *e, uint32_t index, uint32_t connect_id);
int dp_enet_peer_configure(dp_enet *e, uint32_t index, uint32_t connect_id, int what, uint32_t a,
                           uint32_t b, uint32_t c);
int dp_enet_peer_get_info(const dp_enet *e, uint32_t index, uint32_t connect_id,
                          dp_enet_peer_info *out);
int dp_enet_set(dp_enet *e, int what, uint32_t a, uint32_t b);
/* which: 0 sent data, 1 sent packets, 2 received data, 3 received packets;
 * read and reset to 0 (Godot's pop_statistic). */
int dp_enet_pop_statistic(dp_enet *e, int which, uint32_t *out);
int dp_enet_get_stats(const dp_enet *e, dp_enet_stats *out);
/* DTLS mode: why the DTLS session of ENet peer `index` ended (its reason
 * text and Mbed TLS / DP code; "" and 0 if it did not). Kept until the index
 * connects again. Returns the text length. */
int dp_enet_peer_last_error(const dp_enet *e, uint32_t index, char *buf, size_t cap,
                            int32_t *code);
/* DTLS mode: the dp_host under ENet (NULL otherwise), for per-session queries. */
dp_host *dp_enet_dtls_host(const dp_enet *e);
/* Plain mode: queue a datagram as if it had arrived from src (fuzzing and
 * tests; the next service hands it to ENet). Returns 1 queued, 0 dropped. */
int dp_enet_inject(dp_enet *e, const dp_addr *src, const uint8_t *data, size_t len);

/* END CDEF */

/* ---- Internal helpers shared by our C files (not seen by cffi) ---------- */

void *dp_calloc(size_t count, size_t size);
/* As dp_calloc, but the memory is not zeroed: only for buffers that are
 * always written before they are read (socket receive buffers). */
void *dp_malloc_uninit(size_t count, size_t size);
void dp_free(void *ptr);
/* Parking (dp_conn.c) notes each park; the per-tick entry points then call
 * dp_trim_after_parks, which returns freed memory to the system now and then
 * (dp_common.c says when). */
void dp_note_park(void);
void dp_trim_after_parks(void);
/* mbedtls f_rng-compatible callback over the shared RNG. */
int dp_rng(void *ctx, unsigned char *out, size_t len);

/* Endpoint internals for the DTLS link and host (dp_endpoint.c). Every
 * dp_endpoint_* call above holds the endpoint's mutex; C callers that need
 * several steps at once take it with dp_endpoint_lock and call the dp_ep_*
 * forms, which expect it held (waits release it while they block). A DTLS
 * host's mutex is its endpoint's. */
void dp_endpoint_lock(dp_endpoint *ep);
void dp_endpoint_unlock(dp_endpoint *ep);
int dp_ep_close(dp_endpoint *ep);
int dp_ep_set_limits(dp_endpoint *ep, uint32_t max_pending, int64_t pending_timeout_ms,
                     uint32_t peer_recv_buf_size);
int dp_ep_poll(dp_endpoint *ep, int64_t now_ms);
int dp_ep_queued(const dp_endpoint *ep, uint64_t handle);
int dp_ep_recv(dp_endpoint *ep, uint64_t handle, uint8_t *buf, size_t cap, dp_addr *src);
int dp_ep_send(dp_endpoint *ep, uint64_t handle, const dp_addr *dst, const uint8_t *data,
               size_t len);
int dp_ep_slot_close(dp_endpoint *ep, uint64_t handle);
int dp_ep_slot_addr(const dp_endpoint *ep, uint64_t handle, dp_addr *out);
int dp_ep_stats(const dp_endpoint *ep, uint64_t handle, dp_udp_stats *out);
int dp_ep_inject(dp_endpoint *ep, const dp_addr *src, const uint8_t *data, size_t len,
                 int64_t now_ms);
/* From now on dp_ep_close closes the socket (the host owns it). */
void dp_ep_own_fd(dp_endpoint *ep);
/* A SERVER endpoint with a sink hands every received datagram to it
 * (handle = the sender's slot, 0 for an unknown sender) instead of queueing
 * or creating pending slots; a nonzero return stops dp_ep_poll after the
 * current recvmmsg batch. The sink runs with the lock held. */
typedef int (*dp_endpoint_sink_fn)(void *ctx, uint64_t handle, const dp_addr *src,
                                   const uint8_t *data, size_t len, int64_t now_ms);
int dp_ep_set_sink(dp_endpoint *ep, dp_endpoint_sink_fn sink, void *ctx);
/* Remote (ICMP-induced) socket errors, with the slot they concern (0 when
 * the socket is not connected: then the kernel names no address). The
 * dp_ep_* hooks take no lock of their own: callers already serialise every
 * use of the endpoint. */
typedef void (*dp_endpoint_error_fn)(void *ctx, uint64_t handle, const dp_addr *peer, int err,
                                     int64_t now_ms);
int dp_ep_set_error_sink(dp_endpoint *ep, dp_endpoint_error_fn fn, void *ctx);
/* errno of the last remote error the socket reported (0: none yet), and how
 * many it reported so far (stats.recv_errors). */
int dp_ep_last_remote_error(const dp_endpoint *ep);
uint64_t dp_ep_remote_errors(const dp_endpoint *ep);
/* SERVER: connect() the socket to peer (NULL: dissolve). */
int dp_ep_connect_socket(dp_endpoint *ep, const dp_addr *peer);
/* 1 if errno err is an ICMP-induced error, and its words ("port unreachable"). */
int dp_is_remote_error(int err);
const char *dp_remote_error_text(int err);
/* Wait up to timeout_ms for datagrams on a SERVER endpoint with a sink,
 * moving *now_ms on by the time waited. 2: datagrams were read and handed to
 * the sink, 1: readable (dp_ep_poll reads), 0: timed out, DP_ERR_CLOSED:
 * closed meanwhile. On Linux a long wait blocks in recvmmsg itself (one
 * syscall per wake). */
int dp_ep_sink_wait(dp_endpoint *ep, int timeout_ms, int64_t *now_ms);
/* SERVER: route addr to a new TAKEN slot (an association we start).
 * DP_ERR_BAD_STATE if addr already has a slot. */
int dp_ep_slot_open(dp_endpoint *ep, const dp_addr *addr, int64_t now_ms, uint64_t *handle);
/* Session succession (RFC 6347 4.2.8). The link marks a slot whose server
 * connection is CONNECTED (established); a successor slot whose connection
 * connected takes the address over (promote: 1 if it had a predecessor,
 * which is then superseded, i.e. unrouted and over); the host moves an
 * address to a new TAKEN slot (rebind: the old slot stays, unrouted and
 * superseded, until it is closed). */
void dp_ep_slot_mark_established(dp_endpoint *ep, uint64_t handle);
/* 1 if the slot was opened for a ClientHello the endpoint's gate admitted
 * (its first queued datagram): dp_link_accept does not judge it again. */
int dp_ep_slot_admitted(const dp_endpoint *ep, uint64_t handle);
int dp_ep_slot_superseded(const dp_endpoint *ep, uint64_t handle);
int dp_ep_slot_promote(dp_endpoint *ep, uint64_t handle);
int dp_ep_slot_rebind(dp_endpoint *ep, uint64_t handle, int64_t now_ms, uint64_t *out);
/* RFC 9146 routing. The owner of a slot whose session negotiated a CID
 * registers it (one length per endpoint; DP_ERR_BAD_STATE if another slot
 * has it); from then on a datagram starting with a record of that CID
 * reaches the slot from any address (a sink gets its handle, a queue gets
 * it with its source). Only established sessions register, so
 * unauthenticated traffic cannot grow the index. The owner moves the slot
 * to the new address (dp_ep_slot_move) only after the connection
 * authenticated a record newer than all before (dp_conn_rx_newest);
 * DP_ERR_BAD_STATE if another slot has that address or a reconnect is
 * under way. dp_ep_slot_addr_differs: 1 if addr is not the slot's. */
int dp_ep_slot_set_cid(dp_endpoint *ep, uint64_t handle, const uint8_t *cid, size_t len);
int dp_ep_slot_move(dp_endpoint *ep, uint64_t handle, const dp_addr *addr);
int dp_ep_slot_addr_differs(const dp_endpoint *ep, uint64_t handle, const dp_addr *addr);
/* SERVER: queue a stateless reply (a HelloVerifyRequest, at most DP_HVR_LEN
 * bytes) to dst; the endpoint sends every queued reply with one sendmmsg at
 * the end of the receive batch being routed. */
int dp_ep_queue_reply(dp_endpoint *ep, const dp_addr *dst, const uint8_t *data, size_t len);
typedef struct dp_endpoint_out {
    uint64_t handle;    /* SERVER slot, or 0: send to dst */
    const dp_addr *dst; /* with handle 0 only */
    const uint8_t *data;
    size_t len;
} dp_endpoint_out;
/* Send msgs in order (sendmmsg batches on Linux). Returns how many the
 * socket took; *failed / *last_error tell about the others (lost). */
int dp_ep_send_batch(dp_endpoint *ep, const dp_endpoint_out *msgs, size_t count,
                     size_t *failed, int *last_error);

/* Shared by the DTLS link, endpoint and host (dp_link.c): the bytes a
 * server's cookies are bound to (out holds >= 22); the offset of the first
 * epoch-0 ClientHello record of a datagram (a client starting over on a live
 * association), or -1; whether the first record is of epoch 0. */
size_t dp_addr_transport_id(const dp_addr *a, unsigned char *out);
int dp_is_initial_client_hello(const unsigned char *d, size_t len);
/* dp_conn_stats.dropped_over_limit without copying the stats (dp_conn.c),
 * for the host's running total. */
uint64_t dp_conn_dropped_over_limit(const dp_conn *conn);
long dp_find_client_hello(const unsigned char *d, size_t len);
int dp_first_record_epoch0(const unsigned char *d, size_t len);
/* Cookie gate reference counting (dp_cookie.c): an endpoint with a gate
 * holds a reference. */
void dp_cookie_gate_ref(dp_cookie_gate *gate);
/* now_ms, or the clock's reading for DP_NOW / DP_NOW_WALL (dp_common.c). */
int64_t dp_resolve_now(int64_t now_ms);

#ifdef __cplusplus
}
#endif

#endif /* DTLSPEER_H */

/*
 * dp_conn.c: one DTLS association driven without I/O (sans-I/O engine).
 *
 * The caller feeds whole received datagrams (dp_conn_feed), takes whole
 * datagrams to send (dp_conn_pop_outgoing) and passes the time in ms to every
 * call. Mbed TLS's bio callbacks are C functions over:
 *   - inbound: the one datagram being fed. Feeding processes it at once, so
 *     the inbound queue never holds more than that datagram, borrowed for
 *     the duration of the call (no copy besides the one into Mbed TLS);
 *   - outbound: a bounded FIFO of whole datagrams (one node each);
 *   - received plaintext: a bounded FIFO of whole records, decrypted eagerly
 *     so close_notify, alerts and errors show in the status at once.
 * The timer callbacks compare against the time of the current call.
 *
 * Parking (server default, see dp_config_set_park_after): an established
 * connection without authentic traffic for park_after_ms is serialized with
 * mbedtls_ssl_context_save into a small blob of our own heap (about 200
 * bytes: session, keys, sequence numbers, anti-replay window, CID, MTU) and
 * its mbedtls_ssl_context (record buffers included) is freed. The first call
 * that needs the keys (a datagram that may hold a record for this epoch, a
 * write, a close) loads the blob into a fresh context; callers never see the
 * difference. The blob holds keys: it is zeroized when freed and never
 * leaves this file.
 */
#include "dp_engine.h"

#include <stdio.h>
#include <string.h>

#include "mbedtls/cipher.h"
#include "mbedtls/error.h"
#include "mbedtls/platform_util.h"
#include "mbedtls/ssl_ciphersuites.h"
#include "mbedtls/x509.h"

/* Received records waiting for the application, in bytes (payload + node
 * header each, so empty records count too). 64 KiB: four full-size 16 KiB
 * records, or ~45 of ENet's 1 392-byte datagrams, per connection; a peer
 * whose application stops reading cannot make it hold more (it was 256
 * records: up to 4 MiB per connection). Beyond it records are dropped and
 * counted (stats.dropped_in_full), as a full socket buffer would. */
#define DP_APP_QUEUE_BYTES (64u * 1024u)
#define DP_READ_LOOP_MAX 4096
#define DP_REASON_LEN 320
#define DP_MASTER_LEN 48
#define DP_RECORD_HEADER_LEN 13

/* While parked: the peer's write direction (our read key and IV, derived
 * from the master secret with Mbed TLS's PRF), the epoch and the
 * anti-replay window, so a record is authenticated (Mbed TLS's AEAD) and
 * checked for replay BEFORE the connection is restored: a forgery or a
 * replay costs one AEAD check, as it does on an active connection. */
typedef struct dp_read_guard {
    mbedtls_cipher_context_t cipher; /* AEAD, decrypt direction */
    unsigned char iv[12];            /* implicit IV: 4 bytes (GCM, CCM) or 12 (ChaCha20) */
    size_t fixed_ivlen;
    size_t explicit_ivlen;           /* 8 (GCM, CCM: in the record) or 0 */
    size_t taglen;                   /* 16, or 8 for the CCM_8 suites */
    uint16_t epoch;
    uint64_t window_top;             /* Mbed TLS's in_window_top / in_window */
    uint64_t window;
    int anti_replay;
    uint8_t cid_len;                 /* our negotiated CID: records carry it */
    uint8_t cid[DP_CID_MAX];
} dp_read_guard;

typedef struct dp_node {
    struct dp_node *next;
    size_t len;
    unsigned char data[];
} dp_node;

typedef struct dp_queue {
    dp_node *head;
    dp_node *tail;
    size_t count;
    size_t bytes; /* payload + node header of every entry */
} dp_queue;

/* What a server exposes about its client's certificate (client_auth): the
 * leaf's subject, SAN and fingerprint, not the chain. */
struct dp_peer_info {
    char subject[DP_PEER_SUBJECT_MAX];
    char san[DP_PEER_SAN_MAX];
    unsigned char fingerprint[DP_FINGERPRINT_LEN];
    int have_names; /* subject + san filled (full handshake) */
    int have_fingerprint;
};

/* Saved client sessions: magic, format version, how the server was
 * authenticated in the original handshake (DP_VERIFY_* of the saving client,
 * or DP_VERIFY_NONE if its verification failed), then Mbed TLS's own session
 * serialization (which checks Mbed TLS's version and options). A resumed
 * handshake checks no certificate, so a client only resumes sessions
 * authenticated at least as strictly as it would check the server now. */
static const unsigned char DP_SESSION_MAGIC[4] = {'D', 'P', 'S', 'S'};
#define DP_SESSION_FORMAT 1
#define DP_SESSION_HEADER_LEN 6

/* How strictly a verify mode authenticates the server: higher is stricter. */
static int verify_strength(int mode)
{
    return mode == DP_VERIFY_FULL ? 2 : mode == DP_VERIFY_CHAIN_ONLY ? 1 : 0;
}

struct dp_conn {
    mbedtls_ssl_context *ssl; /* own heap; NULL while parked */
    unsigned char *parked;    /* serialized context while parked (keys!) */
    size_t parked_len;
    dp_read_guard *guard;     /* while parked: authenticates records first */
    /* The session's master secret and randoms (server || client), from Mbed
     * TLS's key export callback at each key derivation (handshake, context
     * load); needed at park time to build the guard, wiped then. */
    unsigned char master[DP_MASTER_LEN];
    unsigned char randbytes[64];
    int prf_type;             /* mbedtls_tls_prf_types */
    int have_master;
    uint64_t bad_mac_session; /* records that failed authentication, this session */
    dp_config *cfg;
    int status;
    int last_error;
    uint32_t verify_flags;
    char reason[DP_REASON_LEN];
    int64_t now_ms;
    int64_t hs_start_ms;
    int64_t last_rx_ms;
    int64_t park_due_ms;   /* connected + active: park at this time */
    int suite_id;          /* negotiated suite, kept while parked */
    int max_payload;       /* record payload limit, kept while parked */
    int timer_active;
    int64_t timer_start_ms;
    uint32_t timer_int_ms;
    uint32_t timer_fin_ms;
    const unsigned char *in_data; /* borrowed during dp_conn_feed only */
    size_t in_len;
    int in_pending;
    dp_queue out;
    dp_queue app;
    size_t app_held; /* records the binding took out and holds (dp_conn_set_app_held) */
    /* Set during dp_conn_write_direct only: the caller's buffer that takes
     * the record's datagram instead of a queue node (no allocation, one copy). */
    unsigned char *direct_buf;
    size_t direct_cap;
    size_t direct_len;
    unsigned char transport_id[DP_TRANSPORT_ID_MAX];
    size_t transport_id_len;
    dp_conn_stats stats;
    /* RFC 9146 (dp_config_set_cid): our CID is chosen at creation; what was
     * negotiated is read once connected and kept for the session's life. */
    uint8_t own_cid[DP_CID_MAX];
    uint8_t peer_cid[DP_CID_MAX];
    uint8_t own_cid_len;
    uint8_t peer_cid_len;
    uint8_t cid_negotiated;
    uint64_t rx_newest_parked; /* dp_conn_rx_newest, saved at park time */
    int key_exchanged;        /* the handshake ran a key exchange (full handshake) */
    int resumed;              /* the handshake resumed a session (abbreviated) */
    unsigned char *session;   /* client: saved session (magic + Mbed TLS blob) */
    size_t session_len;
    dp_peer_info *peer;       /* server with client_auth: the verified leaf */
};

/* ---- Queues --------------------------------------------------------------- */

static dp_node *node_new(const unsigned char *data, size_t len)
{
    dp_node *n = dp_calloc(1, sizeof(dp_node) + len);
    if (n != NULL) {
        n->len = len;
        if (data != NULL && len != 0) {
            memcpy(n->data, data, len);
        }
    }
    return n;
}

static void queue_push(dp_queue *q, dp_node *n)
{
    n->next = NULL;
    if (q->tail != NULL) {
        q->tail->next = n;
    } else {
        q->head = n;
    }
    q->tail = n;
    q->count++;
    q->bytes += sizeof(dp_node) + n->len;
}

static void queue_clear(dp_queue *q, int wipe)
{
    dp_node *n = q->head;
    while (n != NULL) {
        dp_node *next = n->next;
        if (wipe) {
            mbedtls_platform_zeroize(n->data, n->len);
        }
        dp_free(n);
        n = next;
    }
    q->head = q->tail = NULL;
    q->count = 0;
    q->bytes = 0;
}

/* Copy the head into buf and remove it. */
static int queue_pop(dp_queue *q, unsigned char *buf, size_t cap, int wipe)
{
    dp_node *n = q->head;
    if (n == NULL) {
        return DP_ERR_WOULD_BLOCK;
    }
    if (n->len > cap || n->len > (size_t)INT32_MAX) {
        return DP_ERR_BUFFER_TOO_SMALL;
    }
    if (n->len != 0) {
        memcpy(buf, n->data, n->len);
    }
    int len = (int)n->len;
    q->head = n->next;
    if (q->head == NULL) {
        q->tail = NULL;
    }
    q->count--;
    q->bytes -= sizeof(dp_node) + n->len;
    if (wipe) {
        mbedtls_platform_zeroize(n->data, n->len);
    }
    dp_free(n);
    return len;
}

/* ---- Mbed TLS callbacks --------------------------------------------------- */

static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
    dp_conn *c = ctx;
    if (c->direct_buf != NULL && c->direct_len == 0 && c->out.count == 0 && len <= c->direct_cap) {
        /* Nothing queued before it, so sending it first keeps the order. */
        memcpy(c->direct_buf, buf, len);
        c->direct_len = len;
        c->stats.datagrams_out++;
        return (int)len;
    }
    if (c->out.count >= c->cfg->out_queue_max) { /* a whole flight fits (dp_config.c) */
        /* Like a full socket buffer: the datagram is lost, DTLS retransmits. */
        c->stats.dropped_out_full++;
        return (int)len;
    }
    dp_node *n = node_new(buf, len);
    if (n == NULL) {
        c->stats.dropped_out_full++;
        return (int)len;
    }
    queue_push(&c->out, n);
    c->stats.datagrams_out++;
    return (int)len;
}

static int bio_recv(void *ctx, unsigned char *buf, size_t len)
{
    dp_conn *c = ctx;
    if (!c->in_pending) {
        return MBEDTLS_ERR_SSL_WANT_READ;
    }
    c->in_pending = 0;
    if (c->in_len == 0) {
        return MBEDTLS_ERR_SSL_WANT_READ; /* 0 would mean end of stream to Mbed TLS */
    }
    if (c->in_len > len) {
        /* Never copied past the end of the buffer Mbed TLS offers. */
        c->stats.dropped_too_long++;
        return MBEDTLS_ERR_SSL_WANT_READ;
    }
    if (c->in_len != 0) {
        memcpy(buf, c->in_data, c->in_len);
    }
    return (int)c->in_len;
}

static void timer_set(void *ctx, uint32_t int_ms, uint32_t fin_ms)
{
    dp_conn *c = ctx;
    c->timer_active = fin_ms != 0;
    c->timer_start_ms = c->now_ms;
    c->timer_int_ms = int_ms;
    c->timer_fin_ms = fin_ms;
}

static int timer_get(void *ctx)
{
    dp_conn *c = ctx;
    if (!c->timer_active) {
        return -1;
    }
    int64_t elapsed = c->now_ms - c->timer_start_ms;
    if (elapsed >= (int64_t)c->timer_fin_ms) {
        return 2;
    }
    if (elapsed >= (int64_t)c->timer_int_ms) {
        return 1;
    }
    return 0;
}

/* ---- Status and reasons --------------------------------------------------- */

static const char *alert_name(unsigned char code)
{
    switch (code) {
    case MBEDTLS_SSL_ALERT_MSG_CLOSE_NOTIFY: return "close_notify";
    case MBEDTLS_SSL_ALERT_MSG_UNEXPECTED_MESSAGE: return "unexpected_message";
    case MBEDTLS_SSL_ALERT_MSG_BAD_RECORD_MAC: return "bad_record_mac";
    case MBEDTLS_SSL_ALERT_MSG_HANDSHAKE_FAILURE: return "handshake_failure";
    case MBEDTLS_SSL_ALERT_MSG_BAD_CERT: return "bad_certificate";
    case MBEDTLS_SSL_ALERT_MSG_UNSUPPORTED_CERT: return "unsupported_certificate";
    case MBEDTLS_SSL_ALERT_MSG_CERT_REVOKED: return "certificate_revoked";
    case MBEDTLS_SSL_ALERT_MSG_CERT_EXPIRED: return "certificate_expired";
    case MBEDTLS_SSL_ALERT_MSG_CERT_UNKNOWN: return "certificate_unknown";
    case MBEDTLS_SSL_ALERT_MSG_ILLEGAL_PARAMETER: return "illegal_parameter";
    case MBEDTLS_SSL_ALERT_MSG_UNKNOWN_CA: return "unknown_ca";
    case MBEDTLS_SSL_ALERT_MSG_ACCESS_DENIED: return "access_denied";
    case MBEDTLS_SSL_ALERT_MSG_DECODE_ERROR: return "decode_error";
    case MBEDTLS_SSL_ALERT_MSG_DECRYPT_ERROR: return "decrypt_error";
    case MBEDTLS_SSL_ALERT_MSG_PROTOCOL_VERSION: return "protocol_version";
    case MBEDTLS_SSL_ALERT_MSG_INSUFFICIENT_SECURITY: return "insufficient_security";
    case MBEDTLS_SSL_ALERT_MSG_INTERNAL_ERROR: return "internal_error";
    case MBEDTLS_SSL_ALERT_MSG_UNRECOGNIZED_NAME: return "unrecognized_name";
    case MBEDTLS_SSL_ALERT_MSG_UNKNOWN_PSK_IDENTITY: return "unknown_psk_identity";
    default: return "unknown alert";
    }
}

static void set_reason(dp_conn *c, const char *text)
{
    snprintf(c->reason, sizeof(c->reason), "%s", text);
}

/* End the association because of Mbed TLS error ret (or one of ours). */
static void fail(dp_conn *c, int ret)
{
    int was_handshaking = c->status == DP_STATUS_HANDSHAKING;
    c->last_error = ret;
    c->status = DP_STATUS_ERROR;
    if (ret == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
        uint32_t flags = c->ssl != NULL ? mbedtls_ssl_get_verify_result(c->ssl) : (uint32_t)-1;
        if (flags != (uint32_t)-1) {
            c->verify_flags = flags;
        }
        if (c->verify_flags & MBEDTLS_X509_BADCERT_CN_MISMATCH) {
            c->status = DP_STATUS_ERROR_HOSTNAME_MISMATCH;
        }
        char info[256];
        int n = mbedtls_x509_crt_verify_info(info, sizeof(info), "", c->verify_flags);
        /* One reason per line from Mbed TLS; join them into one line. */
        for (int i = 0; i < n && info[i] != '\0'; i++) {
            if (info[i] == '\n') {
                info[i] = (info[i + 1] == '\0') ? '\0' : ';';
            }
        }
        snprintf(c->reason, sizeof(c->reason), "certificate verification failed: %s",
                 n > 0 ? info : "unknown reason");
    } else if (ret == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE) {
        /* The alert stays in in_msg after the call that reported it; Mbed
         * TLS 3.6 has no public getter (pinned version, see vendor lock). */
        unsigned char code = c->ssl != NULL && c->ssl->MBEDTLS_PRIVATE(in_msg) != NULL
                                 ? c->ssl->MBEDTLS_PRIVATE(in_msg)[1]
                                 : 255;
        /* A server that wants a client certificate answers a client
         * without one (or with one it does not trust) with one of these. */
        const char *hint = "";
        if (c->cfg->role == DP_ROLE_CLIENT && was_handshaking) {
            if (!c->cfg->has_own_cert && code == MBEDTLS_SSL_ALERT_MSG_HANDSHAKE_FAILURE) {
                hint = "; if the server requires a client certificate: none was configured";
            } else if (c->cfg->has_own_cert &&
                       (code == MBEDTLS_SSL_ALERT_MSG_BAD_CERT ||
                        code == MBEDTLS_SSL_ALERT_MSG_UNKNOWN_CA ||
                        code == MBEDTLS_SSL_ALERT_MSG_CERT_UNKNOWN)) {
                hint = "; the server rejected our client certificate";
            }
        }
        snprintf(c->reason, sizeof(c->reason), "fatal alert received from peer: %s (%u)%s",
                 alert_name(code), (unsigned)code, hint);
    } else if (ret == MBEDTLS_ERR_SSL_TIMEOUT) {
        set_reason(c, "handshake timed out: the peer stopped answering");
    } else if (ret == MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE) {
        set_reason(c, "no client certificate: this server requires one (client_auth=required)");
    } else {
        char text[200];
        mbedtls_strerror(ret, text, sizeof(text));
        snprintf(c->reason, sizeof(c->reason), "TLS error -0x%04X: %s", (unsigned)-ret, text);
    }
}

/* Authentic traffic: the connection parks park_after_ms from now. */
static void note_activity(dp_conn *c)
{
    uint32_t after = c->cfg->park_after_ms;
    c->park_due_ms = after != 0 ? c->now_ms + (int64_t)after : -1;
}

/* ---- Sessions and peer certificates --------------------------------------- */

void dp_session_blob_free(unsigned char *blob, size_t len)
{
    if (blob != NULL) {
        mbedtls_platform_zeroize(blob, len); /* it holds the master secret */
        dp_free(blob);
    }
}

void dp_peer_info_free(dp_peer_info *info)
{
    if (info != NULL) {
        mbedtls_platform_zeroize(info, sizeof(*info));
        dp_free(info);
    }
}

static void session_release(dp_conn *c)
{
    dp_session_blob_free(c->session, c->session_len);
    c->session = NULL;
    c->session_len = 0;
}

static void peer_release(dp_conn *c)
{
    dp_peer_info_free(c->peer);
    c->peer = NULL;
}

/* Client, connected: keep the session (with the server's ticket, if it sent
 * one) for dp_conn_get_session; the context may be parked or freed later.
 * Without memory there is simply nothing to resume. */
static void save_session(dp_conn *c)
{
    session_release(c);
    mbedtls_ssl_session session;
    mbedtls_ssl_session_init(&session);
    size_t need = 0;
    if (mbedtls_ssl_get_session(c->ssl, &session) == 0 &&
        mbedtls_ssl_session_save(&session, NULL, 0, &need) == MBEDTLS_ERR_SSL_BUFFER_TOO_SMALL) {
        unsigned char *blob = dp_calloc(1, DP_SESSION_HEADER_LEN + need);
        size_t len = 0;
        if (blob != NULL &&
            mbedtls_ssl_session_save(&session, blob + DP_SESSION_HEADER_LEN, need, &len) == 0) {
            memcpy(blob, DP_SESSION_MAGIC, sizeof(DP_SESSION_MAGIC));
            blob[4] = DP_SESSION_FORMAT;
            /* A PSK suite authenticates the server by the key (the client
             * has one: it offers PSK suites only then). */
            const mbedtls_ssl_ciphersuite_t *suite = mbedtls_ssl_ciphersuite_from_id(c->suite_id);
            mbedtls_key_exchange_type_t kx =
                suite != NULL ? suite->MBEDTLS_PRIVATE(key_exchange) : MBEDTLS_KEY_EXCHANGE_NONE;
            int psk = kx == MBEDTLS_KEY_EXCHANGE_PSK || kx == MBEDTLS_KEY_EXCHANGE_ECDHE_PSK;
            blob[5] = (unsigned char)(psk ? DP_VERIFY_FULL
                                      : c->verify_flags == 0 ? c->cfg->verify_mode
                                                              : DP_VERIFY_NONE);
            c->session = blob;
            c->session_len = DP_SESSION_HEADER_LEN + len;
        } else if (blob != NULL) {
            mbedtls_platform_zeroize(blob, DP_SESSION_HEADER_LEN + need);
            dp_free(blob);
        }
    }
    mbedtls_ssl_session_free(&session); /* wipes the master secret */
}

/* Server, connected: keep what the verify callback recorded only if the
 * certificate was verified; the fingerprint comes from the session (the
 * SHA-256 digest Mbed TLS keeps instead of the certificate), so it is also
 * known after a resumed handshake. */
static void settle_peer_info(dp_conn *c)
{
    const mbedtls_ssl_session *session = c->ssl->MBEDTLS_PRIVATE(session);
    int verified = c->verify_flags == 0 && session != NULL &&
                   session->MBEDTLS_PRIVATE(peer_cert_digest) != NULL &&
                   session->MBEDTLS_PRIVATE(peer_cert_digest_type) == MBEDTLS_MD_SHA256 &&
                   session->MBEDTLS_PRIVATE(peer_cert_digest_len) == DP_FINGERPRINT_LEN;
    if (!verified) {
        peer_release(c); /* optional mode: none sent, or it failed to verify */
        return;
    }
    if (c->peer == NULL) {
        c->peer = dp_calloc(1, sizeof(*c->peer)); /* resumed: no verify callback ran */
        if (c->peer == NULL) {
            return;
        }
    }
    memcpy(c->peer->fingerprint, session->MBEDTLS_PRIVATE(peer_cert_digest), DP_FINGERPRINT_LEN);
    c->peer->have_fingerprint = 1;
}

/* Append text to dst (NUL-terminated, capacity cap), replacing bytes that
 * are not printable ASCII: names come from the peer. */
static void append_text(char *dst, size_t cap, const char *text, size_t len)
{
    size_t at = strlen(dst);
    for (size_t i = 0; i < len && at + 1 < cap; i++) {
        unsigned char ch = (unsigned char)text[i];
        dst[at++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    dst[at] = '\0';
}

static void format_san(char *dst, size_t cap, const mbedtls_x509_crt *crt)
{
    dst[0] = '\0';
    for (const mbedtls_x509_sequence *cur = &crt->subject_alt_names; cur != NULL; cur = cur->next) {
        if (cur->buf.p == NULL) {
            continue;
        }
        mbedtls_x509_subject_alternative_name san;
        memset(&san, 0, sizeof(san));
        if (mbedtls_x509_parse_subject_alt_name(&cur->buf, &san) != 0) {
            continue; /* a type Mbed TLS does not parse */
        }
        const mbedtls_x509_buf *v = &san.san.unstructured_name;
        char text[64];
        const char *prefix = NULL;
        if (san.type == MBEDTLS_X509_SAN_DNS_NAME) {
            prefix = "DNS:";
        } else if (san.type == MBEDTLS_X509_SAN_UNIFORM_RESOURCE_IDENTIFIER) {
            prefix = "URI:";
        } else if (san.type == MBEDTLS_X509_SAN_RFC822_NAME) {
            prefix = "email:";
        } else if (san.type == MBEDTLS_X509_SAN_IP_ADDRESS && v->len == 4) {
            snprintf(text, sizeof(text), "IP:%u.%u.%u.%u", v->p[0], v->p[1], v->p[2], v->p[3]);
        } else if (san.type == MBEDTLS_X509_SAN_IP_ADDRESS && v->len == 16) {
            int n = snprintf(text, sizeof(text), "IP:");
            for (int i = 0; i < 16 && n > 0 && (size_t)n < sizeof(text); i += 2) {
                n += snprintf(text + n, sizeof(text) - (size_t)n, i ? ":%x" : "%x",
                              (unsigned)(v->p[i] << 8 | v->p[i + 1]));
            }
        } else {
            mbedtls_x509_free_subject_alt_name(&san);
            continue; /* other names, directory names: not exposed */
        }
        if (dst[0] != '\0') {
            append_text(dst, cap, ", ", 2);
        }
        if (prefix != NULL) {
            append_text(dst, cap, prefix, strlen(prefix));
            append_text(dst, cap, (const char *)v->p, v->len);
        } else {
            append_text(dst, cap, text, strlen(text));
        }
        mbedtls_x509_free_subject_alt_name(&san);
    }
}

/* Mbed TLS calls this for every certificate of the client's chain, the leaf
 * (depth 0) last; only the leaf's names are kept. */
static int verify_cb(void *ctx, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
    (void)flags;
    dp_conn *c = ctx;
    if (depth != 0) {
        return 0;
    }
    if (c->peer == NULL) {
        c->peer = dp_calloc(1, sizeof(*c->peer));
        if (c->peer == NULL) {
            return 0; /* nothing to expose; verification itself goes on */
        }
    }
    int n = mbedtls_x509_dn_gets(c->peer->subject, sizeof(c->peer->subject), &crt->subject);
    if (n < 0) {
        snprintf(c->peer->subject, sizeof(c->peer->subject), "(subject longer than %d bytes)",
                 DP_PEER_SUBJECT_MAX - 1);
    }
    format_san(c->peer->san, sizeof(c->peer->san), crt);
    c->peer->have_names = 1;
    return 0;
}

static void on_connected(dp_conn *c)
{
    c->status = DP_STATUS_CONNECTED;
    c->resumed = !c->key_exchanged;
    c->last_rx_ms = c->now_ms;
    /* Remembered for the session's whole life: parked, and after it ended
     * (its Mbed TLS context is freed at once then). */
    c->suite_id = mbedtls_ssl_get_ciphersuite_id_from_ssl(c->ssl);
    note_activity(c);
    uint32_t flags = mbedtls_ssl_get_verify_result(c->ssl);
    c->verify_flags = flags == (uint32_t)-1 ? 0 : flags;
    int cid_enabled = MBEDTLS_SSL_CID_DISABLED;
    size_t peer_len = 0;
    if (c->cfg->cid_enabled &&
        mbedtls_ssl_get_peer_cid(c->ssl, &cid_enabled, c->peer_cid, &peer_len) == 0 &&
        cid_enabled == MBEDTLS_SSL_CID_ENABLED) {
        c->cid_negotiated = 1;
        c->peer_cid_len = (uint8_t)peer_len;
    }
    set_reason(c, "connected");
    if (c->cfg->role == DP_ROLE_CLIENT) {
        save_session(c);
    } else if (c->cfg->client_auth != DP_CLIENT_AUTH_NONE) {
        settle_peer_info(c);
    }
}

/* mbedtls_ssl_handshake, one step at a time, noting whether a key exchange
 * ran: Mbed TLS 3.6 has no getter for "resumed" (the flag lives in its
 * internal handshake state). Every full TLS 1.2 handshake passes through the
 * CLIENT_KEY_EXCHANGE state on both sides (the client writes it, the server
 * reads it, PSK included); an abbreviated one (RFC 5077) never does. */
static int handshake_steps(dp_conn *c)
{
    mbedtls_ssl_context *ssl = c->ssl;
    int ret = 0;
    while (!mbedtls_ssl_is_handshake_over(ssl)) {
        ret = mbedtls_ssl_handshake_step(ssl);
        if (ssl->MBEDTLS_PRIVATE(state) == MBEDTLS_SSL_CLIENT_KEY_EXCHANGE) {
            c->key_exchanged = 1;
        }
        if (ret != 0) {
            break;
        }
    }
    return ret;
}

static void handshake_step(dp_conn *c)
{
    int ret = handshake_steps(c);
    if (ret == 0) {
        on_connected(c);
    } else if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) {
        /* waiting for the peer or the timer */
    } else if (ret == MBEDTLS_ERR_SSL_HELLO_VERIFY_REQUIRED) {
        /* A cookieless hello reached a live connection (normally the gate
         * answers those): the HelloVerifyRequest is queued; start over
         * statelessly, as Mbed TLS requires. */
        int r = mbedtls_ssl_session_reset(c->ssl);
        if (r == 0) {
            r = mbedtls_ssl_set_client_transport_id(c->ssl, c->transport_id,
                                                    c->transport_id_len);
        }
        if (r != 0) {
            fail(c, r);
        }
    } else {
        if (ret == MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE) {
            /* Mbed TLS 3.6 ends a TLS 1.2 server handshake without a word
             * here; the client would retransmit until its timeout. RFC 5246
             * 7.4.6: answer with a fatal handshake_failure. */
            (void)mbedtls_ssl_send_alert_message(c->ssl, MBEDTLS_SSL_ALERT_LEVEL_FATAL,
                                                 MBEDTLS_SSL_ALERT_MSG_HANDSHAKE_FAILURE);
        }
        fail(c, ret);
    }
}

static void read_records(dp_conn *c)
{
    unsigned char none[1];
    for (int guard = 0; guard < DP_READ_LOOP_MAX && c->status == DP_STATUS_CONNECTED; guard++) {
        /* A zero-length read decrypts the next record and reports its size. */
        int ret = mbedtls_ssl_read(c->ssl, none, 0);
        if (ret == 0) {
            size_t avail = mbedtls_ssl_get_bytes_avail(c->ssl);
            if (avail == 0) {
                break; /* an empty record: nothing to deliver */
            }
            /* A record above the receive limit is consumed like one without
             * memory, then dropped: it is authentic (the peer is alive) but
             * bigger than the application agreed to handle. */
            uint32_t limit = c->cfg->max_record_in;
            int over_limit = limit != 0 && avail > limit;
            dp_node *n = over_limit ? NULL : node_new(NULL, avail);
            unsigned char *dst = n != NULL ? n->data : NULL;
            /* Without memory the record is still consumed (and dropped). */
            unsigned char scratch[256];
            size_t left = avail;
            while (left > 0) {
                size_t chunk = dst != NULL ? left : (left < sizeof(scratch) ? left : sizeof(scratch));
                int r = mbedtls_ssl_read(c->ssl, dst != NULL ? dst + (avail - left) : scratch,
                                         chunk);
                if (r <= 0) {
                    break;
                }
                left -= (size_t)r;
            }
            if (dst == NULL) {
                mbedtls_platform_zeroize(scratch, sizeof(scratch));
            }
            c->last_rx_ms = c->now_ms;
            note_activity(c);
            c->stats.records_in++;
            if (over_limit) {
                c->stats.dropped_over_limit++;
            } else if (n == NULL || left != 0 ||
                       c->app.bytes + c->app_held + sizeof(dp_node) + avail >
                           DP_APP_QUEUE_BYTES) {
                c->stats.dropped_in_full++;
                if (n != NULL) {
                    mbedtls_platform_zeroize(n->data, n->len);
                    dp_free(n);
                }
            } else {
                queue_push(&c->app, n);
            }
        } else if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) {
            break;
        } else if (ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
            /* Answer with our own close_notify, as Godot does. */
            (void)mbedtls_ssl_close_notify(c->ssl);
            c->status = DP_STATUS_DISCONNECTED;
            c->last_rx_ms = c->now_ms;
            set_reason(c, "peer closed the connection (close_notify)");
        } else {
            fail(c, ret);
        }
    }
}

/* The bad-MAC limit is ours (dp_config_set_badmac_limit; 0 = unlimited):
 * the count lives here, so it survives parking (the guard counts too) and
 * unlimited really is unlimited. */
static void check_bad_mac_limit(dp_conn *c)
{
    unsigned limit = c->cfg->badmac_limit;
    if (limit != 0 && c->status == DP_STATUS_CONNECTED && c->bad_mac_session >= limit) {
        fail(c, MBEDTLS_ERR_SSL_INVALID_MAC);
        set_reason(c, "too many records failed authentication (bad MAC limit)");
    }
}

/* Move Mbed TLS's count of records that failed authentication into ours.
 * DTLS contexts keep it in this private field (ssl.h: "DTLS: records with
 * a bad MAC received"; no getter in 3.6), counted only because dp_config
 * sets Mbed TLS's own limit to UINT_MAX; reset after every call, it never
 * gets near that. */
static void collect_bad_macs(dp_conn *c)
{
    unsigned seen = c->ssl->MBEDTLS_PRIVATE(badmac_seen_or_in_hsfraglen);
    if (seen != 0) {
        c->ssl->MBEDTLS_PRIVATE(badmac_seen_or_in_hsfraglen) = 0;
        c->stats.bad_mac += seen;
        c->bad_mac_session += seen;
    }
    check_bad_mac_limit(c);
}

static void drive(dp_conn *c)
{
    if (c->ssl == NULL) {
        return; /* parked: nothing runs without traffic */
    }
    if (c->status == DP_STATUS_HANDSHAKING) {
        handshake_step(c);
    }
    if (c->status == DP_STATUS_CONNECTED) {
        read_records(c);
    }
    if (c->ssl != NULL) {
        collect_bad_macs(c);
    }
}

static void advance_clock(dp_conn *c, int64_t now_ms)
{
    /* Time never runs backwards for a connection. */
    if (now_ms > c->now_ms) {
        c->now_ms = now_ms;
    }
}

static int ended(const dp_conn *c)
{
    return c->status != DP_STATUS_HANDSHAKING && c->status != DP_STATUS_CONNECTED;
}

/* ---- Mbed TLS context and parking ----------------------------------------- */

/* Mbed TLS calls this whenever it derives a TLS 1.2 key block (end of a
 * handshake, mbedtls_ssl_context_load): keep what park() needs. */
static void export_keys(void *ctx, mbedtls_ssl_key_export_type type, const unsigned char *secret,
                        size_t secret_len, const unsigned char client_random[32],
                        const unsigned char server_random[32], mbedtls_tls_prf_types prf)
{
    dp_conn *c = ctx;
    if (type != MBEDTLS_SSL_KEY_EXPORT_TLS12_MASTER_SECRET || secret_len != DP_MASTER_LEN) {
        return;
    }
    memcpy(c->master, secret, DP_MASTER_LEN);
    memcpy(c->randbytes, server_random, 32); /* the order of the key expansion */
    memcpy(c->randbytes + 32, client_random, 32);
    c->prf_type = (int)prf;
    c->have_master = 1;
}

static void master_wipe(dp_conn *c)
{
    mbedtls_platform_zeroize(c->master, sizeof(c->master));
    mbedtls_platform_zeroize(c->randbytes, sizeof(c->randbytes));
    c->have_master = 0;
}

/* A fresh Mbed TLS context on the connection's config, with our callbacks.
 * Server: bound to the peer's transport id (the cookie of its first hello). */
static int ssl_open(dp_conn *c)
{
    mbedtls_ssl_context *ssl = dp_calloc(1, sizeof(*ssl));
    if (ssl == NULL) {
        return DP_ERR_NO_MEMORY;
    }
    mbedtls_ssl_init(ssl);
    int ret = mbedtls_ssl_setup(ssl, &c->cfg->conf);
    if (ret == 0 && c->cfg->role == DP_ROLE_SERVER) {
        ret = mbedtls_ssl_set_client_transport_id(ssl, c->transport_id, c->transport_id_len);
    }
    if (ret != 0) {
        mbedtls_ssl_free(ssl);
        dp_free(ssl);
        return ret;
    }
    mbedtls_ssl_set_bio(ssl, c, bio_send, bio_recv, NULL);
    mbedtls_ssl_set_timer_cb(ssl, c, timer_set, timer_get);
    mbedtls_ssl_set_export_keys_cb(ssl, export_keys, c);
    if (c->cfg->role == DP_ROLE_SERVER && c->cfg->client_auth != DP_CLIENT_AUTH_NONE) {
        mbedtls_ssl_set_verify(ssl, verify_cb, c);
    }
    if (c->cfg->mtu != 0) {
        mbedtls_ssl_set_mtu(ssl, c->cfg->mtu);
    }
    c->ssl = ssl;
    return DP_OK;
}

static void ssl_release(dp_conn *c)
{
    if (c->ssl != NULL) {
        mbedtls_ssl_free(c->ssl); /* wipes keys and buffers */
        dp_free(c->ssl);
        c->ssl = NULL;
    }
}

static void blob_release(dp_conn *c)
{
    if (c->parked != NULL) {
        mbedtls_platform_zeroize(c->parked, c->parked_len);
        dp_free(c->parked);
        c->parked = NULL;
        c->parked_len = 0;
    }
}

static void guard_free(dp_conn *c);

/* An ended connection needs no keys or record buffers any more: only its
 * status, reason, stats and queued datagrams (a close_notify) remain. */
static void settle(dp_conn *c)
{
    if (ended(c)) {
        ssl_release(c);
        blob_release(c);
        guard_free(c);
        master_wipe(c);
    }
}

static void guard_free(dp_conn *c)
{
    if (c->guard != NULL) {
        mbedtls_cipher_free(&c->guard->cipher); /* zeroizes the key schedule */
        mbedtls_platform_zeroize(c->guard, sizeof(*c->guard));
        dp_free(c->guard);
        c->guard = NULL;
    }
}

/* The read direction of the live context as a guard (see dp_read_guard):
 * the key block again from the master secret (mbedtls_ssl_tls_prf, "key
 * expansion", as ssl_tls12_populate_transform does), the peer's write key
 * and IV set up in an Mbed TLS AEAD cipher context. NULL when something is
 * missing (then a parked connection wakes for any plausible record, as
 * before the guard existed). */
static dp_read_guard *guard_new(const dp_conn *c)
{
    if (!c->have_master || c->ssl == NULL) {
        return NULL;
    }
    const mbedtls_ssl_ciphersuite_t *suite =
        mbedtls_ssl_ciphersuite_from_id(mbedtls_ssl_get_ciphersuite_id_from_ssl(c->ssl));
    if (suite == NULL) {
        return NULL;
    }
    const mbedtls_cipher_info_t *info =
        mbedtls_cipher_info_from_type((mbedtls_cipher_type_t)suite->MBEDTLS_PRIVATE(cipher));
    if (info == NULL) {
        return NULL;
    }
    size_t keylen = mbedtls_cipher_info_get_key_bitlen(info) / 8;
    size_t fixed;
    mbedtls_cipher_mode_t mode = mbedtls_cipher_info_get_mode(info);
    if (mode == MBEDTLS_MODE_GCM || mode == MBEDTLS_MODE_CCM) {
        fixed = 4; /* + an 8-byte explicit nonce in each record */
    } else if (mode == MBEDTLS_MODE_CHACHAPOLY) {
        fixed = 12; /* RFC 7905: IV xor the record sequence number */
    } else {
        return NULL; /* only AEAD suites are compiled in */
    }
    unsigned char block[2 * 32 + 2 * 12] = {0};
    size_t need = 2 * keylen + 2 * fixed;
    if (keylen == 0 || keylen > 32 || need > sizeof(block)) {
        return NULL;
    }
    dp_read_guard *g = dp_calloc(1, sizeof(*g));
    if (g == NULL) {
        return NULL;
    }
    mbedtls_cipher_init(&g->cipher);
    int ret = mbedtls_ssl_tls_prf((mbedtls_tls_prf_types)c->prf_type, c->master, DP_MASTER_LEN,
                                  "key expansion", c->randbytes, sizeof(c->randbytes), block,
                                  need);
    /* Key block (RFC 5246 6.3, no MAC keys with AEAD): client write key,
     * server write key, client write IV, server write IV. */
    int server = c->cfg->role == DP_ROLE_SERVER;
    const unsigned char *key = block + (server ? 0 : keylen);
    const unsigned char *iv = block + 2 * keylen + (server ? 0 : fixed);
    if (ret == 0) {
        ret = mbedtls_cipher_setup(&g->cipher, info);
    }
    if (ret == 0) {
        ret = mbedtls_cipher_setkey(&g->cipher, key, (int)(keylen * 8), MBEDTLS_DECRYPT);
    }
    memcpy(g->iv, iv, fixed);
    mbedtls_platform_zeroize(block, sizeof(block));
    if (ret != 0) {
        mbedtls_cipher_free(&g->cipher);
        mbedtls_platform_zeroize(g, sizeof(*g));
        dp_free(g);
        return NULL;
    }
    g->fixed_ivlen = fixed;
    g->explicit_ivlen = 12 - fixed;
    g->taglen = (suite->MBEDTLS_PRIVATE(flags) & MBEDTLS_CIPHERSUITE_SHORT_TAG) ? 8 : 16;
    /* Private fields of the pinned Mbed TLS 3.6 (no getters): the epoch and
     * the anti-replay window that context_save just put in the blob. */
    g->epoch = c->ssl->MBEDTLS_PRIVATE(in_epoch);
    g->window_top = c->ssl->MBEDTLS_PRIVATE(in_window_top);
    g->window = c->ssl->MBEDTLS_PRIVATE(in_window);
    g->anti_replay = c->cfg->conf.MBEDTLS_PRIVATE(anti_replay) != MBEDTLS_SSL_ANTI_REPLAY_DISABLED;
    if (c->cid_negotiated) {
        g->cid_len = c->own_cid_len;
        memcpy(g->cid, c->own_cid, c->own_cid_len);
    }
    return g;
}

/* As mbedtls_ssl_dtls_replay_check: 1 if seq was already seen or is older
 * than the window. */
static int guard_replayed(const dp_read_guard *g, uint64_t seq)
{
    if (!g->anti_replay || seq > g->window_top) {
        return 0;
    }
    uint64_t bit = g->window_top - seq;
    return bit >= 64 || (g->window & ((uint64_t)1 << bit)) != 0;
}

#define DP_GUARD_PLAIN_MAX (MBEDTLS_SSL_IN_CONTENT_LEN + 256)

#if defined(_MSC_VER)
#define DP_CONN_THREAD_LOCAL __declspec(thread)
#else
#define DP_CONN_THREAD_LOCAL _Thread_local
#endif

/* Where a guarded record is decrypted (the plaintext is wiped at once; Mbed
 * TLS decrypts it again after the wake-up). Per thread: cffi releases the
 * GIL, so two threads may feed two connections at once. */
static DP_CONN_THREAD_LOCAL unsigned char guard_plain[DP_GUARD_PLAIN_MAX];

enum { GUARD_OTHER, GUARD_REPLAY, GUARD_BAD_MAC, GUARD_AUTHENTIC };

/* Judge the record at r (whole, header included) for the parked session:
 * GUARD_AUTHENTIC when Mbed TLS's AEAD accepts it (the RFC 5246/6347
 * nonce and additional data, as mbedtls_ssl_decrypt_buf builds them) and
 * it is no replay; GUARD_OTHER for what Mbed TLS drops before decrypting
 * (another epoch or version, unknown type, too short). */
static int guard_check(dp_read_guard *g, const unsigned char *r, size_t rec_len)
{
    unsigned char type = r[0];
    size_t header = DP_RECORD_HEADER_LEN;
    if (type == MBEDTLS_SSL_MSG_CID) {
        /* RFC 9146: only records with our CID; a session with a CID takes
         * no others (Mbed TLS: MBEDTLS_ERR_SSL_UNEXPECTED_CID). */
        if (g->cid_len == 0 || rec_len < header + g->cid_len ||
            memcmp(r + DP_CID_OFFSET, g->cid, g->cid_len) != 0) {
            return GUARD_OTHER;
        }
        header += g->cid_len;
    } else if (g->cid_len != 0 ||
               (type != MBEDTLS_SSL_MSG_CHANGE_CIPHER_SPEC && type != MBEDTLS_SSL_MSG_ALERT &&
                type != MBEDTLS_SSL_MSG_HANDSHAKE && type != MBEDTLS_SSL_MSG_APPLICATION_DATA)) {
        return GUARD_OTHER;
    }
    if (r[1] != 0xfe || r[2] != 0xfd || (((uint16_t)r[3] << 8) | r[4]) != g->epoch) {
        return GUARD_OTHER;
    }
    uint64_t seq = 0;
    for (int i = 5; i < 11; i++) {
        seq = (seq << 8) | r[i];
    }
    if (guard_replayed(g, seq)) {
        return GUARD_REPLAY;
    }
    size_t body = rec_len - header;
    if (body < g->explicit_ivlen + g->taglen) {
        return GUARD_OTHER;
    }
    size_t plain = body - g->explicit_ivlen - g->taglen;
    if (plain > DP_GUARD_PLAIN_MAX) {
        return GUARD_OTHER; /* larger than any record Mbed TLS accepts */
    }
    const unsigned char *p = r + header;
    unsigned char nonce[12];
    memcpy(nonce, g->iv, g->fixed_ivlen);
    if (g->explicit_ivlen != 0) {
        memcpy(nonce + g->fixed_ivlen, p, g->explicit_ivlen);
    } else {
        for (int i = 0; i < 8; i++) {
            nonce[4 + i] ^= r[3 + i]; /* epoch || sequence number */
        }
    }
    /* Additional data: RFC 5246 6.2.3.3, or for CID records RFC 9146 5.3
     * (seq_num_placeholder, tls12_cid, cid_length, tls12_cid, version,
     * epoch || sequence number, cid, length of the inner plaintext). */
    unsigned char ad[23 + DP_CID_MAX];
    size_t ad_len = 0;
    if (type == MBEDTLS_SSL_MSG_CID) {
        memset(ad, 0xff, 8);
        ad[8] = type;
        ad[9] = g->cid_len;
        ad_len = 10;
    } else {
        memcpy(ad, r + 3, 8); /* epoch || sequence number */
        ad_len = 8;
    }
    ad[ad_len++] = type;
    ad[ad_len++] = r[1];
    ad[ad_len++] = r[2];
    if (type == MBEDTLS_SSL_MSG_CID) {
        memcpy(ad + ad_len, r + 3, 8);
        ad_len += 8;
        memcpy(ad + ad_len, g->cid, g->cid_len);
        ad_len += g->cid_len;
    }
    ad[ad_len++] = (unsigned char)(plain >> 8);
    ad[ad_len++] = (unsigned char)(plain & 0xFF);
    size_t out_len = 0;
    int ret = mbedtls_cipher_auth_decrypt_ext(&g->cipher, nonce,
                                              sizeof(nonce), ad, ad_len,
                                              p + g->explicit_ivlen, plain + g->taglen,
                                              guard_plain, sizeof(guard_plain), &out_len,
                                              g->taglen);
    mbedtls_platform_zeroize(guard_plain, out_len);
    return ret == 0 ? GUARD_AUTHENTIC : GUARD_BAD_MAC;
}

/* Serialize an idle established connection and free its Mbed TLS context.
 * Mbed TLS refuses while anything is in flight (e.g. the server still keeps
 * its last flight because the peer sent nothing since the handshake): then
 * try again one period later. */
static void park(dp_conn *c, int count_for_trim)
{
    size_t need = 0;
    int ret = mbedtls_ssl_context_save(c->ssl, NULL, 0, &need);
    if (ret != MBEDTLS_ERR_SSL_BUFFER_TOO_SMALL || need == 0) {
        c->stats.park_refused++;
        note_activity(c);
        return;
    }
    unsigned char *blob = dp_calloc(1, need);
    if (blob == NULL) {
        c->stats.park_refused++;
        note_activity(c); /* stay active; memory may be back later */
        return;
    }
    int suite = mbedtls_ssl_get_ciphersuite_id_from_ssl(c->ssl);
    int max = mbedtls_ssl_get_max_out_record_payload(c->ssl);
    /* Before the save: it ends with a session reset (no suite, epoch or
     * window any more). */
    dp_read_guard *guard = guard_new(c);
    uint64_t newest = dp_conn_rx_newest(c);
    size_t len = 0;
    /* The sizing call checked every precondition: from here on save only
     * fails if the session reset it ends with fails, and then the context
     * no longer holds the connection. */
    ret = mbedtls_ssl_context_save(c->ssl, blob, need, &len);
    c->guard = guard;
    if (ret != 0 || len != need) {
        mbedtls_platform_zeroize(blob, need);
        dp_free(blob);
        guard_free(c);
        fail(c, ret != 0 ? ret : MBEDTLS_ERR_SSL_INTERNAL_ERROR);
        return;
    }
    master_wipe(c);          /* the blob has it; loading it brings it back */
    ssl_release(c);
    c->parked = blob;
    c->parked_len = len;
    c->rx_newest_parked = newest;
    c->suite_id = suite;
    c->max_payload = max;
    c->stats.parks++;
    if (count_for_trim) {
        dp_note_park();
    }
}

/* count_for_trim 0: parking again right after a wake-up that brought
 * nothing authentic gives back the memory that wake-up took; it does not
 * call for a malloc_trim. */
static void maybe_park(dp_conn *c, int count_for_trim)
{
    if (c->status == DP_STATUS_CONNECTED && c->ssl != NULL && c->park_due_ms >= 0 &&
        c->now_ms >= c->park_due_ms) {
        park(c, count_for_trim);
    }
}

/* Load the parked blob into a fresh context. Without memory for a context
 * the connection stays parked and the caller's operation fails; a blob Mbed
 * TLS rejects (cannot happen short of memory corruption) ends it. */
static int unpark(dp_conn *c)
{
    if (c->parked == NULL) {
        return DP_OK;
    }
    int ret = ssl_open(c);
    if (ret != 0) {
        return ret;
    }
    ret = mbedtls_ssl_context_load(c->ssl, c->parked, c->parked_len);
    blob_release(c);
    guard_free(c);
    if (ret != 0) {
        fail(c, ret);
        set_reason(c, "could not restore the parked connection");
        settle(c);
        return ret;
    }
    c->stats.unparks++;
    return DP_OK;
}

/* Only a DTLS 1.2 record of epoch 1 (this session: renegotiation and
 * in-context client port reuse are compiled out) can change a parked
 * connection; Mbed TLS drops everything else, so it does not unpark. */
static int may_hold_record(const unsigned char *d, size_t len)
{
    if (len < 13) {
        return 0;
    }
    unsigned char type = d[0];
    if (type != MBEDTLS_SSL_MSG_CHANGE_CIPHER_SPEC && type != MBEDTLS_SSL_MSG_ALERT &&
        type != MBEDTLS_SSL_MSG_HANDSHAKE && type != MBEDTLS_SSL_MSG_APPLICATION_DATA &&
        type != MBEDTLS_SSL_MSG_CID) {
        return 0;
    }
    if (d[1] != 0xfe || (d[2] != 0xfd && d[2] != 0xff)) {
        return 0;
    }
    return d[3] == 0 && d[4] == 1;
}

/* ---- Datagrams Mbed TLS must not see ---------------------------------------- */

/* The CID length of this side's records (config-wide, as Mbed TLS parses
 * them), 0 when CID records are not ours to parse. */
static size_t conf_cid_len(const dp_conn *c)
{
    return c->cfg->cid_enabled ? c->cfg->own_cid_len : 0;
}

/* Header length of the record at d (len >= DP_RECORD_HEADER_LEN bytes
 * there), or 0 when it is a CID record this connection cannot parse or it
 * does not fit. */
static size_t record_header_at(const unsigned char *d, size_t len, size_t cid_len)
{
    if (d[0] != MBEDTLS_SSL_MSG_CID) {
        return DP_RECORD_HEADER_LEN;
    }
    if (cid_len == 0 || len < DP_RECORD_HEADER_LEN + cid_len) {
        return 0;
    }
    return DP_RECORD_HEADER_LEN + cid_len;
}

static size_t record_len_at(const unsigned char *d, size_t header)
{
    return header + (((size_t)d[header - 2] << 8) | d[header - 1]);
}

/* Length of the whole records at the start of a datagram. Mbed TLS 3.6
 * takes bytes after a record that are too few for a record header for a
 * record split across datagrams and fails the connection with
 * MBEDTLS_ERR_SSL_INTERNAL_ERROR ("should never happen"), even after a
 * record it skipped (old epoch, replay): a forged datagram would end any
 * connection. Such a tail can never be a record, so it is cut off here. A
 * datagram whose first record is incomplete, or with a CID record this
 * side cannot parse (no CID configured: Mbed TLS drops it with the rest of
 * the datagram), is left as it is. */
static size_t whole_records_len(const unsigned char *d, size_t len, size_t cid_len)
{
    size_t pos = 0;
    while (len - pos >= DP_RECORD_HEADER_LEN) {
        size_t header = record_header_at(d + pos, len - pos, cid_len);
        if (header == 0) {
            return len;
        }
        size_t rec = record_len_at(d + pos, header);
        if (rec > len - pos) {
            break;
        }
        pos += rec;
    }
    return pos == 0 ? len : pos;
}

/* ---- Parked connections: what may wake one ----------------------------------- */

/* 1 if the datagram holds a record worth waking a parked connection for:
 * one the guard authenticates (not a replay). Epoch-0 records never wake
 * it: a reconnecting client's ClientHello is the host's or the endpoint's
 * business (a successor session, RFC 6347 4.2.8), never this context's.
 * Records that fail authentication count as bad MACs, as they would awake.
 * Without a guard (see guard_new), any plausible record header wakes it. */
static int parked_wakes(dp_conn *c, const unsigned char *d, size_t len)
{
    if (c->guard == NULL) {
        return may_hold_record(d, len);
    }
    size_t pos = 0;
    while (d != NULL && len - pos >= DP_RECORD_HEADER_LEN) {
        const unsigned char *r = d + pos;
        size_t header = record_header_at(r, len - pos, conf_cid_len(c));
        if (header == 0) {
            return 0; /* a CID record without a CID configured: Mbed TLS drops the rest too */
        }
        size_t rec = record_len_at(r, header);
        if (rec > len - pos) {
            return 0;
        }
        if (r[3] != 0 || r[4] != 0) {
            int verdict = guard_check(c->guard, r, rec);
            if (verdict == GUARD_AUTHENTIC) {
                return 1;
            }
            if (verdict == GUARD_BAD_MAC) {
                c->stats.bad_mac++;
                c->bad_mac_session++;
            }
        }
        pos += rec;
    }
    return 0;
}

/* ---- Lifetime ------------------------------------------------------------- */

int dp_conn_new(dp_config *cfg, const char *hostname, const unsigned char *transport_id,
                size_t transport_id_len, int64_t now_ms, dp_conn **out)
{
    now_ms = dp_resolve_now(now_ms);
    if (out == NULL || cfg == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    *out = NULL;
    if (!cfg->finished) {
        return DP_ERR_BAD_STATE;
    }
    int server = cfg->role == DP_ROLE_SERVER;
    if (server && (transport_id == NULL || transport_id_len == 0 ||
                   transport_id_len > DP_TRANSPORT_ID_MAX)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    const char *name = NULL;
    if (!server) {
        name = cfg->common_name_override != NULL ? cfg->common_name_override : hostname;
        if (name != NULL && name[0] == '\0') {
            name = NULL;
        }
        /* Verifying a name needs one; PSK-only clients verify no certificate. */
        if (name == NULL && cfg->verify_mode == DP_VERIFY_FULL && cfg->psk_count == 0) {
            return DP_ERR_INVALID_ARGUMENT;
        }
    }
    dp_conn *c = dp_calloc(1, sizeof(*c));
    if (c == NULL) {
        return DP_ERR_NO_MEMORY;
    }
    c->cfg = cfg;
    if (server) {
        memcpy(c->transport_id, transport_id, transport_id_len);
        c->transport_id_len = transport_id_len;
    }
    int ret = ssl_open(c);
    if (ret == 0 && cfg->cid_enabled) {
        /* Our CID: the configured prefix (a worker id), then random bytes. */
        c->own_cid_len = cfg->own_cid_len;
        memcpy(c->own_cid, cfg->cid_prefix, cfg->cid_prefix_len);
        ret = dp_random(c->own_cid + cfg->cid_prefix_len,
                        (size_t)cfg->own_cid_len - cfg->cid_prefix_len);
        if (ret == 0) {
            ret = mbedtls_ssl_set_cid(c->ssl, MBEDTLS_SSL_CID_ENABLED, c->own_cid,
                                      c->own_cid_len);
        }
    }
    if (ret == 0 && !server) {
        /* Unsafe modes clear the name explicitly: no SNI, no name check. */
        ret = mbedtls_ssl_set_hostname(c->ssl,
                                       cfg->verify_mode == DP_VERIFY_FULL ? name : NULL);
    }
    if (ret != 0) {
        ssl_release(c);
        dp_free(c);
        return ret;
    }
    dp_config_ref(cfg);
    c->park_due_ms = -1;
    c->status = DP_STATUS_HANDSHAKING;
    c->now_ms = now_ms;
    c->hs_start_ms = now_ms;
    c->last_rx_ms = now_ms;
    set_reason(c, "handshaking");
    *out = c;
    return DP_OK;
}

void dp_conn_free(dp_conn *c)
{
    if (c == NULL) {
        return;
    }
    ssl_release(c);
    blob_release(c);
    guard_free(c);
    master_wipe(c);
    session_release(c);
    peer_release(c);
    queue_clear(&c->out, 0);
    queue_clear(&c->app, 1);
    dp_config_free(c->cfg);
    dp_free(c);
}

/* ---- Driving -------------------------------------------------------------- */

int dp_conn_feed(dp_conn *c, const unsigned char *datagram, size_t len, int64_t now_ms)
{
    now_ms = dp_resolve_now(now_ms);
    if (c == NULL || (datagram == NULL && len != 0)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    advance_clock(c, now_ms);
    c->stats.datagrams_in++;
    if (ended(c)) {
        c->stats.dropped_closed++;
        return c->status;
    }
    if (datagram != NULL) {
        len = whole_records_len(datagram, len, conf_cid_len(c));
    }
    int woke = 0;
    if (c->parked != NULL) {
        if (!parked_wakes(c, datagram, len)) {
            c->stats.discarded++;
            check_bad_mac_limit(c);
            settle(c);
            return c->status;
        }
        if (unpark(c) != 0) {
            if (!ended(c)) {
                c->stats.dropped_in_full++; /* no memory for a context */
            }
            return c->status;
        }
        woke = 1;
    }
    int was_connected = c->status == DP_STATUS_CONNECTED;
    uint64_t records_before = c->stats.records_in;
    c->in_data = datagram;
    c->in_len = len;
    c->in_pending = 1;
    drive(c);
    c->in_pending = 0;
    c->in_data = NULL;
    if (was_connected && c->status == DP_STATUS_CONNECTED &&
        c->stats.records_in == records_before) {
        c->stats.discarded++;
    }
    /* A datagram with nothing authentic in it does not keep the connection
     * awake: it parks again at once if it was due. */
    maybe_park(c, !woke);
    settle(c);
    return c->status;
}

int dp_conn_update(dp_conn *c, int64_t now_ms)
{
    now_ms = dp_resolve_now(now_ms);
    if (c == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    advance_clock(c, now_ms);
    uint32_t deadline = c->cfg->hs_deadline_ms;
    uint32_t idle = c->cfg->idle_timeout_ms;
    if (c->status == DP_STATUS_HANDSHAKING && deadline != 0 &&
        c->now_ms - c->hs_start_ms >= (int64_t)deadline) {
        fail(c, MBEDTLS_ERR_SSL_TIMEOUT);
        set_reason(c, "handshake deadline passed");
    } else if (c->status == DP_STATUS_CONNECTED && idle != 0 &&
               c->now_ms - c->last_rx_ms >= (int64_t)idle) {
        /* Tell the peer, so it does not wait for its own timeout (a Godot
         * client sees STATUS_DISCONNECTED). A parked connection needs its
         * keys back for that; without memory for them it ends silently. */
        int told = unpark(c) == 0 && c->ssl != NULL && mbedtls_ssl_close_notify(c->ssl) == 0;
        fail(c, MBEDTLS_ERR_SSL_TIMEOUT);
        set_reason(c, told ? "idle timeout: no record received from the peer (close_notify sent)"
                           : "idle timeout: no record received from the peer");
    } else if (!ended(c)) {
        if (timer_get(c) == 2) {
            c->stats.retransmit_updates++;
        }
        drive(c);
    }
    maybe_park(c, 1);
    settle(c);
    return c->status;
}

int dp_conn_note_unreachable(dp_conn *c, int err, int64_t now_ms)
{
    now_ms = dp_resolve_now(now_ms);
    if (c == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    advance_clock(c, now_ms);
    const char *what = dp_remote_error_text(err);
    if (c->status == DP_STATUS_HANDSHAKING && c->cfg->role == DP_ROLE_CLIENT) {
        /* Godot's client fails here too: nothing listens at the address. */
        c->last_error = DP_ERR_ERRNO_BASE - err;
        c->status = DP_STATUS_ERROR;
        snprintf(c->reason, sizeof(c->reason),
                 "destination unreachable: ICMP %s while handshaking "
                 "(no DTLS server listening there?)",
                 what);
        settle(c);
    } else if (!ended(c)) {
        c->stats.icmp_ignored++;
        if (c->status == DP_STATUS_CONNECTED) {
            snprintf(c->reason, sizeof(c->reason),
                     "connected; ignored %llu ICMP error(s), last: %s (unauthenticated: "
                     "only the idle timeout ends the session)",
                     (unsigned long long)c->stats.icmp_ignored, what);
        }
    }
    return c->status;
}

int64_t dp_conn_next_timeout(const dp_conn *c)
{
    if (c == NULL || ended(c)) {
        return -1;
    }
    int64_t next = -1;
    if (c->timer_active) {
        next = c->timer_start_ms + (int64_t)c->timer_fin_ms;
    }
    int64_t limit = -1;
    if (c->status == DP_STATUS_HANDSHAKING && c->cfg->hs_deadline_ms != 0) {
        limit = c->hs_start_ms + (int64_t)c->cfg->hs_deadline_ms;
    } else if (c->status == DP_STATUS_CONNECTED && c->cfg->idle_timeout_ms != 0) {
        limit = c->last_rx_ms + (int64_t)c->cfg->idle_timeout_ms;
    }
    if (limit >= 0 && (next < 0 || limit < next)) {
        next = limit;
    }
    if (c->status == DP_STATUS_CONNECTED && c->ssl != NULL && c->park_due_ms >= 0 &&
        (next < 0 || c->park_due_ms < next)) {
        next = c->park_due_ms;
    }
    return next;
}

/* ---- Data ----------------------------------------------------------------- */

int dp_conn_outgoing_count(const dp_conn *c)
{
    return c == NULL ? DP_ERR_INVALID_ARGUMENT : (int)c->out.count;
}

int dp_conn_pop_outgoing(dp_conn *c, unsigned char *buf, size_t cap)
{
    if (c == NULL || (buf == NULL && cap != 0)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    return queue_pop(&c->out, buf, cap, 0);
}

void dp_conn_set_app_held(dp_conn *c, size_t bytes)
{
    if (c != NULL) {
        c->app_held = bytes;
    }
}

int dp_conn_pending_count(const dp_conn *c)
{
    return c == NULL ? DP_ERR_INVALID_ARGUMENT : (int)c->app.count;
}

int dp_conn_read(dp_conn *c, unsigned char *buf, size_t cap)
{
    if (c == NULL || (buf == NULL && cap != 0)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    return queue_pop(&c->app, buf, cap, 1);
}

int dp_conn_max_payload(const dp_conn *c)
{
    if (c == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (c->status != DP_STATUS_CONNECTED) {
        return DP_ERR_BAD_STATE;
    }
    return c->ssl != NULL ? mbedtls_ssl_get_max_out_record_payload(c->ssl) : c->max_payload;
}

int dp_conn_write(dp_conn *c, const unsigned char *data, size_t len, int64_t now_ms)
{
    now_ms = dp_resolve_now(now_ms);
    if (c == NULL || (data == NULL && len != 0)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (c->status != DP_STATUS_CONNECTED) {
        return DP_ERR_BAD_STATE;
    }
    advance_clock(c, now_ms);
    if (len == 0) {
        return 0; /* nothing to send, as in Godot's put_packet */
    }
    int max = dp_conn_max_payload(c);
    if (max < 0) {
        return max;
    }
    if (len > (size_t)max) {
        return DP_ERR_TOO_LARGE; /* one record per payload: no fragmentation */
    }
    int ret = unpark(c);
    if (ret != 0) {
        return ret; /* still parked (no memory) or ended */
    }
    ret = mbedtls_ssl_write(c->ssl, data, len);
    if (ret < 0) {
        fail(c, ret);
        settle(c);
        return ret;
    }
    note_activity(c);
    c->stats.records_out++;
    return ret;
}

int dp_conn_write_direct(dp_conn *c, const unsigned char *data, size_t len, int64_t now_ms,
                         unsigned char *out, size_t out_cap, size_t *out_len)
{
    if (c == NULL || out == NULL || out_len == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    *out_len = 0;
    c->direct_buf = out;
    c->direct_cap = out_cap;
    c->direct_len = 0;
    int rc = dp_conn_write(c, data, len, now_ms);
    *out_len = c->direct_len;
    c->direct_buf = NULL;
    c->direct_cap = 0;
    c->direct_len = 0;
    return rc;
}

int dp_conn_close(dp_conn *c, int64_t now_ms)
{
    now_ms = dp_resolve_now(now_ms);
    if (c == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    advance_clock(c, now_ms);
    /* Parked: the close_notify needs the keys (without memory for them the
     * connection ends silently, like a lost close_notify). */
    if (c->status == DP_STATUS_CONNECTED && unpark(c) == 0 && c->ssl != NULL) {
        (void)mbedtls_ssl_close_notify(c->ssl);
    }
    if (!ended(c)) {
        c->status = DP_STATUS_DISCONNECTED;
        set_reason(c, "closed locally");
    }
    settle(c);
    return DP_OK;
}

/* ---- Introspection -------------------------------------------------------- */

int dp_conn_status(const dp_conn *c)
{
    return c == NULL ? DP_ERR_INVALID_ARGUMENT : c->status;
}

int dp_conn_last_error(const dp_conn *c)
{
    return c == NULL ? DP_ERR_INVALID_ARGUMENT : c->last_error;
}

uint32_t dp_conn_verify_flags(const dp_conn *c)
{
    return c == NULL ? 0 : c->verify_flags;
}

static int copy_text(const char *text, char *buf, size_t cap)
{
    if (buf == NULL || cap == 0) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    size_t n = strlen(text);
    if (n >= cap) {
        n = cap - 1;
    }
    memcpy(buf, text, n);
    buf[n] = '\0';
    return (int)n;
}

int dp_conn_reason(const dp_conn *c, char *buf, size_t cap)
{
    if (c == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    return copy_text(c->reason, buf, cap);
}

int dp_conn_ciphersuite(const dp_conn *c, char *buf, size_t cap)
{
    if (c == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    /* The suite of the last completed handshake ("" before one), also after
     * the session ended: callers report it from disconnect handlers. */
    const char *name = c->suite_id != 0 ? mbedtls_ssl_get_ciphersuite_name(c->suite_id) : "";
    return copy_text(name, buf, cap);
}

int dp_conn_handshake_progressed(const dp_conn *c)
{
    if (c == NULL || c->status != DP_STATUS_HANDSHAKING) {
        return 1;
    }
    /* A server waits in CLIENT_CERTIFICATE (client auth) or
     * CLIENT_KEY_EXCHANGE after its first flight (Mbed TLS 3.6 states). A
     * resumed handshake skips both and waits for the client's Finished
     * having seen only a cookie and a ticket, which anyone holding a ticket
     * can replay: no progress either until it completes. */
    return c->ssl != NULL && c->key_exchanged &&
           c->ssl->MBEDTLS_PRIVATE(state) > MBEDTLS_SSL_CLIENT_KEY_EXCHANGE;
}

int dp_conn_parked(const dp_conn *c)
{
    return c == NULL ? DP_ERR_INVALID_ARGUMENT : c->parked != NULL;
}

uint64_t dp_conn_dropped_over_limit(const dp_conn *c)
{
    return c != NULL ? c->stats.dropped_over_limit : 0;
}

void dp_conn_get_stats(const dp_conn *c, dp_conn_stats *out)
{
    if (c != NULL && out != NULL) {
        *out = c->stats;
    }
}

int dp_conn_cid(const dp_conn *c, uint8_t *own, size_t *own_len, uint8_t *peer,
                size_t *peer_len)
{
    if (c == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    size_t o = c->cid_negotiated ? c->own_cid_len : 0;
    size_t p = c->cid_negotiated ? c->peer_cid_len : 0;
    if (own != NULL) {
        memcpy(own, c->own_cid, o);
    }
    if (own_len != NULL) {
        *own_len = o;
    }
    if (peer != NULL) {
        memcpy(peer, c->peer_cid, p);
    }
    if (peer_len != NULL) {
        *peer_len = p;
    }
    return c->cid_negotiated;
}

uint64_t dp_conn_rx_newest(const dp_conn *c)
{
    if (c == NULL) {
        return 0;
    }
    if (c->ssl == NULL) {
        return c->parked != NULL ? c->rx_newest_parked : 0;
    }
    /* Private fields of the pinned 3.6 (as guard_new): Mbed TLS moves the
     * window top only after a record was authenticated (replay_update). */
    return ((uint64_t)c->ssl->MBEDTLS_PRIVATE(in_epoch) << 48) |
           (c->ssl->MBEDTLS_PRIVATE(in_window_top) & 0xFFFFFFFFFFFFull);
}

/* ---- Resumption and peer certificates ------------------------------------- */

int dp_conn_set_session(dp_conn *c, const unsigned char *blob, size_t len)
{
    if (c == NULL || (blob == NULL && len != 0)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (c->cfg->role != DP_ROLE_CLIENT || c->ssl == NULL || c->status != DP_STATUS_HANDSHAKING ||
        c->ssl->MBEDTLS_PRIVATE(state) != MBEDTLS_SSL_HELLO_REQUEST) {
        return DP_ERR_BAD_STATE;
    }
    if (len <= DP_SESSION_HEADER_LEN || memcmp(blob, DP_SESSION_MAGIC, 4) != 0 ||
        blob[4] != DP_SESSION_FORMAT ||
        (blob[5] != DP_VERIFY_FULL && blob[5] != DP_VERIFY_CHAIN_ONLY &&
         blob[5] != DP_VERIFY_NONE)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    mbedtls_ssl_session session;
    mbedtls_ssl_session_init(&session);
    int ret = mbedtls_ssl_session_load(&session, blob + DP_SESSION_HEADER_LEN,
                                       len - DP_SESSION_HEADER_LEN);
    /* A resumed handshake checks no certificate: never resume a session
     * whose server was authenticated less strictly than this client would
     * (saved by an unsafe client, or its verification failed). */
    if (ret == 0 && verify_strength(blob[5]) < verify_strength(c->cfg->verify_mode)) {
        ret = MBEDTLS_ERR_X509_CERT_VERIFY_FAILED;
    }
    if (ret == 0) {
        ret = mbedtls_ssl_set_session(c->ssl, &session); /* copies it */
    }
    mbedtls_ssl_session_free(&session);
    return ret;
}

int dp_conn_get_session(const dp_conn *c, unsigned char *buf, size_t cap)
{
    if (c == NULL || (buf == NULL && cap != 0)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (c->session == NULL) {
        return DP_ERR_BAD_STATE;
    }
    if (cap == 0) {
        return (int)c->session_len;
    }
    if (cap < c->session_len) {
        return DP_ERR_BUFFER_TOO_SMALL;
    }
    memcpy(buf, c->session, c->session_len);
    return (int)c->session_len;
}

int dp_conn_resumed(const dp_conn *c)
{
    return c == NULL ? DP_ERR_INVALID_ARGUMENT : c->resumed;
}

void dp_conn_detach_outcome(dp_conn *c, unsigned char **session, size_t *session_len,
                            dp_peer_info **peer)
{
    *session = c->session;
    *session_len = c->session_len;
    *peer = c->status == DP_STATUS_HANDSHAKING ? NULL : c->peer;
    c->session = NULL;
    c->session_len = 0;
    if (*peer != NULL) {
        c->peer = NULL;
    }
}

int dp_conn_peer_certificate(const dp_conn *c, char *subject, size_t subject_cap, char *san,
                             size_t san_cap, unsigned char *fingerprint)
{
    if (c == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    return dp_peer_info_read(c->status == DP_STATUS_HANDSHAKING ? NULL : c->peer, subject,
                             subject_cap, san, san_cap, fingerprint);
}

int dp_peer_info_read(const dp_peer_info *p, char *subject, size_t subject_cap, char *san,
                      size_t san_cap, unsigned char *fingerprint)
{
    if (subject == NULL || subject_cap == 0 || san == NULL || san_cap == 0 ||
        fingerprint == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    subject[0] = '\0';
    san[0] = '\0';
    if (p == NULL || !p->have_fingerprint) {
        return 0;
    }
    int mask = 2;
    memcpy(fingerprint, p->fingerprint, DP_FINGERPRINT_LEN);
    if (p->have_names) {
        snprintf(subject, subject_cap, "%s", p->subject);
        snprintf(san, san_cap, "%s", p->san);
        mask |= 1;
    }
    return mask;
}

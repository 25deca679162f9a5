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

#include "mbedtls/error.h"
#include "mbedtls/platform_util.h"
#include "mbedtls/x509.h"

#define DP_OUT_QUEUE_MAX 64  /* a handshake flight at a small MTU fits easily */
#define DP_APP_QUEUE_MAX 256 /* records waiting for the application */
#define DP_READ_LOOP_MAX 4096
#define DP_REASON_LEN 320

typedef struct dp_node {
    struct dp_node *next;
    size_t len;
    unsigned char data[];
} dp_node;

typedef struct dp_queue {
    dp_node *head;
    dp_node *tail;
    size_t count;
} dp_queue;

struct dp_conn {
    mbedtls_ssl_context *ssl; /* own heap; NULL while parked */
    unsigned char *parked;    /* serialized context while parked (keys!) */
    size_t parked_len;
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
    unsigned char transport_id[DP_TRANSPORT_ID_MAX];
    size_t transport_id_len;
    dp_conn_stats stats;
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
    if (c->out.count >= DP_OUT_QUEUE_MAX) {
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
        snprintf(c->reason, sizeof(c->reason), "fatal alert received from peer: %s (%u)",
                 alert_name(code), (unsigned)code);
    } else if (ret == MBEDTLS_ERR_SSL_TIMEOUT) {
        set_reason(c, "handshake timed out: the peer stopped answering");
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

static void on_connected(dp_conn *c)
{
    c->status = DP_STATUS_CONNECTED;
    c->last_rx_ms = c->now_ms;
    /* Remembered for the session's whole life: parked, and after it ended
     * (its Mbed TLS context is freed at once then). */
    c->suite_id = mbedtls_ssl_get_ciphersuite_id_from_ssl(c->ssl);
    note_activity(c);
    uint32_t flags = mbedtls_ssl_get_verify_result(c->ssl);
    c->verify_flags = flags == (uint32_t)-1 ? 0 : flags;
    set_reason(c, "connected");
}

static void handshake_step(dp_conn *c)
{
    int ret = mbedtls_ssl_handshake(c->ssl);
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
            dp_node *n = node_new(NULL, avail);
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
            c->last_rx_ms = c->now_ms;
            note_activity(c);
            c->stats.records_in++;
            if (n == NULL || left != 0 || c->app.count >= DP_APP_QUEUE_MAX) {
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

static unsigned bad_mac_seen(const dp_conn *c)
{
    /* DTLS contexts keep the count of records that failed authentication
     * here (ssl.h: "DTLS: records with a bad MAC received"); no getter is
     * public in 3.6. It only counts because dp_config always sets a limit. */
    return c->ssl->MBEDTLS_PRIVATE(badmac_seen_or_in_hsfraglen);
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
    unsigned seen = bad_mac_seen(c);
    if (seen > c->stats.bad_mac) {
        c->stats.bad_mac = seen;
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

/* An ended connection needs no keys or record buffers any more: only its
 * status, reason, stats and queued datagrams (a close_notify) remain. */
static void settle(dp_conn *c)
{
    if (ended(c)) {
        ssl_release(c);
        blob_release(c);
    }
}

/* Serialize an idle established connection and free its Mbed TLS context.
 * Mbed TLS refuses while anything is in flight (e.g. the server still keeps
 * its last flight because the peer sent nothing since the handshake): then
 * try again one period later. */
static void park(dp_conn *c)
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
    size_t len = 0;
    /* The sizing call checked every precondition: from here on save only
     * fails if the session reset it ends with fails, and then the context
     * no longer holds the connection. */
    ret = mbedtls_ssl_context_save(c->ssl, blob, need, &len);
    if (ret != 0 || len != need) {
        mbedtls_platform_zeroize(blob, need);
        dp_free(blob);
        fail(c, ret != 0 ? ret : MBEDTLS_ERR_SSL_INTERNAL_ERROR);
        return;
    }
    ssl_release(c);
    c->parked = blob;
    c->parked_len = len;
    c->suite_id = suite;
    c->max_payload = max;
    c->stats.parks++;
    dp_note_park();
}

static void maybe_park(dp_conn *c)
{
    if (c->status == DP_STATUS_CONNECTED && c->ssl != NULL && c->park_due_ms >= 0 &&
        c->now_ms >= c->park_due_ms) {
        park(c);
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

#define DP_RECORD_HEADER_LEN 13

static size_t record_len_at(const unsigned char *d)
{
    return DP_RECORD_HEADER_LEN + (((size_t)d[11] << 8) | d[12]);
}

/* Length of the whole records at the start of a datagram. Mbed TLS 3.6
 * takes bytes after a record that are too few for a record header for a
 * record split across datagrams and fails the connection with
 * MBEDTLS_ERR_SSL_INTERNAL_ERROR ("should never happen"), even after a
 * record it skipped (old epoch, replay): a forged datagram would end any
 * connection. Such a tail can never be a record, so it is cut off here. A
 * datagram whose first record is incomplete, or with a CID record (its
 * header is longer; no connection negotiates a CID, so Mbed TLS drops it
 * with the rest of the datagram), is left as it is. */
static size_t whole_records_len(const unsigned char *d, size_t len)
{
    size_t pos = 0;
    while (len - pos >= DP_RECORD_HEADER_LEN) {
        if (d[pos] == MBEDTLS_SSL_MSG_CID) {
            return len;
        }
        size_t rec = record_len_at(d + pos);
        if (rec > len - pos) {
            break;
        }
        pos += rec;
    }
    return pos == 0 ? len : pos;
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
        len = whole_records_len(datagram, len);
    }
    if (c->parked != NULL) {
        if (!may_hold_record(datagram, len)) {
            c->stats.discarded++;
            return c->status;
        }
        if (unpark(c) != 0) {
            if (!ended(c)) {
                c->stats.dropped_in_full++; /* no memory for a context */
            }
            return c->status;
        }
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
    maybe_park(c);
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
        fail(c, MBEDTLS_ERR_SSL_TIMEOUT);
        set_reason(c, "idle timeout: no record received from the peer");
    } else if (!ended(c)) {
        if (timer_get(c) == 2) {
            c->stats.retransmit_updates++;
        }
        drive(c);
    }
    maybe_park(c);
    settle(c);
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
     * CLIENT_KEY_EXCHANGE after its first flight (Mbed TLS 3.6 states). */
    return c->ssl != NULL && c->ssl->MBEDTLS_PRIVATE(state) > MBEDTLS_SSL_CLIENT_KEY_EXCHANGE;
}

int dp_conn_parked(const dp_conn *c)
{
    return c == NULL ? DP_ERR_INVALID_ARGUMENT : c->parked != NULL;
}

void dp_conn_get_stats(const dp_conn *c, dp_conn_stats *out)
{
    if (c != NULL && out != NULL) {
        *out = c->stats;
    }
}

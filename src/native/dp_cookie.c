/*
 * dp_cookie.c: the stateless cookie gate of a DTLS server (RFC 6347 4.2.1).
 *
 * A datagram from an address without a connection is judged here before any
 * per-peer TLS state exists: garbage is dropped, a ClientHello without a valid
 * cookie gets a HelloVerifyRequest (never larger than the hello), and a
 * ClientHello with a valid cookie is admitted. The gate allocates nothing per
 * datagram, so a spoofed flood costs CPU, never memory.
 *
 * Cookie = tag || HMAC-SHA-256(K_slot, tag || transport_id)[0..16), where
 * slot = now_ms / slot_ms, tag = slot mod 256, and K_slot = HKDF-SHA-256 of
 * the gate secret with the slot number as info. Keys thus rotate every slot;
 * a cookie is accepted in its own slot and the next one. Gates sharing a
 * secret (and a clock) accept each other's cookies.
 */
#include "dp_engine.h"

#include <string.h>

#include "mbedtls/constant_time.h"
#include "mbedtls/hkdf.h"
#include "mbedtls/md.h"
#include "mbedtls/platform_util.h"
#include "mbedtls/threading.h"

#define DP_GATE_SECRET_MAX 64
#define DP_GATE_KEY_LEN 32
#define DP_COOKIE_MAC_LEN (DP_COOKIE_LEN - 1)
#define DP_DEFAULT_SLOT_MS 30000u

static const unsigned char DP_COOKIE_SALT[] = "dtlspeer cookie key v1";

typedef struct dp_slot_key {
    int64_t slot; /* -1 = empty */
    unsigned char key[DP_GATE_KEY_LEN];
    /* HMAC context keyed with `key` (set up once per gate, re-keyed when the
     * slot changes): a cookie costs hmac_reset/update/finish, no allocation
     * and no key schedule per hello. */
    mbedtls_md_context_t hmac;
} dp_slot_key;

struct dp_cookie_gate {
    mbedtls_threading_mutex_t lock; /* guards everything below */
    int refcount;
    unsigned char secret[DP_GATE_SECRET_MAX];
    size_t secret_len;
    uint32_t slot_ms;
    int wall_clock;       /* shared secret: DP_NOW reads the wall clock (see below) */
    int64_t last_now_ms;  /* newest time seen; used by the connection callbacks */
    dp_slot_key keys[2];  /* current and previous slot */
    dp_cookie_stats stats;
};

/* ---- Lifetime ------------------------------------------------------------- */

int dp_cookie_gate_new(const unsigned char *secret, size_t secret_len, uint32_t slot_ms,
                       dp_cookie_gate **out)
{
    if (out == NULL || (secret == NULL && secret_len != 0) || secret_len > DP_GATE_SECRET_MAX) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (secret != NULL && secret_len < 16) {
        return DP_ERR_INVALID_ARGUMENT; /* a shared secret must resist guessing */
    }
    *out = NULL;
    dp_cookie_gate *gate = dp_calloc(1, sizeof(*gate));
    if (gate == NULL) {
        return DP_ERR_NO_MEMORY;
    }
    if (secret != NULL) {
        memcpy(gate->secret, secret, secret_len);
        gate->secret_len = secret_len;
    } else {
        int rnd = dp_random(gate->secret, 32);
        if (rnd != 0) {
            dp_free(gate);
            return rnd;
        }
        gate->secret_len = 32;
    }
    const mbedtls_md_info_t *md = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    int ret = 0;
    for (int i = 0; i < 2; i++) {
        mbedtls_md_init(&gate->keys[i].hmac);
        gate->keys[i].slot = -1;
        if (ret == 0) {
            ret = mbedtls_md_setup(&gate->keys[i].hmac, md, 1);
        }
    }
    if (ret != 0) {
        mbedtls_md_free(&gate->keys[0].hmac);
        mbedtls_md_free(&gate->keys[1].hmac);
        mbedtls_platform_zeroize(gate, sizeof(*gate));
        dp_free(gate);
        return ret;
    }
    mbedtls_mutex_init(&gate->lock);
    gate->refcount = 1;
    gate->slot_ms = slot_ms != 0 ? slot_ms : DP_DEFAULT_SLOT_MS;
    /* Gates sharing a secret (several processes or machines) must agree on
     * the time slot: they read the wall clock. Only the gate does: every
     * connection timer stays on the monotonic clock, so a clock step moves
     * cookie slots, never idle timeouts, retransmissions or parking. */
    gate->wall_clock = secret != NULL;
    *out = gate;
    return DP_OK;
}

void dp_cookie_gate_ref(dp_cookie_gate *gate)
{
    mbedtls_mutex_lock(&gate->lock);
    gate->refcount++;
    mbedtls_mutex_unlock(&gate->lock);
}

void dp_cookie_gate_free(dp_cookie_gate *gate)
{
    if (gate == NULL) {
        return;
    }
    mbedtls_mutex_lock(&gate->lock);
    int left = --gate->refcount;
    mbedtls_mutex_unlock(&gate->lock);
    if (left > 0) {
        return;
    }
    mbedtls_mutex_free(&gate->lock);
    mbedtls_md_free(&gate->keys[0].hmac); /* zeroizes the keyed pads */
    mbedtls_md_free(&gate->keys[1].hmac);
    mbedtls_platform_zeroize(gate, sizeof(*gate));
    dp_free(gate);
}

void dp_cookie_gate_get_stats(dp_cookie_gate *gate, dp_cookie_stats *out)
{
    if (gate == NULL || out == NULL) {
        return;
    }
    mbedtls_mutex_lock(&gate->lock);
    *out = gate->stats;
    mbedtls_mutex_unlock(&gate->lock);
}

/* ---- Cookies (callers hold gate->lock) ------------------------------------ */

/* The keyed HMAC context of a slot (current or previous), deriving and
 * keying it on first use; NULL if the derivation failed. */
static dp_slot_key *slot_key(dp_cookie_gate *gate, int64_t slot)
{
    for (int i = 0; i < 2; i++) {
        if (gate->keys[i].slot == slot) {
            return &gate->keys[i];
        }
    }
    unsigned char info[8];
    for (int i = 0; i < 8; i++) {
        info[i] = (unsigned char)((uint64_t)slot >> (56 - 8 * i));
    }
    /* Replace the older entry: keeps the current and the previous slot. */
    dp_slot_key *k = &gate->keys[gate->keys[0].slot <= gate->keys[1].slot ? 0 : 1];
    k->slot = -1;
    int ret = mbedtls_hkdf(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), DP_COOKIE_SALT,
                           sizeof(DP_COOKIE_SALT) - 1, gate->secret, gate->secret_len, info,
                           sizeof(info), k->key, DP_GATE_KEY_LEN);
    if (ret == 0) {
        ret = mbedtls_md_hmac_starts(&k->hmac, k->key, DP_GATE_KEY_LEN);
    }
    if (ret != 0) {
        mbedtls_platform_zeroize(k->key, sizeof(k->key));
        return NULL;
    }
    k->slot = slot;
    return k;
}

/* mac = HMAC-SHA-256(K_slot, tag || id)[0..16). Nonzero (mac zeroed) if
 * the HMAC failed. */
static int cookie_mac(dp_cookie_gate *gate, int64_t slot, const unsigned char *id, size_t id_len,
                      unsigned char mac[DP_COOKIE_MAC_LEN])
{
    dp_slot_key *k = slot_key(gate, slot);
    if (k == NULL) {
        memset(mac, 0, DP_COOKIE_MAC_LEN); /* defined output, as below */
        return MBEDTLS_ERR_MD_BAD_INPUT_DATA;
    }
    unsigned char full[32] = {0};
    unsigned char tag = (unsigned char)(slot & 0xFF);
    int ret = mbedtls_md_hmac_reset(&k->hmac);
    if (ret == 0) {
        ret = mbedtls_md_hmac_update(&k->hmac, &tag, 1);
    }
    if (ret == 0) {
        ret = mbedtls_md_hmac_update(&k->hmac, id, id_len);
    }
    if (ret == 0) {
        ret = mbedtls_md_hmac_finish(&k->hmac, full);
    }
    if (ret == 0) {
        memcpy(mac, full, DP_COOKIE_MAC_LEN);
    } else {
        /* Never hand out whatever was on the stack: callers drop the
         * datagram on an error, but the output is defined either way. */
        memset(mac, 0, DP_COOKIE_MAC_LEN);
    }
    mbedtls_platform_zeroize(full, sizeof(full));
    return ret;
}

static int64_t slot_of(const dp_cookie_gate *gate, int64_t now_ms)
{
    return now_ms / (int64_t)gate->slot_ms;
}

static int write_cookie(dp_cookie_gate *gate, int64_t now_ms, const unsigned char *id,
                        size_t id_len, unsigned char out[DP_COOKIE_LEN])
{
    int64_t slot = slot_of(gate, now_ms);
    out[0] = (unsigned char)(slot & 0xFF);
    return cookie_mac(gate, slot, id, id_len, out + 1);
}

/* 0 when valid, -1 otherwise. */
static int check_cookie(dp_cookie_gate *gate, int64_t now_ms, const unsigned char *cookie,
                        size_t cookie_len, const unsigned char *id, size_t id_len)
{
    if (cookie_len != DP_COOKIE_LEN) {
        return -1;
    }
    int64_t current = slot_of(gate, now_ms);
    int64_t slot;
    if (cookie[0] == (unsigned char)(current & 0xFF)) {
        slot = current;
    } else if (current > 0 && cookie[0] == (unsigned char)((current - 1) & 0xFF)) {
        slot = current - 1;
    } else {
        return -1; /* expired (or from the future) */
    }
    unsigned char mac[DP_COOKIE_MAC_LEN];
    if (cookie_mac(gate, slot, id, id_len, mac) != 0) {
        return -1;
    }
    int diff = mbedtls_ct_memcmp(mac, cookie + 1, DP_COOKIE_MAC_LEN);
    mbedtls_platform_zeroize(mac, sizeof(mac));
    return diff == 0 ? 0 : -1;
}

static void note_time(dp_cookie_gate *gate, int64_t now_ms)
{
    if (now_ms > gate->last_now_ms) {
        gate->last_now_ms = now_ms;
    }
}

/* ---- Callbacks for new connections (mbedtls_ssl_conf_dtls_cookies) -------- */

/* Mbed TLS calls these while a new server connection parses its first
 * ClientHello, which dp_cookie_gate_check admitted just before: the gate's
 * newest time is that call's. Live connections never call them (client port
 * reuse is compiled out), so cookie age is always judged against the real
 * time of a gate check, never against a stale one. */

int dp_cookie_gate_write_cb(void *ctx, unsigned char **p, unsigned char *end,
                            const unsigned char *id, size_t id_len)
{
    dp_cookie_gate *gate = ctx;
    if (end < *p || (size_t)(end - *p) < DP_COOKIE_LEN) {
        return MBEDTLS_ERR_SSL_BUFFER_TOO_SMALL;
    }
    mbedtls_mutex_lock(&gate->lock);
    int ret = write_cookie(gate, gate->last_now_ms, id, id_len, *p);
    mbedtls_mutex_unlock(&gate->lock);
    if (ret == 0) {
        *p += DP_COOKIE_LEN;
    }
    return ret;
}

int dp_cookie_gate_check_cb(void *ctx, const unsigned char *cookie, size_t cookie_len,
                            const unsigned char *id, size_t id_len)
{
    dp_cookie_gate *gate = ctx;
    mbedtls_mutex_lock(&gate->lock);
    int ret = check_cookie(gate, gate->last_now_ms, cookie, cookie_len, id, id_len);
    mbedtls_mutex_unlock(&gate->lock);
    return ret;
}

/* ---- The gate --------------------------------------------------------------- */

typedef struct dp_hello_view {
    const unsigned char *cookie;
    size_t cookie_len;
    const unsigned char *message_seq; /* 2 bytes */
} dp_hello_view;

enum { HELLO_OK = 0, HELLO_MALFORMED = 1, HELLO_NOT_HELLO = 2 };

static size_t be16(const unsigned char *p)
{
    return ((size_t)p[0] << 8) | p[1];
}

static size_t be24(const unsigned char *p)
{
    return ((size_t)p[0] << 16) | ((size_t)p[1] << 8) | p[2];
}

/* Bounded parse of the first record of a datagram as an unfragmented DTLS
 * ClientHello (RFC 6347 4.1, 4.2.2; RFC 5246 7.4.1.2). Every length is
 * checked against what remains before it is used. */
static int parse_client_hello(const unsigned char *d, size_t len, dp_hello_view *view)
{
    if (len < 13 || d[1] != 0xFE) {
        return HELLO_MALFORMED;
    }
    size_t rec_len = be16(d + 11);
    if (rec_len > len - 13) {
        return HELLO_MALFORMED;
    }
    if (d[0] != MBEDTLS_SSL_MSG_HANDSHAKE || d[3] != 0 || d[4] != 0) {
        return HELLO_NOT_HELLO; /* alerts, data or anything past epoch 0 */
    }
    const unsigned char *hs = d + 13;
    if (rec_len < 12) {
        return HELLO_MALFORMED;
    }
    if (hs[0] != MBEDTLS_SSL_HS_CLIENT_HELLO) {
        return HELLO_NOT_HELLO;
    }
    size_t body_len = be24(hs + 1);
    if (be24(hs + 6) != 0 || be24(hs + 9) != body_len || body_len > rec_len - 12) {
        return HELLO_MALFORMED; /* fragmented hellos are not accepted */
    }
    const unsigned char *b = hs + 12;
    size_t pos = 0;
    if (body_len < 2 + 32 + 1 || b[0] != 0xFE) {
        return HELLO_MALFORMED;
    }
    pos = 34;
    size_t sid_len = b[pos++];
    if (sid_len > 32 || sid_len >= body_len - pos) {
        return HELLO_MALFORMED;
    }
    pos += sid_len;
    size_t cookie_len = b[pos++];
    if (cookie_len > body_len - pos) {
        return HELLO_MALFORMED;
    }
    view->cookie = b + pos;
    view->cookie_len = cookie_len;
    pos += cookie_len;
    if (body_len - pos < 2) {
        return HELLO_MALFORMED;
    }
    size_t suites_len = be16(b + pos);
    pos += 2;
    if (suites_len < 2 || (suites_len & 1) != 0 || suites_len > body_len - pos) {
        return HELLO_MALFORMED;
    }
    pos += suites_len;
    if (body_len - pos < 1) {
        return HELLO_MALFORMED;
    }
    size_t comp_len = b[pos++];
    if (comp_len < 1 || comp_len > body_len - pos) {
        return HELLO_MALFORMED;
    }
    pos += comp_len;
    if (pos < body_len) {
        if (body_len - pos < 2 || be16(b + pos) != body_len - pos - 2) {
            return HELLO_MALFORMED;
        }
    }
    view->message_seq = hs + 4;
    return HELLO_OK;
}

int dp_cookie_hello_well_formed(const unsigned char *d, size_t len)
{
    dp_hello_view view = {0};
    return d != NULL && parse_client_hello(d, len, &view) == HELLO_OK;
}

/* HelloVerifyRequest in the record and message sequence of the hello, as
 * RFC 6347 4.2.1 asks, so the client matches it to its ClientHello. */
static void build_hvr(const unsigned char *hello, const unsigned char *message_seq,
                      const unsigned char cookie[DP_COOKIE_LEN], unsigned char *out)
{
    const size_t body = 2 + 1 + DP_COOKIE_LEN;
    out[0] = MBEDTLS_SSL_MSG_HANDSHAKE;
    memcpy(out + 1, hello + 1, 10); /* version, epoch, sequence number */
    out[11] = 0;
    out[12] = (unsigned char)(12 + body);
    unsigned char *hs = out + 13;
    hs[0] = MBEDTLS_SSL_HS_HELLO_VERIFY_REQUEST;
    hs[1] = 0;
    hs[2] = 0;
    hs[3] = (unsigned char)body;
    hs[4] = message_seq[0];
    hs[5] = message_seq[1];
    memset(hs + 6, 0, 3);
    hs[9] = 0;
    hs[10] = 0;
    hs[11] = (unsigned char)body;
    /* server_version DTLS 1.0 (0xFEFF): RFC 6347 4.2.1 recommends it for
     * HelloVerifyRequest whatever version is negotiated later. */
    hs[12] = 0xFE;
    hs[13] = 0xFF;
    hs[14] = DP_COOKIE_LEN;
    memcpy(hs + 15, cookie, DP_COOKIE_LEN);
}

int64_t dp_cookie_gate_time(dp_cookie_gate *gate)
{
    mbedtls_mutex_lock(&gate->lock);
    int64_t t = gate->last_now_ms;
    mbedtls_mutex_unlock(&gate->lock);
    return t;
}

int dp_cookie_gate_check(dp_cookie_gate *gate, const unsigned char *transport_id,
                         size_t transport_id_len, const unsigned char *datagram, size_t len,
                         int64_t now_ms, unsigned char *reply, size_t cap, size_t *reply_len)
{
    if (now_ms == DP_NOW && gate != NULL) {
        now_ms = dp_clock_ms(gate->wall_clock); /* the gate's own clock */
    }
    now_ms = dp_resolve_now(now_ms);
    if (gate == NULL || transport_id == NULL || transport_id_len == 0 ||
        transport_id_len > DP_TRANSPORT_ID_MAX || (datagram == NULL && len != 0) ||
        reply == NULL || reply_len == NULL || now_ms < 0) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (cap < DP_HVR_LEN) {
        return DP_ERR_BUFFER_TOO_SMALL;
    }
    *reply_len = 0;
    dp_hello_view view = {0};
    int parsed = parse_client_hello(datagram, len, &view);

    mbedtls_mutex_lock(&gate->lock);
    note_time(gate, now_ms);
    int verdict = DP_GATE_DROP;
    int ret = 0;
    if (parsed == HELLO_MALFORMED) {
        gate->stats.dropped_malformed++;
    } else if (parsed == HELLO_NOT_HELLO) {
        gate->stats.dropped_not_hello++;
    } else {
        gate->stats.hellos_seen++;
        if (view.cookie_len != 0 &&
            check_cookie(gate, now_ms, view.cookie, view.cookie_len, transport_id,
                         transport_id_len) == 0) {
            gate->stats.admitted++;
            verdict = DP_GATE_ADMIT;
        } else {
            if (view.cookie_len != 0) {
                gate->stats.cookies_rejected++;
            }
            if (len < DP_HVR_LEN) {
                /* Never answer with more bytes than we were sent. */
                gate->stats.dropped_too_small++;
            } else {
                unsigned char cookie[DP_COOKIE_LEN];
                ret = write_cookie(gate, now_ms, transport_id, transport_id_len, cookie);
                if (ret == 0) {
                    build_hvr(datagram, view.message_seq, cookie, reply);
                    *reply_len = DP_HVR_LEN;
                    gate->stats.cookies_sent++;
                    verdict = DP_GATE_REPLY;
                }
            }
        }
    }
    mbedtls_mutex_unlock(&gate->lock);
    return ret != 0 ? ret : verdict;
}

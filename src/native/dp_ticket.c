/*
 * dp_ticket.c: RFC 5077 session ticket keys of DTLS servers, shareable
 * between processes and machines.
 *
 * Tickets are sealed by Mbed TLS's ssl_ticket module (AES-256-GCM; the key
 * name, IV and length are authenticated). Its keys are not drawn at random
 * here: the key of time slot n (slot = unix seconds / lifetime) is
 * HKDF-SHA-256(salt, secret, info = n as 8 bytes big-endian), 4 bytes of key
 * name then 32 bytes of key. Every server holding the same secret therefore
 * has the same keys at the same time, with nothing to distribute but the
 * secret (like the cookie gate's secret).
 *
 * Rotation. Mbed TLS's ticket context holds exactly two keys: the active one
 * (encrypts and decrypts) and the previous one (decrypts).
 * mbedtls_ssl_ticket_rotate installs a new active key in place of the older
 * one. Before every ticket write or parse, ensure_current() installs the key
 * of the current slot (and the previous slot's, after a jump), so a key
 * issues tickets during its slot and still opens them during the next one:
 * a ticket is accepted for its whole lifetime (Mbed TLS checks its age
 * against the lifetime too) and never after two lifetimes. This is why the
 * rotation period is the ticket lifetime: a shorter period would drop the
 * key of a live ticket, a longer one would keep tickets beyond their
 * lifetime. Mbed TLS's own rotation (a random key once the active key is
 * older than the lifetime) never fires: the key of the next slot is always
 * installed first, as both read the same wall clock.
 *
 * Threads: one dp_ticket_keys is shared by every connection of a server
 * (and may be shared by several servers). mbedtls_ssl_ticket_rotate takes
 * no lock of its own, so every use of the context (rotate, write, parse)
 * holds keys->lock.
 */
#include "dp_engine.h"

#include <string.h>

#include "mbedtls/hkdf.h"
#include "mbedtls/md.h"
#include "mbedtls/platform_util.h"
#include "mbedtls/ssl_ticket.h"
#include "mbedtls/threading.h"

#define DP_TICKET_NAME_LEN 4 /* MBEDTLS_SSL_TICKET_KEY_NAME_BYTES */
#define DP_TICKET_KEY_LEN 32 /* AES-256 */

static const unsigned char DP_TICKET_SALT[] = "dtlspeer ticket key v1";

struct dp_ticket_keys {
    mbedtls_threading_mutex_t lock; /* guards everything below */
    int refcount;
    mbedtls_ssl_ticket_context ctx;
    unsigned char secret[DP_TICKET_SECRET_MAX];
    size_t secret_len;
    uint32_t lifetime_s;
    int64_t active_slot; /* slot of the active key; INT64_MIN = none yet */
    int64_t fixed_now_s; /* 0 = wall clock (tests set a time) */
    dp_ticket_stats stats;
};

int dp_ticket_keys_new(const unsigned char *secret, size_t secret_len, uint32_t lifetime_s,
                       dp_ticket_keys **out)
{
    if (out == NULL || (secret == NULL && secret_len != 0) ||
        (secret != NULL && (secret_len < DP_TICKET_SECRET_MIN ||
                            secret_len > DP_TICKET_SECRET_MAX)) ||
        lifetime_s < DP_TICKET_LIFETIME_MIN || lifetime_s > DP_TICKET_LIFETIME_MAX) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    *out = NULL;
    dp_ticket_keys *keys = dp_calloc(1, sizeof(*keys));
    if (keys == NULL) {
        return DP_ERR_NO_MEMORY;
    }
    int ret = 0;
    if (secret != NULL) {
        memcpy(keys->secret, secret, secret_len);
        keys->secret_len = secret_len;
    } else {
        ret = dp_random(keys->secret, 32);
        keys->secret_len = 32;
    }
    mbedtls_ssl_ticket_init(&keys->ctx);
    if (ret == 0) {
        /* Draws two random keys, replaced by derived ones before first use. */
        ret = mbedtls_ssl_ticket_setup(&keys->ctx, dp_rng, NULL, MBEDTLS_CIPHER_AES_256_GCM,
                                       lifetime_s);
    }
    if (ret != 0) {
        mbedtls_ssl_ticket_free(&keys->ctx);
        mbedtls_platform_zeroize(keys, sizeof(*keys));
        dp_free(keys);
        return ret;
    }
    mbedtls_mutex_init(&keys->lock);
    keys->refcount = 1;
    keys->lifetime_s = lifetime_s;
    keys->active_slot = INT64_MIN;
    *out = keys;
    return DP_OK;
}

void dp_ticket_keys_ref(dp_ticket_keys *keys)
{
    mbedtls_mutex_lock(&keys->lock);
    keys->refcount++;
    mbedtls_mutex_unlock(&keys->lock);
}

void dp_ticket_keys_free(dp_ticket_keys *keys)
{
    if (keys == NULL) {
        return;
    }
    mbedtls_mutex_lock(&keys->lock);
    int left = --keys->refcount;
    mbedtls_mutex_unlock(&keys->lock);
    if (left > 0) {
        return;
    }
    mbedtls_ssl_ticket_free(&keys->ctx); /* zeroizes the keys */
    mbedtls_mutex_free(&keys->lock);
    mbedtls_platform_zeroize(keys, sizeof(*keys));
    dp_free(keys);
}

int dp_ticket_keys_export(dp_ticket_keys *keys, unsigned char *buf, size_t cap)
{
    if (keys == NULL || buf == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    mbedtls_mutex_lock(&keys->lock);
    int ret = (int)keys->secret_len;
    if (cap < keys->secret_len) {
        ret = DP_ERR_BUFFER_TOO_SMALL;
    } else {
        memcpy(buf, keys->secret, keys->secret_len);
    }
    mbedtls_mutex_unlock(&keys->lock);
    return ret;
}

int dp_ticket_keys_set_time(dp_ticket_keys *keys, int64_t unix_s)
{
    if (keys == NULL || unix_s < 0) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    mbedtls_mutex_lock(&keys->lock);
    keys->fixed_now_s = unix_s;
    mbedtls_mutex_unlock(&keys->lock);
    return DP_OK;
}

void dp_ticket_keys_get_stats(dp_ticket_keys *keys, dp_ticket_stats *out)
{
    if (keys == NULL || out == NULL) {
        return;
    }
    mbedtls_mutex_lock(&keys->lock);
    *out = keys->stats;
    mbedtls_mutex_unlock(&keys->lock);
}

/* ---- Rotation (callers hold keys->lock) ----------------------------------- */

/* Make the key of `slot` the active one; the previously active key stays as
 * the decrypt-only one. */
static int install_slot(dp_ticket_keys *keys, int64_t slot)
{
    unsigned char info[8];
    for (int i = 0; i < 8; i++) {
        info[i] = (unsigned char)((uint64_t)slot >> (56 - 8 * i));
    }
    unsigned char derived[DP_TICKET_NAME_LEN + DP_TICKET_KEY_LEN];
    int ret = mbedtls_hkdf(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), DP_TICKET_SALT,
                           sizeof(DP_TICKET_SALT) - 1, keys->secret, keys->secret_len, info,
                           sizeof(info), derived, sizeof(derived));
    if (ret == 0) {
        ret = mbedtls_ssl_ticket_rotate(&keys->ctx, derived, DP_TICKET_NAME_LEN,
                                        derived + DP_TICKET_NAME_LEN, DP_TICKET_KEY_LEN,
                                        keys->lifetime_s);
    }
    mbedtls_platform_zeroize(derived, sizeof(derived));
    if (ret == 0) {
        keys->active_slot = slot;
        keys->stats.rotations++;
    }
    return ret;
}

static int ensure_current(dp_ticket_keys *keys)
{
    int64_t now_s = keys->fixed_now_s != 0 ? keys->fixed_now_s : dp_clock_ms(1) / 1000;
    int64_t slot = now_s / (int64_t)keys->lifetime_s;
    if (slot == keys->active_slot) {
        return 0;
    }
    int ret = 0;
    if (keys->active_slot != slot - 1) {
        /* First use, a jump or a clock step back: the previous slot's key
         * too, so tickets another server minted in it still open here. */
        ret = install_slot(keys, slot - 1);
    }
    if (ret == 0) {
        ret = install_slot(keys, slot);
    }
    if (ret != 0) {
        keys->active_slot = INT64_MIN; /* start over at the next call */
    }
    return ret;
}

/* ---- Mbed TLS callbacks (mbedtls_ssl_conf_session_tickets_cb) -------------- */

/* The callbacks' context is the server's dp_config (its ticket keys, and its
 * client certificate policy for the parse check below). */

int dp_ticket_write_cb(void *p_cfg, const mbedtls_ssl_session *session, unsigned char *start,
                       const unsigned char *end, size_t *tlen, uint32_t *lifetime)
{
    dp_ticket_keys *keys = ((const dp_config *)p_cfg)->tickets;
    mbedtls_mutex_lock(&keys->lock);
    int ret = ensure_current(keys);
    if (ret == 0) {
        ret = mbedtls_ssl_ticket_write(&keys->ctx, session, start, end, tlen, lifetime);
    }
    if (ret == 0) {
        keys->stats.issued++;
    }
    mbedtls_mutex_unlock(&keys->lock);
    return ret;
}

/* A resumed handshake checks no client certificate, so a server that
 * requires one accepts only sessions whose client presented a verified one
 * (servers sharing ticket keys need not share the policy: a ticket from one
 * that asked for none must not open the door of one that requires it). */
static int session_meets_client_auth(const dp_config *cfg, const mbedtls_ssl_session *session)
{
    if (cfg->client_auth != DP_CLIENT_AUTH_REQUIRED) {
        return 1;
    }
    return session->MBEDTLS_PRIVATE(peer_cert_digest) != NULL &&
           session->MBEDTLS_PRIVATE(verify_result) == 0;
}

/* A ticket that does not open (forged, foreign keys, expired, corrupted) or
 * whose session does not meet the client certificate policy returns an
 * error; Mbed TLS then ignores it and runs a full handshake. */
int dp_ticket_parse_cb(void *p_cfg, mbedtls_ssl_session *session, unsigned char *buf,
                       size_t len)
{
    const dp_config *cfg = p_cfg;
    dp_ticket_keys *keys = cfg->tickets;
    mbedtls_mutex_lock(&keys->lock);
    int ret = ensure_current(keys);
    if (ret == 0) {
        ret = mbedtls_ssl_ticket_parse(&keys->ctx, session, buf, len);
    }
    if (ret == 0 && !session_meets_client_auth(cfg, session)) {
        ret = MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE;
    }
    if (ret == 0) {
        keys->stats.accepted++;
    } else {
        keys->stats.rejected++;
    }
    mbedtls_mutex_unlock(&keys->lock);
    return ret;
}

/*
 * dp_config.c: one mbedtls_ssl_config built from options, immutable once
 * finished and shared (refcounted) by every connection using it.
 *
 * Certificates and keys are copied in, so a caller may free its dp_cert /
 * dp_key while connections still use the configuration.
 */
#include "dp_engine.h"
#include "dp_crypto.h"

#include <limits.h>
#include <string.h>

#include "mbedtls/platform_util.h"
#include "mbedtls/ssl_ciphersuites.h"

/* Connection ID (dp_config_set_cid) relies on Mbed TLS's default
 * configuration: RFC 9146 CIDs, not the draft-05 compatible format (its
 * records and additional data differ; dp_conn.c's parked read guard builds
 * the RFC 9146 ones). No config change needed; this keeps it that way. */
#if !defined(MBEDTLS_SSL_DTLS_CONNECTION_ID) || MBEDTLS_SSL_DTLS_CONNECTION_ID_COMPAT != 0
#error "dtlspeer needs MBEDTLS_SSL_DTLS_CONNECTION_ID in the RFC 9146 format (COMPAT 0)"
#endif
typedef char dp_cid_max_fits_mbedtls[(DP_CID_MAX <= MBEDTLS_SSL_CID_IN_LEN_MAX &&
                                      DP_CID_MAX <= MBEDTLS_SSL_CID_OUT_LEN_MAX) ? 1 : -1];

/* Game defaults: first retransmission after 250 ms, doubling to 4 s, so a
 * silent peer is given up after about 250+500+1000+2000+4000 ms = 7.75 s
 * instead of Mbed TLS's 1 s .. 60 s (about two minutes). */
#define DP_DEFAULT_HS_MIN_MS 250u
#define DP_DEFAULT_HS_MAX_MS 4000u
/* Servers park an established connection after 5 s without authentic
 * traffic (about 1 KB instead of about 36 KB; see dp_config_set_park_after).
 * A game client sends input many times a second, so only peers that went
 * quiet (menus, AFK, lobbies) park. Clients hold one connection: off. */
#define DP_DEFAULT_SERVER_PARK_AFTER_MS 5000u
#define DP_KEY_DER_MAX 6144 /* an RSA-4096 private key is about 2.4 KB */

/* AEAD and forward secret: GCM first (AES-NI), ChaCha20 for CPUs without it. */
static const int DP_CERT_SUITES[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    0,
};

/* ECDHE-PSK (forward secret; its only AEAD suite is ChaCha20) first, then
 * plain PSK, which is about 20x cheaper per handshake but not forward secret. */
static const int DP_PSK_SUITES[] = {
    MBEDTLS_TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_PSK_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_PSK_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_PSK_WITH_AES_256_GCM_SHA384,
    0,
};

/* X25519 first; P-256 must stay offered: in TLS 1.2 the ECDSA certificate's
 * curve must also be in the client's supported groups. */
static const uint16_t DP_DEFAULT_GROUPS[] = {
    MBEDTLS_SSL_IANA_TLS_GROUP_X25519,
    MBEDTLS_SSL_IANA_TLS_GROUP_SECP256R1,
    MBEDTLS_SSL_IANA_TLS_GROUP_SECP384R1,
    0,
};

/* ---- Lifetime ------------------------------------------------------------- */

int dp_config_new(int role, dp_config **out)
{
    if (out == NULL || (role != DP_ROLE_CLIENT && role != DP_ROLE_SERVER)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    *out = NULL;
    dp_config *cfg = dp_calloc(1, sizeof(*cfg));
    if (cfg == NULL) {
        return DP_ERR_NO_MEMORY;
    }
    mbedtls_ssl_config_init(&cfg->conf);
    mbedtls_mutex_init(&cfg->ref_lock);
    mbedtls_x509_crt_init(&cfg->own_chain);
    mbedtls_pk_init(&cfg->own_key);
    mbedtls_x509_crt_init(&cfg->ca_chain);
    cfg->role = role;
    cfg->refcount = 1;
    cfg->verify_mode = DP_VERIFY_FULL;
    cfg->hs_timeout_min_ms = DP_DEFAULT_HS_MIN_MS;
    cfg->hs_timeout_max_ms = DP_DEFAULT_HS_MAX_MS;
    cfg->park_after_ms = role == DP_ROLE_SERVER ? DP_DEFAULT_SERVER_PARK_AFTER_MS : 0;
    /* Servers answer a client that asks for a CID (Godot clients never do:
     * nothing changes for them); our clients ask only when told to. */
    cfg->cid_enabled = role == DP_ROLE_SERVER;
    cfg->own_cid_len = role == DP_ROLE_SERVER ? DP_CID_DEFAULT_LEN : 0;
    memcpy(cfg->groups, DP_DEFAULT_GROUPS, sizeof(DP_DEFAULT_GROUPS));
    *out = cfg;
    return DP_OK;
}

void dp_config_ref(dp_config *cfg)
{
    mbedtls_mutex_lock(&cfg->ref_lock);
    cfg->refcount++;
    mbedtls_mutex_unlock(&cfg->ref_lock);
}

void dp_config_free(dp_config *cfg)
{
    if (cfg == NULL) {
        return;
    }
    mbedtls_mutex_lock(&cfg->ref_lock);
    int left = --cfg->refcount;
    mbedtls_mutex_unlock(&cfg->ref_lock);
    if (left > 0) {
        return;
    }
    mbedtls_ssl_config_free(&cfg->conf);
    mbedtls_x509_crt_free(&cfg->own_chain);
    mbedtls_pk_free(&cfg->own_key);
    mbedtls_x509_crt_free(&cfg->ca_chain);
    if (cfg->psks != NULL) {
        mbedtls_platform_zeroize(cfg->psks, cfg->psk_count * sizeof(dp_psk_entry));
        dp_free(cfg->psks);
    }
    dp_free(cfg->common_name_override);
    dp_cookie_gate_free(cfg->gate);
    dp_ticket_keys_free(cfg->tickets);
    mbedtls_mutex_free(&cfg->ref_lock);
    dp_free(cfg);
}

/* ---- Setters -------------------------------------------------------------- */

static int check_mutable(const dp_config *cfg)
{
    if (cfg == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    return cfg->finished ? DP_ERR_BAD_STATE : DP_OK;
}

static int copy_chain(mbedtls_x509_crt *dst, const dp_cert *src)
{
    size_t copied = 0;
    for (const mbedtls_x509_crt *c = &src->chain; c != NULL && c->raw.p != NULL; c = c->next) {
        int ret = mbedtls_x509_crt_parse_der(dst, c->raw.p, c->raw.len);
        if (ret != 0) {
            return ret;
        }
        copied++;
    }
    return copied > 0 ? DP_OK : DP_ERR_INVALID_ARGUMENT;
}

/* Copy a private key by a DER round trip: mbedtls_pk_context has no copy. */
static int copy_private_key(mbedtls_pk_context *dst, const dp_key *src)
{
    if (src->public_only || mbedtls_pk_get_type(&src->pk) == MBEDTLS_PK_NONE) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    unsigned char *der = dp_calloc(1, DP_KEY_DER_MAX);
    if (der == NULL) {
        return DP_ERR_NO_MEMORY;
    }
    /* pk_write_key_der takes a non-const context but does not modify it. */
    int len = mbedtls_pk_write_key_der((mbedtls_pk_context *)&src->pk, der, DP_KEY_DER_MAX);
    int ret = len;
    if (len > 0) {
        ret = mbedtls_pk_parse_key(dst, der + DP_KEY_DER_MAX - len, (size_t)len, NULL, 0,
                                   dp_rng, NULL);
    }
    mbedtls_platform_zeroize(der, DP_KEY_DER_MAX);
    dp_free(der);
    return ret;
}

int dp_config_set_own_cert(dp_config *cfg, const dp_cert *chain, const dp_key *key)
{
    int ret = check_mutable(cfg);
    if (ret != 0) {
        return ret;
    }
    if (chain == NULL || key == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    mbedtls_x509_crt_free(&cfg->own_chain);
    mbedtls_pk_free(&cfg->own_key);
    mbedtls_x509_crt_init(&cfg->own_chain);
    mbedtls_pk_init(&cfg->own_key);
    cfg->has_own_cert = 0;
    ret = copy_chain(&cfg->own_chain, chain);
    if (ret == 0) {
        ret = copy_private_key(&cfg->own_key, key);
    }
    if (ret == 0 &&
        mbedtls_pk_check_pair(&cfg->own_chain.pk, &cfg->own_key, dp_rng, NULL) != 0) {
        ret = DP_ERR_KEY_MISMATCH;
    }
    if (ret != 0) {
        mbedtls_x509_crt_free(&cfg->own_chain);
        mbedtls_pk_free(&cfg->own_key);
        mbedtls_x509_crt_init(&cfg->own_chain);
        mbedtls_pk_init(&cfg->own_key);
        return ret;
    }
    cfg->has_own_cert = 1;
    return DP_OK;
}

int dp_config_set_ca_chain(dp_config *cfg, const dp_cert *chain)
{
    int ret = check_mutable(cfg);
    if (ret != 0) {
        return ret;
    }
    if (chain == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    mbedtls_x509_crt_free(&cfg->ca_chain);
    mbedtls_x509_crt_init(&cfg->ca_chain);
    cfg->has_ca_chain = 0;
    ret = copy_chain(&cfg->ca_chain, chain);
    if (ret != 0) {
        mbedtls_x509_crt_free(&cfg->ca_chain);
        mbedtls_x509_crt_init(&cfg->ca_chain);
        return ret;
    }
    cfg->has_ca_chain = 1;
    return DP_OK;
}

int dp_config_set_verify(dp_config *cfg, int mode, const char *common_name_override)
{
    int ret = check_mutable(cfg);
    if (ret != 0) {
        return ret;
    }
    if (cfg->role != DP_ROLE_CLIENT ||
        (mode != DP_VERIFY_FULL && mode != DP_VERIFY_CHAIN_ONLY && mode != DP_VERIFY_NONE)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    char *copy = NULL;
    if (common_name_override != NULL && common_name_override[0] != '\0') {
        size_t n = strlen(common_name_override);
        if (n > 255) {
            return DP_ERR_INVALID_ARGUMENT; /* longer than any DNS name */
        }
        copy = dp_calloc(1, n + 1);
        if (copy == NULL) {
            return DP_ERR_NO_MEMORY;
        }
        memcpy(copy, common_name_override, n);
    }
    dp_free(cfg->common_name_override);
    cfg->common_name_override = copy;
    cfg->verify_mode = mode;
    return DP_OK;
}

int dp_config_set_psk(dp_config *cfg, const unsigned char *identity, size_t identity_len,
                      const unsigned char *key, size_t key_len)
{
    int ret = check_mutable(cfg);
    if (ret != 0) {
        return ret;
    }
    if (identity == NULL || identity_len == 0 || identity_len > DP_PSK_IDENTITY_MAX ||
        key == NULL || key_len == 0 || key_len > DP_PSK_KEY_MAX) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    size_t slot = 0;
    if (cfg->role == DP_ROLE_CLIENT) {
        slot = 0; /* a client has exactly one identity: replace it */
    } else {
        for (slot = 0; slot < cfg->psk_count; slot++) {
            if (cfg->psks[slot].identity_len == identity_len &&
                memcmp(cfg->psks[slot].identity, identity, identity_len) == 0) {
                break; /* same identity: replace its key */
            }
        }
    }
    if (slot >= cfg->psk_count) {
        dp_psk_entry *grown = dp_calloc(cfg->psk_count + 1, sizeof(dp_psk_entry));
        if (grown == NULL) {
            return DP_ERR_NO_MEMORY;
        }
        if (cfg->psks != NULL) {
            memcpy(grown, cfg->psks, cfg->psk_count * sizeof(dp_psk_entry));
            mbedtls_platform_zeroize(cfg->psks, cfg->psk_count * sizeof(dp_psk_entry));
            dp_free(cfg->psks);
        }
        cfg->psks = grown;
        slot = cfg->psk_count++;
    }
    dp_psk_entry *e = &cfg->psks[slot];
    mbedtls_platform_zeroize(e, sizeof(*e));
    memcpy(e->identity, identity, identity_len);
    e->identity_len = identity_len;
    memcpy(e->key, key, key_len);
    e->key_len = key_len;
    return DP_OK;
}

/* Mbed TLS knows more suites than this build may negotiate: CBC mode is
 * compiled for AESContext, which brings the CBC suites' definitions with it.
 * Only the suites of the pinned list (MBEDTLS_SSL_CIPHERSUITES in
 * dtlspeer_mbedtls_config.h, what mbedtls_ssl_list_ciphersuites returns)
 * may be configured. */
static int suite_in_build_list(int id)
{
    if (id == 0) {
        return 0;
    }
    for (const int *p = mbedtls_ssl_list_ciphersuites(); *p != 0; p++) {
        if (*p == id) {
            return mbedtls_ssl_ciphersuite_from_id(id) != NULL;
        }
    }
    return 0;
}

int dp_config_set_ciphersuites(dp_config *cfg, const char *names)
{
    int ret = check_mutable(cfg);
    if (ret != 0) {
        return ret;
    }
    if (names == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    int suites[DP_MAX_SUITES + 1];
    size_t count = 0;
    const char *p = names;
    while (*p != '\0') {
        while (*p == ',' || *p == '\n' || *p == ' ') {
            p++;
        }
        const char *start = p;
        while (*p != '\0' && *p != ',' && *p != '\n' && *p != ' ') {
            p++;
        }
        size_t n = (size_t)(p - start);
        if (n == 0) {
            continue;
        }
        char name[96];
        if (n >= sizeof(name) || count >= DP_MAX_SUITES) {
            return DP_ERR_INVALID_ARGUMENT;
        }
        memcpy(name, start, n);
        name[n] = '\0';
        int id = mbedtls_ssl_get_ciphersuite_id(name);
        if (!suite_in_build_list(id)) {
            return DP_ERR_UNSUPPORTED;
        }
        suites[count++] = id;
    }
    if (count == 0) {
        cfg->custom_suites = 0; /* empty list: back to the defaults */
        return DP_OK;
    }
    suites[count] = 0;
    memcpy(cfg->suites, suites, (count + 1) * sizeof(int));
    cfg->custom_suites = 1;
    return DP_OK;
}

int dp_config_set_groups(dp_config *cfg, const uint16_t *groups, size_t count)
{
    int ret = check_mutable(cfg);
    if (ret != 0) {
        return ret;
    }
    if (groups == NULL || count == 0 || count > DP_MAX_GROUPS) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    for (size_t i = 0; i < count; i++) {
        if (groups[i] != DP_GROUP_SECP256R1 && groups[i] != DP_GROUP_SECP384R1 &&
            groups[i] != DP_GROUP_SECP521R1 && groups[i] != DP_GROUP_X25519) {
            return DP_ERR_UNSUPPORTED;
        }
    }
    memcpy(cfg->groups, groups, count * sizeof(uint16_t));
    cfg->groups[count] = 0;
    return DP_OK;
}

int dp_config_set_handshake_timeout(dp_config *cfg, uint32_t min_ms, uint32_t max_ms,
                                    uint32_t deadline_ms)
{
    int ret = check_mutable(cfg);
    if (ret != 0) {
        return ret;
    }
    if (min_ms == 0 || max_ms < min_ms) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    cfg->hs_timeout_min_ms = min_ms;
    cfg->hs_timeout_max_ms = max_ms;
    cfg->hs_deadline_ms = deadline_ms;
    return DP_OK;
}

int dp_config_set_idle_timeout(dp_config *cfg, uint32_t idle_ms)
{
    int ret = check_mutable(cfg);
    if (ret != 0) {
        return ret;
    }
    cfg->idle_timeout_ms = idle_ms;
    return DP_OK;
}

int dp_config_set_cid(dp_config *cfg, int enabled, uint32_t own_len, const uint8_t *prefix,
                      size_t prefix_len)
{
    int ret = check_mutable(cfg);
    if (ret != 0) {
        return ret;
    }
    if (own_len > DP_CID_MAX || prefix_len > own_len || (prefix == NULL && prefix_len != 0)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    cfg->cid_enabled = enabled != 0;
    cfg->own_cid_len = (uint8_t)own_len;
    cfg->cid_prefix_len = (uint8_t)prefix_len;
    memset(cfg->cid_prefix, 0, sizeof(cfg->cid_prefix));
    if (prefix_len != 0) {
        memcpy(cfg->cid_prefix, prefix, prefix_len);
    }
    return DP_OK;
}

int dp_config_set_park_after(dp_config *cfg, uint32_t park_after_ms)
{
    int ret = check_mutable(cfg);
    if (ret != 0) {
        return ret;
    }
    cfg->park_after_ms = park_after_ms;
    return DP_OK;
}

int dp_config_set_mtu(dp_config *cfg, uint16_t mtu)
{
    int ret = check_mutable(cfg);
    if (ret != 0) {
        return ret;
    }
    /* Below ~100 bytes not even a ClientHello record header plus the
     * smallest handshake fragment fits usefully. */
    if (mtu != 0 && mtu < 128) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    cfg->mtu = mtu;
    return DP_OK;
}

int dp_config_set_max_record_in(dp_config *cfg, uint32_t max_bytes)
{
    int ret = check_mutable(cfg);
    if (ret != 0) {
        return ret;
    }
    if (max_bytes > DP_MAX_RECORD_PLAINTEXT) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    cfg->max_record_in = max_bytes;
    return DP_OK;
}

int dp_config_set_badmac_limit(dp_config *cfg, unsigned limit)
{
    int ret = check_mutable(cfg);
    if (ret != 0) {
        return ret;
    }
    cfg->badmac_limit = limit;
    return DP_OK;
}

int dp_config_set_cookie_gate(dp_config *cfg, dp_cookie_gate *gate)
{
    int ret = check_mutable(cfg);
    if (ret != 0) {
        return ret;
    }
    if (gate == NULL || cfg->role != DP_ROLE_SERVER) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    dp_cookie_gate_ref(gate);
    dp_cookie_gate_free(cfg->gate);
    cfg->gate = gate;
    return DP_OK;
}

int dp_config_set_client_auth(dp_config *cfg, int mode)
{
    int ret = check_mutable(cfg);
    if (ret != 0) {
        return ret;
    }
    if (cfg->role != DP_ROLE_SERVER ||
        (mode != DP_CLIENT_AUTH_NONE && mode != DP_CLIENT_AUTH_OPTIONAL &&
         mode != DP_CLIENT_AUTH_REQUIRED)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    cfg->client_auth = mode;
    return DP_OK;
}

int dp_config_set_ticket_keys(dp_config *cfg, dp_ticket_keys *keys)
{
    int ret = check_mutable(cfg);
    if (ret != 0) {
        return ret;
    }
    if (cfg->role != DP_ROLE_SERVER) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (keys != NULL) {
        dp_ticket_keys_ref(keys);
    }
    dp_ticket_keys_free(cfg->tickets);
    cfg->tickets = keys;
    return DP_OK;
}

/* ---- Finish --------------------------------------------------------------- */

static int psk_lookup(void *ctx, mbedtls_ssl_context *ssl, const unsigned char *identity,
                      size_t identity_len)
{
    const dp_config *cfg = ctx;
    for (size_t i = 0; i < cfg->psk_count; i++) {
        const dp_psk_entry *e = &cfg->psks[i];
        if (e->identity_len == identity_len && memcmp(e->identity, identity, identity_len) == 0) {
            return mbedtls_ssl_set_hs_psk(ssl, e->key, e->key_len);
        }
    }
    return -1; /* unknown identity: Mbed TLS sends unknown_psk_identity */
}

static size_t append_suites(int *dst, size_t count, const int *src)
{
    for (; *src != 0 && count < DP_MAX_SUITES; src++) {
        if (suite_in_build_list(*src)) {
            dst[count++] = *src;
        }
    }
    dst[count] = 0;
    return count;
}

/* Datagrams a connection's outgoing queue must hold: a whole handshake
 * flight fragmented to the MTU. The largest is the server's: our
 * Certificate message (up to the 16 KiB out buffer) plus ServerHello,
 * ServerKeyExchange and ServerHelloDone (well under 2 KiB), each datagram
 * carrying MTU minus a record header (13) and a handshake header (12).
 * At MTU 256 that is 80 datagrams: the fixed 64 used to cut such a flight
 * short, so the handshake could never finish. At least 64 (several
 * records written between two flushes). */
static uint32_t out_queue_for_mtu(uint16_t mtu)
{
    const uint32_t flight = MBEDTLS_SSL_OUT_CONTENT_LEN + 2048;
    const uint32_t headers = 13 + 12;
    uint32_t need = 64;
    if (mtu > headers) {
        uint32_t per = (uint32_t)mtu - headers;
        uint32_t datagrams = (flight + per - 1) / per + 8;
        if (datagrams > need) {
            need = datagrams;
        }
    }
    return need;
}

int dp_config_finish(dp_config *cfg)
{
    int ret = check_mutable(cfg);
    if (ret != 0) {
        return ret;
    }
    int server = cfg->role == DP_ROLE_SERVER;
    if (server && (cfg->gate == NULL || (!cfg->has_own_cert && cfg->psk_count == 0))) {
        return DP_ERR_BAD_STATE; /* a server needs a cookie gate and credentials */
    }
    cfg->out_queue_max = out_queue_for_mtu(cfg->mtu);
    ret = mbedtls_ssl_config_defaults(&cfg->conf,
                                      server ? MBEDTLS_SSL_IS_SERVER : MBEDTLS_SSL_IS_CLIENT,
                                      MBEDTLS_SSL_TRANSPORT_DATAGRAM, MBEDTLS_SSL_PRESET_DEFAULT);
    if (ret != 0) {
        return ret;
    }
    mbedtls_ssl_conf_rng(&cfg->conf, dp_rng, NULL);

    if (!cfg->custom_suites) {
        size_t n = 0;
        /* A client with a PSK offers only PSK suites: it has said how it
         * authenticates. A server offers whatever credentials it holds. */
        if (cfg->has_own_cert || (!server && cfg->psk_count == 0)) {
            n = append_suites(cfg->suites, n, DP_CERT_SUITES);
        }
        if (cfg->psk_count > 0) {
            n = append_suites(cfg->suites, n, DP_PSK_SUITES);
        }
    }
    mbedtls_ssl_conf_ciphersuites(&cfg->conf, cfg->suites);
    mbedtls_ssl_conf_groups(&cfg->conf, cfg->groups);

    if (server) {
        /* Clients are not asked for certificates (as in Godot) unless
         * client_auth says so; their chain is checked against ca_chain. */
        if (cfg->client_auth != DP_CLIENT_AUTH_NONE && !cfg->has_ca_chain) {
            return DP_ERR_BAD_STATE;
        }
        mbedtls_ssl_conf_authmode(&cfg->conf,
                                  cfg->client_auth == DP_CLIENT_AUTH_REQUIRED ? MBEDTLS_SSL_VERIFY_REQUIRED
                                  : cfg->client_auth == DP_CLIENT_AUTH_OPTIONAL
                                      ? MBEDTLS_SSL_VERIFY_OPTIONAL
                                      : MBEDTLS_SSL_VERIFY_NONE);
        if (cfg->tickets != NULL) {
            mbedtls_ssl_conf_session_tickets_cb(&cfg->conf, dp_ticket_write_cb,
                                                dp_ticket_parse_cb, cfg);
        }
        if (cfg->psk_count > 0) {
            mbedtls_ssl_conf_psk_cb(&cfg->conf, psk_lookup, cfg);
        }
        mbedtls_ssl_conf_dtls_cookies(&cfg->conf, dp_cookie_gate_write_cb,
                                      dp_cookie_gate_check_cb, cfg->gate);
    } else {
        mbedtls_ssl_conf_authmode(&cfg->conf, cfg->verify_mode == DP_VERIFY_NONE
                                                  ? MBEDTLS_SSL_VERIFY_NONE
                                                  : MBEDTLS_SSL_VERIFY_REQUIRED);
        if (cfg->psk_count > 0) {
            ret = mbedtls_ssl_conf_psk(&cfg->conf, cfg->psks[0].key, cfg->psks[0].key_len,
                                       cfg->psks[0].identity, cfg->psks[0].identity_len);
            if (ret != 0) {
                return ret;
            }
        }
    }
    if (cfg->has_ca_chain) {
        mbedtls_ssl_conf_ca_chain(&cfg->conf, &cfg->ca_chain, NULL);
    }
    if (cfg->has_own_cert) {
        ret = mbedtls_ssl_conf_own_cert(&cfg->conf, &cfg->own_chain, &cfg->own_key);
        if (ret != 0) {
            return ret;
        }
    }
    mbedtls_ssl_conf_handshake_timeout(&cfg->conf, cfg->hs_timeout_min_ms,
                                       cfg->hs_timeout_max_ms);
    /* Anti-replay also decides address moves (dp_conn_rx_newest): keep it. */
    mbedtls_ssl_conf_dtls_anti_replay(&cfg->conf, MBEDTLS_SSL_ANTI_REPLAY_ENABLED);
    /* The CID length is config-wide: Mbed TLS parses every CID record
     * header with it. Records carrying another CID are dropped quietly. */
    ret = mbedtls_ssl_conf_cid(&cfg->conf, cfg->cid_enabled ? cfg->own_cid_len : 0,
                               MBEDTLS_SSL_UNEXPECTED_CID_IGNORE);
    if (ret != 0) {
        return ret;
    }
    /* Mbed TLS only counts bad records when a limit is set, so "unlimited"
     * becomes the largest limit: the count stays available for statistics. */
    /* Mbed TLS counts bad MACs only with a limit set; dp_conn.c collects
     * the count after every call and applies cfg->badmac_limit itself. */
    mbedtls_ssl_conf_dtls_badmac_limit(&cfg->conf, UINT_MAX);
    cfg->finished = 1;
    return DP_OK;
}

/*
 * dp_digest.c: hashes and HMACs for Godot's HashingContext, HMACContext and
 * Crypto.hmac_digest, over Mbed TLS's message-digest layer (MD5, SHA-1,
 * SHA-256). The object only adds the idle/started state Godot's classes
 * have; the Python side adds Godot's argument rules.
 */
#include "dp_crypto.h"

#include "mbedtls/md.h"

struct dp_digest {
    mbedtls_md_context_t md; /* set up only while started */
    int active;
};

mbedtls_md_type_t dp_md_type(int hash_type)
{
    switch (hash_type) {
    case DP_HASH_MD5: return MBEDTLS_MD_MD5;
    case DP_HASH_SHA1: return MBEDTLS_MD_SHA1;
    case DP_HASH_SHA256: return MBEDTLS_MD_SHA256;
    default: return MBEDTLS_MD_NONE;
    }
}

dp_digest *dp_digest_new(void)
{
    dp_digest *d = dp_calloc(1, sizeof(*d));
    if (d != NULL) {
        mbedtls_md_init(&d->md);
    }
    return d;
}

static void dp_digest_reset(dp_digest *d)
{
    mbedtls_md_free(&d->md); /* zeroizes the state (and the HMAC pads) */
    mbedtls_md_init(&d->md);
    d->active = 0;
}

void dp_digest_free(dp_digest *d)
{
    if (d != NULL) {
        dp_digest_reset(d);
        dp_free(d);
    }
}

int dp_digest_size(int hash_type)
{
    const mbedtls_md_info_t *info = mbedtls_md_info_from_type(dp_md_type(hash_type));
    return info != NULL ? (int)mbedtls_md_get_size(info) : DP_ERR_UNSUPPORTED;
}

int dp_digest_start(dp_digest *d, int hash_type, int hmac, const unsigned char *key,
                    size_t key_len)
{
    if (d == NULL || (hmac && (key == NULL || key_len == 0))) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (d->active) {
        return DP_ERR_BAD_STATE;
    }
    const mbedtls_md_info_t *info = mbedtls_md_info_from_type(dp_md_type(hash_type));
    if (info == NULL) {
        return DP_ERR_UNSUPPORTED;
    }
    int ret = mbedtls_md_setup(&d->md, info, hmac ? 1 : 0);
    if (ret == 0) {
        ret = hmac ? mbedtls_md_hmac_starts(&d->md, key, key_len) : mbedtls_md_starts(&d->md);
    }
    if (ret != 0) {
        dp_digest_reset(d);
        return ret;
    }
    d->active = hmac ? 2 : 1;
    return DP_OK;
}

int dp_digest_update(dp_digest *d, const unsigned char *data, size_t len)
{
    if (d == NULL || (data == NULL && len != 0)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (!d->active) {
        return DP_ERR_BAD_STATE;
    }
    return d->active == 2 ? mbedtls_md_hmac_update(&d->md, data, len)
                          : mbedtls_md_update(&d->md, data, len);
}

int dp_digest_finish(dp_digest *d, unsigned char *out, size_t outlen)
{
    if (d == NULL || out == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (!d->active) {
        return DP_ERR_BAD_STATE;
    }
    size_t size = mbedtls_md_get_size(mbedtls_md_info_from_ctx(&d->md));
    if (outlen < size) {
        return DP_ERR_BUFFER_TOO_SMALL;
    }
    int ret = d->active == 2 ? mbedtls_md_hmac_finish(&d->md, out)
                             : mbedtls_md_finish(&d->md, out);
    dp_digest_reset(d);
    return ret != 0 ? ret : (int)size;
}

int dp_digest_active(const dp_digest *d)
{
    return d != NULL && d->active != 0;
}

/*
 * dp_cipher.c: AES-128/256 in ECB and CBC mode without padding, for Godot's
 * AESContext, over Mbed TLS's AES (AES-NI when the CPU has it). CBC keeps
 * its chaining value here, so consecutive updates form one stream.
 */
#include "dtlspeer.h"

#include <string.h>

#include "mbedtls/aes.h"
#include "mbedtls/platform_util.h"

struct dp_aes {
    mbedtls_aes_context ctx;           /* key schedule, valid while mode >= 0 */
    unsigned char iv[DP_AES_BLOCK];    /* CBC chaining value */
    int mode;                          /* DP_AES_*, -1 when idle */
};

dp_aes *dp_aes_new(void)
{
    dp_aes *a = dp_calloc(1, sizeof(*a));
    if (a != NULL) {
        mbedtls_aes_init(&a->ctx);
        a->mode = -1;
    }
    return a;
}

void dp_aes_finish(dp_aes *a)
{
    if (a == NULL) {
        return;
    }
    mbedtls_aes_free(&a->ctx); /* zeroizes the key schedule */
    mbedtls_aes_init(&a->ctx);
    mbedtls_platform_zeroize(a->iv, sizeof(a->iv));
    a->mode = -1;
}

void dp_aes_free(dp_aes *a)
{
    if (a != NULL) {
        dp_aes_finish(a);
        dp_free(a);
    }
}

static int dp_aes_decrypting(int mode)
{
    return mode == DP_AES_ECB_DECRYPT || mode == DP_AES_CBC_DECRYPT;
}

static int dp_aes_is_cbc(int mode)
{
    return mode == DP_AES_CBC_ENCRYPT || mode == DP_AES_CBC_DECRYPT;
}

int dp_aes_start(dp_aes *a, int mode, const unsigned char *key, size_t key_len,
                 const unsigned char *iv, size_t iv_len)
{
    if (a == NULL || mode < 0 || mode >= DP_AES_MODE_MAX || key == NULL ||
        (key_len != 16 && key_len != 32)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (dp_aes_is_cbc(mode) && (iv == NULL || iv_len != DP_AES_BLOCK)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (a->mode >= 0) {
        return DP_ERR_BAD_STATE;
    }
    unsigned int bits = (unsigned int)key_len * 8u;
    int ret = dp_aes_decrypting(mode) ? mbedtls_aes_setkey_dec(&a->ctx, key, bits)
                                      : mbedtls_aes_setkey_enc(&a->ctx, key, bits);
    if (ret != 0) {
        dp_aes_finish(a);
        return ret;
    }
    if (dp_aes_is_cbc(mode)) {
        memcpy(a->iv, iv, DP_AES_BLOCK);
    }
    a->mode = mode;
    return DP_OK;
}

int dp_aes_update(dp_aes *a, const unsigned char *in, size_t len, unsigned char *out,
                  size_t outlen)
{
    if (a == NULL || len % DP_AES_BLOCK != 0 || outlen < len ||
        (len != 0 && (in == NULL || out == NULL))) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (a->mode < 0) {
        return DP_ERR_BAD_STATE;
    }
    if (len == 0) {
        return DP_OK;
    }
    if (dp_aes_is_cbc(a->mode)) {
        return mbedtls_aes_crypt_cbc(&a->ctx,
                                     a->mode == DP_AES_CBC_ENCRYPT ? MBEDTLS_AES_ENCRYPT
                                                                   : MBEDTLS_AES_DECRYPT,
                                     len, a->iv, in, out);
    }
    int op = a->mode == DP_AES_ECB_ENCRYPT ? MBEDTLS_AES_ENCRYPT : MBEDTLS_AES_DECRYPT;
    for (size_t off = 0; off < len; off += DP_AES_BLOCK) {
        int ret = mbedtls_aes_crypt_ecb(&a->ctx, op, in + off, out + off);
        if (ret != 0) {
            return ret;
        }
    }
    return DP_OK;
}

int dp_aes_iv_state(const dp_aes *a, unsigned char *out, size_t outlen)
{
    if (a == NULL || out == NULL || outlen < DP_AES_BLOCK) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (!dp_aes_is_cbc(a->mode)) {
        return DP_ERR_BAD_STATE;
    }
    memcpy(out, a->iv, DP_AES_BLOCK);
    return DP_AES_BLOCK;
}

int dp_aes_mode(const dp_aes *a)
{
    return a != NULL ? a->mode : -1;
}

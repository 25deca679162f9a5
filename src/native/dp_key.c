/*
 * dp_key.c: private and public keys (RSA, EC) for CryptoKey and Crypto:
 * parse PEM/DER in every format Mbed TLS reads, write PEM/DER, generate,
 * describe, and check a key against a certificate.
 */
#include "dp_crypto.h"

#include <string.h>

#include "mbedtls/ecp.h"
#include "mbedtls/pk.h"
#include "mbedtls/platform_util.h"
#include "mbedtls/rsa.h"

/* Largest PEM or DER any key we can hold writes to: an RSA-8192 private key
 * is about 6.5 KB as PEM. Mbed TLS writes into a fixed buffer, so we write
 * into a temporary one of this size and then copy out. */
#define DP_KEY_WRITE_TMP 16384

/* ---- Input copies shared with dp_cert.c ---------------------------------- */

static int dp_contains(const unsigned char *hay, size_t hay_len, const char *needle)
{
    size_t n = strlen(needle);
    if (n == 0 || hay_len < n) {
        return 0;
    }
    for (size_t i = 0; i + n <= hay_len; i++) {
        if (hay[i] == (unsigned char)needle[0] && memcmp(hay + i, needle, n) == 0) {
            return 1;
        }
    }
    return 0;
}

int dp_crypto_input_copy(const unsigned char *data, size_t len, size_t max_len,
                         unsigned char **copy, size_t *parse_len)
{
    if (copy == NULL || parse_len == NULL || (data == NULL && len != 0)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    *copy = NULL;
    *parse_len = 0;
    if (len == 0) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (len > max_len) {
        return DP_ERR_TOO_LARGE;
    }
    unsigned char *buf = dp_calloc(1, len + 1);
    if (buf == NULL) {
        return DP_ERR_NO_MEMORY;
    }
    memcpy(buf, data, len);
    buf[len] = '\0';
    *copy = buf;
    /* Mbed TLS treats a buffer as PEM only when its last byte is the NUL. */
    *parse_len = dp_contains(buf, len, "-----BEGIN ") ? len + 1 : len;
    return DP_OK;
}

void dp_crypto_input_free(unsigned char *copy, size_t len)
{
    if (copy != NULL) {
        mbedtls_platform_zeroize(copy, len + 1);
        dp_free(copy);
    }
}

/* ---- Handles ---------------------------------------------------------------- */

dp_key *dp_key_new(void)
{
    dp_key *key = dp_calloc(1, sizeof(*key));
    if (key != NULL) {
        mbedtls_pk_init(&key->pk);
    }
    return key;
}

void dp_key_free(dp_key *key)
{
    if (key == NULL) {
        return;
    }
    mbedtls_pk_free(&key->pk);
    dp_free(key);
}

/* Move a freshly built pk into the handle, freeing what it held. The pk
 * context owns heap objects that do not point back at it, so a struct move
 * transfers ownership. */
static void dp_key_replace(dp_key *key, mbedtls_pk_context *fresh, int public_only)
{
    mbedtls_pk_free(&key->pk);
    key->pk = *fresh;
    mbedtls_pk_init(fresh);
    key->public_only = public_only;
}

static int dp_curve_from_group(mbedtls_ecp_group_id id)
{
    switch (id) {
    case MBEDTLS_ECP_DP_SECP256R1: return DP_CURVE_P256;
    case MBEDTLS_ECP_DP_SECP384R1: return DP_CURVE_P384;
    case MBEDTLS_ECP_DP_SECP521R1: return DP_CURVE_P521;
    default: return DP_CURVE_NONE;
    }
}

/* Only RSA and ECDSA-capable EC keys are usable by DTLS; anything else that
 * Mbed TLS parses (ECKEY_DH, curves without a DP_CURVE_*) is refused. */
static int dp_key_check_supported(const mbedtls_pk_context *pk)
{
    mbedtls_pk_type_t type = mbedtls_pk_get_type(pk);
    if (type == MBEDTLS_PK_RSA) {
        return DP_OK;
    }
    if (type == MBEDTLS_PK_ECKEY) {
        const mbedtls_ecp_keypair *ec = mbedtls_pk_ec(*pk);
        if (ec == NULL || dp_curve_from_group(mbedtls_ecp_keypair_get_group_id(ec)) == DP_CURVE_NONE) {
            return MBEDTLS_ERR_PK_UNKNOWN_NAMED_CURVE;
        }
        return DP_OK;
    }
    return MBEDTLS_ERR_PK_UNKNOWN_PK_ALG;
}

/* Re-parse the public half of src into dst (used to strip a private key). */
static int dp_pk_copy_public(const mbedtls_pk_context *src, mbedtls_pk_context *dst)
{
    unsigned char *tmp = dp_calloc(1, DP_KEY_WRITE_TMP);
    if (tmp == NULL) {
        return DP_ERR_NO_MEMORY;
    }
    int ret = mbedtls_pk_write_pubkey_der(src, tmp, DP_KEY_WRITE_TMP);
    if (ret > 0) {
        ret = mbedtls_pk_parse_public_key(dst, tmp + DP_KEY_WRITE_TMP - ret, (size_t)ret);
    }
    dp_free(tmp); /* public data only: no zeroize needed */
    return ret;
}

/* ---- Parse ------------------------------------------------------------------ */

int dp_key_parse(dp_key *key, const unsigned char *data, size_t len, int public_only)
{
    if (key == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    unsigned char *copy = NULL;
    size_t parse_len = 0;
    int ret = dp_crypto_input_copy(data, len, DP_KEY_MAX_INPUT, &copy, &parse_len);
    if (ret != DP_OK) {
        return ret;
    }
    int is_pem = parse_len != len;
    mbedtls_pk_context fresh;
    mbedtls_pk_init(&fresh);
    int got_public_only = 1;

    if (public_only) {
        ret = mbedtls_pk_parse_public_key(&fresh, copy, parse_len);
        if (ret != 0) {
            /* Godot refuses a private key here; we keep its public half. */
            mbedtls_pk_context priv;
            mbedtls_pk_init(&priv);
            mbedtls_pk_free(&fresh);
            mbedtls_pk_init(&fresh);
            int ret2 = mbedtls_pk_parse_key(&priv, copy, parse_len, NULL, 0, dp_rng, NULL);
            if (ret2 == 0) {
                ret = dp_pk_copy_public(&priv, &fresh);
            }
            mbedtls_pk_free(&priv);
        }
    } else {
        ret = mbedtls_pk_parse_key(&fresh, copy, parse_len, NULL, 0, dp_rng, NULL);
        got_public_only = 0;
    }

    if (ret != 0 && ret != MBEDTLS_ERR_PK_ALLOC_FAILED && is_pem &&
        dp_contains(copy, len, "ENCRYPTED")) {
        /* Without PKCS#5/#12 Mbed TLS reports encrypted keys as merely
         * malformed; say what the problem is. */
        ret = MBEDTLS_ERR_PK_PASSWORD_REQUIRED;
    }
    if (ret == 0) {
        ret = dp_key_check_supported(&fresh);
    }
    if (ret == 0) {
        dp_key_replace(key, &fresh, got_public_only);
    }
    mbedtls_pk_free(&fresh);
    dp_crypto_input_free(copy, len);
    return ret;
}

/* ---- Describe --------------------------------------------------------------- */

int dp_key_get_info(const dp_key *key, dp_key_info *info)
{
    if (key == NULL || info == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    memset(info, 0, sizeof(*info));
    mbedtls_pk_type_t type = mbedtls_pk_get_type(&key->pk);
    if (type == MBEDTLS_PK_NONE) {
        return DP_OK;
    }
    info->bits = (int)mbedtls_pk_get_bitlen(&key->pk);
    info->public_only = key->public_only;
    if (type == MBEDTLS_PK_RSA) {
        info->type = DP_KEY_TYPE_RSA;
    } else if (type == MBEDTLS_PK_ECKEY) {
        const mbedtls_ecp_keypair *ec = mbedtls_pk_ec(key->pk);
        info->type = DP_KEY_TYPE_EC;
        info->curve = ec ? dp_curve_from_group(mbedtls_ecp_keypair_get_group_id(ec)) : DP_CURVE_NONE;
    }
    return DP_OK;
}

/* ---- Write ------------------------------------------------------------------ */

int dp_key_write(const dp_key *key, int format, int public_only,
                 unsigned char *buf, size_t buflen, size_t *needed)
{
    if (needed != NULL) {
        *needed = 0;
    }
    if (key == NULL || (buf == NULL && buflen != 0) ||
        (format != DP_FORMAT_PEM && format != DP_FORMAT_DER)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (mbedtls_pk_get_type(&key->pk) == MBEDTLS_PK_NONE) {
        return DP_ERR_BAD_STATE;
    }
    if (!public_only && key->public_only) {
        return DP_ERR_BAD_STATE; /* no private part to write */
    }
    unsigned char *tmp = dp_calloc(1, DP_KEY_WRITE_TMP);
    if (tmp == NULL) {
        return DP_ERR_NO_MEMORY;
    }
    const unsigned char *out = NULL;
    size_t out_len = 0;
    int ret;
    if (format == DP_FORMAT_PEM) {
        ret = public_only ? mbedtls_pk_write_pubkey_pem(&key->pk, tmp, DP_KEY_WRITE_TMP)
                          : mbedtls_pk_write_key_pem(&key->pk, tmp, DP_KEY_WRITE_TMP);
        if (ret == 0) {
            /* PEM output is NUL-terminated inside tmp. */
            const unsigned char *nul = memchr(tmp, '\0', DP_KEY_WRITE_TMP);
            out = tmp;
            out_len = nul != NULL ? (size_t)(nul - tmp) : DP_KEY_WRITE_TMP;
        }
    } else {
        ret = public_only ? mbedtls_pk_write_pubkey_der(&key->pk, tmp, DP_KEY_WRITE_TMP)
                          : mbedtls_pk_write_key_der(&key->pk, tmp, DP_KEY_WRITE_TMP);
        if (ret > 0) {
            out_len = (size_t)ret;
            out = tmp + DP_KEY_WRITE_TMP - out_len; /* DER is written at the end */
            ret = 0;
        }
    }
    if (ret == 0) {
        if (needed != NULL) {
            *needed = out_len;
        }
        if (out_len > buflen || out_len > (size_t)INT32_MAX) {
            ret = DP_ERR_BUFFER_TOO_SMALL;
        } else {
            memcpy(buf, out, out_len);
            ret = (int)out_len;
        }
    }
    mbedtls_platform_zeroize(tmp, DP_KEY_WRITE_TMP);
    dp_free(tmp);
    return ret;
}

/* ---- Generate --------------------------------------------------------------- */

int dp_key_generate_rsa(dp_key *key, unsigned int bits)
{
    if (key == NULL || bits < DP_RSA_GEN_MIN_BITS || bits > DP_RSA_GEN_MAX_BITS || bits % 8 != 0) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    mbedtls_pk_context fresh;
    mbedtls_pk_init(&fresh);
    int ret = mbedtls_pk_setup(&fresh, mbedtls_pk_info_from_type(MBEDTLS_PK_RSA));
    if (ret == 0) {
        ret = mbedtls_rsa_gen_key(mbedtls_pk_rsa(fresh), dp_rng, NULL, bits, 65537);
    }
    if (ret == 0) {
        dp_key_replace(key, &fresh, 0);
    }
    mbedtls_pk_free(&fresh);
    return ret;
}

int dp_key_generate_ec(dp_key *key, int curve)
{
    mbedtls_ecp_group_id group;
    switch (curve) {
    case DP_CURVE_P256: group = MBEDTLS_ECP_DP_SECP256R1; break;
    case DP_CURVE_P384: group = MBEDTLS_ECP_DP_SECP384R1; break;
    case DP_CURVE_P521: group = MBEDTLS_ECP_DP_SECP521R1; break;
    default: return DP_ERR_INVALID_ARGUMENT;
    }
    if (key == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    mbedtls_pk_context fresh;
    mbedtls_pk_init(&fresh);
    int ret = mbedtls_pk_setup(&fresh, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
    if (ret == 0) {
        ret = mbedtls_ecp_gen_key(group, mbedtls_pk_ec(fresh), dp_rng, NULL);
    }
    if (ret == 0) {
        dp_key_replace(key, &fresh, 0);
    }
    mbedtls_pk_free(&fresh);
    return ret;
}

/* ---- Pairing ---------------------------------------------------------------- */

int dp_key_matches_cert(const dp_key *key, const dp_cert *cert, size_t index)
{
    if (key == NULL || cert == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (mbedtls_pk_get_type(&key->pk) == MBEDTLS_PK_NONE || key->public_only) {
        return DP_ERR_BAD_STATE;
    }
    const mbedtls_x509_crt *crt = &cert->chain;
    for (size_t i = 0; i < index && crt != NULL; i++) {
        crt = crt->next;
    }
    if (crt == NULL || cert->count == 0 || index >= cert->count) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    int ret = mbedtls_pk_check_pair(&crt->pk, &key->pk, dp_rng, NULL);
    if (ret == MBEDTLS_ERR_PK_ALLOC_FAILED || ret == MBEDTLS_ERR_MPI_ALLOC_FAILED) {
        return DP_ERR_NO_MEMORY;
    }
    return ret == 0 ? DP_OK : DP_ERR_KEY_MISMATCH;
}

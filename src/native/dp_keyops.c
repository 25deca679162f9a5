/*
 * dp_keyops.c: what Godot's Crypto does with a CryptoKey: sign and verify a
 * precomputed hash (RSA PKCS#1 v1.5 or ECDSA with a DER signature), and
 * RSA PKCS#1 v1.5 encryption and decryption, all through Mbed TLS's pk
 * layer. The caller serialises calls on one key (the Python key lock);
 * Mbed TLS's RSA blinding state has its own mutex.
 */
#include "dp_crypto.h"

#include "mbedtls/pk.h"
#include "mbedtls/platform_util.h"
#include "mbedtls/rsa.h"

/* DP_SIGNATURE_MAX (an enum, invisible to #if) must hold every signature
 * and RSA block Mbed TLS can produce: a negative array size otherwise. */
typedef char dp_signature_max_is_enough[(MBEDTLS_PK_SIGNATURE_MAX_SIZE <= DP_SIGNATURE_MAX &&
                                         MBEDTLS_MPI_MAX_SIZE <= DP_SIGNATURE_MAX) ? 1 : -1];

/* DP_OK if key holds a key (and a private part when needs_private). */
static int dp_key_usable(const dp_key *key, int needs_private)
{
    if (key == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (mbedtls_pk_get_type(&key->pk) == MBEDTLS_PK_NONE) {
        return DP_ERR_BAD_STATE;
    }
    if (needs_private && key->public_only) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    return DP_OK;
}

/* The digest type for a hash of hash_len bytes, or MBEDTLS_MD_NONE. */
static mbedtls_md_type_t dp_hash_checked(int hash_type, const unsigned char *hash,
                                         size_t hash_len)
{
    mbedtls_md_type_t md = dp_md_type(hash_type);
    const mbedtls_md_info_t *info = mbedtls_md_info_from_type(md);
    if (info == NULL || hash == NULL || hash_len != mbedtls_md_get_size(info)) {
        return MBEDTLS_MD_NONE;
    }
    return md;
}

int dp_key_sign(dp_key *key, int hash_type, const unsigned char *hash, size_t hash_len,
                unsigned char *sig, size_t sig_cap)
{
    int ret = dp_key_usable(key, 1);
    if (ret != DP_OK) {
        return ret;
    }
    mbedtls_md_type_t md = dp_hash_checked(hash_type, hash, hash_len);
    if (md == MBEDTLS_MD_NONE || sig == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    size_t sig_len = 0;
    ret = mbedtls_pk_sign(&key->pk, md, hash, hash_len, sig, sig_cap, &sig_len, dp_rng, NULL);
    return ret != 0 ? ret : (int)sig_len;
}

int dp_key_verify(dp_key *key, int hash_type, const unsigned char *hash, size_t hash_len,
                  const unsigned char *sig, size_t sig_len)
{
    int ret = dp_key_usable(key, 0);
    if (ret != DP_OK) {
        return ret;
    }
    mbedtls_md_type_t md = dp_hash_checked(hash_type, hash, hash_len);
    if (md == MBEDTLS_MD_NONE || (sig == NULL && sig_len != 0)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (sig_len == 0 || sig_len > DP_SIGNATURE_MAX) {
        return 0; /* no valid signature is empty or longer than any we know */
    }
    /* Any failure here is about the signature (wrong value, bad DER, wrong
     * length, trailing bytes): all of them mean "not valid". */
    return mbedtls_pk_verify(&key->pk, md, hash, hash_len, sig, sig_len) == 0 ? 1 : 0;
}

/* As dp_key_usable, and the key must be RSA (PKCS#1 v1.5 encryption is
 * RSA only, as in Godot). */
static int dp_rsa_key_usable(const dp_key *key, int needs_private)
{
    int ret = dp_key_usable(key, needs_private);
    if (ret != DP_OK) {
        return ret;
    }
    return mbedtls_pk_get_type(&key->pk) == MBEDTLS_PK_RSA ? DP_OK : DP_ERR_UNSUPPORTED;
}

int dp_key_encrypt(dp_key *key, const unsigned char *in, size_t in_len, unsigned char *out,
                   size_t out_cap)
{
    int ret = dp_rsa_key_usable(key, 0);
    if (ret != DP_OK) {
        return ret;
    }
    size_t modulus = mbedtls_pk_get_len(&key->pk);
    /* PKCS#1 v1.5 type 2: 00 02, at least 8 random non-zero bytes, 00. */
    if ((in == NULL && in_len != 0) || out == NULL || modulus < 11 || in_len > modulus - 11 ||
        out_cap < modulus) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    size_t out_len = 0;
    ret = mbedtls_pk_encrypt(&key->pk, in, in_len, out, &out_len, out_cap, dp_rng, NULL);
    return ret != 0 ? ret : (int)out_len;
}

int dp_key_decrypt(dp_key *key, const unsigned char *in, size_t in_len, unsigned char *out,
                   size_t out_cap)
{
    int ret = dp_rsa_key_usable(key, 1);
    if (ret != DP_OK) {
        return ret;
    }
    size_t modulus = mbedtls_pk_get_len(&key->pk);
    if ((in == NULL && in_len != 0) || out == NULL || out_cap < modulus) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (in_len != modulus) {
        return MBEDTLS_ERR_RSA_INVALID_PADDING;
    }
    size_t out_len = 0;
    ret = mbedtls_pk_decrypt(&key->pk, in, in_len, out, &out_len, out_cap, dp_rng, NULL);
    if (ret != 0) {
        /* One answer for every bad ciphertext (the padding check itself is
         * constant-time in Mbed TLS); nothing partial is left in out. */
        mbedtls_platform_zeroize(out, out_cap);
        return MBEDTLS_ERR_RSA_INVALID_PADDING;
    }
    return (int)out_len;
}

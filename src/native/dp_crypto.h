/*
 * dp_crypto.h: the layout of the crypto handles, shared by dp_key.c,
 * dp_cert.c and the DTLS configuration (dp_config.c), which hands the same
 * Mbed TLS objects to mbedtls_ssl_conf_own_cert / _ca_chain. Not seen by cffi:
 * Python only holds opaque pointers.
 */
#ifndef DTLSPEER_DP_CRYPTO_H
#define DTLSPEER_DP_CRYPTO_H

#include "dtlspeer.h"

#include "mbedtls/md.h"
#include "mbedtls/pk.h"
#include "mbedtls/x509_crt.h"

struct dp_key {
    mbedtls_pk_context pk; /* empty (type NONE) until loaded or generated */
    int public_only;       /* 1 when only the public part is held */
};

struct dp_cert {
    mbedtls_x509_crt chain; /* leaf first; empty until loaded */
    size_t count;           /* number of certificates in chain */
};

/* Copy data into a fresh dp_calloc buffer with a NUL appended, as Mbed TLS's
 * PEM readers require. *parse_len is len + 1 when the data looks like PEM
 * (contains "-----BEGIN "), else len (DER). Free with dp_crypto_input_free,
 * which zeroizes (the buffer may hold key material). */
int dp_crypto_input_copy(const unsigned char *data, size_t len, size_t max_len,
                         unsigned char **copy, size_t *parse_len);
void dp_crypto_input_free(unsigned char *copy, size_t len);

/* The Mbed TLS digest of a DP_HASH_* value, MBEDTLS_MD_NONE for any other
 * (dp_digest.c; also used by the signatures in dp_keyops.c). */
mbedtls_md_type_t dp_md_type(int hash_type);

#endif /* DTLSPEER_DP_CRYPTO_H */

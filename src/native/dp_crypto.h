/*
 * dp_crypto.h: the layout of the crypto handles, shared by dp_key.c,
 * dp_cert.c and the DTLS configuration (dp_config.c), which hands the same
 * Mbed TLS objects to mbedtls_ssl_conf_own_cert / _ca_chain. Not seen by cffi:
 * Python only holds opaque pointers.
 */
#ifndef DTLSPEER_DP_CRYPTO_H
#define DTLSPEER_DP_CRYPTO_H

#include "dtlspeer.h"

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

#endif /* DTLSPEER_DP_CRYPTO_H */

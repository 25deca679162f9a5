/*
 * dtlspeer.h: the C API of dtlspeer._native, the only header cffi sees.
 *
 * Everything between the CDEF markers is handed to cffi's cdef() verbatim, so
 * it must stay plain C declarations: no #include, no #if, no macros (constants
 * are enums). Mbed TLS types never appear here; objects are opaque handles.
 *
 * Return convention for int-returning functions: >= 0 is success (often a
 * count or a length), < 0 is an error code: an MBEDTLS_ERR_* / PSA_ERROR_*
 * value (above -0x10000), a DP_ERR_* value (-0x10000 .. -0x1FFFF), or
 * DP_ERR_ERRNO_BASE - errno for operating-system failures. Python turns
 * codes into exceptions in exactly one place (dtlspeer._binding.check).
 */
#ifndef DTLSPEER_H
#define DTLSPEER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* BEGIN CDEF */

/* ---- Return codes (dp_common.c) ----------------------------------------- */

enum {
    DP_OK = 0,
    DP_ERR_BASE = -0x10000,
    DP_ERR_INVALID_ARGUMENT = -0x10001, /* a caller passed a bad value */
    DP_ERR_NO_MEMORY = -0x10002,        /* an allocation failed */
    DP_ERR_BUFFER_TOO_SMALL = -0x10003, /* output buffer too small for the result */
    DP_ERR_KEY_MISMATCH = -0x10004,     /* private key does not match certificate */
    DP_ERR_UNSUPPORTED = -0x10005,      /* valid request this build cannot do */
    DP_ERR_BAD_STATE = -0x10006,        /* object not in a state that allows this */
    DP_ERR_WOULD_BLOCK = -0x10007,      /* non-blocking operation would block */
    DP_ERR_LIMIT = -0x10008,            /* a configured limit was reached */
    DP_ERR_CLOSED = -0x10009,           /* object was closed */
    DP_ERR_TOO_LARGE = -0x1000A,        /* payload larger than allowed */
    DP_ERR_LAST = -0x1FFFF,
    DP_ERR_ERRNO_BASE = -0x20000        /* DP_ERR_ERRNO_BASE - errno */
};

/* ---- Library state (dp_common.c) ---------------------------------------- */

/* Initialise PSA crypto, the shared RNG, threading and the counting
 * allocator. Idempotent and thread-safe; the binding calls it on import. */
int dp_init(void);

/* Message for any return code of this API (Mbed TLS, PSA, DP or errno). */
void dp_strerror(int code, char *buf, size_t buflen);

/* Mbed TLS version string, e.g. "3.6.7". */
const char *dp_mbedtls_version(void);

/* Build configuration as "name=value" lines (compile-time options). */
const char *dp_build_config(void);

/* Newline-separated names of the ciphersuites this build can negotiate.
 * Returns the length written (excluding NUL) or DP_ERR_BUFFER_TOO_SMALL. */
int dp_ciphersuite_names(char *buf, size_t buflen);

/* Fill buf with len bytes from the shared, fork-safe PSA RNG. */
int dp_random(unsigned char *buf, size_t len);

/* Bytes and blocks currently allocated through dp_calloc (all Mbed TLS heap
 * use and every dtlspeer C object). For tests and diagnostics. */
void dp_alloc_stats(int64_t *bytes, int64_t *blocks);

/* ---- Crypto objects (dp_key.c, dp_cert.c; structs in dp_crypto.h) ------- */

typedef struct dp_key dp_key;   /* a private or public key (RSA or EC) */
typedef struct dp_cert dp_cert; /* an X.509 certificate chain, leaf first */

/* ---- UDP endpoint (dp_endpoint.c) ---------------------------------------- */

/* ---- DTLS engine (dp_config.c, dp_conn.c, dp_cookie.c) ------------------- */

/* END CDEF */

/* ---- Internal helpers shared by our C files (not seen by cffi) ---------- */

void *dp_calloc(size_t count, size_t size);
void dp_free(void *ptr);
/* mbedtls f_rng-compatible callback over the shared RNG. */
int dp_rng(void *ctx, unsigned char *out, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* DTLSPEER_H */

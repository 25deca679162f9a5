/*
 * Mbed TLS MBEDTLS_THREADING_ALT mutex type for Windows builds (POSIX builds
 * use MBEDTLS_THREADING_PTHREAD instead). The storage is an SRWLOCK, kept as
 * a pointer-sized field so this header needs no <windows.h>, which would
 * leak its macros into every Mbed TLS file. dp_common.c installs the
 * functions with mbedtls_threading_set_alt().
 */
#ifndef DTLSPEER_THREADING_ALT_H
#define DTLSPEER_THREADING_ALT_H

typedef struct mbedtls_threading_mutex_t {
    void *srwlock;   /* SRWLOCK: one pointer, SRWLOCK_INIT is all zeroes */
    char is_valid;
} mbedtls_threading_mutex_t;

#endif /* DTLSPEER_THREADING_ALT_H */

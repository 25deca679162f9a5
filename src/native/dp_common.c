/*
 * dp_common.c: library-wide state shared by every dtlspeer object: PSA
 * crypto + its RNG, threading, the counting allocator, error messages and
 * build information.
 */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200112L /* clock_gettime under -std=c11 */
#endif
#include "dtlspeer.h"

#include <errno.h>
#if defined(__GLIBC__)
#include <malloc.h> /* malloc_trim: see dp_trim_after_parks */
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mbedtls/build_info.h"
#include "mbedtls/error.h"
#include "mbedtls/platform.h"
#include "mbedtls/platform_time.h"
#include "mbedtls/psa_util.h"
#include "mbedtls/ssl.h"
#include "mbedtls/ssl_ciphersuites.h"
#include "mbedtls/threading.h"
#include "mbedtls/version.h"
#include "psa/crypto.h"

#if defined(_WIN32)
#include <windows.h>
#else
#include <pthread.h>
#include <time.h>
#endif

/* ---- Clock ------------------------------------------------------------------ */

int64_t dp_clock_ms(int wall)
{
#if defined(_WIN32)
    if (wall) {
        FILETIME ft; /* 100 ns ticks since 1601-01-01 */
        GetSystemTimeAsFileTime(&ft);
        uint64_t ticks = ((uint64_t)ft.dwHighDateTime << 32) | ft.dwLowDateTime;
        return (int64_t)(ticks / 10000u) - INT64_C(11644473600000);
    }
    return (int64_t)GetTickCount64();
#else
    struct timespec ts;
    clock_gettime(wall ? CLOCK_REALTIME : CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
#endif
}

/* Mbed TLS's millisecond clock (MBEDTLS_PLATFORM_MS_TIME_ALT, see
 * dtlspeer_mbedtls_config.h): the wall clock, so session tickets carry a
 * creation time that every machine sharing the ticket keys can judge. */
mbedtls_ms_time_t mbedtls_ms_time(void)
{
    return (mbedtls_ms_time_t)dp_clock_ms(1);
}

int64_t dp_resolve_now(int64_t now_ms)
{
    if (now_ms == DP_NOW || now_ms == DP_NOW_WALL) {
        return dp_clock_ms(now_ms == DP_NOW_WALL);
    }
    return now_ms;
}

/* ---- Counting allocator --------------------------------------------------
 * Each block carries a header holding its size, so dp_free can subtract it.
 * The header is as large as the strictest alignment, keeping the payload
 * aligned for any type. */

typedef union {
    size_t size;
    long double ld;
    void *p;
    long long ll;
} dp_alloc_header;

static volatile int64_t g_alloc_bytes;
static volatile int64_t g_alloc_blocks;

#if defined(_MSC_VER)
#include <intrin.h>
#define DP_ATOMIC_ADD(ptr, v) _InterlockedExchangeAdd64((volatile __int64 *)(ptr), (v))
#define DP_ATOMIC_LOAD(ptr) _InterlockedExchangeAdd64((volatile __int64 *)(ptr), 0)
#define DP_ATOMIC_STORE(ptr, v) (void)_InterlockedExchange64((volatile __int64 *)(ptr), (v))
#else
#define DP_ATOMIC_ADD(ptr, v) __atomic_fetch_add((ptr), (v), __ATOMIC_RELAXED)
#define DP_ATOMIC_LOAD(ptr) __atomic_load_n((ptr), __ATOMIC_RELAXED)
#define DP_ATOMIC_STORE(ptr, v) __atomic_store_n((ptr), (v), __ATOMIC_RELAXED)
#endif

static void *counted_alloc(size_t count, size_t size, int zero)
{
    if (count != 0 && size > (SIZE_MAX - sizeof(dp_alloc_header)) / count) {
        return NULL;
    }
    size_t total = count * size;
    size_t bytes = sizeof(dp_alloc_header) + total;
    dp_alloc_header *h = zero ? calloc(1, bytes) : malloc(bytes);
    if (h == NULL) {
        return NULL;
    }
    h->size = total;
    DP_ATOMIC_ADD(&g_alloc_bytes, (int64_t)total);
    DP_ATOMIC_ADD(&g_alloc_blocks, 1);
    return h + 1;
}

void *dp_calloc(size_t count, size_t size)
{
    return counted_alloc(count, size, 1);
}

void *dp_malloc_uninit(size_t count, size_t size)
{
    return counted_alloc(count, size, 0);
}

void dp_free(void *ptr)
{
    if (ptr == NULL) {
        return;
    }
    dp_alloc_header *h = (dp_alloc_header *)ptr - 1;
    DP_ATOMIC_ADD(&g_alloc_bytes, -(int64_t)h->size);
    DP_ATOMIC_ADD(&g_alloc_blocks, -1);
    free(h);
}

void dp_alloc_stats(int64_t *bytes, int64_t *blocks)
{
    if (bytes != NULL) {
        *bytes = DP_ATOMIC_LOAD(&g_alloc_bytes);
    }
    if (blocks != NULL) {
        *blocks = DP_ATOMIC_LOAD(&g_alloc_blocks);
    }
}

/* ---- Returning parked connections' memory ---------------------------------
 * A parked connection frees ~35 KB from the middle of the heap; glibc keeps
 * such free chunks resident (it only trims the top of the heap), so RSS would
 * not show parking until new connections reuse them. dp_conn counts every
 * park here, whichever API drives it (DTLSHost or the Godot-style classes),
 * and the engine's per-tick calls (dp_host_service, dp_link_poll) hand the
 * free pages back at most once per DP_TRIM_MS, whatever the number of parks
 * (malloc_trim walks the free lists: milliseconds for a heap of 10 000
 * connections; a peer that can make connections park must not be able to
 * make us trim more often). Process-wide, like the heap. Two threads may
 * both trim at once: harmless. Other C libraries: nothing to hand back. */

#define DP_TRIM_MS 1000 /* after any parks, at most once per second */

static volatile int64_t g_parks_untrimmed;
static volatile int64_t g_last_trim_ms;
static volatile int64_t g_trims;

void dp_note_park(void)
{
    DP_ATOMIC_ADD(&g_parks_untrimmed, 1);
}

void dp_trim_after_parks(void)
{
    int64_t parks = DP_ATOMIC_LOAD(&g_parks_untrimmed);
    if (parks == 0) {
        return; /* the per-tick case: one load, no clock */
    }
    int64_t now_ms = dp_clock_ms(0);
    if (now_ms - DP_ATOMIC_LOAD(&g_last_trim_ms) < DP_TRIM_MS) {
        return;
    }
    DP_ATOMIC_ADD(&g_parks_untrimmed, -parks); /* parks noted meanwhile stay counted */
    DP_ATOMIC_STORE(&g_last_trim_ms, now_ms);
    DP_ATOMIC_ADD(&g_trims, 1);
#if defined(__GLIBC__)
    (void)malloc_trim(0);
#endif
}

int64_t dp_trim_count(void)
{
    return DP_ATOMIC_LOAD(&g_trims);
}

/* ---- Threading (Windows: SRW locks through MBEDTLS_THREADING_ALT) -------- */

#if defined(MBEDTLS_THREADING_ALT) && defined(_WIN32)
static void win_mutex_init(mbedtls_threading_mutex_t *m)
{
    InitializeSRWLock((PSRWLOCK)&m->srwlock);
    m->is_valid = 1;
}

static void win_mutex_free(mbedtls_threading_mutex_t *m)
{
    m->is_valid = 0;
}

static int win_mutex_lock(mbedtls_threading_mutex_t *m)
{
    if (!m->is_valid) {
        return MBEDTLS_ERR_THREADING_BAD_INPUT_DATA;
    }
    AcquireSRWLockExclusive((PSRWLOCK)&m->srwlock);
    return 0;
}

static int win_mutex_unlock(mbedtls_threading_mutex_t *m)
{
    if (!m->is_valid) {
        return MBEDTLS_ERR_THREADING_BAD_INPUT_DATA;
    }
    ReleaseSRWLockExclusive((PSRWLOCK)&m->srwlock);
    return 0;
}
#endif

/* ---- One-time initialisation -------------------------------------------- */

static int g_init_status = DP_ERR_BAD_STATE;

static void init_once(void)
{
#if defined(MBEDTLS_THREADING_ALT) && defined(_WIN32)
    mbedtls_threading_set_alt(win_mutex_init, win_mutex_free, win_mutex_lock, win_mutex_unlock);
#endif
    if (mbedtls_platform_set_calloc_free(dp_calloc, dp_free) != 0) {
        g_init_status = DP_ERR_UNSUPPORTED;
        return;
    }
    psa_status_t st = psa_crypto_init();
    g_init_status = (st == PSA_SUCCESS) ? DP_OK : (int)st;
}

#if defined(_WIN32)
static INIT_ONCE g_once = INIT_ONCE_STATIC_INIT;
static BOOL CALLBACK win_init_once(PINIT_ONCE once, PVOID param, PVOID *ctx)
{
    (void)once;
    (void)param;
    (void)ctx;
    init_once();
    return TRUE;
}
#else
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
#endif

int dp_init(void)
{
#if defined(_WIN32)
    InitOnceExecuteOnce(&g_once, win_init_once, NULL, NULL);
#else
    pthread_once(&g_once, init_once);
#endif
    return g_init_status;
}

/* ---- RNG ------------------------------------------------------------------
 * The PSA RNG: one shared, locked, fork-safe generator (it reseeds in a
 * child after fork() since Mbed TLS 3.6.6), and the API 4.x keeps. */

int dp_rng(void *ctx, unsigned char *out, size_t len)
{
    return mbedtls_psa_get_random(ctx, out, len);
}

int dp_random(unsigned char *buf, size_t len)
{
    if (buf == NULL && len != 0) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    /* psa_generate_random caps single requests; feed it in chunks. */
    while (len > 0) {
        size_t chunk = len > 1024 ? 1024 : len;
        psa_status_t st = psa_generate_random(buf, chunk);
        if (st != PSA_SUCCESS) {
            return (int)st;
        }
        buf += chunk;
        len -= chunk;
    }
    return DP_OK;
}

/* ---- Errors ---------------------------------------------------------------- */

static const char *dp_message(int code)
{
    switch (code) {
    case DP_ERR_INVALID_ARGUMENT: return "invalid argument";
    case DP_ERR_NO_MEMORY: return "out of memory";
    case DP_ERR_BUFFER_TOO_SMALL: return "output buffer too small";
    case DP_ERR_KEY_MISMATCH: return "private key does not match the certificate";
    case DP_ERR_UNSUPPORTED: return "not supported by this build";
    case DP_ERR_BAD_STATE: return "object is not in a state that allows this operation";
    case DP_ERR_WOULD_BLOCK: return "operation would block";
    case DP_ERR_LIMIT: return "configured limit reached";
    case DP_ERR_CLOSED: return "object is closed";
    case DP_ERR_TOO_LARGE: return "payload too large";
    default: return NULL;
    }
}

void dp_strerror(int code, char *buf, size_t buflen)
{
    if (buf == NULL || buflen == 0) {
        return;
    }
    buf[0] = '\0';
    if (code >= 0) {
        snprintf(buf, buflen, "success");
    } else if (code <= DP_ERR_ERRNO_BASE) {
        int err = DP_ERR_ERRNO_BASE - code;
#if defined(_WIN32)
        /* Winsock codes (WSAE*, >= 10000) are unknown to the C runtime's strerror. */
        if (err >= 10000 &&
            FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, NULL,
                           (DWORD)err, 0, buf, (DWORD)buflen, NULL) != 0) {
            return;
        }
#endif
        snprintf(buf, buflen, "%s", strerror(err));
    } else if (code <= DP_ERR_BASE) {
        const char *msg = dp_message(code);
        snprintf(buf, buflen, "%s", msg ? msg : "unknown dtlspeer error");
    } else if (code <= -0x80 && code >= -0xFF) {
        /* PSA_ERROR_* live here; mbedtls_strerror does not name them. */
        snprintf(buf, buflen, "PSA crypto error %d", code);
    } else {
        mbedtls_strerror(code, buf, buflen);
    }
}

/* ---- Build information ----------------------------------------------------- */

const char *dp_mbedtls_version(void)
{
    return MBEDTLS_VERSION_STRING;
}

#define DP_STR2(x) #x
#define DP_STR(x) DP_STR2(x)
#if defined(MBEDTLS_THREADING_PTHREAD)
#define DP_THREADING "pthread"
#elif defined(MBEDTLS_THREADING_ALT)
#define DP_THREADING "windows-srwlock"
#else
#define DP_THREADING "none"
#endif
#if defined(MBEDTLS_AESNI_C)
#define DP_AESNI "on (used when the CPU has it)"
#else
#define DP_AESNI "off"
#endif
#if defined(MBEDTLS_SSL_DTLS_CONNECTION_ID)
#define DP_CID "rfc9146"
#else
#define DP_CID "off"
#endif

const char *dp_build_config(void)
{
    return "mbedtls_version=" MBEDTLS_VERSION_STRING "\n"
           "ssl_in_content_len=" DP_STR(MBEDTLS_SSL_IN_CONTENT_LEN) "\n"
           "ssl_out_content_len=" DP_STR(MBEDTLS_SSL_OUT_CONTENT_LEN) "\n"
           "dtls_max_buffering=" DP_STR(MBEDTLS_SSL_DTLS_MAX_BUFFERING) "\n"
           "connection_id=" DP_CID "\n"
           "threading=" DP_THREADING "\n"
           "aesni=" DP_AESNI "\n"
#if defined(MBEDTLS_SSL_PROTO_TLS1_3)
           "tls1_3=on\n"
#else
           "tls1_3=off\n"
#endif
#if defined(MBEDTLS_SSL_DTLS_HELLO_VERIFY)
           "hello_verify=on\n"
#endif
#if defined(MBEDTLS_SSL_DTLS_ANTI_REPLAY)
           "anti_replay=on\n"
#endif
#if defined(MBEDTLS_SSL_SESSION_TICKETS)
           "session_tickets=on\n"
#endif
#if defined(MBEDTLS_SSL_CONTEXT_SERIALIZATION)
           "context_serialization=on\n"
#endif
           ;
}

int dp_ciphersuite_names(char *buf, size_t buflen)
{
    if (buf == NULL || buflen == 0) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    size_t used = 0;
    buf[0] = '\0';
    for (const int *id = mbedtls_ssl_list_ciphersuites(); *id != 0; id++) {
        const char *name = mbedtls_ssl_get_ciphersuite_name(*id);
        size_t n = strlen(name);
        if (used + n + 2 > buflen) {
            return DP_ERR_BUFFER_TOO_SMALL;
        }
        memcpy(buf + used, name, n);
        used += n;
        buf[used++] = '\n';
        buf[used] = '\0';
    }
    return (int)used;
}

/*
 * dtlspeer's delta over Mbed TLS 3.6's default configuration.
 *
 * The build passes -DMBEDTLS_USER_CONFIG_FILE="dtlspeer_mbedtls_config.h", so
 * Mbed TLS reads its own include/mbedtls/mbedtls_config.h first and this file
 * after it. Everything not named here keeps the upstream default, including the
 * parts DTLS 1.2 game traffic needs: DTLS + HelloVerify cookies
 * (SSL_DTLS_HELLO_VERIFY, SSL_COOKIE_C), anti-replay, RFC 9146 Connection ID,
 * session tickets, context serialization, max fragment
 * length, AES-NI/AESCE with run-time CPU detection, GCM, CCM, ChaCha20-Poly1305.
 *
 * Rule for every removal: a DTLS 1.2 game server or client never uses it and
 * no peer we interoperate with (Godot 3.2+/4.x, OpenSSL, GnuTLS) needs it.
 */
#ifndef DTLSPEER_MBEDTLS_CONFIG_H
#define DTLSPEER_MBEDTLS_CONFIG_H

/* ---- Protocol ------------------------------------------------------------ */

/* Mbed TLS 3.6 has no DTLS 1.3; TLS 1.3 is stream-only code we never run. */
#undef MBEDTLS_SSL_PROTO_TLS1_3
#undef MBEDTLS_SSL_TLS1_3_COMPATIBILITY_MODE
/* Renegotiation: no game peer needs it, context serialization refuses to work
 * with it, and CVE-2026-50713 lived in this path. */
#undef MBEDTLS_SSL_RENEGOTIATION
/* Client port reuse inside Mbed TLS resets a live context when an epoch-0
 * ClientHello with a valid cookie arrives, whatever else the datagram holds:
 * the session is replaced in place before the new handshake is verified
 * (issue 11 item 1). RFC 6347 4.2.8 is implemented above it instead (the
 * endpoint / host route such hellos to a successor connection; the old
 * session ends only when the new Finished was verified), so a live context
 * never sees an epoch-0 ClientHello and this code path is compiled out. */
#undef MBEDTLS_SSL_DTLS_CLIENT_PORT_REUSE
/* RFC 9146 CID padding: granularity 1 = no padding. Games pay per byte and
 * their traffic pattern is no secret. Saves up to 15 bytes per record. */
#undef MBEDTLS_SSL_CID_TLS1_3_PADDING_GRANULARITY
#define MBEDTLS_SSL_CID_TLS1_3_PADDING_GRANULARITY 1

/* ---- Key exchanges: forward secret ones and PSK only --------------------- */

/* RSA key transport and static ECDH have no forward secrecy; RSA-PSK neither.
 * DHE is slow, needs DHM and Godot compiles it out too. ECJPAKE: Thread only. */
#undef MBEDTLS_KEY_EXCHANGE_RSA_ENABLED
#undef MBEDTLS_KEY_EXCHANGE_RSA_PSK_ENABLED
#undef MBEDTLS_KEY_EXCHANGE_DHE_RSA_ENABLED
#undef MBEDTLS_KEY_EXCHANGE_DHE_PSK_ENABLED
#undef MBEDTLS_KEY_EXCHANGE_ECDH_ECDSA_ENABLED
#undef MBEDTLS_KEY_EXCHANGE_ECDH_RSA_ENABLED
#undef MBEDTLS_KEY_EXCHANGE_ECJPAKE_ENABLED
#undef MBEDTLS_ECJPAKE_C
#undef MBEDTLS_DHM_C

/* ---- Ciphers: AEAD only --------------------------------------------------- */

/* CBC suites are the source of every Lucky13-style bug; all our peers speak
 * AES-GCM and ChaCha20-Poly1305. Safe since 3.6.7 (CVE-2026-50580 was
 * AEAD-only configs). The CBC *mode* is built for AESContext; the CBC
 * *suites* stay out of TLS (see "Crypto family" below). Encrypt-then-MAC
 * only applies to CBC suites. */
#undef MBEDTLS_SSL_ENCRYPT_THEN_MAC
#undef MBEDTLS_CIPHER_MODE_CFB
#undef MBEDTLS_CIPHER_MODE_OFB
#undef MBEDTLS_CIPHER_MODE_XTS
#undef MBEDTLS_DES_C
#undef MBEDTLS_ARIA_C
#undef MBEDTLS_CAMELLIA_C
#undef MBEDTLS_NIST_KW_C
/* PKCS#5/#12 only decrypt password-protected keys, which (like Godot) we do not
 * accept; PKCS#7 and CSR/CRL parsing are not part of the API. */
#undef MBEDTLS_PKCS5_C
#undef MBEDTLS_PKCS12_C
#undef MBEDTLS_PKCS7_C
#undef MBEDTLS_X509_CSR_PARSE_C
#undef MBEDTLS_X509_CSR_WRITE_C
#undef MBEDTLS_X509_CRL_PARSE_C
/* RIPEMD-160 appears in no TLS 1.2 suite or modern certificate. (MD5, which
 * neither does, is built for HashingContext: see "Crypto family" below.) */
#undef MBEDTLS_RIPEMD160_C
/* Hash-based signatures and VIA PadLock: not used by TLS. */
#undef MBEDTLS_LMS_C
#undef MBEDTLS_PADLOCK_C

/* ---- Crypto family (Godot's HashingContext, HMACContext, AESContext) ----- */

/* Godot's HashingContext offers MD5 and AESContext offers ECB and CBC
 * (issue 12 section 3), so the primitives come back, for the Crypto classes
 * only. Enabling them must not widen what TLS negotiates:
 *   - MBEDTLS_CIPHER_MODE_CBC would also compile in every CBC ciphersuite.
 *     MBEDTLS_SSL_CIPHERSUITES below pins the list mbedtls_ssl_list_
 *     ciphersuites() returns to the AEAD suites this build offered before
 *     (same order), and dp_config accepts no suite outside that list, so a
 *     CBC suite can be neither offered nor selected (tests/test_tls_surface.py
 *     and tests/interop/test_tls_surface_openssl.py pin suites and signature
 *     algorithms). Encrypt-then-MAC stays off (CBC-only extension).
 *   - Cost: Mbed TLS sizes each record buffer for the worst CBC record once
 *     CBC exists (+256 bytes padding, +32 bytes MAC, two buffers): measured
 *     +688 bytes of heap per active connection (36 234 -> 36 922), +16 per
 *     parked one (docs/architecture.md, "Crypto family").
 *   - MD5: TLS 1.2 offers and accepts only the signature algorithms in its
 *     configured list (SHA-256/384/512), and the default X.509 profile
 *     refuses MD5 (and SHA-1) certificate signatures, as it did SHA-1 before.
 * ECB needs no option (mbedtls_aes_crypt_ecb is always built). */
#define MBEDTLS_MD5_C
#define MBEDTLS_CIPHER_MODE_CBC
#define MBEDTLS_SSL_CIPHERSUITES                                   \
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,           \
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,         \
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,               \
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,                 \
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_CCM,                      \
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_CCM_8,                    \
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,               \
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,                 \
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_CCM,                      \
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8,                    \
    MBEDTLS_TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256,           \
    MBEDTLS_TLS_PSK_WITH_CHACHA20_POLY1305_SHA256,                 \
    MBEDTLS_TLS_PSK_WITH_AES_256_GCM_SHA384,                       \
    MBEDTLS_TLS_PSK_WITH_AES_256_CCM,                              \
    MBEDTLS_TLS_PSK_WITH_AES_256_CCM_8,                            \
    MBEDTLS_TLS_PSK_WITH_AES_128_GCM_SHA256,                       \
    MBEDTLS_TLS_PSK_WITH_AES_128_CCM,                              \
    MBEDTLS_TLS_PSK_WITH_AES_128_CCM_8

/* ---- Curves: the ones certificates and key exchange actually use ---------- */

/* Keep secp256r1 / secp384r1 / secp521r1 (certificates, ECDHE) and X25519
 * (fast ECDHE). The rest are legacy, Koblitz or Brainpool curves no game
 * peer offers. */
#undef MBEDTLS_ECP_DP_SECP192R1_ENABLED
#undef MBEDTLS_ECP_DP_SECP224R1_ENABLED
#undef MBEDTLS_ECP_DP_SECP192K1_ENABLED
#undef MBEDTLS_ECP_DP_SECP224K1_ENABLED
#undef MBEDTLS_ECP_DP_SECP256K1_ENABLED
#undef MBEDTLS_ECP_DP_BP256R1_ENABLED
#undef MBEDTLS_ECP_DP_BP384R1_ENABLED
#undef MBEDTLS_ECP_DP_BP512R1_ENABLED
#undef MBEDTLS_ECP_DP_CURVE448_ENABLED

/* Nothing reports the peer's certificate after the handshake (we keep only
 * its verification flags, in dp_conn), so do not keep the parsed chain: a
 * client saves ~1.9 KB (one P-256 certificate) to several KB (RSA chains),
 * and a parked session stores a SHA-256 digest of it, not the DER. */
#undef MBEDTLS_SSL_KEEP_PEER_CERTIFICATE

/* ---- Session resumption and client certificates (issue 14 sections 1 and 3) -- */

/* RFC 5077 tickets stay as in the defaults (MBEDTLS_SSL_SESSION_TICKETS,
 * MBEDTLS_SSL_TICKET_C; dp_ticket.c drives mbedtls_ssl_ticket_rotate with
 * keys derived from a shareable secret). Mbed TLS stamps a ticket with
 * mbedtls_ms_time() when it issues it and checks the ticket's age with the
 * same function when it parses it; on Linux that is CLOCK_BOOTTIME, whose
 * origin differs per machine, so a ticket minted by one machine would look
 * expired (or from the future) to another sharing the keys. dp_common.c
 * provides mbedtls_ms_time() on the wall clock instead (as Mbed TLS does on
 * Windows). Its only other users: TLS 1.3 (compiled out) and the PSA RNG's
 * personalization string (any changing value does). Client certificates need
 * nothing here: the server reads what it exposes (subject, SAN, fingerprint)
 * in the verify callback, so MBEDTLS_SSL_KEEP_PEER_CERTIFICATE stays off. */
#define MBEDTLS_PLATFORM_MS_TIME_ALT

/* ---- Platform: the extension owns I/O, time and memory -------------------- */

/* Sockets are Python's, the clock is injected (sans-I/O engine) and files
 * are read by Python: no net_sockets.c, timing.c or stdio in the library.
 * PSA persistent key storage needs files and is not used. */
#undef MBEDTLS_NET_C
#undef MBEDTLS_TIMING_C
#undef MBEDTLS_FS_IO
#undef MBEDTLS_PSA_CRYPTO_STORAGE_C
#undef MBEDTLS_PSA_ITS_FILE_C
#undef MBEDTLS_PSA_CRYPTO_SE_C
/* Debug tracing and self-tests are developer tools, not product code. */
#undef MBEDTLS_DEBUG_C
#undef MBEDTLS_SELF_TEST
/* The static-buffer allocator is for bare-metal targets. */
#undef MBEDTLS_MEMORY_BUFFER_ALLOC_C
/* Every Mbed TLS allocation goes through dp_calloc/dp_free, which count bytes
 * so tests can prove floods do not grow memory (dp_alloc_stats). */
#define MBEDTLS_PLATFORM_MEMORY

/* ---- Threads -------------------------------------------------------------- */

/* cffi releases the GIL around every C call, so two Python threads can be in
 * Mbed TLS at once. Shared objects (PSA RNG, cookie keys, ticket keys) must
 * then be locked: POSIX builds use pthread mutexes; Windows builds use
 * MBEDTLS_THREADING_ALT with SRW locks (src/native/threading_alt.h). Our own
 * objects lock in C, not in Python: each UDP endpoint has one mutex (shared
 * by the DTLS host built on it), held by every call on the endpoint, its
 * slots and the connections dp_link/dp_host drive through it, so one
 * connection's Mbed TLS context is only ever entered under that lock. The
 * Python wrappers hold no lock; their rule is one object, one thread at a
 * time (docs/architecture.md, "Threads"). */
#define MBEDTLS_THREADING_C
#if defined(_WIN32)
#define MBEDTLS_THREADING_ALT
#else
#define MBEDTLS_THREADING_PTHREAD
#endif

/* ---- Record sizes --------------------------------------------------------- */

/* Kept at the default 16 KiB in and out (IN/OUT_CONTENT_LEN = 16384), which
 * sets the limits every peer relies on:
 *   - largest record accepted from a peer: 16 384 bytes of plaintext (the
 *     TLS maximum; OpenSSL s_client sends 8 KiB+ records in one datagram);
 *   - largest handshake message accepted: 16 372 bytes after reassembly
 *     (IN_CONTENT_LEN - 12), e.g. the peer's Certificate message;
 *   - largest handshake message we send: 16 384 bytes, so our own chain may
 *     be up to ~16 KB of DER (an RSA-4096 chain of 3 is ~3.9 KB).
 * Measured (docs/architecture.md, "Memory per connection"): 4 KiB in /
 * 2 KiB out cut an active connection from 36 074 to 9 450 bytes of heap but
 * broke an RSA-4096 chain of 3 (Certificate message > OUT) and silently
 * dropped an 8 000-byte record from OpenSSL. VARIABLE_BUFFER_LENGTH only
 * helps clients that negotiate max_fragment_length, which OpenSSL, GnuTLS
 * and Godot do not. Idle connections are instead parked (dp_conn.c): a
 * parked server connection costs ~0.9 KB of heap, buffers and all freed. */

/* ECDHE speed (benchmarks/README.md, "Handshakes"). X25519 is our and
 * OpenSSL's first group, and Mbed TLS's generic Montgomery ladder made the
 * two X25519 multiplications ~70% of a server's ECDHE-ECDSA handshake
 * (callgrind). Project Everest's formally verified HACL* X25519
 * (3rdparty/everest, in the verified subset of vendor/mbedtls.lock.json)
 * replaces it in the legacy ECDH context TLS 1.2 uses. Apache-2.0 only. */
#define MBEDTLS_ECDH_VARIANT_EVEREST_ENABLED

/* ---- Record cipher speed --------------------------------------------------- */

/* GCM encrypts one 16-byte block per step. Without BLOCK_CIPHER_C each step
 * goes through the generic cipher layer (mbedtls_cipher_update in ECB mode:
 * argument and state checks, a wrapper, then mbedtls_aes_crypt_ecb); with it,
 * GCM calls mbedtls_aes_crypt_ecb through one switch. Same AES code (AES-NI
 * with run-time detection, or the table fallback), same output.
 * Mbed TLS enables it by itself only when CIPHER_C is absent. */
#define MBEDTLS_BLOCK_CIPHER_C

#endif /* DTLSPEER_MBEDTLS_CONFIG_H */

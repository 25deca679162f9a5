/*
 * dp_engine.h: internals shared by the DTLS engine files (dp_config.c,
 * dp_conn.c, dp_cookie.c). Not seen by cffi.
 */
#ifndef DTLSPEER_DP_ENGINE_H
#define DTLSPEER_DP_ENGINE_H

#include "dtlspeer.h"

#include "mbedtls/pk.h"
#include "mbedtls/ssl.h"
#include "mbedtls/threading.h"
#include "mbedtls/x509_crt.h"

/* Largest PSK identity and key we accept (RFC 4279 allows 2^16 - 1 for the
 * identity; nobody needs more than a few hundred bytes). */
#define DP_PSK_IDENTITY_MAX 256
#define DP_PSK_KEY_MAX 64
#define DP_MAX_GROUPS 8
#define DP_MAX_SUITES 32

typedef struct dp_psk_entry {
    unsigned char identity[DP_PSK_IDENTITY_MAX];
    size_t identity_len;
    unsigned char key[DP_PSK_KEY_MAX];
    size_t key_len;
} dp_psk_entry;

struct dp_config {
    mbedtls_ssl_config conf;
    mbedtls_threading_mutex_t ref_lock; /* guards refcount */
    int role;           /* DP_ROLE_* */
    int verify_mode;    /* DP_VERIFY_* (client only) */
    int finished;       /* 1 once dp_config_finish succeeded: immutable */
    int refcount;       /* the creator's reference + one per dp_conn */
    int has_own_cert;
    int has_ca_chain;
    mbedtls_x509_crt own_chain; /* private copies: the caller's dp_cert/dp_key */
    mbedtls_pk_context own_key; /* may be freed while connections live on */
    mbedtls_x509_crt ca_chain;
    char *common_name_override; /* client: NULL or the name to verify */
    dp_psk_entry *psks;         /* server: identity -> key table; client: one */
    size_t psk_count;
    int suites[DP_MAX_SUITES + 1];   /* 0-terminated, referenced by conf */
    uint16_t groups[DP_MAX_GROUPS + 1]; /* 0-terminated, referenced by conf */
    int custom_suites;
    uint32_t hs_timeout_min_ms;
    uint32_t hs_timeout_max_ms;
    uint32_t hs_deadline_ms;   /* 0 = none besides Mbed TLS's own */
    uint32_t idle_timeout_ms;  /* 0 = never */
    uint32_t park_after_ms;    /* 0 = never park (dp_config_set_park_after) */
    uint16_t mtu;              /* 0 = no limit */
    uint32_t max_record_in;    /* 0 = no limit (dp_config_set_max_record_in) */
    uint32_t out_queue_max;    /* datagrams a connection may queue (dp_config_finish) */
    unsigned badmac_limit;     /* 0 = unlimited (still counted) */
    dp_cookie_gate *gate;      /* server: cookie keys (referenced) */
    /* RFC 9146 Connection ID (dp_config_set_cid): negotiated only if the
     * peer asks too. own_cid_len: the length of the CID we choose (what the
     * peer puts in its records to us; config-wide, Mbed TLS parses record
     * headers with it); its first cid_prefix_len bytes are cid_prefix (a
     * worker id the reuseport program reads), the rest random. */
    int cid_enabled;
    uint8_t own_cid_len;
    uint8_t cid_prefix_len;
    uint8_t cid_prefix[DP_CID_MAX];
    int client_auth;           /* server: DP_CLIENT_AUTH_* */
    dp_ticket_keys *tickets;   /* server: session ticket keys (referenced), NULL = none */
};

/* What a connection leaves behind for the host's outcome record when it
 * ends: the saved client session and the verified client certificate
 * (dp_conn.c). dp_conn_detach_outcome hands both over (NULL if none); the
 * caller frees them with the functions below. */
typedef struct dp_peer_info dp_peer_info;
void dp_conn_detach_outcome(dp_conn *c, unsigned char **session, size_t *session_len,
                            dp_peer_info **peer);
int dp_peer_info_read(const dp_peer_info *info, char *subject, size_t subject_cap, char *san,
                      size_t san_cap, unsigned char *fingerprint);
void dp_peer_info_free(dp_peer_info *info);
void dp_session_blob_free(unsigned char *blob, size_t len);

/* Reference counting of shared engine objects. */
void dp_config_ref(dp_config *cfg);
void dp_ticket_keys_ref(dp_ticket_keys *keys);

/* Mbed TLS session ticket callbacks (mbedtls_ssl_conf_session_tickets_cb);
 * their context is the server's dp_config: its ticket keys and its client
 * certificate policy. */
int dp_ticket_write_cb(void *cfg, const mbedtls_ssl_session *session, unsigned char *start,
                       const unsigned char *end, size_t *tlen, uint32_t *lifetime);
int dp_ticket_parse_cb(void *cfg, mbedtls_ssl_session *session, unsigned char *buf,
                       size_t len);

/* Mbed TLS cookie callbacks over a gate (mbedtls_ssl_conf_dtls_cookies): a
 * new server connection checks the cookie of its first ClientHello with the
 * gate's keys, at the gate's newest time (the gate admitted that hello just
 * before). Live connections never check cookies (client port reuse is
 * compiled out: reconnects are successors, judged by dp_cookie_gate_check
 * with the caller's clock). */
int dp_cookie_gate_write_cb(void *gate, unsigned char **p, unsigned char *end,
                            const unsigned char *id, size_t id_len);
int dp_cookie_gate_check_cb(void *gate, const unsigned char *cookie, size_t cookie_len,
                            const unsigned char *id, size_t id_len);

/* The newest time the gate has judged by (what the callbacks above use). */
int64_t dp_cookie_gate_time(dp_cookie_gate *gate);

/* 1 if the first record of d[0..len) is a well-formed, unfragmented epoch-0
 * ClientHello (the gate's own bounded parser), else 0. */
int dp_cookie_hello_well_formed(const unsigned char *d, size_t len);

/* dp_conn_write, but the record's datagram goes into out[0 .. out_cap) when
 * nothing is queued before it (*out_len = its length; the caller sends it
 * before popping the queue). Otherwise, or when it does not fit, it is
 * queued as by dp_conn_write and *out_len = 0. Saves the queue node's
 * allocation and one copy per record on the per-tick send paths. */
int dp_conn_write_direct(dp_conn *conn, const unsigned char *data, size_t len, int64_t now_ms,
                         unsigned char *out, size_t out_cap, size_t *out_len);

#endif /* DTLSPEER_DP_ENGINE_H */

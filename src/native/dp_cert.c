/*
 * dp_cert.c: X.509 certificate chains for X509Certificate: parse (replacing
 * the content), inspect (names, validity, serial, SANs, CA flag, SHA-256
 * fingerprint, public key), export DER, and generate self-signed
 * certificates the way Godot's Crypto does (plus optional SANs).
 */
#include "dp_crypto.h"

#include <string.h>

#include "mbedtls/asn1.h"
#include "mbedtls/md.h"
#include "mbedtls/platform_util.h"
#include "mbedtls/x509.h"
#include "mbedtls/x509_crt.h"

/* A self-signed certificate with an RSA-4096 key and DP_CERT_MAX_SANS long
 * DNS names stays well below this. */
#define DP_CERT_WRITE_TMP 32768
#define DP_SERIAL_LEN 20

/* ---- Handles ---------------------------------------------------------------- */

dp_cert *dp_cert_new(void)
{
    dp_cert *cert = dp_calloc(1, sizeof(*cert));
    if (cert != NULL) {
        mbedtls_x509_crt_init(&cert->chain);
    }
    return cert;
}

void dp_cert_free(dp_cert *cert)
{
    if (cert == NULL) {
        return;
    }
    mbedtls_x509_crt_free(&cert->chain);
    dp_free(cert);
}

/* Move a freshly parsed chain into the handle. The head of a chain owns its
 * buffers and the following nodes, none of which point back at the head, so
 * a struct move transfers ownership. */
static void dp_cert_replace(dp_cert *cert, mbedtls_x509_crt *fresh, size_t count)
{
    mbedtls_x509_crt_free(&cert->chain);
    cert->chain = *fresh;
    mbedtls_x509_crt_init(fresh);
    cert->count = count;
}

static size_t dp_chain_length(const mbedtls_x509_crt *crt)
{
    size_t n = 0;
    /* An initialised but empty head has version 0 and no raw data. */
    for (; crt != NULL && crt->raw.p != NULL; crt = crt->next) {
        n++;
    }
    return n;
}

static const mbedtls_x509_crt *dp_cert_at(const dp_cert *cert, size_t index)
{
    if (cert == NULL || index >= cert->count) {
        return NULL;
    }
    const mbedtls_x509_crt *crt = &cert->chain;
    for (size_t i = 0; i < index && crt != NULL; i++) {
        crt = crt->next;
    }
    return crt;
}

/* Copy src to buf under the shared "length or BUFFER_TOO_SMALL" rule. */
static int dp_copy_out(const unsigned char *src, size_t len, unsigned char *buf, size_t buflen,
                       size_t *needed)
{
    if (needed != NULL) {
        *needed = len;
    }
    if (len > (size_t)INT32_MAX) {
        return DP_ERR_TOO_LARGE;
    }
    if (len > buflen) {
        return DP_ERR_BUFFER_TOO_SMALL;
    }
    if (len != 0) {
        memcpy(buf, src, len);
    }
    return (int)len;
}

/* ---- Parse ------------------------------------------------------------------ */

int dp_cert_parse(dp_cert *cert, const unsigned char *data, size_t len,
                  int allow_partial, size_t *skipped)
{
    if (skipped != NULL) {
        *skipped = 0;
    }
    if (cert == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    unsigned char *copy = NULL;
    size_t parse_len = 0;
    int ret = dp_crypto_input_copy(data, len, DP_CERT_MAX_INPUT, &copy, &parse_len);
    if (ret != DP_OK) {
        return ret;
    }
    mbedtls_x509_crt fresh;
    mbedtls_x509_crt_init(&fresh);
    /* >0: that many PEM blocks failed while at least one parsed. */
    ret = mbedtls_x509_crt_parse(&fresh, copy, parse_len);
    size_t count = dp_chain_length(&fresh);
    if (ret > 0 && !allow_partial) {
        ret = MBEDTLS_ERR_X509_INVALID_FORMAT;
    }
    if (ret >= 0 && count == 0) {
        ret = MBEDTLS_ERR_X509_CERT_UNKNOWN_FORMAT;
    }
    if (ret >= 0 && count > (size_t)INT32_MAX) {
        ret = DP_ERR_TOO_LARGE;
    }
    if (ret >= 0) {
        if (skipped != NULL) {
            *skipped = (size_t)ret;
        }
        dp_cert_replace(cert, &fresh, count);
        ret = (int)count;
    }
    mbedtls_x509_crt_free(&fresh);
    dp_crypto_input_free(copy, len);
    return ret;
}

int dp_cert_count(const dp_cert *cert)
{
    if (cert == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    return (int)cert->count;
}

/* ---- Inspect ---------------------------------------------------------------- */

int dp_cert_der(const dp_cert *cert, size_t index, unsigned char *buf, size_t buflen,
                size_t *needed)
{
    if (needed != NULL) {
        *needed = 0;
    }
    const mbedtls_x509_crt *crt = dp_cert_at(cert, index);
    if (crt == NULL || (buf == NULL && buflen != 0)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    return dp_copy_out(crt->raw.p, crt->raw.len, buf, buflen, needed);
}

int dp_cert_name(const dp_cert *cert, size_t index, int which, char *buf, size_t buflen)
{
    const mbedtls_x509_crt *crt = dp_cert_at(cert, index);
    if (crt == NULL || buf == NULL || buflen == 0 || (which != 0 && which != 1)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    int ret = mbedtls_x509_dn_gets(buf, buflen, which == 0 ? &crt->subject : &crt->issuer);
    if (ret == MBEDTLS_ERR_X509_BUFFER_TOO_SMALL) {
        return DP_ERR_BUFFER_TOO_SMALL;
    }
    return ret;
}

static void dp_time_out(const mbedtls_x509_time *t, int out[6])
{
    out[0] = t->year;
    out[1] = t->mon;
    out[2] = t->day;
    out[3] = t->hour;
    out[4] = t->min;
    out[5] = t->sec;
}

int dp_cert_get_info(const dp_cert *cert, size_t index, dp_cert_info *info)
{
    const mbedtls_x509_crt *crt = dp_cert_at(cert, index);
    if (crt == NULL || info == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    memset(info, 0, sizeof(*info));
    info->version = crt->version;
    info->is_ca = crt->MBEDTLS_PRIVATE(ca_istrue) ? 1 : 0;
    /* Mbed TLS stores pathLenConstraint + 1, and 0 for "absent". */
    int stored = crt->MBEDTLS_PRIVATE(max_pathlen);
    info->max_pathlen = (info->is_ca && stored > 0) ? stored - 1 : -1;
    dp_time_out(&crt->valid_from, info->not_before);
    dp_time_out(&crt->valid_to, info->not_after);
    return DP_OK;
}

int dp_cert_serial(const dp_cert *cert, size_t index, unsigned char *buf, size_t buflen,
                   size_t *needed)
{
    if (needed != NULL) {
        *needed = 0;
    }
    const mbedtls_x509_crt *crt = dp_cert_at(cert, index);
    if (crt == NULL || (buf == NULL && buflen != 0)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    return dp_copy_out(crt->serial.p, crt->serial.len, buf, buflen, needed);
}

int dp_cert_san_list(const dp_cert *cert, size_t index, unsigned char *buf, size_t buflen,
                     size_t *needed)
{
    if (needed != NULL) {
        *needed = 0;
    }
    const mbedtls_x509_crt *crt = dp_cert_at(cert, index);
    if (crt == NULL || (buf == NULL && buflen != 0)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    size_t total = 0;
    int fits = 1;
    for (const mbedtls_x509_sequence *cur = &crt->subject_alt_names; cur != NULL; cur = cur->next) {
        if (cur->buf.p == NULL) {
            continue; /* empty head: no SAN extension */
        }
        /* Mbed TLS keeps each GeneralName's tag and raw content; the kinds
         * we report are all primitive context-specific values. */
        int tag = cur->buf.tag;
        if ((tag & MBEDTLS_ASN1_TAG_CLASS_MASK) != MBEDTLS_ASN1_CONTEXT_SPECIFIC ||
            (tag & MBEDTLS_ASN1_CONSTRUCTED) != 0) {
            continue;
        }
        int type = tag & MBEDTLS_ASN1_TAG_VALUE_MASK;
        if (type != DP_SAN_EMAIL && type != DP_SAN_DNS && type != DP_SAN_URI && type != DP_SAN_IP) {
            continue;
        }
        size_t len = cur->buf.len;
        if (len > 0xFFFF) {
            continue; /* cannot be described in a record; no real name is this long */
        }
        if (total > (size_t)INT32_MAX - 3 - len) {
            return DP_ERR_TOO_LARGE;
        }
        if (fits && total + 3 + len <= buflen) {
            buf[total] = (unsigned char)type;
            buf[total + 1] = (unsigned char)(len >> 8);
            buf[total + 2] = (unsigned char)(len & 0xFF);
            if (len != 0) {
                memcpy(buf + total + 3, cur->buf.p, len);
            }
        } else {
            fits = 0;
        }
        total += 3 + len;
    }
    if (needed != NULL) {
        *needed = total;
    }
    return fits ? (int)total : DP_ERR_BUFFER_TOO_SMALL;
}

int dp_cert_fingerprint_sha256(const dp_cert *cert, size_t index, unsigned char *out,
                               size_t outlen)
{
    const mbedtls_x509_crt *crt = dp_cert_at(cert, index);
    if (crt == NULL || out == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (outlen < DP_SHA256_LEN) {
        return DP_ERR_BUFFER_TOO_SMALL;
    }
    const mbedtls_md_info_t *md = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    if (md == NULL) {
        return DP_ERR_UNSUPPORTED;
    }
    int ret = mbedtls_md(md, crt->raw.p, crt->raw.len, out);
    return ret == 0 ? DP_SHA256_LEN : ret;
}

int dp_cert_public_key(const dp_cert *cert, size_t index, dp_key *out)
{
    const mbedtls_x509_crt *crt = dp_cert_at(cert, index);
    if (crt == NULL || out == NULL) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    return dp_key_parse(out, crt->pk_raw.p, crt->pk_raw.len, 1);
}

/* ---- Generate ------------------------------------------------------------- */

/* Turn SAN records into the list Mbed TLS's writer takes. The nodes point
 * into sans, which outlives them. */
static int dp_san_list_build(const unsigned char *sans, size_t sans_len,
                             mbedtls_x509_san_list **nodes_out, mbedtls_x509_san_list **head_out)
{
    *nodes_out = NULL;
    *head_out = NULL;
    size_t count = 0;
    for (size_t pos = 0; pos < sans_len;) {
        if (sans_len - pos < 3) {
            return DP_ERR_INVALID_ARGUMENT;
        }
        int type = sans[pos];
        size_t len = ((size_t)sans[pos + 1] << 8) | sans[pos + 2];
        if (len > sans_len - pos - 3 || len == 0) {
            return DP_ERR_INVALID_ARGUMENT;
        }
        if (type == DP_SAN_IP ? (len != 4 && len != 16) : type != DP_SAN_DNS) {
            return DP_ERR_INVALID_ARGUMENT;
        }
        pos += 3 + len;
        count++;
    }
    if (count == 0) {
        return DP_OK;
    }
    if (count > DP_CERT_MAX_SANS) {
        return DP_ERR_LIMIT;
    }
    mbedtls_x509_san_list *nodes = dp_calloc(count, sizeof(*nodes));
    if (nodes == NULL) {
        return DP_ERR_NO_MEMORY;
    }
    size_t pos = 0;
    for (size_t i = 0; i < count; i++) {
        int type = sans[pos];
        size_t len = ((size_t)sans[pos + 1] << 8) | sans[pos + 2];
        nodes[i].node.type = type == DP_SAN_IP ? MBEDTLS_X509_SAN_IP_ADDRESS : MBEDTLS_X509_SAN_DNS_NAME;
        nodes[i].node.san.unstructured_name.tag =
            MBEDTLS_ASN1_CONTEXT_SPECIFIC | (type == DP_SAN_IP ? MBEDTLS_X509_SAN_IP_ADDRESS
                                                               : MBEDTLS_X509_SAN_DNS_NAME);
        nodes[i].node.san.unstructured_name.len = len;
        nodes[i].node.san.unstructured_name.p = (unsigned char *)(uintptr_t)(sans + pos + 3);
        /* The writer emits the list back to front; link it reversed so the
         * certificate lists the names in the caller's order. */
        nodes[i].next = (i > 0) ? &nodes[i - 1] : NULL;
        pos += 3 + len;
    }
    *nodes_out = nodes;
    *head_out = &nodes[count - 1];
    return DP_OK;
}

int dp_cert_generate_self_signed(dp_cert *cert, const dp_key *key, const char *name,
                                 const char *not_before, const char *not_after,
                                 const unsigned char *sans, size_t sans_len)
{
    if (cert == NULL || key == NULL || name == NULL || not_before == NULL || not_after == NULL ||
        (sans == NULL && sans_len != 0)) {
        return DP_ERR_INVALID_ARGUMENT;
    }
    if (mbedtls_pk_get_type(&key->pk) == MBEDTLS_PK_NONE || key->public_only) {
        return DP_ERR_BAD_STATE;
    }
    mbedtls_x509_san_list *san_nodes = NULL; /* the allocation */
    mbedtls_x509_san_list *san_list = NULL;  /* its head (last node) */
    int ret = dp_san_list_build(sans, sans_len, &san_nodes, &san_list);
    if (ret != DP_OK) {
        return ret;
    }
    unsigned char *der = dp_calloc(1, DP_CERT_WRITE_TMP);
    if (der == NULL) {
        dp_free(san_nodes);
        return DP_ERR_NO_MEMORY;
    }
    mbedtls_x509write_cert writer;
    mbedtls_x509write_crt_init(&writer);
    mbedtls_x509_crt fresh;
    mbedtls_x509_crt_init(&fresh);
    unsigned char serial[DP_SERIAL_LEN];

    mbedtls_x509write_crt_set_version(&writer, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&writer, MBEDTLS_MD_SHA256);
    /* The writer never changes the key; its API just lacks the const. */
    mbedtls_pk_context *pk = (mbedtls_pk_context *)(uintptr_t)&key->pk;
    mbedtls_x509write_crt_set_subject_key(&writer, pk);
    mbedtls_x509write_crt_set_issuer_key(&writer, pk);

    if (mbedtls_x509write_crt_set_subject_name(&writer, name) != 0 ||
        mbedtls_x509write_crt_set_issuer_name(&writer, name) != 0 ||
        mbedtls_x509write_crt_set_validity(&writer, not_before, not_after) != 0) {
        ret = DP_ERR_INVALID_ARGUMENT;
        goto cleanup;
    }
    ret = dp_random(serial, sizeof(serial));
    if (ret != 0) {
        goto cleanup;
    }
    /* Godot uses 20 raw random bytes; RFC 5280 wants a positive INTEGER in
     * minimal DER, so clear the sign bit and avoid a leading zero octet. */
    serial[0] = (unsigned char)((serial[0] & 0x7F) | 0x01);
    ret = mbedtls_x509write_crt_set_serial_raw(&writer, serial, sizeof(serial));
    if (ret == 0) {
        ret = mbedtls_x509write_crt_set_basic_constraints(&writer, 1, 0);
    }
    if (ret == 0 && san_list != NULL) {
        ret = mbedtls_x509write_crt_set_subject_alternative_name(&writer, san_list);
    }
    if (ret != 0) {
        goto cleanup;
    }
    ret = mbedtls_x509write_crt_der(&writer, der, DP_CERT_WRITE_TMP, dp_rng, NULL);
    if (ret < 0) {
        goto cleanup;
    }
    ret = mbedtls_x509_crt_parse_der(&fresh, der + DP_CERT_WRITE_TMP - ret, (size_t)ret);
    if (ret == 0) {
        dp_cert_replace(cert, &fresh, 1);
        ret = 1;
    }

cleanup:
    mbedtls_x509_crt_free(&fresh);
    mbedtls_x509write_crt_free(&writer);
    dp_free(der);
    dp_free(san_nodes);
    return ret;
}

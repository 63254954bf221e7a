/*
 * jws: the ACME client's cryptography, each piece one OpenSSL call chain (no hand-written
 * crypto). ECDSA signatures come out of OpenSSL as DER and are turned into the raw r||s
 * that JWS ES256 wants (RFC 7518 §3.4).
 */
#include "acme/jws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#define OID_ACME_IDENTIFIER "1.3.6.1.5.5.7.1.31"

char *gh_b64url(const unsigned char *in, size_t len)
{
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    if (!out)
        return NULL;
    int n = EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    while (n > 0 && out[n - 1] == '=')
        n--;
    out[n] = '\0';
    for (char *c = out; *c; c++)
        *c = *c == '+' ? '-' : *c == '/' ? '_' : *c;
    return out;
}

bool gh_b64url_decode(const char *in, unsigned char **out, size_t *len)
{
    size_t n = strlen(in);
    while (n && in[n - 1] == '=')
        n--;
    char *std = malloc(n + 4);
    unsigned char *raw = malloc(n + 4);
    if (!std || !raw) {
        free(std);
        free(raw);
        return false;
    }
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (c == '-')
            c = '+';
        else if (c == '_')
            c = '/';
        else if (c == '+' || c == '/' || c == '=')
            ok = false;
        std[i] = c;
    }
    size_t pad = (4 - n % 4) % 4;
    if (pad == 3)
        ok = false;
    memset(std + n, '=', pad);
    std[n + pad] = '\0';
    int got = ok ? EVP_DecodeBlock(raw, (unsigned char *)std, (int)(n + pad)) : -1;
    free(std);
    if (got < 0) {
        free(raw);
        return false;
    }
    *len = (size_t)got - pad; /* EVP_DecodeBlock counts the padding as zero bytes */
    *out = raw;
    return true;
}

EVP_PKEY *gh_acme_key_new(void)
{
    return EVP_EC_gen("P-256");
}

char *gh_acme_key_pem(EVP_PKEY *key)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *out = NULL, *data;
    if (b && PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL)) {
        long n = BIO_get_mem_data(b, &data);
        out = n > 0 ? strndup(data, (size_t)n) : NULL;
    }
    BIO_free(b);
    return out;
}

EVP_PKEY *gh_acme_key_from_pem(const char *pem)
{
    BIO *b = pem ? BIO_new_mem_buf(pem, -1) : NULL;
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    ERR_clear_error();
    return k;
}

/* One coordinate of the public point, 32 bytes big-endian, base64url. */
static char *coordinate(EVP_PKEY *key, const char *param)
{
    BIGNUM *bn = NULL;
    unsigned char raw[32];
    char *out = NULL;
    if (EVP_PKEY_get_bn_param(key, param, &bn) && BN_bn2binpad(bn, raw, sizeof raw) == 32)
        out = gh_b64url(raw, sizeof raw);
    BN_free(bn);
    return out;
}

json_t *gh_jwk(EVP_PKEY *key)
{
    char *x = coordinate(key, OSSL_PKEY_PARAM_EC_PUB_X);
    char *y = coordinate(key, OSSL_PKEY_PARAM_EC_PUB_Y);
    json_t *jwk =
        x && y ? json_pack("{ss ss ss ss}", "crv", "P-256", "kty", "EC", "x", x, "y", y) : NULL;
    free(x);
    free(y);
    return jwk;
}

bool gh_jwk_thumbprint(EVP_PKEY *key, char out[64])
{
    json_t *jwk = gh_jwk(key);
    /* RFC 7638: the required members, sorted, no whitespace */
    char *text = jwk ? json_dumps(jwk, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    unsigned char md[32];
    bool ok = text && EVP_Digest(text, strlen(text), md, NULL, EVP_sha256(), NULL);
    char *b = ok ? gh_b64url(md, sizeof md) : NULL;
    if (b)
        snprintf(out, 64, "%s", b);
    free(b);
    free(text);
    json_decref(jwk);
    return b != NULL;
}

bool gh_ecdsa_der_to_raw(const unsigned char *der, size_t len, unsigned char raw[64])
{
    const unsigned char *p = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)len);
    if (!sig)
        return false;
    const BIGNUM *r, *s;
    ECDSA_SIG_get0(sig, &r, &s);
    bool ok = BN_bn2binpad(r, raw, 32) == 32 && BN_bn2binpad(s, raw + 32, 32) == 32;
    ECDSA_SIG_free(sig);
    return ok;
}

/* ES256 over "protected.payload": raw r||s, base64url. */
static char *sign_es256(EVP_PKEY *key, const char *input)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char der[80], raw[64];
    size_t len = sizeof der;
    bool ok = md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
              EVP_DigestSign(md, der, &len, (const unsigned char *)input, strlen(input)) == 1 &&
              gh_ecdsa_der_to_raw(der, len, raw);
    EVP_MD_CTX_free(md);
    return ok ? gh_b64url(raw, sizeof raw) : NULL;
}

static char *b64url_text(const char *s)
{
    return gh_b64url((const unsigned char *)s, strlen(s));
}

/* The flattened JWS from a protected header (consumed) and a payload text. */
static char *flattened(json_t *protected_hdr, const char *payload, EVP_PKEY *key,
                       const unsigned char *hmac_key, size_t hmac_len, gh_err *err)
{
    char *hdr_text = json_dumps(protected_hdr, JSON_COMPACT);
    json_decref(protected_hdr);
    char *hdr = hdr_text ? b64url_text(hdr_text) : NULL;
    char *pay = b64url_text(payload);
    char *input = NULL, *sig = NULL, *out = NULL;
    if (hdr && pay && asprintf(&input, "%s.%s", hdr, pay) >= 0) {
        if (key) {
            sig = sign_es256(key, input);
        } else {
            unsigned char mac[32];
            unsigned maclen = 0;
            if (HMAC(EVP_sha256(), hmac_key, (int)hmac_len, (const unsigned char *)input,
                     strlen(input), mac, &maclen))
                sig = gh_b64url(mac, maclen);
        }
    }
    if (sig) {
        json_t *jws = json_pack("{ss ss ss}", "protected", hdr, "payload", pay, "signature", sig);
        out = jws ? json_dumps(jws, JSON_COMPACT) : NULL;
        json_decref(jws);
    }
    if (!out)
        gh_fail(err, "ACME: signing the request failed (OpenSSL)");
    ERR_clear_error();
    free(hdr_text);
    free(hdr);
    free(pay);
    free(input);
    free(sig);
    return out;
}

char *gh_jws_es256(EVP_PKEY *key, const char *kid, const char *nonce, const char *url,
                   const char *payload, gh_err *err)
{
    json_t *h = json_pack("{ss ss ss}", "alg", "ES256", "nonce", nonce, "url", url);
    if (!h) {
        gh_fail(err, "ACME: out of memory");
        return NULL;
    }
    if (kid)
        json_object_set_new(h, "kid", json_string(kid));
    else
        json_object_set_new(h, "jwk", gh_jwk(key));
    return flattened(h, payload ? payload : "", key, NULL, 0, err);
}

json_t *gh_jws_eab(const char *key_id, const char *hmac_key_b64url, EVP_PKEY *account_key,
                   const char *url, gh_err *err)
{
    unsigned char *mac_key = NULL;
    size_t mac_len = 0;
    if (!gh_b64url_decode(hmac_key_b64url, &mac_key, &mac_len) || !mac_len) {
        free(mac_key);
        gh_fail(err, "eabHmacKey is not base64url; paste the key exactly as the CA gave it");
        return NULL;
    }
    json_t *jwk = gh_jwk(account_key);
    char *jwk_text = jwk ? json_dumps(jwk, JSON_COMPACT) : NULL;
    json_t *h = json_pack("{ss ss ss}", "alg", "HS256", "kid", key_id, "url", url);
    char *text = jwk_text && h ? flattened(h, jwk_text, NULL, mac_key, mac_len, err) : NULL;
    json_t *out = text ? json_loads(text, 0, NULL) : NULL;
    if (!out)
        gh_fail(err, "ACME: cannot build the external account binding");
    OPENSSL_cleanse(mac_key, mac_len);
    free(mac_key);
    free(jwk_text);
    free(text);
    json_decref(jwk);
    return out;
}

static bool add_san(STACK_OF(X509_EXTENSION) * exts, X509 *x, char *const *names, unsigned n)
{
    GENERAL_NAMES *gens = GENERAL_NAMES_new();
    bool ok = gens != NULL;
    for (unsigned i = 0; ok && i < n; i++) {
        GENERAL_NAME *g = GENERAL_NAME_new();
        ASN1_IA5STRING *s = ASN1_IA5STRING_new();
        ok = g && s && ASN1_STRING_set(s, names[i], -1);
        if (ok) {
            GENERAL_NAME_set0_value(g, GEN_DNS, s);
            ok = sk_GENERAL_NAME_push(gens, g) > 0;
            if (!ok)
                GENERAL_NAME_free(g);
        } else {
            GENERAL_NAME_free(g);
            ASN1_IA5STRING_free(s);
        }
    }
    if (ok)
        ok = exts ? X509V3_add1_i2d(&exts, NID_subject_alt_name, gens, 0, X509V3_ADD_APPEND) == 1
                  : X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_APPEND) == 1;
    GENERAL_NAMES_free(gens);
    return ok;
}

char *gh_acme_csr(char *const *names, unsigned n, EVP_PKEY *key, gh_err *err)
{
    X509_REQ *req = X509_REQ_new();
    X509_NAME *subj = X509_NAME_new();
    STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
    unsigned char *der = NULL;
    char *out = NULL;
    bool ok = req && subj && exts && n && X509_REQ_set_version(req, 0) &&
              (strlen(names[0]) > 64 ||
               X509_NAME_add_entry_by_txt(subj, "CN", MBSTRING_UTF8,
                                          (const unsigned char *)names[0], -1, -1, 0)) &&
              X509_REQ_set_subject_name(req, subj) && X509_REQ_set_pubkey(req, key) &&
              add_san(exts, NULL, names, n) && X509_REQ_add_extensions(req, exts) &&
              X509_REQ_sign(req, key, EVP_sha256()) > 0;
    int len = ok ? i2d_X509_REQ(req, &der) : -1;
    if (len > 0)
        out = gh_b64url(der, (size_t)len);
    if (!out)
        gh_fail(err, "ACME: cannot build the certificate request (OpenSSL)");
    OPENSSL_free(der);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_NAME_free(subj);
    X509_REQ_free(req);
    ERR_clear_error();
    return out;
}

/* The acmeIdentifier extension: critical, an OCTET STRING holding the DER of an OCTET
 * STRING with the SHA-256 of the key authorization. */
static bool add_acme_identifier(X509 *x, const char *key_authorization)
{
    unsigned char der[34] = {0x04, 0x20};
    if (!EVP_Digest(key_authorization, strlen(key_authorization), der + 2, NULL, EVP_sha256(),
                    NULL))
        return false;
    ASN1_OBJECT *oid = OBJ_txt2obj(OID_ACME_IDENTIFIER, 1);
    ASN1_OCTET_STRING *value = ASN1_OCTET_STRING_new();
    X509_EXTENSION *ext = NULL;
    bool ok = oid && value && ASN1_OCTET_STRING_set(value, der, sizeof der) &&
              (ext = X509_EXTENSION_create_by_OBJ(NULL, oid, 1, value)) && X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    ASN1_OCTET_STRING_free(value);
    ASN1_OBJECT_free(oid);
    return ok;
}

bool gh_acme_alpn_cert(const char *name, const char *key_authorization, X509 **cert, EVP_PKEY **key,
                       gh_err *err)
{
    EVP_PKEY *k = gh_acme_key_new();
    X509 *x = X509_new();
    X509_NAME *subj = X509_NAME_new();
    char *const names[] = {(char *)name};
    bool ok = k && x && subj && X509_set_version(x, X509_VERSION_3) &&
              ASN1_INTEGER_set(X509_get_serialNumber(x), (long)time(NULL)) &&
              X509_gmtime_adj(X509_getm_notBefore(x), -3600) &&
              X509_gmtime_adj(X509_getm_notAfter(x), 7 * 24 * 3600) &&
              X509_NAME_add_entry_by_txt(subj, "CN", MBSTRING_UTF8,
                                         (const unsigned char *)"ACME challenge", -1, -1, 0) &&
              X509_set_subject_name(x, subj) && X509_set_issuer_name(x, subj) &&
              X509_set_pubkey(x, k) && add_san(NULL, x, names, 1) &&
              add_acme_identifier(x, key_authorization) && X509_sign(x, k, EVP_sha256()) > 0;
    X509_NAME_free(subj);
    ERR_clear_error();
    if (!ok) {
        X509_free(x);
        EVP_PKEY_free(k);
        return gh_fail(err, "ACME: cannot build the tls-alpn-01 certificate for %s", name);
    }
    *cert = x;
    *key = k;
    return true;
}

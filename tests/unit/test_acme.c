/*
 * test_acme: the ACME client's pure parts — base64url, the JWK and its thumbprint, ES256
 * JWS (the raw r||s verified by OpenSSL), the EAB HS256 binding, the CSR, the TLS-ALPN-01
 * certificate, renewBefore — and the challenge table the listeners read.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "acme/acme.h"
#include "acme/jws.h"
#include "net/challenge.h"

static void b64(const char *in, const char *want)
{
    char *got = gh_b64url((const unsigned char *)in, strlen(in));
    assert_string_equal(got, want);
    unsigned char *back;
    size_t len;
    assert_true(gh_b64url_decode(got, &back, &len));
    assert_int_equal(len, strlen(in));
    assert_memory_equal(back, in, len);
    free(back);
    free(got);
}

static void test_base64url(void **state)
{
    (void)state;
    b64("", "");
    b64("f", "Zg");
    b64("fo", "Zm8");
    b64("foo", "Zm9v");
    b64("foob", "Zm9vYg");
    /* the URL-safe alphabet: 0xfb 0xff → "-_8" */
    char *got = gh_b64url((const unsigned char *)"\xfb\xff", 2);
    assert_string_equal(got, "-_8");
    free(got);
    unsigned char *out;
    size_t len;
    assert_false(gh_b64url_decode("ab+c", &out, &len)); /* standard alphabet refused */
    assert_false(gh_b64url_decode("a", &out, &len));    /* impossible length */
}

/* Splits a flattened JWS and checks its ES256 signature with OpenSSL. */
static json_t *verify_jws(const char *text, EVP_PKEY *key)
{
    json_t *jws = json_loads(text, 0, NULL);
    assert_non_null(jws);
    const char *prot = json_string_value(json_object_get(jws, "protected"));
    const char *pay = json_string_value(json_object_get(jws, "payload"));
    const char *sig = json_string_value(json_object_get(jws, "signature"));
    assert_non_null(prot);
    assert_non_null(pay);
    assert_non_null(sig);
    assert_null(strpbrk(sig, "+/="));
    unsigned char *raw;
    size_t len;
    assert_true(gh_b64url_decode(sig, &raw, &len));
    assert_int_equal(len, 64); /* r||s, 32 bytes each: not DER */
    ECDSA_SIG *es = ECDSA_SIG_new();
    ECDSA_SIG_set0(es, BN_bin2bn(raw, 32, NULL), BN_bin2bn(raw + 32, 32, NULL));
    unsigned char *der = NULL;
    int dlen = i2d_ECDSA_SIG(es, &der);
    char *input;
    assert_true(asprintf(&input, "%s.%s", prot, pay) > 0);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key), 1);
    assert_int_equal(EVP_DigestVerify(md, der, (size_t)dlen, (unsigned char *)input, strlen(input)),
                     1);
    EVP_MD_CTX_free(md);
    free(input);
    OPENSSL_free(der);
    ECDSA_SIG_free(es);
    free(raw);
    unsigned char *hdr;
    assert_true(gh_b64url_decode(prot, &hdr, &len));
    json_t *h = json_loadb((char *)hdr, len, 0, NULL);
    free(hdr);
    json_decref(jws);
    assert_non_null(h);
    return h;
}

static void test_jws_es256(void **state)
{
    (void)state;
    EVP_PKEY *key = gh_acme_key_new();
    assert_non_null(key);
    char *text = gh_jws_es256(key, NULL, "nonce1", "https://ca/new-acct", "{\"a\":1}", NULL);
    assert_non_null(text);
    json_t *h = verify_jws(text, key);
    assert_string_equal(json_string_value(json_object_get(h, "alg")), "ES256");
    assert_string_equal(json_string_value(json_object_get(h, "nonce")), "nonce1");
    assert_string_equal(json_string_value(json_object_get(h, "url")), "https://ca/new-acct");
    json_t *jwk = json_object_get(h, "jwk");
    assert_string_equal(json_string_value(json_object_get(jwk, "kty")), "EC");
    assert_string_equal(json_string_value(json_object_get(jwk, "crv")), "P-256");
    assert_int_equal(strlen(json_string_value(json_object_get(jwk, "x"))), 43);
    assert_null(json_object_get(h, "kid"));
    json_decref(h);
    free(text);
    /* with a kid, no jwk; POST-as-GET has an empty payload */
    text = gh_jws_es256(key, "https://ca/acct/1", "n2", "https://ca/order/1", NULL, NULL);
    h = verify_jws(text, key);
    assert_string_equal(json_string_value(json_object_get(h, "kid")), "https://ca/acct/1");
    assert_null(json_object_get(h, "jwk"));
    json_t *jws = json_loads(text, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(jws, "payload")), "");
    json_decref(jws);
    json_decref(h);
    free(text);
    EVP_PKEY_free(key);
}

static void test_der_to_raw(void **state)
{
    (void)state;
    /* small r and s are left-padded to 32 bytes each */
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_new(), *s = BN_new();
    BN_set_word(r, 0x1234);
    BN_set_word(s, 0x56);
    ECDSA_SIG_set0(es, r, s);
    unsigned char *der = NULL;
    int len = i2d_ECDSA_SIG(es, &der);
    unsigned char raw[64];
    assert_true(gh_ecdsa_der_to_raw(der, (size_t)len, raw));
    unsigned char want[64] = {0};
    want[30] = 0x12;
    want[31] = 0x34;
    want[63] = 0x56;
    assert_memory_equal(raw, want, 64);
    assert_false(gh_ecdsa_der_to_raw((const unsigned char *)"\x30\x01", 2, raw));
    OPENSSL_free(der);
    ECDSA_SIG_free(es);
}

static void test_thumbprint(void **state)
{
    (void)state;
    EVP_PKEY *key = gh_acme_key_new();
    char t1[64], t2[64];
    assert_true(gh_jwk_thumbprint(key, t1));
    assert_int_equal(strlen(t1), 43);
    /* the same key read back from its PEM has the same thumbprint */
    char *pem = gh_acme_key_pem(key);
    EVP_PKEY *again = gh_acme_key_from_pem(pem);
    assert_non_null(again);
    assert_true(gh_jwk_thumbprint(again, t2));
    assert_string_equal(t1, t2);
    /* it is SHA-256 of the members in lexicographic order, no spaces */
    json_t *jwk = gh_jwk(key);
    char *expect_in;
    assert_true(asprintf(&expect_in, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}",
                         json_string_value(json_object_get(jwk, "x")),
                         json_string_value(json_object_get(jwk, "y"))) > 0);
    unsigned char md[32];
    EVP_Digest(expect_in, strlen(expect_in), md, NULL, EVP_sha256(), NULL);
    char *expect = gh_b64url(md, 32);
    assert_string_equal(t1, expect);
    free(expect);
    free(expect_in);
    json_decref(jwk);
    free(pem);
    EVP_PKEY_free(again);
    EVP_PKEY_free(key);
}

static void test_eab(void **state)
{
    (void)state;
    EVP_PKEY *key = gh_acme_key_new();
    const char *mac_key = "c2VjcmV0LWhtYWMta2V5LWZvci10ZXN0cw"; /* "secret-hmac-key-for-tests" */
    json_t *eab = gh_jws_eab("kid-1", mac_key, key, "https://ca/new-acct", NULL);
    assert_non_null(eab);
    const char *prot = json_string_value(json_object_get(eab, "protected"));
    const char *pay = json_string_value(json_object_get(eab, "payload"));
    char *input;
    assert_true(asprintf(&input, "%s.%s", prot, pay) > 0);
    unsigned char mac[32];
    unsigned maclen;
    HMAC(EVP_sha256(), "secret-hmac-key-for-tests", 25, (unsigned char *)input, strlen(input), mac,
         &maclen);
    char *want = gh_b64url(mac, maclen);
    assert_string_equal(json_string_value(json_object_get(eab, "signature")), want);
    /* the payload is the account's JWK */
    unsigned char *raw;
    size_t len;
    assert_true(gh_b64url_decode(pay, &raw, &len));
    json_t *p = json_loadb((char *)raw, len, 0, NULL);
    json_t *jwk = gh_jwk(key);
    assert_true(json_equal(p, jwk));
    gh_err err = {0};
    assert_null(gh_jws_eab("kid-1", "not base64url!", key, "https://ca/x", &err));
    assert_non_null(strstr(err.msg, "eabHmacKey"));
    json_decref(jwk);
    json_decref(p);
    free(raw);
    free(want);
    free(input);
    json_decref(eab);
    EVP_PKEY_free(key);
}

static void test_csr(void **state)
{
    (void)state;
    EVP_PKEY *key = gh_acme_key_new();
    char *const names[] = {"mail.example.com", "imap.example.com"};
    char *csr = gh_acme_csr(names, 2, key, NULL);
    assert_non_null(csr);
    unsigned char *der;
    size_t len;
    assert_true(gh_b64url_decode(csr, &der, &len));
    const unsigned char *p = der;
    X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)len);
    assert_non_null(req);
    assert_int_equal(X509_REQ_verify(req, key), 1);
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    int i = X509v3_get_ext_by_NID(exts, NID_subject_alt_name, -1);
    assert_true(i >= 0);
    GENERAL_NAMES *sans = X509V3_EXT_d2i(X509v3_get_ext(exts, i));
    assert_int_equal(sk_GENERAL_NAME_num(sans), 2);
    GENERAL_NAMES_free(sans);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    free(der);
    free(csr);
    EVP_PKEY_free(key);
}

static void test_alpn_certificate(void **state)
{
    (void)state;
    X509 *cert;
    EVP_PKEY *key;
    assert_true(gh_acme_alpn_cert("mail.test", "token.thumb", &cert, &key, NULL));
    ASN1_OBJECT *oid = OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1);
    int i = X509_get_ext_by_OBJ(cert, oid, -1);
    assert_true(i >= 0);
    X509_EXTENSION *ext = X509_get_ext(cert, i);
    assert_int_equal(X509_EXTENSION_get_critical(ext), 1);
    const ASN1_OCTET_STRING *v = X509_EXTENSION_get_data(ext);
    unsigned char want[34] = {0x04, 0x20};
    EVP_Digest("token.thumb", 11, want + 2, NULL, EVP_sha256(), NULL);
    assert_int_equal(ASN1_STRING_length(v), 34);
    assert_memory_equal(ASN1_STRING_get0_data(v), want, 34);
    assert_int_equal(X509_check_host(cert, "mail.test", 0, 0, NULL), 1);
    /* the challenge table hands it out by host name, case-insensitively */
    assert_false(gh_challenge_any());
    assert_true(gh_challenge_alpn_put("mail.test", cert, key));
    X509 *got;
    EVP_PKEY *gotkey;
    assert_true(gh_challenge_alpn_get("MAIL.test", &got, &gotkey));
    assert_ptr_equal(got, cert);
    X509_free(got);
    EVP_PKEY_free(gotkey);
    gh_challenge_alpn_remove("mail.test");
    assert_false(gh_challenge_alpn_get("mail.test", &got, &gotkey));
    assert_false(gh_challenge_any());
    ASN1_OBJECT_free(oid);
    X509_free(cert);
    EVP_PKEY_free(key);
}

static void test_http_challenges(void **state)
{
    (void)state;
    char out[128];
    assert_false(gh_challenge_http_get("tok", out, sizeof out));
    assert_true(gh_challenge_http_put("tok", "tok.thumb"));
    assert_true(gh_challenge_http_get("tok", out, sizeof out));
    assert_string_equal(out, "tok.thumb");
    assert_false(gh_challenge_http_get("TOK", out, sizeof out)); /* tokens are exact */
    gh_challenge_http_remove("tok");
    assert_false(gh_challenge_http_get("tok", out, sizeof out));
}

static void test_renew_before(void **state)
{
    (void)state;
    time_t at;
    assert_true(gh_acme_renew_at("R23", 0, 90 * 86400, &at));
    assert_int_equal(at, 60 * 86400);
    assert_true(gh_acme_renew_at("R12", 1000, 3000, &at));
    assert_int_equal(at, 2000);
    assert_true(gh_acme_renew_at("30d", 0, 90 * 86400, &at));
    assert_int_equal(at, 60 * 86400);
    assert_true(gh_acme_renew_at("12h", 0, 86400, &at));
    assert_int_equal(at, 43200);
    assert_true(gh_acme_renew_at("90m", 0, 86400, &at));
    assert_int_equal(at, 86400 - 5400);
    const char *bad[] = {"R32", "R00", "R22", "R2",  "R234", "30",
                         "30x", "d",   "",    "-1d", "1d2",  "99999999999d"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(gh_acme_renew_at(bad[i], 0, 86400, &at));
    assert_false(gh_acme_renew_at(NULL, 0, 86400, &at));
}

/* RFC 9773 §4.1's example: AKI 69:88:5B:..., serial 0x87654321 →
 * aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE */
static void test_ari_cert_id(void **state)
{
    (void)state;
    static const unsigned char aki[] = {0x69, 0x88, 0x5B, 0x6B, 0x87, 0x46, 0x40, 0x41, 0xE1, 0xB3,
                                        0x7B, 0x84, 0x7B, 0xA0, 0xAE, 0x2C, 0xDE, 0x01, 0xC8, 0xD4};
    EVP_PKEY *key = gh_acme_key_new();
    X509 *x = X509_new();
    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER *serial = ASN1_INTEGER_new();
    ASN1_INTEGER_set_int64(serial, 0x87654321);
    X509_set_serialNumber(x, serial);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    AUTHORITY_KEYID *ak = AUTHORITY_KEYID_new();
    ak->keyid = ASN1_OCTET_STRING_new();
    ASN1_OCTET_STRING_set(ak->keyid, aki, sizeof aki);
    X509_add1_ext_i2d(x, NID_authority_key_identifier, ak, 0, X509V3_ADD_DEFAULT);
    X509_sign(x, key, EVP_sha256());
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, x);
    char *pem;
    long n = BIO_get_mem_data(b, &pem);
    char *text = strndup(pem, (size_t)n);
    char *id = gh_acme_cert_id(text);
    assert_non_null(id);
    assert_string_equal(id, "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
    free(id);
    free(text);
    BIO_free(b);
    AUTHORITY_KEYID_free(ak);
    ASN1_INTEGER_free(serial);
    X509_free(x);
    EVP_PKEY_free(key);
    assert_null(gh_acme_cert_id("not a certificate"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64url),
        cmocka_unit_test(test_jws_es256),
        cmocka_unit_test(test_der_to_raw),
        cmocka_unit_test(test_thumbprint),
        cmocka_unit_test(test_eab),
        cmocka_unit_test(test_csr),
        cmocka_unit_test(test_alpn_certificate),
        cmocka_unit_test(test_http_challenges),
        cmocka_unit_test(test_renew_before),
        cmocka_unit_test(test_ari_cert_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

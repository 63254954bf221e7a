/*
 * certificate: x:Certificate objects — a PEM chain and its private key (write-only), with
 * what the certificate says about itself derived by the TLS layer. Every change replaces
 * the TLS layer's certificate store, so new handshakes use it at once. A certificate may
 * instead name an ACME provider and its domains (the renewal thread orders and renews it),
 * or hold a chain without a key: a trust anchor, never served.
 */
#include <ctype.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "net/tls.h"
#include "objects/acme_renew.h"
#include "objects/model.h"

#define G_CERT "Certificate"
#define G_ACME "ACME"

static const struct gh_enum_value renewal_statuses[] = {
    {"pending", "Pending"},   {"ordering", "Ordering"}, {"valid", "Valid"},
    {"retrying", "Retrying"}, {"failed", "Failed"},     {NULL, NULL},
};

/* A DNS name an ACME CA can validate by HTTP-01 or TLS-ALPN-01: no wildcard, no IP. */
static bool check_domain(json_t **v, gh_err *err)
{
    const char *s = json_string_value(*v);
    size_t label = 0;
    if (!*s || strlen(s) > 253)
        return gh_fail(err, "\"%s\": a host name has 1-253 characters", s);
    for (const char *p = s;; p++) {
        if (*p == '.' || !*p) {
            if (!label || p[-1] == '-')
                return gh_fail(err, "\"%s\" is not a host name (empty label or ending in '-')", s);
            if (!*p)
                break;
            label = 0;
            continue;
        }
        if (!isalnum((unsigned char)*p) && *p != '-')
            return gh_fail(err, "\"%s\" is not a host name: '%c' is not allowed%s", s, *p,
                           *p == '*' ? " (wildcards need DNS-01, which is not offered)" : "");
        if (++label > 63)
            return gh_fail(err, "\"%s\": a label is at most 63 characters", s);
    }
    json_t *lower = json_string(s);
    char *l = (char *)json_string_value(lower);
    for (; *l; l++)
        *l = (char)tolower((unsigned char)*l);
    json_decref(*v);
    *v = lower;
    return true;
}

static const struct gh_prop props[] = {
    {.name = "id",
     .type = GH_PT_ID,
     .mut = GH_SERVER_SET,
     .label = "Id",
     .group = G_CERT,
     .description = "Server-assigned identifier"},
    {.name = "name",
     .type = GH_PT_STRING,
     .max_len = 64,
     .check = gh_check_name,
     .label = "Name",
     .group = G_CERT,
     .description = "A name for the certificate",
     .rule = "1-64 characters of A-Za-z0-9._-; unique (case-insensitive); derived from the "
             "certificate's first name when omitted",
     .filter = GH_FILTER_TEXT,
     .sortable = true},
    {.name = "certificate",
     .type = GH_PT_TEXT,
     .nullable = true,
     .max_len = 262144,
     .label = "Certificate chain (PEM)",
     .group = G_CERT,
     .description = "The certificate and its intermediates, PEM, leaf first; written by the "
                    "server for a certificate ordered through ACME",
     .rule = "PEM; must match the private key; not expired; required unless acmeProviderId "
             "is set"},
    {.name = "privateKey",
     .type = GH_PT_TEXT,
     .nullable = true,
     .mut = GH_WRITE_ONLY,
     .label = "Private key (PEM)",
     .group = G_CERT,
     .description = "The certificate's private key, PEM; never returned. Without one, the "
                    "chain is a trust anchor: it verifies peers (a destination's "
                    "tlsCaCertificateId, a private ACME directory) and is never served",
     .rule = "PEM; must match the certificate"},
    {.name = "acmeProviderId",
     .type = GH_PT_STRING,
     .nullable = true,
     .max_len = 64,
     .label = "ACME provider",
     .group = G_ACME,
     .description = "Order and renew this certificate from that x:AcmeProvider, for the "
                    "names in domains; null: the certificate is uploaded",
     .rule = "the id of an x:AcmeProvider, or null",
     .filter = GH_FILTER_EQUALS},
    {.name = "domains",
     .type = GH_PT_STRING,
     .list = true,
     .max_items = 100,
     .max_len = 253,
     .check = check_domain,
     .label = "Domains",
     .group = G_ACME,
     .description = "The names to order the certificate for (the first is the subject); "
                    "required with acmeProviderId",
     .rule = "1-100 DNS host names, no wildcards (the challenges offered do not cover them)"},
    {.name = "renewalStatus",
     .type = GH_PT_ENUM,
     .nullable = true,
     .values = renewal_statuses,
     .mut = GH_SERVER_SET,
     .label = "Renewal status",
     .group = G_ACME,
     .description = "Where the ACME order stands: pending (not issued yet), ordering, valid "
                    "(issued; renewed when due), retrying (the last attempt failed), failed "
                    "(retries exhausted; tried again a day later); null for uploaded "
                    "certificates"},
    {.name = "lastRenewalError",
     .type = GH_PT_STRING,
     .nullable = true,
     .max_len = 1024,
     .mut = GH_SERVER_SET,
     .label = "Last renewal error",
     .group = G_ACME,
     .description = "Why the last order failed (the old certificate stays in use); null once "
                    "an order succeeds"},
    {.name = "isDefault",
     .type = GH_PT_BOOLEAN,
     .def = "false",
     .label = "Default",
     .group = G_CERT,
     .description = "Used when no certificate name matches the client's SNI (or there is no "
                    "SNI); when several are default, the most recently created one is used"},
    {.name = "subjectNames",
     .type = GH_PT_STRING,
     .list = true,
     .mut = GH_SERVER_SET,
     .label = "Names",
     .group = G_CERT,
     .description = "The DNS names the certificate is valid for (SAN, else the CN)"},
    {.name = "notBefore",
     .type = GH_PT_DATE,
     .mut = GH_SERVER_SET,
     .label = "Valid from",
     .group = G_CERT,
     .description = "Start of validity (UTC)"},
    {.name = "notAfter",
     .type = GH_PT_DATE,
     .mut = GH_SERVER_SET,
     .label = "Valid until",
     .group = G_CERT,
     .description = "End of validity (UTC)"},
    {.name = "subject",
     .type = GH_PT_STRING,
     .mut = GH_SERVER_SET,
     .max_len = 1024,
     .label = "Subject",
     .group = G_CERT,
     .description = "The leaf certificate's subject (RFC 2253)"},
    {.name = "issuerName",
     .type = GH_PT_STRING,
     .mut = GH_SERVER_SET,
     .max_len = 1024,
     .label = "Issuer (full name)",
     .group = G_CERT,
     .description = "The leaf certificate's issuer (RFC 2253); the same as the subject for a "
                    "self-signed certificate"},
    {.name = "keyType",
     .type = GH_PT_STRING,
     .mut = GH_SERVER_SET,
     .label = "Key type",
     .group = G_CERT,
     .description = "The public key's algorithm and size: \"RSA 2048\", \"ECDSA P-256\", "
                    "\"Ed25519\""},
    {.name = "issuer",
     .type = GH_PT_STRING,
     .mut = GH_SERVER_SET,
     .label = "Issuer",
     .group = G_CERT,
     .description = "The issuer's common name"},
    {.name = "fingerprint",
     .type = GH_PT_STRING,
     .mut = GH_SERVER_SET,
     .label = "SHA-256 fingerprint",
     .group = G_CERT,
     .description = "SHA-256 fingerprint of the leaf certificate"},
};

static json_t *utc_date(time_t t)
{
    struct tm tm;
    char buf[32];
    gmtime_r(&t, &tm);
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_string(buf);
}

/* An X.509 name on one line, RFC 2253 ("CN=mail.example.com,O=Example"). */
static json_t *name_text(const X509_NAME *name)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data = NULL;
    json_t *out = NULL;
    if (b && X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
        long len = BIO_get_mem_data(b, &data);
        out = json_stringn(data ? data : "", len > 0 ? (size_t)len : 0);
    }
    BIO_free(b);
    return out ? out : json_string("");
}

/* "RSA 2048", "ECDSA P-256", "Ed25519": what a person compares with a TLS suite. */
static json_t *key_text(X509 *x)
{
    EVP_PKEY *k = X509_get0_pubkey(x);
    char buf[64] = "unknown";
    if (!k)
        return json_string(buf);
    int bits = EVP_PKEY_get_bits(k);
    if (EVP_PKEY_is_a(k, "RSA") || EVP_PKEY_is_a(k, "RSA-PSS")) {
        snprintf(buf, sizeof buf, "RSA %d", bits);
    } else if (EVP_PKEY_is_a(k, "EC")) {
        char group[64] = "";
        size_t glen = 0;
        if (EVP_PKEY_get_utf8_string_param(k, "group", group, sizeof group, &glen) && glen) {
            const char *nist = !strcmp(group, "prime256v1")  ? "P-256"
                               : !strcmp(group, "secp384r1") ? "P-384"
                               : !strcmp(group, "secp521r1") ? "P-521"
                                                             : group;
            snprintf(buf, sizeof buf, "ECDSA %s", nist);
        } else {
            snprintf(buf, sizeof buf, "ECDSA %d", bits);
        }
    } else if (EVP_PKEY_is_a(k, "ED25519")) {
        snprintf(buf, sizeof buf, "Ed25519");
    } else if (EVP_PKEY_is_a(k, "ED448")) {
        snprintf(buf, sizeof buf, "Ed448");
    } else {
        snprintf(buf, sizeof buf, "%s %d", EVP_PKEY_get0_type_name(k), bits);
    }
    return json_string(buf);
}

/* Fills subject, issuerName and keyType from the chain's leaf (the first PEM block); the
 * TLS layer already checked the chain, so a leaf that does not parse leaves them out. */
static void leaf_details(json_t *obj)
{
    const char *pem = json_string_value(json_object_get(obj, "certificate"));
    BIO *b = pem ? BIO_new_mem_buf(pem, -1) : NULL;
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    if (x) {
        json_object_set_new(obj, "subject", name_text(X509_get_subject_name(x)));
        json_object_set_new(obj, "issuerName", name_text(X509_get_issuer_name(x)));
        json_object_set_new(obj, "keyType", key_text(x));
    }
    X509_free(x);
    BIO_free(b);
}

/* A name from the certificate's first DNS name when it makes a valid object name. */
static void name_base(const struct gh_cert_info *info, char *out, size_t cap)
{
    snprintf(out, cap, "certificate");
    if (!info->nnames)
        return;
    json_t *v = json_string(info->names[0]);
    if (v && gh_check_name(&v, NULL))
        snprintf(out, cap, "%s", json_string_value(v));
    json_decref(v);
}

/* Derived properties from the PEM; false with ve filled when the PEM is refused. */
static bool derive(json_t *obj, const char *pem, const char *key, struct gh_cert_info *info,
                   struct gh_verr *ve)
{
    gh_err err = {0};
    if (!gh_tls_cert_inspect(pem, key, info, &err)) {
        /* the TLS layer's message starts with the part that is wrong */
        gh_verr_add(ve, strncmp(err.msg, "privateKey", 10) ? "certificate" : "privateKey", "%s",
                    err.msg);
        return false;
    }
    json_t *names = json_array();
    for (unsigned i = 0; i < info->nnames; i++)
        json_array_append_new(names, json_string(info->names[i]));
    json_object_set_new(obj, "subjectNames", names);
    json_object_set_new(obj, "notBefore", utc_date(info->not_before));
    json_object_set_new(obj, "notAfter", utc_date(info->not_after));
    json_object_set_new(obj, "issuer", json_string(info->issuer_cn));
    json_object_set_new(obj, "fingerprint", json_string(info->fingerprint_sha256));
    leaf_details(obj);
    return true;
}

/* An ACME-managed certificate: a provider that exists and at least one domain. */
static void validate_managed(json_t *obj, const json_t *old, struct gh_verr *ve)
{
    const char *pid = json_string_value(json_object_get(obj, "acmeProviderId"));
    if (!gh_obj_find(&gh_type_acmeprovider, pid, NULL))
        gh_verr_add(ve, "acmeProviderId", "no x:AcmeProvider with id \"%s\"", pid);
    if (!json_array_size(json_object_get(obj, "domains")))
        gh_verr_add(ve, "domains", "name at least one domain to order the certificate for");
    const char *was = old ? json_string_value(json_object_get(old, "acmeProviderId")) : NULL;
    if (!json_is_string(json_object_get(obj, "renewalStatus")) || !was)
        json_object_set_new(
            obj, "renewalStatus",
            json_string(json_is_string(json_object_get(obj, "certificate")) ? "valid" : "pending"));
}

static void validate(struct gh_objtype *t, json_t *obj, const json_t *old, struct gh_verr *ve)
{
    struct gh_cert_info info;
    memset(&info, 0, sizeof info);
    const char *pem = json_string_value(json_object_get(obj, "certificate"));
    const char *key = json_string_value(json_object_get(obj, "privateKey"));
    bool managed = json_is_string(json_object_get(obj, "acmeProviderId"));
    char base[80] = "certificate";
    if (managed) {
        validate_managed(obj, old, ve);
        const char *first = json_string_value(json_array_get(json_object_get(obj, "domains"), 0));
        json_t *v = first ? json_string(first) : NULL;
        if (v && gh_check_name(&v, NULL))
            snprintf(base, sizeof base, "%s", json_string_value(v));
        json_decref(v);
    } else {
        json_object_set_new(obj, "renewalStatus", json_null());
        json_object_set_new(obj, "lastRenewalError", json_null());
        if (!pem) {
            gh_verr_add(ve, "certificate",
                        "paste the PEM chain (with privateKey), or set acmeProviderId and "
                        "domains to have it ordered");
            return;
        }
    }
    if (pem && !derive(obj, pem, key, &info, ve))
        return;
    if (pem && !managed)
        name_base(&info, base, sizeof base);
    gh_cert_info_free(&info);
    gh_name_unique(t, obj, old, base, ve);
}

void gh_certs_apply(void)
{
    size_t n = json_array_size(gh_type_certificate.objs);
    struct gh_cert_input *in = calloc(n ? n : 1, sizeof *in);
    if (!in)
        return;
    size_t last_default = n, k = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(gh_type_certificate.objs, i);
        if (!json_object_get(o, "keyType"))
            leaf_details(o); /* stored before these details existed */
        const char *chain = json_string_value(json_object_get(o, "certificate"));
        const char *key = json_string_value(json_object_get(o, "privateKey"));
        if (!chain || !key)
            continue; /* not issued yet, or a trust anchor: never served */
        in[k].id = json_string_value(json_object_get(o, "id"));
        in[k].pem_chain = chain;
        in[k].pem_key = key;
        if (json_is_true(json_object_get(o, "isDefault")))
            last_default = k;
        k++;
    }
    if (last_default < k)
        in[last_default].is_default = true;
    gh_err err = {0};
    if (!gh_tls_certs_set(in, (unsigned)k, &err))
        gh_log(NULL, NULL, "certificates-error", "%s", err.msg);
    free(in);
}

static void committed(struct gh_objtype *t)
{
    gh_certs_apply();
    gh_acme_renew_kick();
    gh_destinations_apply(); /* a destination may trust one of them */
}

static const char *const groups[] = {G_CERT, G_ACME, NULL};
static const char *const columns[] = {"name",     "subjectNames", "keyType",
                                      "notAfter", "isDefault",    NULL};

struct gh_objtype gh_type_certificate = {
    .type = "x:Certificate",
    .name = "Certificate",
    .cli_name = "certificate",
    .label = "Certificate",
    .perm_prefix = "sysCertificate",
    .nav = "Settings › TLS › Certificates",
    .id_prefix = 'c',
    .groups = groups,
    .list_columns = columns,
    .props = props,
    .nprops = sizeof props / sizeof props[0],
    .hooks = {.validate = validate, .committed = committed},
};

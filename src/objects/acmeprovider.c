/*
 * acmeprovider: x:AcmeProvider objects — an ACME certificate authority (its directory,
 * how challenges are answered, the account's contacts and External Account Binding, when
 * to renew). The account key is generated here at create, kept in the stored object
 * (never in the schema, so /get never shows it), and used by the renewal thread.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "acme/acme.h"
#include "acme/jws.h"
#include "objects/acme_renew.h"
#include "objects/model.h"

#define G_CA      "Certificate authority"
#define G_ACCOUNT "Account"
#define G_RENEW   "Renewal"

static const struct gh_enum_value challenge_types[] = {
    {"TlsAlpn01", "TLS-ALPN-01 (implicit-TLS listeners)"},
    {"Http01", "HTTP-01 (HTTP listeners, /.well-known/acme-challenge/)"},
    {NULL, NULL},
};

static bool check_directory(json_t **v, gh_err *err)
{
    const char *s = json_string_value(*v);
    if (strncmp(s, "https://", 8) || !s[8])
        return gh_fail(err, "\"%s\": the directory is an https:// URL (RFC 8555 §7.1.1)", s);
    for (const char *p = s; *p; p++)
        if (isspace((unsigned char)*p) || iscntrl((unsigned char)*p))
            return gh_fail(err, "a URL has no spaces or control characters");
    return true;
}

static bool check_email(json_t **v, gh_err *err)
{
    const char *s = json_string_value(*v);
    const char *at = strchr(s, '@');
    if (!at || at == s || !at[1] || strchr(at + 1, '@') || !strchr(at + 1, '.'))
        return gh_fail(err, "\"%s\" is not an e-mail address (name@domain)", s);
    for (const char *p = s; *p; p++)
        if (isspace((unsigned char)*p) || iscntrl((unsigned char)*p) || *p == ',' || *p == '<' ||
            *p == '>')
            return gh_fail(err, "\"%s\": an e-mail address has no spaces, commas or <>", s);
    return true;
}

static bool check_renew_before(json_t **v, gh_err *err)
{
    time_t at;
    const char *s = json_string_value(*v);
    if (!gh_acme_renew_at(s, 0, 86400, &at))
        return gh_fail(err,
                       "\"%s\": use R23 (renew when two thirds of the lifetime have passed; "
                       "Rab in general) or a duration before expiry such as 30d, 12h",
                       s);
    return true;
}

static const struct gh_prop props[] = {
    {.name = "id",
     .type = GH_PT_ID,
     .mut = GH_SERVER_SET,
     .label = "Id",
     .group = G_CA,
     .description = "Server-assigned identifier"},
    {.name = "name",
     .type = GH_PT_STRING,
     .max_len = 64,
     .check = gh_check_name,
     .label = "Name",
     .group = G_CA,
     .description = "A name for the provider",
     .rule = "1-64 characters of A-Za-z0-9._-; unique (case-insensitive); \"acme\" when omitted",
     .filter = GH_FILTER_TEXT,
     .sortable = true},
    {.name = "directory",
     .type = GH_PT_STRING,
     .required = true,
     .max_len = 1024,
     .check = check_directory,
     .label = "Directory URL",
     .group = G_CA,
     .description = "The CA's ACME directory, such as "
                    "https://acme-v02.api.letsencrypt.org/directory",
     .rule = "an https:// URL",
     .filter = GH_FILTER_TEXT},
    {.name = "directoryCaCertificateId",
     .type = GH_PT_STRING,
     .nullable = true,
     .max_len = 64,
     .label = "Directory CA certificate",
     .group = G_CA,
     .description = "A trust-anchor certificate (an x:Certificate holding a chain without a "
                    "private key) that the directory's own TLS certificate must chain to, "
                    "for a private or test CA; null: the system's CA store",
     .rule = "the id of an x:Certificate without a private key, or null"},
    {.name = "challengeType",
     .type = GH_PT_ENUM,
     .def = "\"TlsAlpn01\"",
     .values = challenge_types,
     .label = "Challenge",
     .group = G_CA,
     .description = "How the CA checks that this server answers for the names: TLS-ALPN-01 "
                    "on an implicit-TLS listener reached on port 443, or HTTP-01 on an HTTP "
                    "listener reached on port 80",
     .filter = GH_FILTER_EQUALS},
    {.name = "contact",
     .type = GH_PT_STRING,
     .list = true,
     .min_items = 1,
     .max_items = 8,
     .max_len = 254,
     .required = true,
     .check = check_email,
     .label = "Contact e-mail",
     .group = G_ACCOUNT,
     .description = "Where the CA writes about the account (expiry notices, policy changes)",
     .rule = "1-8 e-mail addresses"},
    {.name = "eabKeyId",
     .type = GH_PT_STRING,
     .nullable = true,
     .max_len = 256,
     .label = "EAB key id",
     .group = G_ACCOUNT,
     .description = "External Account Binding key id, for CAs that require one (RFC 8555 "
                    "§7.3.4)",
     .rule = "as the CA gave it; set together with eabHmacKey"},
    {.name = "eabHmacKey",
     .type = GH_PT_STRING,
     .nullable = true,
     .max_len = 512,
     .mut = GH_WRITE_ONLY,
     .label = "EAB HMAC key",
     .group = G_ACCOUNT,
     .description = "External Account Binding HMAC key, base64url; never returned",
     .rule = "base64url, as the CA gave it"},
    {.name = "accountUri",
     .type = GH_PT_STRING,
     .mut = GH_SERVER_SET,
     .nullable = true,
     .max_len = 1024,
     .label = "Account URL",
     .group = G_ACCOUNT,
     .description = "The account's URL at the CA, known after the first order"},
    {.name = "renewBefore",
     .type = GH_PT_STRING,
     .def = "\"R23\"",
     .max_len = 16,
     .check = check_renew_before,
     .label = "Renew",
     .group = G_RENEW,
     .description = "When to renew: R23 = once two thirds of the lifetime have passed, or a "
                    "duration before expiry such as 30d; the CA's renewal window (ARI, RFC "
                    "9773) comes first when it offers one",
     .rule = "Rab (a < b, digits) or a duration with s, m, h or d"},
    {.name = "maxRetries",
     .type = GH_PT_UINT,
     .def = "10",
     .max = 100,
     .label = "Retries",
     .group = G_RENEW,
     .description = "How many times a failed order is retried (with growing back-off) "
                    "before the certificate is marked failed; it is tried again a day later",
     .rule = "0-100"},
};

static void validate(struct gh_objtype *t, json_t *obj, const json_t *old, struct gh_verr *ve)
{
    gh_name_unique(t, obj, old, "acme", ve);
    const json_t *kid = json_object_get(obj, "eabKeyId"), *mac = json_object_get(obj, "eabHmacKey");
    if (json_is_string(kid) != json_is_string(mac))
        gh_verr_add(ve, json_is_string(kid) ? "eabHmacKey" : "eabKeyId",
                    "eabKeyId and eabHmacKey go together: set both or neither");
    if (json_is_string(mac)) {
        unsigned char *raw = NULL;
        size_t len = 0;
        if (!gh_b64url_decode(json_string_value(mac), &raw, &len) || !len)
            gh_verr_add(ve, "eabHmacKey", "not base64url; paste the key exactly as the CA gave it");
        free(raw);
    }
    const char *ca = json_string_value(json_object_get(obj, "directoryCaCertificateId"));
    if (ca) {
        json_t *c = gh_obj_find(&gh_type_certificate, ca, NULL);
        if (!c)
            gh_verr_add(ve, "directoryCaCertificateId", "no x:Certificate with id \"%s\"", ca);
        else if (json_is_string(json_object_get(c, "privateKey")) ||
                 !json_is_string(json_object_get(c, "certificate")))
            gh_verr_add(ve, "directoryCaCertificateId",
                        "x:Certificate \"%s\" is not a trust anchor (it has a private key or no "
                        "chain); upload the CA's chain alone",
                        ca);
    }
    /* A new account's key; a changed directory is another CA, so a new account too. */
    const char *dir = json_string_value(json_object_get(obj, "directory"));
    if (old && !strcmp(dir, json_string_value(json_object_get(old, "directory"))))
        return;
    EVP_PKEY *key = gh_acme_key_new();
    char *pem = key ? gh_acme_key_pem(key) : NULL;
    if (!pem)
        gh_verr_add(ve, NULL, "cannot generate the account key (OpenSSL); try again");
    else
        json_object_set_new(obj, GH_ACME_ACCOUNT_KEY, json_string(pem));
    json_object_set_new(obj, "accountUri", json_null());
    if (pem)
        OPENSSL_cleanse(pem, strlen(pem));
    free(pem);
    EVP_PKEY_free(key);
}

/* A provider in use by certificates stays. */
static bool apply(const json_t *obj, const json_t *old, struct gh_verr *ve)
{
    if (obj || !old)
        return true;
    const char *id = json_string_value(json_object_get(old, "id"));
    size_t i;
    json_t *c;
    json_array_foreach(gh_type_certificate.objs, i, c)
    {
        const char *p = json_string_value(json_object_get(c, "acmeProviderId"));
        if (p && !strcmp(p, id)) {
            ve->type = "objectIsLinked";
            gh_verr_add(ve, NULL,
                        "certificate \"%s\" is ordered from this provider; change or "
                        "destroy it first",
                        json_string_value(json_object_get(c, "name")));
            return false;
        }
    }
    return true;
}

static void committed(struct gh_objtype *t)
{
    gh_acme_renew_kick();
}

static const char *const groups[] = {G_CA, G_ACCOUNT, G_RENEW, NULL};
static const char *const columns[] = {"name", "directory", "challengeType", "renewBefore", NULL};

struct gh_objtype gh_type_acmeprovider = {
    .type = "x:AcmeProvider",
    .name = "AcmeProvider",
    .cli_name = "acme-provider",
    .label = "ACME provider",
    .perm_prefix = "sysAcmeProvider",
    .nav = "Settings › TLS › ACME Providers",
    .id_prefix = 'a',
    .groups = groups,
    .list_columns = columns,
    .props = props,
    .nprops = sizeof props / sizeof props[0],
    .hooks = {.validate = validate, .apply = apply, .committed = committed},
};

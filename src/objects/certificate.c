/*
 * certificate: x:Certificate objects — a PEM chain and its private key (write-only), with
 * what the certificate says about itself derived by the TLS layer. Every change replaces
 * the TLS layer's certificate store, so new handshakes use it at once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "net/tls.h"
#include "objects/model.h"

#define G_CERT "Certificate"

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
     .required = true,
     .max_len = 262144,
     .label = "Certificate chain (PEM)",
     .group = G_CERT,
     .description = "The certificate and its intermediates, PEM, leaf first",
     .rule = "PEM; must match the private key; not expired"},
    {.name = "privateKey",
     .type = GH_PT_TEXT,
     .mut = GH_WRITE_ONLY,
     .label = "Private key (PEM)",
     .group = G_CERT,
     .description = "The certificate's private key, PEM; never returned. Without one the "
                    "certificate is a trust anchor: it verifies backends (a destination's "
                    "tlsCaCertificateId) and is never served to clients",
     .rule = "PEM; must match the certificate; omit for a trust anchor"},
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

static void validate(struct gh_objtype *t, json_t *obj, const json_t *old, struct gh_verr *ve)
{
    struct gh_cert_info info;
    memset(&info, 0, sizeof info);
    gh_err err = {0};
    if (!gh_tls_cert_inspect(json_string_value(json_object_get(obj, "certificate")),
                             json_string_value(json_object_get(obj, "privateKey")), &info, &err)) {
        /* the TLS layer's message starts with the part that is wrong */
        gh_verr_add(ve, strncmp(err.msg, "privateKey", 10) ? "certificate" : "privateKey", "%s",
                    err.msg);
        return;
    }
    json_t *names = json_array();
    for (unsigned i = 0; i < info.nnames; i++)
        json_array_append_new(names, json_string(info.names[i]));
    json_object_set_new(obj, "subjectNames", names);
    json_object_set_new(obj, "notBefore", utc_date(info.not_before));
    json_object_set_new(obj, "notAfter", utc_date(info.not_after));
    json_object_set_new(obj, "issuer", json_string(info.issuer_cn));
    json_object_set_new(obj, "fingerprint", json_string(info.fingerprint_sha256));
    char base[80];
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
        if (!json_string_value(json_object_get(o, "privateKey")))
            continue; /* a trust anchor is never served */
        in[k].id = json_string_value(json_object_get(o, "id"));
        in[k].pem_chain = json_string_value(json_object_get(o, "certificate"));
        in[k].pem_key = json_string_value(json_object_get(o, "privateKey"));
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
    gh_destinations_apply(); /* a destination may trust one of them */
}

static const char *const groups[] = {G_CERT, NULL};
static const char *const columns[] = {"name", "subjectNames", "notAfter", "isDefault", NULL};

struct gh_objtype gh_type_certificate = {
    .type = "x:Certificate",
    .name = "Certificate",
    .cli_name = "certificate",
    .label = "Certificate",
    .perm_prefix = "sysCertificate",
    .id_prefix = 'c',
    .groups = groups,
    .list_columns = columns,
    .props = props,
    .nprops = sizeof props / sizeof props[0],
    .hooks = {.validate = validate, .committed = committed},
};

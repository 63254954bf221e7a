/*
 * client: one ACME conversation (RFC 8555) over libcurl, blocking, on the renewal thread.
 * A session holds the directory, the current nonce and the account URL; every POST is a
 * JWS signed with the account key, retried once on badNonce (§6.5). Challenges are
 * published in the listeners' challenge table while their authorization is validated,
 * and withdrawn whatever the outcome.
 */
#include "acme/acme.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "acme/jws.h"
#include "net/challenge.h"

#define POLL_LIMIT_SECS 90 /* an authorization or order still pending after this fails */

struct session {
    struct gh_acme_account *acct;
    CURL *curl;
    json_t *dir;
    char nonce[256];
};

/* One HTTP exchange's answer. */
struct reply {
    long status;
    char *body;
    size_t len;
    char location[1024];
    char nonce[256];
    long retry_after;
};

static void reply_free(struct reply *r)
{
    free(r->body);
    memset(r, 0, sizeof *r);
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    struct reply *r = arg;
    size_t add = size * n;
    if (r->len + add > 1 << 20)
        return 0; /* no ACME answer is this large */
    char *b = realloc(r->body, r->len + add + 1);
    if (!b)
        return 0;
    memcpy(b + r->len, data, add);
    r->len += add;
    b[r->len] = '\0';
    r->body = b;
    return add;
}

/* Copies a header's value (trimmed) when its name matches. */
static bool header_value(const char *line, size_t len, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    if (len <= nl || strncasecmp(line, name, nl) || line[nl] != ':')
        return false;
    const char *v = line + nl + 1;
    const char *end = line + len;
    while (v < end && isspace((unsigned char)*v))
        v++;
    while (end > v && isspace((unsigned char)end[-1]))
        end--;
    snprintf(out, cap, "%.*s", (int)(end - v), v);
    return true;
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    struct reply *r = arg;
    size_t len = size * n;
    char ra[32];
    header_value(data, len, "Location", r->location, sizeof r->location);
    header_value(data, len, "Replay-Nonce", r->nonce, sizeof r->nonce);
    if (header_value(data, len, "Retry-After", ra, sizeof ra))
        r->retry_after = atol(ra);
    return len;
}

/* Ends a transfer early when the process stops, so shutdown never waits on a CA. */
static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    const struct gh_acme_account *a = arg;
    return a->stop && atomic_load(a->stop) ? 1 : 0;
}

/* GET (body NULL), HEAD (head) or POST of application/jose+json. */
static bool http(struct session *s, const char *url, const char *body, bool head, struct reply *r,
                 gh_err *err)
{
    memset(r, 0, sizeof *r);
    CURL *c = s->curl;
    curl_easy_reset(c);
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/jose+json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(c, CURLOPT_USERAGENT, "gatehouse-acme");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, s->acct);
    if (s->acct->ca_pem) {
        struct curl_blob ca = {.data = (void *)s->acct->ca_pem,
                               .len = strlen(s->acct->ca_pem),
                               .flags = CURL_BLOB_COPY};
        curl_easy_setopt(c, CURLOPT_CAINFO_BLOB, &ca);
    }
    if (head)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    }
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(hdrs);
    if (rc != CURLE_OK) {
        reply_free(r);
        return gh_fail(err, "cannot reach the ACME server at %s: %s", url, curl_easy_strerror(rc));
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    if (r->nonce[0])
        snprintf(s->nonce, sizeof s->nonce, "%s", r->nonce);
    return true;
}

/* The problem document's words (RFC 7807), for an error a person can act on. */
static bool problem(const struct reply *r, const char *what, gh_err *err)
{
    json_t *p = r->body ? json_loads(r->body, 0, NULL) : NULL;
    const char *type = json_string_value(json_object_get(p, "type"));
    const char *detail = json_string_value(json_object_get(p, "detail"));
    if (type && !strncmp(type, "urn:ietf:params:acme:error:", 27))
        type += 27;
    gh_fail(err, "%s: the ACME server answered %ld%s%s%s%s%s", what, r->status, type ? " " : "",
            type ? type : "", detail ? " (" : "", detail ? detail : "", detail ? ")" : "");
    json_decref(p);
    return false;
}

static bool is_bad_nonce(const struct reply *r)
{
    return r->status == 400 && r->body && strstr(r->body, "urn:ietf:params:acme:error:badNonce");
}

static const char *dir_url(struct session *s, const char *name)
{
    return json_string_value(json_object_get(s->dir, name));
}

static bool fresh_nonce(struct session *s, gh_err *err)
{
    const char *url = dir_url(s, "newNonce");
    struct reply r;
    if (!url)
        return gh_fail(err, "the ACME directory names no newNonce");
    if (!http(s, url, NULL, true, &r, err))
        return false;
    bool ok = s->nonce[0] != '\0';
    reply_free(&r);
    return ok || gh_fail(err, "the ACME server gave no Replay-Nonce");
}

/* A signed POST (payload NULL = POST-as-GET), with the account's kid unless use_jwk. */
static bool post(struct session *s, const char *url, const char *payload, bool use_jwk,
                 struct reply *r, gh_err *err)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!s->nonce[0] && !fresh_nonce(s, err))
            return false;
        char *jws = gh_jws_es256(s->acct->key, use_jwk ? NULL : s->acct->account_uri, s->nonce, url,
                                 payload, err);
        s->nonce[0] = '\0';
        if (!jws)
            return false;
        bool ok = http(s, url, jws, false, r, err);
        free(jws);
        if (!ok)
            return false;
        if (!is_bad_nonce(r) || attempt == 1)
            return true;
        reply_free(r);
    }
    return true;
}

static json_t *body_json(const struct reply *r)
{
    return r->body ? json_loads(r->body, 0, NULL) : NULL;
}

static bool load_directory(struct session *s, gh_err *err)
{
    struct reply r;
    if (!http(s, s->acct->directory, NULL, false, &r, err))
        return false;
    if (r.status != 200) {
        problem(&r, "ACME directory", err);
        reply_free(&r);
        return false;
    }
    s->dir = body_json(&r);
    reply_free(&r);
    if (!json_is_object(s->dir) || !dir_url(s, "newAccount") || !dir_url(s, "newOrder"))
        return gh_fail(err, "%s is not an ACME directory (no newAccount/newOrder)",
                       s->acct->directory);
    return true;
}

static bool ensure_account(struct session *s, gh_err *err)
{
    struct gh_acme_account *a = s->acct;
    if (a->account_uri)
        return true;
    const char *url = dir_url(s, "newAccount");
    json_t *req = json_pack("{sb s[]}", "termsOfServiceAgreed", 1, "contact");
    for (unsigned i = 0; i < a->ncontact; i++) {
        char mailto[320];
        snprintf(mailto, sizeof mailto, "mailto:%s", a->contact[i]);
        json_array_append_new(json_object_get(req, "contact"), json_string(mailto));
    }
    bool eab_required =
        json_is_true(json_object_get(json_object_get(s->dir, "meta"), "externalAccountRequired"));
    if (a->eab_key_id && a->eab_hmac_key) {
        json_t *eab = gh_jws_eab(a->eab_key_id, a->eab_hmac_key, a->key, url, err);
        if (!eab) {
            json_decref(req);
            return false;
        }
        json_object_set_new(req, "externalAccountBinding", eab);
    } else if (eab_required) {
        json_decref(req);
        return gh_fail(err, "the CA requires External Account Binding: set eabKeyId and "
                            "eabHmacKey from your CA account");
    }
    char *payload = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    struct reply r;
    bool ok = payload && post(s, url, payload, true, &r, err);
    free(payload);
    if (!ok)
        return false;
    if ((r.status != 200 && r.status != 201) || !r.location[0])
        ok = problem(&r, "creating the ACME account", err);
    else
        a->account_uri = strdup(r.location);
    reply_free(&r);
    return ok;
}

/* POST-as-GET of url until its status leaves the waiting ones; the last object. */
static json_t *poll_until(struct session *s, const char *url, const char *what, gh_err *err)
{
    time_t started = time(NULL);
    for (;;) {
        struct reply r;
        if (!post(s, url, NULL, false, &r, err))
            return NULL;
        json_t *o = r.status == 200 ? body_json(&r) : NULL;
        if (!o) {
            problem(&r, what, err);
            reply_free(&r);
            return NULL;
        }
        long retry = r.retry_after;
        reply_free(&r);
        const char *st = json_string_value(json_object_get(o, "status"));
        if (!st || (strcmp(st, "pending") && strcmp(st, "processing")))
            return o;
        json_decref(o);
        long waited = (long)(time(NULL) - started);
        if (waited >= POLL_LIMIT_SECS || (s->acct->stop && atomic_load(s->acct->stop))) {
            gh_fail(err, "%s: still pending after %ld s", what, waited);
            return NULL;
        }
        sleep(retry > 0 && retry < 5 ? (unsigned)retry : 1);
    }
}

/* The error words of an invalid authorization's challenge. */
static void challenge_error(json_t *authz, const char *name, gh_err *err)
{
    json_t *ch;
    size_t i;
    json_array_foreach(json_object_get(authz, "challenges"), i, ch)
    {
        json_t *e = json_object_get(ch, "error");
        if (e) {
            gh_fail(err, "validation of %s failed: %s", name,
                    json_string_value(json_object_get(e, "detail"))
                        ? json_string_value(json_object_get(e, "detail"))
                        : "no detail given");
            return;
        }
    }
    gh_fail(err, "validation of %s failed", name);
}

static const char *challenge_type_name(enum gh_acme_challenge t)
{
    return t == GH_ACME_HTTP_01 ? "http-01" : "tls-alpn-01";
}

/* Publishes the answer to one challenge in the listeners' table. */
static bool publish(enum gh_acme_challenge type, const char *name, const char *token,
                    const char *key_auth, gh_err *err)
{
    if (type == GH_ACME_HTTP_01)
        return gh_challenge_http_put(token, key_auth) ||
               gh_fail(err, "too many challenges open at once");
    X509 *cert;
    EVP_PKEY *key;
    if (!gh_acme_alpn_cert(name, key_auth, &cert, &key, err))
        return false;
    bool ok = gh_challenge_alpn_put(name, cert, key);
    X509_free(cert);
    EVP_PKEY_free(key);
    return ok || gh_fail(err, "too many challenges open at once");
}

static void withdraw(enum gh_acme_challenge type, const char *name, const char *token)
{
    if (type == GH_ACME_HTTP_01)
        gh_challenge_http_remove(token);
    else
        gh_challenge_alpn_remove(name);
}

static bool authorize(struct session *s, const char *authz_url, enum gh_acme_challenge type,
                      gh_err *err)
{
    struct reply r;
    if (!post(s, authz_url, NULL, false, &r, err))
        return false;
    json_t *authz = r.status == 200 ? body_json(&r) : NULL;
    if (!authz) {
        problem(&r, "reading an authorization", err);
        reply_free(&r);
        return false;
    }
    reply_free(&r);
    const char *name =
        json_string_value(json_object_get(json_object_get(authz, "identifier"), "value"));
    const char *status = json_string_value(json_object_get(authz, "status"));
    bool ok = false;
    if (status && !strcmp(status, "valid")) {
        json_decref(authz);
        return true;
    }
    json_t *ch, *chosen = NULL;
    size_t i;
    json_array_foreach(json_object_get(authz, "challenges"), i, ch)
    {
        const char *t = json_string_value(json_object_get(ch, "type"));
        if (t && !strcmp(t, challenge_type_name(type)))
            chosen = ch;
    }
    const char *token = json_string_value(json_object_get(chosen, "token"));
    const char *url = json_string_value(json_object_get(chosen, "url"));
    char thumb[64], key_auth[512];
    if (!name || !token || !url || strlen(token) > 256) {
        gh_fail(err, "the ACME server offers no %s challenge for %s", challenge_type_name(type),
                name ? name : "a name");
        goto out;
    }
    if (!gh_jwk_thumbprint(s->acct->key, thumb)) {
        gh_fail(err, "ACME: cannot compute the account key thumbprint");
        goto out;
    }
    snprintf(key_auth, sizeof key_auth, "%s.%s", token, thumb);
    if (!publish(type, name, token, key_auth, err))
        goto out;
    if (post(s, url, "{}", false, &r, err)) {
        if (r.status != 200)
            problem(&r, "answering the challenge", err);
        else {
            json_t *done = poll_until(s, authz_url, "authorization", err);
            const char *st = json_string_value(json_object_get(done, "status"));
            ok = st && !strcmp(st, "valid");
            if (done && !ok)
                challenge_error(done, name, err);
            json_decref(done);
        }
        reply_free(&r);
    }
    withdraw(type, name, token);
out:
    json_decref(authz);
    return ok;
}

static bool finalize(struct session *s, json_t *order, const char *order_url, char *const *names,
                     unsigned n, struct gh_acme_result *out, gh_err *err)
{
    EVP_PKEY *key = gh_acme_key_new();
    char *csr = key ? gh_acme_csr(names, n, key, err) : NULL;
    json_t *req = csr ? json_pack("{ss}", "csr", csr) : NULL;
    char *payload = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    free(csr);
    struct reply r;
    bool ok = false;
    json_t *done = NULL;
    const char *fin = json_string_value(json_object_get(order, "finalize"));
    if (!payload || !fin) {
        gh_fail(err, "ACME: cannot finalize the order (no finalize URL or no CSR)");
        goto out;
    }
    if (!post(s, fin, payload, false, &r, err))
        goto out;
    if (r.status != 200) {
        problem(&r, "finalizing the order", err);
        reply_free(&r);
        goto out;
    }
    reply_free(&r);
    done = poll_until(s, order_url, "order", err);
    const char *st = json_string_value(json_object_get(done, "status"));
    const char *cert_url = json_string_value(json_object_get(done, "certificate"));
    if (!done)
        goto out;
    if (!st || strcmp(st, "valid") || !cert_url) {
        gh_fail(err, "the order ended %s instead of valid", st ? st : "without a status");
        goto out;
    }
    if (!post(s, cert_url, NULL, false, &r, err))
        goto out;
    if (r.status != 200 || !r.body || !strstr(r.body, "-----BEGIN CERTIFICATE-----")) {
        problem(&r, "downloading the certificate", err);
        reply_free(&r);
        goto out;
    }
    out->chain_pem = r.body;
    r.body = NULL;
    reply_free(&r);
    out->key_pem = gh_acme_key_pem(key);
    ok = out->key_pem != NULL;
out:
    free(payload);
    json_decref(done);
    EVP_PKEY_free(key);
    return ok;
}

static bool session_open(struct session *s, struct gh_acme_account *acct, gh_err *err)
{
    memset(s, 0, sizeof *s);
    s->acct = acct;
    if (!(s->curl = curl_easy_init()))
        return gh_fail(err, "ACME: libcurl failed to start");
    return load_directory(s, err);
}

static void session_close(struct session *s)
{
    curl_easy_cleanup(s->curl);
    json_decref(s->dir);
}

bool gh_acme_order(struct gh_acme_account *acct, enum gh_acme_challenge type, char *const *names,
                   unsigned n, struct gh_acme_result *out, gh_err *err)
{
    memset(out, 0, sizeof *out);
    struct session s;
    json_t *order = NULL;
    bool ok = false;
    if (!session_open(&s, acct, err) || !ensure_account(&s, err))
        goto out;
    json_t *req = json_pack("{s[]}", "identifiers");
    for (unsigned i = 0; i < n; i++)
        json_array_append_new(json_object_get(req, "identifiers"),
                              json_pack("{ss ss}", "type", "dns", "value", names[i]));
    char *payload = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    struct reply r;
    bool sent = payload && post(&s, dir_url(&s, "newOrder"), payload, false, &r, err);
    if (sent && r.status == 400 && r.body && strstr(r.body, ":accountDoesNotExist")) {
        /* the CA forgot the account (a test CA restarted, an account deactivated): register
         * the key again and order once more */
        reply_free(&r);
        free(acct->account_uri);
        acct->account_uri = NULL;
        sent =
            ensure_account(&s, err) && post(&s, dir_url(&s, "newOrder"), payload, false, &r, err);
    }
    free(payload);
    if (!sent)
        goto out;
    if (r.status != 201 || !r.location[0] || !(order = body_json(&r))) {
        problem(&r, "newOrder", err);
        reply_free(&r);
        goto out;
    }
    char order_url[1024];
    snprintf(order_url, sizeof order_url, "%s", r.location);
    reply_free(&r);
    json_t *authz;
    size_t i;
    json_array_foreach(json_object_get(order, "authorizations"), i, authz)
    {
        if (!authorize(&s, json_string_value(authz), type, err))
            goto out;
    }
    ok = finalize(&s, order, order_url, names, n, out, err);
out:
    json_decref(order);
    session_close(&s);
    if (!ok)
        gh_acme_result_free(out);
    return ok;
}

void gh_acme_result_free(struct gh_acme_result *r)
{
    free(r->chain_pem);
    if (r->key_pem)
        OPENSSL_cleanse(r->key_pem, strlen(r->key_pem));
    free(r->key_pem);
    memset(r, 0, sizeof *r);
}

char *gh_acme_cert_id(const char *chain_pem)
{
    BIO *b = BIO_new_mem_buf(chain_pem, -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    char *out = NULL;
    const ASN1_OCTET_STRING *aki = x ? X509_get0_authority_key_id(x) : NULL;
    const ASN1_INTEGER *serial = x ? X509_get0_serialNumber(x) : NULL;
    BIGNUM *bn = serial ? ASN1_INTEGER_to_BN(serial, NULL) : NULL;
    if (aki && bn) {
        unsigned char ser[64];
        int len = BN_bn2bin(bn, ser + 1);
        ser[0] = 0;
        /* DER INTEGER content: a leading zero when the top bit is set */
        bool pad = len > 0 && (ser[1] & 0x80);
        char *a = gh_b64url(ASN1_STRING_get0_data(aki), (size_t)ASN1_STRING_length(aki));
        char *s = len > 0 && len < 63 ? gh_b64url(pad ? ser : ser + 1, (size_t)len + pad) : NULL;
        if (a && s && asprintf(&out, "%s.%s", a, s) < 0)
            out = NULL;
        free(a);
        free(s);
    }
    BN_free(bn);
    X509_free(x);
    ERR_clear_error();
    return out;
}

static time_t rfc3339(const char *s)
{
    struct tm tm = {0};
    const char *end = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
    return end ? timegm(&tm) : 0;
}

bool gh_acme_renewal_info(struct gh_acme_account *acct, const char *chain_pem, time_t *start,
                          time_t *end, bool *offered, gh_err *err)
{
    *offered = false;
    struct session s;
    bool ok = false;
    char *id = NULL, *url = NULL;
    if (!session_open(&s, acct, err))
        goto out;
    const char *base = dir_url(&s, "renewalInfo");
    if (!base)
        goto out;
    *offered = true;
    if (!(id = gh_acme_cert_id(chain_pem)) ||
        asprintf(&url, "%s%s%s", base, base[strlen(base) - 1] == '/' ? "" : "/", id) < 0) {
        url = NULL;
        gh_fail(err, "renewalInfo: the certificate has no authority key identifier");
        goto out;
    }
    struct reply r;
    if (!http(&s, url, NULL, false, &r, err))
        goto out;
    json_t *o = r.status == 200 ? body_json(&r) : NULL;
    json_t *w = json_object_get(o, "suggestedWindow");
    *start = rfc3339(json_string_value(json_object_get(w, "start")));
    *end = rfc3339(json_string_value(json_object_get(w, "end")));
    ok = *start && *end && *start <= *end;
    if (!ok)
        problem(&r, "renewalInfo", err);
    json_decref(o);
    reply_free(&r);
out:
    free(id);
    free(url);
    session_close(&s);
    return ok;
}

/* A duration: digits and one of s, m, h, d. */
static bool duration_secs(const char *s, time_t *secs)
{
    char *end;
    long long n = strtoll(s, &end, 10);
    if (end == s || n < 0 || end[0] == '\0' || end[1] != '\0')
        return false;
    long long unit = *end == 's'   ? 1
                     : *end == 'm' ? 60
                     : *end == 'h' ? 3600
                     : *end == 'd' ? 86400
                                   : 0;
    if (!unit || n > 100LL * 365 * 86400 / unit)
        return false;
    *secs = (time_t)(n * unit);
    return true;
}

bool gh_acme_renew_at(const char *spec, time_t not_before, time_t not_after, time_t *at)
{
    if (!spec)
        return false;
    if (spec[0] == 'R' && isdigit((unsigned char)spec[1]) && isdigit((unsigned char)spec[2]) &&
        !spec[3]) {
        /* "Rab": renew when a/b of the lifetime has passed */
        int a = spec[1] - '0', b = spec[2] - '0';
        if (!a || !b || a >= b)
            return false;
        *at = not_before + (not_after - not_before) * a / b;
        return true;
    }
    time_t before;
    if (!duration_secs(spec, &before))
        return false;
    *at = not_after - before;
    return true;
}

/*
 * http_api: the management application of `http` listeners, served by the HTTP server
 * (proto/http.h): the JMAP API, the session, EventSource push (jmap/eventsource.c), cookie
 * sign-in for the web page with its CSRF rule, and the page itself. Credentials: jmap/auth.c.
 */
#include "jmap/http_api.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/assets.h"
#include "core/log.h"
#include "jmap/eventsource.h"
#include "net/challenge.h"
#include "jmap/metrics_route.h"
#include "net/conn.h"

#define GH_STR_(x)     #x
#define GH_STR(x)      GH_STR_(x)
#define AUTH_CHALLENGE "Bearer realm=\"gatehouse\", Basic realm=\"gatehouse\""

static struct gh_api_hooks hooks; /* set once, before the first connection */

void gh_api_init(const struct gh_api_hooks *h)
{
    hooks = *h;
    gh_auth_set_check(h->authenticate);
    gh_jmap_set_push(gh_eventsource_push);
}

/* ---- responses ---- */

static void problem(struct gh_http_req *r, int status, const char *type, const char *extra,
                    const char *detail)
{
    char *body = gh_jmap_problem(status, type ? type : "about:blank", NULL, detail);
    gh_http_respond(r, status, "application/problem+json", extra, body ? body : "",
                    body ? strlen(body) : 0);
    free(body);
}

static void unauthorized(struct gh_http_req *r)
{
    problem(r, 401, NULL,
            "WWW-Authenticate: " AUTH_CHALLENGE "\r\n"
            "Cache-Control: no-store\r\n",
            "valid credentials are required: HTTP Basic (admin or an API key name, with its "
            "secret), a Bearer token, or the web page's session cookie");
}

/* ---- request helpers ---- */

/* The path of the request target, copied (no query); false when it is not origin-form. */
static bool target(struct gh_http_req *r, char *path, size_t cap, const char **query)
{
    const char *url = r->target;
    if (url[0] != '/')
        return false;
    size_t n = strcspn(url, "?#");
    if (n >= cap)
        return false;
    memcpy(path, url, n);
    path[n] = '\0';
    *query = url[n] == '?' ? url + n + 1 : "";
    return true;
}

static bool media_is_json(const char *ct)
{
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strlen("application/json");
    if (strncasecmp(ct, "application/json", n))
        return false;
    ct += n;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == '\0' || *ct == ';';
}

/* host[:port] where host is a DNS name, IPv4 or a bracketed IPv6 address. */
static bool valid_host(const char *s)
{
    size_t n = strlen(s);
    if (!n || n > 260)
        return false;
    const char *p = s;
    if (*p == '[') {
        const char *end = strchr(p, ']');
        if (!end || end == p + 1)
            return false;
        for (const char *q = p + 1; q < end; q++) {
            if (!isxdigit((unsigned char)*q) && *q != ':' && *q != '.')
                return false;
        }
        p = end + 1;
    } else {
        const char *q = p;
        while (*q && (isalnum((unsigned char)*q) || *q == '-' || *q == '.'))
            q++;
        if (q == p)
            return false;
        p = q;
    }
    if (!*p)
        return true;
    if (*p != ':' || !p[1] || strlen(p + 1) > 5)
        return false;
    for (const char *q = p + 1; *q; q++) {
        if (!isdigit((unsigned char)*q))
            return false;
    }
    long port = strtol(p + 1, NULL, 10);
    return port >= 1 && port <= 65535;
}

/* "http://host:port" for absolute session URLs: the Host header when it is well formed,
 * else the address the client connected to. */
static void base_url(struct gh_http_req *r, char *out, size_t cap)
{
    const char *scheme = r->c->tls_active ? "https" : "http";
    const char *host = gh_http_header(r, "host");
    if (host && valid_host(host)) {
        snprintf(out, cap, "%s://%s", scheme, host);
        return;
    }
    char local[GH_ADDR_TEXT] = "localhost";
    if (r->c->local.len)
        gh_sockaddr_format(&r->c->local, local);
    snprintf(out, cap, "%s://%s", scheme, local);
}

static const char *client_of(struct gh_http_req *r)
{
    return r->c->peer_text[0] ? r->c->peer_text : "-";
}

/* The value of our cookie in a Cookie header, copied into out. */
static bool cookie_token(const char *header, char out[GH_AUTH_TOKEN_LEN + 1])
{
    const char *p = header;
    size_t n = strlen(GH_API_COOKIE);
    while (p && *p) {
        while (*p == ' ' || *p == ';')
            p++;
        if (!strncmp(p, GH_API_COOKIE, n) && p[n] == '=') {
            const char *v = p + n + 1;
            size_t len = strcspn(v, "; ");
            if (len != GH_AUTH_TOKEN_LEN)
                return false;
            memcpy(out, v, len);
            out[len] = '\0';
            return true;
        }
        p = strchr(p, ';');
    }
    return false;
}

/* ---- authentication ---- */

enum auth { AUTH_OK, AUTH_DONE, AUTH_WAIT }; /* AUTH_DONE: an error response was sent */

static bool basic_user(const char *authz, char user[65])
{
    return authz && gh_auth_header_user(authz, user, 65);
}

/* Waits for this credential check's turn (auth.c), or refuses it when the turn is too far
 * away; a held request comes back with its turn taken. */
static enum auth take_turn(struct gh_http_req *r, const char *authz)
{
    char user[65];
    unsigned ms = 0;
    if (r->held)
        return AUTH_OK;
    switch (gh_auth_turn(client_of(r), basic_user(authz, user) ? user : NULL, &ms)) {
    case GH_AUTH_NOW:
        return AUTH_OK;
    case GH_AUTH_WAIT:
        return gh_http_hold(r, ms) ? AUTH_WAIT : AUTH_OK;
    case GH_AUTH_REFUSE:
        break;
    }
    char extra[80];
    snprintf(extra, sizeof extra, "Retry-After: %u\r\nCache-Control: no-store\r\n",
             (ms + 999) / 1000);
    problem(r, 429, NULL, extra,
            "too many failed sign-ins from this address or for this name: try again later");
    return AUTH_DONE;
}

static void failed_sign_in(struct gh_http_req *r, const char *authz, const char *what)
{
    char user[65];
    gh_auth_failed(client_of(r), basic_user(authz, user) ? user : NULL);
    gh_log(r->c->conf ? r->c->conf->name : NULL, client_of(r), "auth-failed", "%s", what);
}

/*
 * Authenticates the request: Authorization, else the session cookie. csrf: a cookie alone
 * is not enough, the X-Gatehouse-Csrf header must come with it (a cross-site page cannot
 * send it without a CORS preflight, which is never granted).
 */
static enum auth authenticate(struct gh_http_req *r, struct gh_principal *who, bool csrf)
{
    memset(who, 0, sizeof *who);
    const char *authz = gh_http_header(r, "authorization");
    char token[GH_AUTH_TOKEN_LEN + 1];
    bool by_cookie =
        !authz && gh_http_header(r, "cookie") && cookie_token(gh_http_header(r, "cookie"), token);
    if (!authz && !by_cookie) {
        unauthorized(r);
        return AUTH_DONE;
    }
    /* Session tokens are 256 random bits, nothing to guess: only Authorization checks are
     * slowed and counted. */
    enum auth turn = authz ? take_turn(r, authz) : AUTH_OK;
    if (turn != AUTH_OK)
        return turn;
    bool ok;
    if (authz) {
        ok = gh_auth_header(authz, who);
    } else {
        char *secret = gh_auth_session_secret(token);
        ok = secret && gh_auth_check(NULL, secret, who);
        free(secret);
    }
    if (!ok) {
        gh_principal_clear(who);
        if (authz)
            failed_sign_in(r, authz, "HTTP credentials refused");
        unauthorized(r);
        return AUTH_DONE;
    }
    if (by_cookie && csrf &&
        (!gh_http_header(r, "x-gatehouse-csrf") ||
         strcmp(gh_http_header(r, "x-gatehouse-csrf"), "1"))) {
        gh_principal_clear(who);
        problem(r, 403, NULL, "",
                "a request signed in by cookie needs the header X-Gatehouse-Csrf: 1");
        return AUTH_DONE;
    }
    snprintf(who->client, sizeof who->client, "%s", r->c->peer_text); /* the lockout rule */
    return AUTH_OK;
}

/* ---- routes ---- */

static void json_response(struct gh_http_req *r, int status, json_t *body, const char *extra)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    if (!text) {
        problem(r, 500, NULL, "", "the response could not be built");
        return;
    }
    gh_http_respond(r, status, "application/json", extra, text, strlen(text));
    free(text);
}

static enum gh_http_next route_api(struct gh_http_req *r)
{
    const char *ct = gh_http_header(r, "content-type");
    struct gh_principal who;
    enum auth a = authenticate(r, &who, true);
    if (a != AUTH_OK)
        return a == AUTH_WAIT ? GH_HTTP_HELD : GH_HTTP_ANSWERED;
    if (ct && !media_is_json(ct)) {
        gh_principal_clear(&who);
        char *body = gh_jmap_problem(400, GH_JMAP_PROBLEM_NOT_JSON, NULL,
                                     "the request Content-Type must be application/json");
        gh_http_respond(r, 400, "application/problem+json", "Cache-Control: no-store\r\n", body,
                        body ? strlen(body) : 0);
        free(body);
        return GH_HTTP_ANSWERED;
    }
    char *out = NULL;
    bool is_problem = false;
    int status = gh_jmap_handle(r->body, r->body_len, &who, &out, &is_problem);
    gh_principal_clear(&who);
    gh_http_respond(r, status, is_problem ? "application/problem+json" : "application/json",
                    status == 429 ? "Cache-Control: no-store\r\nRetry-After: 1\r\n"
                                  : "Cache-Control: no-store\r\n",
                    out ? out : "", out ? strlen(out) : 0);
    free(out);
    return GH_HTTP_ANSWERED;
}

static enum gh_http_next route_json_get(struct gh_http_req *r, json_t *(*produce)(void), bool csrf)
{
    struct gh_principal who;
    enum auth a = authenticate(r, &who, csrf);
    if (a != AUTH_OK)
        return a == AUTH_WAIT ? GH_HTTP_HELD : GH_HTTP_ANSWERED;
    gh_principal_clear(&who);
    json_t *body = produce();
    json_response(r, 200, body, "Cache-Control: no-store\r\n");
    json_decref(body);
    return GH_HTTP_ANSWERED;
}

static enum gh_http_next route_session(struct gh_http_req *r)
{
    struct gh_principal who;
    enum auth a = authenticate(r, &who, false);
    if (a != AUTH_OK)
        return a == AUTH_WAIT ? GH_HTTP_HELD : GH_HTTP_ANSWERED;
    char base[300];
    base_url(r, base, sizeof base);
    json_t *s = gh_jmap_session(&who, base);
    gh_principal_clear(&who);
    json_response(r, 200, s, "Cache-Control: no-cache, no-store, must-revalidate\r\n");
    json_decref(s);
    return GH_HTTP_ANSWERED;
}

/* True when the request carries neither Authorization nor a cookie of a live session. */
static bool signed_out(struct gh_http_req *r)
{
    char token[GH_AUTH_TOKEN_LEN + 1];
    const char *cookie = gh_http_header(r, "cookie");
    if (gh_http_header(r, "authorization"))
        return false;
    if (!cookie || !cookie_token(cookie, token))
        return true;
    char *secret = gh_auth_session_secret(token);
    struct gh_principal who = {0};
    bool live = secret && gh_auth_check(NULL, secret, &who);
    gh_principal_clear(&who);
    free(secret);
    return !live;
}

/*
 * GET /api/me: who the caller is and what it may do, so the page shows only the actions
 * it can take. Without credentials (or with a session that ended) it answers 200
 * {"signedIn": false} rather than 401: the page asks it on every load, and a signed-out
 * visitor is not an error. Credentials that are given are checked as everywhere else.
 */
static enum gh_http_next route_me(struct gh_http_req *r)
{
    if (signed_out(r)) {
        json_t *body = json_pack("{sb}", "signedIn", 0);
        json_response(r, 200, body, "Cache-Control: no-store\r\n");
        json_decref(body);
        return GH_HTTP_ANSWERED;
    }
    struct gh_principal who;
    enum auth a = authenticate(r, &who, true);
    if (a != AUTH_OK)
        return a == AUTH_WAIT ? GH_HTTP_HELD : GH_HTTP_ANSWERED;
    json_t *perms = who.admin || !who.permissions ? json_array() : json_deep_copy(who.permissions);
    json_t *body = json_pack("{sb ss sb so}", "signedIn", 1, "username", who.username, "admin",
                             who.admin, "permissions", perms);
    gh_principal_clear(&who);
    json_response(r, 200, body, "Cache-Control: no-store\r\n");
    json_decref(body);
    return GH_HTTP_ANSWERED;
}

static enum gh_http_next sign_in(struct gh_http_req *r)
{
    const char *ct = gh_http_header(r, "content-type");
    if (!ct || !media_is_json(ct)) {
        problem(r, 415, NULL, "", "sign-in takes application/json: {\"secret\": \"...\"}");
        return GH_HTTP_ANSWERED;
    }
    json_t *req = json_loadb(r->body, r->body_len, 0, NULL);
    const char *secret = json_string_value(json_object_get(req, "secret"));
    if (!secret || !*secret) {
        json_decref(req);
        problem(r, 400, NULL, "", "the body must be {\"secret\": \"...\"}");
        return GH_HTTP_ANSWERED;
    }
    enum auth turn = take_turn(r, NULL);
    if (turn != AUTH_OK) {
        json_decref(req);
        return turn == AUTH_WAIT ? GH_HTTP_HELD : GH_HTTP_ANSWERED;
    }
    struct gh_principal who = {0};
    char token[GH_AUTH_TOKEN_LEN + 1];
    if (!gh_auth_check(NULL, secret, &who)) {
        json_decref(req);
        gh_principal_clear(&who);
        failed_sign_in(r, NULL, "web sign-in refused");
        unauthorized(r);
        return GH_HTTP_ANSWERED;
    }
    gh_principal_clear(&who);
    bool made = gh_auth_session_new(secret, token);
    json_decref(req);
    if (!made) {
        problem(r, 503, NULL, "Retry-After: 5\r\n", "no session could be made");
        return GH_HTTP_ANSWERED;
    }
    char extra[200];
    snprintf(extra, sizeof extra,
             "Set-Cookie: " GH_API_COOKIE "=%s; HttpOnly; SameSite=Strict; Path=/\r\n"
             "Cache-Control: no-store\r\n",
             token);
    gh_http_respond(r, 204, NULL, extra, NULL, 0);
    return GH_HTTP_ANSWERED;
}

static enum gh_http_next sign_out(struct gh_http_req *r)
{
    char token[GH_AUTH_TOKEN_LEN + 1];
    if (gh_http_header(r, "cookie") && cookie_token(gh_http_header(r, "cookie"), token))
        gh_auth_session_end(token);
    gh_http_respond(r, 204, NULL,
                    "Set-Cookie: " GH_API_COOKIE
                    "=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0\r\n",
                    NULL, 0);
    return GH_HTTP_ANSWERED;
}

static bool serve_asset(struct gh_http_req *r, const char *path)
{
    if (!strcmp(path, "/"))
        path = "/index.html";
    for (const struct gh_asset *a = gh_assets; a->path; a++) {
        if (strcmp(a->path, path))
            continue;
        gh_http_respond(r, 200, a->mime,
                        "Cache-Control: no-cache\r\n"
                        "X-Frame-Options: DENY\r\n"
                        "Referrer-Policy: no-referrer\r\n"
                        "Content-Security-Policy: default-src 'self'; frame-ancestors 'none'\r\n",
                        (const char *)a->data, a->len);
        return true;
    }
    return false;
}

static void not_allowed(struct gh_http_req *r, const char *allow)
{
    char extra[80];
    snprintf(extra, sizeof extra, "Allow: %s\r\n", allow);
    problem(r, 405, NULL, extra, "this resource does not take that method");
}

static bool starts_with(const char *s, const char *prefix)
{
    return !strncmp(s, prefix, strlen(prefix));
}

static enum gh_http_next route_stream(struct gh_http_req *r, const char *query)
{
    struct gh_eventsource_params p;
    if (!gh_eventsource_parse(query, &p)) {
        problem(r, 400, NULL, "",
                "closeafter must be \"state\" or \"no\", and ping a whole number of seconds");
        return GH_HTTP_ANSWERED;
    }
    struct gh_principal who;
    enum auth a = authenticate(r, &who, false);
    if (a != AUTH_OK)
        return a == AUTH_WAIT ? GH_HTTP_HELD : GH_HTTP_ANSWERED;
    enum gh_eventsource_opened o =
        gh_eventsource_open(r, &who, &p, gh_http_header(r, "last-event-id"));
    if (o == GH_EVENTSOURCE_OPEN)
        return GH_HTTP_STREAM;
    gh_principal_clear(&who);
    r->close = true;
    if (o == GH_EVENTSOURCE_CREDENTIAL_FULL)
        problem(r, 429, NULL, "Retry-After: 5\r\n",
                "this credential has " GH_STR(
                    GH_EVENTSOURCE_PER_CREDENTIAL) " event streams open, the most it may have: "
                                                   "close one first");
    else
        problem(r, 503, NULL, "Retry-After: 5\r\n", "too many event streams");
    return GH_HTTP_ANSWERED;
}

/* ACME HTTP-01 (RFC 8555 §8.3): the key authorization of a published token, else 404. */
static enum gh_http_next acme_challenge(struct gh_http_req *r, const char *token)
{
    char key_auth[512];
    if (gh_challenge_http_get(token, key_auth, sizeof key_auth))
        gh_http_respond(r, 200, "application/octet-stream", NULL, key_auth, strlen(key_auth));
    else
        problem(r, 404, NULL, "", "no such ACME challenge");
    return GH_HTTP_ANSWERED;
}

static enum gh_http_next route(struct gh_http_req *r)
{
    char path[1024];
    const char *query;
    const char *m = r->method;
    bool get = !strcmp(m, "GET") || !strcmp(m, "HEAD");
    if (!strcmp(m, "OPTIONS")) {
        /* CORS preflights get no Access-Control-Allow-* headers: cross-site is never allowed */
        gh_http_respond(r, 204, NULL, "Allow: GET, HEAD, POST, DELETE, OPTIONS\r\n", NULL, 0);
        return GH_HTTP_ANSWERED;
    }
    if (!target(r, path, sizeof path, &query)) {
        r->close = true;
        problem(r, 400, NULL, "", "the request target must be an absolute path");
        return GH_HTTP_ANSWERED;
    }
    if (starts_with(path, "/.well-known/acme-challenge/")) /* before any authentication */
        return acme_challenge(r, path + strlen("/.well-known/acme-challenge/"));
    if (!strcmp(path, "/api") || !strcmp(path, "/jmap") || !strcmp(path, "/jmap/")) {
        if (!strcmp(m, "POST"))
            return route_api(r);
        not_allowed(r, "POST, OPTIONS");
        return GH_HTTP_ANSWERED;
    }
    if (!strcmp(path, "/jmap/session")) {
        if (get)
            return route_session(r);
        not_allowed(r, "GET, HEAD, OPTIONS");
        return GH_HTTP_ANSWERED;
    }
    if (!strcmp(path, "/.well-known/jmap")) {
        if (!get) {
            not_allowed(r, "GET, HEAD, OPTIONS");
            return GH_HTTP_ANSWERED;
        }
        gh_http_respond(r, 307, NULL,
                        "Location: /jmap/session\r\n"
                        "Cache-Control: no-cache, no-store, must-revalidate\r\n",
                        NULL, 0);
        return GH_HTTP_ANSWERED;
    }
    if (!strcmp(path, "/jmap/eventsource/") || !strcmp(path, "/jmap/eventsource")) {
        if (!strcmp(m, "GET"))
            return route_stream(r, query);
        not_allowed(r, "GET, OPTIONS");
        return GH_HTTP_ANSWERED;
    }
    if (!strcmp(path, "/api/schema") || !strcmp(path, "/api/status")) {
        if (get)
            return route_json_get(r, !strcmp(path, "/api/schema") ? hooks.schema : hooks.status,
                                  true);
        not_allowed(r, "GET, HEAD, OPTIONS");
        return GH_HTTP_ANSWERED;
    }
    if (!strcmp(path, "/api/me")) {
        if (get)
            return route_me(r);
        not_allowed(r, "GET, HEAD, OPTIONS");
        return GH_HTTP_ANSWERED;
    }
    if (!strcmp(path, "/metrics/prometheus") || !strcmp(path, "/api/stats")) {
        if (!get) {
            not_allowed(r, "GET, HEAD, OPTIONS");
            return GH_HTTP_ANSWERED;
        }
        struct gh_principal who;
        bool scrape = !strcmp(path, "/metrics/prometheus");
        if (scrape && !gh_metrics_route_open(r))
            return GH_HTTP_ANSWERED;
        const char *authz = gh_http_header(r, "authorization");
        enum auth turn = scrape && authz ? take_turn(r, authz) : AUTH_OK;
        if (turn != AUTH_OK) /* the scrape's own pair is slowed like every credential */
            return turn == AUTH_WAIT ? GH_HTTP_HELD : GH_HTTP_ANSWERED;
        if (scrape && gh_metrics_route_basic(r))
            return gh_metrics_route_scrape(r);
        enum auth a = authenticate(r, &who, !scrape);
        if (a != AUTH_OK)
            return a == AUTH_WAIT ? GH_HTTP_HELD : GH_HTTP_ANSWERED;
        bool allowed = !scrape || gh_principal_can(&who, "sysMetricsGet");
        gh_principal_clear(&who);
        if (!allowed) { /* a scrape is let in or not: 401 whatever the reason */
            unauthorized(r);
            return GH_HTTP_ANSWERED;
        }
        return scrape ? gh_metrics_route_scrape(r) : gh_metrics_route_stats(r);
    }
    if (!strcmp(path, "/auth/session")) {
        if (!strcmp(m, "POST"))
            return sign_in(r);
        if (!strcmp(m, "DELETE"))
            return sign_out(r);
        not_allowed(r, "POST, DELETE, OPTIONS");
        return GH_HTTP_ANSWERED;
    }
    if (starts_with(path, "/jmap/download/") || starts_with(path, "/jmap/upload/")) {
        struct gh_principal who;
        enum auth a = authenticate(r, &who, true);
        if (a != AUTH_OK)
            return a == AUTH_WAIT ? GH_HTTP_HELD : GH_HTTP_ANSWERED;
        gh_principal_clear(&who);
        problem(r, 404, NULL, "", "Gatehouse keeps no blobs: upload and download are not offered");
        return GH_HTTP_ANSWERED;
    }
    if (get && serve_asset(r, path))
        return GH_HTTP_ANSWERED;
    problem(r, 404, NULL, "", "no such resource");
    return GH_HTTP_ANSWERED;
}

/* Answers a request the server could not read to its end. */
static void refused(struct gh_http_req *r, int status)
{
    const char *detail = "the request is malformed";
    const char *type = NULL, *limit = NULL;
    switch (status) {
    case 411:
        detail = "request bodies must have a Content-Length (chunked bodies are not accepted)";
        break;
    case 413:
        type = GH_JMAP_PROBLEM_LIMIT;
        limit = "maxSizeRequest";
        detail = "the request body is larger than maxSizeRequest (10000000 bytes)";
        break;
    case 431:
        detail = "the request line and headers exceed 64 KiB";
        break;
    case 503:
        detail = "out of memory";
        break;
    }
    char *body = gh_jmap_problem(status, type ? type : "about:blank", limit, detail);
    gh_http_respond(r, status, "application/problem+json", "", body ? body : "",
                    body ? strlen(body) : 0);
    free(body);
}

static const char *const headers[] = {
    "host", "authorization", "content-type", "cookie", "x-gatehouse-csrf", "last-event-id", NULL,
};

const struct gh_http_app gh_api_http = {
    .headers = headers,
    .max_body = GH_JMAP_MAX_SIZE_REQUEST,
    .handle = route,
    .refused = refused,
    .stream_end = gh_eventsource_end,
};

/*
 * http: the HTTP/1.1 front door. libhttp-parser reads one request at a time from c->in
 * (pausing at each message end, so pipelined requests are answered in order); the router
 * serves the JMAP API, the session, EventSource streams, cookie sign-in and the web page.
 * Failed credential checks are slowed per client address by a loop timer, never a sleep.
 */
#include "proto/http.h"

#include <ctype.h>
#include <http_parser.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/assets.h"
#include "core/log.h"
#include "net/conn.h"
#include "net/engine.h"
#include "objects/objects.h"
#include "proto/proto.h"

#define STREAM_IDLE_MS     (24u * 3600 * 1000) /* an EventSource stream may stay quiet a day */
#define STREAMS_PER_WORKER 4096                /* EventSource streams one worker serves at most */
#define PING_MIN_S         1
#define PING_MAX_S         3600
#define FAIL_FREE          3     /* failures per window before checks are slowed */
#define FAIL_WINDOW_MS     60000 /* failures older than this are forgotten */
#define FAIL_BASE_DELAY_MS 500
#define FAIL_MAX_DELAY_MS  4000
#define FAIL_SLOTS         512
#define SESSION_SLOTS      1024
#define SESSION_TOKEN_LEN  43                                /* 32 random bytes, base64url */
#define DRAIN_LIMIT        (4ull * GH_JMAP_MAX_SIZE_REQUEST) /* larger bodies: close at once */
#define AUTH_CHALLENGE     "Bearer realm=\"gatehouse\", Basic realm=\"gatehouse\""

/* Request headers the router reads; others are only counted against the limit. */
enum header {
    H_HOST,
    H_AUTHORIZATION,
    H_CONTENT_TYPE,
    H_COOKIE,
    H_CSRF,
    H_LAST_EVENT_ID,
    H_EXPECT,
    H_COUNT
};
static const char *const header_names[H_COUNT] = {"host",   "authorization",    "content-type",
                                                  "cookie", "x-gatehouse-csrf", "last-event-id",
                                                  "expect"};

struct stream;

/*
 * One connection's HTTP state (c->proto_state). Owner: the connection; http_release frees it.
 * The request fields hold the request being read or answered, and are reset after its answer.
 */
struct http {
    struct gh_conn *c;
    http_parser parser;
    /* the request */
    struct gh_buf url;
    char name[24];   /* the header name being read, lower-case; "" when not one we keep */
    size_t name_len; /* bytes of the name seen so far */
    bool in_value;
    int cur;             /* enum header being read, -1 for others */
    struct gh_buf value; /* value of the header being read, when kept */
    char *hdr[H_COUNT];  /* owned, NUL-terminated */
    size_t header_bytes; /* request line and headers, against GH_HTTP_HEADER_LIMIT */
    struct gh_buf body;  /* bounded by GH_JMAP_MAX_SIZE_REQUEST before it is read */
    int refuse;          /* a status decided while reading headers (400, 411, 413, 431) */
    bool message_done;   /* the parser paused at the end of a message */
    /* between requests */
    bool waiting;        /* a credential check is held back by the failure penalty */
    bool penalty_served; /* ... and has been: check now */
    struct gh_timer delay;
    struct gh_loop *loop; /* where delay and stream timers are armed */
    bool shutting;        /* the daemon stops: close after the answer in flight */
    uint64_t drain;       /* body bytes still to drop after a 413, then close */
    struct stream *stream;
};

enum next { NEXT, STOP, GONE }; /* go on with the next request; wait; the conn is closing */

/* ---- credentials ---- */

static gh_http_auth_fn authenticator = gh_objects_authenticate;
static uint32_t idle_ms = GH_HTTP_IDLE_MS; /* set once, before the first connection */

void gh_http_set_authenticator(gh_http_auth_fn fn)
{
    authenticator = fn ? fn : gh_objects_authenticate;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Failed checks per client address. Touched only when credentials fail or are checked
 * from an address with failures, never on the accept or read path. */
struct failure {
    char client[GH_ADDR_TEXT];
    uint64_t first_ms;
    unsigned count;
};
static struct failure failures[FAIL_SLOTS];
static pthread_mutex_t failures_lock = PTHREAD_MUTEX_INITIALIZER;

static struct failure *failure_find(const char *client, uint64_t now)
{
    for (size_t i = 0; i < FAIL_SLOTS; i++) {
        struct failure *f = &failures[i];
        if (f->count && !strcmp(f->client, client)) {
            if (now - f->first_ms > FAIL_WINDOW_MS)
                f->count = 0;
            return f->count ? f : NULL;
        }
    }
    return NULL;
}

unsigned gh_http_auth_penalty_ms(const char *client)
{
    pthread_mutex_lock(&failures_lock);
    struct failure *f = failure_find(client, now_ms());
    unsigned over = f && f->count >= FAIL_FREE ? f->count - FAIL_FREE : 0;
    bool slowed = f && f->count >= FAIL_FREE;
    pthread_mutex_unlock(&failures_lock);
    if (!slowed)
        return 0;
    unsigned ms = FAIL_BASE_DELAY_MS << (over > 4 ? 4 : over);
    return ms > FAIL_MAX_DELAY_MS ? FAIL_MAX_DELAY_MS : ms;
}

static void failure_record(const char *client)
{
    uint64_t now = now_ms();
    pthread_mutex_lock(&failures_lock);
    struct failure *f = failure_find(client, now);
    if (!f) {
        /* A free or expired slot, else the one whose window started first. */
        f = &failures[0];
        for (size_t i = 0; i < FAIL_SLOTS; i++) {
            struct failure *g = &failures[i];
            if (!g->count || now - g->first_ms > FAIL_WINDOW_MS) {
                f = g;
                break;
            }
            if (g->first_ms < f->first_ms)
                f = g;
        }
        snprintf(f->client, sizeof f->client, "%s", client);
        f->first_ms = now;
        f->count = 0;
    }
    f->count++;
    pthread_mutex_unlock(&failures_lock);
}

/* Cookie sessions of the web page: token -> the secret it signed in with, checked again on
 * every request so a removed API key stops working at once. In memory only. */
struct session {
    char token[SESSION_TOKEN_LEN + 1];
    char *secret; /* owned */
    uint64_t used_ms;
};
static struct session sessions[SESSION_SLOTS];
static pthread_mutex_t sessions_lock = PTHREAD_MUTEX_INITIALIZER;

static bool session_new(const char *secret, char token[SESSION_TOKEN_LEN + 1])
{
    unsigned char raw[32], b64[48];
    if (RAND_bytes(raw, sizeof raw) != 1)
        return false;
    EVP_EncodeBlock(b64, raw, sizeof raw);
    for (int i = 0; i < SESSION_TOKEN_LEN; i++)
        token[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : (char)b64[i];
    token[SESSION_TOKEN_LEN] = '\0';
    char *copy = strdup(secret);
    if (!copy)
        return false;
    pthread_mutex_lock(&sessions_lock);
    struct session *s = &sessions[0];
    for (size_t i = 0; i < SESSION_SLOTS; i++) {
        if (!sessions[i].secret) {
            s = &sessions[i];
            break;
        }
        if (sessions[i].used_ms < s->used_ms)
            s = &sessions[i];
    }
    free(s->secret);
    memcpy(s->token, token, sizeof s->token);
    s->secret = copy;
    s->used_ms = now_ms();
    pthread_mutex_unlock(&sessions_lock);
    return true;
}

/* A copy of the session's secret (caller frees), or NULL. */
static char *session_secret(const char *token)
{
    char *secret = NULL;
    pthread_mutex_lock(&sessions_lock);
    for (size_t i = 0; i < SESSION_SLOTS; i++) {
        struct session *s = &sessions[i];
        if (s->secret && !strcmp(s->token, token)) {
            s->used_ms = now_ms();
            secret = strdup(s->secret);
            break;
        }
    }
    pthread_mutex_unlock(&sessions_lock);
    return secret;
}

static void session_end(const char *token)
{
    pthread_mutex_lock(&sessions_lock);
    for (size_t i = 0; i < SESSION_SLOTS; i++) {
        struct session *s = &sessions[i];
        if (s->secret && !strcmp(s->token, token)) {
            free(s->secret);
            memset(s, 0, sizeof *s);
        }
    }
    pthread_mutex_unlock(&sessions_lock);
}

/* The value of our cookie in a Cookie header, copied into out. */
static bool cookie_token(const char *header, char out[SESSION_TOKEN_LEN + 1])
{
    const char *p = header;
    size_t n = strlen(GH_HTTP_COOKIE);
    while (p && *p) {
        while (*p == ' ' || *p == ';')
            p++;
        if (!strncmp(p, GH_HTTP_COOKIE, n) && p[n] == '=') {
            const char *v = p + n + 1;
            size_t len = strcspn(v, "; ");
            if (len != SESSION_TOKEN_LEN)
                return false;
            memcpy(out, v, len);
            out[len] = '\0';
            return true;
        }
        p = strchr(p, ';');
    }
    return false;
}

/* ---- responses ---- */

static const char *reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 307:
        return "Temporary Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Unknown";
    }
}

static bool keep_alive(struct http *h)
{
    return !h->shutting && !h->refuse && !h->parser.upgrade && http_should_keep_alive(&h->parser);
}

/* Writes one complete response. extra is "" or header lines each ending in CRLF. */
static void respond(struct http *h, int status, const char *type, const char *extra,
                    const char *body, size_t len, bool keep)
{
    struct gh_conn *c = h->c;
    bool head = h->parser.method == HTTP_HEAD;
    gh_conn_printf(c,
                   "HTTP/1.1 %d %s\r\n"
                   "%s%s%s"
                   "Content-Length: %zu\r\n"
                   "%s"
                   "X-Content-Type-Options: nosniff\r\n"
                   "Connection: %s\r\n\r\n",
                   status, reason(status), type ? "Content-Type: " : "", type ? type : "",
                   type ? "\r\n" : "", len, extra, keep ? "keep-alive" : "close");
    if (len && !head)
        gh_conn_write(c, body, len);
}

static void problem(struct http *h, int status, const char *type, const char *extra,
                    const char *detail, bool keep)
{
    char *body = gh_jmap_problem(status, type ? type : "about:blank", NULL, detail);
    respond(h, status, "application/problem+json", extra, body ? body : "", body ? strlen(body) : 0,
            keep);
    free(body);
}

static void unauthorized(struct http *h)
{
    problem(h, 401, NULL,
            "WWW-Authenticate: " AUTH_CHALLENGE "\r\n"
            "Cache-Control: no-store\r\n",
            "valid credentials are required: HTTP Basic (admin or an API key name, with its "
            "secret), a Bearer token, or the web page's session cookie",
            keep_alive(h));
}

/* ---- request helpers ---- */

static const char *hdr(struct http *h, enum header i)
{
    return h->hdr[i];
}

/* The path of the request target, copied (no query); false when it is not origin-form. */
static bool target(struct http *h, char *path, size_t cap, const char **query)
{
    /* the URL is kept NUL-terminated by on_headers_complete */
    const char *url = gh_buf_len(&h->url) ? gh_buf_head(&h->url) : "";
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
static void base_url(struct http *h, char *out, size_t cap)
{
    const char *scheme = h->c->tls_active ? "https" : "http";
    const char *host = hdr(h, H_HOST);
    if (host && valid_host(host)) {
        snprintf(out, cap, "%s://%s", scheme, host);
        return;
    }
    char local[GH_ADDR_TEXT] = "localhost";
    if (h->c->local.len)
        gh_sockaddr_format(&h->c->local, local);
    snprintf(out, cap, "%s://%s", scheme, local);
}

static const char *client_of(struct http *h)
{
    return h->c->peer_text[0] ? h->c->peer_text : "-";
}

/* ---- authentication ---- */

enum auth { AUTH_OK, AUTH_DONE, AUTH_WAIT }; /* AUTH_DONE: an error response was sent */

static void on_delay(struct gh_timer *t);

/* Holds the check back when this address has failed too often; false when it need not. */
static bool hold_back(struct http *h)
{
    if (h->penalty_served)
        return false;
    unsigned ms = gh_http_auth_penalty_ms(client_of(h));
    struct gh_loop *loop = gh_loop_current();
    if (!ms || !loop)
        return false;
    h->loop = loop;
    h->delay.fn = on_delay;
    h->waiting = true;
    gh_timer_set(loop, &h->delay, ms);
    return true;
}

static bool base64_decode(const char *in, char *out, size_t cap)
{
    size_t n = strlen(in);
    if (n % 4 || n / 4 * 3 >= cap)
        return false;
    int len = EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)in, (int)n);
    if (len < 0)
        return false;
    if (n >= 1 && in[n - 1] == '=')
        len--;
    if (n >= 2 && in[n - 2] == '=')
        len--;
    out[len] = '\0';
    return strlen(out) == (size_t)len;
}

/* Checks the Authorization header. */
static bool check_authorization(const char *value, struct gh_principal *who)
{
    while (*value == ' ')
        value++;
    if (!strncasecmp(value, "Bearer ", 7)) {
        const char *tok = value + 7;
        while (*tok == ' ')
            tok++;
        return *tok && authenticator(NULL, tok, who);
    }
    if (!strncasecmp(value, "Basic ", 6)) {
        const char *b64 = value + 6;
        while (*b64 == ' ')
            b64++;
        size_t cap = strlen(b64) + 4;
        char *plain = calloc(1, cap);
        bool ok = false;
        if (plain && base64_decode(b64, plain, cap)) {
            char *colon = strchr(plain, ':');
            if (colon) {
                *colon = '\0';
                ok = colon[1] && authenticator(plain, colon + 1, who);
            }
        }
        if (plain)
            memset(plain, 0, cap); /* the secret does not outlive the check */
        free(plain);
        return ok;
    }
    return false;
}

/*
 * Authenticates the request: Authorization, else the session cookie. csrf: a cookie alone
 * is not enough, the X-Gatehouse-Csrf header must come with it (a cross-site page cannot
 * send it without a CORS preflight, which is never granted).
 */
static enum auth authenticate(struct http *h, struct gh_principal *who, bool csrf)
{
    memset(who, 0, sizeof *who);
    const char *authz = hdr(h, H_AUTHORIZATION);
    char token[SESSION_TOKEN_LEN + 1];
    bool by_cookie = !authz && hdr(h, H_COOKIE) && cookie_token(hdr(h, H_COOKIE), token);
    if (!authz && !by_cookie) {
        unauthorized(h);
        return AUTH_DONE;
    }
    /* Session tokens are 256 random bits, nothing to guess: only Authorization checks are
     * slowed and counted. */
    if (authz && hold_back(h))
        return AUTH_WAIT;
    bool ok;
    if (authz) {
        ok = check_authorization(authz, who);
    } else {
        char *secret = session_secret(token);
        ok = secret && authenticator(NULL, secret, who);
        free(secret);
    }
    if (!ok) {
        gh_principal_clear(who);
        if (authz) {
            failure_record(client_of(h));
            gh_log(h->c->conf ? h->c->conf->name : NULL, client_of(h), "auth-failed",
                   "HTTP credentials refused");
        }
        unauthorized(h);
        return AUTH_DONE;
    }
    if (by_cookie && csrf && (!hdr(h, H_CSRF) || strcmp(hdr(h, H_CSRF), "1"))) {
        gh_principal_clear(who);
        problem(h, 403, NULL, "",
                "a request signed in by cookie needs the header X-Gatehouse-Csrf: 1",
                keep_alive(h));
        return AUTH_DONE;
    }
    return AUTH_OK;
}

/* ---- EventSource (RFC 8620 §7.3) ---- */

/* Owner: its connection's struct http; on the worker's thread-local list while open. */
struct stream {
    struct stream *prev, *next;
    struct http *h;
    json_t *types; /* type names asked for; NULL for "*" (owned) */
    json_t *told;  /* type -> state this client was last told (owned) */
    bool close_after_state;
    bool ended;      /* closeafter=state was met: nothing more is sent */
    unsigned ping_s; /* 0: no pings */
    struct gh_timer ping;
    struct gh_principal who;
};

static _Thread_local struct stream *streams; /* the streams served by this thread */
static _Thread_local unsigned nstreams;

/* x:NetworkListener is readable with sysNetworkListenerGet. */
static bool stream_may_see(struct stream *s, const char *type)
{
    if (s->types) {
        bool asked = false;
        size_t i;
        json_t *t;
        json_array_foreach(s->types, i, t)
        {
            if (!strcmp(json_string_value(t), type))
                asked = true;
        }
        if (!asked)
            return false;
    }
    if (s->who.admin)
        return true;
    char perm[160];
    snprintf(perm, sizeof perm, "sys%sGet", strncmp(type, "x:", 2) ? type : type + 2);
    return gh_principal_can(&s->who, perm);
}

/* The event id: a digest of every state this stream can see, so a reconnecting client's
 * Last-Event-ID tells whether it missed anything. */
static void stream_event_id(json_t *told, char out[20])
{
    char *text = json_dumps(told, JSON_COMPACT | JSON_SORT_KEYS);
    uint64_t x = 0xcbf29ce484222325ULL;
    for (const char *p = text ? text : ""; *p; p++)
        x = (x ^ (unsigned char)*p) * 0x100000001b3ULL;
    free(text);
    snprintf(out, 20, "e%016llx", (unsigned long long)x);
}

/* Writes a state event with changed; afterwards s may be gone when the conn closed. */
static void stream_send(struct stream *s, json_t *changed)
{
    struct gh_conn *c = s->h->c;
    bool close_after = s->close_after_state;
    char id[20];
    stream_event_id(s->told, id);
    json_t *ev =
        json_pack("{ss s{sO}}", "@type", "StateChange", "changed", GH_JMAP_ACCOUNT_ID, changed);
    char *data = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
    json_decref(ev);
    if (!data)
        return;
    if (close_after) {
        s->ended = true;
        if (s->h->loop)
            gh_timer_cancel(s->h->loop, &s->ping);
    } else if (s->ping_s && s->h->loop) {
        gh_timer_set(s->h->loop, &s->ping, (uint64_t)s->ping_s * 1000);
    }
    if (!c->closed)
        gh_conn_set_idle(c, STREAM_IDLE_MS);
    gh_conn_printf(c, "event: state\nid: %s\ndata: %s\n\n", id, data);
    free(data);
    if (close_after && !c->closed)
        gh_conn_close_after_flush(c);
}

/* Tells the stream what changed in states since it was last told. */
static void stream_update(struct stream *s, json_t *states)
{
    if (s->ended)
        return;
    json_t *changed = json_object(), *st;
    const char *type;
    json_object_foreach(states, type, st)
    {
        if (!stream_may_see(s, type))
            continue;
        const char *old = json_string_value(json_object_get(s->told, type));
        if (!old || strcmp(old, json_string_value(st))) {
            /* copies: the snapshot is shared by every worker's thread */
            json_object_set_new(changed, type, json_string(json_string_value(st)));
            json_object_set_new(s->told, type, json_string(json_string_value(st)));
        }
    }
    if (json_object_size(changed))
        stream_send(s, changed);
    json_decref(changed);
}

static void deliver(struct gh_loop *loop, void *arg)
{
    struct stream *s = streams;
    while (s) {
        struct stream *next = s->next;
        stream_update(s, arg);
        s = next;
    }
}

static void free_states(void *arg)
{
    json_decref(arg);
}

/* The push transport of the JMAP core: every worker tells its own streams. */
static void push_states(json_t *states)
{
    if (gh_engine_global)
        gh_engine_broadcast(gh_engine_global, deliver, states, free_states);
    else {
        deliver(NULL, states); /* no engine (unit tests): streams live on this thread */
        json_decref(states);
    }
}

static void on_ping(struct gh_timer *t)
{
    struct stream *s = gh_container_of(t, struct stream, ping);
    struct gh_conn *c = s->h->c;
    gh_timer_set(s->h->loop, &s->ping, (uint64_t)s->ping_s * 1000);
    gh_conn_set_idle(c, STREAM_IDLE_MS);
    gh_conn_printf(c, "event: ping\ndata: {\"interval\":%u}\n\n", s->ping_s);
}

static void stream_free(struct stream *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else if (streams == s)
        streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    nstreams--;
    if (s->h->loop)
        gh_timer_cancel(s->h->loop, &s->ping);
    json_decref(s->types);
    json_decref(s->told);
    gh_principal_clear(&s->who);
    free(s);
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* The percent-decoded value of key in a query string, into out; false when absent. */
static bool query_param(const char *query, const char *key, char *out, size_t cap)
{
    size_t klen = strlen(key);
    for (const char *p = query; p && *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL) {
        if (strncmp(p, key, klen) || p[klen] != '=')
            continue;
        const char *v = p + klen + 1;
        size_t o = 0;
        for (; *v && *v != '&' && o + 1 < cap; v++) {
            if (*v == '%' && hexval(v[1]) >= 0 && hexval(v[2]) >= 0) {
                out[o++] = (char)(hexval(v[1]) * 16 + hexval(v[2]));
                v += 2;
            } else {
                out[o++] = *v == '+' ? ' ' : *v;
            }
        }
        out[o] = '\0';
        return true;
    }
    return false;
}

static enum next open_stream(struct http *h, const char *query)
{
    char types[1024] = "*", closeafter[16] = "no", ping[16] = "0";
    query_param(query, "types", types, sizeof types);
    query_param(query, "closeafter", closeafter, sizeof closeafter);
    query_param(query, "ping", ping, sizeof ping);
    char *end;
    long ping_s = strtol(ping, &end, 10);
    bool ping_ok = *ping && !*end && ping_s >= 0 && isdigit((unsigned char)ping[0]);
    if ((strcmp(closeafter, "state") && strcmp(closeafter, "no")) || !ping_ok) {
        problem(h, 400, NULL, "",
                "closeafter must be \"state\" or \"no\", and ping a whole number of seconds",
                keep_alive(h));
        return NEXT;
    }
    struct gh_principal who;
    enum auth a = authenticate(h, &who, false);
    if (a != AUTH_OK)
        return a == AUTH_WAIT ? STOP : NEXT;

    struct stream *s = nstreams < STREAMS_PER_WORKER ? calloc(1, sizeof *s) : NULL;
    if (!s) {
        gh_principal_clear(&who);
        problem(h, 503, NULL, "Retry-After: 5\r\n", "too many event streams", false);
        return GONE;
    }
    s->h = h;
    s->who = who;
    s->close_after_state = !strcmp(closeafter, "state");
    s->ping_s = ping_s == 0           ? 0
                : ping_s < PING_MIN_S ? PING_MIN_S
                : ping_s > PING_MAX_S ? PING_MAX_S
                                      : (unsigned)ping_s;
    if (strcmp(types, "*")) {
        s->types = json_array();
        for (char *save = NULL, *t = strtok_r(types, ",", &save); t; t = strtok_r(NULL, ",", &save))
            json_array_append_new(s->types, json_string(t));
    }
    /* What the client knows: everything now, unless its Last-Event-ID says otherwise. */
    json_t *states = gh_jmap_states(), *st;
    const char *type;
    s->told = json_object();
    json_object_foreach(states, type, st)
    {
        if (stream_may_see(s, type))
            json_object_set(s->told, type, st);
    }
    json_decref(states);
    h->stream = s;
    h->loop = gh_loop_current();
    s->next = streams;
    if (streams)
        streams->prev = s;
    streams = s;
    nstreams++;

    struct gh_conn *c = h->c;
    gh_conn_set_idle(c, STREAM_IDLE_MS);
    s->ping.fn = on_ping;
    if (s->ping_s && h->loop)
        gh_timer_set(h->loop, &s->ping, (uint64_t)s->ping_s * 1000);
    const char *last = hdr(h, H_LAST_EVENT_ID);
    char id[20];
    stream_event_id(s->told, id);
    json_t *missed =
        last && strcmp(last, id) && json_object_size(s->told) ? json_deep_copy(s->told) : NULL;
    /* Writes come last: outside a protocol callback a failed write frees h and s. */
    gh_conn_printf(c, "HTTP/1.1 200 OK\r\n"
                      "Content-Type: text/event-stream\r\n"
                      "Cache-Control: no-cache, no-store\r\n"
                      "X-Accel-Buffering: no\r\n"
                      "Connection: close\r\n\r\n");
    if (missed && !c->closed)
        stream_send(s, missed); /* the client missed changes while away */
    json_decref(missed);
    return STOP;
}

/* ---- routes ---- */

static const char *body_of(struct http *h)
{
    return gh_buf_len(&h->body) ? gh_buf_head(&h->body) : "";
}

static void json_response(struct http *h, int status, json_t *body, const char *extra)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    if (!text) {
        problem(h, 500, NULL, "", "the response could not be built", keep_alive(h));
        return;
    }
    respond(h, status, "application/json", extra, text, strlen(text), keep_alive(h));
    free(text);
}

static enum next route_api(struct http *h)
{
    const char *ct = hdr(h, H_CONTENT_TYPE);
    struct gh_principal who;
    enum auth a = authenticate(h, &who, true);
    if (a != AUTH_OK)
        return a == AUTH_WAIT ? STOP : NEXT;
    if (ct && !media_is_json(ct)) {
        gh_principal_clear(&who);
        char *body = gh_jmap_problem(400, GH_JMAP_PROBLEM_NOT_JSON, NULL,
                                     "the request Content-Type must be application/json");
        respond(h, 400, "application/problem+json", "Cache-Control: no-store\r\n", body,
                body ? strlen(body) : 0, keep_alive(h));
        free(body);
        return NEXT;
    }
    char *out = NULL;
    bool is_problem = false;
    int status = gh_jmap_handle(body_of(h), gh_buf_len(&h->body), &who, &out, &is_problem);
    gh_principal_clear(&who);
    respond(h, status, is_problem ? "application/problem+json" : "application/json",
            status == 429 ? "Cache-Control: no-store\r\nRetry-After: 1\r\n"
                          : "Cache-Control: no-store\r\n",
            out ? out : "", out ? strlen(out) : 0, keep_alive(h));
    free(out);
    return NEXT;
}

static enum next route_json_get(struct http *h, json_t *(*produce)(void), bool csrf)
{
    struct gh_principal who;
    enum auth a = authenticate(h, &who, csrf);
    if (a != AUTH_OK)
        return a == AUTH_WAIT ? STOP : NEXT;
    gh_principal_clear(&who);
    json_t *body = produce();
    json_response(h, 200, body, "Cache-Control: no-store\r\n");
    json_decref(body);
    return NEXT;
}

static enum next route_session(struct http *h)
{
    struct gh_principal who;
    enum auth a = authenticate(h, &who, false);
    if (a != AUTH_OK)
        return a == AUTH_WAIT ? STOP : NEXT;
    char base[300];
    base_url(h, base, sizeof base);
    json_t *s = gh_jmap_session(&who, base);
    gh_principal_clear(&who);
    json_response(h, 200, s, "Cache-Control: no-cache, no-store, must-revalidate\r\n");
    json_decref(s);
    return NEXT;
}

static enum next sign_in(struct http *h)
{
    const char *ct = hdr(h, H_CONTENT_TYPE);
    if (!ct || !media_is_json(ct)) {
        problem(h, 415, NULL, "", "sign-in takes application/json: {\"secret\": \"...\"}",
                keep_alive(h));
        return NEXT;
    }
    json_t *req = json_loadb(body_of(h), gh_buf_len(&h->body), 0, NULL);
    const char *secret = json_string_value(json_object_get(req, "secret"));
    if (!secret || !*secret) {
        json_decref(req);
        problem(h, 400, NULL, "", "the body must be {\"secret\": \"...\"}", keep_alive(h));
        return NEXT;
    }
    if (hold_back(h)) {
        json_decref(req);
        return STOP;
    }
    struct gh_principal who = {0};
    char token[SESSION_TOKEN_LEN + 1];
    if (!authenticator(NULL, secret, &who)) {
        json_decref(req);
        gh_principal_clear(&who);
        failure_record(client_of(h));
        gh_log(h->c->conf ? h->c->conf->name : NULL, client_of(h), "auth-failed",
               "web sign-in refused");
        unauthorized(h);
        return NEXT;
    }
    gh_principal_clear(&who);
    bool made = session_new(secret, token);
    json_decref(req);
    if (!made) {
        problem(h, 503, NULL, "Retry-After: 5\r\n", "no session could be made", keep_alive(h));
        return NEXT;
    }
    char extra[200];
    snprintf(extra, sizeof extra,
             "Set-Cookie: " GH_HTTP_COOKIE "=%s; HttpOnly; SameSite=Strict; Path=/\r\n"
             "Cache-Control: no-store\r\n",
             token);
    respond(h, 204, NULL, extra, NULL, 0, keep_alive(h));
    return NEXT;
}

static enum next sign_out(struct http *h)
{
    char token[SESSION_TOKEN_LEN + 1];
    if (hdr(h, H_COOKIE) && cookie_token(hdr(h, H_COOKIE), token))
        session_end(token);
    respond(h, 204, NULL,
            "Set-Cookie: " GH_HTTP_COOKIE "=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0\r\n",
            NULL, 0, keep_alive(h));
    return NEXT;
}

static bool serve_asset(struct http *h, const char *path)
{
    if (!strcmp(path, "/"))
        path = "/index.html";
    for (const struct gh_asset *a = gh_assets; a->path; a++) {
        if (strcmp(a->path, path))
            continue;
        respond(h, 200, a->mime,
                "Cache-Control: no-cache\r\n"
                "X-Frame-Options: DENY\r\n"
                "Referrer-Policy: no-referrer\r\n",
                (const char *)a->data, a->len, keep_alive(h));
        return true;
    }
    return false;
}

static void not_allowed(struct http *h, const char *allow)
{
    char extra[80];
    snprintf(extra, sizeof extra, "Allow: %s\r\n", allow);
    problem(h, 405, NULL, extra, "this resource does not take that method", keep_alive(h));
}

static bool starts_with(const char *s, const char *prefix)
{
    return !strncmp(s, prefix, strlen(prefix));
}

static enum next route(struct http *h)
{
    char path[1024];
    const char *query;
    int m = h->parser.method;
    bool get = m == HTTP_GET || m == HTTP_HEAD;
    if (m == HTTP_OPTIONS) {
        /* CORS preflights get no Access-Control-Allow-* headers: cross-site is never allowed */
        respond(h, 204, NULL, "Allow: GET, HEAD, POST, DELETE, OPTIONS\r\n", NULL, 0,
                keep_alive(h));
        return NEXT;
    }
    if (!target(h, path, sizeof path, &query)) {
        problem(h, 400, NULL, "", "the request target must be an absolute path", false);
        return GONE;
    }
    if (!strcmp(path, "/api") || !strcmp(path, "/jmap") || !strcmp(path, "/jmap/")) {
        if (m == HTTP_POST)
            return route_api(h);
        not_allowed(h, "POST, OPTIONS");
        return NEXT;
    }
    if (!strcmp(path, "/jmap/session")) {
        if (get)
            return route_session(h);
        not_allowed(h, "GET, HEAD, OPTIONS");
        return NEXT;
    }
    if (!strcmp(path, "/.well-known/jmap")) {
        if (!get) {
            not_allowed(h, "GET, HEAD, OPTIONS");
            return NEXT;
        }
        respond(h, 307, NULL,
                "Location: /jmap/session\r\n"
                "Cache-Control: no-cache, no-store, must-revalidate\r\n",
                NULL, 0, keep_alive(h));
        return NEXT;
    }
    if (!strcmp(path, "/jmap/eventsource/") || !strcmp(path, "/jmap/eventsource")) {
        if (m == HTTP_GET)
            return open_stream(h, query);
        not_allowed(h, "GET, OPTIONS");
        return NEXT;
    }
    if (!strcmp(path, "/api/schema") || !strcmp(path, "/api/status")) {
        if (get)
            return route_json_get(
                h, !strcmp(path, "/api/schema") ? gh_objects_schema : gh_objects_listener_status,
                true);
        not_allowed(h, "GET, HEAD, OPTIONS");
        return NEXT;
    }
    if (!strcmp(path, "/auth/session")) {
        if (m == HTTP_POST)
            return sign_in(h);
        if (m == HTTP_DELETE)
            return sign_out(h);
        not_allowed(h, "POST, DELETE, OPTIONS");
        return NEXT;
    }
    if (starts_with(path, "/jmap/download/") || starts_with(path, "/jmap/upload/")) {
        struct gh_principal who;
        enum auth a = authenticate(h, &who, true);
        if (a != AUTH_OK)
            return a == AUTH_WAIT ? STOP : NEXT;
        gh_principal_clear(&who);
        problem(h, 404, NULL, "", "Gatehouse keeps no blobs: upload and download are not offered",
                keep_alive(h));
        return NEXT;
    }
    if (get && serve_asset(h, path))
        return NEXT;
    problem(h, 404, NULL, "", "no such resource", keep_alive(h));
    return NEXT;
}

/* ---- parser callbacks ---- */

static int refuse(struct http *h, int status)
{
    if (!h->refuse)
        h->refuse = status;
    return -1;
}

static int count_header_bytes(struct http *h, size_t n)
{
    h->header_bytes += n;
    return h->header_bytes > GH_HTTP_HEADER_LIMIT ? refuse(h, 431) : 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct http *h = p->data;
    if (count_header_bytes(h, n))
        return -1;
    return !n || gh_buf_append(&h->url, at, n) ? 0 : refuse(h, 503);
}

/* Stores the header just read, when it is one we keep. */
static int end_header(struct http *h)
{
    if (h->cur >= 0) {
        if (h->hdr[h->cur])
            return refuse(h, 400); /* a repeated Host, Authorization, ... is ambiguous */
        size_t n = gh_buf_len(&h->value);
        char *v = malloc(n + 1);
        if (!v)
            return refuse(h, 503);
        if (n)
            memcpy(v, gh_buf_head(&h->value), n);
        v[n] = '\0';
        while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
            v[--n] = '\0';
        if (strlen(v) != n) {
            free(v);
            return refuse(h, 400);
        }
        h->hdr[h->cur] = v;
    }
    gh_buf_clear(&h->value);
    h->cur = -1;
    h->name_len = 0;
    h->in_value = false;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct http *h = p->data;
    if (count_header_bytes(h, n))
        return -1;
    if (h->in_value && end_header(h))
        return -1;
    for (size_t i = 0; i < n; i++, h->name_len++) {
        if (h->name_len < sizeof h->name - 1)
            h->name[h->name_len] = (char)tolower((unsigned char)at[i]);
    }
    h->name[h->name_len < sizeof h->name ? h->name_len : sizeof h->name - 1] = '\0';
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct http *h = p->data;
    if (count_header_bytes(h, n))
        return -1;
    if (!h->in_value) {
        h->in_value = true;
        h->cur = -1;
        for (int i = 0; i < H_COUNT; i++) {
            if (h->name_len < sizeof h->name && !strcmp(h->name, header_names[i]))
                h->cur = i;
        }
    }
    if (h->cur >= 0 && n && !gh_buf_append(&h->value, at, n))
        return refuse(h, 503);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct http *h = p->data;
    if (h->in_value && end_header(h))
        return -1;
    if (!gh_buf_append(&h->url, "", 1) ||
        memchr(gh_buf_head(&h->url), '\0', gh_buf_len(&h->url) - 1))
        return refuse(h, 400);
    if (p->uses_transfer_encoding || (p->flags & F_CHUNKED))
        return refuse(h, 411);
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > GH_JMAP_MAX_SIZE_REQUEST)
        return refuse(h, 413);
    if (hdr(h, H_EXPECT) && !strcasecmp(hdr(h, H_EXPECT), "100-continue") &&
        (p->flags & F_CONTENTLENGTH) && p->content_length > 0)
        gh_conn_write(h->c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct http *h = p->data;
    return !n || gh_buf_append(&h->body, at, n) ? 0 : refuse(h, 503);
}

static int on_message_complete(http_parser *p)
{
    struct http *h = p->data;
    h->message_done = true;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- the connection ---- */

static void reset_request(struct http *h)
{
    gh_buf_clear(&h->url);
    gh_buf_release_if_empty(&h->url);
    gh_buf_clear(&h->value);
    gh_buf_release_if_empty(&h->value);
    gh_buf_clear(&h->body);
    gh_buf_release_if_empty(&h->body);
    for (int i = 0; i < H_COUNT; i++) {
        free(h->hdr[i]);
        h->hdr[i] = NULL;
    }
    h->cur = -1;
    h->name_len = 0;
    h->in_value = false;
    h->header_bytes = 0;
    h->penalty_served = false;
}

/* Answers a request that could not be read to its end, then closes. */
static void refuse_request(struct http *h, int status)
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
    h->parser.method = HTTP_GET; /* never treat it as HEAD: the body is the explanation */
    respond(h, status, "application/problem+json", "", body ? body : "", body ? strlen(body) : 0,
            false);
    free(body);
    /* A client that sends its body before reading the answer would see its writes fail
     * and miss the 413: read and drop a body of reasonable size first, then close. */
    if (status == 413 && h->parser.content_length <= DRAIN_LIMIT) {
        h->drain = h->parser.content_length;
        return;
    }
    gh_conn_close_after_flush(h->c);
}

static enum next handle_request(struct http *h)
{
    struct gh_conn *c = h->c;
    enum next n = route(h);
    /* Outside a protocol callback (a held-back answer) a failed write closes the connection
     * at once, and h with it; c itself lives until the loop's deferred work runs. */
    if (c->closed)
        return GONE;
    if (n == STOP)
        return STOP;
    h->waiting = false;
    if (n == GONE || !keep_alive(h)) {
        gh_conn_close_after_flush(h->c);
        return GONE;
    }
    reset_request(h);
    gh_conn_set_idle(h->c, idle_ms);
    return NEXT;
}

/* Reads and answers every complete request in c->in, in order. */
static void process(struct http *h)
{
    struct gh_conn *c = h->c;
    if (h->drain) {
        size_t n = gh_buf_len(&c->in) < h->drain ? gh_buf_len(&c->in) : (size_t)h->drain;
        gh_conn_consume(c, n);
        h->drain -= n;
        if (!h->drain)
            gh_conn_close_after_flush(c);
        return;
    }
    while (!c->closed && !h->waiting) {
        if (h->stream) {
            gh_conn_consume(c, gh_buf_len(&c->in)); /* a stream takes no more requests */
            return;
        }
        if (!gh_buf_len(&c->in))
            return;
        size_t used = http_parser_execute(&h->parser, &parser_settings, gh_buf_head(&c->in),
                                          gh_buf_len(&c->in));
        gh_conn_consume(c, used);
        if (h->message_done) {
            h->message_done = false;
            http_parser_pause(&h->parser, 0);
            if (handle_request(h) != NEXT)
                return;
            continue;
        }
        if (h->refuse || HTTP_PARSER_ERRNO(&h->parser) != HPE_OK) {
            refuse_request(h, h->refuse ? h->refuse : 400);
            return;
        }
    }
}

static void on_delay(struct gh_timer *t)
{
    struct http *h = gh_container_of(t, struct http, delay);
    h->penalty_served = true;
    h->waiting = false;
    if (handle_request(h) == NEXT)
        process(h);
}

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static void init_http(void)
{
    gh_jmap_set_push(push_states);
    /* GATEHOUSE_HTTP_IDLE_MS shortens (or lengthens) the wait for a request, e.g. in tests */
    const char *env = getenv("GATEHOUSE_HTTP_IDLE_MS");
    long ms = env ? strtol(env, NULL, 10) : 0;
    if (ms >= 100 && ms <= 3600000)
        idle_ms = (uint32_t)ms;
}

static void http_open(struct gh_conn *c)
{
    pthread_once(&init_once, init_http);
    struct http *h = calloc(1, sizeof *h);
    if (!h) {
        gh_conn_close(c);
        return;
    }
    h->c = c;
    h->cur = -1;
    http_parser_init(&h->parser, HTTP_REQUEST);
    h->parser.data = h;
    c->proto_state = h;
    gh_conn_set_idle(c, idle_ms);
}

static void http_input(struct gh_conn *c)
{
    struct http *h = c->proto_state;
    if (h)
        process(h);
}

static void http_idle(struct gh_conn *c)
{
    gh_conn_close(c);
}

static void http_shutdown(struct gh_conn *c)
{
    struct http *h = c->proto_state;
    if (h && h->waiting) {
        h->shutting = true; /* the held-back answer goes out, then the connection closes */
        return;
    }
    gh_conn_close_after_flush(c);
}

static void http_release(struct gh_conn *c)
{
    struct http *h = c->proto_state;
    if (!h)
        return;
    if (h->stream)
        stream_free(h->stream);
    if (h->loop)
        gh_timer_cancel(h->loop, &h->delay);
    reset_request(h);
    gh_buf_free(&h->url);
    gh_buf_free(&h->value);
    gh_buf_free(&h->body);
    free(h);
    c->proto_state = NULL;
}

#define OVER_LIMIT_BODY                                                                            \
    "{\"type\":\"about:blank\",\"status\":503,\"title\":\"Service Unavailable\","                  \
    "\"detail\":\"too many connections\"}"

const struct gh_proto gh_proto_http = {
    .name = "http",
    .open = http_open,
    .input = http_input,
    .idle = http_idle,
    .shutdown = http_shutdown,
    .release = http_release,
    .over_limit = "HTTP/1.1 503 Service Unavailable\r\n"
                  "Content-Type: application/problem+json\r\n"
                  "Retry-After: 5\r\n"
                  "Connection: close\r\n"
                  "Content-Length: 97\r\n\r\n" OVER_LIMIT_BODY,
};

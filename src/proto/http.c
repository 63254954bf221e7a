/*
 * http: the HTTP/1.1 server. libhttp-parser reads one request at a time from c->in (pausing
 * at each message end, so pipelined requests are answered in order); each complete request
 * goes to the application registered by a higher layer, which answers it, holds it back for
 * a while (a loop timer, never a sleep) or turns the connection into a stream.
 */
#include "proto/http.h"

#include <ctype.h>
#include <http_parser.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/loop.h"
#include "metrics/metrics.h"
#include "proto/proto.h"

#define H_EXPECT          0 /* the one header the server reads itself; the application's follow */
#define H_COUNT           (GH_HTTP_MAX_HEADERS + 1)
#define NAME_SIZE         24
#define REFUSED_LINGER_MS 5000 /* a refused request's input is dropped this long at most */

/*
 * One connection's HTTP state (c->proto_state). Owner: the connection; http_release frees it
 * (and gives a stream to the application's stream_end). The request fields hold the request
 * being read or answered, and are reset after its answer.
 */
struct http {
    struct gh_conn *c;
    http_parser parser;
    struct gh_http_req req; /* what the application sees of the request */
    /* the request */
    struct gh_buf url;
    char name[NAME_SIZE]; /* the header name being read, lower-case */
    size_t name_len;      /* bytes of the name seen so far */
    bool in_value;
    int cur;             /* index in hdr of the header being read, -1 for others */
    struct gh_buf value; /* value of the header being read, when kept */
    char *hdr[H_COUNT];  /* owned, NUL-terminated */
    size_t header_bytes; /* raw bytes of the request head so far, up to GH_HTTP_HEADER_LIMIT */
    bool head_done;      /* the request head ended (on_headers_complete) */
    struct gh_buf body;  /* bounded by app->max_body before it is read */
    int refuse;          /* a status decided while reading headers (400, 411, 413, 431) */
    bool message_done;   /* the parser paused at the end of a message */
    /* between requests */
    bool waiting; /* the application holds the request back (gh_http_hold) */
    struct gh_timer delay;
    struct gh_loop *loop; /* where delay is armed */
    bool shutting;        /* the daemon stops: close after the answer in flight */
    void *stream;         /* the application's, after gh_http_stream */
};

enum next { NEXT, STOP, GONE }; /* go on with the next request; wait; the conn is closing */

static const struct gh_http_app *app;      /* set once, before the first connection */
static uint32_t idle_ms = GH_HTTP_IDLE_MS; /* set once, before the first connection */

void gh_http_set_handler(const struct gh_http_app *a)
{
    app = a;
}

static uint64_t max_body(void)
{
    return app ? app->max_body : 0;
}

/* The index in struct http's hdr of a header name, -1 when it is not kept. */
static int header_index(const char *name)
{
    if (!strcmp(name, "expect"))
        return H_EXPECT;
    for (int i = 0; app && app->headers && app->headers[i] && i < GH_HTTP_MAX_HEADERS; i++) {
        if (!strcmp(name, app->headers[i]))
            return H_EXPECT + 1 + i;
    }
    return -1;
}

const char *gh_http_header(const struct gh_http_req *r, const char *name)
{
    struct http *h = gh_container_of(r, struct http, req);
    int i = header_index(name);
    return i > H_EXPECT ? h->hdr[i] : NULL;
}

/* ---- responses ---- */

const char *gh_http_reason(int status)
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

void gh_http_respond(struct gh_http_req *r, int status, const char *type, const char *extra,
                     const char *body, size_t len)
{
    struct http *h = gh_container_of(r, struct http, req);
    struct gh_conn *c = h->c;
    bool head = h->parser.method == HTTP_HEAD;
    gh_metrics_api_request(status);
    gh_conn_printf(c,
                   "HTTP/1.1 %d %s\r\n"
                   "%s%s%s"
                   "Content-Length: %zu\r\n"
                   "%s"
                   "X-Content-Type-Options: nosniff\r\n"
                   "Connection: %s\r\n\r\n",
                   status, gh_http_reason(status), type ? "Content-Type: " : "", type ? type : "",
                   type ? "\r\n" : "", len, extra,
                   !r->close && keep_alive(h) ? "keep-alive" : "close");
    if (len && !head)
        gh_conn_write(c, body, len);
}

static void on_delay(struct gh_timer *t);

bool gh_http_hold(struct gh_http_req *r, unsigned ms)
{
    struct http *h = gh_container_of(r, struct http, req);
    struct gh_loop *loop = gh_loop_current();
    if (!ms || !loop)
        return false;
    /* the loop's clock stopped when this batch of events began: count from now */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    uint64_t behind = now > gh_loop_now(loop) ? now - gh_loop_now(loop) : 0;
    h->loop = loop;
    h->delay.fn = on_delay;
    h->waiting = true;
    gh_timer_set(loop, &h->delay, ms + behind);
    return true;
}

void gh_http_stream(struct gh_http_req *r, void *stream, const char *type, const char *extra)
{
    struct http *h = gh_container_of(r, struct http, req);
    /* the stream is the connection's before the write: a failed one frees it with h */
    h->stream = stream;
    gh_conn_printf(h->c,
                   "HTTP/1.1 200 OK\r\n"
                   "Content-Type: %s\r\n"
                   "%s"
                   "Connection: close\r\n\r\n",
                   type, extra);
}

/* ---- parser callbacks ---- */

static int refuse(struct http *h, int status)
{
    if (!h->refuse)
        h->refuse = status;
    return -1;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct http *h = p->data;
    /* a request line without a version (HTTP/0.9) ends the URL with http_minor 9 */
    if (p->http_major == 0 && p->http_minor == 9)
        return refuse(h, 400);
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
    if (h->in_value && end_header(h))
        return -1;
    for (size_t i = 0; i < n; i++, h->name_len++) {
        /* libhttp-parser takes "Content-Length : 5" as another header: refuse whitespace in
         * a name (RFC 9112 §5.1), or the body would be read as the next request */
        if (at[i] == ' ' || at[i] == '\t')
            return refuse(h, 400);
        if (h->name_len < sizeof h->name - 1)
            h->name[h->name_len] = (char)tolower((unsigned char)at[i]);
    }
    h->name[h->name_len < sizeof h->name ? h->name_len : sizeof h->name - 1] = '\0';
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct http *h = p->data;
    if (!h->in_value) {
        h->in_value = true;
        h->cur = -1;
        h->cur = header_index(h->name_len < sizeof h->name ? h->name : "");
    }
    if (h->cur >= 0 && n && !gh_buf_append(&h->value, at, n))
        return refuse(h, 503);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct http *h = p->data;
    h->head_done = true;
    if (h->in_value && end_header(h))
        return -1;
    if (p->http_major != 1)
        return refuse(h, 400); /* HTTP/1.x only: no HTTP/0.9 form, no other versions */
    if (!gh_buf_append(&h->url, "", 1) ||
        memchr(gh_buf_head(&h->url), '\0', gh_buf_len(&h->url) - 1))
        return refuse(h, 400);
    if (p->uses_transfer_encoding || (p->flags & F_CHUNKED))
        return refuse(h, 411);
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > max_body())
        return refuse(h, 413);
    const char *expect = h->hdr[H_EXPECT];
    if (expect && !strcasecmp(expect, "100-continue") && (p->flags & F_CONTENTLENGTH) &&
        p->content_length > 0)
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
    h->head_done = false;
    h->req = (struct gh_http_req){.c = h->c};
}

/* Fills in what the application sees of the request just read. */
static void expose_request(struct http *h)
{
    struct gh_http_req *r = &h->req;
    r->c = h->c;
    r->method = http_method_str(h->parser.method);
    /* the URL is kept NUL-terminated by on_headers_complete */
    r->target = gh_buf_len(&h->url) ? gh_buf_head(&h->url) : "";
    r->body = gh_buf_len(&h->body) ? gh_buf_head(&h->body) : "";
    r->body_len = gh_buf_len(&h->body);
}

/* Answers a request that could not be read to its end, then closes. */
static void refuse_request(struct http *h, int status)
{
    h->parser.method = HTTP_GET; /* never treat it as HEAD: the body is the explanation */
    expose_request(h);
    h->req.close = true;
    if (app && app->refused)
        app->refused(&h->req, status);
    else
        gh_http_respond(&h->req, status, NULL, "", NULL, 0);
    /* The answer goes out at once and the client sees the connection end; what it still
     * sends (a refused body) is read and dropped for a while, so that it reads the answer
     * rather than a reset. */
    gh_conn_close_lingering(h->c, REFUSED_LINGER_MS);
}

static enum next handle_request(struct http *h)
{
    struct gh_conn *c = h->c;
    enum gh_http_next n = GH_HTTP_ANSWERED;
    expose_request(h);
    if (!h->req.held)
        gh_conn_http_path(c, h->req.target);
    if (app)
        n = app->handle(&h->req);
    else
        gh_http_respond(&h->req, 404, NULL, "", NULL, 0);
    /* Outside a protocol callback (a held-back answer) a failed write closes the connection
     * at once, and h with it; c itself lives until the loop's deferred work runs. */
    if (c->closed)
        return GONE;
    if (n != GH_HTTP_ANSWERED)
        return STOP;
    h->waiting = false;
    if (h->req.close || !keep_alive(h)) {
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
    while (!c->closed && !h->waiting && c->phase == GH_PHASE_PROTOCOL) {
        if (h->stream) {
            gh_conn_consume(c, gh_buf_len(&c->in)); /* a stream takes no more requests */
            return;
        }
        if (!gh_buf_len(&c->in))
            return;
        /* the head is fed no further than its limit, so its size is counted exactly */
        size_t len = gh_buf_len(&c->in);
        if (!h->head_done && len > GH_HTTP_HEADER_LIMIT - h->header_bytes)
            len = GH_HTTP_HEADER_LIMIT - h->header_bytes;
        size_t used =
            len ? http_parser_execute(&h->parser, &parser_settings, gh_buf_head(&c->in), len) : 0;
        gh_conn_consume(c, used);
        if (!h->head_done) {
            h->header_bytes += used;
            if (h->header_bytes >= GH_HTTP_HEADER_LIMIT && !h->refuse)
                h->refuse = 431;
        }
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
    h->req.held = true;
    h->waiting = false;
    if (handle_request(h) == NEXT)
        process(h);
}

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static void init_http(void)
{
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
    h->req.c = c;
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
    if (h->stream && app && app->stream_end)
        app->stream_end(h->stream);
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
    .unavailable = "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
};

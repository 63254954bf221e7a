/*
 * http: the HTTP/1.1 server of `http` listeners (gh_proto_http in proto.h). It reads requests,
 * enforces the limits and answers in order; what a request means is up to the application
 * a higher layer registers with gh_http_set_handler (the management API, jmap/http_api.h).
 */
#ifndef GH_HTTP_H
#define GH_HTTP_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/conn.h"

#define GH_HTTP_HEADER_LIMIT (64 * 1024) /* request line and header block */
#define GH_HTTP_IDLE_MS      60000       /* a whole request must arrive within this */
#define GH_HTTP_MAX_HEADERS  15          /* request headers an application may read */

/*
 * One complete request, as the application sees it. Owner: the server. Outside a protocol
 * callback (a held request handled again) a failed write closes the connection at once and
 * frees r (and a stream given to gh_http_stream): keep r->c, and after writing touch
 * nothing but c->closed. c itself lives until the loop's deferred work runs.
 */
struct gh_http_req {
    struct gh_conn *c;  /* peer, local address, TLS, listener settings */
    const char *method; /* "GET", "HEAD", "POST", ... */
    const char *target; /* the request target as sent, NUL-terminated */
    const char *body;   /* "" when there is none */
    size_t body_len;
    bool held;  /* handled again after gh_http_hold */
    bool close; /* set by the application before answering: close after this answer */
};

/* What the server does once the application has handled a request. */
enum gh_http_next {
    GH_HTTP_ANSWERED, /* the answer is written: read the next request (or close) */
    GH_HTTP_HELD,     /* gh_http_hold was called: the request is handled again later */
    GH_HTTP_STREAM,   /* gh_http_stream was called: the answer goes on, no more requests */
};

struct gh_http_app {
    /* Lower-case names (at most 23 characters, NULL-terminated list) of the request headers
     * the application reads; the others are only counted against GH_HTTP_HEADER_LIMIT. */
    const char *const *headers;
    /* Bodies larger than this are refused (413) from their Content-Length, before they are
     * read; bodies of up to four times this are read and dropped first. */
    uint64_t max_body;
    /* Answers one request with gh_http_respond, or holds it, or opens a stream. */
    enum gh_http_next (*handle)(struct gh_http_req *r);
    /* Writes the answer to a request that could not be read: 400 (malformed), 411 (chunked),
     * 413 (over max_body), 431 (headers over the limit) or 503 (out of memory). */
    void (*refused)(struct gh_http_req *r, int status);
    /* The connection of a stream ends: frees what gh_http_stream was given. */
    void (*stream_end)(void *stream);
};

/* Registers the application every `http` listener serves; once, before the first
 * connection. Without one, every request gets 404. */
void gh_http_set_handler(const struct gh_http_app *app);

/* The value of a request header named in app->headers, or NULL when absent. */
const char *gh_http_header(const struct gh_http_req *r, const char *name);

/* Writes one complete response (no body for HEAD). type may be NULL; extra is "" or header
 * lines each ending in CRLF. Connection: keep-alive unless r->close, the client or a stop
 * of the daemon says otherwise. */
void gh_http_respond(struct gh_http_req *r, int status, const char *type, const char *extra,
                     const char *body, size_t len);

/* Holds the request back for ms (a loop timer, never a sleep); the handler then returns
 * GH_HTTP_HELD and is called again with r->held set. False, and nothing held, when ms is 0
 * or no event loop runs on this thread. */
bool gh_http_hold(struct gh_http_req *r, unsigned ms);

/* Writes the head of an open-ended 200 response (Connection: close, no Content-Length) and
 * hands the connection to stream, which the application then writes to through r->c. The
 * server reads no more requests and gives stream to app->stream_end when the connection
 * ends. */
void gh_http_stream(struct gh_http_req *r, void *stream, const char *type, const char *extra);

/* The standard reason phrase of an HTTP status ("Not Found"), or "Unknown". */
const char *gh_http_reason(int status);

#endif

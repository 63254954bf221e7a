/*
 * conn: one client connection on a worker's loop, from accept through PROXY header,
 * TLS and the protocol's dialogue to close. This is the API protocols are written against.
 */
#ifndef GH_CONN_H
#define GH_CONN_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/loop.h"
#include "net/addr.h"
#include "net/listener-t.h"

struct gh_proto;
struct gh_worker;
struct gh_listener_rt;
struct gh_relay;
struct gh_metrics_listener;
typedef struct ssl_st SSL;

enum gh_conn_phase {
    GH_PHASE_PROXY,     /* waiting for the PROXY header from a trusted peer */
    GH_PHASE_HANDSHAKE, /* TLS handshake running (implicit, or after STARTTLS) */
    GH_PHASE_PROTOCOL,  /* the protocol owns the input */
    GH_PHASE_RELAY,     /* handed off: bytes flow to and from a destination */
    GH_PHASE_CLOSING,   /* flushing output, then close */
};

/* How a session ended, for the session log. Unset ends as clientClosed (or handedOff once
 * relayed); the first reason set wins. */
enum gh_session_end {
    GH_END_UNSET,
    GH_END_HANDED_OFF,
    GH_END_CLIENT_CLOSED,
    GH_END_TIMEOUT,
    GH_END_REFUSED,
    GH_END_BLOCKED,
    GH_END_PROTOCOL_ERROR,
    GH_END_SHUTDOWN,
};

/*
 * Owner: the worker that accepted it. Everything a conn points to that is not
 * shared (buffers, ssl, proto_state) is freed with it.
 */
struct gh_conn {
    struct gh_io io;
    struct gh_deferred free_later;
    struct gh_worker *worker;
    struct gh_listener_rt *listener; /* counts live connections; shared */
    struct gh_listener_conf *conf;   /* settings this connection was accepted under (a ref) */
    const struct gh_proto *proto;
    void *proto_state;           /* the protocol's own, freed by proto->release */
    struct gh_conn *prev, *next; /* the worker's list of live connections */

    enum gh_conn_phase phase;
    struct gh_sockaddr peer;      /* the client: the PROXY source when there was one */
    struct gh_sockaddr tcp_peer;  /* the TCP peer (a load balancer, with PROXY) */
    struct gh_sockaddr local;     /* len 0 until gh_conn_fill_local */
    char peer_text[GH_ADDR_TEXT]; /* peer address without port, for logs and replies */
    char *proxy_unique_id;        /* PROXY v2 unique id TLV, for logs; NULL when none */

    struct gh_relay *relay;              /* the hand-off to a destination, once there is one */
    struct gh_metrics_listener *metrics; /* the listener's counters (borrowed, may be NULL) */
    char *login_user;                    /* who logged in at the front door; owned, or NULL */
    uint64_t started_ms;                 /* the worker loop's clock at accept */
    uint64_t bytes_in, bytes_out;        /* with the client, as sent on the wire */
    enum gh_session_end end;
    SSL *ssl;
    bool tls_active;    /* TLS terminated here, or announced by the PROXY SSL TLV */
    bool tls_done_once; /* a STARTTLS upgrade already happened */
    bool counted;       /* holds a slot of the listener's maxConnections */
    bool want_write;
    bool closed;

    struct gh_buf in, out;
    struct gh_timer deadline; /* PROXY / handshake / idle deadline */
};

/* Protocols take no more commands while this much output waits for a client that is not
 * reading; the connection hands them the input again once the output has drained. */
#define GH_CONN_OUT_HIGH (64 * 1024)

/* Queues bytes for the client and arranges for them to be sent. */
void gh_conn_write(struct gh_conn *c, const void *data, size_t len);
void gh_conn_printf(struct gh_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Sends what is queued, then closes. Input is ignored from now on. */
void gh_conn_close_after_flush(struct gh_conn *c);
/* Sends what is queued, then ends the output (FIN) while input is read and dropped until
 * the client closes or ms pass: a client still sending (a refused body) gets to read the
 * answer instead of a reset. */
void gh_conn_close_lingering(struct gh_conn *c, uint32_t ms);
/* Closes at once; what is queued is dropped. */
void gh_conn_close(struct gh_conn *c);

/* The protocol may offer its TLS upgrade: the listener has TLS, is not implicit, and
 * this connection is not yet encrypted (here or at the load balancer). */
bool gh_conn_can_starttls(const struct gh_conn *c);
/* After the protocol queued its "ready" reply: flushes it, discards any input already
 * received (STARTTLS command injection), then runs the handshake under tlsTimeout.
 * On success proto->tls_ready is called; on failure or time-out the connection closes. */
void gh_conn_starttls(struct gh_conn *c);

/* Fills c->local (the address the client connected to); a system call, so only done
 * where it is needed (HTTP session URLs, PROXY headers to a destination). */
void gh_conn_fill_local(struct gh_conn *c);

/* (Re)arms the idle deadline; when it fires, proto->idle is called (or the conn closes). */
void gh_conn_set_idle(struct gh_conn *c, uint32_t ms);

/* HTTP: the path a client asked for; one matching x:Security.scanBanPaths bans it. */
void gh_conn_http_path(struct gh_conn *c, const char *path);

/* The host name replies carry: x:SystemSettings.defaultHostname, else the system's. */
const char *gh_conn_hostname(const struct gh_conn *c);

/* Records why the session is ending (the first reason set is kept). */
static inline void gh_conn_set_end(struct gh_conn *c, enum gh_session_end end)
{
    if (c->end == GH_END_UNSET)
        c->end = end;
}

/* An event line of this connection: its listener, its client (the PROXY-given one), the
 * TCP peer when PROXY gave another, and the balancer's unique id when it sent one. */
void gh_conn_log(const struct gh_conn *c, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Called by the protocol when it has used bytes from c->in. */
static inline void gh_conn_consume(struct gh_conn *c, size_t n)
{
    gh_buf_consume(&c->in, n);
}

#endif

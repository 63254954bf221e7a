/*
 * conn: the life of a client connection. Order of stages: PROXY header (trusted peers
 * only) → maxConnections → implicit TLS handshake → protocol. STARTTLS re-enters the
 * handshake stage from the protocol. Every stage has a deadline on the same timer.
 */
#include "net/conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/mem.h"
#include "metrics/metrics.h"
#include "net/handoff.h"
#include "net/proxy_protocol.h"
#include "net/tls.h"
#include "net/tls_io.h"
#include "net/session_log.h"
#include "net/worker.h"
#include "proto/proto.h"
#include "security/security.h"

#define PROXY_DEADLINE_MS 10000
#define READ_CHUNK        4096
#define RELAY_CHUNK                                                                                \
    SSL3_RT_MAX_PLAIN_LENGTH  /* a TLS record's plaintext: one read takes one whole */
#define INPUT_CAP (16u << 20) /* protocols bound their own input well below this */

/* Connection fields private to this file live in a wrapper, so conn.h stays the
 * protocol-facing API. */
struct conn_priv {
    struct gh_conn c;
    SSL_CTX *ctx;             /* a reference, for implicit TLS and STARTTLS */
    bool starttls_pending;    /* handshake starts once queued output is flushed */
    bool first_input_seen;    /* the untrusted-peer PROXY check has been done */
    bool edge;                /* registered edge-triggered (while peeking) */
    bool batching;            /* inside a protocol callback: send once it returns */
    bool input_paused;        /* not reading the client: its destination has a backlog */
    bool lingering;           /* closing: after the flush, FIN and drain input until EOF */
    struct gh_timer resume;   /* hands held-back input to the protocol once output drained */
    uint64_t handshake_ns;    /* when the running TLS handshake began */
    struct gh_sec_ticket sec; /* the per-address connection slot, when one is held */
    bool first_data_seen;     /* the first plaintext input was screened for scans */
};

static struct conn_priv *priv(struct gh_conn *c)
{
    return gh_container_of(c, struct conn_priv, c);
}

static void on_io(struct gh_io *io, uint32_t events);
static void on_resume(struct gh_timer *t);
static void on_deadline(struct gh_timer *t);
static void start_protocol(struct gh_conn *c);
static bool hands_off_at_open(const struct gh_conn *c);
static void start_handshake(struct gh_conn *c);
static void flush(struct gh_conn *c);
static ssize_t send_some(struct gh_conn *c, const char *p, size_t len);
/* Once nothing peeks at the socket any more (PROXY header, first bytes), its reads and writes
 * can be the loop's own: on io_uring they then cost no system call each (core/uring.c). */
static void use_ring(struct gh_conn *c)
{
    gh_io_ring(c->worker->loop, &c->io, true);
}

/* Every refusal at admission goes through refuse(), which logs and counts it. */
static void refuse(struct gh_conn *c, enum gh_refusal why);

/* Runs a protocol callback with output held back, then sends it in one go: a reply of
 * several lines leaves in one packet. */
static void call_proto(struct gh_conn *c, void (*fn)(struct gh_conn *))
{
    if (!fn)
        return;
    priv(c)->batching = true;
    fn(c);
    priv(c)->batching = false;
    flush(c);
}

static const char *listener_name(const struct gh_conn *c)
{
    return c->conf ? c->conf->name : NULL;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* An event of this connection: its listener, its client address, the TCP peer when the
 * PROXY header named another client, and, when the load balancer gave one, the PROXY
 * unique id that ties the line to the balancer's own logs. */
static void conn_vlog(const struct gh_conn *c, const char *event, const char *fmt, va_list ap)
{
    char text[768], peer[GH_ADDR_TEXT + 8] = "", id[300] = "";
    vsnprintf(text, sizeof text, fmt, ap);
    if (gh_session_peer_differs(c)) {
        char tcp[GH_ADDR_TEXT];
        gh_ip_format(&c->tcp_peer.u.sa, tcp);
        snprintf(peer, sizeof peer, " peer=%s", tcp);
    }
    if (c->proxy_unique_id)
        snprintf(id, sizeof id, " proxy-id=%s", c->proxy_unique_id);
    gh_log(listener_name(c), c->peer_text, event, "%s%s%s", text, peer, id);
}

void gh_conn_log(const struct gh_conn *c, const char *event, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    conn_vlog(c, event, fmt, ap);
    va_end(ap);
}

__attribute__((format(printf, 3, 4))) static void conn_log(const struct gh_conn *c,
                                                           const char *event, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    conn_vlog(c, event, fmt, ap);
    va_end(ap);
}

static void set_events(struct gh_conn *c)
{
    if (!c->worker || c->closed)
        return;
    uint32_t ev = priv(c)->input_paused ? 0 : EPOLLIN | EPOLLRDHUP;
    if (c->want_write)
        ev |= EPOLLOUT;
    if (priv(c)->edge)
        ev |= EPOLLET;
    gh_io_mod(c->worker->loop, &c->io, ev);
}

void gh_conn_pause_input(struct gh_conn *c, bool paused)
{
    if (priv(c)->input_paused == paused)
        return;
    priv(c)->input_paused = paused;
    set_events(c);
}

static void free_later(struct gh_deferred *d)
{
    struct gh_conn *c = gh_container_of(d, struct gh_conn, free_later);
    gh_relay_free(c); /* its backend socket may have an event in the batch just handled */
    free(priv(c));
}

void gh_conn_close(struct gh_conn *c)
{
    if (c->closed)
        return;
    c->closed = true;
    c->phase = GH_PHASE_CLOSING;
    struct gh_worker *w = c->worker;
    if (!w)
        return; /* a hand-built connection in a unit test */
    gh_timer_cancel(w->loop, &c->deadline);
    gh_timer_cancel(w->loop, &priv(c)->resume);
    if (c->relay) /* relayed, or no destination could take it */
        gh_conn_set_end(c, gh_relay_destination(c) ? GH_END_HANDED_OFF : GH_END_REFUSED);
    gh_conn_set_end(c, GH_END_CLIENT_CLOSED);
    uint64_t us = (gh_loop_now(w->loop) - c->started_ms) * 1000; /* the loop's clock: no call */
    gh_metrics_closed(c->metrics, us);
    if (gh_log_sessions())
        gh_session_log(c, us);
    gh_io_close(w->loop, &c->io);
    gh_relay_close(c);
    if (c->proto && c->proto->release)
        c->proto->release(c);
    if (c->counted)
        gh_listener_rt_release(c->listener);
    gh_security_release(&priv(c)->sec);
    SSL_free(c->ssl);
    SSL_CTX_free(priv(c)->ctx);
    gh_listener_rt_unref(c->listener);
    gh_listener_conf_unref(c->conf);
    gh_buf_free(&c->in);
    gh_buf_free(&c->out);
    free(c->proxy_unique_id);
    free(c->login_user);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->nconns--;
    c->free_later.fn = free_later;
    gh_loop_defer(w->loop, &c->free_later);
    gh_worker_maybe_finish(w);
}

/* With nothing queued before them, the bytes go straight out, and only what the socket does
 * not take yet is copied into c->out (a relay's whole stream, mostly). */
void gh_conn_write(struct gh_conn *c, const void *data, size_t len)
{
    if (c->closed)
        return;
    if (c->worker && !priv(c)->batching && !gh_buf_len(&c->out) && len) {
        ssize_t n = send_some(c, data, len);
        if (n < 0)
            return;
        data = (const char *)data + n;
        len -= (size_t)n;
    }
    if (!gh_buf_append(&c->out, data, len))
        return;
    flush(c);
}

/* Replies are mostly fixed text with a host name, a word of the client's or an address in
 * them: a format whose conversions are all %s or %.*s is put together by hand into out, one
 * run of text at a time. False for any other conversion or a reply that does not fit, which
 * vsnprintf then handles. */
static bool format_strings(char *out, size_t cap, size_t *len, const char *fmt, va_list ap)
{
    size_t n = 0;
    for (const char *p = fmt;;) {
        const char *q = strchrnul(p, '%');
        size_t run = (size_t)(q - p);
        if (run > cap - n)
            return false;
        memcpy(out + n, p, run);
        n += run;
        if (!*q)
            break;
        bool counted = q[1] == '.' && q[2] == '*' && q[3] == 's'; /* %.*s: a word of a line */
        if (q[1] != 's' && !counted)
            return false;
        int most = counted ? va_arg(ap, int) : -1;
        const char *arg = va_arg(ap, const char *);
        size_t a = most < 0 ? strlen(arg) : strnlen(arg, (size_t)most);
        if (a > cap - n)
            return false;
        memcpy(out + n, arg, a);
        n += a;
        p = q + (counted ? 4 : 2);
    }
    *len = n;
    return true;
}

void gh_conn_printf(struct gh_conn *c, const char *fmt, ...)
{
    char small[512];
    size_t len;
    va_list ap, again;
    va_start(ap, fmt);
    va_copy(again, ap);
    bool done = format_strings(small, sizeof small, &len, fmt, ap);
    va_end(ap);
    if (done) {
        va_end(again);
        gh_conn_write(c, small, len);
        return;
    }
    int n = vsnprintf(small, sizeof small, fmt, again);
    va_end(again);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        gh_conn_write(c, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big)
        return;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    gh_conn_write(c, big, (size_t)n);
    free(big);
}

void gh_conn_close_after_flush(struct gh_conn *c)
{
    if (c->closed)
        return;
    c->phase = GH_PHASE_CLOSING;
    flush(c);
}

void gh_conn_close_lingering(struct gh_conn *c, uint32_t ms)
{
    if (c->closed)
        return;
    if (c->worker) { /* a hand-built connection in a unit test has no private part */
        priv(c)->lingering = true;
        /* read even a client held back (a hand-off in progress, a backlog): a close with its
         * bytes still unread would send a reset, which may overtake the last words */
        gh_conn_pause_input(c, false);
    }
    c->phase = GH_PHASE_CLOSING;
    gh_conn_set_idle(c, ms);
    flush(c);
}

bool gh_conn_can_starttls(const struct gh_conn *c)
{
    return c->conf && c->conf->use_tls && !c->conf->tls_implicit && !c->tls_active &&
           (!c->worker || priv((struct gh_conn *)c)->ctx);
}

void gh_conn_starttls(struct gh_conn *c)
{
    gh_buf_clear(&c->in); /* plaintext sent behind the command must never be acted on */
    c->phase = GH_PHASE_HANDSHAKE;
    if (!c->worker)
        return;
    priv(c)->starttls_pending = true;
    flush(c);
}

void gh_conn_fill_local(struct gh_conn *c)
{
    if (c->local.len || !c->worker)
        return;
    c->local.len = sizeof c->local.u;
    if (getsockname(c->io.fd, &c->local.u.sa, &c->local.len) < 0)
        c->local.len = 0;
}

void gh_conn_set_idle(struct gh_conn *c, uint32_t ms)
{
    if (c->worker && !c->closed)
        gh_timer_set(c->worker->loop, &c->deadline, ms);
}

const char *gh_conn_hostname(const struct gh_conn *c)
{
    if (!c->worker || !c->worker->settings)
        return "localhost";
    return c->worker->settings->hostname;
}

/* ---- output ---- */

/* Sends what the socket (or TLS) takes of p now, counted in bytes_out: the bytes taken, 0
 * when it takes none for now, -1 once a failure has closed the connection. */
static ssize_t send_some(struct gh_conn *c, const char *p, size_t len)
{
    ssize_t n = -1;
    if (c->ssl && c->phase != GH_PHASE_HANDSHAKE) {
        n = gh_tls_io_write(c->ssl, p, len);
    } else {
        n = gh_io_send(c->worker->loop, &c->io, p, len);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            n = 0;
    }
    if (n < 0) {
        gh_conn_close(c);
        return -1;
    }
    c->bytes_out += (uint64_t)n;
    return n;
}

/* Sends queued output; returns once it is all sent or the socket is full. */
static void flush(struct gh_conn *c)
{
    if (!c->worker || c->closed || priv(c)->batching)
        return;
    bool was_high = gh_buf_len(&c->out) >= GH_CONN_OUT_HIGH;
    while (gh_buf_len(&c->out)) {
        ssize_t n = send_some(c, gh_buf_head(&c->out), gh_buf_len(&c->out));
        if (n < 0)
            return;
        if (n == 0)
            break;
        gh_buf_consume(&c->out, (size_t)n);
    }
    /* records a short send left behind (TLS) count as output still queued */
    int flushed = gh_buf_len(&c->out) || !c->ssl ? 1 : gh_tls_io_flush(c->ssl);
    if (flushed < 0) {
        gh_conn_close(c);
        return;
    }
    bool pending = gh_buf_len(&c->out) > 0 || !flushed;
    if (pending != c->want_write) {
        c->want_write = pending;
        set_events(c);
    }
    if (pending)
        return;
    gh_buf_release_if_empty(&c->out);
    if (c->phase == GH_PHASE_RELAY)
        gh_relay_client_drained(c);
    if (was_high && c->phase == GH_PHASE_PROTOCOL && gh_buf_len(&c->in)) {
        /* commands held back while the client lagged: from the loop, not recursively */
        gh_timer_set(c->worker->loop, &priv(c)->resume, 0);
        return;
    }
    if (c->phase == GH_PHASE_CLOSING && priv(c)->lingering) {
        gh_io_shutdown_write(c->worker->loop, &c->io); /* the answer ends; input drains */
    } else if (c->phase == GH_PHASE_CLOSING) {
        gh_conn_close(c);
    } else if (priv(c)->starttls_pending) {
        priv(c)->starttls_pending = false;
        start_handshake(c);
    }
}

/* ---- accept and admission ---- */

static const struct gh_ipmask *trusted_networks(const struct gh_conn *c, unsigned *n)
{
    if (c->conf->ntrusted) {
        *n = c->conf->ntrusted;
        return c->conf->trusted;
    }
    *n = c->worker->settings ? c->worker->settings->ntrusted : 0;
    return *n ? c->worker->settings->trusted : NULL;
}

static void set_peer(struct gh_conn *c, const struct gh_sockaddr *peer)
{
    c->peer = *peer;
    gh_sockaddr_unmap_v4(&c->peer);
    gh_ip_format(&c->peer.u.sa, c->peer_text);
}

void gh_conn_accepted(struct gh_worker *w, struct gh_wsock *ws, int fd,
                      const struct gh_sockaddr *peer)
{
    struct conn_priv *p = gh_zalloc(sizeof *p);
    if (!p) {
        close(fd);
        return;
    }
    struct gh_conn *c = &p->c;
    c->io.fd = fd;
    c->io.fn = on_io;
    c->deadline.fn = on_deadline;
    p->resume.fn = on_resume;
    c->worker = w;
    c->listener = gh_listener_rt_ref(ws->rt);
    c->metrics = ws->rt->metrics;
    c->started_ms = gh_loop_now(w->loop);
    gh_metrics_accepted(c->metrics);
    c->conf = gh_listener_conf_ref(ws->conf);
    c->proto = gh_proto_for(c->conf->protocol);
    if (ws->ctx && SSL_CTX_up_ref(ws->ctx))
        p->ctx = ws->ctx;
    c->tcp_peer = *peer;
    c->local = ws->local;
    set_peer(c, peer);
    if (c->conf->protocol == GH_PROTO_HTTP)
        gh_conn_fill_local(c); /* session URLs may be built from it */

    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;

    unsigned ntrusted;
    const struct gh_ipmask *trusted = trusted_networks(c, &ntrusted);
    bool via_proxy = gh_ipmask_match_any(trusted, ntrusted, &c->tcp_peer.u.sa);
    /* Peeking stages run edge-triggered, so unconsumed bytes do not wake us again. */
    p->edge = via_proxy || (c->conf->use_tls && c->conf->tls_implicit);
    /* A session handed over at once reads nothing until its backend is there: not watching
     * it until then saves the loop two changes of interest. (One that peeks first decides
     * when it opens.) */
    p->input_paused = !p->edge && hands_off_at_open(c);
    uint32_t ev = p->input_paused ? 0 : EPOLLIN | EPOLLRDHUP | (p->edge ? EPOLLET : 0);
    gh_err err = {0};
    if (!gh_io_add(w->loop, &c->io, ev, &err)) {
        conn_log(c, "accept-error", "%s", err.msg);
        gh_conn_close(c);
        return;
    }
    if (via_proxy && gh_security_lookup(&c->tcp_peer.u.sa) == GH_SEC_BLOCKED) {
        refuse(c, GH_REFUSED_BLOCKED); /* a blocked balancer is blocked */
        return;
    }
    if (via_proxy) {
        c->phase = GH_PHASE_PROXY;
        gh_timer_set(w->loop, &c->deadline, PROXY_DEADLINE_MS);
        return;
    }
    start_protocol(c);
}

/* A listener whose opening has no upgrade to offer (plain, or implicit TLS) hands the
 * session over at once, so the backend's own greeting reaches the client. */
static bool hands_off_at_open(const struct gh_conn *c)
{
    bool starttls_listener =
        c->conf->use_tls && !c->conf->tls_implicit && c->conf->protocol != GH_PROTO_HTTP;
    return !starttls_listener && gh_conn_has_destination(c);
}

static void open_session(struct gh_conn *c, bool hand_off)
{
    c->phase = GH_PHASE_PROTOCOL;
    if (hand_off)
        gh_conn_handoff(c, false, NULL, NULL);
    else
        call_proto(c, c->proto->open);
}

/*
 * Turns the connection away. A blocked client gets nothing at all, not a byte; one over a
 * limit gets its protocol's over-limit reply (an implicit-TLS one is closed without a
 * handshake, as it could not read a plaintext reply).
 */
static void refuse(struct gh_conn *c, enum gh_refusal why)
{
    gh_metrics_refused(c->metrics, why);
    gh_conn_set_end(c, why == GH_REFUSED_BLOCKED ? GH_END_BLOCKED : GH_END_REFUSED);
    switch (why) {
    case GH_REFUSED_MAX_CONNECTIONS:
        conn_log(c, "limit-connections", "maxConnections %u reached", c->conf->max_connections);
        break;
    case GH_REFUSED_PER_IP_LIMIT:
        conn_log(c, "limit-per-ip", "maxConnectionsPerIp reached");
        break;
    case GH_REFUSED_RATE:
        conn_log(c, "limit-rate", "connectionRate reached");
        break;
    case GH_REFUSED_BLOCKED:
        conn_log(c, "blocked", "address blocked; closed without a reply");
        gh_conn_close(c);
        return;
    case GH_REFUSED_DESCRIPTORS: /* counted where accept fails: there is no connection */
    case GH_REFUSED_COUNT:
        break;
    }
    bool implicit = c->conf->use_tls && c->conf->tls_implicit;
    if (implicit || !c->proto->over_limit) {
        gh_conn_close(c);
        return;
    }
    c->phase = GH_PHASE_CLOSING;
    gh_conn_write(c, c->proto->over_limit, strlen(c->proto->over_limit));
    gh_conn_close_after_flush(c);
}

/* After PROXY: the client's address against the address table and its per-address
 * limits, then the listener's maxConnections, then TLS or the protocol. */
static void start_protocol(struct gh_conn *c)
{
    switch (gh_security_admit(&c->peer.u.sa, &priv(c)->sec)) {
    case GH_SEC_REFUSE_BLOCKED:
        refuse(c, GH_REFUSED_BLOCKED);
        return;
    case GH_SEC_REFUSE_RATE:
        refuse(c, GH_REFUSED_RATE);
        return;
    case GH_SEC_REFUSE_PER_IP:
        refuse(c, GH_REFUSED_PER_IP_LIMIT);
        return;
    case GH_SEC_ADMIT:
        break;
    }
    if (!gh_listener_rt_admit(c->listener, c->conf->max_connections)) {
        refuse(c, GH_REFUSED_MAX_CONNECTIONS);
        return;
    }
    c->counted = true;
    /* Implicit TLS always runs its handshake: a PROXY SSL TLV describes the balancer's
     * leg to the client, not this one. */
    if (c->conf->use_tls && c->conf->tls_implicit && !c->ssl) {
        if (!priv(c)->ctx) {
            gh_conn_close(c);
            return;
        }
        c->phase = GH_PHASE_HANDSHAKE;
        gh_timer_set(c->worker->loop, &c->deadline, c->conf->tls_timeout_ms);
        if (priv(c)->first_input_seen)
            start_handshake(c);
        return; /* untrusted peer: its first bytes are checked for a PROXY header first */
    }
    /* Opened in the accept that took it: paused there exactly when it is handed off. */
    bool hand_off = priv(c)->edge ? hands_off_at_open(c) : priv(c)->input_paused;
    if (priv(c)->edge) { /* a peeking stage ran edge-triggered; the protocol reads level */
        priv(c)->edge = false;
        set_events(c);
    }
    gh_timer_cancel(c->worker->loop, &c->deadline);
    use_ring(c);
    open_session(c, hand_off);
}

/* ---- PROXY header ---- */

enum first_bytes { FIRST_OK, FIRST_WAIT, FIRST_REFUSED };

/* A peer outside the trusted networks may not send a PROXY header: its first bytes are
 * checked against both signatures before anything parses them, and a match closes. */
static enum first_bytes screen_first_bytes(struct gh_conn *c, const uint8_t *b, size_t n)
{
    static const uint8_t v2[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
    static const char v1[6] = "PROXY ";
    bool p1 = memcmp(b, v1, n < 6 ? n : 6) == 0, p2 = memcmp(b, v2, n < 12 ? n : 12) == 0;
    if (!p1 && !p2) {
        priv(c)->first_input_seen = true;
        return FIRST_OK;
    }
    if (!(p1 && n >= 6) && !(p2 && n >= 12))
        return FIRST_WAIT;
    conn_log(c, "proxy-untrusted", "PROXY header from a peer outside the trusted networks");
    gh_security_event(&c->peer.u.sa, GH_SEC_SCAN);
    gh_metrics_proxy(c->metrics, GH_PROXYM_UNTRUSTED);
    gh_conn_set_end(c, GH_END_PROTOCOL_ERROR);
    gh_conn_close(c);
    return FIRST_REFUSED;
}

/* Peeking never sees the end of the stream while unread bytes are queued: whether the peer
 * has closed its side comes from the event. */
static bool peer_closed(uint32_t events)
{
    return events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR);
}

static void read_proxy_header(struct gh_conn *c, uint32_t events)
{
    uint8_t stack[1024], *buf = stack;
    size_t cap = sizeof stack, need = 0;
    ssize_t n = recv(c->io.fd, buf, cap, MSG_PEEK);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        gh_conn_close(c);
        return;
    }
    if (n < 0)
        return;
    struct gh_proxy_header h;
    gh_err err = {0};
    enum gh_proxy_result r = gh_proxy_parse(buf, (size_t)n, &need, &h, &err);
    if (r == GH_PROXY_NEED_MORE && need > cap && need <= GH_PROXY_MAX) {
        buf = malloc(need);
        n = buf ? recv(c->io.fd, buf, need, MSG_PEEK) : -1;
        r = n > 0 ? gh_proxy_parse(buf, (size_t)n, &need, &h, &err) : GH_PROXY_NEED_MORE;
    }
    if (r == GH_PROXY_NEED_MORE && need <= GH_PROXY_MAX && n > 0 && peer_closed(events))
        r = gh_proxy_parse_final(buf, (size_t)n, &need, &h, &err); /* no more will come */
    if (buf != stack)
        free(buf);
    if (r == GH_PROXY_NEED_MORE && need <= GH_PROXY_MAX)
        return; /* edge-triggered: woken again when more arrives */
    if (r != GH_PROXY_DONE) {
        conn_log(c, "proxy-error", "%s",
                 r == GH_PROXY_NEED_MORE ? "PROXY header too large" : err.msg);
        gh_metrics_proxy(c->metrics, GH_PROXYM_INVALID);
        gh_conn_set_end(c, GH_END_PROTOCOL_ERROR);
        gh_conn_close(c);
        return;
    }
    uint8_t sink[GH_PROXY_MAX];
    if (recv(c->io.fd, sink, need, 0) != (ssize_t)need) { /* consumes the header only */
        gh_conn_close(c);
        return;
    }
    gh_metrics_proxy(c->metrics, h.local ? GH_PROXYM_LOCAL : GH_PROXYM_OK);
    if (!h.local)
        set_peer(c, &h.src);
    c->tls_active = h.ssl;
    if (h.unique_id[0])
        c->proxy_unique_id = strdup(h.unique_id);
    if (c->conf->use_tls && c->conf->tls_implicit)
        priv(c)->first_input_seen = true; /* the handshake follows the header at once */
    start_protocol(c);
}

/* Implicit TLS from an untrusted peer: a PROXY header it sends is refused, not parsed. */
static void check_first_bytes(struct gh_conn *c, uint32_t events)
{
    uint8_t b[12];
    ssize_t n = recv(c->io.fd, b, sizeof b, MSG_PEEK);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        gh_conn_close(c);
        return;
    }
    enum first_bytes f = n > 0 ? screen_first_bytes(c, b, (size_t)n) : FIRST_WAIT;
    if (f == FIRST_OK)
        start_handshake(c);
    else if (f == FIRST_WAIT && n > 0 && peer_closed(events))
        gh_conn_close(c); /* a few bytes of a signature, then the end: nothing to wait for */
}

/* ---- TLS ---- */

static void log_tls_failure(struct gh_conn *c, int ssl_error)
{
    char reason[256] = "connection closed during handshake";
    unsigned long e = ERR_peek_last_error();
    if (e)
        ERR_error_string_n(e, reason, sizeof reason);
    else if (ssl_error == SSL_ERROR_SYSCALL && errno)
        snprintf(reason, sizeof reason, "%s", strerror(errno));
    conn_log(c, "tls-handshake-error", "%s", reason);
    ERR_clear_error();
    gh_metrics_tls(c->metrics, GH_TLS_FAILED, 0);
    gh_conn_set_end(c, GH_END_PROTOCOL_ERROR);
}

static void continue_handshake(struct gh_conn *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        bool upgrade = c->tls_done_once || !c->conf->tls_implicit;
        gh_metrics_tls(c->metrics, SSL_session_reused(c->ssl) ? GH_TLS_RESUMED : GH_TLS_FULL,
                       (now_ns() - priv(c)->handshake_ns) / 1000);
        c->tls_active = true;
        c->tls_done_once = true;
        priv(c)->edge = false;
        c->want_write = false;
        set_events(c);
        gh_timer_cancel(c->worker->loop, &c->deadline);
        c->phase = GH_PHASE_PROTOCOL;
        if (gh_tls_is_acme_validation(c->ssl)) /* RFC 8737: nothing follows the handshake */
            gh_conn_close(c);
        else if (!upgrade)
            open_session(c, hands_off_at_open(c));
        else if (gh_conn_has_destination(c)) /* the front door's part ends with STARTTLS */
            gh_conn_handoff(c, !c->proto->greets_after_tls, NULL, NULL);
        else
            call_proto(c, c->proto->tls_ready);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        bool ww = e == SSL_ERROR_WANT_WRITE;
        if (ww != c->want_write || priv(c)->edge) {
            c->want_write = ww;
            priv(c)->edge = false;
            set_events(c);
        }
        return;
    }
    bool violation = ERR_peek_last_error() != 0; /* not a client that merely went away */
    log_tls_failure(c, e);
    if (violation)
        gh_security_event(&c->peer.u.sa, GH_SEC_SCAN);
    gh_conn_close(c);
}

static void start_handshake(struct gh_conn *c)
{
    use_ring(c);
    if (!priv(c)->ctx || !(c->ssl = SSL_new(priv(c)->ctx)) || !gh_tls_io_attach(c->ssl, &c->io)) {
        conn_log(c, "tls-error", "cannot start a TLS session");
        gh_conn_close(c);
        return;
    }
    SSL_set_accept_state(c->ssl);
    priv(c)->handshake_ns = now_ns();
    c->phase = GH_PHASE_HANDSHAKE;
    gh_timer_set(c->worker->loop, &c->deadline, c->conf->tls_timeout_ms);
    continue_handshake(c);
}

/* ---- input ---- */

/* Reads into c->in, chunk bytes of room at a time: everything available, or with `more`, only
 * until one chunk's room is full (TLS records already read ahead go into it as well), *more
 * then saying that there may be more to read. Returns false when the connection closed. */
static bool read_input(struct gh_conn *c, size_t chunk, bool *more)
{
    for (bool first = true;; first = false) {
        if (gh_buf_len(&c->in) > INPUT_CAP ||
            ((first || !more) && !gh_buf_reserve(&c->in, chunk))) {
            gh_conn_set_end(c, GH_END_PROTOCOL_ERROR);
            gh_conn_close(c);
            return false;
        }
        char *dst = c->in.data + c->in.end;
        size_t room = c->in.cap - c->in.end;
        ssize_t n;
        if (c->ssl) {
            ERR_clear_error();
            int r = SSL_read(c->ssl, dst, (int)(room > INT32_MAX ? INT32_MAX : room));
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_READ)
                    return true;
                if (e == SSL_ERROR_WANT_WRITE) {
                    c->want_write = true;
                    set_events(c);
                    return true;
                }
                gh_conn_close(c);
                return false;
            }
            n = r;
        } else {
            n = gh_io_recv(c->worker->loop, &c->io, dst, room);
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return true;
            if (n <= 0) {
                gh_conn_close(c);
                return false;
            }
        }
        c->in.end += (size_t)n;
        c->bytes_in += (uint64_t)n;
        if ((size_t)n < room && !(c->ssl && SSL_has_pending(c->ssl)))
            return true;
        if (more && c->in.end == c->in.cap) {
            *more = true;
            return true;
        }
    }
}

/* A relayed client is read a buffer at a time, each passed on before the next is read: its
 * bytes are copied once on their way (the buffer itself usually changes hands), and a fast
 * client's stream never piles up here. Bytes TLS holds (decrypted, or read ahead in a
 * transfer) are taken even while the backend is behind, as no readiness would tell of them
 * later. */
static void relay_input(struct gh_conn *c)
{
    bool more;
    do {
        more = false;
        if (!read_input(c, gh_relay_streaming(c) ? GH_RELAY_STREAM_CHUNK : RELAY_CHUNK, &more))
            return;
        gh_relay_client_input(c);
    } while (more && !c->closed && (!priv(c)->input_paused || (c->ssl && SSL_has_pending(c->ssl))));
    if (!c->closed)
        gh_buf_release_if_empty(&c->in);
}

/* The first bytes a mail client sends are a command line. A TLS record, an HTTP request
 * or control bytes there are a scanner (or a client pointed at the wrong port). */
static bool looks_like_scan(const uint8_t *b, size_t n)
{
    static const char *const http[] = {"GET ",     "POST ",    "HEAD ",  "PUT ", "DELETE ",
                                       "OPTIONS ", "CONNECT ", "PRI * ", NULL};
    if (n >= 2 && ((b[0] == 0x16 && b[1] == 0x03) || b[0] == 0x80))
        return true;
    for (int i = 0; n && http[i]; i++) {
        if (b[0] != (uint8_t)http[i][0])
            continue; /* a mail command's first letter settles it without a call */
        size_t len = strlen(http[i]);
        if (n >= len && !memcmp(b, http[i], len))
            return true;
    }
    for (size_t i = 0; i < n && i < 64 && b[i] != '\n'; i++)
        if ((b[i] < 0x20 && b[i] != '\t' && b[i] != '\r') || b[i] == 0x7f)
            return true;
    return false;
}

static void on_readable(struct gh_conn *c)
{
    if (c->phase == GH_PHASE_CLOSING) {
        char sink[4096]; /* draining what a closing client still sends */
        ssize_t n = gh_io_recv(c->worker->loop, &c->io, sink, sizeof sink);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            gh_conn_close(c);
        return;
    }
    if (!read_input(c, READ_CHUNK, NULL))
        return;
    if (!priv(c)->first_data_seen && gh_buf_len(&c->in)) {
        priv(c)->first_data_seen = true;
        if (c->conf->protocol != GH_PROTO_HTTP && !c->ssl &&
            looks_like_scan((const uint8_t *)gh_buf_head(&c->in), gh_buf_len(&c->in)))
            gh_security_event(&c->peer.u.sa, GH_SEC_SCAN);
    }
    if (!priv(c)->first_input_seen && gh_buf_len(&c->in) &&
        screen_first_bytes(c, (uint8_t *)gh_buf_head(&c->in), gh_buf_len(&c->in)) != FIRST_OK)
        return;
    if (gh_buf_len(&c->in))
        call_proto(c, c->proto->input);
    if (!c->closed)
        gh_buf_release_if_empty(&c->in);
}

static void on_io(struct gh_io *io, uint32_t events)
{
    struct gh_conn *c = gh_container_of(io, struct gh_conn, io);
    if (c->closed)
        return;
    switch (c->phase) {
    case GH_PHASE_PROXY:
        read_proxy_header(c, events);
        return;
    case GH_PHASE_HANDSHAKE:
        if (!c->ssl) {
            if (priv(c)->starttls_pending)
                flush(c);
            else
                check_first_bytes(c, events);
        } else {
            continue_handshake(c);
        }
        return;
    case GH_PHASE_RELAY:
        if (gh_relay_client_io(c))
            return;
        if (events & EPOLLOUT)
            flush(c);
        if (!c->closed && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
            relay_input(c);
        return;
    case GH_PHASE_PROTOCOL:
    case GH_PHASE_CLOSING:
        if (events & EPOLLOUT)
            flush(c);
        if (!c->closed && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
            on_readable(c);
        return;
    }
}

static void on_resume(struct gh_timer *t)
{
    struct gh_conn *c = &gh_container_of(t, struct conn_priv, resume)->c;
    if (c->phase == GH_PHASE_PROTOCOL && gh_buf_len(&c->in))
        call_proto(c, c->proto->input);
}

static void on_deadline(struct gh_timer *t)
{
    struct gh_conn *c = gh_container_of(t, struct gh_conn, deadline);
    gh_conn_set_end(c, GH_END_TIMEOUT);
    switch (c->phase) {
    case GH_PHASE_PROXY:
        gh_metrics_proxy(c->metrics, GH_PROXYM_TIMEOUT);
        conn_log(c, "proxy-timeout", "no PROXY header within %u ms", PROXY_DEADLINE_MS);
        gh_security_event(&c->peer.u.sa, GH_SEC_LOITER);
        gh_conn_close(c);
        return;
    case GH_PHASE_HANDSHAKE:
        conn_log(c, "tls-timeout", "handshake not done within %u ms", c->conf->tls_timeout_ms);
        gh_security_event(&c->peer.u.sa, GH_SEC_LOITER);
        gh_metrics_tls(c->metrics, GH_TLS_TIMEOUT, 0);
        gh_conn_close(c);
        return;
    case GH_PHASE_PROTOCOL:
        /* An idle mail session before hand-off loiters; an HTTP keep-alive that goes quiet
         * after its requests is how browsers work, so it is not counted. */
        if (c->conf->protocol != GH_PROTO_HTTP)
            gh_security_event(&c->peer.u.sa, GH_SEC_LOITER);
        if (c->proto->idle)
            call_proto(c, c->proto->idle);
        else
            gh_conn_close(c);
        return;
    case GH_PHASE_RELAY: /* the relay keeps its own deadlines */
    case GH_PHASE_CLOSING:
        gh_conn_close(c);
        return;
    }
}

void gh_conn_http_path(struct gh_conn *c, const char *path)
{
    if (c->worker && gh_security_scan_path(&c->peer.u.sa, path))
        conn_log(c, "scan-path", "request for a path in scanBanPaths");
}

void gh_conn_shutdown(struct gh_conn *c)
{
    if (c->phase != GH_PHASE_RELAY)
        gh_conn_set_end(c, GH_END_SHUTDOWN);
    if (c->phase == GH_PHASE_PROTOCOL && c->proto->shutdown) {
        call_proto(c, c->proto->shutdown);
        if (!c->closed)
            gh_timer_set(c->worker->loop, &c->deadline, 2000);
    } else if (c->phase != GH_PHASE_CLOSING && c->phase != GH_PHASE_RELAY) {
        gh_conn_close(c); /* a relayed session is the backend's to end, within the grace */
    }
}

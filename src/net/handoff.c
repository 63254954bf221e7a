/*
 * handoff: the relay between a client connection and its destination. Stages: connect
 * (bounded by connectTimeout, the next destination on failure) → PROXY header → drop the
 * backend's greeting and hello reply when the client already had ours → relay. The relay
 * stops reading one side while the other side has a backlog, so memory stays bounded. A
 * session between two plain sockets that has moved SPLICE_AFTER bytes (a transfer, not a
 * short exchange, which would only pay for the pipes) moves the rest with splice (net/splice.c).
 */
#include "net/handoff.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "net/conn.h"
#include "net/engine.h"
#include "net/proxy_protocol.h"
#include "net/splice.h"
#include "net/worker.h"
#include "proto/proto.h"

#define RELAY_HIGH           (256 * 1024) /* backlog at which the other side stops being read */
#define GREETING_MAX         16384
#define GREETING_DEADLINE_MS 30000
#define RELAY_IDLE_MS        (60 * 60 * 1000)
#define SPLICE_AFTER         (64 * 1024) /* bytes copied before a plain relay moves to splice */

enum relay_stage { RELAY_CONNECTING, RELAY_GREETING, RELAY_HELLO, RELAY_FLOWING };

/* Owner: the connection (c->relay), freed with it. */
struct gh_relay {
    struct gh_io io; /* the backend socket */
    struct gh_timer deadline;
    struct gh_conn *c;
    enum relay_stage stage;
    bool swallow_greeting, backend_paused, want_write, registered;
    char *hello, *first;
    struct gh_destination dest; /* the one being tried (a copy without listener names) */
    unsigned start, walked; /* where this session's walk over the destinations began, and how far */
    struct gh_buf to_backend, reply;
    uint64_t copied;               /* bytes relayed through our buffers */
    bool spliced;                  /* from then on: up and down move everything */
    struct gh_splice_leg up, down; /* client → backend, backend → client */
};

/* ---- destinations ---- */

static bool serves(const struct gh_destination *d, const struct gh_listener_conf *conf)
{
    if (d->protocol != conf->protocol)
        return false;
    if (!d->nlisteners)
        return true;
    for (unsigned i = 0; i < d->nlisteners; i++)
        if (!strcasecmp(d->listeners[i], conf->name))
            return true;
    return false;
}

bool gh_conn_has_destination(const struct gh_conn *c)
{
    const struct gh_dest_set *s = c->worker ? c->worker->dests : NULL;
    for (unsigned i = 0; s && i < s->n; i++)
        if (serves(&s->d[i], c->conf))
            return true;
    return false;
}

/* The next destination for this connection. Each session starts at the worker's
 * round-robin position (load sharing) and then walks the set from there, so fail-over
 * tries every destination once even while other sessions move the position on. */
static bool pick(struct gh_relay *r)
{
    struct gh_worker *w = r->c->worker;
    struct gh_dest_set *s = w->dests;
    if (!s || !s->n)
        return false;
    if (!r->walked)
        r->start = w->dest_next++;
    while (r->walked < s->n) {
        const struct gh_destination *d = &s->d[(r->start + r->walked++) % s->n];
        if (!serves(d, r->c->conf))
            continue;
        r->dest = *d;
        r->dest.listeners = NULL; /* the copy needs only the address and how to forward */
        r->dest.nlisteners = 0;
        return true;
    }
    return false;
}

void gh_dest_set_unref(struct gh_dest_set *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (unsigned i = 0; i < s->n; i++)
        free(s->d[i].listeners);
    free(s->d);
    free(s);
}

static struct gh_dest_set *dest_set_copy(const struct gh_destination *d, unsigned n)
{
    struct gh_dest_set *s = calloc(1, sizeof *s);
    if (!s || (n && !(s->d = calloc(n, sizeof *s->d)))) {
        free(s);
        return NULL;
    }
    atomic_init(&s->refs, 1);
    for (; s->n < n; s->n++) {
        struct gh_destination *to = &s->d[s->n];
        *to = d[s->n];
        to->listeners = NULL;
        if (to->nlisteners && (to->listeners = malloc(to->nlisteners * sizeof *to->listeners)))
            memcpy(to->listeners, d[s->n].listeners, to->nlisteners * sizeof *to->listeners);
        else
            to->nlisteners = 0;
    }
    return s;
}

static void install_destinations(struct gh_loop *loop, void *arg)
{
    struct gh_dest_set *s = arg;
    struct gh_worker *w = gh_worker_current();
    if (!w)
        return;
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    gh_dest_set_unref(w->dests);
    w->dests = s;
}

static void drop_creator_ref(void *arg)
{
    gh_dest_set_unref(arg);
}

bool gh_engine_set_destinations(struct gh_engine *e, const struct gh_destination *d, unsigned n)
{
    struct gh_dest_set *s = dest_set_copy(d, n);
    if (!s)
        return false;
    gh_engine_broadcast(e, install_destinations, s, drop_creator_ref);
    return true;
}

/* ---- the backend socket ---- */

static void relay_io(struct gh_io *io, uint32_t events);
static void relay_deadline(struct gh_timer *t);
static bool try_connect(struct gh_relay *r);

static void backend_events(struct gh_relay *r)
{
    uint32_t ev = (r->backend_paused ? 0 : EPOLLIN) | (r->want_write ? EPOLLOUT : 0);
    if (r->stage == RELAY_CONNECTING)
        ev = EPOLLOUT;
    gh_io_mod(r->c->worker->loop, &r->io, ev | EPOLLRDHUP);
}

static void close_backend(struct gh_relay *r)
{
    if (!r->registered)
        return;
    gh_io_del(r->c->worker->loop, &r->io);
    close(r->io.fd);
    r->registered = false;
}

void gh_relay_close(struct gh_conn *c)
{
    struct gh_relay *r = c->relay;
    if (!r)
        return;
    gh_timer_cancel(c->worker->loop, &r->deadline);
    close_backend(r);
    if (r->spliced) {
        gh_splice_leg_close(&r->up);
        gh_splice_leg_close(&r->down);
        r->spliced = false;
    }
    gh_buf_free(&r->to_backend);
    gh_buf_free(&r->reply);
}

void gh_relay_free(struct gh_conn *c)
{
    struct gh_relay *r = c->relay;
    if (!r)
        return;
    free(r->hello);
    free(r->first);
    free(r);
    c->relay = NULL;
}

/* No destination could take the session: the protocol's temporary failure, then close. */
static void give_up(struct gh_relay *r, const char *why)
{
    struct gh_conn *c = r->c;
    gh_log(c->conf->name, c->peer_text, "handoff-failed", "%s", why);
    gh_timer_cancel(c->worker->loop, &r->deadline);
    close_backend(r);
    c->phase = GH_PHASE_PROTOCOL; /* so the reply leaves in clear or through TLS as before */
    if (c->proto->unavailable)
        gh_conn_write(c, c->proto->unavailable, strlen(c->proto->unavailable));
    gh_conn_close_after_flush(c);
}

static void next_destination(struct gh_relay *r, const char *why)
{
    gh_log(r->c->conf->name, r->c->peer_text, "handoff-retry", "destination %s: %s", r->dest.name,
           why);
    close_backend(r);
    gh_buf_clear(&r->to_backend);
    gh_buf_clear(&r->reply);
    if (!pick(r)) {
        give_up(r, "no destination reachable");
        return;
    }
    if (!try_connect(r))
        next_destination(r, "cannot connect");
}

static void queue_proxy_header(struct gh_relay *r)
{
    struct gh_conn *c = r->c;
    gh_conn_fill_local(c);
    if (r->dest.forwarding == GH_FWD_PROXY_V2) {
        uint8_t hdr[GH_PROXY_V2_WRITE_MAX];
        size_t n = gh_proxy_write_v2(&c->peer, &c->local, c->tls_active, hdr, sizeof hdr);
        gh_buf_append(&r->to_backend, hdr, n);
    } else if (r->dest.forwarding == GH_FWD_PROXY_V1) {
        char hdr[GH_PROXY_V1_MAX + 1];
        size_t n = gh_proxy_write_v1(&c->peer, &c->local, hdr, sizeof hdr);
        gh_buf_append(&r->to_backend, hdr, n);
    }
}

static bool try_connect(struct gh_relay *r)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    const struct sockaddr *sa = &r->dest.addr.u.sa;
    socklen_t len = r->dest.addr.len;
    if (r->dest.is_unix) {
        memcpy(un.sun_path, r->dest.unix_path, sizeof un.sun_path - 1);
        sa = (const struct sockaddr *)&un;
        len = sizeof un;
    }
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    if (connect(fd, sa, len) < 0 && errno != EINPROGRESS) {
        close(fd);
        return false;
    }
    r->io.fd = fd;
    r->io.fn = relay_io;
    r->stage = RELAY_CONNECTING;
    if (!gh_io_add(r->c->worker->loop, &r->io, EPOLLOUT | EPOLLRDHUP, NULL)) {
        close(fd);
        return false;
    }
    r->registered = true;
    gh_timer_set(r->c->worker->loop, &r->deadline, r->dest.connect_timeout_ms);
    queue_proxy_header(r);
    return true;
}

void gh_conn_handoff(struct gh_conn *c, bool swallow_greeting, const char *hello, const char *first)
{
    struct gh_relay *r = calloc(1, sizeof *r);
    if (!r) {
        gh_conn_close(c);
        return;
    }
    r->c = c;
    r->deadline.fn = relay_deadline;
    r->swallow_greeting = swallow_greeting || hello;
    r->hello = hello ? strdup(hello) : NULL;
    r->first = first ? strdup(first) : NULL;
    c->relay = r;
    c->phase = GH_PHASE_RELAY;
    gh_conn_pause_input(c, true); /* the client waits until the backend is ready */
    if (!pick(r)) {
        give_up(r, "no destination for this listener");
        return;
    }
    if (!try_connect(r))
        next_destination(r, "cannot connect");
}

/* ---- moving bytes ---- */

static bool send_to_backend(struct gh_relay *r)
{
    while (gh_buf_len(&r->to_backend)) {
        ssize_t n =
            send(r->io.fd, gh_buf_head(&r->to_backend), gh_buf_len(&r->to_backend), MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            break;
        if (n <= 0)
            return false;
        gh_buf_consume(&r->to_backend, (size_t)n);
    }
    bool pending = gh_buf_len(&r->to_backend) > 0;
    if (pending != r->want_write) {
        r->want_write = pending;
        backend_events(r);
    }
    if (!pending)
        gh_buf_release_if_empty(&r->to_backend);
    if (r->stage == RELAY_FLOWING)
        gh_conn_pause_input(r->c, gh_buf_len(&r->to_backend) >= RELAY_HIGH);
    return true;
}

/* Length of the complete first reply in buf, or 0 while it is incomplete. */
static size_t reply_length(enum gh_protocol p, const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != '\n')
            continue;
        const char *line = buf;
        for (size_t k = i; k > 0; k--)
            if (buf[k - 1] == '\n') {
                line = buf + k;
                break;
            }
        size_t linelen = (size_t)(buf + i - line);
        bool last = true;
        if (p == GH_PROTO_SMTP || p == GH_PROTO_LMTP)
            last = linelen < 4 || line[3] != '-'; /* "250-..." continues, "250 ..." ends */
        else if (p == GH_PROTO_MANAGESIEVE)
            last = linelen >= 2 && !strncasecmp(line, "OK", 2);
        if (last)
            return i + 1;
    }
    return 0;
}

static bool reply_is_positive(enum gh_protocol p, const char *buf)
{
    switch (p) {
    case GH_PROTO_SMTP:
    case GH_PROTO_LMTP:
        return buf[0] == '2';
    case GH_PROTO_IMAP:
        return !strncasecmp(buf, "* OK", 4) || !strncasecmp(buf, "* PREAUTH", 9);
    case GH_PROTO_POP3:
        return !strncmp(buf, "+OK", 3);
    default:
        return true;
    }
}

/* The backend is ready for the client's bytes: what the front door had taken first, then
 * what is still buffered, then everything as it comes. */
static void start_flowing(struct gh_relay *r)
{
    struct gh_conn *c = r->c;
    gh_timer_set(c->worker->loop, &r->deadline, RELAY_IDLE_MS);
    r->stage = RELAY_FLOWING;
    if (r->first) {
        gh_buf_append(&r->to_backend, r->first, strlen(r->first));
        gh_buf_append(&r->to_backend, "\r\n", 2);
    }
    gh_buf_append(&r->to_backend, gh_buf_head(&c->in), gh_buf_len(&c->in));
    gh_buf_clear(&c->in);
    gh_conn_pause_input(c, false);
    if (!send_to_backend(r))
        gh_conn_close_after_flush(c);
}

/* Reads the greeting or hello reply the client must not see; returns false on failure. */
static bool swallow_reply(struct gh_relay *r)
{
    char chunk[4096];
    ssize_t n = recv(r->io.fd, chunk, sizeof chunk, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return true;
    if (n <= 0 || !gh_buf_append(&r->reply, chunk, (size_t)n) ||
        gh_buf_len(&r->reply) > GREETING_MAX)
        return false;
    size_t len = reply_length(r->c->conf->protocol, gh_buf_head(&r->reply), gh_buf_len(&r->reply));
    if (!len)
        return true;
    gh_buf_append(&r->reply, "", 1); /* NUL for the checks below */
    if (!reply_is_positive(r->c->conf->protocol, gh_buf_head(&r->reply)))
        return false;
    if (gh_buf_len(&r->reply) - 1 > len) /* a backend that speaks ahead of its turn */
        return false;
    gh_buf_clear(&r->reply);
    if (r->stage == RELAY_GREETING && r->hello) {
        r->stage = RELAY_HELLO;
        gh_buf_append(&r->to_backend, r->hello, strlen(r->hello));
        gh_buf_append(&r->to_backend, "\r\n", 2);
        return send_to_backend(r);
    }
    start_flowing(r);
    return true;
}

static void backend_to_client(struct gh_relay *r)
{
    char chunk[16384];
    ssize_t n = recv(r->io.fd, chunk, sizeof chunk, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        close_backend(r);
        gh_conn_close_after_flush(r->c); /* the backend ended the session */
        return;
    }
    gh_timer_set(r->c->worker->loop, &r->deadline, RELAY_IDLE_MS);
    r->copied += (size_t)n;
    gh_conn_write(r->c, chunk, (size_t)n);
    if (!r->c->closed && gh_buf_len(&r->c->out) >= RELAY_HIGH && !r->backend_paused) {
        r->backend_paused = true;
        backend_events(r);
    }
}

static void connected(struct gh_relay *r)
{
    int soerr = 0;
    socklen_t len = sizeof soerr;
    getsockopt(r->io.fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
    if (soerr) {
        next_destination(r, strerror(soerr));
        return;
    }
    gh_timer_set(r->c->worker->loop, &r->deadline, GREETING_DEADLINE_MS);
    if (r->swallow_greeting) {
        r->stage = RELAY_GREETING;
        backend_events(r);
        if (!send_to_backend(r))
            next_destination(r, "connection lost");
        return;
    }
    start_flowing(r);
    backend_events(r);
}

/* ---- splice ---- */

/* Both legs are plain (no TLS here; a backend leg with TLS must say so here too), nothing is
 * held in our buffers, and the session has shown itself to be a transfer. */
static bool can_splice(const struct gh_relay *r)
{
    const struct gh_conn *c = r->c;
    return !r->spliced && r->stage == RELAY_FLOWING && r->copied >= SPLICE_AFTER && !c->ssl &&
           !c->closed && c->phase == GH_PHASE_RELAY && !gh_buf_len(&c->in) &&
           !gh_buf_len(&c->out) && !gh_buf_len(&r->to_backend) && r->registered;
}

static void splice_events(struct gh_relay *r)
{
    struct gh_loop *loop = r->c->worker->loop;
    gh_io_mod(loop, &r->c->io, gh_splice_src_events(&r->up) | gh_splice_dst_events(&r->down));
    gh_io_mod(loop, &r->io, gh_splice_src_events(&r->down) | gh_splice_dst_events(&r->up));
}

static void maybe_splice(struct gh_relay *r)
{
    if (!can_splice(r))
        return;
    r->up.rd = r->up.wr = r->down.rd = r->down.wr = -1;
    if (!gh_splice_leg_open(&r->up) || !gh_splice_leg_open(&r->down)) {
        gh_splice_leg_close(&r->up); /* out of descriptors: copying still works */
        gh_splice_leg_close(&r->down);
        r->copied = 0;
        return;
    }
    r->spliced = true;
    r->backend_paused = r->want_write = false;
    splice_events(r);
}

/* Either socket of a spliced relay is ready: move what can move, end when both ends have. */
static void splice_io(struct gh_relay *r)
{
    struct gh_conn *c = r->c;
    ssize_t up = gh_splice_pump(&r->up, c->io.fd, r->io.fd);
    ssize_t down = up < 0 ? -1 : gh_splice_pump(&r->down, r->io.fd, c->io.fd);
    if (up < 0 || down < 0 || (gh_splice_leg_done(&r->up) && gh_splice_leg_done(&r->down))) {
        gh_conn_close(c);
        return;
    }
    if (up || down)
        gh_timer_set(c->worker->loop, &r->deadline, RELAY_IDLE_MS);
    splice_events(r);
}

bool gh_relay_client_io(struct gh_conn *c)
{
    struct gh_relay *r = c->relay;
    if (!r || !r->spliced)
        return false;
    splice_io(r);
    return true;
}

static void relay_io(struct gh_io *io, uint32_t events)
{
    struct gh_relay *r = gh_container_of(io, struct gh_relay, io);
    if (r->c->closed || !r->registered)
        return; /* an event of the same batch, after the session or this attempt ended */
    if (r->stage == RELAY_CONNECTING) {
        connected(r);
        return;
    }
    if (r->spliced) {
        splice_io(r);
        return;
    }
    if ((events & EPOLLOUT) && !send_to_backend(r)) {
        gh_conn_close(r->c);
        return;
    }
    if (!(events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) || r->backend_paused)
        return;
    if (r->stage == RELAY_FLOWING) {
        backend_to_client(r);
        if (!r->c->closed)
            maybe_splice(r);
    } else if (!swallow_reply(r))
        next_destination(r, "unexpected greeting");
}

static void relay_deadline(struct gh_timer *t)
{
    struct gh_relay *r = gh_container_of(t, struct gh_relay, deadline);
    if (r->stage == RELAY_FLOWING) {
        gh_conn_close(r->c); /* an hour without a byte from the backend */
        return;
    }
    next_destination(r, r->stage == RELAY_CONNECTING ? "connect timed out" : "no greeting in time");
}

void gh_relay_client_input(struct gh_conn *c)
{
    struct gh_relay *r = c->relay;
    if (!r || r->stage != RELAY_FLOWING)
        return; /* held in c->in until the backend is ready */
    r->copied += gh_buf_len(&c->in);
    gh_buf_append(&r->to_backend, gh_buf_head(&c->in), gh_buf_len(&c->in));
    gh_buf_clear(&c->in);
    if (!send_to_backend(r))
        gh_conn_close(c);
    else
        maybe_splice(r);
}

void gh_relay_client_drained(struct gh_conn *c)
{
    struct gh_relay *r = c->relay;
    if (r && r->backend_paused && r->registered) {
        r->backend_paused = false;
        backend_events(r);
    }
    if (r)
        maybe_splice(r);
}

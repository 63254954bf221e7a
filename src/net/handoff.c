/*
 * handoff: the relay between a client connection and its destination. Stages: choose a
 * destination (smooth weighted round-robin per listener, down ones last) → open the backend
 * connection (net/backend.c: connect, PROXY header, TLS, greeting) → drop the backend's
 * hello reply when the client already said hello to us → relay. A backend chosen at run time
 * (a login at the front door) is opened the same way, plain, and has a login stage instead:
 * the protocol's driver reads its lines and logs in; a refusal or failure gives the session
 * back to the front door. The relay stops reading one side while the other side has a
 * backlog, so memory stays bounded. A session that has moved TRANSFER_AFTER bytes is a
 * transfer, not a short exchange: between two plain sockets it moves the rest with splice
 * (net/splice.c; a short exchange would only pay for the pipes), and with TLS on a leg it
 * streams records (read-ahead, off io_uring's ring I/O).
 */
#include "net/handoff.h"

#include <errno.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth/service.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/mem.h"
#include "metrics/metrics.h"
#include "net/backend.h"
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
#define TRANSFER_AFTER       (64 * 1024) /* bytes copied before a session is a transfer */
#define RELAY_LINGER_MS      5000        /* a client still sending after the backend's end */

enum relay_stage { RELAY_OPENING, RELAY_HELLO, RELAY_LOGIN, RELAY_FLOWING };

/* Owner: the connection (c->relay), freed with it. */
struct gh_relay {
    struct gh_backend b; /* the backend connection */
    struct gh_timer deadline;
    struct gh_conn *c;
    enum relay_stage stage;
    bool swallow_greeting, backend_paused, want_write;
    bool backend_spoke, client_spoke; /* a byte went to the client / to the backend */
    bool client_said_goodbye;         /* its last line so far was its protocol's goodbye */
    char *hello, *first;
    struct gh_dest_set *set;           /* a reference: the destinations as the session began */
    const struct gh_destination *dest; /* the one being tried, in set */
    bool *tried;                       /* one per destination of set */
    struct gh_buf to_backend, reply;
    /* A backend chosen at run time (login.line set): dest points to named, the only one;
     * owned, and only allocated then, which keeps a relay within malloc's thread cache. */
    struct gh_backend_login login;
    struct gh_destination *named;
    uint64_t copied;               /* bytes relayed through our buffers */
    bool spliced;                  /* from then on: up and down move everything */
    bool streaming;                /* a transfer with TLS: read-ahead, off the ring */
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
    /* A listener served by an auth service logs clients in itself and hands each session
     * to the backend the service names, never to a destination. */
    if (gh_auth_service_for(gh_auth_set_current(), c->conf->name))
        return false;
    const struct gh_dest_set *s = c->worker ? c->worker->dests : NULL;
    for (unsigned i = 0; s && i < s->n; i++)
        if (serves(&s->d[i], c->conf))
            return true;
    return false;
}

bool gh_dest_usable(const struct gh_destination *d)
{
    return d->weight > 0 &&
           atomic_load_explicit(&d->health->status, memory_order_relaxed) != GH_DEST_DOWN;
}

void gh_wrr_free(struct gh_worker *w)
{
    while (w->wrr) {
        struct gh_wrr *next = w->wrr->next;
        free(w->wrr);
        w->wrr = next;
    }
}

/* This worker's round-robin state for one listener (created on first use). */
static struct gh_wrr *wrr_for(struct gh_worker *w, const char *listener, unsigned n)
{
    for (struct gh_wrr *x = w->wrr; x; x = x->next)
        if (x->n == n && !strcmp(x->listener, listener))
            return x;
    size_t size = sizeof(struct gh_wrr) + n * (sizeof(int64_t) + sizeof(uint32_t));
    struct gh_wrr *x = calloc(1, size);
    if (!x)
        return NULL;
    snprintf(x->listener, sizeof x->listener, "%s", listener);
    x->n = n;
    x->weight = (uint32_t *)(x->current + n);
    x->next = w->wrr;
    w->wrr = x;
    return x;
}

int gh_swrr_pick(int64_t *current, const uint32_t *weight, unsigned n)
{
    int64_t total = 0;
    int best = -1;
    for (unsigned i = 0; i < n; i++) {
        if (!weight[i])
            continue;
        current[i] += weight[i];
        total += weight[i];
        if (best < 0 || current[i] > current[best])
            best = (int)i;
    }
    if (best >= 0)
        current[best] -= total;
    return best;
}

/*
 * The next destination for this session: smooth weighted round-robin over the destinations
 * of this listener not yet tried, first among those up, then — when none is — among those
 * down, so every session still tries each once. weight 0 (draining) is never chosen. The
 * state is per listener and per worker: no shared write, and each listener's sessions are
 * shared by its own weights.
 */
static const struct gh_destination *choose(struct gh_relay *r)
{
    struct gh_dest_set *s = r->set;
    struct gh_wrr *wrr = wrr_for(r->c->worker, r->c->conf->name, s->n);
    for (int pass = 0; pass < 2; pass++) {
        for (unsigned i = 0; i < s->n; i++) {
            const struct gh_destination *d = &s->d[i];
            bool eligible = !r->tried[i] && d->weight && serves(d, r->c->conf) &&
                            gh_dest_usable(d) == (pass == 0);
            if (!wrr && eligible) /* no memory for the state: the first will do */
                return r->tried[i] = true, d;
            if (wrr)
                wrr->weight[i] = eligible ? d->weight : 0;
        }
        int best = wrr ? gh_swrr_pick(wrr->current, wrr->weight, s->n) : -1;
        if (best >= 0) {
            r->tried[best] = true;
            return &s->d[best];
        }
    }
    return NULL;
}

struct gh_dest_set *gh_dest_set_ref(struct gh_dest_set *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

static void health_unref(struct gh_dest_health *h)
{
    if (h && atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel) == 1)
        free(h);
}

void gh_dest_set_unref(struct gh_dest_set *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (unsigned i = 0; i < s->n; i++) {
        free(s->d[i].listeners);
        free(s->d[i].tls_ca_pem);
        SSL_CTX_free(s->d[i].tls_ctx);
        for (unsigned k = 0; s->d[i].tls_sessions && k < GH_WORKERS_MAX; k++)
            SSL_SESSION_free(s->d[i].tls_sessions[k]);
        free(s->d[i].tls_sessions);
        health_unref(s->d[i].health);
    }
    free(s->d);
    free(s);
}

/* The health state to keep: the previous one while the destination is checked at the same
 * place the same way; otherwise a fresh one ("unknown", usable). */
static struct gh_dest_health *health_for(const struct gh_destination *d,
                                         const struct gh_dest_set *prev)
{
    for (unsigned i = 0; prev && d->health_check && i < prev->n; i++) {
        const struct gh_destination *p = &prev->d[i];
        if (!strcmp(p->id, d->id) && p->health_check && p->protocol == d->protocol &&
            p->is_unix == d->is_unix && p->tls == d->tls && p->forwarding == d->forwarding &&
            (d->is_unix ? !strcmp(p->unix_path, d->unix_path)
                        : gh_sockaddr_equal(&p->addr, &d->addr))) {
            atomic_fetch_add_explicit(&p->health->refs, 1, memory_order_relaxed);
            return p->health;
        }
    }
    struct gh_dest_health *h = calloc(1, sizeof *h);
    if (h) {
        atomic_init(&h->refs, 1);
        atomic_init(&h->status, GH_DEST_UNKNOWN);
    }
    return h;
}

static bool dest_copy(struct gh_destination *to, const struct gh_destination *from,
                      const struct gh_dest_set *prev)
{
    *to = *from;
    to->listeners = NULL;
    to->tls_ca_pem = NULL;
    to->tls_ctx = NULL;
    to->tls_sessions = NULL;
    if (to->nlisteners && !(to->listeners = malloc(to->nlisteners * sizeof *to->listeners)))
        return false;
    if (to->nlisteners)
        memcpy(to->listeners, from->listeners, to->nlisteners * sizeof *to->listeners);
    if (from->tls_ca_pem && !(to->tls_ca_pem = strdup(from->tls_ca_pem)))
        return false;
    if (!(to->health = health_for(from, prev)))
        return false;
    if (to->tls != GH_BTLS_NONE) {
        gh_err err = {0};
        to->tls_ctx = gh_backend_tls_ctx(to->tls_verify, to->tls_ca_pem, &err);
        if (!to->tls_ctx) /* sessions there fail over; the health check says why */
            gh_log(NULL, NULL, "destination-tls-error", "destination %s: %s", to->name, err.msg);
        /* sessions live and die with this set: a changed trust anchor or name is never
         * skipped by resuming a session verified under the old one */
        else if (!(to->tls_sessions = calloc(GH_WORKERS_MAX, sizeof *to->tls_sessions)))
            return false;
    }
    return true;
}

struct gh_dest_set *gh_dest_set_new(const struct gh_destination *d, unsigned n,
                                    const struct gh_dest_set *prev, gh_err *err)
{
    struct gh_dest_set *s = calloc(1, sizeof *s);
    if (!s || (n && !(s->d = calloc(n, sizeof *s->d)))) {
        free(s);
        gh_fail(err, "destinations: out of memory");
        return NULL;
    }
    atomic_init(&s->refs, 1);
    for (; s->n < n; s->n++)
        if (!dest_copy(&s->d[s->n], &d[s->n], prev)) {
            s->n++; /* so the partial copy is freed */
            gh_dest_set_unref(s);
            gh_fail(err, "destinations: out of memory");
            return NULL;
        }
    return s;
}

static void install_destinations(struct gh_loop *loop, void *arg)
{
    struct gh_dest_set *s = arg;
    struct gh_worker *w = gh_worker_current();
    if (!w)
        return;
    gh_dest_set_unref(w->dests);
    w->dests = gh_dest_set_ref(s);
    gh_wrr_free(w); /* positions index the set: start again */
}

static void drop_creator_ref(void *arg)
{
    gh_dest_set_unref(arg);
}

void gh_engine_use_destinations(struct gh_engine *e, struct gh_dest_set *s)
{
    gh_engine_broadcast(e, install_destinations, gh_dest_set_ref(s), drop_creator_ref);
}

/* ---- the backend connection ---- */

static void relay_io(struct gh_io *io, uint32_t events);
static void relay_deadline(struct gh_timer *t);
static void attempt(struct gh_relay *r);

static void backend_events(struct gh_relay *r)
{
    uint32_t ev = (r->backend_paused ? 0 : EPOLLIN) | (r->want_write ? EPOLLOUT : 0);
    gh_io_mod(r->c->worker->loop, &r->b.io, ev | EPOLLRDHUP);
}

void gh_relay_close(struct gh_conn *c)
{
    struct gh_relay *r = c->relay;
    if (!r)
        return;
    gh_timer_cancel(c->worker->loop, &r->deadline);
    gh_backend_close(&r->b);
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
    free(r->tried);
    free(r->named);
    gh_dest_set_unref(r->set);
    free(r);
    c->relay = NULL;
}

/* No destination could take the session: the protocol's temporary failure, then close. */
static void give_up(struct gh_relay *r, const char *why)
{
    struct gh_conn *c = r->c;
    gh_conn_log(c, "handoff-failed", "%s", why);
    gh_metrics_handoff(c->metrics, GH_HANDOFF_FAILED);
    gh_timer_cancel(c->worker->loop, &r->deadline);
    gh_backend_close(&r->b);
    r->stage = RELAY_OPENING;     /* nothing flows: the session is not handed off */
    c->phase = GH_PHASE_PROTOCOL; /* so the reply leaves in clear or through TLS as before */
    if (c->proto->unavailable)
        gh_conn_write(c, c->proto->unavailable, strlen(c->proto->unavailable));
    /* the client may have spoken already (input is held during the hand-off): its bytes are
     * read and dropped after the reply, or the close would reset the reply away */
    gh_conn_close_lingering(c, RELAY_LINGER_MS);
}

/* A backend chosen at run time could not be used (why says how) or refused the login (why
 * NULL): the session goes back to its front door, which answers the client's command. The
 * relay stays, closed, for the front door's next attempt. */
static void login_failed(struct gh_relay *r, const char *why)
{
    struct gh_conn *c = r->c;
    if (why) {
        gh_conn_log(c, "backend-login-failed", "%s: %s", r->dest->name, why);
        gh_metrics_handoff(c->metrics, GH_HANDOFF_FAILED);
    }
    gh_timer_cancel(c->worker->loop, &r->deadline);
    gh_backend_close(&r->b);
    gh_buf_clear(&r->to_backend);
    gh_buf_clear(&r->reply);
    c->phase = GH_PHASE_PROTOCOL;
    gh_conn_pause_input(c, false);
    r->login.failed(r->login.ctx, c, why);
}

static void next_destination(struct gh_relay *r, const char *why)
{
    if (r->login.line) { /* no other backend to try */
        login_failed(r, why);
        return;
    }
    gh_conn_log(r->c, "handoff-retry", "destination %s: %s", r->dest->name, why);
    gh_metrics_handoff(r->c->metrics, GH_HANDOFF_RETRIED);
    gh_backend_close(&r->b);
    gh_timer_cancel(r->c->worker->loop, &r->deadline);
    gh_conn_pause_input(r->c, true);
    gh_buf_clear(&r->to_backend);
    gh_buf_clear(&r->reply);
    if (!(r->dest = choose(r))) {
        give_up(r, "no destination reachable");
        return;
    }
    attempt(r);
}

static size_t proxy_header(struct gh_relay *r, uint8_t *hdr, size_t cap)
{
    struct gh_conn *c = r->c;
    gh_conn_fill_local(c);
    if (r->dest->forwarding == GH_FWD_PROXY_V2)
        return gh_proxy_write_v2(&c->peer, &c->local, c->tls_active, hdr, cap);
    if (r->dest->forwarding == GH_FWD_PROXY_V1)
        return gh_proxy_write_v1(&c->peer, &c->local, (char *)hdr, cap);
    return 0;
}

static void start_flowing(struct gh_relay *r);
static bool send_to_backend(struct gh_relay *r);

/* The backend is open (TLS and greeting done as the destination asks). */
static void opened(struct gh_backend *b, const char *error)
{
    struct gh_relay *r = gh_container_of(b, struct gh_relay, b);
    if (error) {
        next_destination(r, error);
        return;
    }
    b->io.fn = relay_io;
    if (r->login.line) { /* the driver reads the greeting and logs in */
        r->stage = RELAY_LOGIN;
        gh_timer_set(r->c->worker->loop, &r->deadline, GREETING_DEADLINE_MS);
        backend_events(r);
        return;
    }
    if (r->swallow_greeting && r->hello) {
        r->stage = RELAY_HELLO;
        gh_timer_set(r->c->worker->loop, &r->deadline, GREETING_DEADLINE_MS);
        gh_buf_append(&r->to_backend, r->hello, strlen(r->hello));
        gh_buf_append(&r->to_backend, "\r\n", 2);
        backend_events(r);
        if (!send_to_backend(r))
            next_destination(r, "connection lost");
        return;
    }
    if (!r->swallow_greeting && b->greeting) /* read to upgrade the leg: the client's now */
        gh_conn_write(r->c, b->greeting, b->greeting_len);
    r->backend_spoke = r->backend_spoke || (!r->swallow_greeting && b->greeting);
    start_flowing(r);
    backend_events(r);
}

static void attempt(struct gh_relay *r)
{
    uint8_t hdr[GH_PROXY_V2_WRITE_MAX > GH_PROXY_V1_MAX + 1 ? GH_PROXY_V2_WRITE_MAX
                                                            : GH_PROXY_V1_MAX + 1];
    size_t n = proxy_header(r, hdr, sizeof hdr);
    memset(&r->b, 0, sizeof r->b);
    r->stage = RELAY_OPENING;
    r->want_write = r->backend_paused = false;
    r->b.step_timeout_ms = GREETING_DEADLINE_MS;
    if (r->dest->tls == GH_BTLS_STARTTLS) /* only an upgrade says hello before the client */
        r->b.hello_name = strdup(gh_conn_hostname(r->c));
    if (!gh_backend_open(&r->b, r->c->worker->loop, r->dest, hdr, n, r->swallow_greeting, opened))
        next_destination(r, "cannot connect");
}

void gh_conn_handoff(struct gh_conn *c, bool swallow_greeting, const char *hello, const char *first)
{
    struct gh_relay *r = gh_zalloc(sizeof *r);
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
    struct gh_dest_set *s = c->worker->dests;
    if (s && s->n) {
        r->set = gh_dest_set_ref(s);
        r->tried = gh_zalloc(s->n * sizeof *r->tried);
    }
    if (!r->tried || !(r->dest = choose(r))) {
        give_up(r, "no destination for this listener");
        return;
    }
    attempt(r);
}

void gh_conn_handoff_to(struct gh_conn *c, const struct gh_sockaddr *addr,
                        enum gh_forwarding forwarding, uint32_t connect_timeout_ms,
                        const struct gh_backend_login *login)
{
    struct gh_destination *named = malloc(sizeof *named);
    struct gh_relay *r = c->relay; /* an earlier login's, its backend closed: reused */
    if (!named || (!r && !(r = gh_zalloc(sizeof *r)))) {
        free(named);
        gh_conn_close(c);
        return;
    }
    free(r->named);
    r->named = named;
    r->c = c;
    r->deadline.fn = relay_deadline;
    r->login = *login;
    r->backend_spoke = r->client_spoke = false;
    *named = (struct gh_destination){.protocol = c->conf->protocol,
                                     .addr = *addr,
                                     .forwarding = forwarding,
                                     .connect_timeout_ms = connect_timeout_ms,
                                     .tls = GH_BTLS_NONE};
    char text[GH_ADDR_TEXT];
    gh_sockaddr_format(addr, text);
    snprintf(named->name, sizeof named->name, "%s", text);
    r->dest = named;
    c->relay = r;
    c->phase = GH_PHASE_RELAY;
    gh_conn_pause_input(c, true); /* the client waits until the login is done */
    attempt(r);
}

/* ---- moving bytes ---- */

static bool send_to_backend(struct gh_relay *r)
{
    while (gh_buf_len(&r->to_backend)) {
        ssize_t n = gh_backend_send(&r->b, gh_buf_head(&r->to_backend), gh_buf_len(&r->to_backend));
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            break;
        if (n <= 0)
            return false;
        gh_buf_consume(&r->to_backend, (size_t)n);
        if (r->stage == RELAY_FLOWING)
            gh_metrics_relay_bytes(r->c->metrics, GH_TO_DESTINATION, (uint64_t)n);
    }
    int flushed = gh_buf_len(&r->to_backend) ? 1 : gh_backend_flush(&r->b);
    if (flushed < 0)
        return false;
    bool pending = gh_buf_len(&r->to_backend) > 0 || !flushed;
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

/* The backend is ready for the client's bytes: what the front door had taken first, then
 * what is still buffered, then everything as it comes. */
static void start_flowing(struct gh_relay *r)
{
    struct gh_conn *c = r->c;
    gh_timer_set(c->worker->loop, &r->deadline, RELAY_IDLE_MS);
    r->stage = RELAY_FLOWING;
    gh_metrics_handoff(c->metrics, GH_HANDOFF_OK);
    if (r->first) {
        gh_buf_append(&r->to_backend, r->first, strlen(r->first));
        gh_buf_append(&r->to_backend, "\r\n", 2);
    }
    gh_buf_move(&r->to_backend, &c->in);
    r->client_spoke = r->client_spoke || gh_buf_len(&r->to_backend) > 0;
    gh_conn_pause_input(c, false);
    if (!send_to_backend(r))
        gh_conn_close_lingering(c, RELAY_LINGER_MS);
}

/* Reads the reply to our hello, which the client must not see; false on failure. */
static bool swallow_hello_reply(struct gh_relay *r)
{
    char chunk[4096];
    ssize_t n = gh_backend_recv(&r->b, chunk, sizeof chunk);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return true;
    if (n <= 0 || !gh_buf_append(&r->reply, chunk, (size_t)n) ||
        gh_buf_len(&r->reply) > GREETING_MAX)
        return false;
    enum gh_protocol p = r->c->conf->protocol;
    size_t len = gh_backend_reply_length(p, gh_buf_head(&r->reply), gh_buf_len(&r->reply));
    if (!len)
        return true;
    gh_buf_append(&r->reply, "", 1); /* NUL for the checks below */
    if (!gh_backend_reply_positive(p, gh_buf_head(&r->reply)))
        return false;
    if (gh_buf_len(&r->reply) - 1 > len || gh_backend_pending(&r->b))
        return false; /* a backend that speaks ahead of its turn */
    gh_buf_clear(&r->reply);
    start_flowing(r);
    return true;
}

/* The login dialogue: each complete backend line goes to the protocol's driver. */
static void login_input(struct gh_relay *r)
{
    char chunk[4096];
    ssize_t n = gh_backend_recv(&r->b, chunk, sizeof chunk);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0 || !gh_buf_append(&r->reply, chunk, (size_t)n) ||
        gh_buf_len(&r->reply) > GREETING_MAX) {
        login_failed(r, n <= 0 ? "the backend closed the connection during the login"
                               : "the backend's login replies are too long");
        return;
    }
    char *head, *nl;
    while ((nl = memchr(head = gh_buf_head(&r->reply), '\n', gh_buf_len(&r->reply)))) {
        size_t len = (size_t)(nl - head), used = len + 1;
        if (len && head[len - 1] == '\r')
            len--;
        head[len] = 0;
        enum gh_login_step step = r->login.line(r->login.ctx, r->c, head, len, &r->to_backend);
        if (r->c->closed) /* the driver ended the session */
            return;
        gh_buf_consume(&r->reply, used);
        if (step == GH_LOGIN_REFUSED) {
            login_failed(r, NULL);
            return;
        }
        if (step == GH_LOGIN_DONE) {
            /* the backend may already have spoken past its reply: the client's now */
            gh_conn_write(r->c, gh_buf_head(&r->reply), gh_buf_len(&r->reply));
            gh_buf_clear(&r->reply);
            r->backend_spoke = true; /* its greeting: a close from now on ends the session */
            start_flowing(r);
            backend_events(r);
            return;
        }
        if (!send_to_backend(r)) {
            login_failed(r, "connection lost");
            return;
        }
    }
}

/* Reads what the backend has, up to len: the records a transfer has read ahead are taken
 * together, so that they leave for the client in one send. */
static ssize_t backend_read(struct gh_relay *r, char *buf, size_t len)
{
    ssize_t n = gh_backend_recv(&r->b, buf, len);
    size_t got = n > 0 ? (size_t)n : 0;
    while (n > 0 && got < len && gh_backend_buffered(&r->b) &&
           (n = gh_backend_recv(&r->b, buf + got, len - got)) > 0)
        got += (size_t)n;
    return got ? (ssize_t)got : n; /* an end after bytes shows again on the next read */
}

/* The backend ended the session: its last words, then our end. After the client's goodbye,
 * which those words answer, the client has nothing more to say: the socket closes at once,
 * as nginx's and HAProxy's proxies close theirs. Otherwise whatever the client still sends
 * is read and dropped for a while, so that no reset overtakes those words. */
static void backend_ended(struct gh_relay *r)
{
    if (r->client_said_goodbye && !gh_buf_len(&r->c->in))
        gh_conn_close_after_flush(r->c);
    else
        gh_conn_close_lingering(r->c, RELAY_LINGER_MS);
}

static void backend_to_client(struct gh_relay *r)
{
    char chunk[GH_RELAY_STREAM_CHUNK];
    do {
        ssize_t n = backend_read(r, chunk, r->streaming ? sizeof chunk : SSL3_RT_MAX_PLAIN_LENGTH);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n <= 0 && !r->backend_spoke && !r->client_spoke) {
            /* closed before its greeting (a backend stopping): nothing was said on either
             * side, so the session can still go elsewhere */
            next_destination(r, "closed before its greeting");
            return;
        }
        if (n <= 0) {
            gh_backend_close(&r->b);
            backend_ended(r);
            return;
        }
        r->backend_spoke = true;
        gh_timer_set(r->c->worker->loop, &r->deadline, RELAY_IDLE_MS);
        gh_metrics_relay_bytes(r->c->metrics, GH_TO_CLIENT, (uint64_t)n);
        r->copied += (size_t)n;
        gh_conn_write(r->c, chunk, (size_t)n);
        if (!r->c->closed && gh_buf_len(&r->c->out) >= RELAY_HIGH && !r->backend_paused) {
            r->backend_paused = true;
            backend_events(r);
        }
        /* TLS may hold bytes (decrypted, or read ahead) that no readiness will report */
    } while (!r->c->closed && !r->backend_paused && gh_backend_buffered(&r->b));
}

/* ---- splice ---- */

/* Nothing is held in our buffers for either direction (a plain relay holds no TLS state). */
static bool can_splice(const struct gh_relay *r)
{
    const struct gh_conn *c = r->c;
    return !r->spliced && c->phase == GH_PHASE_RELAY && !gh_buf_len(&c->in) &&
           !gh_buf_len(&c->out) && !gh_buf_len(&r->to_backend) && r->b.registered;
}

/* Level-triggered, so a pump cut short at its round limit is called again while bytes
 * remain. (Edge-triggered watches were tried: on io_uring a multishot poll reports every
 * wakeup of a busy socket, and some runs made three times the system calls per megabyte.) */
static void splice_events(struct gh_relay *r)
{
    struct gh_loop *loop = r->c->worker->loop;
    gh_io_mod(loop, &r->c->io, gh_splice_src_events(&r->up) | gh_splice_dst_events(&r->down));
    gh_io_mod(loop, &r->b.io, gh_splice_src_events(&r->down) | gh_splice_dst_events(&r->up));
}

static void maybe_splice(struct gh_relay *r)
{
    if (!can_splice(r))
        return;
    /* splice reads both sockets itself: the loop's ring I/O must hand them back first
     * (what it already holds still arrives through the copying relay). */
    struct gh_loop *loop = r->c->worker->loop;
    bool client_idle = gh_io_ring_idle(loop, &r->c->io),
         backend_idle = gh_io_ring_idle(loop, &r->b.io);
    if (!client_idle || !backend_idle) {
        gh_io_ring(loop, &r->c->io, false);
        gh_io_ring(loop, &r->b.io, false);
        return;
    }
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

/* A TLS session of a streaming relay: each read takes up to one chunk of records. */
static void read_ahead(SSL *ssl)
{
    if (!ssl)
        return;
    SSL_set_read_ahead(ssl, 1);
    SSL_set_default_read_buffer_len(ssl, GH_RELAY_STREAM_CHUNK);
}

/* A transfer with TLS on a leg (which splice cannot carry) streams records: its TLS sessions
 * read ahead (one recv takes up to 64 KiB, four records, instead of a header, then a body),
 * what one read takes leaves in one send (gh_tls_io_write gathers its records: a send per
 * record is a system call per 16 KiB, docs/BENCHMARKS.md), and on io_uring both sockets move
 * to readiness and direct system calls. The ring saves a system call per exchange, but
 * records streaming through it (cut into its 4 KiB receive buffers, sent into sockets kept
 * full) cost about 1.5 times the CPU per megabyte at 1,024 streams (docs/BENCHMARKS.md). The
 * record buffers are still borrowed per record: keeping them measured level (1,024 streams'
 * buffers do not stay in the caches). */
static void stream_tls(struct gh_relay *r)
{
    if (r->streaming || !r->b.registered)
        return;
    struct gh_loop *loop = r->c->worker->loop;
    gh_io_ring(loop, &r->c->io, false);
    gh_io_ring(loop, &r->b.io, false);
    read_ahead(r->c->ssl);
    read_ahead(r->b.ssl);
    r->streaming = true;
}

/* After bytes moved through our buffers: a session that has shown itself to be a transfer
 * moves the rest the cheaper way, by splice between two plain sockets, or as streamed
 * records when a leg has TLS. */
static void maybe_transfer(struct gh_relay *r)
{
    if (r->c->closed || r->stage != RELAY_FLOWING || r->copied < TRANSFER_AFTER)
        return;
    if (r->c->ssl || r->b.ssl)
        stream_tls(r);
    else
        maybe_splice(r);
}

/* Either socket of a spliced relay is ready: move what can move, end when both ends have. */
static void splice_io(struct gh_relay *r)
{
    struct gh_conn *c = r->c;
    ssize_t up = gh_splice_pump(&r->up, c->io.fd, r->b.io.fd);
    ssize_t down = up < 0 ? -1 : gh_splice_pump(&r->down, r->b.io.fd, c->io.fd);
    if (up > 0)
        gh_metrics_relay_bytes(c->metrics, GH_TO_DESTINATION, (uint64_t)up);
    if (down > 0)
        gh_metrics_relay_bytes(c->metrics, GH_TO_CLIENT, (uint64_t)down);
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
    struct gh_relay *r = gh_container_of(io, struct gh_relay, b.io);
    if (r->c->closed || !r->b.registered)
        return; /* an event of the same batch, after the session or this attempt ended */
    if (r->spliced) {
        splice_io(r);
        return;
    }
    if ((events & EPOLLOUT) && !send_to_backend(r)) {
        if (r->stage == RELAY_FLOWING)
            gh_conn_close(r->c);
        else
            next_destination(r, "connection lost");
        return;
    }
    if (!(events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) || r->backend_paused)
        return;
    if (r->stage == RELAY_FLOWING) {
        backend_to_client(r);
        maybe_transfer(r);
    } else if (r->stage == RELAY_LOGIN)
        login_input(r);
    else if (!swallow_hello_reply(r))
        next_destination(r, "hello refused");
}

static void relay_deadline(struct gh_timer *t)
{
    struct gh_relay *r = gh_container_of(t, struct gh_relay, deadline);
    if (r->stage == RELAY_FLOWING) {
        gh_conn_close(r->c); /* an hour without a byte from the backend */
        return;
    }
    next_destination(r,
                     r->stage == RELAY_LOGIN ? "the login timed out" : "no reply to hello in time");
}

/* Whether bytes end with the line `word`, or `<tag> word`, in any case: only the last line
 * counts, so a body line is forgotten as soon as anything follows it. */
static bool ends_with_line(const char *p, size_t n, const char *word)
{
    size_t w = word ? strlen(word) : 0;
    if (!w || n < w + 2 || memcmp(p + n - 2, "\r\n", 2) || strncasecmp(p + n - 2 - w, word, w))
        return false;
    size_t before = n - 2 - w; /* the bytes ahead of the word */
    return !before || p[before - 1] == '\n' || p[before - 1] == ' ';
}

void gh_relay_client_input(struct gh_conn *c)
{
    struct gh_relay *r = c->relay;
    if (!r || r->stage != RELAY_FLOWING)
        return; /* held in c->in until the backend is ready */
    r->client_said_goodbye = ends_with_line(gh_buf_head(&c->in), gh_buf_len(&c->in),
                                            c->proto ? c->proto->end_command : NULL);
    r->copied += gh_buf_len(&c->in);
    r->client_spoke = true;
    if (!gh_buf_move(&r->to_backend, &c->in) || !send_to_backend(r)) {
        gh_conn_close(c);
        return;
    }
    maybe_transfer(r);
}

void gh_relay_client_drained(struct gh_conn *c)
{
    struct gh_relay *r = c->relay;
    if (r && r->backend_paused && r->b.registered) {
        r->backend_paused = false;
        backend_events(r);
        if (r->stage == RELAY_FLOWING && gh_backend_buffered(&r->b))
            backend_to_client(r);
    }
    if (r)
        maybe_transfer(r);
}

bool gh_relay_streaming(const struct gh_conn *c)
{
    return c->relay && c->relay->streaming;
}

const char *gh_relay_destination(const struct gh_conn *c)
{
    const struct gh_relay *r = c->relay;
    return r && r->stage == RELAY_FLOWING && r->dest ? r->dest->name : NULL;
}

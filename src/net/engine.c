/*
 * engine: listeners and workers. The control side (apply/remove, under one mutex that
 * the accept path never takes) binds and shuts sockets synchronously, then tells each
 * worker by message which sockets to watch; workers own the descriptors they are given.
 * Moves of addresses between listeners are in engine_move.c, binary upgrades in
 * engine_upgrade.c; the types all three share are in engine-t.h.
 */
#include "net/engine.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/service.h"
#include "core/buf.h"
#include "core/log.h"
#include "metrics/metrics.h"
#include "net/conn.h"
#include "net/engine-t.h"
#include "net/fd_reserve.h"
#include "net/tls.h"
#include "net/worker.h"
#include "proto/proto.h"

#define BACKOFF_MIN_MS 10
#define BACKOFF_MAX_MS 1000

struct gh_engine *gh_engine_global;
static _Thread_local struct gh_worker *current_worker;

struct gh_worker *gh_worker_current(void)
{
    return current_worker;
}

/* ---- listener runtime ---- */

void gh_listener_rt_unref(struct gh_listener_rt *rt)
{
    if (rt && atomic_fetch_sub_explicit(&rt->refs, 1, memory_order_acq_rel) == 1) {
        gh_metrics_listener_unref(rt->metrics);
        free(rt);
    }
}

bool gh_listener_rt_admit(struct gh_listener_rt *rt, uint32_t max)
{
    unsigned cur = atomic_load_explicit(&rt->live, memory_order_relaxed);
    do {
        if (cur >= max)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(&rt->live, &cur, cur + 1, memory_order_acq_rel,
                                                    memory_order_relaxed));
    return true;
}

void gh_listener_rt_release(struct gh_listener_rt *rt)
{
    atomic_fetch_sub_explicit(&rt->live, 1, memory_order_acq_rel);
}

/* ---- worker side: messages ---- */

struct msg_add {
    int fd;
    bool exclusive;
    struct gh_listener_rt *rt;
    struct gh_listener_conf *conf;
    SSL_CTX *ctx;
};

struct msg_update {
    struct gh_listener_rt *rt;
    struct gh_listener_conf *conf;
    SSL_CTX *ctx;
};

struct gh_worker *gh_engine_worker_of(struct gh_loop *loop, struct gh_engine *e)
{
    for (unsigned i = 0; i < e->nworkers; i++)
        if (e->workers[i].loop == loop)
            return &e->workers[i];
    return NULL;
}

void gh_engine_wsock_free(struct gh_wsock *ws)
{
    gh_timer_cancel(ws->worker->loop, &ws->backoff);
    if (!ws->paused)
        gh_io_del(ws->worker->loop, &ws->io);
    close(ws->io.fd);
    gh_listener_rt_unref(ws->rt);
    gh_listener_conf_unref(ws->conf);
    SSL_CTX_free(ws->ctx);
    free(ws);
}

/* Every dup of one listening socket has the socket's inode. */
static ino_t socket_id(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 ? st.st_ino : 0;
}

/* The first watch of list on the socket with this inode (0: unknown, none). */
static struct gh_wsock *on_socket(struct gh_wsock *list, ino_t id)
{
    for (; list && id; list = list->next)
        if (list->socket_id == id)
            return list;
    return NULL;
}

/* Accepts through the ring, unless a retiring watch of the same socket may still have an
 * accept there. The kernel wakes one accept per connection (they wait exclusively): one being
 * cancelled could take a connection's wake-up and act on nothing, leaving the connection
 * queued and this accept asleep. Until the retiring one is gone (on_retiring calls this
 * again), this watch keeps its shared poll and accepts by system call. */
static void accept_through_ring(struct gh_wsock *ws)
{
    struct gh_worker *w = ws->worker;
    if (!ws->paused && !on_socket(w->retiring, ws->socket_id))
        gh_io_ring_accept(w->loop, &ws->io, true);
}

static void wsock_resume(struct gh_timer *t)
{
    struct gh_wsock *ws = gh_container_of(t, struct gh_wsock, backoff);
    if (ws->paused && gh_io_add(ws->worker->loop, &ws->io, EPOLLIN, NULL)) {
        ws->paused = false;
        accept_through_ring(ws);
    }
}

/* Out of descriptors: stop watching this socket for a while instead of spinning. */
static void wsock_back_off(struct gh_wsock *ws, int err)
{
    ws->backoff_ms = ws->backoff_ms ? ws->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (ws->backoff_ms > BACKOFF_MAX_MS)
        ws->backoff_ms = BACKOFF_MAX_MS;
    if (err)
        gh_log(ws->conf->name, NULL, "accept-error", "%s; pausing accepts for %u ms", strerror(err),
               ws->backoff_ms);
    else
        gh_log(ws->conf->name, NULL, "accept-error",
               "descriptors nearly exhausted (the last %u of %u are kept for the management "
               "API); pausing accepts for %u ms",
               gh_fd_reserve(), gh_fd_limit(), ws->backoff_ms);
    gh_io_del(ws->worker->loop, &ws->io);
    ws->paused = true;
    gh_timer_set(ws->worker->loop, &ws->backoff, ws->backoff_ms);
}

/* A mail client whose descriptor fell in the management reserve: told to come back later
 * when the protocol speaks first in clear (best effort, never waiting), then closed. */
static void refuse_in_reserve(struct gh_wsock *ws, int fd)
{
    const struct gh_proto *proto = gh_proto_for(ws->conf->protocol);
    bool implicit = ws->conf->use_tls && ws->conf->tls_implicit;
    if (!implicit && proto && proto->over_limit)
        (void)!send(fd, proto->over_limit, strlen(proto->over_limit), MSG_DONTWAIT | MSG_NOSIGNAL);
    close(fd);
}

/* A removed socket's last connection, taken by an accept that was in the ring when it was
 * removed: it came after the change, so the socket's new owner in this worker serves it
 * when there is one (an address moved to another listener); otherwise it is served as the
 * old owner's (the socket lives on in the process an upgrade handed it to, and the client
 * chose it). Then, once the ring holds nothing of its, the socket is freed. */
static void on_retiring(struct gh_wsock *ws)
{
    struct gh_worker *w = ws->worker;
    if (!gh_io_ring_idle(w->loop, &ws->io)) {
        struct gh_sockaddr peer = {.len = sizeof peer.u};
        int fd = gh_io_accept(w->loop, &ws->io, &peer.u.sa, &peer.len);
        struct gh_wsock *owner = on_socket(w->socks, ws->socket_id);
        if (!owner)
            owner = ws;
        if (fd >= 0 && owner->conf->protocol != GH_PROTO_HTTP && gh_fd_in_reserve(fd))
            refuse_in_reserve(owner, fd);
        else if (fd >= 0)
            gh_conn_accepted(w, owner, fd, &peer);
    }
    if (!gh_io_ring_idle(w->loop, &ws->io))
        return;
    for (struct gh_wsock **pp = &w->retiring; *pp; pp = &(*pp)->next) {
        if (*pp == ws) {
            *pp = ws->next;
            break;
        }
    }
    ino_t id = ws->socket_id;
    gh_engine_wsock_free(ws);
    struct gh_wsock *owner = on_socket(w->socks, id);
    if (owner)
        accept_through_ring(owner); /* it waited for this one's accept to end */
    gh_worker_maybe_finish(w);
}

void gh_engine_wsock_retire(struct gh_wsock *ws)
{
    struct gh_worker *w = ws->worker;
    if (!ws->paused)
        gh_io_ring_accept(w->loop, &ws->io, false);
    if (ws->paused || gh_io_ring_idle(w->loop, &ws->io)) {
        gh_engine_wsock_free(ws);
        return;
    }
    ws->retiring = true;
    ws->next = w->retiring;
    w->retiring = ws;
}

static void on_accept(struct gh_io *io, uint32_t events)
{
    struct gh_wsock *ws = gh_container_of(io, struct gh_wsock, io);
    struct gh_worker *w = ws->worker;
    if (ws->retiring) {
        on_retiring(ws);
        return;
    }
    /* One accept per readiness event, as nginx does by default: the socket is watched
     * level-triggered, so a longer queue brings us back at once, and a short one does not
     * pay for an accept that only says EAGAIN. (Through the ring, EPOLLIN means the
     * connection is already taken.) */
    for (int i = 0; i < 1 && !w->stopping; i++) {
        struct gh_sockaddr peer = {.len = sizeof peer.u};
        int fd = gh_io_accept(w->loop, io, &peer.u.sa, &peer.len);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                wsock_back_off(ws, errno);
            else if (errno == EINVAL) { /* shut down by the control side; closed by message */
                gh_io_del(w->loop, io);
                ws->paused = true;
            }
            return;
        }
        if (ws->conf->protocol != GH_PROTO_HTTP && gh_fd_in_reserve(fd)) {
            refuse_in_reserve(ws, fd);
            wsock_back_off(ws, 0);
            return;
        }
        ws->backoff_ms = 0;
        gh_conn_accepted(w, ws, fd, &peer);
    }
}

/* A socket bound to one address gives its connections their local address for free. */
static void learn_local(struct gh_wsock *ws)
{
    struct gh_sockaddr a = {.len = sizeof a.u};
    if (getsockname(ws->io.fd, &a.u.sa, &a.len) < 0)
        return;
    bool wildcard = a.u.sa.sa_family == AF_INET ? a.u.v4.sin_addr.s_addr == htonl(INADDR_ANY)
                                                : IN6_IS_ADDR_UNSPECIFIED(&a.u.v6.sin6_addr);
    if (!wildcard)
        ws->local = a;
}

static void do_add(struct gh_loop *loop, void *arg)
{
    struct msg_add *m = arg;
    struct gh_worker *w = gh_engine_worker_of(loop, gh_engine_global);
    struct gh_wsock *ws = calloc(1, sizeof *ws);
    if (!ws || !w) {
        free(ws);
        close(m->fd);
        goto out;
    }
    ws->io.fd = m->fd;
    ws->io.fn = on_accept;
    ws->backoff.fn = wsock_resume;
    ws->worker = w;
    ws->rt = gh_listener_rt_ref(m->rt);
    ws->conf = gh_listener_conf_ref(m->conf);
    ws->ctx = m->ctx && SSL_CTX_up_ref(m->ctx) ? m->ctx : NULL;
    learn_local(ws);
    gh_err err = {0};
    if (w->stopping ||
        !gh_io_add(loop, &ws->io, EPOLLIN | (m->exclusive ? EPOLLEXCLUSIVE : 0), &err)) {
        ws->paused = true;
        gh_engine_wsock_free(ws);
        goto out;
    }
    ws->socket_id = socket_id(ws->io.fd);
    accept_through_ring(ws); /* on io_uring: no accept4 per connection */
    ws->next = w->socks;
    w->socks = ws;
out:
    gh_listener_rt_unref(m->rt);
    gh_listener_conf_unref(m->conf);
    SSL_CTX_free(m->ctx);
    free(m);
}

static void do_update(struct gh_loop *loop, void *arg)
{
    struct msg_update *m = arg;
    struct gh_worker *w = gh_engine_worker_of(loop, gh_engine_global);
    for (struct gh_wsock *ws = w ? w->socks : NULL; ws; ws = ws->next) {
        if (ws->rt != m->rt)
            continue;
        gh_listener_conf_unref(ws->conf);
        ws->conf = gh_listener_conf_ref(m->conf);
        SSL_CTX_free(ws->ctx);
        ws->ctx = m->ctx && SSL_CTX_up_ref(m->ctx) ? m->ctx : NULL;
    }
    gh_listener_rt_unref(m->rt);
    gh_listener_conf_unref(m->conf);
    SSL_CTX_free(m->ctx);
    free(m);
}

struct msg_remove {
    int fd;
    struct gh_listener_rt *rt;
};

static void do_remove(struct gh_loop *loop, void *arg)
{
    struct msg_remove *m = arg;
    struct gh_worker *w = gh_engine_worker_of(loop, gh_engine_global);
    for (struct gh_wsock **pp = w ? &w->socks : NULL; pp && *pp; pp = &(*pp)->next) {
        if ((*pp)->io.fd == m->fd && (*pp)->rt == m->rt) {
            struct gh_wsock *ws = *pp;
            *pp = ws->next;
            gh_engine_wsock_retire(ws);
            break;
        }
    }
    gh_listener_rt_unref(m->rt);
    free(m);
}

static void do_settings(struct gh_loop *loop, void *arg)
{
    struct gh_wsettings *s = arg;
    struct gh_worker *w = gh_engine_worker_of(loop, gh_engine_global);
    if (!w) {
        free(s);
        return;
    }
    free(w->settings);
    w->settings = s;
}

/* ---- control side: sockets ---- */

static bool set_int(int fd, int level, int opt, int value, const char *what,
                    const struct gh_sockaddr *a, gh_err *err)
{
    if (setsockopt(fd, level, opt, &value, sizeof value) == 0)
        return true;
    char text[GH_ADDR_TEXT];
    gh_sockaddr_format(a, text);
    return gh_fail_sys(err, errno, "%s on %s", what, text);
}

/*
 * Options that may change on a socket that stays: buffers, TOS, backlog, and the options
 * of accepted sockets. Linux copies TCP_NODELAY, IP_TTL/IPV6_UNICAST_HOPS and IP_TOS from
 * the listening socket to every socket it accepts, so setting them here once gives each
 * accepted socket its options without a system call per connection.
 */
bool gh_engine_tune_socket(int fd, const struct gh_listener_conf *c, const struct gh_sockaddr *a,
                           gh_err *err)
{
    int ttl = c->ttl ? c->ttl : -1; /* -1 puts the system default back */
    if (c->rcvbuf && !set_int(fd, SOL_SOCKET, SO_RCVBUF, c->rcvbuf, "SO_RCVBUF", a, err))
        return false;
    if (c->sndbuf && !set_int(fd, SOL_SOCKET, SO_SNDBUF, c->sndbuf, "SO_SNDBUF", a, err))
        return false;
    if (!set_int(fd, IPPROTO_TCP, TCP_NODELAY, c->nodelay, "TCP_NODELAY", a, err) ||
        !set_int(fd, IPPROTO_IP, IP_TTL, ttl, "IP_TTL", a, err))
        return false;
    if (a->u.sa.sa_family == AF_INET)
        return set_int(fd, IPPROTO_IP, IP_TOS, c->tos, "IP_TOS", a, err);
    return set_int(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, ttl, "IPV6_UNICAST_HOPS", a, err);
}

static int open_socket(const struct gh_listener_conf *c, const struct gh_sockaddr *a, gh_err *err)
{
    char text[GH_ADDR_TEXT];
    gh_sockaddr_format(a, text);
    int fd = socket(a->u.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        gh_fail_sys(err, errno, "socket for %s", text);
        return -1;
    }
    if (!set_int(fd, SOL_SOCKET, SO_REUSEADDR, c->reuseaddr, "SO_REUSEADDR", a, err) ||
        !set_int(fd, SOL_SOCKET, SO_REUSEPORT, c->reuseport, "SO_REUSEPORT", a, err) ||
        !gh_engine_tune_socket(fd, c, a, err))
        goto fail;
    /* A socket whose bind failed is never put into listen: Linux would auto-bind it. */
    if (bind(fd, &a->u.sa, a->len) < 0) {
        gh_fail_sys(err, errno, "bind %s", text);
        goto fail;
    }
    if (listen(fd, (int)c->backlog) < 0) {
        gh_fail_sys(err, errno, "listen %s", text);
        goto fail;
    }
    return fd;
fail:
    close(fd);
    return -1;
}

void gh_engine_bound_close(struct bound *b)
{
    for (unsigned i = 0; i < b->nfds; i++)
        close(b->fds[i]);
    free(b);
}

/* SO_REUSEPORT lets any socket of the same user join the group, so a second daemon (or
 * any other program) already listening there would silently share the address. A probe
 * bound without SO_REUSEPORT finds such an owner first. */
static bool address_free(const struct gh_listener_conf *c, const struct gh_sockaddr *a, gh_err *err)
{
    int fd = socket(a->u.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return gh_fail_sys(err, errno, "socket");
    int reuse = c->reuseaddr;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &reuse, sizeof reuse);
    bool ok = bind(fd, &a->u.sa, a->len) == 0;
    if (!ok) {
        char text[GH_ADDR_TEXT];
        gh_sockaddr_format(a, text);
        gh_fail_sys(err, errno, "bind %s", text);
    }
    close(fd);
    return ok;
}

static unsigned inherited_count(struct gh_engine *e, const struct gh_sockaddr *a)
{
    unsigned n = 0;
    for (struct inherited *in = e->inherited; in; in = in->next)
        n += gh_sockaddr_equal(&in->addr, a);
    return n;
}

/* Takes an inherited socket of address a out of the list, re-tuned for c; -1 when none. */
static int adopt_inherited(struct gh_engine *e, const struct gh_listener_conf *c,
                           const struct gh_sockaddr *a, gh_err *err)
{
    for (struct inherited **pp = &e->inherited; *pp; pp = &(*pp)->next) {
        struct inherited *in = *pp;
        if (!gh_sockaddr_equal(&in->addr, a))
            continue;
        *pp = in->next;
        int fd = in->fd;
        free(in);
        if (!gh_engine_tune_socket(fd, c, a, err) || listen(fd, (int)c->backlog) < 0) {
            if (!err->msg[0])
                gh_fail_sys(err, errno, "listen on an inherited socket");
            close(fd);
            return -1;
        }
        return fd;
    }
    return -1;
}

struct bound *gh_engine_bound_open(struct gh_engine *e, const struct gh_listener_conf *c,
                                   const struct gh_sockaddr *a, gh_err *err)
{
    /* Sockets handed over by an upgrade are adopted as they are: binding anew would find
     * the address taken (by those very sockets). */
    unsigned adopt = inherited_count(e, a);
    if (c->reuseport && !adopt && !address_free(c, a, err))
        return NULL;
    unsigned n = adopt ? adopt : c->reuseport ? e->nworkers : 1;
    struct bound *b = calloc(1, sizeof *b + (n + e->nworkers) * sizeof(int));
    if (!b) {
        gh_fail(err, "out of memory");
        return NULL;
    }
    b->wfds = b->fds + n;
    for (unsigned i = 0; i < e->nworkers; i++)
        b->wfds[i] = -1;
    b->addr = *a;
    b->reuseport = c->reuseport;
    b->reuseaddr = c->reuseaddr;
    for (; b->nfds < n; b->nfds++) {
        b->fds[b->nfds] = adopt ? adopt_inherited(e, c, a, err) : open_socket(c, a, err);
        if (b->fds[b->nfds] < 0) {
            gh_engine_bound_close(b);
            return NULL;
        }
    }
    return b;
}

/* Hands the sockets of b to the workers: worker i watches a dup of fds[i] (or of the one
 * shared socket, with EPOLLEXCLUSIVE so one worker wakes per connection). */
void gh_engine_bound_publish(struct gh_engine *e, struct bound *b, struct lstate *st)
{
    for (unsigned i = 0; i < e->nworkers; i++) {
        struct msg_add *m = calloc(1, sizeof *m);
        int fd = fcntl(b->fds[i % b->nfds], F_DUPFD_CLOEXEC, 0);
        if (!m || fd < 0) {
            free(m);
            if (fd >= 0)
                close(fd);
            continue;
        }
        m->fd = b->wfds[i] = fd;
        m->exclusive = b->nfds == 1 && e->nworkers > 1;
        m->rt = gh_listener_rt_ref(st->rt);
        m->conf = gh_listener_conf_ref(st->conf);
        m->ctx = st->ctx && SSL_CTX_up_ref(st->ctx) ? st->ctx : NULL;
        gh_loop_post(e->workers[i].loop, do_add, m);
    }
}

/* Stops accepting at once (shutdown of a listening socket unhashes it, so the address
 * refuses new connections before this returns), then lets each worker close its dup. */
void gh_engine_withdraw(struct gh_engine *e, struct lstate *st, struct bound *b)
{
    for (unsigned i = 0; i < b->nfds && !e->handed_over; i++)
        shutdown(b->fds[i], SHUT_RDWR);
    for (unsigned i = 0; i < e->nworkers; i++) {
        struct msg_remove *m = malloc(sizeof *m);
        if (!m || b->wfds[i] < 0) {
            free(m);
            continue;
        }
        m->fd = b->wfds[i];
        m->rt = gh_listener_rt_ref(st->rt);
        gh_loop_post(e->workers[i].loop, do_remove, m);
    }
    gh_engine_bound_close(b);
}

/* Workers stop watching b for st, without closing it: the sockets change hands. */
void gh_engine_release(struct gh_engine *e, struct lstate *st, struct bound *b)
{
    for (unsigned i = 0; i < e->nworkers; i++) {
        struct msg_remove *m = b->wfds[i] >= 0 ? malloc(sizeof *m) : NULL;
        if (m) {
            m->fd = b->wfds[i];
            m->rt = gh_listener_rt_ref(st->rt);
            gh_loop_post(e->workers[i].loop, do_remove, m);
        }
        b->wfds[i] = -1;
    }
}

struct lstate *gh_engine_find_state(struct gh_engine *e, const char *id)
{
    for (struct lstate *st = e->listeners; st; st = st->next)
        if (!strcmp(st->rt->id, id))
            return st;
    return NULL;
}

struct bound *gh_engine_find_bound(struct lstate *st, const struct gh_sockaddr *a)
{
    for (unsigned i = 0; st && i < st->nbound; i++)
        if (st->bound[i] && gh_sockaddr_equal(&st->bound[i]->addr, a))
            return st->bound[i];
    return NULL;
}

static bool conflicts_elsewhere(struct gh_engine *e, const char *id, const struct gh_sockaddr *a,
                                gh_err *err)
{
    for (struct lstate *st = e->listeners; st; st = st->next) {
        if (!strcmp(st->rt->id, id))
            continue;
        for (unsigned i = 0; i < st->nbound; i++) {
            if (gh_sockaddr_conflict(&st->bound[i]->addr, a)) {
                char text[GH_ADDR_TEXT], other[GH_ADDR_TEXT];
                gh_sockaddr_format(a, text);
                gh_sockaddr_format(&st->bound[i]->addr, other);
                gh_fail(err, "bind %s: address already used by listener \"%s\" (%s)", text,
                        st->conf->name, other);
                return true;
            }
        }
    }
    return false;
}

bool gh_engine_needs_tls(const struct gh_listener_conf *c)
{
    return c->use_tls && (c->tls_implicit || c->protocol != GH_PROTO_HTTP);
}

void gh_engine_post_update(struct gh_engine *e, struct lstate *st)
{
    for (unsigned i = 0; i < e->nworkers; i++) {
        struct msg_update *m = malloc(sizeof *m);
        if (!m)
            continue;
        m->rt = gh_listener_rt_ref(st->rt);
        m->conf = gh_listener_conf_ref(st->conf);
        m->ctx = st->ctx && SSL_CTX_up_ref(st->ctx) ? st->ctx : NULL;
        gh_loop_post(e->workers[i].loop, do_update, m);
    }
}

/* Options that only take effect at bind time, or buffer sizes that setsockopt cannot take
 * back to the system default, need fresh sockets. */
bool gh_engine_needs_recreate(const struct bound *old, const struct gh_listener_conf *was,
                              const struct gh_listener_conf *now)
{
    return old->reuseport != now->reuseport || old->reuseaddr != now->reuseaddr ||
           (was->rcvbuf && !now->rcvbuf) || (was->sndbuf && !now->sndbuf);
}

/* Opens every address of conf that st does not already have with compatible flags.
 * fresh[i] is the new socket set for address i, or NULL when the old one stays. */
/* An address whose bind-time options changed gets fresh sockets; the old ones must go
 * first (a socket without SO_REUSEPORT cannot share the address). If the new bind fails,
 * the old settings are bound again so the listener is left as it was. */
static bool recreate(struct gh_engine *e, struct lstate *st, struct bound *old,
                     const struct gh_listener_conf *conf, struct bound **fresh, gh_err *err)
{
    unsigned slot = 0;
    while (st->bound[slot] != old)
        slot++;
    struct gh_sockaddr addr = old->addr;
    gh_engine_withdraw(e, st, old);
    st->bound[slot] = NULL;
    if ((*fresh = gh_engine_bound_open(e, conf, &addr, err)))
        return true;
    gh_err ignored = {0};
    if ((st->bound[slot] = gh_engine_bound_open(e, st->conf, &addr, &ignored)))
        gh_engine_bound_publish(e, st->bound[slot], st);
    return false;
}

/*
 * Opens every address of conf that st does not already have with compatible flags, in an
 * order that keeps a failure harmless: brand-new addresses first, then re-created ones, and
 * only then are kept sockets re-tuned. fresh[i] is the new socket set for address i, or
 * NULL when the old one stays.
 */
static bool open_new_addresses(struct gh_engine *e, struct lstate *st,
                               const struct gh_listener_conf *conf, struct bound **fresh,
                               gh_err *err)
{
    for (unsigned i = 0; i < conf->nbind; i++) {
        fresh[i] = NULL;
        if (conflicts_elsewhere(e, conf->id, &conf->bind[i], err))
            return false;
    }
    for (unsigned i = 0; i < conf->nbind; i++)
        if (!gh_engine_find_bound(st, &conf->bind[i]) &&
            !(fresh[i] = gh_engine_bound_open(e, conf, &conf->bind[i], err)))
            goto fail;
    for (unsigned i = 0; i < conf->nbind; i++) {
        struct bound *old = gh_engine_find_bound(st, &conf->bind[i]);
        if (old && gh_engine_needs_recreate(old, st->conf, conf) &&
            !recreate(e, st, old, conf, &fresh[i], err))
            goto fail;
    }
    for (unsigned i = 0; i < conf->nbind; i++) {
        struct bound *old = fresh[i] ? NULL : gh_engine_find_bound(st, &conf->bind[i]);
        for (unsigned k = 0; old && k < old->nfds; k++) {
            if (!gh_engine_tune_socket(old->fds[k], conf, &conf->bind[i], err))
                goto fail;
            if (listen(old->fds[k], (int)conf->backlog) < 0) {
                gh_fail_sys(err, errno, "listen");
                goto fail;
            }
        }
    }
    return true;
fail:
    for (unsigned i = 0; i < conf->nbind; i++)
        if (fresh[i])
            gh_engine_bound_close(fresh[i]);
    return false;
}

bool gh_engine_apply(struct gh_engine *e, struct gh_listener_conf *conf, gh_err *err)
{
    SSL_CTX *ctx = NULL;
    struct bound **fresh = calloc(conf->nbind ? conf->nbind : 1, sizeof *fresh);
    struct bound **next = calloc(conf->nbind ? conf->nbind : 1, sizeof *next);
    if (!fresh || !next) {
        free(fresh);
        free(next);
        gh_listener_conf_unref(conf);
        return gh_fail(err, "out of memory");
    }
    pthread_mutex_lock(&e->mu);
    struct lstate *st = gh_engine_find_state(e, conf->id);
    bool ok = (!gh_engine_needs_tls(conf) || (ctx = gh_tls_ctx_new(conf, err))) &&
              open_new_addresses(e, st, conf, fresh, err);
    if (!ok) {
        pthread_mutex_unlock(&e->mu);
        SSL_CTX_free(ctx);
        gh_listener_conf_unref(conf);
        free(fresh);
        free(next);
        return false;
    }
    if (!st) {
        st = calloc(1, sizeof *st);
        struct gh_listener_rt *rt = st ? calloc(1, sizeof *rt) : NULL;
        if (!rt) {
            free(st);
            st = NULL;
        } else {
            atomic_init(&rt->refs, 1);
            snprintf(rt->id, sizeof rt->id, "%s", conf->id);
            rt->metrics = gh_metrics_listener_new(conf->id);
            st->rt = rt;
            st->next = e->listeners;
            e->listeners = st;
        }
    }
    if (!st) {
        pthread_mutex_unlock(&e->mu);
        for (unsigned i = 0; i < conf->nbind; i++)
            if (fresh[i])
                gh_engine_bound_close(fresh[i]);
        SSL_CTX_free(ctx);
        gh_listener_conf_unref(conf);
        free(fresh);
        free(next);
        return gh_fail(err, "out of memory");
    }
    gh_listener_conf_unref(st->conf);
    st->conf = conf;
    gh_metrics_listener_describe(st->rt->metrics, conf->name, gh_protocol_names[conf->protocol]);
    SSL_CTX_free(st->ctx);
    st->ctx = ctx;
    /* Kept addresses get the new settings first, then new addresses go live, then the
     * addresses no longer wanted are withdrawn. */
    gh_engine_post_update(e, st);
    for (unsigned i = 0; i < conf->nbind; i++) {
        next[i] = fresh[i] ? fresh[i] : gh_engine_find_bound(st, &conf->bind[i]);
        if (fresh[i])
            gh_engine_bound_publish(e, fresh[i], st);
    }
    for (unsigned i = 0; i < st->nbound; i++) {
        bool kept = false;
        for (unsigned k = 0; k < conf->nbind && !kept; k++)
            kept = next[k] == st->bound[i];
        if (!kept && st->bound[i])
            gh_engine_withdraw(e, st, st->bound[i]);
    }
    free(st->bound);
    st->bound = next;
    st->nbound = conf->nbind;
    pthread_mutex_unlock(&e->mu);
    free(fresh);
    return true;
}

void gh_engine_lstate_free(struct gh_engine *e, struct lstate *st)
{
    for (unsigned i = 0; i < st->nbound; i++)
        if (st->bound[i])
            gh_engine_withdraw(e, st, st->bound[i]);
    free(st->bound);
    gh_listener_conf_unref(st->conf);
    SSL_CTX_free(st->ctx);
    gh_metrics_listener_retire(st->rt->metrics); /* its series leave the next scrape */
    gh_listener_rt_unref(st->rt);
    free(st);
}

void gh_engine_remove(struct gh_engine *e, const char *id)
{
    pthread_mutex_lock(&e->mu);
    for (struct lstate **pp = &e->listeners; *pp; pp = &(*pp)->next) {
        if (!strcmp((*pp)->rt->id, id)) {
            struct lstate *st = *pp;
            *pp = st->next;
            gh_engine_lstate_free(e, st);
            break;
        }
    }
    pthread_mutex_unlock(&e->mu);
}

uint32_t gh_engine_live(struct gh_engine *e, const char *id)
{
    uint32_t n = 0;
    pthread_mutex_lock(&e->mu);
    struct lstate *st = gh_engine_find_state(e, id);
    if (st)
        n = atomic_load(&st->rt->live);
    pthread_mutex_unlock(&e->mu);
    return n;
}

/* ---- server-wide settings ---- */

static void publish_settings(struct gh_engine *e)
{
    for (unsigned i = 0; i < e->nworkers; i++) {
        struct gh_wsettings *s = malloc(sizeof *s + e->ntrusted * sizeof(struct gh_ipmask));
        if (!s)
            continue;
        snprintf(s->hostname, sizeof s->hostname, "%s", e->hostname);
        s->ntrusted = e->ntrusted;
        if (e->ntrusted)
            memcpy(s->trusted, e->trusted, e->ntrusted * sizeof(struct gh_ipmask));
        gh_loop_post(e->workers[i].loop, do_settings, s);
    }
}

bool gh_engine_set_proxy_trusted(struct gh_engine *e, const struct gh_ipmask *masks, unsigned n)
{
    struct gh_ipmask *copy = n ? malloc(n * sizeof *copy) : NULL;
    if (n && !copy)
        return false;
    if (n)
        memcpy(copy, masks, n * sizeof *copy);
    pthread_mutex_lock(&e->mu);
    free(e->trusted);
    e->trusted = copy;
    e->ntrusted = n;
    publish_settings(e);
    pthread_mutex_unlock(&e->mu);
    return true;
}

void gh_engine_set_hostname(struct gh_engine *e, const char *hostname)
{
    pthread_mutex_lock(&e->mu);
    if (hostname && *hostname)
        snprintf(e->hostname, sizeof e->hostname, "%s", hostname);
    else if (gethostname(e->hostname, sizeof e->hostname) != 0 || !e->hostname[0])
        snprintf(e->hostname, sizeof e->hostname, "localhost");
    e->hostname[sizeof e->hostname - 1] = 0;
    publish_settings(e);
    pthread_mutex_unlock(&e->mu);
}

void gh_engine_hostname(struct gh_engine *e, char *out, size_t cap)
{
    pthread_mutex_lock(&e->mu);
    snprintf(out, cap, "%s", e->hostname);
    pthread_mutex_unlock(&e->mu);
}

/* ---- broadcast ---- */

struct broadcast {
    void (*fn)(struct gh_loop *, void *);
    void *arg;
    void (*free_arg)(void *);
    atomic_uint pending;
};

static void do_broadcast(struct gh_loop *loop, void *p)
{
    struct broadcast *b = p;
    b->fn(loop, b->arg);
    if (atomic_fetch_sub(&b->pending, 1) == 1) {
        if (b->free_arg)
            b->free_arg(b->arg);
        free(b);
    }
}

void gh_engine_broadcast(struct gh_engine *e, void (*fn)(struct gh_loop *, void *), void *arg,
                         void (*free_arg)(void *))
{
    struct broadcast *b = malloc(sizeof *b);
    if (!b) {
        if (free_arg)
            free_arg(arg);
        return;
    }
    b->fn = fn;
    b->arg = arg;
    b->free_arg = free_arg;
    atomic_init(&b->pending, e->nworkers);
    for (unsigned i = 0; i < e->nworkers; i++)
        gh_loop_post(e->workers[i].loop, do_broadcast, b);
}

/* ---- workers and their life ---- */

static void *worker_main(void *arg)
{
    struct gh_worker *w = arg;
    gh_err err = {0};
    current_worker = w;
    gh_metrics_thread_worker((int)w->index);
    gh_log_attach(w->loop);
    if (!gh_loop_run(w->loop, &err))
        gh_log(NULL, NULL, "worker-error", "worker %u: %s", w->index, err.msg);
    gh_log_detach(); /* session lines still buffered go out now */
    gh_buf_cache_drain();
    gh_auth_thread_end();
    pthread_mutex_lock(&w->engine->done_mu);
    atomic_fetch_sub(&w->engine->running, 1);
    pthread_cond_broadcast(&w->engine->done_cv);
    pthread_mutex_unlock(&w->engine->done_mu);
    return NULL;
}

struct gh_engine *gh_engine_new(unsigned workers, gh_err *err)
{
    struct gh_engine *e = calloc(1, sizeof *e);
    if (!e || !(e->workers = calloc(workers, sizeof *e->workers))) {
        free(e);
        gh_fail(err, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&e->mu, NULL);
    pthread_mutex_init(&e->done_mu, NULL);
    pthread_cond_init(&e->done_cv, NULL);
    e->nworkers = workers;
    gh_metrics_init(workers);
    for (unsigned i = 0; i < workers; i++) {
        e->workers[i].engine = e;
        e->workers[i].index = i;
        if (!(e->workers[i].loop = gh_loop_new(err))) {
            gh_engine_free(e);
            return NULL;
        }
    }
    gh_engine_global = e;
    gh_engine_set_hostname(e, NULL);
    return e;
}

bool gh_engine_start(struct gh_engine *e, gh_err *err)
{
    gh_fd_reserve_init();
    for (unsigned i = 0; i < e->nworkers; i++) {
        atomic_fetch_add(&e->running, 1);
        int rc = pthread_create(&e->workers[i].thread, NULL, worker_main, &e->workers[i]);
        if (rc != 0) {
            atomic_fetch_sub(&e->running, 1);
            return gh_fail_sys(err, rc, "starting worker %u", i);
        }
    }
    return true;
}

void gh_worker_maybe_finish(struct gh_worker *w)
{
    if (w->stopping && w->nconns == 0 && !w->retiring) {
        gh_timer_cancel(w->loop, &w->grace);
        gh_loop_stop(w->loop);
    }
}

void gh_engine_grace_over(struct gh_timer *t)
{
    struct gh_worker *w = gh_container_of(t, struct gh_worker, grace);
    while (w->conns) {
        gh_conn_set_end(w->conns, GH_END_SHUTDOWN);
        gh_conn_close(w->conns);
    }
    gh_loop_stop(w->loop);
}

void gh_engine_wind_down(struct gh_worker *w, void (*grace_over)(struct gh_timer *),
                         uint32_t grace_ms, bool http_only)
{
    w->stopping = true;
    while (w->socks) {
        struct gh_wsock *ws = w->socks;
        w->socks = ws->next;
        gh_engine_wsock_retire(ws);
    }
    w->grace.fn = grace_over;
    gh_timer_set(w->loop, &w->grace, grace_ms);
    for (struct gh_conn *c = w->conns, *next; c; c = next) {
        next = c->next;
        if (!http_only || c->conf->protocol == GH_PROTO_HTTP)
            gh_conn_shutdown(c);
    }
    gh_worker_maybe_finish(w);
}

static void do_stop(struct gh_loop *loop, void *arg)
{
    struct gh_worker *w = gh_engine_worker_of(loop, gh_engine_global);
    if (w)
        gh_engine_wind_down(w, gh_engine_grace_over, (uint32_t)(uintptr_t)arg, false);
}

void gh_engine_stop(struct gh_engine *e, uint32_t grace_ms)
{
    pthread_mutex_lock(&e->mu);
    while (e->listeners) {
        struct lstate *st = e->listeners;
        e->listeners = st->next;
        gh_engine_lstate_free(e, st);
    }
    pthread_mutex_unlock(&e->mu);
    for (unsigned i = 0; i < e->nworkers; i++)
        gh_loop_post(e->workers[i].loop, do_stop, (void *)(uintptr_t)grace_ms);
}

void gh_engine_wait(struct gh_engine *e)
{
    for (unsigned i = 0; i < e->nworkers; i++)
        if (e->workers[i].thread)
            pthread_join(e->workers[i].thread, NULL);
}

static void free_wsocks(struct gh_wsock **list)
{
    while (*list) {
        struct gh_wsock *ws = *list;
        *list = ws->next;
        gh_engine_wsock_free(ws);
    }
}

void gh_engine_free(struct gh_engine *e)
{
    if (!e)
        return;
    for (unsigned i = 0; i < e->nworkers; i++) {
        struct gh_worker *w = &e->workers[i];
        free_wsocks(&w->socks);
        free_wsocks(&w->retiring); /* the loop has ended: nothing more comes for them */
        while (w->conns)
            gh_conn_close(w->conns);
        gh_loop_free(w->loop);
        free(w->settings);
        gh_dest_set_unref(w->dests);
        gh_wrr_free(w);
    }
    while (e->listeners) {
        struct lstate *st = e->listeners;
        e->listeners = st->next;
        gh_engine_lstate_free(e, st);
    }
    gh_engine_inherit_done(e);
    free(e->trusted);
    free(e->workers);
    pthread_mutex_destroy(&e->mu);
    if (gh_engine_global == e)
        gh_engine_global = NULL;
    free(e);
}

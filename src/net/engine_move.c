/*
 * engine_move: several listeners applied as one change, so that an address one of them
 * lets go and another takes keeps its sockets and changes hands without being closed.
 */
#include <errno.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "net/engine-t.h"
#include "net/engine.h"
#include "net/tls.h"

/* One listener of a gh_engine_apply_set: its settings and, per address, the sockets it
 * will have (kept, moved from another member, or fresh). */
struct member {
    struct gh_listener_conf *conf; /* owned until committed */
    struct lstate *st;
    SSL_CTX *ctx;
    struct bound **next;
    struct lstate **from; /* the member an address moves from; NULL when kept or fresh */
    bool *fresh;
};

static bool member_keeps(const struct member *m, const struct gh_sockaddr *a)
{
    for (unsigned k = 0; k < m->conf->nbind; k++)
        if (gh_sockaddr_equal(&m->conf->bind[k], a))
            return true;
    return false;
}

static bool in_any_next(const struct member *ms, unsigned n, const struct bound *b)
{
    for (unsigned i = 0; i < n; i++)
        for (unsigned k = 0; k < ms[i].conf->nbind; k++)
            if (ms[i].next[k] == b)
                return true;
    return false;
}

static struct member *member_of(struct member *ms, unsigned n, const struct lstate *st)
{
    for (unsigned i = 0; i < n; i++)
        if (ms[i].st == st)
            return &ms[i];
    return NULL;
}

/* Where address k of member i gets its sockets: its own, a member that lets it go, or a
 * fresh bind when no listener outside the move holds anything that overlaps. */
static bool member_address(struct gh_engine *e, struct member *ms, unsigned n, unsigned i,
                           unsigned k, gh_err *err)
{
    struct member *m = &ms[i];
    const struct gh_sockaddr *a = &m->conf->bind[k];
    char text[GH_ADDR_TEXT];
    gh_sockaddr_format(a, text);
    struct bound *own = gh_engine_find_bound(m->st, a);
    if (own && gh_engine_needs_recreate(own, m->st->conf, m->conf))
        return gh_fail(err,
                       "bind %s: socketReusePort, socketReuseAddress or a buffer size back to "
                       "the default needs new sockets; change it in a /set of its own",
                       text);
    if (own) {
        m->next[k] = own;
        return true;
    }
    for (struct lstate *st = e->listeners; st; st = st->next) {
        if (st == m->st)
            continue;
        struct member *other = member_of(ms, n, st);
        for (unsigned b = 0; b < st->nbound; b++) {
            struct bound *ob = st->bound[b];
            if (!ob || !gh_sockaddr_conflict(&ob->addr, a))
                continue;
            if (other && gh_sockaddr_equal(&ob->addr, a) && !member_keeps(other, a) &&
                !in_any_next(ms, n, ob)) {
                if (ob->reuseport != m->conf->reuseport || ob->reuseaddr != m->conf->reuseaddr)
                    return gh_fail(err,
                                   "bind %s moves from listener \"%s\" with its sockets: both "
                                   "need the same socketReusePort and socketReuseAddress",
                                   text, st->conf->name);
                m->next[k] = ob;
                m->from[k] = st;
                return true;
            }
            char held[GH_ADDR_TEXT];
            gh_sockaddr_format(&ob->addr, held);
            return gh_fail(err, "bind %s: address already used by listener \"%s\" (%s)", text,
                           st->conf->name, held);
        }
    }
    m->fresh[k] = true;
    return (m->next[k] = gh_engine_bound_open(e, m->conf, a, err)) != NULL;
}

static bool member_prepare(struct gh_engine *e, struct member *ms, unsigned n, unsigned i,
                           gh_err *err)
{
    struct member *m = &ms[i];
    unsigned nb = m->conf->nbind ? m->conf->nbind : 1;
    m->next = calloc(nb, sizeof *m->next);
    m->from = calloc(nb, sizeof *m->from);
    m->fresh = calloc(nb, sizeof *m->fresh);
    if (!m->next || !m->from || !m->fresh)
        return gh_fail(err, "out of memory");
    if (!(m->st = gh_engine_find_state(e, m->conf->id)))
        return gh_fail(err, "listener %s is not running", m->conf->id);
    if (gh_engine_needs_tls(m->conf) && !(m->ctx = gh_tls_ctx_new(m->conf, err)))
        return false;
    return true;
}

/* Re-tunes kept and moved sockets to the member's settings (as gh_engine_apply does). */
static bool member_tune(struct member *m, gh_err *err)
{
    for (unsigned k = 0; k < m->conf->nbind; k++) {
        struct bound *b = m->fresh[k] ? NULL : m->next[k];
        for (unsigned f = 0; b && f < b->nfds; f++) {
            if (!gh_engine_tune_socket(b->fds[f], m->conf, &m->conf->bind[k], err))
                return false;
            if (listen(b->fds[f], (int)m->conf->backlog) < 0)
                return gh_fail_sys(err, errno, "listen");
        }
    }
    return true;
}

static void members_commit(struct gh_engine *e, struct member *ms, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        for (unsigned k = 0; k < ms[i].conf->nbind; k++)
            if (ms[i].from[k])
                gh_engine_release(e, ms[i].from[k], ms[i].next[k]);
    for (unsigned i = 0; i < n; i++) {
        struct member *m = &ms[i];
        gh_listener_conf_unref(m->st->conf);
        m->st->conf = m->conf;
        SSL_CTX_free(m->st->ctx);
        m->st->ctx = m->ctx;
        gh_engine_post_update(e, m->st);
        for (unsigned k = 0; k < m->conf->nbind; k++)
            if (m->fresh[k] || m->from[k])
                gh_engine_bound_publish(e, m->next[k], m->st);
    }
    for (unsigned i = 0; i < n; i++) {
        struct lstate *st = ms[i].st;
        for (unsigned b = 0; b < st->nbound; b++)
            if (st->bound[b] && !in_any_next(ms, n, st->bound[b]))
                gh_engine_withdraw(e, st, st->bound[b]);
    }
    for (unsigned i = 0; i < n; i++) {
        struct lstate *st = ms[i].st;
        free(st->bound);
        st->bound = ms[i].next;
        st->nbound = ms[i].conf->nbind;
        ms[i].next = NULL;
        ms[i].conf = NULL;
        ms[i].ctx = NULL;
    }
}

static void members_free(struct member *ms, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        for (unsigned k = 0; ms[i].next && ms[i].conf && k < ms[i].conf->nbind; k++)
            if (ms[i].fresh[k] && ms[i].next[k])
                gh_engine_bound_close(ms[i].next[k]);
        gh_listener_conf_unref(ms[i].conf);
        SSL_CTX_free(ms[i].ctx);
        free(ms[i].next);
        free(ms[i].from);
        free(ms[i].fresh);
    }
    free(ms);
}

bool gh_engine_apply_set(struct gh_engine *e, struct gh_listener_conf **confs, unsigned n,
                         gh_err *err)
{
    struct member *ms = calloc(n ? n : 1, sizeof *ms);
    if (!ms) {
        for (unsigned i = 0; i < n; i++)
            gh_listener_conf_unref(confs[i]);
        return gh_fail(err, "out of memory");
    }
    for (unsigned i = 0; i < n; i++)
        ms[i].conf = confs[i];
    pthread_mutex_lock(&e->mu);
    bool ok = true;
    for (unsigned i = 0; i < n && ok; i++)
        ok = member_prepare(e, ms, n, i, err);
    for (unsigned i = 0; i < n && ok; i++)
        for (unsigned k = 0; k < ms[i].conf->nbind && ok; k++)
            ok = member_address(e, ms, n, i, k, err);
    for (unsigned i = 0; i < n && ok; i++)
        ok = member_tune(&ms[i], err);
    if (ok)
        members_commit(e, ms, n);
    pthread_mutex_unlock(&e->mu);
    members_free(ms, n);
    return ok;
}

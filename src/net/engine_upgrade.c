/*
 * engine_upgrade: binary upgrade, sockets that outlive the process. The new process adopts
 * inherited listening sockets; the old one lists its own, hands them over and drains.
 */
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "net/conn.h"
#include "net/engine-t.h"
#include "net/engine.h"

#define GRACE_AFTER_DRAIN_MS 10000 /* sessions still open when an upgrade's drain ends */

bool gh_engine_inherit(struct gh_engine *e, const struct gh_sockaddr *a, int fd, gh_err *err)
{
    struct inherited *in = malloc(sizeof *in);
    if (!in)
        return gh_fail(err, "out of memory");
    in->addr = *a;
    in->fd = fd;
    pthread_mutex_lock(&e->mu);
    in->next = e->inherited;
    e->inherited = in;
    pthread_mutex_unlock(&e->mu);
    return true;
}

unsigned gh_engine_inherit_done(struct gh_engine *e)
{
    unsigned n = 0;
    pthread_mutex_lock(&e->mu);
    while (e->inherited) {
        struct inherited *in = e->inherited;
        e->inherited = in->next;
        close(in->fd);
        free(in);
        n++;
    }
    pthread_mutex_unlock(&e->mu);
    return n;
}

void gh_engine_each_socket(struct gh_engine *e,
                           void (*fn)(void *arg, const struct gh_sockaddr *a, int fd), void *arg)
{
    pthread_mutex_lock(&e->mu);
    for (struct lstate *st = e->listeners; st; st = st->next)
        for (unsigned i = 0; i < st->nbound; i++)
            for (unsigned k = 0; st->bound[i] && k < st->bound[i]->nfds; k++)
                fn(arg, &st->bound[i]->addr, st->bound[i]->fds[k]);
    pthread_mutex_unlock(&e->mu);
}

/* After the drain, what gh_engine_stop does at once: every session gets its goodbye. */
static void on_drain_over(struct gh_timer *t)
{
    struct gh_worker *w = gh_container_of(t, struct gh_worker, grace);
    w->grace.fn = gh_engine_grace_over;
    gh_timer_set(w->loop, &w->grace, GRACE_AFTER_DRAIN_MS);
    for (struct gh_conn *c = w->conns, *next; c; c = next) {
        next = c->next;
        gh_conn_shutdown(c);
    }
    gh_worker_maybe_finish(w);
}

/* Stops watching the listening sockets; mail sessions go on undisturbed, while HTTP
 * connections close after the response in flight (their next request would reach a
 * management layer that no longer owns the store). */
static void do_drain(struct gh_loop *loop, void *arg)
{
    struct gh_worker *w = gh_engine_worker_of(loop, gh_engine_global);
    if (w) /* mail sessions run on; HTTP ones end, so the new process serves the API */
        gh_engine_wind_down(w, on_drain_over, (uint32_t)(uintptr_t)arg, true);
}

bool gh_engine_running(struct gh_engine *e)
{
    return atomic_load(&e->running) > 0;
}

void gh_engine_hand_over(struct gh_engine *e, uint32_t drain_ms)
{
    pthread_mutex_lock(&e->mu);
    e->handed_over = true;
    while (e->listeners) {
        struct lstate *st = e->listeners;
        e->listeners = st->next;
        gh_engine_lstate_free(e, st);
    }
    pthread_mutex_unlock(&e->mu);
    for (unsigned i = 0; i < e->nworkers; i++)
        gh_loop_post(e->workers[i].loop, do_drain, (void *)(uintptr_t)drain_ms);
}

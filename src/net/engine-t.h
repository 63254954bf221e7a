/*
 * engine-t: the types and helpers shared by engine.c, engine_move.c and engine_upgrade.c.
 * Internal to those engine files; everyone else uses net/engine.h.
 */
#ifndef GH_ENGINE_T_H
#define GH_ENGINE_T_H
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "core/err.h"
#include "core/loop.h"
#include "net/addr.h"
#include "net/listener-t.h"
#include "net/worker.h"

/* One address of a listener: the engine's descriptors (one per worker with
 * SO_REUSEPORT, else one), each also given to a worker as a dup. */
struct bound {
    struct gh_sockaddr addr;
    bool reuseport, reuseaddr;
    unsigned nfds;
    int *wfds; /* the dup each worker was given, to name it in the removal message */
    int fds[]; /* then wfds[nworkers] */
};

/* The control side's view of a listener. Owner: the engine (under e->mu). */
struct lstate {
    struct gh_listener_rt *rt;
    struct gh_listener_conf *conf;
    SSL_CTX *ctx;
    unsigned nbound;
    struct bound **bound;
    struct lstate *next;
};

struct gh_engine {
    pthread_mutex_t mu; /* control side only: apply, remove, settings */
    unsigned nworkers;
    struct gh_worker *workers;
    struct lstate *listeners;
    char hostname[256];
    unsigned ntrusted;
    struct gh_ipmask *trusted;
    atomic_uint running;         /* workers still running */
    struct inherited *inherited; /* sockets passed by the process this one replaces */
    bool handed_over;            /* the sockets live on in a new process: never shut them */
    pthread_mutex_t done_mu;
    pthread_cond_t done_cv;
};

/* A listening socket inherited from the process this one replaces, until a listener
 * with its address adopts it. Owner: the engine. */
struct inherited {
    struct gh_sockaddr addr;
    int fd;
    struct inherited *next;
};

/* Shared helpers of the engine files, defined in engine.c. Those that read or change
 * e->listeners run under e->mu; worker_of, wsock_free and grace_over run on a worker. */
struct gh_worker *gh_engine_worker_of(struct gh_loop *loop, struct gh_engine *e);
void gh_engine_wsock_free(struct gh_wsock *ws);
/* Stops ws accepting and frees it, at once or, when an accept of the ring's is still out,
 * once it has ended and what it took is served. */
void gh_engine_wsock_retire(struct gh_wsock *ws);
void gh_engine_grace_over(struct gh_timer *t);
/* A worker stops accepting and arms its grace timer (grace_over); its sessions get their
 * goodbye (only the HTTP ones with http_only: a hand-over lets mail sessions finish). */
void gh_engine_wind_down(struct gh_worker *w, void (*grace_over)(struct gh_timer *),
                         uint32_t grace_ms, bool http_only);
bool gh_engine_tune_socket(int fd, const struct gh_listener_conf *c, const struct gh_sockaddr *a,
                           gh_err *err);
struct bound *gh_engine_bound_open(struct gh_engine *e, const struct gh_listener_conf *c,
                                   const struct gh_sockaddr *a, gh_err *err);
void gh_engine_bound_close(struct bound *b);
void gh_engine_bound_publish(struct gh_engine *e, struct bound *b, struct lstate *st);
void gh_engine_withdraw(struct gh_engine *e, struct lstate *st, struct bound *b);
void gh_engine_release(struct gh_engine *e, struct lstate *st, struct bound *b);
struct lstate *gh_engine_find_state(struct gh_engine *e, const char *id);
struct bound *gh_engine_find_bound(struct lstate *st, const struct gh_sockaddr *a);
bool gh_engine_needs_tls(const struct gh_listener_conf *c);
bool gh_engine_needs_recreate(const struct bound *old, const struct gh_listener_conf *was,
                              const struct gh_listener_conf *now);
void gh_engine_post_update(struct gh_engine *e, struct lstate *st);
void gh_engine_lstate_free(struct gh_engine *e, struct lstate *st);

#endif

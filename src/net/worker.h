/*
 * worker: the engine's internals shared by engine.c and conn.c — a worker thread with
 * its loop, its listening sockets and its live connections, and the per-listener state
 * that all workers share (the connection count).
 */
#ifndef GH_WORKER_H
#define GH_WORKER_H
#include <sys/types.h>
#include <pthread.h>
#include <stdatomic.h>

#include "core/loop.h"
#include "net/addr.h"
#include "net/engine.h"
#include "net/handoff.h"
#include "net/listener-t.h"

typedef struct ssl_ctx_st SSL_CTX;
struct gh_engine;
struct gh_conn;
struct gh_metrics_listener;

/* Shared by every worker and connection of one listener, across its updates.
 * Owner: reference-counted (the engine's listener state, each socket, each connection). */
struct gh_listener_rt {
    atomic_uint refs;
    atomic_uint live; /* connections holding a maxConnections slot */
    char id[64];
    struct gh_metrics_listener *metrics; /* a reference; NULL when out of memory */
};

/* A listening socket registered in one worker's loop. Owner: that worker. */
struct gh_wsock {
    struct gh_io io;
    struct gh_timer backoff; /* re-arms accepting after EMFILE/ENFILE */
    uint32_t backoff_ms;
    struct gh_worker *worker;
    struct gh_listener_rt *rt;     /* a reference */
    struct gh_listener_conf *conf; /* a reference: the settings new connections get */
    SSL_CTX *ctx;                  /* a reference, or NULL when the listener has no TLS */
    bool paused;                   /* taken out of epoll (back-off, or shut down) */
    bool retiring;                 /* removed: freed once the ring holds no accept of its */
    ino_t socket_id;               /* the listening socket's inode, shared by its dups */
    struct gh_sockaddr local;      /* bound to one address: every connection's own (len 0
                                    * for a wildcard, where each needs a getsockname) */
    struct gh_wsock *next;
};

/* Server-wide settings as one worker sees them; replaced by message. Owner: the worker. */
struct gh_wsettings {
    char hostname[256];
    unsigned ntrusted;
    struct gh_ipmask trusted[]; /* x:SystemSettings.proxyTrustedNetworks */
};

/* Smooth weighted round-robin state of one listener on one worker (see handoff.c).
 * Owner: the worker; dropped whenever the destinations change. */
struct gh_wrr {
    struct gh_wrr *next;
    char listener[GH_DEST_NAME_MAX];
    unsigned n;
    uint32_t *weight;  /* scratch: each destination's weight when eligible, else 0 */
    int64_t current[]; /* one per destination of the set */
};

struct gh_worker {
    struct gh_engine *engine;
    unsigned index;
    struct gh_loop *loop;
    pthread_t thread;
    struct gh_wsock *socks;
    struct gh_wsock *retiring; /* removed, waiting for an accept still in the ring */
    struct gh_conn *conns;     /* live connections, for graceful stop */
    unsigned nconns;
    struct gh_wsettings *settings;
    struct gh_dest_set *dests;
    struct gh_wrr *wrr; /* per-listener load sharing, without shared state */
    bool stopping;
    struct gh_timer grace; /* graceful stop deadline */
};

static inline struct gh_listener_rt *gh_listener_rt_ref(struct gh_listener_rt *rt)
{
    atomic_fetch_add_explicit(&rt->refs, 1, memory_order_relaxed);
    return rt;
}
void gh_listener_rt_unref(struct gh_listener_rt *rt);

/* Takes a slot of the listener's maxConnections with one compare-and-swap loop. */
bool gh_listener_rt_admit(struct gh_listener_rt *rt, uint32_t max);
void gh_listener_rt_release(struct gh_listener_rt *rt);

/* conn.c: a freshly accepted socket becomes a connection of worker w. */
void gh_conn_accepted(struct gh_worker *w, struct gh_wsock *ws, int fd,
                      const struct gh_sockaddr *peer);
/* conn.c: stops (or resumes) reading the client, for a relay whose backend lags. */
void gh_conn_pause_input(struct gh_conn *c, bool paused);
/* conn.c: graceful stop of one connection (protocol goodbye, or close). */
void gh_conn_shutdown(struct gh_conn *c);

/* handoff.c: relay hooks the connection calls in the RELAY phase. */
void gh_relay_client_input(struct gh_conn *c);   /* new bytes from the client are in c->in */
void gh_relay_client_drained(struct gh_conn *c); /* c->out went below its high mark */
/* The client socket is ready while its relay splices: true when the relay took the event. */
bool gh_relay_client_io(struct gh_conn *c);
void gh_relay_close(struct gh_conn *c); /* at close: the backend socket and buffers */
void gh_relay_free(struct gh_conn *c);  /* once the batch of events is over: the memory */
void gh_dest_set_unref(struct gh_dest_set *s);
void gh_wrr_free(struct gh_worker *w);

/* engine.c: the worker running on the calling thread, or NULL. */
struct gh_worker *gh_worker_current(void);

/* engine.c: the worker has no connections left during a graceful stop. */
void gh_worker_maybe_finish(struct gh_worker *w);

#endif

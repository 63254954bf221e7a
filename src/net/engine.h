/*
 * engine: the worker threads and the listeners they serve. Changes arrive as whole
 * listener settings (apply) or removals; sockets are bound and closed here and handed to
 * the workers by message, so no lock is ever taken on the accept or read path.
 */
#ifndef GH_ENGINE_H
#define GH_ENGINE_H
#include <stdbool.h>
#include <stdint.h>

#include "core/err.h"
#include "net/listener-t.h"

struct gh_engine;
struct gh_loop;

#define GH_WORKERS_MAX 256 /* --workers; per-worker slots are sized by it */

struct gh_engine *gh_engine_new(unsigned workers, gh_err *err);
/* Starts the worker threads. */
bool gh_engine_start(struct gh_engine *e, gh_err *err);
/* Blocks until gh_engine_stop was called and every worker has finished. */
void gh_engine_wait(struct gh_engine *e);
/* Graceful stop: stop accepting, send every live session its protocol's goodbye, wait up
 * to grace_ms for them to end, then stop the workers. Safe from a signal-handling thread. */
void gh_engine_stop(struct gh_engine *e, uint32_t grace_ms);
void gh_engine_free(struct gh_engine *e);

/*
 * Creates or updates the listener conf->id. Takes ownership of conf (one reference).
 * On return the listener accepts on every address of conf; addresses it had before and
 * still has keep their sockets; new ones are bound before removed ones are closed.
 * On failure nothing changed, and err says which address failed and why.
 */
bool gh_engine_apply(struct gh_engine *e, struct gh_listener_conf *conf, gh_err *err);
/*
 * Applies the settings of several running listeners as one change (each conf as in
 * gh_engine_apply; takes ownership of every conf). An address one of them lets go and
 * another takes keeps its sockets, which change hands without being closed, so addresses
 * can be swapped between listeners; connections waiting in such a socket's backlog go to
 * its new listener. All or nothing: on failure nothing changed and err says why.
 */
bool gh_engine_apply_set(struct gh_engine *e, struct gh_listener_conf **confs, unsigned n,
                         gh_err *err);
/* Stops accepting on every address of the listener before returning; live sessions go on. */
void gh_engine_remove(struct gh_engine *e, const char *id);
/* Live connections of a listener (0 when unknown). */
uint32_t gh_engine_live(struct gh_engine *e, const char *id);

/* Server-wide settings of x:SystemSettings, applied to new connections. */
bool gh_engine_set_proxy_trusted(struct gh_engine *e, const struct gh_ipmask *masks, unsigned n);
void gh_engine_set_hostname(struct gh_engine *e, const char *hostname);
/* Copies the current host name into out. Any thread. */
void gh_engine_hostname(struct gh_engine *e, char *out, size_t cap);

/* Runs fn(loop, arg) on every worker's thread (e.g. to push events to streams there).
 * free_arg, when not NULL, is called once after the last worker ran fn. */
void gh_engine_broadcast(struct gh_engine *e, void (*fn)(struct gh_loop *, void *), void *arg,
                         void (*free_arg)(void *));

/*
 * Binary upgrade. The new process registers each listening socket it inherited with
 * gh_engine_inherit before the listeners are applied; a listener with that address then
 * adopts the socket instead of binding (all of an address's sockets, one per worker with
 * SO_REUSEPORT). gh_engine_inherit_done closes the ones no listener wanted (returns how many).
 * The old process lists its sockets with gh_engine_each_socket and, once the new one
 * accepts, calls gh_engine_hand_over: it stops watching them without shutting them down
 * (they are the new process's now), lets mail sessions run for drain_ms, then says goodbye.
 */
bool gh_engine_inherit(struct gh_engine *e, const struct gh_sockaddr *a, int fd, gh_err *err);
unsigned gh_engine_inherit_done(struct gh_engine *e);
void gh_engine_each_socket(struct gh_engine *e,
                           void (*fn)(void *arg, const struct gh_sockaddr *a, int fd), void *arg);
void gh_engine_hand_over(struct gh_engine *e, uint32_t drain_ms);
/* True while any worker runs (a drain or a graceful stop is not over). Any thread. */
bool gh_engine_running(struct gh_engine *e);

/* The process-wide engine, for the protocol and management layers. */
extern struct gh_engine *gh_engine_global;

#endif

/*
 * client: asks an auth service about one login without blocking — libcurl's multi
 * interface driven by the calling worker's event loop (its sockets watched by the loop,
 * its time-outs a loop timer), so thousands of logins wait at once while the worker
 * keeps serving every other session.
 */
#ifndef GH_AUTH_CLIENT_H
#define GH_AUTH_CLIENT_H
#include <stdbool.h>

#include "auth/auth_http.h"
#include "auth/service.h"
#include "core/err.h"

struct gh_loop;
struct gh_auth_call;

/*
 * Called once on the loop's thread with the verdict. a is the parsed answer (valid
 * during the call only; its password is wiped afterwards); why says what went wrong on
 * GH_AUTH_TEMPFAIL (never a secret). The call is freed after fn returns.
 */
typedef void (*gh_auth_done_fn)(void *arg, enum gh_auth_verdict v, struct gh_auth_answer *a,
                                const char *why);

/*
 * Starts a request on the calling thread's loop. need_pass: see gh_auth_answer_finish.
 * Returns the call (owned by this module until done or cancelled), or NULL with err.
 */
struct gh_auth_call *gh_auth_call_start(struct gh_loop *loop, const struct gh_auth_service *svc,
                                        const struct gh_auth_request *r, bool need_pass,
                                        gh_auth_done_fn fn, void *arg, gh_err *err);
/* Abandons a call whose fn has not run yet; fn will never run. */
void gh_auth_call_cancel(struct gh_auth_call *c);

/* How many calls are in flight on the calling thread. */
unsigned gh_auth_calls_in_flight(void);

/* The worker thread ends: its transfers are dropped and its curl handle freed. */
void gh_auth_client_thread_end(void);

#endif

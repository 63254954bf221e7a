/*
 * service: the auth services (x:AuthService) as the engine sees them — an immutable,
 * reference-counted set handed to every worker by message, looked up by listener name.
 */
#ifndef GH_AUTH_SERVICE_H
#define GH_AUTH_SERVICE_H
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "net/handoff.h"

struct gh_loop;

#define GH_AUTH_NAME_MAX 65

/* One auth service. Owner: the set it is in (or the caller before gh_auth_set_new). */
struct gh_auth_service {
    char name[GH_AUTH_NAME_MAX];
    char *url;
    uint32_t timeout_ms;
    enum gh_forwarding forwarding;
    bool xclient, pass_error_message;
    unsigned nheaders;
    char **headers; /* "Name: value" */
    unsigned nlisteners;
    char (*listeners)[GH_AUTH_NAME_MAX];
};

/* Immutable once built. Owner: reference-counted (each worker holds one reference, and
 * each request in flight holds one on the set its service belongs to). */
struct gh_auth_set {
    atomic_uint refs;
    unsigned n;
    struct gh_auth_service *s;
};

/* Frees what one service points to (not the struct itself). */
void gh_auth_service_clear(struct gh_auth_service *s);

/* A set that takes over s[0..n) and the array itself (refs = 1); NULL when out of memory,
 * in which case s is freed too. */
struct gh_auth_set *gh_auth_set_new(struct gh_auth_service *s, unsigned n);
struct gh_auth_set *gh_auth_set_ref(struct gh_auth_set *set);
void gh_auth_set_unref(struct gh_auth_set *set);

/* Broadcast callbacks: install the set on the calling worker (taking a reference); drop
 * the creator's reference once every worker has it. */
void gh_auth_set_install(struct gh_loop *loop, void *set);
void gh_auth_set_release(void *set);

/* On a worker: the set in force (borrowed; NULL when none was installed), and the service
 * serving a listener, or NULL. */
struct gh_auth_set *gh_auth_set_current(void);
const struct gh_auth_service *gh_auth_service_for(const struct gh_auth_set *set,
                                                  const char *listener);

/* A worker thread ends: drops its reference. */
void gh_auth_thread_end(void);

#endif

/*
 * service: the worker-side copy of the auth services. Each worker keeps the set it was
 * last sent in a thread-local pointer, so lookups take no lock.
 */
#include "auth/service.h"

#include "auth/client.h"

#include <stdlib.h>
#include <strings.h>

static _Thread_local struct gh_auth_set *current;

void gh_auth_service_clear(struct gh_auth_service *s)
{
    free(s->url);
    for (unsigned i = 0; s->headers && i < s->nheaders; i++)
        free(s->headers[i]);
    free(s->headers);
    free(s->listeners);
    s->url = NULL;
    s->headers = NULL;
    s->listeners = NULL;
    s->nheaders = s->nlisteners = 0;
}

struct gh_auth_set *gh_auth_set_new(struct gh_auth_service *s, unsigned n)
{
    struct gh_auth_set *set = calloc(1, sizeof *set);
    if (!set) {
        for (unsigned i = 0; i < n; i++)
            gh_auth_service_clear(&s[i]);
        free(s);
        return NULL;
    }
    atomic_init(&set->refs, 1);
    set->n = n;
    set->s = s;
    return set;
}

struct gh_auth_set *gh_auth_set_ref(struct gh_auth_set *set)
{
    if (set)
        atomic_fetch_add_explicit(&set->refs, 1, memory_order_relaxed);
    return set;
}

void gh_auth_set_unref(struct gh_auth_set *set)
{
    if (!set || atomic_fetch_sub_explicit(&set->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (unsigned i = 0; i < set->n; i++)
        gh_auth_service_clear(&set->s[i]);
    free(set->s);
    free(set);
}

void gh_auth_set_install(struct gh_loop *loop, void *arg)
{
    (void)loop;
    struct gh_auth_set *old = current;
    current = gh_auth_set_ref(arg);
    gh_auth_set_unref(old);
}

void gh_auth_set_release(void *arg)
{
    gh_auth_set_unref(arg);
}

struct gh_auth_set *gh_auth_set_current(void)
{
    return current;
}

const struct gh_auth_service *gh_auth_service_for(const struct gh_auth_set *set,
                                                  const char *listener)
{
    for (unsigned i = 0; set && listener && i < set->n; i++)
        for (unsigned j = 0; j < set->s[i].nlisteners; j++)
            if (!strcasecmp(set->s[i].listeners[j], listener))
                return &set->s[i];
    return NULL;
}

void gh_auth_thread_end(void)
{
    gh_auth_client_thread_end();
    gh_auth_set_unref(current);
    current = NULL;
}

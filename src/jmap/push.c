/*
 * push: the latest state of each object type, and the hand-off of every change to the push
 * transport (the EventSource streams of jmap/eventsource.c).
 */
#include "jmap/jmap.h"

#include <pthread.h>

static pthread_mutex_t states_lock = PTHREAD_MUTEX_INITIALIZER;
static json_t *states;          /* type -> state string; owned */
static gh_jmap_push_fn push_fn; /* set once by the transport */

void gh_jmap_set_push(gh_jmap_push_fn fn)
{
    pthread_mutex_lock(&states_lock);
    push_fn = fn;
    pthread_mutex_unlock(&states_lock);
}

json_t *gh_jmap_states(void)
{
    pthread_mutex_lock(&states_lock);
    json_t *snap = states ? json_deep_copy(states) : json_object();
    pthread_mutex_unlock(&states_lock);
    return snap;
}

void gh_jmap_state_changed(const char *type, const char *new_state)
{
    pthread_mutex_lock(&states_lock);
    if (!states)
        states = json_object();
    json_object_set_new(states, type, json_string(new_state));
    json_t *snap = push_fn ? json_deep_copy(states) : NULL;
    gh_jmap_push_fn fn = push_fn;
    pthread_mutex_unlock(&states_lock);
    if (fn && snap)
        fn(snap);
    else
        json_decref(snap);
}

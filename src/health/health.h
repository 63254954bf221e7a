/*
 * health: the health checks of the destinations, from one thread per node (never one per
 * worker). It writes each destination's status where the workers read it without a lock,
 * and reports every result upward, so the objects can show and push it.
 */
#ifndef GH_HEALTH_H
#define GH_HEALTH_H
#include <stdbool.h>

#include "net/handoff.h"

/* Called on the health thread after every check, with the status the checks now give
 * (up, down, or unknown until enough results) and the failure's reason (NULL on success). */
typedef void (*gh_health_report_fn)(const char *id, enum gh_dest_status status, const char *error);
void gh_health_set_reporter(gh_health_report_fn fn);

/* Checks the destinations of s from now on (takes a reference); starts the thread on first
 * use. Checks in flight for the previous set are abandoned. Any thread. */
void gh_health_watch(struct gh_dest_set *s);
/* Stops the thread and drops its set. */
void gh_health_stop(void);

/* "up", "down" or "unknown" for the destination with this id, as the checks know it. */
const char *gh_health_status_of(const char *id);

/* For gauges (gatehouse_destination_up): fn for each destination now known, with whether new
 * sessions may go there (checks not down, weight above 0). Any thread. */
void gh_health_each(void (*fn)(const char *name, bool up, void *arg), void *arg);

#endif

/*
 * startup: checks on what the store gave at start that an operator must hear about: a
 * management listener lost to a row that cannot be loaded, and a store that cannot be written.
 */
#ifndef GH_OBJECTS_STARTUP_H
#define GH_OBJECTS_STARTUP_H
#include <stdbool.h>

#include "core/err.h"

struct gh_objtype;

/* Called for each stored row that was skipped because it cannot be read (start or reload). */
void gh_startup_note_unreadable(const struct gh_objtype *t, const char *id);

/* Forgets the rows noted so far; called before the store is loaded. */
void gh_startup_reset(void);

/*
 * False, with err naming the rows and what to do, when no management (HTTP) listener is
 * left and a stored listener row could not be loaded: that row may have been it, and a
 * daemon without its API cannot be managed. A store without any HTTP listener and without
 * broken rows is a deliberate state and passes.
 */
bool gh_startup_check_management(gh_err *err);

/* Logs a warning when the store refuses a write, so a read-only store is known at start
 * and not only at the first /set. Writes one key (last_start) when it can. */
void gh_startup_check_writable(void);

#endif

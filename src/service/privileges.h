/*
 * privileges: started as root, the daemon becomes an unprivileged user and keeps only
 * CAP_NET_BIND_SERVICE, so listeners on ports below 1024 can still be created live.
 */
#ifndef GH_PRIVILEGES_H
#define GH_PRIVILEGES_H
#include <stdbool.h>

#include "core/err.h"

/* Gives data_dir (and the files directly in it) to user, then switches this process to
 * user's uid, gid and groups with only CAP_NET_BIND_SERVICE effective, permitted,
 * inheritable and ambient (so a binary upgrade inherits it). Call before any thread starts:
 * capabilities belong to threads, and new threads copy their creator's. */
bool gh_drop_privileges(const char *user, const char *data_dir, gh_err *err);

#endif

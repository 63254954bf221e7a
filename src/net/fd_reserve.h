/*
 * fd_reserve: the last descriptors of the process are kept for the management API and the
 * web page, so an operator can still get in while mail clients take every other one.
 */
#ifndef GH_FD_RESERVE_H
#define GH_FD_RESERVE_H
#include <stdbool.h>

/* Reads RLIMIT_NOFILE and sizes the reserve: a sixteenth of the limit, at least 16 and at
 * most 256. Call once, before the workers start (they only read what it sets). */
void gh_fd_reserve_init(void);

/*
 * Whether fd, just returned by accept or socket, lies in the reserve. The kernel hands out
 * the lowest free number, so such a descriptor means every one below the reserve is taken:
 * its caller closes it when it serves mail (a mail accept, a hand-off's backend socket).
 * One comparison, no counting and no lock on the accept path.
 */
bool gh_fd_in_reserve(int fd);

/* The limit and the reserve in force (0 and 0 before gh_fd_reserve_init), for log lines. */
unsigned gh_fd_limit(void);
unsigned gh_fd_reserve(void);

#endif

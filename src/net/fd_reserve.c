/*
 * fd_reserve: keeps the top of the descriptor table for management connections. Mail
 * accepts and hand-off sockets that land there are closed at once, so descriptor exhaustion
 * by mail traffic leaves room for the management listener to accept and answer.
 */
#include "net/fd_reserve.h"

#include <sys/resource.h>

#define RESERVE_MIN 16
#define RESERVE_MAX 256

static unsigned limit, reserve;

void gh_fd_reserve_init(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
        rl.rlim_cur > (1u << 30)) {
        limit = reserve = 0; /* no usable limit: nothing to keep back */
        return;
    }
    limit = (unsigned)rl.rlim_cur;
    reserve = limit / 16;
    if (reserve < RESERVE_MIN)
        reserve = RESERVE_MIN;
    if (reserve > RESERVE_MAX)
        reserve = RESERVE_MAX;
    if (reserve >= limit)
        reserve = limit / 2;
}

bool gh_fd_in_reserve(int fd)
{
    return limit && fd >= 0 && (unsigned)fd >= limit - reserve;
}

unsigned gh_fd_limit(void)
{
    return limit;
}

unsigned gh_fd_reserve(void)
{
    return reserve;
}

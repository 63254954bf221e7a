/*
 * notify: the sd_notify datagram protocol without libsystemd: one AF_UNIX datagram per
 * state change to the socket named by $NOTIFY_SOCKET (a path, or "@name" for the abstract
 * namespace). The watchdog thread proves the workers alive by a heartbeat message that
 * every worker loop must run before the next WATCHDOG=1 goes out.
 */
#include "service/notify.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "net/engine.h"

bool gh_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path)
        return false;
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || len >= sizeof sun.sun_path)
        return false;
    memcpy(sun.sun_path, path, len);
    if (path[0] == '@')
        sun.sun_path[0] = 0;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    ssize_t n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sun, alen);
    close(fd);
    return n == (ssize_t)strlen(state);
}

bool gh_notify_reloading(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char msg[96];
    snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
    return gh_notify(msg);
}

bool gh_notify_mainpid(pid_t pid)
{
    char msg[64];
    snprintf(msg, sizeof msg, "MAINPID=%ld\nREADY=1", (long)pid);
    return gh_notify(msg);
}

/* ---- watchdog ---- */

static struct {
    pthread_t thread;
    bool running;
    atomic_bool stop;
    atomic_bool acked; /* every worker ran the last heartbeat */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct gh_engine *engine;
    unsigned long long period_us;
} wd = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void heartbeat(struct gh_loop *loop, void *arg) {}

/* Called once, after the last worker ran heartbeat. */
static void heartbeat_done(void *arg)
{
    atomic_store(&wd.acked, true);
}

static void *watchdog_main(void *arg)
{
    pthread_mutex_lock(&wd.mu);
    while (!atomic_load(&wd.stop)) {
        if (atomic_exchange(&wd.acked, false)) {
            gh_notify("WATCHDOG=1");
            gh_engine_broadcast(wd.engine, heartbeat, NULL, heartbeat_done);
        } else
            gh_log(NULL, NULL, "watchdog", "a worker did not answer within %llu ms",
                   wd.period_us / 2000);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        unsigned long long ns = (unsigned long long)until.tv_nsec + wd.period_us / 2 * 1000;
        until.tv_sec += (time_t)(ns / 1000000000ULL);
        until.tv_nsec = (long)(ns % 1000000000ULL);
        while (!atomic_load(&wd.stop) &&
               pthread_cond_timedwait(&wd.cv, &wd.mu, &until) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&wd.mu);
    return NULL;
}

unsigned long long gh_watchdog_start(struct gh_engine *e)
{
    const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
    char *end;
    unsigned long long period = usec ? strtoull(usec, &end, 10) : 0;
    if (!period || *end || (pid && strtol(pid, NULL, 10) != (long)getpid()) || wd.running)
        return 0;
    wd.engine = e;
    wd.period_us = period;
    atomic_store(&wd.stop, false);
    atomic_store(&wd.acked, true); /* the first WATCHDOG=1 goes out at once */
    wd.running = pthread_create(&wd.thread, NULL, watchdog_main, NULL) == 0;
    return wd.running ? period : 0;
}

void gh_watchdog_stop(void)
{
    if (!wd.running)
        return;
    pthread_mutex_lock(&wd.mu);
    atomic_store(&wd.stop, true);
    pthread_cond_signal(&wd.cv);
    pthread_mutex_unlock(&wd.mu);
    pthread_join(wd.thread, NULL);
    wd.running = false;
}

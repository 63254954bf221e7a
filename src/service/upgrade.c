/*
 * upgrade: the hand-over of the listening sockets and the store between two daemon
 * processes, in the order that keeps every connection and every change:
 *
 *   old: freeze the store (no JMAP call, no background sync runs)
 *   old: fork + exec the new binary with the sockets, GATEHOUSE_UPGRADE_FDS="ADDR=FD ...",
 *        GATEHOUSE_UPGRADE_WORKERS and the write end of a pipe, GATEHOUSE_UPGRADE_READY_FD
 *   new: adopts the sockets (both processes now accept from the same sockets), loads the
 *        store, applies the listeners, writes one byte to the pipe
 *   old: stops watching the sockets (no shutdown: they are shared), answers any later
 *        management request 503 and never writes to the store again; its sessions run on
 *
 * If the new process exits or is not ready in time, the old one kills it, thaws the store
 * and goes on serving as if nothing happened.
 */
#include "service/upgrade.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/loop.h"
#include "net/addr.h"
#include "net/engine.h"

#define ENV_FDS     "GATEHOUSE_UPGRADE_FDS"
#define ENV_READY   "GATEHOUSE_UPGRADE_READY_FD"
#define ENV_WORKERS "GATEHOUSE_UPGRADE_WORKERS"
#define ENV_BIN     "GATEHOUSE_UPGRADE_BIN"
#define MAX_FDS     4096

extern char **environ;

/* ---- the old process ---- */

struct socket_list {
    int fds[MAX_FDS];
    unsigned n;
    char *text; /* "ADDR=FD ADDR=FD" */
    size_t len, cap;
    bool full;
};

static void collect(void *arg, const struct gh_sockaddr *a, int fd)
{
    struct socket_list *l = arg;
    char addr[GH_ADDR_TEXT], item[GH_ADDR_TEXT + 16];
    gh_sockaddr_format(a, addr);
    int n = snprintf(item, sizeof item, "%s%s=%d", l->n ? " " : "", addr, fd);
    if (l->full || l->n == MAX_FDS || n < 0) {
        l->full = true;
        return;
    }
    if (l->len + (size_t)n + 1 > l->cap) {
        size_t cap = (l->cap + (size_t)n + 1) * 2;
        char *t = realloc(l->text, cap);
        if (!t) {
            l->full = true;
            return;
        }
        l->text = t;
        l->cap = cap;
    }
    memcpy(l->text + l->len, item, (size_t)n + 1);
    l->len += (size_t)n;
    l->fds[l->n++] = fd;
}

/* The binary to start: the path this one was started from. After a package replaced the
 * file, /proc/self/exe reads "PATH (deleted)"; the new file lives at PATH. */
static bool new_binary(char *out, size_t cap, gh_err *err)
{
    const char *env = getenv(ENV_BIN);
    if (env && *env) {
        snprintf(out, cap, "%s", env);
        return true;
    }
    ssize_t n = readlink("/proc/self/exe", out, cap - 1);
    if (n < 0)
        return gh_fail_sys(err, errno, "reading /proc/self/exe");
    out[n] = 0;
    static const char deleted[] = " (deleted)";
    size_t len = (size_t)n, dl = sizeof deleted - 1;
    if (len > dl && !strcmp(out + len - dl, deleted))
        out[len - dl] = 0;
    return true;
}

/* environ without our own variables, plus the hand-over's. Owner: the caller (free the
 * array and its last three strings). */
static char **child_env(const char *fds, int ready_fd, unsigned workers)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 4, sizeof *env);
    if (!env)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        /* WATCHDOG_PID names this process: without it the new one feeds the watchdog */
        if (!strncmp(environ[i], "WATCHDOG_PID=", 13))
            continue;
        if (strncmp(environ[i], "GATEHOUSE_UPGRADE_", 18) || !strncmp(environ[i], ENV_BIN "=", 22))
            env[k++] = environ[i];
    }
    size_t flen = strlen(ENV_FDS) + strlen(fds) + 2;
    env[k] = malloc(flen);
    env[k + 1] = malloc(64);
    env[k + 2] = malloc(64);
    if (!env[k] || !env[k + 1] || !env[k + 2]) {
        free(env[k]);
        free(env[k + 1]);
        free(env[k + 2]);
        free(env);
        return NULL;
    }
    snprintf(env[k], flen, "%s=%s", ENV_FDS, fds);
    snprintf(env[k + 1], 64, "%s=%d", ENV_READY, ready_fd);
    snprintf(env[k + 2], 64, "%s=%u", ENV_WORKERS, workers);
    return env;
}

static void free_env(char **env)
{
    size_t n = 0;
    while (env[n])
        n++;
    for (size_t i = n >= 3 ? n - 3 : 0; i < n; i++)
        free(env[i]);
    free(env);
}

/* Between fork and exec only async-signal-safe calls: the sockets and the pipe lose
 * FD_CLOEXEC so the new binary receives them. */
static void exec_child(const char *bin, char *const argv[], char **env, const struct socket_list *l,
                       int ready_fd)
{
    for (unsigned i = 0; i < l->n; i++)
        fcntl(l->fds[i], F_SETFD, 0);
    fcntl(ready_fd, F_SETFD, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(bin, argv, env);
    _exit(127);
}

/* ---- every worker past a point ---- */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned passed; /* the generation every worker has reached */
} barrier = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};

static void barrier_pass(struct gh_loop *loop, void *arg) {}

static void barrier_done(void *arg)
{
    pthread_mutex_lock(&barrier.mu);
    barrier.passed = (unsigned)(uintptr_t)arg;
    pthread_cond_broadcast(&barrier.cv);
    pthread_mutex_unlock(&barrier.mu);
}

/* Waits until every worker has run a message posted now: whatever it was doing before
 * (a close() that did not yet know the descriptors are about to be shared) has ended. */
static bool workers_pass(struct gh_engine *e, gh_err *err)
{
    static unsigned generation;
    unsigned gen = ++generation;
    gh_engine_broadcast(e, barrier_pass, (void *)(uintptr_t)gen, barrier_done);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    pthread_mutex_lock(&barrier.mu);
    int rc = 0;
    while (barrier.passed != gen && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&barrier.cv, &barrier.mu, &until);
    bool ok = barrier.passed == gen;
    pthread_mutex_unlock(&barrier.mu);
    return ok || gh_fail(err, "a worker did not answer within 5 s");
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for the ready byte. EOF means the new process closed the pipe without it: it
 * exited, or failed before it was ready. */
static bool wait_ready(int fd, pid_t child, gh_err *err)
{
    long long deadline = now_ms() + GH_UPGRADE_TIMEOUT_MS;
    for (;;) {
        long long left = deadline - now_ms();
        if (left <= 0)
            return gh_fail(err, "the new process was not ready within %d s",
                           GH_UPGRADE_TIMEOUT_MS / 1000);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int rc = poll(&p, 1, (int)left);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0)
            return gh_fail_sys(err, errno, "waiting for the new process");
        if (rc == 0)
            continue;
        char c;
        ssize_t n = read(fd, &c, 1);
        if (n == 1)
            return true;
        if (n < 0 && errno == EINTR)
            continue;
        int status = 0;
        if (waitpid(child, &status, WNOHANG) == child && WIFEXITED(status))
            return gh_fail(err, "the new process exited with status %d before it was ready",
                           WEXITSTATUS(status));
        return gh_fail(err, "the new process closed its ready pipe before it was ready");
    }
}

bool gh_upgrade_start(struct gh_engine *e, char *const argv[], unsigned workers,
                      const struct gh_upgrade_hooks *hooks, pid_t *child, gh_err *err)
{
    char bin[PATH_MAX];
    if (!new_binary(bin, sizeof bin, err))
        return false;
    struct socket_list *l = calloc(1, sizeof *l);
    if (!l)
        return gh_fail(err, "out of memory");
    int ready[2] = {-1, -1};
    char **env = NULL;
    bool ok = false;
    /* From fork to exec the child holds a copy of every descriptor, so a connection closed
     * meanwhile would stay in its worker's epoll set: closes take it out explicitly. */
    gh_loop_fds_shared(true);
    if (!workers_pass(e, err)) {
        gh_loop_fds_shared(false);
        free(l);
        return false;
    }
    hooks->freeze();
    gh_engine_each_socket(e, collect, l);
    if (l->full) {
        gh_fail(err, "too many listening sockets to hand over");
        goto out;
    }
    if (pipe2(ready, O_CLOEXEC) < 0) {
        gh_fail_sys(err, errno, "pipe");
        goto out;
    }
    if (!(env = child_env(l->text ? l->text : "", ready[1], workers))) {
        gh_fail(err, "out of memory");
        goto out;
    }
    gh_log(NULL, NULL, "upgrade", "starting %s with %u listening sockets", bin, l->n);
    pid_t pid = fork();
    if (pid < 0) {
        gh_fail_sys(err, errno, "fork");
        goto out;
    }
    if (pid == 0)
        exec_child(bin, argv, env, l, ready[1]);
    close(ready[1]);
    ready[1] = -1;
    if (!wait_ready(ready[0], pid, err)) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        goto out;
    }
    *child = pid;
    ok = true;
out:
    gh_loop_fds_shared(false); /* the child has exec'd, or is gone */
    if (!ok)
        hooks->thaw();
    for (int i = 0; i < 2; i++)
        if (ready[i] >= 0)
            close(ready[i]);
    if (env)
        free_env(env);
    free(l->text);
    free(l);
    return ok;
}

/* ---- the new process ---- */

bool gh_upgrade_inherited(unsigned *workers)
{
    const char *fds = getenv(ENV_FDS), *w = getenv(ENV_WORKERS);
    if (!fds)
        return false;
    long n = w ? strtol(w, NULL, 10) : 0;
    if (n >= 1 && n <= 256)
        *workers = (unsigned)n;
    return true;
}

bool gh_upgrade_adopt(struct gh_engine *e, gh_err *err)
{
    const char *list = getenv(ENV_FDS);
    if (!list)
        return true;
    char *copy = strdup(list), *save = NULL;
    if (!copy)
        return gh_fail(err, "out of memory");
    bool ok = true;
    for (char *item = strtok_r(copy, " ", &save); item && ok; item = strtok_r(NULL, " ", &save)) {
        char *eq = strrchr(item, '=');
        char *end;
        long fd = eq ? strtol(eq + 1, &end, 10) : -1;
        struct gh_sockaddr a;
        if (!eq || end == eq + 1 || *end || fd < 0 || fd > INT_MAX) {
            ok = gh_fail(err, "%s: malformed item \"%s\"", ENV_FDS, item);
            break;
        }
        *eq = 0;
        if (!gh_sockaddr_parse(item, &a, err)) {
            gh_err_context(err, "%s", ENV_FDS);
            ok = false;
            break;
        }
        int listening = 0;
        socklen_t len = sizeof listening;
        if (getsockopt((int)fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening) {
            ok = gh_fail(err, "%s: descriptor %ld of %s is not a listening socket", ENV_FDS, fd,
                         item);
            break;
        }
        fcntl((int)fd, F_SETFD, FD_CLOEXEC);
        ok = gh_engine_inherit(e, &a, (int)fd, err);
    }
    free(copy);
    unsetenv(ENV_FDS);
    unsetenv(ENV_WORKERS);
    const char *ready = getenv(ENV_READY);
    if (ready)
        fcntl(atoi(ready), F_SETFD, FD_CLOEXEC);
    return ok;
}

void gh_upgrade_ready(void)
{
    const char *ready = getenv(ENV_READY);
    if (!ready)
        return;
    int fd = atoi(ready);
    if (write(fd, "R", 1) != 1)
        gh_log(NULL, NULL, "upgrade-error", "could not tell the old process: %s", strerror(errno));
    close(fd);
    unsetenv(ENV_READY);
}

/* ---- pid file and `gatehouse upgrade` ---- */

void gh_pidfile_path(const char *data_dir, char *out, size_t cap)
{
    snprintf(out, cap, "%s/gatehouse.pid", data_dir);
}

bool gh_pidfile_write(const char *path, gh_err *err)
{
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.new", path);
    FILE *f = fopen(tmp, "we");
    if (!f)
        return gh_fail_sys(err, errno, "pid file %s", tmp);
    fprintf(f, "%ld\n", (long)getpid());
    if (fclose(f) != 0 || rename(tmp, path) < 0)
        return gh_fail_sys(err, errno, "pid file %s", path);
    return true;
}

static long pidfile_read(const char *path)
{
    FILE *f = fopen(path, "re");
    long pid = 0;
    if (f) {
        if (fscanf(f, "%ld", &pid) != 1)
            pid = 0;
        fclose(f);
    }
    return pid;
}

int gh_upgrade_command(int argc, char **argv)
{
    char path[PATH_MAX];
    gh_pidfile_path("./data", path, sizeof path);
    for (int i = 2; i < argc; i++) {
        if (i + 1 < argc && !strcmp(argv[i], "--pid-file"))
            snprintf(path, sizeof path, "%s", argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--data"))
            gh_pidfile_path(argv[++i], path, sizeof path);
        else {
            fprintf(stderr, "usage: gatehouse upgrade [--data DIR | --pid-file FILE]\n");
            return 2;
        }
    }
    long old = pidfile_read(path);
    if (old <= 0) {
        fprintf(stderr, "gatehouse upgrade: no daemon pid in %s\n", path);
        return 1;
    }
    if (kill((pid_t)old, SIGUSR2) < 0) {
        fprintf(stderr, "gatehouse upgrade: signalling %ld: %s\n", old, strerror(errno));
        return 1;
    }
    long long deadline = now_ms() + GH_UPGRADE_TIMEOUT_MS + 5000;
    while (now_ms() < deadline) {
        long now = pidfile_read(path);
        if (now > 0 && now != old) {
            printf("upgraded: process %ld took over from %ld\n", now, old);
            return 0;
        }
        usleep(100 * 1000);
    }
    fprintf(stderr,
            "gatehouse upgrade: no new process took over; %ld goes on serving (see its "
            "log)\n",
            old);
    return 1;
}

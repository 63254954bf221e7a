/*
 * main: `gatehouse serve`: parses arguments, opens the store, starts the engine and
 * the management layer, and turns SIGTERM/SIGINT into a graceful stop, SIGHUP into
 * a reload and SIGUSR2 into a binary upgrade. Also `gatehouse upgrade`, `schema` and
 * `--version`.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "core/loop.h"
#include "jmap/http_api.h"
#include "net/engine.h"
#include "net/tls.h"
#include "objects/objects.h"
#include "proto/http.h"
#include "service/notify.h"
#include "service/privileges.h"
#include "service/upgrade.h"
#include "store/store.h"

#define GRACE_MS         10000
#define UPGRADE_DRAIN_MS 60000 /* sessions of the old process run this long after an upgrade */

#ifndef GH_VERSION
#define GH_VERSION "unknown"
#endif

struct serve_args {
    const char *data_dir;
    const char *store_url;
    const char *http_bind;
    const char *user;
    unsigned workers;
    enum gh_log_format log_format;
    const char *log_file;
    bool session_log;
    enum gh_loop_backend engine;
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: gatehouse serve [--data DIR] [--store URL] [--workers N] [--http ADDR]\n"
            "                       [--log-format text|json] [--log-file PATH]\n"
            "                       [--session-log on|off] [--user NAME]\n"
            "                       [--engine auto|epoll|io_uring]\n"
            "       gatehouse upgrade [--data DIR | --pid-file FILE]\n"
            "       gatehouse schema | --version\n"
            "  --data DIR      data directory (default ./data)\n"
            "  --store URL     sqlite:PATH (default sqlite:DIR/gatehouse.db) or postgres://...\n"
            "  --workers N     worker threads (default: one per core)\n"
            "  --http ADDR     address of the management listener created on first start\n"
            "                  (default 127.0.0.1:8080, or GATEHOUSE_HTTP)\n"
            "  --engine E      how workers wait for sockets (default auto: io_uring when the\n"
            "                  kernel allows it, else epoll; or GATEHOUSE_ENGINE)\n"
            "  --user NAME     started as root: become NAME, keeping only CAP_NET_BIND_SERVICE\n"
            "  --log-file PATH write the log there instead of stderr; reopened on SIGUSR1\n"
            "  --session-log   one line per finished session (default on)\n"
            "environment: GATEHOUSE_ADMIN_SECRET sets the administrator secret\n");
}

static bool parse_args(int argc, char **argv, struct serve_args *a, gh_err *err)
{
    *a = (struct serve_args){.data_dir = "./data", .log_format = GH_LOG_TEXT, .session_log = true};
    a->http_bind = getenv("GATEHOUSE_HTTP") ? getenv("GATEHOUSE_HTTP") : "127.0.0.1:8080";
    const char *engine = getenv("GATEHOUSE_ENGINE");
    if (engine && *engine && !gh_loop_backend_parse(engine, &a->engine))
        return gh_fail(err, "GATEHOUSE_ENGINE must be auto, epoll or io_uring");
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    a->workers = n > 0 ? (unsigned)n : 1;
    for (int i = 2; i < argc; i++) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!val)
            return gh_fail(err, "%s needs a value", opt);
        if (!strcmp(opt, "--data"))
            a->data_dir = val;
        else if (!strcmp(opt, "--store"))
            a->store_url = val;
        else if (!strcmp(opt, "--http"))
            a->http_bind = val;
        else if (!strcmp(opt, "--user"))
            a->user = val;
        else if (!strcmp(opt, "--workers")) {
            char *end;
            long w = strtol(val, &end, 10);
            if (*end || w < 1 || w > GH_WORKERS_MAX)
                return gh_fail(err, "--workers must be a number from 1 to %d", GH_WORKERS_MAX);
            a->workers = (unsigned)w;
        } else if (!strcmp(opt, "--engine")) {
            if (!gh_loop_backend_parse(val, &a->engine))
                return gh_fail(err, "--engine must be auto, epoll or io_uring");
        } else if (!strcmp(opt, "--log-format")) {
            if (!strcmp(val, "json"))
                a->log_format = GH_LOG_JSON;
            else if (strcmp(val, "text"))
                return gh_fail(err, "--log-format must be text or json");
        } else if (!strcmp(opt, "--log-file")) {
            a->log_file = val;
        } else if (!strcmp(opt, "--session-log")) {
            if (strcmp(val, "on") && strcmp(val, "off"))
                return gh_fail(err, "--session-log must be on or off");
            a->session_log = !strcmp(val, "on");
        } else
            return gh_fail(err, "unknown option %s", opt);
        i++;
    }
    return true;
}

/* Many idle sessions need many descriptors: take the hard limit. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void freeze_store(void)
{
    gh_jmap_lock();
    gh_objects_lock();
}

static void thaw_store(void)
{
    gh_objects_unlock();
    gh_jmap_unlock();
}

/* SIGUSR2: true when a new process took over (this one then drains and exits). */
static bool upgrade(struct gh_engine *engine, char **argv, unsigned workers)
{
    gh_err err = {0};
    pid_t child;
    struct gh_upgrade_hooks hooks = {.freeze = freeze_store, .thaw = thaw_store};
    if (!gh_upgrade_start(engine, argv, workers, &hooks, &child, &err)) {
        gh_log(NULL, NULL, "upgrade-error", "%s; this process goes on serving", err.msg);
        return false;
    }
    gh_log(NULL, NULL, "upgrade", "process %ld took over; draining sessions", (long)child);
    gh_notify_mainpid(child);
    gh_jmap_retire();
    thaw_store();
    gh_watchdog_stop();
    gh_objects_stop_background();
    gh_engine_hand_over(engine, UPGRADE_DRAIN_MS);
    return true;
}

/* After an upgrade the sessions left drain; SIGTERM/SIGINT still cut that short with a
 * graceful stop (every session gets its goodbye), as the service manager expects. */
static void drain(struct gh_engine *engine, const sigset_t *set)
{
    bool stopping = false;
    const struct timespec tick = {.tv_nsec = 200 * 1000 * 1000};
    while (gh_engine_running(engine)) {
        int sig = sigtimedwait(set, NULL, &tick);
        if ((sig == SIGTERM || sig == SIGINT) && !stopping) {
            gh_log(NULL, NULL, "shutdown", "signal %d: ending the drain gracefully", sig);
            gh_engine_stop(engine, GRACE_MS);
            stopping = true;
        }
    }
}

/* Signals are taken by one thread with sigwait, so handlers never run inside a worker. */
static int wait_for_signals(struct gh_engine *engine, const sigset_t *set, char **argv,
                            unsigned workers)
{
    for (;;) {
        int sig;
        if (sigwait(set, &sig) != 0)
            continue;
        if (sig == SIGUSR1) { /* logrotate moved the file away */
            gh_err err = {0};
            if (gh_log_reopen(&err))
                gh_log(NULL, NULL, "log-reopened", "log file opened again");
            else
                fprintf(stderr, "gatehouse: %s\n", err.msg);
            continue;
        }
        if (sig == SIGHUP) {
            gh_err err = {0};
            gh_notify_reloading();
            if (gh_objects_reload(&err))
                gh_log(NULL, NULL, "reload", "certificates and settings reloaded");
            else
                gh_log(NULL, NULL, "reload-error", "%s", err.msg);
            gh_notify("READY=1");
            continue;
        }
        if (sig == SIGUSR2) {
            if (!upgrade(engine, argv, workers))
                continue;
            drain(engine, set);
            return 0;
        }
        gh_log(NULL, NULL, "shutdown", "signal %d: stopping gracefully", sig);
        gh_notify("STOPPING=1");
        gh_watchdog_stop();
        gh_objects_stop_background();
        gh_engine_stop(engine, GRACE_MS);
        return 0;
    }
}

/* Listeners accept and the API answers: tell whoever waits (an upgrading process, the
 * service manager) and record the pid for `gatehouse upgrade`. */
static void started(struct gh_engine *engine, const struct serve_args *args, bool inherited)
{
    unsigned unused = gh_engine_inherit_done(engine);
    if (unused)
        gh_log(NULL, NULL, "upgrade", "closed %u inherited sockets no listener wanted", unused);
    char pidfile[4096];
    gh_err err = {0};
    gh_pidfile_path(args->data_dir, pidfile, sizeof pidfile);
    if (!gh_pidfile_write(pidfile, &err))
        gh_log(NULL, NULL, "pidfile-error", "%s", err.msg);
    gh_log(NULL, NULL, "started", "%u workers, store %s%s", args->workers, args->store_url,
           inherited ? ", sockets inherited from the previous process" : "");
    gh_upgrade_ready();
    gh_notify("READY=1");
    gh_watchdog_start(engine);
}

static int serve(int argc, char **argv)
{
    struct serve_args args;
    gh_err err = {0};
    if (!parse_args(argc, argv, &args, &err)) {
        fprintf(stderr, "gatehouse: %s\n", err.msg);
        usage(stderr);
        return 2;
    }
    gh_log_init(args.log_format);
    /* before anything else, so asking for an engine this kernel refuses fails at once */
    if (!gh_loop_choose_backend(args.engine, &err)) {
        fprintf(stderr, "gatehouse: %s\n", err.msg);
        return 1;
    }
    gh_log(NULL, NULL, "engine", "%s", gh_loop_backend_name(gh_loop_backend()));
    gh_log_set_sessions(args.session_log);
    if (args.log_file && !gh_log_open_file(args.log_file, &err)) {
        fprintf(stderr, "gatehouse: %s\n", err.msg);
        return 1;
    }
    raise_nofile();
    bool inherited = gh_upgrade_inherited(&args.workers);

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (mkdir(args.data_dir, 0700) < 0 && errno != EEXIST) {
        fprintf(stderr, "gatehouse: data directory %s: %s\n", args.data_dir, strerror(errno));
        return 1;
    }
    if (args.user && !gh_drop_privileges(args.user, args.data_dir, &err)) {
        fprintf(stderr, "gatehouse: %s\n", err.msg);
        return 1;
    }
    char default_url[4096];
    if (!args.store_url) {
        snprintf(default_url, sizeof default_url, "sqlite:%s/gatehouse.db", args.data_dir);
        args.store_url = default_url;
    }

    /* `http` listeners serve the management API, which reads the objects through hooks */
    gh_api_init(&(struct gh_api_hooks){
        .authenticate = gh_objects_authenticate,
        .schema = gh_objects_schema,
        .status = gh_objects_listener_status,
    });
    gh_http_set_handler(&gh_api_http);

    struct gh_store *store = NULL;
    struct gh_engine *engine = NULL;
    int rc = 1;
    if (!gh_tls_init(&err) || !(store = gh_store_open(args.store_url, &err)) ||
        !(engine = gh_engine_new(args.workers, &err)) || !gh_upgrade_adopt(engine, &err) ||
        !gh_engine_start(engine, &err)) {
        fprintf(stderr, "gatehouse: %s\n", err.msg);
        goto out;
    }
    gh_engine_global = engine;
    struct gh_objects_options opt = {
        .store = store,
        .engine = engine,
        .http_bind = args.http_bind,
        .admin_secret = getenv("GATEHOUSE_ADMIN_SECRET"),
    };
    if (!gh_objects_init(&opt, &err)) {
        fprintf(stderr, "gatehouse: %s\n", err.msg);
        gh_engine_stop(engine, 0);
        gh_engine_wait(engine);
        goto out;
    }
    started(engine, &args, inherited);
    rc = wait_for_signals(engine, &set, argv, args.workers);
    gh_engine_wait(engine);
    gh_objects_shutdown();
    gh_log(NULL, NULL, "stopped", "goodbye");
out:
    gh_engine_free(engine);
    gh_store_close(store);
    gh_tls_shutdown();
    return rc;
}

/* The object schema as JSON, for the shell completion generator and documentation. */
static int print_schema(void)
{
    json_t *schema = gh_objects_schema();
    int rc = json_dumpf(schema, stdout, JSON_INDENT(2) | JSON_SORT_KEYS) == 0 ? 0 : 1;
    putchar('\n');
    json_decref(schema);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "serve"))
        return serve(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "upgrade"))
        return gh_upgrade_command(argc, argv);
    if (argc == 2 && !strcmp(argv[1], "schema"))
        return print_schema();
    if (argc == 2 && (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version"))) {
        printf("gatehouse %s\n", GH_VERSION);
        return 0;
    }
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return 0;
    }
    usage(stderr);
    return 2;
}

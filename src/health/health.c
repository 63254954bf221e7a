/*
 * health: one thread with its own loop runs every destination's checks. A check speaks the
 * protocol as a client would: connect, a PROXY v2 LOCAL header (v1 UNKNOWN) when the
 * destination expects one, so the backend logs no made-up client, TLS when the destination
 * has it, the greeting (220, * OK, +OK, ManageSieve's OK), then goodbye. fall failures in a
 * row mark it down, rise successes up; the status is an atomic the workers read.
 */
#include "health/health.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/log.h"
#include "metrics/metrics.h"
#include "net/backend.h"
#include "net/proxy_protocol.h"

struct check {
    struct gh_backend b;
    struct gh_timer next, deadline;
    const struct gh_destination *d; /* in the thread's set */
    bool running;
};

/* The thread's own state; only the health thread touches it. */
static struct {
    struct gh_dest_set *set;
    struct check *checks; /* one per destination of set */
} th;

/* Shared with other threads, under mu. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct gh_loop *loop;
static pthread_t thread;
static bool running;
static struct gh_dest_set *latest; /* the set last given, for status_of and each */
static gh_health_report_fn reporter;

void gh_health_set_reporter(gh_health_report_fn fn)
{
    pthread_mutex_lock(&mu);
    reporter = fn;
    pthread_mutex_unlock(&mu);
}

/* ---- one check ---- */

static void check_end(struct check *k, const char *error)
{
    const struct gh_destination *d = k->d;
    struct gh_dest_health *h = d->health;
    gh_timer_cancel(loop, &k->deadline);
    gh_backend_close(&k->b);
    k->running = false;
    int status = atomic_load(&h->status);
    if (!error) {
        h->fails = 0;
        h->oks++;
        if (status != GH_DEST_UP && (status == GH_DEST_UNKNOWN || h->oks >= d->rise))
            status = GH_DEST_UP;
    } else {
        h->oks = 0;
        h->fails++;
        if (status != GH_DEST_DOWN && h->fails >= d->fall)
            status = GH_DEST_DOWN;
    }
    atomic_store(&h->status, status);
    pthread_mutex_lock(&mu);
    gh_health_report_fn fn = reporter;
    pthread_mutex_unlock(&mu);
    if (fn)
        fn(d->id, (enum gh_dest_status)status, error);
}

static void say_goodbye(struct gh_backend *b)
{
    static const char *const bye[GH_PROTO_COUNT] = {
        [GH_PROTO_SMTP] = "QUIT\r\n",          [GH_PROTO_LMTP] = "QUIT\r\n",
        [GH_PROTO_IMAP] = "gh2 LOGOUT\r\n",    [GH_PROTO_POP3] = "QUIT\r\n",
        [GH_PROTO_MANAGESIEVE] = "LOGOUT\r\n",
    };
    const char *line = bye[b->dest->protocol];
    if (line && gh_backend_send(b, line, strlen(line)) < 0)
        return; /* the check already passed; a backend closing first is fine */
}

static void check_opened(struct gh_backend *b, const char *error)
{
    struct check *k = gh_container_of(b, struct check, b);
    if (!error)
        say_goodbye(b);
    check_end(k, error);
}

static void check_timed_out(struct gh_timer *t)
{
    struct check *k = gh_container_of(t, struct check, deadline);
    check_end(k, "check timed out");
}

static void check_start(struct gh_timer *t)
{
    struct check *k = gh_container_of(t, struct check, next);
    const struct gh_destination *d = k->d;
    gh_timer_set(loop, &k->next, d->check_interval_ms);
    if (k->running)
        return; /* the last one is still within its timeout */
    uint8_t hdr[GH_PROXY_V2_WRITE_MAX];
    size_t n = 0;
    if (d->forwarding == GH_FWD_PROXY_V2) {
        struct gh_sockaddr none = {0}; /* no addresses: a LOCAL header */
        n = gh_proxy_write_v2(&none, &none, false, hdr, sizeof hdr);
    } else if (d->forwarding == GH_FWD_PROXY_V1) {
        memcpy(hdr, "PROXY UNKNOWN\r\n", n = 15);
    }
    memset(&k->b, 0, sizeof k->b);
    k->b.step_timeout_ms = d->check_timeout_ms;
    k->running = true;
    gh_timer_set(loop, &k->deadline, d->check_timeout_ms);
    if (!gh_backend_open(&k->b, loop, d, hdr, n, d->protocol != GH_PROTO_HTTP, check_opened))
        check_end(k, "cannot connect");
}

/* ---- the set ---- */

static void drop_checks(void)
{
    for (unsigned i = 0; th.set && th.checks && i < th.set->n; i++) {
        struct check *k = &th.checks[i];
        gh_timer_cancel(loop, &k->next);
        gh_timer_cancel(loop, &k->deadline);
        gh_backend_close(&k->b);
    }
    free(th.checks);
    th.checks = NULL;
    gh_dest_set_unref(th.set);
    th.set = NULL;
}

static void use_set(struct gh_loop *l, void *arg)
{
    struct gh_dest_set *s = arg;
    drop_checks();
    th.set = s;
    th.checks = calloc(s->n ? s->n : 1, sizeof *th.checks);
    if (!th.checks) {
        gh_log(NULL, NULL, "health-error", "out of memory: destinations are not checked");
        return;
    }
    for (unsigned i = 0; i < s->n; i++) {
        struct check *k = &th.checks[i];
        k->d = &s->d[i];
        k->next.fn = check_start;
        k->deadline.fn = check_timed_out;
        if (k->d->health_check) /* spread the first checks a little */
            gh_timer_set(loop, &k->next, 1 + (i * 37) % 250);
    }
}

static void stop_loop(struct gh_loop *l, void *arg)
{
    drop_checks();
    gh_loop_stop(l);
}

static void *health_main(void *arg)
{
    gh_err err = {0};
    if (!gh_loop_run(loop, &err))
        gh_log(NULL, NULL, "health-error", "%s", err.msg);
    drop_checks();
    gh_buf_cache_drain(); /* this thread's spare buffer blocks */
    return NULL;
}

/* Under mu. */
static bool start_locked(void)
{
    if (running)
        return true;
    gh_err err = {0};
    if (!(loop = gh_loop_new(&err))) {
        gh_log(NULL, NULL, "health-error", "%s", err.msg);
        return false;
    }
    if (pthread_create(&thread, NULL, health_main, NULL)) {
        gh_loop_free(loop);
        loop = NULL;
        gh_log(NULL, NULL, "health-error", "cannot start the health-check thread");
        return false;
    }
    running = true;
    return true;
}

/* gatehouse_destination_up: 0 for a destination the checks hold down, else 1 (a destination
 * not checked, or not checked yet, gets sessions, so it counts as up). */
static void destination_up(struct gh_metrics_out *out, void *arg)
{
    pthread_mutex_lock(&mu);
    struct gh_dest_set *s = latest ? gh_dest_set_ref(latest) : NULL;
    pthread_mutex_unlock(&mu);
    for (unsigned i = 0; s && i < s->n; i++) {
        char name[2 * GH_DEST_NAME_MAX], labels[2 * GH_DEST_NAME_MAX + 16];
        gh_metrics_escape(s->d[i].name, name, sizeof name);
        snprintf(labels, sizeof labels, "destination=\"%s\"", name);
        bool down =
            atomic_load_explicit(&s->d[i].health->status, memory_order_relaxed) == GH_DEST_DOWN;
        gh_metrics_sample(out, labels, down ? 0 : 1);
    }
    gh_dest_set_unref(s);
}

void gh_health_watch(struct gh_dest_set *s)
{
    gh_metrics_set_gauge(GH_GAUGE_DESTINATION_UP, destination_up, NULL);
    pthread_mutex_lock(&mu);
    gh_dest_set_unref(latest);
    latest = gh_dest_set_ref(s);
    if (start_locked())
        gh_loop_post(loop, use_set, gh_dest_set_ref(s));
    pthread_mutex_unlock(&mu);
}

void gh_health_stop(void)
{
    gh_metrics_set_gauge(GH_GAUGE_DESTINATION_UP, NULL, NULL);
    pthread_mutex_lock(&mu);
    bool was = running;
    running = false;
    pthread_mutex_unlock(&mu);
    if (was) {
        gh_loop_post(loop, stop_loop, NULL);
        pthread_join(thread, NULL);
        gh_loop_free(loop);
        loop = NULL;
    }
    pthread_mutex_lock(&mu);
    gh_dest_set_unref(latest);
    latest = NULL;
    pthread_mutex_unlock(&mu);
}

static const char *status_text(const struct gh_destination *d)
{
    switch (atomic_load(&d->health->status)) {
    case GH_DEST_UP:
        return "up";
    case GH_DEST_DOWN:
        return "down";
    default:
        return "unknown";
    }
}

const char *gh_health_status_of(const char *id)
{
    const char *s = "unknown";
    pthread_mutex_lock(&mu);
    for (unsigned i = 0; latest && id && i < latest->n; i++)
        if (!strcmp(latest->d[i].id, id))
            s = status_text(&latest->d[i]);
    pthread_mutex_unlock(&mu);
    return s;
}

void gh_health_each(void (*fn)(const char *name, bool up, void *arg), void *arg)
{
    pthread_mutex_lock(&mu);
    struct gh_dest_set *s = latest ? gh_dest_set_ref(latest) : NULL;
    pthread_mutex_unlock(&mu);
    for (unsigned i = 0; s && i < s->n; i++)
        fn(s->d[i].name, gh_dest_usable(&s->d[i]), arg);
    gh_dest_set_unref(s);
}

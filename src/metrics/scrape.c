/*
 * scrape: formats a snapshot of the counters as Prometheus text (format 0.0.4), one family
 * after another with its HELP and TYPE, and as the small JSON of GET /api/stats. Numbers
 * are written by hand: a scrape of 1,000 busy listeners is some 50,000 lines. Each listener
 * always has its accepted and active series; a labelled series (a reason, a result, a
 * direction) or a histogram appears once it has counted something, which keeps the scrape
 * of many quiet listeners small (Prometheus reads an absent series as "no data").
 */
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "metrics/metrics.h"
#include "metrics/snapshot.h"

struct gh_metrics_out {
    char *p;
    size_t len, cap;
    bool failed;
};

static bool reserve(struct gh_metrics_out *o, size_t n)
{
    if (o->failed)
        return false;
    if (o->len + n <= o->cap)
        return true;
    size_t cap = o->cap ? o->cap : 65536;
    while (cap < o->len + n)
        cap *= 2;
    char *p = realloc(o->p, cap);
    if (!p) {
        o->failed = true;
        return false;
    }
    o->p = p;
    o->cap = cap;
    return true;
}

static void put(struct gh_metrics_out *o, const char *s, size_t n)
{
    if (reserve(o, n)) {
        memcpy(o->p + o->len, s, n);
        o->len += n;
    }
}

static void puts_(struct gh_metrics_out *o, const char *s)
{
    put(o, s, strlen(s));
}

static void put_u64(struct gh_metrics_out *o, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(o, tmp + i, sizeof tmp - i);
}

__attribute__((format(printf, 2, 3))) static void putf(struct gh_metrics_out *o, const char *fmt,
                                                       ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        put(o, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void family(struct gh_metrics_out *o, const char *name, const char *type, const char *help)
{
    putf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{listener="..",protocol=".."[,extra]} value */
static void listener_sample(struct gh_metrics_out *o, const char *name,
                            const struct gh_metrics_lsnap *l, const char *extra, uint64_t v)
{
    puts_(o, name);
    puts_(o, "{listener=\"");
    puts_(o, l->name);
    puts_(o, "\",protocol=\"");
    puts_(o, l->protocol);
    put(o, "\"", 1);
    if (extra) {
        put(o, ",", 1);
        puts_(o, extra);
    }
    put(o, "} ", 2);
    put_u64(o, v);
    put(o, "\n", 1);
}

void gh_metrics_sample(struct gh_metrics_out *out, const char *labels, double value)
{
    /* the family name was written by the caller of the provider */
    if (labels && *labels)
        putf(out, "{%s}", labels);
    putf(out, " %.17g\n", value);
}

/* A counter family with one label whose values are names[]: counts[k] per listener. */
static void labelled(struct gh_metrics_out *o, const struct gh_metrics_snapshot *s,
                     const char *name, const char *label, const char *const *names, unsigned n,
                     size_t offset)
{
    char extra[8][48]; /* the label pairs, made once for every listener */
    for (unsigned k = 0; k < n && k < 8; k++)
        snprintf(extra[k], sizeof extra[k], "%s=\"%s\"", label, names[k]);
    for (unsigned i = 0; i < s->n; i++) {
        const uint64_t *counts = (const uint64_t *)((const char *)&s->listeners[i].sum + offset);
        for (unsigned k = 0; k < n && k < 8; k++)
            if (counts[k]) /* a series that never counted is left out: see the header */
                listener_sample(o, name, &s->listeners[i], extra[k], counts[k]);
    }
}

static void histogram(struct gh_metrics_out *o, const struct gh_metrics_snapshot *s,
                      const char *name, bool handshake)
{
    const char *const *le;
    gh_metrics_bounds(handshake, &le);
    char bucket[96], extra[GH_HIST_BUCKETS][24];
    snprintf(bucket, sizeof bucket, "%s_bucket", name);
    char count_name[96];
    snprintf(count_name, sizeof count_name, "%s_count", name);
    for (unsigned b = 0; b < GH_HIST_BUCKETS; b++)
        snprintf(extra[b], sizeof extra[b], "le=\"%s\"", le[b]);
    for (unsigned i = 0; i < s->n; i++) {
        const struct gh_metrics_lsnap *l = &s->listeners[i];
        const struct gh_hist *h = handshake ? &l->sum.handshake : &l->sum.session;
        if (!h->count)
            continue;
        uint64_t cumulative = 0;
        for (unsigned b = 0; b < GH_HIST_BUCKETS; b++) {
            cumulative += h->bucket[b];
            /* a bucket read before a racing count can exceed it: keep them monotonic */
            listener_sample(o, bucket, l, extra[b], cumulative < h->count ? cumulative : h->count);
        }
        listener_sample(o, bucket, l, "le=\"+Inf\"", h->count);
        /* the sum in seconds with microseconds: whole part, then six digits */
        puts_(o, name);
        putf(o, "_sum{listener=\"%s\",protocol=\"%s\"} ", l->name, l->protocol);
        put_u64(o, h->sum_us / 1000000);
        char frac[8];
        snprintf(frac, sizeof frac, ".%06u", (unsigned)(h->sum_us % 1000000));
        puts_(o, frac);
        put(o, "\n", 1);
        listener_sample(o, count_name, l, NULL, h->count);
    }
}

static const char *const refusal_names[GH_REFUSED_COUNT] = {
    "maxConnections", "perIpLimit", "rate", "blocked", "descriptors",
};
static const char *const tls_names[GH_TLS_COUNT] = {"full", "resumed", "failed", "timeout"};
static const char *const proxy_names[GH_PROXYM_COUNT] = {"ok", "local", "invalid", "timeout",
                                                         "untrusted"};
static const char *const handoff_names[GH_HANDOFF_COUNT] = {"ok", "retried", "failed"};
static const char *const direction_names[GH_DIRECTION_COUNT] = {"toDestination", "toClient"};
static const char *const login_names[GH_LOGIN_COUNT] = {"success", "failure"};
static const char *const ban_names[GH_BAN_COUNT] = {"authFailure", "loiter", "scan", "rate"};

static void connection_families(struct gh_metrics_out *o, const struct gh_metrics_snapshot *s)
{
    family(o, "gatehouse_connections_accepted_total", "counter",
           "Connections accepted, by listener.");
    for (unsigned i = 0; i < s->n; i++)
        listener_sample(o, "gatehouse_connections_accepted_total", &s->listeners[i], NULL,
                        s->listeners[i].sum.accepted);
    family(o, "gatehouse_connections_refused_total", "counter",
           "Connections refused before their session began, by reason.");
    labelled(o, s, "gatehouse_connections_refused_total", "reason", refusal_names, GH_REFUSED_COUNT,
             offsetof(struct gh_metrics_slot, refused));
    family(o, "gatehouse_connections_active", "gauge", "Connections open now.");
    for (unsigned i = 0; i < s->n; i++)
        listener_sample(o, "gatehouse_connections_active", &s->listeners[i], NULL,
                        s->listeners[i].active);
    family(o, "gatehouse_tls_handshakes_total", "counter", "TLS handshakes, by result.");
    labelled(o, s, "gatehouse_tls_handshakes_total", "result", tls_names, GH_TLS_COUNT,
             offsetof(struct gh_metrics_slot, tls));
    family(o, "gatehouse_tls_handshake_seconds", "histogram",
           "Duration of completed TLS handshakes.");
    histogram(o, s, "gatehouse_tls_handshake_seconds", true);
    family(o, "gatehouse_proxy_headers_total", "counter",
           "PROXY protocol headers, by result (untrusted: sent by a peer outside the "
           "trusted networks).");
    labelled(o, s, "gatehouse_proxy_headers_total", "result", proxy_names, GH_PROXYM_COUNT,
             offsetof(struct gh_metrics_slot, proxy));
    family(o, "gatehouse_handoffs_total", "counter",
           "Hand-offs to destinations, by result (retried: one destination failed and the "
           "next was tried).");
    labelled(o, s, "gatehouse_handoffs_total", "result", handoff_names, GH_HANDOFF_COUNT,
             offsetof(struct gh_metrics_slot, handoffs));
    family(o, "gatehouse_relay_bytes_total", "counter",
           "Bytes relayed between clients and destinations, by direction.");
    labelled(o, s, "gatehouse_relay_bytes_total", "direction", direction_names, GH_DIRECTION_COUNT,
             offsetof(struct gh_metrics_slot, bytes));
    family(o, "gatehouse_session_seconds", "histogram", "Duration of finished sessions.");
    histogram(o, s, "gatehouse_session_seconds", false);
    family(o, "gatehouse_logins_total", "counter", "Logins at the front door, by result.");
    labelled(o, s, "gatehouse_logins_total", "result", login_names, GH_LOGIN_COUNT,
             offsetof(struct gh_metrics_slot, logins));
}

static void gauge_family(struct gh_metrics_out *o, const struct gh_metrics_snapshot *s,
                         enum gh_gauge g, const char *name, const char *help)
{
    family(o, name, "gauge", help);
    if (!s->gauge[g])
        return;
    /* the provider writes label sets and values; each sample starts with the name */
    struct gh_metrics_out tmp = {0};
    s->gauge[g](&tmp, s->gauge_arg[g]);
    for (size_t i = 0; i < tmp.len;) {
        const char *nl = memchr(tmp.p + i, '\n', tmp.len - i);
        size_t n = nl ? (size_t)(nl - (tmp.p + i)) + 1 : tmp.len - i;
        puts_(o, name);
        put(o, tmp.p + i, n);
        i += n;
    }
    free(tmp.p);
}

static void server_families(struct gh_metrics_out *o, const struct gh_metrics_snapshot *s)
{
    family(o, "gatehouse_bans_total", "counter",
           "Addresses banned, by reason (listener \"\": bans no listener saw).");
    labelled(o, s, "gatehouse_bans_total", "reason", ban_names, GH_BAN_COUNT,
             offsetof(struct gh_metrics_slot, bans));
    for (unsigned k = 0; k < GH_BAN_COUNT; k++)
        if (s->unlabelled_bans[k])
            putf(o, "gatehouse_bans_total{listener=\"\",protocol=\"\",reason=\"%s\"} %llu\n",
                 ban_names[k], (unsigned long long)s->unlabelled_bans[k]);
    gauge_family(o, s, GH_GAUGE_DESTINATION_UP, "gatehouse_destination_up",
                 "Whether a destination is reachable (1) or not (0).");
    gauge_family(o, s, GH_GAUGE_BLOCKED_ADDRESSES, "gatehouse_blocked_addresses",
                 "Entries of the blocked address list now in force.");
    family(o, "gatehouse_api_requests_total", "counter",
           "Answers of the management API, by HTTP status.");
    for (unsigned st = 100; st < 600; st++)
        if (s->api[st])
            putf(o, "gatehouse_api_requests_total{status=\"%u\"} %llu\n", st,
                 (unsigned long long)s->api[st]);
    family(o, "gatehouse_build_info", "gauge", "The running version; always 1.");
    puts_(o, "gatehouse_build_info{version=\"" GH_VERSION "\"} 1\n");
}

/* ---- the process (from /proc/self) ---- */

static unsigned open_fds(void)
{
    unsigned n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n > 0 ? n - 1 : 0; /* the directory's own descriptor */
}

/* utime + stime in seconds, and the resident size in bytes, from /proc/self/stat. */
static bool proc_stat(double *cpu, double *rss)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p)
        return false;
    unsigned long utime, stime;
    long rss_pages;
    /* fields 3.. after ") ": state ppid pgrp session tty tpgid flags minflt cminflt majflt
     * cmajflt utime stime cutime cstime priority nice threads itreal starttime vsize rss */
    if (sscanf(p + 2,
               "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d %*d "
               "%*u %*u %ld",
               &utime, &stime, &rss_pages) != 3)
        return false;
    double ticks = (double)sysconf(_SC_CLK_TCK);
    *cpu = (double)(utime + stime) / (ticks > 0 ? ticks : 100);
    *rss = (double)rss_pages * (double)sysconf(_SC_PAGESIZE);
    return true;
}

static void process_families(struct gh_metrics_out *o, const struct gh_metrics_snapshot *s)
{
    double cpu = 0, rss = 0;
    proc_stat(&cpu, &rss);
    family(o, "process_cpu_seconds_total", "counter",
           "Total user and system CPU time spent in seconds.");
    putf(o, "process_cpu_seconds_total %.2f\n", cpu);
    family(o, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    putf(o, "process_resident_memory_bytes %.0f\n", rss);
    family(o, "process_open_fds", "gauge", "Number of open file descriptors.");
    putf(o, "process_open_fds %u\n", open_fds());
    family(o, "process_start_time_seconds", "gauge",
           "Start time of the process since unix epoch in seconds.");
    putf(o, "process_start_time_seconds %.3f\n", s->start_time);
}

bool gh_metrics_render(char **text, size_t *len)
{
    struct gh_metrics_snapshot s;
    if (!gh_metrics_snapshot(&s))
        return false;
    struct gh_metrics_out o = {0};
    reserve(&o, 4096 + (size_t)s.n * 6000);
    connection_families(&o, &s);
    server_families(&o, &s);
    process_families(&o, &s);
    put(&o, "", 1); /* a C string too */
    gh_metrics_snapshot_free(&s);
    if (o.failed) {
        free(o.p);
        return false;
    }
    *text = o.p;
    *len = o.len - 1;
    return true;
}

/* ---- GET /api/stats ---- */

static uint64_t sum(const uint64_t *v, unsigned n)
{
    uint64_t t = 0;
    for (unsigned i = 0; i < n; i++)
        t += v[i];
    return t;
}

char *gh_metrics_stats_json(void)
{
    struct gh_metrics_snapshot s;
    if (!gh_metrics_snapshot(&s))
        return NULL;
    struct gh_metrics_out o = {0};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    putf(&o, "{\"time\":%lld,\"listeners\":{", (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    for (unsigned i = 0; i < s.n; i++) {
        const struct gh_metrics_lsnap *l = &s.listeners[i];
        const struct gh_metrics_slot *c = &l->sum;
        /* ids, names and protocol names are [A-Za-z0-9._-]: nothing to escape in JSON */
        putf(&o,
             "%s\"%s\":{\"name\":\"%s\",\"protocol\":\"%s\",\"active\":%llu,\"accepted\":%llu,"
             "\"handshakes\":%llu,\"handoffs\":%llu,\"refused\":%llu,\"bans\":%llu}",
             i ? "," : "", l->id, l->name, l->protocol, (unsigned long long)l->active,
             (unsigned long long)c->accepted,
             (unsigned long long)(c->tls[GH_TLS_FULL] + c->tls[GH_TLS_RESUMED]),
             (unsigned long long)c->handoffs[GH_HANDOFF_OK],
             (unsigned long long)sum(c->refused, GH_REFUSED_COUNT),
             (unsigned long long)sum(c->bans, GH_BAN_COUNT));
    }
    puts_(&o, "}}");
    put(&o, "", 1);
    gh_metrics_snapshot_free(&s);
    if (o.failed) {
        free(o.p);
        return NULL;
    }
    return o.p;
}

/*
 * metrics: counters per listener per worker, and the scrape that sums them. The session
 * path only ever writes its own worker's slot; the registry of listeners (a list under a
 * mutex) is touched when a listener is created or removed and by scrapes, never per session.
 */
#include "metrics/metrics.h"

#include "metrics/snapshot.h"

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define API_STATUS_MAX 600

_Thread_local int gh_metrics_worker = -1;

static struct {
    pthread_mutex_t mu; /* the list, the label values and the gauge providers */
    struct gh_metrics_listener *head;
    unsigned count;
    unsigned nworkers;
    uint64_t (*api)[API_STATUS_MAX]; /* per worker + 1 shared, by status code */
    gh_gauge_fn gauge[GH_GAUGE_COUNT];
    void *gauge_arg[GH_GAUGE_COUNT];
    double start_time; /* seconds since the epoch */
    /* access */
    bool enabled;
    char user[256], secret[256];
} reg = {.mu = PTHREAD_MUTEX_INITIALIZER, .nworkers = 1, .enabled = true};

void gh_metrics_init(unsigned nworkers)
{
    pthread_mutex_lock(&reg.mu);
    if (!reg.api && (reg.api = calloc(nworkers + 1, sizeof *reg.api)))
        reg.nworkers = nworkers; /* never freed: workers may count into it until exit */
    if (reg.start_time == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        reg.start_time = (double)ts.tv_sec + ts.tv_nsec / 1e9;
    }
    pthread_mutex_unlock(&reg.mu);
}

void gh_metrics_thread_worker(int index)
{
    gh_metrics_worker = index;
}

/* ---- listener blocks ---- */

struct gh_metrics_listener *gh_metrics_listener_new(const char *id)
{
    pthread_mutex_lock(&reg.mu);
    unsigned nslots = reg.nworkers + 1;
    size_t size = sizeof(struct gh_metrics_listener) + nslots * sizeof(struct gh_metrics_slot);
    size = (size + 63) & ~(size_t)63;
    struct gh_metrics_listener *m = aligned_alloc(64, size);
    if (!m) {
        pthread_mutex_unlock(&reg.mu);
        return NULL;
    }
    memset(m, 0, size);
    atomic_init(&m->refs, 2); /* the registry's and the caller's */
    m->nslots = nslots;
    snprintf(m->id, sizeof m->id, "%s", id);
    snprintf(m->name, sizeof m->name, "%s", id);
    m->registered = true;
    m->next = reg.head;
    if (reg.head)
        reg.head->prev = m;
    reg.head = m;
    reg.count++;
    pthread_mutex_unlock(&reg.mu);
    return m;
}

void gh_metrics_escape(const char *in, char *out, size_t cap)
{
    size_t n = 0;
    for (; *in && n + 3 < cap; in++) {
        if (*in == '\\' || *in == '"') {
            out[n++] = '\\';
            out[n++] = *in;
        } else if (*in == '\n') {
            out[n++] = '\\';
            out[n++] = 'n';
        } else {
            out[n++] = *in;
        }
    }
    out[n] = 0;
}

void gh_metrics_listener_describe(struct gh_metrics_listener *m, const char *name,
                                  const char *protocol)
{
    if (!m)
        return;
    pthread_mutex_lock(&reg.mu);
    gh_metrics_escape(name, m->name, sizeof m->name);
    gh_metrics_escape(protocol, m->protocol, sizeof m->protocol);
    pthread_mutex_unlock(&reg.mu);
}

void gh_metrics_listener_unref(struct gh_metrics_listener *m)
{
    if (m && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
        free(m);
}

void gh_metrics_listener_retire(struct gh_metrics_listener *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&reg.mu);
    bool was = m->registered;
    if (was) {
        if (m->prev)
            m->prev->next = m->next;
        else
            reg.head = m->next;
        if (m->next)
            m->next->prev = m->prev;
        m->registered = false;
        reg.count--;
    }
    pthread_mutex_unlock(&reg.mu);
    if (was)
        gh_metrics_listener_unref(m);
}

/* ---- counting ---- */

/* Upper bounds in microseconds; the same in seconds for the le labels. */
static const uint64_t handshake_us[GH_HIST_BUCKETS] = {
    5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
};
static const char *const handshake_le[GH_HIST_BUCKETS] = {
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
};
static const uint64_t session_us[GH_HIST_BUCKETS] = {
    10000,    100000,   500000,    1000000,   5000000,    10000000,
    30000000, 60000000, 300000000, 900000000, 3600000000,
};
static const char *const session_le[GH_HIST_BUCKETS] = {
    "0.01", "0.1", "0.5", "1", "5", "10", "30", "60", "300", "900", "3600",
};

/* The calling thread's slot of m: its own when it is a worker m has a slot for (written
 * with plain stores, it is the only writer), else the last one, shared (atomic adds). */
struct counting {
    struct gh_metrics_slot *s;
    bool own;
};

static struct counting slot_of(struct gh_metrics_listener *m)
{
    unsigned i = (unsigned)gh_metrics_worker; /* -1: not a worker → the shared slot */
    bool own = i < m->nslots - 1;
    return (struct counting){&m->slots[own ? i : m->nslots - 1], own};
}

static void add(struct counting c, uint64_t *counter, uint64_t n)
{
    if (c.own)
        __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
    else
        __atomic_fetch_add(counter, n, __ATOMIC_RELAXED);
}

static void observe(struct counting c, struct gh_hist *h, const uint64_t *bounds, uint64_t us)
{
    unsigned i = 0;
    while (i < GH_HIST_BUCKETS && us > bounds[i])
        i++;
    if (i < GH_HIST_BUCKETS)
        add(c, &h->bucket[i], 1);
    add(c, &h->count, 1);
    add(c, &h->sum_us, us);
}

void gh_metrics_accepted(struct gh_metrics_listener *m)
{
    if (!m)
        return;
    struct counting c = slot_of(m);
    add(c, &c.s->accepted, 1);
}

void gh_metrics_closed(struct gh_metrics_listener *m, uint64_t us)
{
    if (!m)
        return;
    struct counting c = slot_of(m);
    add(c, &c.s->closed, 1);
    observe(c, &c.s->session, session_us, us);
}

void gh_metrics_refused(struct gh_metrics_listener *m, enum gh_refusal reason)
{
    if (!m || reason >= GH_REFUSED_COUNT)
        return;
    struct counting c = slot_of(m);
    add(c, &c.s->refused[reason], 1);
}

void gh_metrics_tls(struct gh_metrics_listener *m, enum gh_tls_result result, uint64_t us)
{
    if (!m || result >= GH_TLS_COUNT)
        return;
    struct counting c = slot_of(m);
    add(c, &c.s->tls[result], 1);
    if (result == GH_TLS_FULL || result == GH_TLS_RESUMED)
        observe(c, &c.s->handshake, handshake_us, us);
}

void gh_metrics_proxy(struct gh_metrics_listener *m, enum gh_proxy_outcome outcome)
{
    if (!m || outcome >= GH_PROXYM_COUNT)
        return;
    struct counting c = slot_of(m);
    add(c, &c.s->proxy[outcome], 1);
}

void gh_metrics_handoff(struct gh_metrics_listener *m, enum gh_handoff_result result)
{
    if (!m || result >= GH_HANDOFF_COUNT)
        return;
    struct counting c = slot_of(m);
    add(c, &c.s->handoffs[result], 1);
}

void gh_metrics_relay_bytes(struct gh_metrics_listener *m, enum gh_direction d, uint64_t n)
{
    if (!m || d >= GH_DIRECTION_COUNT)
        return;
    struct counting c = slot_of(m);
    add(c, &c.s->bytes[d], n);
}

void gh_metrics_login(struct gh_metrics_listener *m, enum gh_login_result result)
{
    if (!m || result >= GH_LOGIN_COUNT)
        return;
    struct counting c = slot_of(m);
    add(c, &c.s->logins[result], 1);
}

/* Bans without a listener are kept in a block of their own that no scrape labels. */
static struct gh_metrics_slot unlabelled_bans;

void gh_metrics_ban(struct gh_metrics_listener *m, enum gh_ban_reason reason)
{
    if (reason >= GH_BAN_COUNT)
        return;
    if (m) {
        struct counting c = slot_of(m);
        add(c, &c.s->bans[reason], 1);
    } else
        __atomic_fetch_add(&unlabelled_bans.bans[reason], 1, __ATOMIC_RELAXED);
}

void gh_metrics_api_request(int status)
{
    if (!reg.api || status < 100 || status >= API_STATUS_MAX)
        return;
    unsigned i = (unsigned)gh_metrics_worker;
    if (i < reg.nworkers)
        __atomic_store_n(&reg.api[i][status], reg.api[i][status] + 1, __ATOMIC_RELAXED);
    else
        __atomic_fetch_add(&reg.api[reg.nworkers][status], 1, __ATOMIC_RELAXED);
}

void gh_metrics_set_gauge(enum gh_gauge g, gh_gauge_fn fn, void *arg)
{
    if (g >= GH_GAUGE_COUNT)
        return;
    pthread_mutex_lock(&reg.mu);
    reg.gauge[g] = fn;
    reg.gauge_arg[g] = arg;
    pthread_mutex_unlock(&reg.mu);
}

/* ---- access ---- */

void gh_metrics_set_access(bool enabled, const char *username, const char *secret)
{
    pthread_mutex_lock(&reg.mu);
    reg.enabled = enabled;
    snprintf(reg.user, sizeof reg.user, "%s", username ? username : "");
    snprintf(reg.secret, sizeof reg.secret, "%s", secret ? secret : "");
    pthread_mutex_unlock(&reg.mu);
}

bool gh_metrics_enabled(void)
{
    pthread_mutex_lock(&reg.mu);
    bool on = reg.enabled;
    pthread_mutex_unlock(&reg.mu);
    return on;
}

/* Compares over the whole of both buffers, so the time taken says nothing of where they
 * differ. */
static bool same_secret(const char *a, const char *b, size_t cap)
{
    unsigned char diff = 0;
    for (size_t i = 0; i < cap; i++) {
        diff |= (unsigned char)(a[i] ^ b[i]);
        if (!a[i] && !b[i])
            break;
    }
    return diff == 0;
}

bool gh_metrics_basic_ok(const char *user, const char *secret)
{
    if (!user || !secret || strlen(user) >= sizeof reg.user || strlen(secret) >= sizeof reg.secret)
        return false;
    char u[sizeof reg.user] = {0}, s[sizeof reg.secret] = {0};
    memcpy(u, user, strlen(user));
    memcpy(s, secret, strlen(secret));
    pthread_mutex_lock(&reg.mu);
    bool set = reg.user[0] && reg.secret[0];
    bool ok = set & same_secret(u, reg.user, sizeof u) & same_secret(s, reg.secret, sizeof s);
    pthread_mutex_unlock(&reg.mu);
    return ok;
}

/* ---- snapshots for the scrape ---- */

static void sum_hist(struct gh_hist *to, const struct gh_hist *from)
{
    for (unsigned b = 0; b < GH_HIST_BUCKETS; b++)
        to->bucket[b] += __atomic_load_n(&from->bucket[b], __ATOMIC_RELAXED);
    to->count += __atomic_load_n(&from->count, __ATOMIC_RELAXED);
    to->sum_us += __atomic_load_n(&from->sum_us, __ATOMIC_RELAXED);
}

#define SUM_ARRAY(field)                                                                           \
    for (unsigned k = 0; k < sizeof to->field / sizeof to->field[0]; k++)                          \
    to->field[k] += __atomic_load_n(&from->field[k], __ATOMIC_RELAXED)

static void sum_slot(struct gh_metrics_slot *to, const struct gh_metrics_slot *from)
{
    to->accepted += __atomic_load_n(&from->accepted, __ATOMIC_RELAXED);
    to->closed += __atomic_load_n(&from->closed, __ATOMIC_RELAXED);
    SUM_ARRAY(refused);
    SUM_ARRAY(tls);
    SUM_ARRAY(proxy);
    SUM_ARRAY(handoffs);
    SUM_ARRAY(bytes);
    SUM_ARRAY(logins);
    SUM_ARRAY(bans);
    sum_hist(&to->handshake, &from->handshake);
    sum_hist(&to->session, &from->session);
}

bool gh_metrics_snapshot(struct gh_metrics_snapshot *snap)
{
    memset(snap, 0, sizeof *snap);
    pthread_mutex_lock(&reg.mu);
    snap->listeners = calloc(reg.count ? reg.count : 1, sizeof *snap->listeners);
    if (!snap->listeners) {
        pthread_mutex_unlock(&reg.mu);
        return false;
    }
    for (struct gh_metrics_listener *m = reg.head; m; m = m->next) {
        struct gh_metrics_lsnap *l = &snap->listeners[snap->n++];
        memcpy(l->id, m->id, sizeof l->id);
        memcpy(l->name, m->name, sizeof l->name);
        memcpy(l->protocol, m->protocol, sizeof l->protocol);
        for (unsigned w = 0; w < m->nslots; w++)
            sum_slot(&l->sum, &m->slots[w]);
        /* closes are read after opens, so a racing session never makes this negative */
        l->active = l->sum.accepted > l->sum.closed ? l->sum.accepted - l->sum.closed : 0;
    }
    for (unsigned w = 0; reg.api && w <= reg.nworkers; w++)
        for (unsigned st = 0; st < API_STATUS_MAX; st++)
            snap->api[st] += __atomic_load_n(&reg.api[w][st], __ATOMIC_RELAXED);
    for (unsigned r = 0; r < GH_BAN_COUNT; r++)
        snap->unlabelled_bans[r] = __atomic_load_n(&unlabelled_bans.bans[r], __ATOMIC_RELAXED);
    memcpy(snap->gauge, reg.gauge, sizeof snap->gauge);
    memcpy(snap->gauge_arg, reg.gauge_arg, sizeof snap->gauge_arg);
    snap->start_time = reg.start_time;
    pthread_mutex_unlock(&reg.mu);
    return true;
}

void gh_metrics_snapshot_free(struct gh_metrics_snapshot *snap)
{
    free(snap->listeners);
    snap->listeners = NULL;
}

const uint64_t *gh_metrics_bounds(bool handshake, const char *const **le)
{
    *le = handshake ? handshake_le : session_le;
    return handshake ? handshake_us : session_us;
}

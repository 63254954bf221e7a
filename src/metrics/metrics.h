/*
 * metrics: the counters behind GET /metrics/prometheus and GET /api/stats. Each listener
 * has one block of counters per worker, written only by that worker; a scrape sums them.
 */
#ifndef GH_METRICS_H
#define GH_METRICS_H
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifndef GH_VERSION /* from debian/changelog, through the Makefile */
#define GH_VERSION "unknown"
#endif

enum gh_refusal {
    GH_REFUSED_MAX_CONNECTIONS,
    GH_REFUSED_PER_IP_LIMIT,
    GH_REFUSED_RATE,
    GH_REFUSED_BLOCKED,
    GH_REFUSED_DESCRIPTORS,
    GH_REFUSED_COUNT
};

enum gh_tls_result { GH_TLS_FULL, GH_TLS_RESUMED, GH_TLS_FAILED, GH_TLS_TIMEOUT, GH_TLS_COUNT };

/* A PROXY header from a trusted peer: read (a client address), LOCAL (a health check),
 * malformed, missing within its deadline; or sent by an untrusted peer and refused. */
enum gh_proxy_outcome {
    GH_PROXYM_OK,
    GH_PROXYM_LOCAL,
    GH_PROXYM_INVALID,
    GH_PROXYM_TIMEOUT,
    GH_PROXYM_UNTRUSTED,
    GH_PROXYM_COUNT
};

/* A hand-off reached a destination, tried the next one, or found none. */
enum gh_handoff_result { GH_HANDOFF_OK, GH_HANDOFF_RETRIED, GH_HANDOFF_FAILED, GH_HANDOFF_COUNT };

enum gh_direction { GH_TO_DESTINATION, GH_TO_CLIENT, GH_DIRECTION_COUNT };

enum gh_login_result { GH_LOGIN_SUCCESS, GH_LOGIN_FAILURE, GH_LOGIN_COUNT };

/* The reasons of x:BlockedIp that a ban gives (manual entries are not bans). */
enum gh_ban_reason { GH_BAN_AUTH_FAILURE, GH_BAN_LOITER, GH_BAN_SCAN, GH_BAN_RATE, GH_BAN_COUNT };

#define GH_HIST_BUCKETS 11 /* finite upper bounds; +Inf is the count */

struct gh_hist {
    uint64_t bucket[GH_HIST_BUCKETS]; /* per bucket, not cumulative; summed at scrape */
    uint64_t count;
    uint64_t sum_us;
};

/* One worker's counters of one listener: a cache line of its own (or several), written
 * only by that worker, read by scrapes with relaxed loads. */
struct gh_metrics_slot {
    uint64_t accepted, closed;
    uint64_t refused[GH_REFUSED_COUNT];
    uint64_t tls[GH_TLS_COUNT];
    uint64_t proxy[GH_PROXYM_COUNT];
    uint64_t handoffs[GH_HANDOFF_COUNT];
    uint64_t bytes[GH_DIRECTION_COUNT];
    uint64_t logins[GH_LOGIN_COUNT];
    uint64_t bans[GH_BAN_COUNT];
    struct gh_hist handshake, session;
} __attribute__((aligned(64)));

/*
 * The counters of one listener, from its creation to its removal. Owner: reference-counted
 * (the registry while the listener exists, the engine's listener runtime). A removed
 * listener leaves the registry at once, so its series disappear from the next scrape.
 */
struct gh_metrics_listener {
    atomic_uint refs;
    bool registered;
    struct gh_metrics_listener *prev, *next; /* the registry, under its mutex */
    char id[64];
    char name[72];     /* label value, escaped; under the registry mutex */
    char protocol[16]; /* label value; under the registry mutex */
    unsigned nslots;   /* workers + 1: the last one is shared by other threads */
    struct gh_metrics_slot slots[];
};

/* Number of workers; the engine calls it before the first listener is created. The first
 * call decides: a later engine's extra workers count into the shared slot. */
void gh_metrics_init(unsigned nworkers);
/* The calling thread is worker `index` (its own slots); -1 for any other thread. */
void gh_metrics_thread_worker(int index);

/* A new listener block, registered; the caller holds one reference. NULL when out of
 * memory (every counting function accepts NULL). */
struct gh_metrics_listener *gh_metrics_listener_new(const char *id);
/* Sets the label values (after a create or an update that renamed it). */
void gh_metrics_listener_describe(struct gh_metrics_listener *m, const char *name,
                                  const char *protocol);
/* Takes the block out of the registry (the listener was removed). */
void gh_metrics_listener_retire(struct gh_metrics_listener *m);
void gh_metrics_listener_unref(struct gh_metrics_listener *m);

/* ---- counting, on the session path: no lock, no shared cache line ---- */

extern _Thread_local int gh_metrics_worker;

void gh_metrics_accepted(struct gh_metrics_listener *m);
/* A session ended after us microseconds. */
void gh_metrics_closed(struct gh_metrics_listener *m, uint64_t us);
/* Called once per refused connection, from the one place that refuses. */
void gh_metrics_refused(struct gh_metrics_listener *m, enum gh_refusal reason);
/* us: the handshake's duration (counted in the histogram for full and resumed only). */
void gh_metrics_tls(struct gh_metrics_listener *m, enum gh_tls_result result, uint64_t us);
void gh_metrics_proxy(struct gh_metrics_listener *m, enum gh_proxy_outcome outcome);
void gh_metrics_handoff(struct gh_metrics_listener *m, enum gh_handoff_result result);
void gh_metrics_relay_bytes(struct gh_metrics_listener *m, enum gh_direction d, uint64_t n);
void gh_metrics_login(struct gh_metrics_listener *m, enum gh_login_result result);
/* m may be NULL for a ban that no listener saw (the management API's own sign-in). */
void gh_metrics_ban(struct gh_metrics_listener *m, enum gh_ban_reason reason);
/* An answer of the management API (any HTTP listener), by status code. */
void gh_metrics_api_request(int status);

/* ---- gauges that belong to higher layers, registered by them ---- */

enum gh_gauge { GH_GAUGE_DESTINATION_UP, GH_GAUGE_BLOCKED_ADDRESSES, GH_GAUGE_COUNT };

struct gh_metrics_out;
/* Writes the samples of one gauge with gh_metrics_sample; runs on the scraping thread. */
typedef void (*gh_gauge_fn)(struct gh_metrics_out *out, void *arg);
/* Installs (or with NULL removes) the provider of a gauge. */
void gh_metrics_set_gauge(enum gh_gauge g, gh_gauge_fn fn, void *arg);
/* One sample. labels: `name="value",...` already escaped (gh_metrics_escape), or "". */
void gh_metrics_sample(struct gh_metrics_out *out, const char *labels, double value);
/* Escapes a label value (backslash, quote, newline) into out; truncates to cap. */
void gh_metrics_escape(const char *in, char *out, size_t cap);

/* ---- reading ---- */

/* The Prometheus text (format 0.0.4) of every metric, NUL-terminated; the caller frees
 * *text. */
bool gh_metrics_render(char **text, size_t *len);
/* {"time": ms, "listeners": {"<id>": {"name", "protocol", "active", "accepted",
 * "handshakes", "handoffs", "refused", "bans"}}}; the caller frees it. */
char *gh_metrics_stats_json(void);

/* ---- access to the scrape (the x:Metrics singleton) ---- */

/* Replaces the settings; username/secret NULL or "" when no Basic pair is set. */
void gh_metrics_set_access(bool enabled, const char *username, const char *secret);
bool gh_metrics_enabled(void);
/* Whether user:secret is the configured Basic pair (compared in constant time). */
bool gh_metrics_basic_ok(const char *user, const char *secret);

#endif

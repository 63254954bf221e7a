/*
 * snapshot: the summed counters a scrape formats, taken in one pass under the registry's
 * mutex. Internal to src/metrics (metrics.c takes it, scrape.c formats it).
 */
#ifndef GH_METRICS_SNAPSHOT_H
#define GH_METRICS_SNAPSHOT_H
#include "metrics/metrics.h"

struct gh_metrics_lsnap {
    char id[64], name[72], protocol[16];
    uint64_t active;
    struct gh_metrics_slot sum;
};

/* Owner: the caller (gh_metrics_snapshot_free). */
struct gh_metrics_snapshot {
    unsigned n;
    struct gh_metrics_lsnap *listeners;
    uint64_t api[600];
    uint64_t unlabelled_bans[GH_BAN_COUNT];
    gh_gauge_fn gauge[GH_GAUGE_COUNT];
    void *gauge_arg[GH_GAUGE_COUNT];
    double start_time;
};

bool gh_metrics_snapshot(struct gh_metrics_snapshot *snap);
void gh_metrics_snapshot_free(struct gh_metrics_snapshot *snap);
/* The histogram bounds in microseconds, and as le label text. */
const uint64_t *gh_metrics_bounds(bool handshake, const char *const **le);

#endif

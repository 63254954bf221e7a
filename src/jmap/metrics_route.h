/*
 * metrics_route: the management application's GET /metrics/prometheus (for Prometheus)
 * and GET /api/stats (for the web page's live charts). Formatting is src/metrics'.
 */
#ifndef GH_METRICS_ROUTE_H
#define GH_METRICS_ROUTE_H
#include <stdbool.h>

#include "proto/http.h"

/* false (and a 404 answered) when x:Metrics.prometheusEnabled is false. */
bool gh_metrics_route_open(struct gh_http_req *r);
/* Whether the request carries the x:Metrics Basic pair. */
bool gh_metrics_route_basic(struct gh_http_req *r);
/* Answers with the scrape / the stats, once access was checked. */
enum gh_http_next gh_metrics_route_scrape(struct gh_http_req *r);
enum gh_http_next gh_metrics_route_stats(struct gh_http_req *r);

#endif

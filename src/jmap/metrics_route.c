/*
 * metrics_route: answers the scrape and the stats. Access is decided by the caller
 * (http_api.c) except for the scrape's own Basic pair, checked here against x:Metrics.
 */
#include "jmap/metrics_route.h"

#include <stdlib.h>
#include <string.h>

#include "jmap/auth.h"
#include "jmap/jmap.h"
#include "metrics/metrics.h"

bool gh_metrics_route_open(struct gh_http_req *r)
{
    if (gh_metrics_enabled())
        return true;
    char *body = gh_jmap_problem(404, "about:blank", NULL,
                                 "the Prometheus endpoint is turned off (x:Metrics "
                                 "prometheusEnabled)");
    gh_http_respond(r, 404, "application/problem+json", "", body ? body : "",
                    body ? strlen(body) : 0);
    free(body);
    return false;
}

bool gh_metrics_route_basic(struct gh_http_req *r)
{
    const char *authz = gh_http_header(r, "authorization");
    return authz && gh_auth_basic(authz, gh_metrics_basic_ok);
}

enum gh_http_next gh_metrics_route_scrape(struct gh_http_req *r)
{
    char *text = NULL;
    size_t len = 0;
    if (!gh_metrics_render(&text, &len)) {
        gh_http_respond(r, 503, "text/plain", "Retry-After: 5\r\n", "out of memory\n", 14);
        return GH_HTTP_ANSWERED;
    }
    gh_http_respond(r, 200, "text/plain; version=0.0.4; charset=utf-8",
                    "Cache-Control: no-store\r\n", text, len);
    free(text);
    return GH_HTTP_ANSWERED;
}

enum gh_http_next gh_metrics_route_stats(struct gh_http_req *r)
{
    char *json = gh_metrics_stats_json();
    if (!json) {
        gh_http_respond(r, 503, "text/plain", "Retry-After: 5\r\n", "out of memory\n", 14);
        return GH_HTTP_ANSWERED;
    }
    gh_http_respond(r, 200, "application/json", "Cache-Control: no-store\r\n", json, strlen(json));
    free(json);
    return GH_HTTP_ANSWERED;
}

/*
 * Unit tests for metrics: counters written in each worker's slot are summed by the scrape,
 * histograms come out cumulative with +Inf equal to the count, label values are escaped,
 * a retired listener leaves the output, gauges come from their providers, the Basic pair
 * is checked exactly, and a scrape of 1,000 listeners takes under 50 ms.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics/metrics.h"

#define NWORKERS 4

#ifdef __SANITIZE_ADDRESS__
#define SCRAPE_BUDGET_MS 1000 /* instrumented code: only a gross regression fails */
#else
#define SCRAPE_BUDGET_MS 50
#endif

static char *render(void)
{
    char *text = NULL;
    size_t len = 0;
    assert_true(gh_metrics_render(&text, &len));
    assert_int_equal(strlen(text), len);
    return text;
}

/* The value of the first line that starts with prefix; -1 when there is none. */
static double sample(const char *text, const char *prefix)
{
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (!strncmp(p, prefix, strlen(prefix)) && p[strlen(prefix)] == ' ')
            return strtod(p + strlen(prefix) + 1, NULL);
    }
    return -1;
}

static int setup(void **state)
{
    gh_metrics_init(NWORKERS);
    return 0;
}

static void counters_are_summed_over_workers(void **state)
{
    struct gh_metrics_listener *m = gh_metrics_listener_new("L1");
    gh_metrics_listener_describe(m, "mx", "smtp");
    for (int w = -1; w < NWORKERS; w++) { /* every worker, and a thread that is none */
        gh_metrics_thread_worker(w);
        gh_metrics_accepted(m);
        gh_metrics_accepted(m);
        gh_metrics_closed(m, 2000);            /* 2 ms */
        gh_metrics_tls(m, GH_TLS_FULL, 30000); /* 30 ms */
        gh_metrics_refused(m, GH_REFUSED_MAX_CONNECTIONS);
        gh_metrics_relay_bytes(m, GH_TO_CLIENT, 100);
    }
    gh_metrics_thread_worker(-1);
    char *t = render();
    const char *l = "{listener=\"mx\",protocol=\"smtp\"";
    char key[256];
    snprintf(key, sizeof key, "gatehouse_connections_accepted_total%s}", l);
    assert_true(sample(t, key) == 10);
    snprintf(key, sizeof key, "gatehouse_connections_active%s}", l);
    assert_true(sample(t, key) == 5);
    snprintf(key, sizeof key, "gatehouse_connections_refused_total%s,reason=\"maxConnections\"}",
             l);
    assert_true(sample(t, key) == 5);
    snprintf(key, sizeof key, "gatehouse_connections_refused_total%s,reason=\"descriptors\"}", l);
    assert_true(sample(t, key) == -1); /* never counted: left out */
    snprintf(key, sizeof key, "gatehouse_relay_bytes_total%s,direction=\"toClient\"}", l);
    assert_true(sample(t, key) == 500);
    snprintf(key, sizeof key, "gatehouse_handoffs_total%s,result=\"ok\"}", l);
    assert_true(sample(t, key) == -1);
    snprintf(key, sizeof key, "gatehouse_tls_handshake_seconds_bucket%s,le=\"0.025\"}", l);
    assert_true(sample(t, key) == 0);
    snprintf(key, sizeof key, "gatehouse_tls_handshake_seconds_bucket%s,le=\"0.05\"}", l);
    assert_true(sample(t, key) == 5);
    snprintf(key, sizeof key, "gatehouse_tls_handshake_seconds_bucket%s,le=\"+Inf\"}", l);
    assert_true(sample(t, key) == 5);
    snprintf(key, sizeof key, "gatehouse_tls_handshake_seconds_sum%s}", l);
    assert_true(sample(t, key) > 0.149 && sample(t, key) < 0.151);
    snprintf(key, sizeof key, "gatehouse_session_seconds_bucket%s,le=\"0.01\"}", l);
    assert_true(sample(t, key) == 5);
    assert_non_null(strstr(t, "# TYPE gatehouse_session_seconds histogram\n"));
    assert_true(sample(t, "gatehouse_build_info{version=\"" GH_VERSION "\"}") == 1);
    free(t);

    gh_metrics_listener_retire(m);
    t = render();
    assert_null(strstr(t, "listener=\"mx\""));
    free(t);
    gh_metrics_accepted(m); /* a session still open after removal counts harmlessly */
    gh_metrics_listener_unref(m);
}

static void labels_are_escaped(void **state)
{
    struct gh_metrics_listener *m = gh_metrics_listener_new("L2");
    gh_metrics_listener_describe(m, "a\"b\\c\nd", "imap");
    char *t = render();
    assert_non_null(strstr(t, "listener=\"a\\\"b\\\\c\\nd\""));
    free(t);
    gh_metrics_listener_retire(m);
    gh_metrics_listener_unref(m);
}

static void destinations(struct gh_metrics_out *out, void *arg)
{
    gh_metrics_sample(out, "destination=\"store1\"", 1);
    gh_metrics_sample(out, "destination=\"store2\"", 0);
}

static void gauges_come_from_providers(void **state)
{
    char *t = render();
    assert_non_null(strstr(t, "# TYPE gatehouse_destination_up gauge\n"));
    assert_null(strstr(t, "gatehouse_destination_up{"));
    free(t);
    gh_metrics_set_gauge(GH_GAUGE_DESTINATION_UP, destinations, NULL);
    t = render();
    assert_true(sample(t, "gatehouse_destination_up{destination=\"store1\"}") == 1);
    assert_true(sample(t, "gatehouse_destination_up{destination=\"store2\"}") == 0);
    free(t);
    gh_metrics_set_gauge(GH_GAUGE_DESTINATION_UP, NULL, NULL);
}

static void api_requests_by_status(void **state)
{
    gh_metrics_api_request(200);
    gh_metrics_api_request(200);
    gh_metrics_api_request(401);
    gh_metrics_api_request(99); /* ignored */
    char *t = render();
    assert_true(sample(t, "gatehouse_api_requests_total{status=\"200\"}") >= 2);
    assert_true(sample(t, "gatehouse_api_requests_total{status=\"401\"}") >= 1);
    free(t);
}

static void basic_pair(void **state)
{
    assert_false(gh_metrics_basic_ok("prom", "s3cret")); /* none set */
    gh_metrics_set_access(true, "prom", "s3cret");
    assert_true(gh_metrics_basic_ok("prom", "s3cret"));
    assert_false(gh_metrics_basic_ok("prom", "s3cre"));
    assert_false(gh_metrics_basic_ok("prom", "s3crett"));
    assert_false(gh_metrics_basic_ok("pro", "s3cret"));
    assert_false(gh_metrics_basic_ok("prom", ""));
    gh_metrics_set_access(true, "prom", NULL); /* a user without a secret opens nothing */
    assert_false(gh_metrics_basic_ok("prom", ""));
    assert_true(gh_metrics_enabled());
    gh_metrics_set_access(false, NULL, NULL);
    assert_false(gh_metrics_enabled());
    gh_metrics_set_access(true, NULL, NULL);
}

static void stats_json(void **state)
{
    struct gh_metrics_listener *m = gh_metrics_listener_new("L3");
    gh_metrics_listener_describe(m, "web", "http");
    gh_metrics_accepted(m);
    gh_metrics_tls(m, GH_TLS_RESUMED, 1000);
    gh_metrics_ban(m, GH_BAN_SCAN);
    gh_metrics_refused(m, GH_REFUSED_RATE);
    char *j = gh_metrics_stats_json();
    assert_non_null(strstr(j, "\"L3\":{\"name\":\"web\",\"protocol\":\"http\",\"active\":1,"
                              "\"accepted\":1,\"handshakes\":1,\"handoffs\":0,\"refused\":1,"
                              "\"bans\":1}"));
    free(j);
    gh_metrics_listener_retire(m);
    gh_metrics_listener_unref(m);
}

static double ms_since(const struct timespec *a)
{
    struct timespec b;
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (double)(b.tv_sec - a->tv_sec) * 1e3 + (double)(b.tv_nsec - a->tv_nsec) / 1e6;
}

static void a_thousand_listeners_scrape_in_under_50ms(void **state)
{
    static struct gh_metrics_listener *m[1000];
    char id[32], name[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof id, "id%d", i);
        snprintf(name, sizeof name, "listener-%d", i);
        m[i] = gh_metrics_listener_new(id);
        gh_metrics_listener_describe(m[i], name, "smtp");
        gh_metrics_accepted(m[i]); /* every series counted: the largest scrape */
        gh_metrics_closed(m[i], (uint64_t)i * 1000);
        for (int k = 0; k < GH_REFUSED_COUNT; k++)
            gh_metrics_refused(m[i], (enum gh_refusal)k);
        for (int k = 0; k < GH_TLS_COUNT; k++)
            gh_metrics_tls(m[i], (enum gh_tls_result)k, 1000);
        for (int k = 0; k < GH_PROXYM_COUNT; k++)
            gh_metrics_proxy(m[i], (enum gh_proxy_outcome)k);
        for (int k = 0; k < GH_HANDOFF_COUNT; k++)
            gh_metrics_handoff(m[i], (enum gh_handoff_result)k);
        for (int k = 0; k < GH_DIRECTION_COUNT; k++)
            gh_metrics_relay_bytes(m[i], (enum gh_direction)k, 1);
        for (int k = 0; k < GH_LOGIN_COUNT; k++)
            gh_metrics_login(m[i], (enum gh_login_result)k);
        for (int k = 0; k < GH_BAN_COUNT; k++)
            gh_metrics_ban(m[i], (enum gh_ban_reason)k);
    }
    double best = 1e9;
    size_t len = 0;
    for (int run = 0; run < 5; run++) { /* the best of five: the machine may be busy */
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        char *text = NULL;
        assert_true(gh_metrics_render(&text, &len));
        double ms = ms_since(&t0);
        best = ms < best ? ms : best;
        free(text);
    }
    print_message("scrape of 1,000 listeners: %.1f ms, %zu bytes\n", best, len);
    assert_true(best < SCRAPE_BUDGET_MS);
    for (int i = 0; i < 1000; i++) {
        gh_metrics_listener_retire(m[i]);
        gh_metrics_listener_unref(m[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(counters_are_summed_over_workers),
        cmocka_unit_test(labels_are_escaped),
        cmocka_unit_test(gauges_come_from_providers),
        cmocka_unit_test(api_requests_by_status),
        cmocka_unit_test(basic_pair),
        cmocka_unit_test(stats_json),
        cmocka_unit_test(a_thousand_listeners_scrape_in_under_50ms),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}

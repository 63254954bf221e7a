/*
 * test_security: the address table (most specific match, IPv4 and IPv6, expiry, look-up
 * depth independent of size), the Rate and UTCDate parsers, scanBanPaths globs, and the
 * shared counters (rates, per-address limit, bans queued once, IPv6 by /64, first offences
 * met by two threads at once).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "objects/model.h"
#include "objects/schema.h"
#include "security/security.h"

static struct gh_ipmask mask(const char *text)
{
    struct gh_ipmask m;
    gh_err err;
    if (!gh_ipmask_parse(text, &m, &err))
        fail_msg("\"%s\": %s", text, err.msg);
    return m;
}

static struct gh_sockaddr ip(const char *text)
{
    struct gh_sockaddr a = {0};
    if (inet_pton(AF_INET, text, &a.u.v4.sin_addr) == 1)
        a.u.sa.sa_family = AF_INET;
    else if (inet_pton(AF_INET6, text, &a.u.v6.sin6_addr) == 1)
        a.u.sa.sa_family = AF_INET6;
    else
        fail_msg("bad address %s", text);
    return a;
}

static enum gh_sec_verdict look(const struct gh_sec_table *t, const char *addr, int64_t now)
{
    struct gh_sockaddr a = ip(addr);
    return gh_sec_table_lookup(t, &a.u.sa, now);
}

static void add(struct gh_sec_table *t, const char *m, bool allowed, int64_t expires)
{
    struct gh_ipmask k = mask(m);
    assert_true(gh_sec_table_add(t, &k, allowed, expires));
}

static void most_specific_wins(void **state)
{
    struct gh_sec_table *t = gh_sec_table_new();
    assert_int_equal(look(t, "10.0.0.1", 0), GH_SEC_UNLISTED);
    add(t, "10.0.0.0/8", false, 0);
    add(t, "10.1.0.0/16", true, 0);
    add(t, "10.1.2.0/24", false, 0);
    add(t, "10.1.2.3", true, 0);
    add(t, "0.0.0.0/0", true, 0);
    assert_int_equal(look(t, "10.9.9.9", 0), GH_SEC_BLOCKED);
    assert_int_equal(look(t, "10.1.9.9", 0), GH_SEC_ALLOWED);
    assert_int_equal(look(t, "10.1.2.4", 0), GH_SEC_BLOCKED);
    assert_int_equal(look(t, "10.1.2.3", 0), GH_SEC_ALLOWED);
    assert_int_equal(look(t, "11.0.0.1", 0), GH_SEC_ALLOWED);
    assert_int_equal(look(t, "::ffff:10.9.9.9", 0), GH_SEC_BLOCKED); /* v4-mapped */
    assert_int_equal(gh_sec_table_size(t), 5);
    gh_sec_table_free(t);
}

static void ipv6_and_ties(void **state)
{
    struct gh_sec_table *t = gh_sec_table_new();
    add(t, "2001:db8::/32", false, 0);
    add(t, "2001:db8:1::/48", true, 0);
    add(t, "::1", false, 0);
    add(t, "::1", true, 0); /* the same range both ways: allowed wins */
    add(t, "192.0.2.1", true, 0);
    add(t, "192.0.2.1", false, 0);
    assert_int_equal(look(t, "2001:db8:2::1", 0), GH_SEC_BLOCKED);
    assert_int_equal(look(t, "2001:db8:1:ffff::1", 0), GH_SEC_ALLOWED);
    assert_int_equal(look(t, "2001:db9::1", 0), GH_SEC_UNLISTED);
    assert_int_equal(look(t, "::1", 0), GH_SEC_ALLOWED);
    assert_int_equal(look(t, "192.0.2.1", 0), GH_SEC_ALLOWED);
    assert_int_equal(look(t, "192.0.2.0", 0), GH_SEC_UNLISTED); /* v4 and v6 roots apart */
    gh_sec_table_free(t);
}

static void expired_entries_fall_back(void **state)
{
    struct gh_sec_table *t = gh_sec_table_new();
    add(t, "10.0.0.0/8", true, 0);
    add(t, "10.1.0.0/16", false, 5000);
    assert_int_equal(look(t, "10.1.0.1", 4999), GH_SEC_BLOCKED);
    assert_int_equal(look(t, "10.1.0.1", 5000), GH_SEC_ALLOWED);
    add(t, "10.1.0.0/16", false, 9000); /* listed again: the longer one holds */
    assert_int_equal(look(t, "10.1.0.1", 8000), GH_SEC_BLOCKED);
    gh_sec_table_free(t);
}

static void large_table(void **state)
{
    struct gh_sec_table *t = gh_sec_table_new();
    char text[32];
    for (unsigned i = 0; i < 100000; i++) {
        snprintf(text, sizeof text, "10.%u.%u.0/24", i >> 8 & 255, i & 255);
        if (i >= 65536)
            snprintf(text, sizeof text, "11.%u.%u.0/24", i >> 8 & 255, i & 255);
        add(t, text, false, 0);
    }
    assert_int_equal(gh_sec_table_size(t), 100000);
    assert_int_equal(look(t, "10.200.7.9", 0), GH_SEC_BLOCKED);
    assert_int_equal(look(t, "11.1.2.3", 0), GH_SEC_BLOCKED);
    assert_int_equal(look(t, "12.0.0.1", 0), GH_SEC_UNLISTED);
    gh_sec_table_free(t);
}

static bool rate(const char *json, uint32_t *count, uint64_t *ms, gh_err *err)
{
    json_t *v = json_loads(json, JSON_DECODE_ANY, NULL);
    bool ok = gh_rate_parse(v, count, ms, err);
    json_decref(v);
    return ok;
}

static void rates(void **state)
{
    uint32_t c;
    uint64_t ms;
    gh_err err = {0};
    assert_true(rate("{\"count\":100,\"period\":\"1d\"}", &c, &ms, &err));
    assert_int_equal(c, 100);
    assert_int_equal(ms, 86400000);
    assert_true(rate("{\"count\":3,\"period\":1500}", &c, &ms, &err));
    assert_int_equal(ms, 1500);
    assert_false(rate("{\"count\":0,\"period\":\"1d\"}", &c, &ms, &err));
    assert_non_null(strstr(err.msg, "count"));
    assert_false(rate("{\"count\":3,\"period\":\"1w\"}", &c, &ms, &err));
    assert_non_null(strstr(err.msg, "period"));
    assert_false(rate("{\"count\":3}", &c, &ms, &err));
    assert_false(rate("{\"count\":3,\"period\":\"0s\"}", &c, &ms, &err));
    assert_false(rate("{\"count\":-1,\"period\":\"1d\"}", &c, &ms, &err));
    assert_false(rate("{\"count\":3,\"period\":\"1d\",\"x\":1}", &c, &ms, &err));
    assert_false(rate("\"3/1d\"", &c, &ms, &err));
}

static void utcdates(void **state)
{
    int64_t ms;
    char out[32];
    assert_true(gh_utcdate_parse("2030-01-02T03:04:05Z", &ms));
    gh_utcdate_format(ms, out);
    assert_string_equal(out, "2030-01-02T03:04:05Z");
    assert_true(gh_utcdate_parse("1970-01-01T00:00:01.5Z", &ms));
    assert_int_equal(ms, 1500);
    assert_false(gh_utcdate_parse("2030-02-31T00:00:00Z", &ms));
    assert_false(gh_utcdate_parse("2030-01-02T03:04:05+01:00", &ms));
    assert_false(gh_utcdate_parse("2030-01-02 03:04:05Z", &ms));
    assert_false(gh_utcdate_parse("tomorrow", &ms));
}

static void globs(void **state)
{
    assert_true(gh_glob_match("*.php*", "/index.php?x=1"));
    assert_true(gh_glob_match("*/wp-*", "/blog/wp-login"));
    assert_true(gh_glob_match("*../*", "/a/../etc/passwd"));
    assert_true(gh_glob_match("/a?c", "/abc"));
    assert_true(gh_glob_match("*", ""));
    assert_false(gh_glob_match("*.php*", "/index.html"));
    assert_false(gh_glob_match("*/cgi-bin*", "/cgi"));
    assert_false(gh_glob_match("/a?c", "/ac"));
    assert_false(gh_glob_match("*drupal*", "/DRUPAL")); /* case-sensitive, as paths are */
    assert_true(gh_glob_match("*a*b*c*", "xxaxxbxxcxx"));
}

/* Publishes a table with these settings and no entries. */
static void publish(const struct gh_sec_settings *s, const char *const *paths, unsigned n)
{
    struct gh_sec_table *t = gh_sec_table_new();
    assert_true(gh_sec_table_set_settings(t, s, paths, n));
    gh_security_publish(t);
}

static unsigned bans_for(const char *addr, enum gh_sec_event reason)
{
    unsigned n = 0;
    struct gh_sec_ban *b = gh_security_take_bans();
    while (b) {
        char text[GH_ADDR_TEXT];
        gh_ipmask_format(&b->mask, text);
        if (!strcmp(text, addr) && b->reason == reason)
            n++;
        struct gh_sec_ban *next = b->next;
        free(b);
        b = next;
    }
    return n;
}

static void events_queue_one_ban_at_the_rate(void **state)
{
    struct gh_sec_settings s = {0};
    s.ban_rate[GH_SEC_SCAN] = (struct gh_sec_rate){3, 60000};
    s.ban_period_ms[GH_SEC_SCAN] = 1000;
    publish(&s, NULL, 0);
    struct gh_sockaddr a = ip("192.0.2.7");
    gh_security_event(&a.u.sa, GH_SEC_SCAN);
    gh_security_event(&a.u.sa, GH_SEC_SCAN);
    assert_int_equal(bans_for("192.0.2.7", GH_SEC_SCAN), 0);
    gh_security_event(&a.u.sa, GH_SEC_SCAN);
    gh_security_event(&a.u.sa, GH_SEC_SCAN);
    assert_int_equal(bans_for("192.0.2.7", GH_SEC_SCAN), 1);
    /* IPv6 counts by /64: three addresses of one /64 are one client */
    struct gh_sockaddr b1 = ip("2001:db8:0:1::1"), b2 = ip("2001:db8:0:1::2"),
                       b3 = ip("2001:db8:0:1:ffff::3");
    gh_security_event(&b1.u.sa, GH_SEC_SCAN);
    gh_security_event(&b2.u.sa, GH_SEC_SCAN);
    gh_security_event(&b3.u.sa, GH_SEC_SCAN);
    assert_int_equal(bans_for("2001:db8:0:1::/64", GH_SEC_SCAN), 1);
    /* a rate that is off bans nobody; the loiter rate is zero here */
    for (int i = 0; i < 10; i++)
        gh_security_event(&a.u.sa, GH_SEC_LOITER);
    assert_int_equal(bans_for("192.0.2.7", GH_SEC_LOITER), 0);
}

static void logins_over_the_rate_ban_each_address(void **state)
{
    struct gh_sec_settings s = {0};
    s.ban_rate[GH_SEC_AUTH] = (struct gh_sec_rate){2, 60000};
    publish(&s, NULL, 0);
    gh_security_auth_failure("198.51.100.1", "bob");
    assert_int_equal(bans_for("198.51.100.1", GH_SEC_AUTH), 0);
    gh_security_auth_failure("198.51.100.2", "bob");
    assert_int_equal(bans_for("198.51.100.2", GH_SEC_AUTH), 1);
    gh_security_auth_failure("198.51.100.3", "bob");
    assert_int_equal(bans_for("198.51.100.3", GH_SEC_AUTH), 1);
    gh_security_auth_failure("198.51.100.4", "alice");
    assert_int_equal(bans_for("198.51.100.4", GH_SEC_AUTH), 0);
}

static void scan_paths_ban_at_once(void **state)
{
    struct gh_sec_settings s = {0};
    s.ban_rate[GH_SEC_SCAN] = (struct gh_sec_rate){30, 60000};
    const char *const paths[] = {"*.php*", "*/wp-*"};
    publish(&s, paths, 2);
    struct gh_sockaddr a = ip("203.0.113.5");
    assert_false(gh_security_scan_path(&a.u.sa, "/index.html"));
    assert_true(gh_security_scan_path(&a.u.sa, "/wp-admin/"));
    assert_int_equal(bans_for("203.0.113.5", GH_SEC_SCAN), 1);
}

static void per_address_limit_and_rate(void **state)
{
    struct gh_sec_settings s = {.max_per_ip = 2, .conn_rate = {5, 60000}};
    publish(&s, NULL, 0);
    struct gh_sockaddr a = ip("192.0.2.50"), b = ip("192.0.2.51");
    struct gh_sec_ticket t1, t2, t3, t4;
    assert_int_equal(gh_security_admit(&a.u.sa, &t1), GH_SEC_ADMIT);
    assert_int_equal(gh_security_admit(&a.u.sa, &t2), GH_SEC_ADMIT);
    assert_int_equal(gh_security_admit(&a.u.sa, &t3), GH_SEC_REFUSE_PER_IP);
    assert_int_equal(gh_security_admit(&b.u.sa, &t4), GH_SEC_ADMIT);
    gh_security_release(&t1);
    assert_int_equal(gh_security_admit(&a.u.sa, &t1), GH_SEC_ADMIT); /* 4th of the rate */
    gh_security_release(&t1);
    assert_int_equal(gh_security_admit(&a.u.sa, &t1), GH_SEC_ADMIT); /* 5th */
    gh_security_release(&t1);
    assert_int_equal(gh_security_admit(&a.u.sa, &t1), GH_SEC_REFUSE_RATE);
    gh_security_release(&t2);
    gh_security_release(&t4);
}

static void counters_stay_bounded(void **state)
{
    /* far more addresses than slots: the oldest are evicted, counting goes on */
    struct gh_sec_settings s = {0};
    s.ban_rate[GH_SEC_LOITER] = (struct gh_sec_rate){2, 60000};
    publish(&s, NULL, 0);
    struct gh_sockaddr first = ip("100.64.0.1");
    gh_security_event(&first.u.sa, GH_SEC_LOITER);
    for (uint32_t i = 0; i < 8 * GH_SEC_COUNTER_SLOTS; i++) {
        struct gh_sockaddr a = {0};
        a.u.v4.sin_family = AF_INET;
        a.u.v4.sin_addr.s_addr = htonl(0x0a000000u + i);
        gh_security_event(&a.u.sa, GH_SEC_LOITER);
    }
    gh_security_event(&first.u.sa, GH_SEC_LOITER); /* its first event was forgotten */
    assert_int_equal(bans_for("100.64.0.1", GH_SEC_LOITER), 0);
    gh_security_event(&first.u.sa, GH_SEC_LOITER);
    assert_int_equal(bans_for("100.64.0.1", GH_SEC_LOITER), 1);
}

#define ADMITS_PER_THREAD 20000

static void *admit_often(void *refused)
{
    struct gh_sockaddr a = ip("192.0.2.77");
    for (int i = 0; i < ADMITS_PER_THREAD; i++) {
        struct gh_sec_ticket t;
        if (gh_security_admit(&a.u.sa, &t) == GH_SEC_REFUSE_RATE)
            ++*(unsigned *)refused;
        gh_security_release(&t);
    }
    return NULL;
}

/* Two workers counting one address at once: the count is exact across threads, and the
 * window is not started again under them (the count would drop and let a flood through). */
static void rate_holds_across_threads(void **state)
{
    struct gh_sec_settings s = {.conn_rate = {ADMITS_PER_THREAD, 60000}};
    publish(&s, NULL, 0);
    unsigned refused_a = 0, refused_b = 0;
    pthread_t a, b;
    assert_int_equal(pthread_create(&a, NULL, admit_often, &refused_a), 0);
    assert_int_equal(pthread_create(&b, NULL, admit_often, &refused_b), 0);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    /* one event may go uncounted when both threads make the counter at once */
    assert_in_range(refused_a + refused_b, ADMITS_PER_THREAD - 1, ADMITS_PER_THREAD);
}

#define ROUNDS    200
#define PER_ROUND 1000 /* two threads' rounds stay well under the ban queue's bound */

static pthread_barrier_t round_end;
static _Atomic unsigned bans_taken;

static unsigned take_all_bans(void)
{
    unsigned n = 0;
    for (struct gh_sec_ban *b = gh_security_take_bans(), *next; b; b = next) {
        next = b->next;
        free(b);
        n++;
    }
    return n;
}

/* Each round, a burst of events from addresses never seen before; between rounds, one of
 * the two threads takes the queued bans, as the control side would. */
static void *scan_from_new_addresses(void *first)
{
    uint32_t addr = *(const uint32_t *)first;
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < PER_ROUND; i++) {
            struct gh_sockaddr a = {0};
            a.u.v4.sin_family = AF_INET;
            a.u.v4.sin_addr.s_addr = htonl(addr++);
            gh_security_event(&a.u.sa, GH_SEC_SCAN);
        }
        if (pthread_barrier_wait(&round_end) == PTHREAD_BARRIER_SERIAL_THREAD)
            bans_taken += take_all_bans();
        pthread_barrier_wait(&round_end);
    }
    return NULL;
}

/* A first offence bans at a rate of one: two workers meeting new addresses at once, in the
 * same bucket or over the same evicted slot, must each still see their own first count. */
static void first_offences_race_and_all_ban(void **state)
{
    struct gh_sec_settings s = {0};
    s.ban_rate[GH_SEC_SCAN] = (struct gh_sec_rate){1, 3600000};
    publish(&s, NULL, 0);
    take_all_bans();
    bans_taken = 0;
    assert_int_equal(pthread_barrier_init(&round_end, NULL, 2), 0);
    uint32_t first_a = 0x0b000000u, first_b = 0x0c000000u;
    pthread_t a, b;
    assert_int_equal(pthread_create(&a, NULL, scan_from_new_addresses, &first_a), 0);
    assert_int_equal(pthread_create(&b, NULL, scan_from_new_addresses, &first_b), 0);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    pthread_barrier_destroy(&round_end);
    assert_int_equal(bans_taken, 2 * ROUNDS * PER_ROUND);
}

static void *lookup_thread(void *arg)
{
    struct gh_sockaddr a = ip("203.0.113.99");
    *(enum gh_sec_verdict *)arg = gh_security_lookup(&a.u.sa);
    return NULL;
}

static void reader_slots_are_given_back(void **state)
{
    struct gh_sec_table *t = gh_sec_table_new();
    add(t, "203.0.113.0/24", false, 0);
    gh_security_publish(t);
    for (int i = 0; i < 600; i++) { /* more threads than hazard slots, one after another */
        pthread_t th;
        enum gh_sec_verdict v = GH_SEC_UNLISTED;
        assert_int_equal(pthread_create(&th, NULL, lookup_thread, &v), 0);
        pthread_join(th, NULL);
        assert_int_equal(v, GH_SEC_BLOCKED);
    }
    gh_security_publish(gh_sec_table_new()); /* the old table is freed: no reader holds it */
}

static int teardown(void **state)
{
    gh_security_shutdown();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(most_specific_wins),
        cmocka_unit_test(ipv6_and_ties),
        cmocka_unit_test(expired_entries_fall_back),
        cmocka_unit_test(large_table),
        cmocka_unit_test(rates),
        cmocka_unit_test(utcdates),
        cmocka_unit_test(globs),
        cmocka_unit_test(events_queue_one_ban_at_the_rate),
        cmocka_unit_test(logins_over_the_rate_ban_each_address),
        cmocka_unit_test(scan_paths_ban_at_once),
        cmocka_unit_test(per_address_limit_and_rate),
        cmocka_unit_test(reader_slots_are_given_back),
        cmocka_unit_test(rate_holds_across_threads),
        cmocka_unit_test(first_offences_race_and_all_ban),
        cmocka_unit_test_teardown(counters_stay_bounded, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Unit tests for log's structured lines (the session log): text fields cannot be split or
 * faked by a client-chosen value, JSON values are escaped and numbers left bare, absent
 * fields are left out, long values are cut and the line still ends whole, and --log-file is
 * opened again under its name after a rename.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"

static char path[64];

static char *slurp(const char *p)
{
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    static char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return buf;
}

static int setup(void **state)
{
    snprintf(path, sizeof path, "/tmp/gh-test-log-%d.log", (int)getpid());
    unlink(path);
    gh_err err = {0};
    assert_true(gh_log_open_file(path, &err));
    return 0;
}

static int teardown(void **state)
{
    unlink(path);
    char old[80];
    snprintf(old, sizeof old, "%s.1", path);
    unlink(old);
    return 0;
}

static void text_fields_cannot_be_split(void **state)
{
    assert_int_equal(truncate(path, 0), 0);
    gh_log_init(GH_LOG_TEXT);
    struct gh_log_field f[] = {
        GH_LOG_FIELD("listener", "mx", GH_LOG_FOREIGN),
        GH_LOG_FIELD("sni", "evil end=shutdown \"x\"\n", GH_LOG_FOREIGN),
        GH_LOG_FIELD("peer", NULL, GH_LOG_FOREIGN),
        GH_LOG_FIELD("user", "", GH_LOG_FOREIGN),
        GH_LOG_FIELD("bytesIn", "42", GH_LOG_NUM),
    };
    gh_log_fields("session", f, 5);
    const char *line = slurp(path);
    assert_non_null(strstr(line, " session listener=mx sni=evil?end?shutdown??x?? user=- "
                                 "bytesIn=42\n"));
    assert_null(strstr(line, "peer="));
    assert_int_equal(strchr(line, '\n')[1], 0); /* one line */
}

static void json_values_are_escaped(void **state)
{
    assert_int_equal(truncate(path, 0), 0);
    gh_log_init(GH_LOG_JSON);
    struct gh_log_field f[] = {
        GH_LOG_FIELD("client", "[2001:db8::1]:25", GH_LOG_OWN),
        GH_LOG_FIELD("sni", "a\"b\\c\n", GH_LOG_FOREIGN),
        GH_LOG_FIELD("resumed", "true", GH_LOG_NUM),
        GH_LOG_FIELD("duration", "0.004", GH_LOG_NUM),
    };
    gh_log_fields("session", f, 4);
    const char *line = slurp(path);
    assert_non_null(strstr(line, "\"event\":\"session\",\"client\":\"[2001:db8::1]:25\","
                                 "\"sni\":\"a\\\"b\\\\c\\u000a\","
                                 "\"resumed\":true,\"duration\":0.004}\n"));
    gh_log_init(GH_LOG_TEXT);
}

/* A value made here is written as it is in text too: an address keeps its brackets and
 * colons, an empty one shows as "-". */
static void own_values_are_written_as_they_are(void **state)
{
    assert_int_equal(truncate(path, 0), 0);
    gh_log_init(GH_LOG_TEXT);
    struct gh_log_field f[] = {
        GH_LOG_FIELD("client", "[2001:db8::1]:25", GH_LOG_OWN),
        GH_LOG_FIELD("local", "", GH_LOG_OWN),
    };
    gh_log_fields("session", f, 2);
    assert_non_null(strstr(slurp(path), " session client=[2001:db8::1]:25 local=-\n"));
}

/* A value is cut at 599 bytes, a line at 2,048, and either way it closes: one line, and in
 * JSON, the closing brace. */
static void long_values_are_cut_and_the_line_still_ends(void **state)
{
    static char big[1500], quotes[1500];
    memset(big, 'a', sizeof big - 1);
    memset(quotes, '\n', sizeof quotes - 1);
    struct gh_log_field f[] = {
        GH_LOG_FIELD("a", big, GH_LOG_FOREIGN), GH_LOG_FIELD("b", big, GH_LOG_FOREIGN),
        GH_LOG_FIELD("c", big, GH_LOG_FOREIGN), GH_LOG_FIELD("d", big, GH_LOG_FOREIGN),
        GH_LOG_FIELD("e", "end", GH_LOG_FOREIGN)};
    assert_int_equal(truncate(path, 0), 0);
    gh_log_init(GH_LOG_TEXT);
    gh_log_fields("session", f, 1);
    const char *line = slurp(path);
    assert_int_equal(strchr(line, '\n') - strstr(line, " a="), 3 + 599);
    assert_int_equal(truncate(path, 0), 0);
    gh_log_fields("session", f, 5);
    line = slurp(path);
    assert_int_equal(strlen(line), 2048 - 2);
    assert_int_equal(line[strlen(line) - 1], '\n');
    assert_null(strstr(line, "e=end"));

    assert_int_equal(truncate(path, 0), 0);
    gh_log_init(GH_LOG_JSON);
    struct gh_log_field j[] = {GH_LOG_FIELD("a", quotes, GH_LOG_FOREIGN),
                               GH_LOG_FIELD("b", quotes, GH_LOG_FOREIGN)};
    gh_log_fields("session", j, 2);
    line = slurp(path);
    size_t n = strlen(line);
    assert_true(n <= 2048);
    assert_memory_equal(line + n - 2, "}\n", 2);
    assert_non_null(strstr(line, "\"a\":\"\\u000a"));
    gh_log_init(GH_LOG_TEXT);
}

static void reopened_after_a_rename(void **state)
{
    char old[80];
    snprintf(old, sizeof old, "%s.1", path);
    struct gh_log_field f[] = {GH_LOG_FIELD("n", "1", GH_LOG_NUM)};
    gh_log_fields("before", f, 1);
    assert_int_equal(rename(path, old), 0);
    gh_log_fields("moved", f, 1); /* still the old file: nothing reopened yet */
    gh_err err = {0};
    assert_true(gh_log_reopen(&err));
    gh_log_fields("after", f, 1);
    assert_non_null(strstr(slurp(old), " moved n=1\n"));
    assert_null(strstr(slurp(old), " after "));
    assert_non_null(strstr(slurp(path), " after n=1\n"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(text_fields_cannot_be_split),
        cmocka_unit_test(json_values_are_escaped),
        cmocka_unit_test(own_values_are_written_as_they_are),
        cmocka_unit_test(long_values_are_cut_and_the_line_still_ends),
        cmocka_unit_test(reopened_after_a_rename),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

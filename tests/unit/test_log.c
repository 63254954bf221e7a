/*
 * Unit tests for log's structured lines (the session log): text fields cannot be split or
 * faked by a client-chosen value, JSON values are escaped and numbers left bare, absent
 * fields are left out, long values are cut and the line still ends whole, lines buffered on
 * a worker thread come out whole and in order, and --log-file is opened again under its name
 * after a rename.
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
#include "core/loop.h"

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
    static const struct gh_log_key f[] = {
        GH_LOG_KEY("listener", GH_LOG_FOREIGN), GH_LOG_KEY("sni", GH_LOG_FOREIGN),
        GH_LOG_KEY("peer", GH_LOG_FOREIGN), GH_LOG_KEY("user", GH_LOG_FOREIGN),
        GH_LOG_KEY("bytesIn", GH_LOG_NUM)};
    const char *fv[] = {"mx", "evil end=shutdown \"x\"\n", NULL, "", "42"};
    gh_log_fields("session", f, fv, 5);
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
    static const struct gh_log_key f[] = {
        GH_LOG_KEY("client", GH_LOG_OWN), GH_LOG_KEY("sni", GH_LOG_FOREIGN),
        GH_LOG_KEY("resumed", GH_LOG_NUM), GH_LOG_KEY("duration", GH_LOG_NUM)};
    const char *fv[] = {"[2001:db8::1]:25", "a\"b\\c\n", "true", "0.004"};
    gh_log_fields("session", f, fv, 4);
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
    static const struct gh_log_key f[] = {GH_LOG_KEY("client", GH_LOG_OWN),
                                          GH_LOG_KEY("local", GH_LOG_OWN)};
    const char *fv[] = {"[2001:db8::1]:25", ""};
    gh_log_fields("session", f, fv, 2);
    assert_non_null(strstr(slurp(path), " session client=[2001:db8::1]:25 local=-\n"));
}

/* A value is cut at 599 bytes, a line at 2,048, and either way it closes: one line, and in
 * JSON, the closing brace. */
static void long_values_are_cut_and_the_line_still_ends(void **state)
{
    static char big[1500], quotes[1500];
    memset(big, 'a', sizeof big - 1);
    memset(quotes, '\n', sizeof quotes - 1);
    static const struct gh_log_key f[] = {
        GH_LOG_KEY("a", GH_LOG_FOREIGN), GH_LOG_KEY("b", GH_LOG_FOREIGN),
        GH_LOG_KEY("c", GH_LOG_FOREIGN), GH_LOG_KEY("d", GH_LOG_FOREIGN),
        GH_LOG_KEY("e", GH_LOG_FOREIGN)};
    const char *fv[] = {big, big, big, big, "end"};
    assert_int_equal(truncate(path, 0), 0);
    gh_log_init(GH_LOG_TEXT);
    gh_log_fields("session", f, fv, 1);
    const char *line = slurp(path);
    assert_int_equal(strchr(line, '\n') - strstr(line, " a="), 3 + 599);
    assert_int_equal(truncate(path, 0), 0);
    gh_log_fields("session", f, fv, 5);
    line = slurp(path);
    assert_int_equal(strlen(line), 2048 - 2);
    assert_int_equal(line[strlen(line) - 1], '\n');
    assert_null(strstr(line, "e=end"));

    assert_int_equal(truncate(path, 0), 0);
    gh_log_init(GH_LOG_JSON);
    static const struct gh_log_key j[] = {GH_LOG_KEY("a", GH_LOG_FOREIGN),
                                          GH_LOG_KEY("b", GH_LOG_FOREIGN)};
    const char *jv[] = {quotes, quotes};
    gh_log_fields("session", j, jv, 2);
    line = slurp(path);
    size_t n = strlen(line);
    assert_true(n <= 2048);
    assert_memory_equal(line + n - 2, "}\n", 2);
    assert_non_null(strstr(line, "\"a\":\"\\u000a"));
    gh_log_init(GH_LOG_TEXT);
}

/* On a worker thread (an attached loop) lines are made in the thread's buffer: none is out
 * before a flush, and lines that fill it send what came before, each line whole and in order,
 * the big ones too. */
static void buffered_lines_stay_whole_and_in_order(void **state)
{
    static char big[600]; /* the most of one value */
    memset(big, 'b', sizeof big - 1);
    static const struct gh_log_key f[] = {GH_LOG_KEY("n", GH_LOG_NUM),
                                          GH_LOG_KEY("v", GH_LOG_FOREIGN)};
    gh_err err = {0};
    struct gh_loop *loop = gh_loop_new(&err);
    assert_non_null(loop);
    assert_int_equal(truncate(path, 0), 0);
    gh_log_init(GH_LOG_TEXT);
    gh_log_attach(loop);
    const char *first[] = {"0", "small"};
    gh_log_fields("session", f, first, 2);
    assert_string_equal(slurp(path), ""); /* held */
    gh_log_flush();
    assert_non_null(strstr(slurp(path), " session n=0 v=small\n"));
    assert_int_equal(truncate(path, 0), 0);
    enum { LINES = 300 }; /* about 100 KB: the 64 KiB buffer fills */
    for (int i = 0; i < LINES; i++) {
        char n[8];
        snprintf(n, sizeof n, "%d", i);
        const char *v[] = {n, i % 2 ? big : "small"};
        gh_log_fields("session", f, v, 2);
    }
    FILE *out = fopen(path, "r");
    assert_non_null(out);
    fseek(out, 0, SEEK_END);
    long early = ftell(out);
    fclose(out);
    assert_true(early > 0 && early < 90 * 1000); /* some out, not all */
    gh_log_detach();                             /* writes the rest */
    gh_loop_free(loop);
    out = fopen(path, "r");
    assert_non_null(out);
    static char line[4096];
    int i = 0;
    for (; fgets(line, sizeof line, out); i++) {
        char want[64];
        snprintf(want, sizeof want, " session n=%d v=", i);
        assert_non_null(strstr(line, want));
        size_t len = strlen(line);
        assert_int_equal(line[len - 1], '\n');
        assert_int_equal(len - (size_t)(strstr(line, " v=") - line) - 4,
                         i % 2 ? sizeof big - 1 : strlen("small"));
    }
    fclose(out);
    assert_int_equal(i, LINES);
    assert_int_equal(truncate(path, 0), 0); /* more than the next test reads back */
}

static void reopened_after_a_rename(void **state)
{
    char old[80];
    snprintf(old, sizeof old, "%s.1", path);
    static const struct gh_log_key f[] = {GH_LOG_KEY("n", GH_LOG_NUM)};
    const char *fv[] = {"1"};
    gh_log_fields("before", f, fv, 1);
    assert_int_equal(rename(path, old), 0);
    gh_log_fields("moved", f, fv, 1); /* still the old file: nothing reopened yet */
    gh_err err = {0};
    assert_true(gh_log_reopen(&err));
    gh_log_fields("after", f, fv, 1);
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
        cmocka_unit_test(buffered_lines_stay_whole_and_in_order),
        cmocka_unit_test(reopened_after_a_rename),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

/*
 * Unit tests for log's structured lines (the session log): text fields cannot be split or
 * faked by a client-chosen value, JSON values are escaped and numbers left bare, absent
 * fields are left out, and --log-file is opened again under its name after a rename.
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
        {"listener", "mx", false}, {"sni", "evil end=shutdown \"x\"\n", false},
        {"peer", NULL, false},     {"user", "", false},
        {"bytesIn", "42", true},
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
        {"sni", "a\"b\\c\n", false},
        {"resumed", "true", true},
        {"duration", "0.004", true},
    };
    gh_log_fields("session", f, 3);
    const char *line = slurp(path);
    assert_non_null(strstr(line, "\"event\":\"session\",\"sni\":\"a\\\"b\\\\c\\u000a\","
                                 "\"resumed\":true,\"duration\":0.004}\n"));
    gh_log_init(GH_LOG_TEXT);
}

static void reopened_after_a_rename(void **state)
{
    char old[80];
    snprintf(old, sizeof old, "%s.1", path);
    struct gh_log_field f[] = {{"n", "1", true}};
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
        cmocka_unit_test(reopened_after_a_rename),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

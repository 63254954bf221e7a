/*
 * test_line: the line reader shared by the text protocols: CRLF and bare LF, lines split
 * across reads, over-long lines reported once and skipped, literal announcements, words.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "proto/line.h"

static void add(struct gh_buf *b, const char *s)
{
    gh_buf_append(b, s, strlen(s));
}

static void crlf_and_bare_lf(void **state)
{
    struct gh_buf b = {0};
    bool skip = false;
    char *line;
    size_t len;
    add(&b, "ONE\r\nTWO\n\r\nTHR");
    assert_int_equal(gh_line_take(&b, 100, &skip, &line, &len), GH_LINE_OK);
    assert_string_equal(line, "ONE");
    assert_int_equal(len, 3);
    assert_int_equal(gh_line_take(&b, 100, &skip, &line, &len), GH_LINE_OK);
    assert_string_equal(line, "TWO");
    assert_int_equal(gh_line_take(&b, 100, &skip, &line, &len), GH_LINE_OK);
    assert_string_equal(line, "");
    assert_int_equal(len, 0);
    assert_int_equal(gh_line_take(&b, 100, &skip, &line, &len), GH_LINE_MORE);
    add(&b, "EE\r");
    assert_int_equal(gh_line_take(&b, 100, &skip, &line, &len), GH_LINE_MORE);
    add(&b, "\n");
    assert_int_equal(gh_line_take(&b, 100, &skip, &line, &len), GH_LINE_OK);
    assert_string_equal(line, "THREE");
    assert_int_equal(gh_buf_len(&b), 0);
    /* A CR inside a line is kept; only the one before LF ends it. */
    add(&b, "A\rB\r\r\n");
    assert_int_equal(gh_line_take(&b, 100, &skip, &line, &len), GH_LINE_OK);
    assert_int_equal(len, 4);
    assert_memory_equal(line, "A\rB\r", 4);
    gh_buf_free(&b);
}

static void too_long_reported_once(void **state)
{
    struct gh_buf b = {0};
    bool skip = false;
    char *line;
    size_t len;
    add(&b, "0123456789");
    assert_int_equal(gh_line_take(&b, 8, &skip, &line, &len), GH_LINE_TOO_LONG);
    assert_true(skip);
    assert_int_equal(gh_buf_len(&b), 0); /* the buffer does not grow with the line */
    add(&b, "0123456789");
    assert_int_equal(gh_line_take(&b, 8, &skip, &line, &len), GH_LINE_MORE);
    add(&b, "tail\r\nNEXT\r\n");
    assert_int_equal(gh_line_take(&b, 8, &skip, &line, &len), GH_LINE_OK);
    assert_false(skip);
    assert_string_equal(line, "NEXT");
    /* Complete but too long: reported, consumed, nothing left to skip. */
    add(&b, "0123456789\r\nOK\r\n");
    assert_int_equal(gh_line_take(&b, 8, &skip, &line, &len), GH_LINE_TOO_LONG);
    assert_false(skip);
    assert_int_equal(gh_line_take(&b, 8, &skip, &line, &len), GH_LINE_OK);
    assert_string_equal(line, "OK");
    gh_buf_free(&b);
}

static void exactly_max(void **state)
{
    struct gh_buf b = {0};
    bool skip = false;
    char *line;
    size_t len;
    /* max bytes and a CR still wait for their LF. */
    add(&b, "12345678\r");
    assert_int_equal(gh_line_take(&b, 8, &skip, &line, &len), GH_LINE_MORE);
    add(&b, "\n");
    assert_int_equal(gh_line_take(&b, 8, &skip, &line, &len), GH_LINE_OK);
    assert_string_equal(line, "12345678");
    add(&b, "123456789\n");
    assert_int_equal(gh_line_take(&b, 8, &skip, &line, &len), GH_LINE_TOO_LONG);
    gh_buf_free(&b);
}

static void literals(void **state)
{
    uint64_t n = 0;
    bool nonsync = false;
    assert_true(gh_line_literal("a LOGIN {5}", 11, &n, &nonsync));
    assert_int_equal(n, 5);
    assert_false(nonsync);
    assert_true(gh_line_literal("x {12+}", 7, &n, &nonsync));
    assert_int_equal(n, 12);
    assert_true(nonsync);
    assert_true(gh_line_literal("{0-}", 4, &n, &nonsync));
    assert_int_equal(n, 0);
    assert_true(nonsync);
    assert_false(gh_line_literal("a {}", 4, &n, &nonsync));
    assert_false(gh_line_literal("a {+}", 5, &n, &nonsync));
    assert_false(gh_line_literal("a 5}", 4, &n, &nonsync));
    assert_false(gh_line_literal("a {5} ", 6, &n, &nonsync));
    assert_false(gh_line_literal("a {12345678901234567890}", 24, &n, &nonsync));
    assert_true(gh_line_literal("{1234567890123456789}", 21, &n, &nonsync));
    assert_int_equal(n, 1234567890123456789ULL);

    struct gh_buf b = {0};
    add(&b, "abcdef");
    uint64_t rest = 4;
    assert_true(gh_line_skip(&b, &rest));
    assert_int_equal(gh_buf_len(&b), 2);
    rest = 5;
    assert_false(gh_line_skip(&b, &rest));
    assert_int_equal(rest, 3);
    gh_buf_free(&b);
}

static void words(void **state)
{
    size_t n;
    const char *args = gh_line_word("MAIL  FROM:<a@b>", &n);
    assert_int_equal(n, 4);
    assert_string_equal(args, "FROM:<a@b>");
    args = gh_line_word("NOOP", &n);
    assert_int_equal(n, 4);
    assert_string_equal(args, "");
    args = gh_line_word("", &n);
    assert_int_equal(n, 0);
    assert_true(gh_line_is("ehlo", 4, "EHLO"));
    assert_false(gh_line_is("EHL", 3, "EHLO"));
    assert_false(gh_line_is("EHLOX", 5, "EHLO"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(crlf_and_bare_lf),
        cmocka_unit_test(too_long_reported_once),
        cmocka_unit_test(exactly_max),
        cmocka_unit_test(literals),
        cmocka_unit_test(words),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

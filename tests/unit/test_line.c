/*
 * test_line: the line reader shared by the text protocols: CRLF and bare LF, lines split
 * across reads, over-long lines reported once and skipped, literal announcements, words;
 * and the input loop, error count and goodbyes, driven through a made-up protocol; replies
 * written through gh_conn_printf.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
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
    assert_true(gh_line_is("eHlO", 4, "EHLO"));
    assert_false(gh_line_is("HELO", 4, "EHLO")); /* same letters, another first */
    assert_false(gh_line_is("EHLA", 4, "EHLO")); /* the first letter alone decides nothing */
    assert_false(gh_line_is("`A", 2, "@A"));     /* '`' is not '@' in another case */
    assert_true(gh_line_is("+a", 2, "+A"));
    static const char *const names[] = {"NOOP", "RSET", NULL};
    assert_true(gh_line_is_any("rset", 4, names));
    assert_true(gh_line_is_any("NOOP", 4, names));
    assert_false(gh_line_is_any("RSETX", 5, names));
    assert_false(gh_line_is_any("", 0, names));
}

/* ---- the input loop, through a protocol that echoes its lines ---- */

/* The made-up protocol's state: the reader first, then a log of what the callbacks saw. */
struct echo {
    struct gh_line_reader lines;
    char seen[512];
};

/* "[line]" for each line, "!" for each over-long one. "STOP" stops, "CLOSE" closes the
 * connection at once, "BIG" writes replies up to the output cap, "ERR" counts an error. */
static void echo_line(struct gh_conn *c, const char *line, size_t len)
{
    struct echo *e = c->proto_state;
    size_t used = strlen(e->seen);
    snprintf(e->seen + used, sizeof e->seen - used, "[%s]", line);
    if (strcmp(line, "STOP") == 0)
        gh_line_stop(c);
    else if (strcmp(line, "CLOSE") == 0)
        gh_conn_close(c);
    else if (strcmp(line, "BIG") == 0)
        while (gh_buf_len(&c->out) < GH_LINE_OUT_MAX)
            gh_conn_printf(c, "%s\r\n", "0123456789abcdef0123456789abcdef");
    else if (strcmp(line, "ERR") == 0)
        gh_line_error(c, "-ERR");
}

/* With literals: "=" when a command is complete. */
static void echo_finish(struct gh_conn *c)
{
    struct echo *e = c->proto_state;
    strcat(e->seen, "=");
}

static void echo_too_long(struct gh_conn *c)
{
    struct echo *e = c->proto_state;
    strcat(e->seen, "!");
    gh_line_error(c, "-ERR long");
}

static const struct gh_line_proto echo_lines = {
    .max_line = 8,
    .idle_ms = 60000,
    .too_many_errors = "BYE %s too many\r\n",
    .idle_goodbye = "BYE %s idle\r\n",
    .shutdown_goodbye = "BYE shutting down\r\n",
    .line = echo_line,
    .too_long = echo_too_long,
};

static const struct gh_line_proto echo_literal_lines = {
    .max_line = 8,
    .idle_ms = 60000,
    .too_many_errors = "BYE %s too many\r\n",
    .max_literal = 10,
    .literal_too_large = "BYE literal\r\n",
    .line = echo_line,
    .finish = echo_finish,
    .too_long_reply = "-ERR long",
};

/* A connection without a worker: its output stays in c->out to be read back. */
static struct gh_conn *echo_open_as(const struct gh_line_proto *p)
{
    struct gh_conn *c = calloc(1, sizeof *c);
    c->phase = GH_PHASE_PROTOCOL;
    struct echo *e = gh_line_open(c, sizeof *e, p);
    assert_ptr_equal(c->proto_state, e);
    assert_ptr_equal(e->lines.proto, p);
    assert_int_equal(e->lines.errors, 0);
    return c;
}

static struct gh_conn *echo_open(void)
{
    return echo_open_as(&echo_lines);
}

static void echo_close(struct gh_conn *c)
{
    gh_line_release(c);
    assert_null(c->proto_state);
    gh_buf_free(&c->in);
    gh_buf_free(&c->out);
    free(c);
}

static struct echo *echo_say(struct gh_conn *c, const char *bytes)
{
    struct echo *e = c->proto_state;
    add(&c->in, bytes);
    gh_line_input(c);
    return e;
}

/* What was written since the last call. */
static char *echo_out(struct gh_conn *c)
{
    static char text[256];
    size_t n = gh_buf_len(&c->out) < sizeof text - 1 ? gh_buf_len(&c->out) : sizeof text - 1;
    if (n) /* an empty buffer may have no memory */
        memcpy(text, gh_buf_head(&c->out), n);
    text[n] = '\0';
    gh_buf_clear(&c->out);
    return text;
}

static void input_lines_and_too_long(void **state)
{
    struct gh_conn *c = echo_open();
    struct echo *e = echo_say(c, "ONE\r\nTW");
    assert_string_equal(e->seen, "[ONE]");
    echo_say(c, "O\n0123456789");
    assert_string_equal(e->seen, "[ONE][TWO]!");
    /* The rest of the over-long line is dropped, however it arrives, and answered once. */
    echo_say(c, "0123456789");
    echo_say(c, "xyz\r\nTHREE\r\n");
    assert_string_equal(e->seen, "[ONE][TWO]![THREE]");
    assert_string_equal(echo_out(c), "-ERR long\r\n");
    assert_int_equal(e->lines.errors, 1);
    assert_false(e->lines.stopped);
    echo_close(c);
}

static void input_skips_literals(void **state)
{
    struct gh_conn *c = echo_open_as(&echo_literal_lines);
    struct echo *e = echo_say(c, "a {5+}\r\nab\r\n");
    assert_string_equal(e->seen, "[a {5+}]");
    assert_int_equal(e->lines.literal, 1);
    assert_true(e->lines.continued);
    /* The literal's last byte is an LF: taken as a line it would end one. The line after the
     * literal continues the command, which is complete once no literal follows. */
    e = echo_say(c, "\n {1-}\r\nX\r\nY\r\n");
    assert_string_equal(e->seen, "[a {5+}]=[Y]=");
    assert_int_equal(e->lines.literal, 0);
    /* A synchronizing literal waits for the server here (sync_literal_follows is false). */
    e = echo_say(c, "b {2}\r\nZ\r\n");
    assert_string_equal(e->seen, "[a {5+}]=[Y]=[b {2}]=[Z]=");
    /* An over-long line after a literal starts a new command. */
    e->seen[0] = '\0';
    e = echo_say(c, "c {1+}\r\n.0123456789\r\nW\r\n");
    assert_string_equal(e->seen, "[c {1+}][W]=");
    assert_string_equal(echo_out(c), "-ERR long\r\n"); /* too_long_reply */
    /* Up to max_literal; a larger one ends the session. */
    e->seen[0] = '\0';
    e = echo_say(c, "c {10-}\r\n0123456789\r\nd {11+}\r\nV\r\n");
    assert_string_equal(e->seen, "[c {10-}]=[d {11+}]");
    assert_string_equal(echo_out(c), "BYE literal\r\n");
    assert_true(e->lines.stopped);
    assert_int_equal(c->phase, GH_PHASE_CLOSING);
    echo_close(c);
}

static void input_stops(void **state)
{
    struct gh_conn *c = echo_open();
    struct echo *e = echo_say(c, "A\r\nSTOP\r\nB\r\n");
    assert_string_equal(e->seen, "[A][STOP]");
    assert_true(e->lines.stopped);
    assert_int_equal(c->phase, GH_PHASE_CLOSING);
    assert_int_equal(gh_buf_len(&c->in), 3); /* "B" is not read */
    echo_say(c, "C\r\n");
    assert_string_equal(e->seen, "[A][STOP]");
    echo_close(c);
}

static void input_ends_at_close(void **state)
{
    /* With a worker, closing frees the state: the loop must not read on. */
    struct gh_conn *c = echo_open();
    struct echo *e = echo_say(c, "A\r\nCLOSE\r\nB\r\n");
    assert_string_equal(e->seen, "[A][CLOSE]");
    assert_true(c->closed);
    echo_close(c);
}

static void input_waits_for_output(void **state)
{
    struct gh_conn *c = echo_open();
    struct echo *e = echo_say(c, "BIG\r\nA\r\nB\r\n");
    assert_string_equal(e->seen, "[BIG]");
    assert_true(gh_buf_len(&c->out) >= GH_LINE_OUT_MAX);
    /* Once the client has read its replies, the commands waiting are taken. */
    gh_buf_clear(&c->out);
    e = echo_say(c, "");
    assert_string_equal(e->seen, "[BIG][A][B]");
    echo_close(c);
}

static void errors_then_goodbye(void **state)
{
    struct gh_conn *c = echo_open();
    struct echo *e = c->proto_state;
    for (int i = 1; i < GH_LINE_MAX_ERRORS; i++)
        echo_say(c, "ERR\n");
    assert_int_equal(e->lines.errors, GH_LINE_MAX_ERRORS - 1);
    assert_false(e->lines.stopped);
    echo_out(c);
    echo_say(c, "ERR\nNEXT\n");
    assert_string_equal(echo_out(c), "-ERR\r\nBYE localhost too many\r\n");
    assert_true(e->lines.stopped);
    assert_int_equal(c->phase, GH_PHASE_CLOSING);
    assert_null(strstr(e->seen, "NEXT"));
    echo_close(c);
}

static void starttls_then_restart(void **state)
{
    struct gh_conn *c = echo_open();
    struct echo *e = echo_say(c, "ERR\r\n0123456789");
    assert_true(e->lines.skipping);
    e->lines.literal = 4;
    /* Injection: what follows the upgrade command in the same read is never answered. */
    gh_line_starttls(c);
    assert_true(e->lines.stopped);
    assert_int_equal(c->phase, GH_PHASE_HANDSHAKE);
    assert_int_equal(gh_buf_len(&c->in), 0);
    e->seen[0] = '\0';
    /* Encrypted bytes behind the handshake are read at once, from a clean reader. */
    c->phase = GH_PHASE_PROTOCOL;
    add(&c->in, "NEXT\r\n");
    gh_line_restart(c);
    assert_false(e->lines.stopped);
    assert_false(e->lines.skipping);
    assert_int_equal(e->lines.literal, 0);
    assert_int_equal(e->lines.errors, 2); /* ERR and the long line: kept across the upgrade */
    assert_string_equal(e->seen, "[NEXT]");
    echo_close(c);
}

static void goodbyes(void **state)
{
    struct gh_conn *c = echo_open();
    struct echo *e = c->proto_state;
    gh_line_idle(c);
    assert_string_equal(echo_out(c), "BYE localhost idle\r\n");
    assert_true(e->lines.stopped);
    assert_int_equal(c->phase, GH_PHASE_CLOSING);
    /* A session already ending gets no second goodbye. */
    gh_line_shutdown(c);
    assert_string_equal(echo_out(c), "");
    /* Nor does one inside a TLS handshake, where plaintext cannot go; it only closes. */
    struct gh_conn *h = echo_open();
    gh_line_starttls(h);
    gh_line_shutdown(h);
    assert_string_equal(echo_out(h), "");
    assert_int_equal(h->phase, GH_PHASE_CLOSING);
    struct gh_conn *d = echo_open();
    gh_line_shutdown(d);
    assert_string_equal(echo_out(d), "BYE shutting down\r\n");
    /* Without a state (it could not be allocated, and the connection was closed) nothing is
     * read or said. */
    struct gh_conn bare = {.phase = GH_PHASE_PROTOCOL};
    add(&bare.in, "NOOP\r\n");
    gh_line_input(&bare);
    gh_line_restart(&bare);
    gh_line_idle(&bare);
    assert_int_equal(gh_buf_len(&bare.in), 6);
    assert_int_equal(gh_buf_len(&bare.out), 0);
    gh_buf_free(&bare.in);
    echo_close(d);
    echo_close(h);
    echo_close(c);
}

/* Replies: formats of %s and %.*s alone are put together by hand, anything else by vsnprintf; both
 * write exactly what printf would. */
static void printf_replies(void **state)
{
    struct gh_conn c = {.phase = GH_PHASE_PROTOCOL};
    char expect[700], arg[600];
    gh_conn_printf(&c, "220 %s ESMTP\r\n", "mx.example");
    assert_string_equal(echo_out(&c), "220 mx.example ESMTP\r\n");
    gh_conn_printf(&c, "%s %s\r\n", "250", "");
    assert_string_equal(echo_out(&c), "250 \r\n");
    gh_conn_printf(&c, "no conversion\r\n");
    assert_string_equal(echo_out(&c), "no conversion\r\n");
    gh_conn_printf(&c, "%s: 100%% of %d\r\n", "done", 7); /* after a %s: others go to printf */
    assert_string_equal(echo_out(&c), "done: 100% of 7\r\n");
    gh_conn_printf(&c, "250 %.*s [%s]\r\n", 3, "abcdef", "192.0.2.7");
    assert_string_equal(echo_out(&c), "250 abc [192.0.2.7]\r\n");
    gh_conn_printf(&c, "<%.*s|%.*s|%.*s>", 9, "abc", 0, "abc", -1, "abc"); /* -1: all of it */
    assert_string_equal(echo_out(&c), "<abc||abc>");
    gh_conn_printf(&c, "%.3s|%5s\r\n", "abcdef", "ab");
    assert_string_equal(echo_out(&c), "abc|   ab\r\n");
    /* longer than the hand-made reply's room: printf's, at any length */
    memset(arg, 'x', sizeof arg - 1);
    arg[sizeof arg - 1] = 0;
    snprintf(expect, sizeof expect, "500 %s\r\n", arg);
    gh_conn_printf(&c, "500 %s\r\n", arg);
    assert_int_equal(gh_buf_len(&c.out), strlen(expect));
    assert_memory_equal(gh_buf_head(&c.out), expect, strlen(expect));
    gh_buf_free(&c.out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(crlf_and_bare_lf),
        cmocka_unit_test(too_long_reported_once),
        cmocka_unit_test(exactly_max),
        cmocka_unit_test(literals),
        cmocka_unit_test(words),
        cmocka_unit_test(input_lines_and_too_long),
        cmocka_unit_test(input_skips_literals),
        cmocka_unit_test(input_stops),
        cmocka_unit_test(input_ends_at_close),
        cmocka_unit_test(input_waits_for_output),
        cmocka_unit_test(errors_then_goodbye),
        cmocka_unit_test(starttls_then_restart),
        cmocka_unit_test(goodbyes),
        cmocka_unit_test(printf_replies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

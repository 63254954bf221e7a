/*
 * test_proto_imap: the IMAP front door through a hand-built connection: greeting and
 * capabilities with and without TLS, tagged commands, STARTTLS and its injection defence,
 * literals, over-long lines, unknown commands, goodbyes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "test_proto_util.h"

#define CAPS_TLS    "IMAP4rev1 IMAP4rev2 STARTTLS LOGINDISABLED"
#define CAPS_PLAIN  "IMAP4rev1 IMAP4rev2 AUTH=PLAIN SASL-IR"
#define UNAVAILABLE "NO [UNAVAILABLE] Service temporarily unavailable, try again later\r\n"

static struct gh_conn *greeted(bool tls)
{
    struct gh_conn *c = conn_open(&gh_proto_imap, tls);
    free(conn_out(c));
    return c;
}

static void greeting(void **state)
{
    struct gh_conn *c = conn_open(&gh_proto_imap, true);
    assert_reply(conn_out(c), "* OK [CAPABILITY " CAPS_TLS "] localhost ready\r\n");
    conn_free(c);
    c = conn_open(&gh_proto_imap, false);
    assert_reply(conn_out(c), "* OK [CAPABILITY " CAPS_PLAIN "] localhost ready\r\n");
    conn_free(c);
}

static void capability_noop_logout(void **state)
{
    struct gh_conn *c = greeted(true);
    assert_reply(conn_say(c, "a1 CAPABILITY\r\n"),
                 "* CAPABILITY " CAPS_TLS "\r\na1 OK CAPABILITY completed\r\n");
    assert_reply(conn_say(c, "a2 noop\r\n"), "a2 OK NOOP completed\r\n");
    assert_reply(conn_say(c, "a3 NOOP extra\r\n"), "a3 BAD Invalid arguments\r\n");
    assert_reply(conn_say(c, "a4 LOGOUT\r\na5 NOOP\r\n"),
                 "* BYE localhost logging out\r\na4 OK LOGOUT completed\r\n");
    assert_int_equal(c->phase, GH_PHASE_CLOSING);
    assert_reply(conn_say(c, "a6 NOOP\r\n"), "");
    conn_free(c);
}

static void errors(void **state)
{
    struct gh_conn *c = greeted(false);
    assert_reply(conn_say(c, "a1 FROB\r\n"), "a1 BAD Unknown command\r\n");
    assert_reply(conn_say(c, "a2\r\n"), "a2 BAD Missing command\r\n");
    assert_reply(conn_say(c, "\r\n"), "* BAD Missing or invalid tag\r\n");
    assert_reply(conn_say(c, "a+b NOOP\r\n"), "* BAD Missing or invalid tag\r\n");
    assert_reply(conn_say(c, "a\"b NOOP\r\n"), "* BAD Missing or invalid tag\r\n");
    assert_reply(conn_say_n(c, "a1 NOOP\0\r\n", 10), "* BAD Missing or invalid tag\r\n");
    conn_free(c);
}

static void login_needs_a_destination(void **state)
{
    struct gh_conn *c = greeted(false);
    assert_reply(conn_say(c, "a1 LOGIN bob secret\r\n"), "a1 " UNAVAILABLE);
    assert_reply(conn_say(c, "a2 AUTHENTICATE PLAIN AGJvYgBzZWNyZXQ=\r\n"), "a2 " UNAVAILABLE);
    assert_reply(conn_say(c, "a3 SELECT INBOX\r\n"), "a3 " UNAVAILABLE);
    assert_reply(conn_say(c, "a4 uid fetch 1:* FLAGS\r\n"), "a4 " UNAVAILABLE);
    conn_free(c);

    /* Before the upgrade no credentials are taken (LOGINDISABLED). */
    c = greeted(true);
    assert_reply(conn_say(c, "a1 LOGIN bob secret\r\n"),
                 "a1 NO [PRIVACYREQUIRED] Use STARTTLS first\r\n");
    conn_free(c);
}

static void starttls_upgrade(void **state)
{
    struct gh_conn *c = greeted(true);
    assert_reply(conn_say(c, "t1 STARTTLS\r\n"), "t1 OK Begin TLS negotiation now\r\n");
    assert_int_equal(c->phase, GH_PHASE_HANDSHAKE);
    assert_reply(conn_tls_done(c), "");
    assert_reply(conn_say(c, "t2 CAPABILITY\r\n"),
                 "* CAPABILITY " CAPS_PLAIN "\r\nt2 OK CAPABILITY completed\r\n");
    assert_reply(conn_say(c, "t3 STARTTLS\r\n"), "t3 BAD TLS already active\r\n");
    assert_reply(conn_say(c, "t4 LOGIN bob secret\r\n"), "t4 " UNAVAILABLE);
    conn_free(c);
}

static void starttls_injection_is_discarded(void **state)
{
    struct gh_conn *c = greeted(true);
    assert_reply(conn_say(c, "t1 STARTTLS\r\nt2 NOOP\r\nt3 LOGIN bob secret\r\n"),
                 "t1 OK Begin TLS negotiation now\r\n");
    assert_int_equal(gh_buf_len(&c->in), 0);
    assert_reply(conn_tls_done(c), "");
    assert_reply(conn_say(c, "t4 NOOP\r\n"), "t4 OK NOOP completed\r\n");
    conn_free(c);
}

static void starttls_refused(void **state)
{
    struct gh_conn *c = greeted(false);
    assert_reply(conn_say(c, "t1 STARTTLS\r\n"), "t1 NO TLS not available\r\n");
    assert_int_equal(c->phase, GH_PHASE_PROTOCOL);
    assert_reply(conn_say(c, "t2 STARTTLS now\r\n"), "t2 BAD Invalid arguments\r\n");
    conn_free(c);
}

static void literals_are_skipped(void **state)
{
    struct gh_conn *c = greeted(false);
    /* A non-synchronizing literal holding what looks like commands is not read as such. */
    assert_reply(conn_say(c, "a1 LOGIN {16+}\r\nx STARTTLS\r\nx N {3+}\r\nabc\r\n"),
                 "a1 " UNAVAILABLE);
    /* ...also when it arrives in pieces. */
    assert_reply(conn_say(c, "a2 LOGIN {10+}\r\nx LOG"), "");
    assert_reply(conn_say(c, "OUT\r\n pw\r\n"), "a2 " UNAVAILABLE);
    /* A synchronizing literal is answered at once, so the client does not send it. */
    assert_reply(conn_say(c, "a3 LOGIN {3}\r\n"), "a3 " UNAVAILABLE);
    assert_reply(conn_say(c, "a4 NOOP\r\n"), "a4 OK NOOP completed\r\n");
    assert_reply(conn_say(c, "a5 LOGIN {5000+}\r\n"), "* BYE [TOOBIG] Literal too large\r\n");
    assert_int_equal(c->phase, GH_PHASE_CLOSING);
    conn_free(c);
}

static void long_lines(void **state)
{
    struct gh_conn *c = greeted(false);
    char *big = malloc(9001);
    memset(big, 'A', 9000);
    big[9000] = '\0';
    assert_reply(conn_say(c, big), "* BAD [TOOBIG] Line too long\r\n");
    assert_reply(conn_say(c, big), "");
    assert_reply(conn_say(c, "\r\na1 NOOP\r\n"), "a1 OK NOOP completed\r\n");
    free(big);
    conn_free(c);
}

static void too_many_errors(void **state)
{
    struct gh_conn *c = greeted(false);
    for (int i = 0; i < 19; i++)
        assert_reply(conn_say(c, "a BOGUS\r\n"), "a BAD Unknown command\r\n");
    assert_reply(conn_say(c, "a BOGUS\r\n"),
                 "a BAD Unknown command\r\n* BYE Too many invalid commands\r\n");
    assert_int_equal(c->phase, GH_PHASE_CLOSING);
    conn_free(c);
}

static void goodbyes(void **state)
{
    assert_string_equal(gh_proto_imap.over_limit, "* BYE Too many connections\r\n");
    struct gh_conn *c = greeted(false);
    c->proto->idle(c);
    assert_reply(conn_out(c), "* BYE localhost autologout; idle for too long\r\n");
    assert_int_equal(c->phase, GH_PHASE_CLOSING);
    conn_free(c);
    c = greeted(true);
    c->proto->shutdown(c);
    assert_reply(conn_out(c), "* BYE localhost shutting down\r\n");
    assert_int_equal(c->phase, GH_PHASE_CLOSING);
    conn_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(greeting),         cmocka_unit_test(capability_noop_logout),
        cmocka_unit_test(errors),           cmocka_unit_test(login_needs_a_destination),
        cmocka_unit_test(starttls_upgrade), cmocka_unit_test(starttls_injection_is_discarded),
        cmocka_unit_test(starttls_refused), cmocka_unit_test(literals_are_skipped),
        cmocka_unit_test(long_lines),       cmocka_unit_test(too_many_errors),
        cmocka_unit_test(goodbyes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

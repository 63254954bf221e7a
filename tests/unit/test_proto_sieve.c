/*
 * test_proto_sieve: the ManageSieve front door through a hand-built connection: the
 * capability block with and without TLS, every command, STARTTLS with the capabilities
 * sent again, the injection defence, literals, over-long lines, goodbyes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "test_proto_util.h"

#define SIEVE_LINE                                                                                 \
    "\"SIEVE\" \"fileinto reject envelope encoded-character vacation subaddress "                  \
    "comparator-i;ascii-numeric relational regex imap4flags copy include variables body enotify "  \
    "environment mailbox date index ihave duplicate mime foreverypart extracttext\"\r\n"           \
    "\"NOTIFY\" \"mailto\"\r\n"
#define CAPS_TLS                                                                                   \
    "\"IMPLEMENTATION\" \"Gatehouse\"\r\n\"SASL\" \"\"\r\n" SIEVE_LINE                             \
    "\"STARTTLS\"\r\n\"VERSION\" \"1.0\"\r\n"
#define CAPS_PLAIN                                                                                 \
    "\"IMPLEMENTATION\" \"Gatehouse\"\r\n\"SASL\" \"PLAIN\"\r\n" SIEVE_LINE                        \
    "\"VERSION\" \"1.0\"\r\n"
#define TRYLATER "NO (TRYLATER) \"Service temporarily unavailable, try again later\"\r\n"

static struct gh_conn *greeted(bool tls)
{
    struct gh_conn *c = conn_open(&gh_proto_managesieve, tls);
    free(conn_out(c));
    return c;
}

static void greeting(void **state)
{
    struct gh_conn *c = conn_open(&gh_proto_managesieve, true);
    assert_reply(conn_out(c), CAPS_TLS "OK \"localhost ready\"\r\n");
    conn_free(c);
    c = conn_open(&gh_proto_managesieve, false);
    assert_reply(conn_out(c), CAPS_PLAIN "OK \"localhost ready\"\r\n");
    conn_free(c);
}

static void commands(void **state)
{
    struct gh_conn *c = greeted(false);
    assert_reply(conn_say(c, "CAPABILITY\r\n"), CAPS_PLAIN "OK \"Capability completed\"\r\n");
    assert_reply(conn_say(c, "capability x\r\n"), "NO \"Invalid arguments\"\r\n");
    assert_reply(conn_say(c, "NOOP\r\n"), "OK \"Done\"\r\n");
    assert_reply(conn_say(c, "NOOP \"STARTTLS-SYNC-42\"\r\n"),
                 "OK (TAG \"STARTTLS-SYNC-42\") \"Done\"\r\n");
    assert_reply(conn_say(c, "noop \"a\\\"b\\\\c\"\r\n"), "OK (TAG \"a\\\"b\\\\c\") \"Done\"\r\n");
    assert_reply(conn_say(c, "NOOP \"unterminated\r\n"), "NO \"Invalid arguments\"\r\n");
    assert_reply(conn_say(c, "NOOP atom\r\n"), "NO \"Invalid arguments\"\r\n");
    assert_reply(conn_say(c, "AUTHENTICATE \"PLAIN\" \"AGJvYgBzZWNyZXQ=\"\r\n"), TRYLATER);
    assert_reply(conn_say(c, "LISTSCRIPTS\r\n"), TRYLATER);
    assert_reply(conn_say(c, "FROB\r\n"), "NO \"Unknown command\"\r\n");
    assert_reply(conn_say(c, "STARTTLS\r\n"), "NO \"TLS not available\"\r\n");
    assert_reply(conn_say(c, "LOGOUT\r\nNOOP\r\n"), "OK \"Logout completed\"\r\n");
    assert_int_equal(c->phase, GH_PHASE_CLOSING);
    conn_free(c);

    c = greeted(true);
    assert_reply(conn_say(c, "AUTHENTICATE \"PLAIN\" \"AGJvYgBzZWNyZXQ=\"\r\n"),
                 "NO (ENCRYPT-NEEDED) \"Use STARTTLS first\"\r\n");
    conn_free(c);
}

/* RFC 5804 §1.7: a server listing "enotify" in SIEVE MUST send NOTIFY with the notification
 * methods it supports, right where clients such as sieve-connect look for it. */
static void enotify_comes_with_notify_methods(void **state)
{
    for (int tls = 0; tls < 2; tls++) {
        struct gh_conn *c = conn_open(&gh_proto_managesieve, tls);
        char *out = conn_out(c);
        const char *sieve = strstr(out, "\"SIEVE\" \"");
        assert_non_null(sieve);
        const char *end = strstr(sieve, "\r\n");
        assert_non_null(end);
        const char *enotify = strstr(sieve, " enotify ");
        assert_true(enotify && enotify < end);
        assert_non_null(strstr(out, "\r\n\"NOTIFY\" \"mailto\"\r\n"));
        free(out);
        conn_free(c);
    }
}

static void starttls_resends_capabilities(void **state)
{
    struct gh_conn *c = greeted(true);
    assert_reply(conn_say(c, "STARTTLS\r\nNOOP\r\nAUTHENTICATE \"PLAIN\"\r\n"),
                 "OK \"Begin TLS negotiation now\"\r\n");
    assert_int_equal(c->phase, GH_PHASE_HANDSHAKE);
    assert_int_equal(gh_buf_len(&c->in), 0);
    assert_reply(conn_tls_done(c), CAPS_PLAIN "OK \"TLS negotiation successful\"\r\n");
    assert_reply(conn_say(c, "STARTTLS\r\n"), "NO \"TLS already active\"\r\n");
    assert_reply(conn_say(c, "AUTHENTICATE \"PLAIN\" \"AGJvYgBzZWNyZXQ=\"\r\n"), TRYLATER);
    conn_free(c);
}

static void literals_are_skipped(void **state)
{
    struct gh_conn *c = greeted(false);
    /* A script in a literal is never read as commands, with or without "+". */
    assert_reply(conn_say(c, "PUTSCRIPT \"s\" {18+}\r\nLOGOUT\r\nSTARTTLS\r\n\r\n"), TRYLATER);
    assert_reply(conn_say(c, "AUTHENTICATE \"PLAIN\" {8}\r\nLOGO"), "");
    assert_reply(conn_say(c, "UT\r\n\r\n"), TRYLATER);
    assert_reply(conn_say(c, "NOOP {3+}\r\nabc\r\n"), "OK \"Done\"\r\n");
    assert_reply(conn_say(c, "PUTSCRIPT \"s\" {99999999+}\r\n"), "BYE \"Literal too large\"\r\n");
    assert_int_equal(c->phase, GH_PHASE_CLOSING);
    conn_free(c);
}

static void long_lines_and_errors(void **state)
{
    struct gh_conn *c = greeted(false);
    char big[5001];
    memset(big, 'A', 5000);
    big[5000] = '\0';
    assert_reply(conn_say(c, big), "NO \"Line too long\"\r\n");
    assert_reply(conn_say(c, "A\r\nNOOP\r\n"), "OK \"Done\"\r\n");
    for (int i = 0; i < 18; i++)
        assert_reply(conn_say(c, "X\r\n"), "NO \"Unknown command\"\r\n");
    assert_reply(conn_say(c, "X\r\n"),
                 "NO \"Unknown command\"\r\nBYE \"Too many invalid commands\"\r\n");
    assert_int_equal(c->phase, GH_PHASE_CLOSING);
    conn_free(c);
}

static void goodbyes(void **state)
{
    assert_string_equal(gh_proto_managesieve.over_limit, "BYE \"Too many connections\"\r\n");
    struct gh_conn *c = greeted(true);
    c->proto->shutdown(c);
    assert_reply(conn_out(c), "BYE \"shutting down\"\r\n");
    assert_int_equal(c->phase, GH_PHASE_CLOSING);
    conn_free(c);
    c = greeted(true);
    c->proto->idle(c);
    assert_reply(conn_out(c), "BYE \"Idle timeout, closing connection\"\r\n");
    assert_int_equal(c->phase, GH_PHASE_CLOSING);
    conn_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(greeting),
        cmocka_unit_test(commands),
        cmocka_unit_test(enotify_comes_with_notify_methods),
        cmocka_unit_test(starttls_resends_capabilities),
        cmocka_unit_test(literals_are_skipped),
        cmocka_unit_test(long_lines_and_errors),
        cmocka_unit_test(goodbyes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

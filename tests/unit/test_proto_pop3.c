/*
 * test_proto_pop3: the POP3 front door through a hand-built connection: greeting, CAPA
 * with and without TLS, every command, STLS and its injection defence, over-long lines,
 * unknown commands, goodbyes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "test_proto_util.h"

#define CAPA_TAIL   "RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nIMPLEMENTATION Gatehouse\r\n.\r\n"
#define CAPA_TLS    "+OK Capability list follows\r\nSTLS\r\n" CAPA_TAIL
#define CAPA_PLAIN  "+OK Capability list follows\r\nUSER\r\nSASL PLAIN\r\n" CAPA_TAIL
#define UNAVAILABLE "-ERR [SYS/TEMP] Service temporarily unavailable, try again later\r\n"

static struct gh_conn *greeted(bool tls)
{
    struct gh_conn *c = conn_open(&gh_proto_pop3, tls);
    free(conn_out(c));
    return c;
}

static void greeting(void **state)
{
    struct gh_conn *c = conn_open(&gh_proto_pop3, true);
    assert_reply(conn_out(c), "+OK localhost ready\r\n");
    conn_free(c);
}

static void capa_lists_stls_only_when_available(void **state)
{
    struct gh_conn *c = greeted(true);
    assert_reply(conn_say(c, "CAPA\r\n"), CAPA_TLS);
    conn_free(c);
    c = greeted(false);
    assert_reply(conn_say(c, "capa\r\n"), CAPA_PLAIN);
    assert_reply(conn_say(c, "STLS\r\n"), "-ERR TLS not available\r\n");
    assert_int_equal(c->phase, GH_PHASE_PROTOCOL);
    conn_free(c);
}

static void commands(void **state)
{
    struct gh_conn *c = greeted(false);
    assert_reply(conn_say(c, "NOOP\r\n"), "+OK\r\n");
    assert_reply(conn_say(c, "USER bob\r\n"), UNAVAILABLE);
    assert_reply(conn_say(c, "PASS secret\r\n"), UNAVAILABLE);
    assert_reply(conn_say(c, "AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n"), UNAVAILABLE);
    assert_reply(conn_say(c, "STAT\r\n"), UNAVAILABLE);
    assert_reply(conn_say(c, "FROB\r\n"), "-ERR Unknown command\r\n");
    assert_reply(conn_say_n(c, "NOOP\0\r\n", 7), "-ERR Syntax error\r\n");
    assert_reply(conn_say(c, "QUIT\r\nNOOP\r\n"), "+OK localhost signing off\r\n");
    assert_int_equal(c->phase, GH_PHASE_CLOSING);
    conn_free(c);

    c = greeted(true);
    assert_reply(conn_say(c, "USER bob\r\n"), "-ERR Use STLS first\r\n");
    conn_free(c);
}

static void stls_upgrade_and_injection(void **state)
{
    struct gh_conn *c = greeted(true);
    assert_reply(conn_say(c, "STLS now\r\n"), "-ERR STLS takes no arguments\r\n");
    assert_reply(conn_say(c, "STLS\r\nUSER bob\r\nPASS x\r\n"),
                 "+OK Begin TLS negotiation now\r\n");
    assert_int_equal(c->phase, GH_PHASE_HANDSHAKE);
    assert_int_equal(gh_buf_len(&c->in), 0);
    assert_reply(conn_tls_done(c), "");
    assert_reply(conn_say(c, "CAPA\r\n"), CAPA_PLAIN);
    assert_reply(conn_say(c, "STLS\r\n"), "-ERR Command not permitted when TLS active\r\n");
    assert_reply(conn_say(c, "USER bob\r\n"), UNAVAILABLE);
    conn_free(c);
}

static void long_lines(void **state)
{
    struct gh_conn *c = greeted(false);
    char big[5001];
    memset(big, 'A', 5000);
    big[5000] = '\0';
    assert_reply(conn_say(c, big), "-ERR Line too long\r\n");
    assert_reply(conn_say(c, "AAAA\r\nNOOP\r\n"), "+OK\r\n");
    conn_free(c);
}

static void too_many_errors(void **state)
{
    struct gh_conn *c = greeted(false);
    for (int i = 0; i < 19; i++)
        assert_reply(conn_say(c, "X\r\n"), "-ERR Unknown command\r\n");
    assert_reply(conn_say(c, "X\r\n"),
                 "-ERR Unknown command\r\n-ERR Too many invalid commands, closing connection\r\n");
    assert_int_equal(c->phase, GH_PHASE_CLOSING);
    conn_free(c);
}

static void goodbyes(void **state)
{
    assert_string_equal(gh_proto_pop3.over_limit, "-ERR [SYS/TEMP] Too many connections\r\n");
    struct gh_conn *c = greeted(false);
    c->proto->shutdown(c);
    assert_reply(conn_out(c), "-ERR [SYS/TEMP] shutting down\r\n");
    assert_int_equal(c->phase, GH_PHASE_CLOSING);
    conn_free(c);
    c = greeted(false);
    c->proto->idle(c);
    assert_reply(conn_out(c), "-ERR localhost autologout; idle for too long\r\n");
    assert_int_equal(c->phase, GH_PHASE_CLOSING);
    conn_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(greeting),   cmocka_unit_test(capa_lists_stls_only_when_available),
        cmocka_unit_test(commands),   cmocka_unit_test(stls_upgrade_and_injection),
        cmocka_unit_test(long_lines), cmocka_unit_test(too_many_errors),
        cmocka_unit_test(goodbyes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

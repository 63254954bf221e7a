/*
 * test_proto_smtp: the SMTP and LMTP front doors, driven through a hand-built connection:
 * greeting, EHLO/LHLO lists with and without TLS, every command, STARTTLS and its
 * injection defence, over-long lines, unknown commands, goodbyes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proto/line.h"
#include "test_proto_util.h"

#define EHLO_TLS                                                                                   \
    "250-localhost Hello client.example [192.0.2.7]\r\n250-PIPELINING\r\n250-8BITMIME\r\n"         \
    "250-ENHANCEDSTATUSCODES\r\n250-SIZE\r\n250 STARTTLS\r\n"
#define EHLO_PLAIN                                                                                 \
    "250-localhost Hello client.example [192.0.2.7]\r\n250-PIPELINING\r\n250-8BITMIME\r\n"         \
    "250-ENHANCEDSTATUSCODES\r\n250 SIZE\r\n"

static void greeting(void **state)
{
    struct gh_conn *c = conn_open(&gh_proto_smtp, true);
    assert_reply(conn_out(c), "220 localhost ESMTP\r\n");
    conn_free(c);
    c = conn_open(&gh_proto_lmtp, false);
    assert_reply(conn_out(c), "220 localhost ESMTP\r\n");
    conn_free(c);
}

static void ehlo_lists_starttls_only_when_available(void **state)
{
    struct gh_conn *c = conn_open(&gh_proto_smtp, true);
    free(conn_out(c));
    assert_reply(conn_say(c, "EHLO client.example\r\n"), EHLO_TLS);
    conn_free(c);

    c = conn_open(&gh_proto_smtp, false);
    free(conn_out(c));
    assert_reply(conn_say(c, "ehlo client.example\r\n"), EHLO_PLAIN);
    conn_free(c);

    /* A load balancer that terminated TLS (PROXY v2 SSL TLV): nothing to upgrade. */
    c = conn_open(&gh_proto_smtp, true);
    c->tls_active = true;
    free(conn_out(c));
    assert_reply(conn_say(c, "EHLO client.example\r\n"), EHLO_PLAIN);
    assert_reply(conn_say(c, "STARTTLS\r\n"), "503 5.5.1 TLS already active\r\n");
    conn_free(c);
}

static void helo_and_bad_names(void **state)
{
    struct gh_conn *c = conn_open(&gh_proto_smtp, false);
    free(conn_out(c));
    assert_reply(conn_say(c, "HELO client.example\r\n"),
                 "250 localhost Hello client.example [192.0.2.7]\r\n");
    assert_reply(conn_say(c, "EHLO\r\n"), "501 5.5.4 Syntax: EHLO hostname\r\n");
    assert_reply(conn_say(c, "HELO \r\n"), "501 5.5.4 Syntax: HELO hostname\r\n");
    assert_reply(conn_say(c, "EHLO a\x01z\r\n"), "501 5.5.4 Syntax: EHLO hostname\r\n");
    assert_reply(conn_say_n(c, "NOOP\0x\r\n", 8), "500 5.5.2 Syntax error\r\n");
    conn_free(c);
}

static void simple_commands(void **state)
{
    struct gh_conn *c = conn_open(&gh_proto_smtp, true);
    free(conn_out(c));
    assert_reply(conn_say(c, "NOOP\r\n"), "250 2.0.0 OK\r\n");
    assert_reply(conn_say(c, "noop anything\n"), "250 2.0.0 OK\r\n");
    assert_reply(conn_say(c, "RSET\r\n"), "250 2.0.0 OK\r\n");
    assert_reply(conn_say(c, "HELP\r\n"),
                 "214 2.0.0 Commands: EHLO HELO NOOP RSET HELP QUIT STARTTLS\r\n");
    assert_reply(conn_say(c, "BOGUS\r\n"), "500 5.5.1 Command not recognized\r\n");
    assert_reply(conn_say(c, "LHLO x\r\n"),
                 "500 5.5.1 Command not recognized: this is SMTP, use EHLO\r\n");
    assert_reply(conn_say(c, "\r\n"), "500 5.5.1 Command not recognized\r\n");
    conn_free(c);
}

static void quit_closes_and_ignores_the_rest(void **state)
{
    struct gh_conn *c = conn_open(&gh_proto_smtp, false);
    free(conn_out(c));
    assert_reply(conn_say(c, "QUIT\r\nNOOP\r\n"), "221 2.0.0 localhost closing connection\r\n");
    assert_int_equal(c->phase, GH_PHASE_CLOSING);
    assert_reply(conn_say(c, "NOOP\r\n"), "");
    conn_free(c);
}

static void transaction_needs_a_destination(void **state)
{
    struct gh_conn *c = conn_open(&gh_proto_smtp, false);
    free(conn_out(c));
    assert_reply(conn_say(c, "MAIL FROM:<a@example.org>\r\n"), "503 5.5.1 Send EHLO first\r\n");
    free(conn_say(c, "EHLO client.example\r\n"));
    const char *cmds[] = {"MAIL FROM:<a@example.org>\r\n", "RCPT TO:<b@example.org>\r\n",
                          "DATA\r\n", "AUTH PLAIN AGJvYgBwdw==\r\n", "VRFY bob\r\n"};
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++)
        assert_reply(conn_say(c, cmds[i]),
                     "451 4.3.0 Service temporarily unavailable, try again later\r\n");
    conn_free(c);
}

static void starttls_upgrade_and_reset(void **state)
{
    struct gh_conn *c = conn_open(&gh_proto_smtp, true);
    free(conn_out(c));
    free(conn_say(c, "EHLO client.example\r\n"));
    assert_reply(conn_say(c, "STARTTLS\r\n"), "220 2.0.0 Ready to start TLS\r\n");
    assert_int_equal(c->phase, GH_PHASE_HANDSHAKE);
    assert_reply(conn_tls_done(c), "");
    /* RFC 3207 §4.2: the session is reset, EHLO is needed again and lists no STARTTLS. */
    assert_reply(conn_say(c, "MAIL FROM:<a@example.org>\r\n"), "503 5.5.1 Send EHLO first\r\n");
    assert_reply(conn_say(c, "EHLO client.example\r\n"), EHLO_PLAIN);
    assert_reply(conn_say(c, "STARTTLS\r\n"), "503 5.5.1 TLS already active\r\n");
    conn_free(c);
}

static void starttls_injection_is_discarded(void **state)
{
    struct gh_conn *c = conn_open(&gh_proto_smtp, true);
    free(conn_out(c));
    assert_reply(conn_say(c, "EHLO x\r\nSTARTTLS\r\nNOOP\r\nMAIL FROM:<a@b>\r\n"),
                 "250-localhost Hello x [192.0.2.7]\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                 "250-ENHANCEDSTATUSCODES\r\n250-SIZE\r\n250 STARTTLS\r\n"
                 "220 2.0.0 Ready to start TLS\r\n");
    assert_int_equal(gh_buf_len(&c->in), 0);
    assert_reply(conn_tls_done(c), "");
    assert_reply(conn_say(c, "NOOP\r\n"), "250 2.0.0 OK\r\n");
    conn_free(c);
}

static void starttls_refused(void **state)
{
    struct gh_conn *c = conn_open(&gh_proto_smtp, false);
    free(conn_out(c));
    assert_reply(conn_say(c, "STARTTLS\r\n"), "502 5.7.0 TLS not available\r\n");
    assert_int_equal(c->phase, GH_PHASE_PROTOCOL);
    conn_free(c);

    c = conn_open(&gh_proto_smtp, true);
    free(conn_out(c));
    assert_reply(conn_say(c, "STARTTLS now\r\n"),
                 "501 5.5.4 Syntax error (no parameters allowed)\r\n");
    assert_int_equal(c->phase, GH_PHASE_PROTOCOL);
    conn_free(c);

    /* Implicit TLS: the connection is already encrypted. */
    c = conn_open(&gh_proto_smtp, true);
    c->conf->tls_implicit = true;
    c->tls_active = true;
    free(conn_out(c));
    assert_reply(conn_say(c, "STARTTLS\r\n"), "503 5.5.1 TLS already active\r\n");
    conn_free(c);
}

static void long_lines(void **state)
{
    struct gh_conn *c = conn_open(&gh_proto_smtp, false);
    free(conn_out(c));
    char big[5001];
    memset(big, 'A', 5000);
    big[5000] = '\0';
    /* One report per over-long line, even when it arrives in several reads. */
    assert_reply(conn_say(c, big), "500 5.5.2 Line too long\r\n");
    assert_reply(conn_say(c, big), "");
    assert_reply(conn_say(c, "\r\nNOOP\r\n"), "250 2.0.0 OK\r\n");
    /* A line of exactly the limit is accepted; one byte more is not. */
    char edge[4200];
    memset(edge, 'B', sizeof edge);
    memcpy(edge, "NOOP ", 5);
    memcpy(edge + 4096, "\r\n", 3);
    assert_reply(conn_say(c, edge), "250 2.0.0 OK\r\n");
    memcpy(edge + 4096, "B\r\n", 4);
    assert_reply(conn_say(c, edge), "500 5.5.2 Line too long\r\n");
    conn_free(c);
}

static void too_many_errors(void **state)
{
    struct gh_conn *c = conn_open(&gh_proto_smtp, false);
    free(conn_out(c));
    for (int i = 0; i < 19; i++)
        assert_reply(conn_say(c, "X\r\n"), "500 5.5.1 Command not recognized\r\n");
    assert_reply(conn_say(c, "X\r\nNOOP\r\n"),
                 "500 5.5.1 Command not recognized\r\n"
                 "421 4.7.0 localhost Too many errors, closing connection\r\n");
    assert_int_equal(c->phase, GH_PHASE_CLOSING);
    conn_free(c);
}

static void replies_do_not_pile_up(void **state)
{
    struct gh_conn *c = conn_open(&gh_proto_smtp, false);
    free(conn_out(c));
    /* 20000 pipelined NOOPs from a client that reads nothing. */
    size_t n = 20000;
    for (size_t i = 0; i < n; i++)
        gh_buf_append(&c->in, "NOOP\r\n", 6);
    c->proto->input(c);
    size_t out = gh_buf_len(&c->out);
    assert_true(out >= GH_LINE_OUT_MAX && out < GH_LINE_OUT_MAX + 64);
    assert_true(gh_buf_len(&c->in) > 0);
    /* Once the client has read its replies, the rest is answered. */
    size_t answered = out / 14;
    while (gh_buf_len(&c->in)) {
        gh_buf_clear(&c->out);
        c->proto->input(c);
        answered += gh_buf_len(&c->out) / 14;
    }
    assert_int_equal(answered, n);
    conn_free(c);
}

static void goodbyes(void **state)
{
    assert_string_equal(gh_proto_smtp.over_limit, "421 4.3.2 Too many connections\r\n");
    assert_string_equal(gh_proto_lmtp.over_limit, "421 4.3.2 Too many connections\r\n");

    struct gh_conn *c = conn_open(&gh_proto_smtp, false);
    free(conn_out(c));
    c->proto->idle(c);
    assert_reply(conn_out(c), "421 4.4.2 localhost Error: timeout exceeded\r\n");
    assert_int_equal(c->phase, GH_PHASE_CLOSING);
    conn_free(c);

    c = conn_open(&gh_proto_lmtp, false);
    free(conn_out(c));
    c->proto->shutdown(c);
    assert_reply(conn_out(c), "421 4.3.0 localhost shutting down\r\n");
    assert_int_equal(c->phase, GH_PHASE_CLOSING);
    assert_reply(conn_say(c, "NOOP\r\n"), "");
    conn_free(c);
}

static void lmtp_uses_lhlo(void **state)
{
    struct gh_conn *c = conn_open(&gh_proto_lmtp, true);
    free(conn_out(c));
    assert_reply(conn_say(c, "EHLO x\r\n"),
                 "500 5.5.1 Command not recognized: this is LMTP, use LHLO\r\n");
    assert_reply(conn_say(c, "HELO x\r\n"),
                 "500 5.5.1 Command not recognized: this is LMTP, use LHLO\r\n");
    assert_reply(conn_say(c, "MAIL FROM:<a@b>\r\n"), "503 5.5.1 Send LHLO first\r\n");
    assert_reply(conn_say(c, "LHLO\r\n"), "501 5.5.4 Syntax: LHLO hostname\r\n");
    assert_reply(conn_say(c, "LHLO client.example\r\n"), EHLO_TLS);
    assert_reply(conn_say(c, "MAIL FROM:<a@b>\r\n"),
                 "451 4.3.0 Service temporarily unavailable, try again later\r\n");
    assert_reply(conn_say(c, "HELP\r\n"),
                 "214 2.0.0 Commands: LHLO NOOP RSET HELP QUIT STARTTLS\r\n");
    assert_reply(conn_say(c, "STARTTLS\r\nLHLO x\r\n"), "220 2.0.0 Ready to start TLS\r\n");
    assert_reply(conn_tls_done(c), "");
    assert_reply(conn_say(c, "LHLO client.example\r\n"), EHLO_PLAIN);
    conn_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(greeting),
        cmocka_unit_test(ehlo_lists_starttls_only_when_available),
        cmocka_unit_test(helo_and_bad_names),
        cmocka_unit_test(simple_commands),
        cmocka_unit_test(quit_closes_and_ignores_the_rest),
        cmocka_unit_test(transaction_needs_a_destination),
        cmocka_unit_test(starttls_upgrade_and_reset),
        cmocka_unit_test(starttls_injection_is_discarded),
        cmocka_unit_test(starttls_refused),
        cmocka_unit_test(long_lines),
        cmocka_unit_test(too_many_errors),
        cmocka_unit_test(replies_do_not_pile_up),
        cmocka_unit_test(goodbyes),
        cmocka_unit_test(lmtp_uses_lhlo),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

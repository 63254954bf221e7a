/*
 * Unit tests for the auth_http request and answer: the request's header lines byte for
 * byte as nginx's mail module writes them (order, percent-encoding, optional headers),
 * and the answer's verdicts, limits and refusals of anything that could forge a reply.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "auth/auth_http.h"

static char *headers_of(const struct gh_auth_request *r)
{
    struct gh_buf b = {0};
    assert_true(gh_auth_request_headers(r, &b));
    assert_true(gh_buf_append(&b, "", 1));
    char *s = strdup(gh_buf_head(&b));
    gh_buf_free(&b);
    return s;
}

static void escape_matches_nginx(void **state)
{
    struct gh_buf b = {0};
    const char in[] = "a b%c\x01\x1f\x7f\xc3\xa9+=:\"'";
    assert_true(gh_auth_escape(in, sizeof in - 1, &b));
    assert_int_equal(gh_buf_len(&b), strlen("a%20b%25c%01%1F\x7f\xc3\xa9+=:\"'"));
    assert_memory_equal(gh_buf_head(&b), "a%20b%25c%01%1F\x7f\xc3\xa9+=:\"'", gh_buf_len(&b));
    gh_buf_clear(&b);
    assert_true(gh_auth_escape("x\0y", 3, &b)); /* a NUL is encoded, never cuts the value */
    assert_memory_equal(gh_buf_head(&b), "x%00y", 5);
    gh_buf_free(&b);
}

static void plain_login_request(void **state)
{
    struct gh_auth_request r = {.user = "jo doe",
                                .user_len = 6,
                                .pass = "p%ss\r\nX: y",
                                .pass_len = 10,
                                .protocol = "imap",
                                .attempt = 2,
                                .client_ip = "192.0.2.7"};
    char *h = headers_of(&r);
    assert_string_equal(h, "Auth-Method: plain\r\n"
                           "Auth-User: jo%20doe\r\n"
                           "Auth-Pass: p%25ss%0D%0AX:%20y\r\n"
                           "Auth-Protocol: imap\r\n"
                           "Auth-Login-Attempt: 2\r\n"
                           "Client-IP: 192.0.2.7\r\n");
    free(h);
}

static void smtp_none_with_tls(void **state)
{
    struct gh_auth_request r = {.method_none = true,
                                .user = "ignored",
                                .user_len = 7,
                                .protocol = "smtp",
                                .attempt = 1,
                                .client_ip = "2001:db8::1",
                                .client_host = "[UNAVAILABLE]",
                                .ssl = true,
                                .ssl_protocol = "TLSv1.3",
                                .ssl_cipher = "TLS_AES_256_GCM_SHA384",
                                .smtp_helo = "mx.example\r\nEvil: 1",
                                .smtp_from = "MAIL FROM:<a@b>",
                                .smtp_to = "RCPT TO:<c@d>"};
    char *h = headers_of(&r);
    assert_string_equal(h, "Auth-Method: none\r\n"
                           "Auth-User: \r\n"
                           "Auth-Pass: \r\n"
                           "Auth-Protocol: smtp\r\n"
                           "Auth-Login-Attempt: 1\r\n"
                           "Client-IP: 2001:db8::1\r\n"
                           "Client-Host: [UNAVAILABLE]\r\n"
                           "Auth-SMTP-Helo: mx.exampleEvil: 1\r\n"
                           "Auth-SMTP-From: MAIL FROM:<a@b>\r\n"
                           "Auth-SMTP-To: RCPT TO:<c@d>\r\n"
                           "Auth-SSL: on\r\n"
                           "Auth-SSL-Protocol: TLSv1.3\r\n"
                           "Auth-SSL-Cipher: TLS_AES_256_GCM_SHA384\r\n");
    free(h);
}

static enum gh_auth_verdict parse(struct gh_auth_answer *a, const char *text, bool need_pass,
                                  gh_err *err)
{
    gh_auth_answer_init(a);
    memset(err, 0, sizeof *err);
    return gh_auth_answer_parse(a, text, strlen(text), need_pass, err);
}

static void ok_answer(void **state)
{
    struct gh_auth_answer a;
    gh_err err;
    assert_int_equal(parse(&a,
                           "HTTP/1.0 200 OK\r\nauth-status: OK\r\nAuth-Server:  10.0.0.5 \r\n"
                           "Auth-Port: 143\r\nAuth-User: real@example\r\nAuth-Pass: s e\r\n"
                           "X-Other: whatever\r\n\r\nAuth-Port: 1\r\n",
                           true, &err),
                     GH_AUTH_OK);
    assert_string_equal(a.server, "10.0.0.5");
    assert_int_equal(a.port, 143);
    assert_string_equal(a.user, "real@example");
    assert_string_equal(a.pass, "s e");
    gh_auth_answer_wipe(&a);
    assert_int_equal(a.pass[0], 0);
    /* IPv6, bracketed or not; SMTP needs no password */
    assert_int_equal(parse(&a,
                           "HTTP/1.1 200 OK\nAuth-Status: OK\nAuth-Server: [::1]\n"
                           "Auth-Port: 25\n",
                           false, &err),
                     GH_AUTH_OK);
    assert_string_equal(a.server, "::1");
}

static void ok_needs_a_usable_backend(void **state)
{
    struct gh_auth_answer a;
    gh_err err;
    const char *bad[] = {
        "HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Port: 143\r\nAuth-Pass: x\r\n",
        "HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 10.0.0.5\r\nAuth-Pass: x\r\n",
        "HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: mail.example\r\nAuth-Port: 143\r\n"
        "Auth-Pass: x\r\n",
        "HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 10.0.0.5\r\nAuth-Port: 65536\r\n"
        "Auth-Pass: x\r\n",
        "HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 10.0.0.5\r\nAuth-Port: 0\r\n"
        "Auth-Pass: x\r\n",
        "HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 10.0.0.5\r\nAuth-Port: 143\r\n",
        "HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 10.0.0.5\r\nAuth-Port: 143\r\n"
        "Auth-Pass: a\x01"
        "b\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(parse(&a, bad[i], true, &err), GH_AUTH_TEMPFAIL);
        assert_true(err.msg[0] != 0);
    }
}

static void failures_and_waits(void **state)
{
    struct gh_auth_answer a;
    gh_err err;
    assert_int_equal(parse(&a,
                           "HTTP/1.0 200 OK\r\nAuth-Status: Invalid login or password\r\n"
                           "Auth-Wait: 3\r\nAuth-Error-Code: 535 5.7.8\r\n",
                           true, &err),
                     GH_AUTH_FAILED);
    assert_string_equal(a.message, "Invalid login or password");
    assert_int_equal(a.wait_s, 3);
    assert_string_equal(a.error_code, "535 5.7.8");
    /* a reply code that is not one, or could forge a line, is left out */
    assert_int_equal(parse(&a,
                           "HTTP/1.0 200 OK\r\nAuth-Status: no\r\nAuth-Error-Code: 250 ok\r\n"
                           "Auth-Wait: soon\r\n",
                           true, &err),
                     GH_AUTH_FAILED);
    assert_string_equal(a.error_code, "");
    assert_int_equal(a.wait_s, -1);
    /* a status with a control character is not passed on to anyone */
    assert_int_equal(parse(&a, "HTTP/1.0 200 OK\r\nAuth-Status: no\rmore\r\n", true, &err),
                     GH_AUTH_TEMPFAIL);
    assert_int_equal(
        parse(&a, "HTTP/1.0 200 OK\r\nAuth-Status: WAIT\r\nAuth-Wait: 99999\r\n", true, &err),
        GH_AUTH_WAIT);
    assert_int_equal(a.wait_s, GH_AUTH_WAIT_MAX);
    assert_int_equal(parse(&a, "HTTP/1.0 200 OK\r\nAuth-Status: WAIT\r\n", true, &err),
                     GH_AUTH_WAIT);
    assert_int_equal(a.wait_s, 1);
    /* a long message is cut, not refused */
    char big[600] = "HTTP/1.0 200 OK\r\nAuth-Status: ";
    memset(big + strlen(big), 'm', 400);
    assert_int_equal(parse(&a, big, true, &err), GH_AUTH_FAILED);
    assert_int_equal(strlen(a.message), GH_AUTH_MSG_MAX - 1);
}

static void service_problems_are_temporary(void **state)
{
    struct gh_auth_answer a;
    gh_err err;
    assert_int_equal(parse(&a, "HTTP/1.0 500 Oops\r\nAuth-Status: OK\r\n", true, &err),
                     GH_AUTH_TEMPFAIL);
    assert_non_null(strstr(err.msg, "500"));
    assert_int_equal(parse(&a, "HTTP/1.0 200 OK\r\nX: y\r\n", true, &err), GH_AUTH_TEMPFAIL);
    assert_int_equal(parse(&a, "garbage\r\nAuth-Status: OK\r\n", true, &err), GH_AUTH_TEMPFAIL);
    assert_int_equal(parse(&a, "", true, &err), GH_AUTH_TEMPFAIL);
    char big[1200] = "HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 1.2.3.4\r\n"
                     "Auth-Port: 1\r\nAuth-Pass: ";
    memset(big + strlen(big), 'p', GH_AUTH_USER_MAX);
    assert_int_equal(parse(&a, big, true, &err), GH_AUTH_TEMPFAIL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(escape_matches_nginx),
        cmocka_unit_test(plain_login_request),
        cmocka_unit_test(smtp_none_with_tls),
        cmocka_unit_test(ok_answer),
        cmocka_unit_test(ok_needs_a_usable_backend),
        cmocka_unit_test(failures_and_waits),
        cmocka_unit_test(service_problems_are_temporary),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

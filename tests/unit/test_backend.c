/*
 * Unit tests for what the hand-off and the health checks read from a backend: where a
 * reply ends (multi-line SMTP, ManageSieve blocks, one line otherwise) and whether it is
 * positive; the smooth weighted round-robin; TLS client contexts and their trust anchors.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include <openssl/ssl.h>

#include "net/backend.h"

static size_t len_of(enum gh_protocol p, const char *s)
{
    return gh_backend_reply_length(p, s, strlen(s));
}

static void smtp_reply_ends_at_the_line_without_a_hyphen(void **state)
{
    assert_int_equal(len_of(GH_PROTO_SMTP, "220 ready\r\n"), 11);
    assert_int_equal(len_of(GH_PROTO_SMTP, "250-a\r\n250-b\r\n"), 0);
    assert_int_equal(len_of(GH_PROTO_SMTP, "250-a\r\n250 b\r\nextra"), 14);
    assert_int_equal(len_of(GH_PROTO_LMTP, "250-a\r\n250 b\r\n"), 14);
    assert_int_equal(len_of(GH_PROTO_SMTP, "220 no end"), 0);
    assert_int_equal(len_of(GH_PROTO_SMTP, "22\n"), 3); /* too short to continue */
}

static void one_line_for_imap_and_pop3(void **state)
{
    assert_int_equal(len_of(GH_PROTO_IMAP, "* OK ready\r\n* more\r\n"), 12);
    assert_int_equal(len_of(GH_PROTO_POP3, "+OK hi\r\n"), 8);
    assert_int_equal(len_of(GH_PROTO_POP3, "+OK hi"), 0);
}

static void sieve_block_ends_with_ok_no_or_bye(void **state)
{
    const char *caps = "\"IMPLEMENTATION\" \"x\"\r\n\"SASL\" \"PLAIN\"\r\nOK \"ready\"\r\n";
    assert_int_equal(len_of(GH_PROTO_MANAGESIEVE, caps), strlen(caps));
    assert_int_equal(len_of(GH_PROTO_MANAGESIEVE, "\"SASL\" \"PLAIN\"\r\n"), 0);
    assert_int_equal(len_of(GH_PROTO_MANAGESIEVE, "NO \"busy\"\r\n"), 11);
    assert_int_equal(len_of(GH_PROTO_MANAGESIEVE, "BYE \"bye\"\r\n"), 11);
}

static void positive_replies(void **state)
{
    assert_true(gh_backend_reply_positive(GH_PROTO_SMTP, "220 ready\r\n"));
    assert_false(gh_backend_reply_positive(GH_PROTO_SMTP, "421 busy\r\n"));
    assert_false(gh_backend_reply_positive(GH_PROTO_LMTP, "554 no\r\n"));
    assert_true(gh_backend_reply_positive(GH_PROTO_IMAP, "* OK ready\r\n"));
    assert_true(gh_backend_reply_positive(GH_PROTO_IMAP, "* PREAUTH hi\r\n"));
    assert_false(gh_backend_reply_positive(GH_PROTO_IMAP, "* BYE busy\r\n"));
    assert_true(gh_backend_reply_positive(GH_PROTO_POP3, "+OK\r\n"));
    assert_false(gh_backend_reply_positive(GH_PROTO_POP3, "-ERR [SYS/TEMP]\r\n"));
    assert_true(gh_backend_reply_positive(GH_PROTO_MANAGESIEVE, "\"SASL\" \"\"\r\nOK\r\n"));
    assert_false(gh_backend_reply_positive(GH_PROTO_MANAGESIEVE, "\"SASL\" \"\"\r\nNO\r\n"));
    assert_false(gh_backend_reply_positive(GH_PROTO_MANAGESIEVE, "BYE \"x\"\r\n"));
}

/* nginx's example: weights 5, 1, 1 give a a b a c a a. */
static void swrr_interleaves_by_weight(void **state)
{
    int64_t cur[3] = {0};
    const uint32_t w[3] = {5, 1, 1};
    const int want[7] = {0, 0, 1, 0, 2, 0, 0};
    for (int i = 0; i < 7; i++)
        assert_int_equal(gh_swrr_pick(cur, w, 3), want[i]);
    for (int k = 0; k < 3; k++)
        assert_int_equal(cur[k], 0); /* a whole cycle leaves the state as it began */
}

static void swrr_shares_exactly_over_cycles_and_skips_zero(void **state)
{
    int64_t cur[4] = {0};
    const uint32_t w[4] = {1, 0, 2, 3};
    unsigned count[4] = {0};
    for (int i = 0; i < 6000; i++)
        count[gh_swrr_pick(cur, w, 4)]++;
    assert_int_equal(count[0], 1000);
    assert_int_equal(count[1], 0);
    assert_int_equal(count[2], 2000);
    assert_int_equal(count[3], 3000);
    const uint32_t none[2] = {0, 0};
    assert_int_equal(gh_swrr_pick(cur, none, 2), -1);
}

static void tls_ctx_needs_a_usable_anchor(void **state)
{
    gh_err err = {0};
    assert_null(gh_backend_tls_ctx(true, "", &err));
    assert_non_null(strstr(err.msg, "trust anchor"));
    assert_null(gh_backend_tls_ctx(true, "-----BEGIN CERTIFICATE-----\nnope\n", &err));
    SSL_CTX *ctx = gh_backend_tls_ctx(false, NULL, &err);
    assert_non_null(ctx);
    SSL_CTX_free(ctx);
    ctx = gh_backend_tls_ctx(true, NULL, &err); /* the system store */
    assert_non_null(ctx);
    SSL_CTX_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(smtp_reply_ends_at_the_line_without_a_hyphen),
        cmocka_unit_test(one_line_for_imap_and_pop3),
        cmocka_unit_test(sieve_block_ends_with_ok_no_or_bye),
        cmocka_unit_test(positive_replies),
        cmocka_unit_test(swrr_interleaves_by_weight),
        cmocka_unit_test(swrr_shares_exactly_over_cycles_and_skips_zero),
        cmocka_unit_test(tls_ctx_needs_a_usable_anchor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

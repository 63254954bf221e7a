/*
 * Unit tests for the SASL helpers of front-door logins: strict base64 and the PLAIN
 * message (authzid NUL authcid NUL password), with every malformed form refused.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "proto/frontauth.h"

static void base64_strict(void **state)
{
    char out[64];
    size_t n;
    assert_true(gh_base64_decode("aGVsbG8=", 8, out, sizeof out, &n));
    assert_int_equal(n, 5);
    assert_memory_equal(out, "hello", 5);
    assert_true(gh_base64_decode("aGk=", 4, out, sizeof out, &n) && n == 2);
    assert_true(gh_base64_decode("aA==", 4, out, sizeof out, &n) && n == 1);
    assert_true(gh_base64_decode("", 0, out, sizeof out, &n) && n == 0);
    assert_false(gh_base64_decode("aGVsbG8", 7, out, sizeof out, &n));  /* no padding */
    assert_false(gh_base64_decode("aG=sbG8=", 8, out, sizeof out, &n)); /* '=' inside */
    assert_false(gh_base64_decode("a===", 4, out, sizeof out, &n));
    assert_false(gh_base64_decode("aGVs bG8", 8, out, sizeof out, &n));
    assert_false(gh_base64_decode("aGVsbG8=", 8, out, 4, &n)); /* does not fit */
}

static bool plain(const char *b64, char *user, char *pass)
{
    size_t ul, pl;
    return gh_sasl_plain(b64, strlen(b64), user, &ul, pass, &pl);
}

static void sasl_plain(void **state)
{
    char user[GH_FRONT_USER_MAX + 1], pass[GH_FRONT_PASS_MAX + 1];
    assert_true(plain("AGpvAHB3", user, pass)); /* \0jo\0pw */
    assert_string_equal(user, "jo");
    assert_string_equal(pass, "pw");
    assert_true(plain("YWRtaW4Aam8AcHc=", user, pass)); /* admin\0jo\0pw: authzid ignored */
    assert_string_equal(user, "jo");
    assert_false(plain("am8AcHc=", user, pass));     /* jo\0pw: one NUL */
    assert_false(plain("AGpvAHB3AHg=", user, pass)); /* \0jo\0pw\0x: three */
    assert_false(plain("AABwdw==", user, pass));     /* empty user */
    assert_false(plain("AGpvAA==", user, pass));     /* empty password */
    assert_false(plain("!!!!", user, pass));
    /* a user name over the limit */
    char raw[600] = {0}, b64[900];
    memset(raw + 1, 'u', GH_FRONT_USER_MAX + 1);
    raw[GH_FRONT_USER_MAX + 2] = 0;
    raw[GH_FRONT_USER_MAX + 3] = 'p';
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t len = GH_FRONT_USER_MAX + 4, k = 0;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned char)raw[i] << 16 |
                     (i + 1 < len ? (unsigned char)raw[i + 1] : 0) << 8 |
                     (i + 2 < len ? (unsigned char)raw[i + 2] : 0);
        b64[k++] = tbl[v >> 18];
        b64[k++] = tbl[v >> 12 & 63];
        b64[k++] = i + 1 < len ? tbl[v >> 6 & 63] : '=';
        b64[k++] = i + 2 < len ? tbl[v & 63] : '=';
    }
    b64[k] = 0;
    assert_false(plain(b64, user, pass));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(base64_strict),
        cmocka_unit_test(sasl_plain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

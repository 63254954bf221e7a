/*
 * fuzz_auth_http: libFuzzer target for the auth_http answer parser and the request
 * writer. Beyond memory safety: whatever a service sends, a value the front door would
 * copy into a client reply or use as a backend never holds a line break, and a request
 * built from any user name and password is exactly one header per line; a client's SASL
 * PLAIN message that is accepted yields a user and a password within their limits.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth_http.h"
#include "proto/frontauth.h"

static void check(int ok)
{
    if (!ok)
        abort();
}

static void no_line_break(const char *s)
{
    check(strchr(s, '\r') == NULL && strchr(s, '\n') == NULL);
}

static void answer(const uint8_t *data, size_t size)
{
    char *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    struct gh_auth_answer a;
    gh_auth_answer_init(&a);
    gh_err err = {0};
    enum gh_auth_verdict v = gh_auth_answer_parse(&a, copy, size, size & 1, &err);
    check(v == GH_AUTH_TEMPFAIL ? err.msg[0] != 0 : true);
    no_line_break(a.message);
    no_line_break(a.error_code);
    no_line_break(a.user);
    no_line_break(a.pass);
    if (v == GH_AUTH_OK)
        check(a.server[0] && a.port >= 1 && a.port <= 65535);
    if (v == GH_AUTH_WAIT)
        check(a.wait_s >= 1 && a.wait_s <= GH_AUTH_WAIT_MAX);
    gh_auth_answer_wipe(&a);
    free(copy);
}

static void request(const uint8_t *data, size_t size)
{
    size_t half = size / 2;
    struct gh_auth_request r = {.user = (const char *)data,
                                .user_len = half,
                                .pass = (const char *)data + half,
                                .pass_len = size - half,
                                .protocol = "imap",
                                .attempt = 1,
                                .client_ip = "127.0.0.1"};
    struct gh_buf b = {0};
    check(gh_auth_request_headers(&r, &b));
    size_t lines = 0;
    for (size_t i = 0; i < gh_buf_len(&b); i++) {
        char ch = gh_buf_head(&b)[i];
        check(ch != 0 && (ch != '\r' || gh_buf_head(&b)[i + 1] == '\n'));
        lines += ch == '\n';
    }
    check(lines == 6);
    gh_buf_free(&b);
}

/* SASL PLAIN from a client: what passes has a user and a password within their limits and
 * without a NUL. */
static void sasl_plain(const uint8_t *data, size_t size)
{
    char *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    char user[GH_FRONT_USER_MAX + 1], pass[GH_FRONT_PASS_MAX + 1];
    size_t ul, pl;
    if (gh_sasl_plain(copy, size, user, &ul, pass, &pl))
        check(ul >= 1 && ul <= GH_FRONT_USER_MAX && pl >= 1 && pl <= GH_FRONT_PASS_MAX &&
              strlen(user) == ul && strlen(pass) == pl);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    answer(data, size);
    request(data, size);
    sasl_plain(data, size);
    return 0;
}

/*
 * test_http: the HTTP front door fed bytes on a connection without a socket (c->worker is
 * NULL, so whatever it writes lands in c->out): routing, limits, pipelining, credentials,
 * cookie sign-in with its CSRF rule, session URLs and EventSource streams.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jmap/auth.h"
#include "jmap/http_api.h"
#include "jmap/jmap.h"
#include "net/conn.h"
#include "objects/objects.h"
#include "proto/http.h"
#include "proto/proto.h"

static bool fake_auth(const char *user, const char *secret, struct gh_principal *who)
{
    memset(who, 0, sizeof *who);
    if (!strcmp(secret, "good") && (!user || !strcmp(user, "admin"))) {
        snprintf(who->username, sizeof who->username, "admin");
        who->admin = true;
        return true;
    }
    if (!strcmp(secret, "reader")) {
        snprintf(who->username, sizeof who->username, "reader");
        who->permissions = json_pack("[s]", "sysCertificateGet");
        return true;
    }
    return false;
}

struct conn_box {
    struct gh_conn c;
};

static struct gh_conn *conn_new(const char *peer)
{
    struct gh_conn *c = calloc(1, sizeof *c);
    c->proto = &gh_proto_http;
    c->phase = GH_PHASE_PROTOCOL;
    snprintf(c->peer_text, sizeof c->peer_text, "%s", peer ? peer : "127.0.0.1");
    gh_proto_http.open(c);
    return c;
}

static void conn_free(struct gh_conn *c)
{
    gh_proto_http.release(c);
    gh_buf_free(&c->in);
    gh_buf_free(&c->out);
    free(c);
}

static void feed(struct gh_conn *c, const char *data, size_t len)
{
    gh_buf_append(&c->in, data, len);
    gh_proto_http.input(c);
}

static void feeds(struct gh_conn *c, const char *s)
{
    feed(c, s, strlen(s));
}

static bool closing(struct gh_conn *c)
{
    return c->closed || c->phase == GH_PHASE_CLOSING;
}

/* One parsed response taken from the front of c->out. */
struct resp {
    int status;
    char head[8192];
    char *body; /* NUL-terminated copy */
    size_t len;
};

static bool take(struct gh_conn *c, struct resp *r)
{
    memset(r, 0, sizeof *r);
    const char *out = gh_buf_head(&c->out);
    size_t n = gh_buf_len(&c->out);
    const char *end = memmem(out, n, "\r\n\r\n", 4);
    if (!end)
        return false;
    size_t hl = (size_t)(end - out) + 4;
    assert_true(hl < sizeof r->head);
    memcpy(r->head, out, hl);
    r->head[hl] = '\0';
    assert_int_equal(sscanf(r->head, "HTTP/1.1 %d", &r->status), 1);
    const char *cl = strcasestr(r->head, "\r\nContent-Length: ");
    size_t len = cl ? strtoul(cl + 18, NULL, 10) : n - hl;
    assert_true(hl + len <= n);
    r->body = malloc(len + 1);
    memcpy(r->body, out + hl, len);
    r->body[len] = '\0';
    r->len = len;
    gh_buf_consume(&c->out, hl + len);
    return true;
}

static void resp_free(struct resp *r)
{
    free(r->body);
    r->body = NULL;
}

static const char *header(struct resp *r, const char *name, char *out, size_t cap)
{
    char key[128];
    snprintf(key, sizeof key, "\r\n%s: ", name);
    const char *p = strcasestr(r->head, key);
    if (!p)
        return NULL;
    p += strlen(key);
    size_t n = strcspn(p, "\r");
    snprintf(out, cap, "%.*s", (int)n, p);
    return out;
}

/* Sends one request on a fresh connection and returns its response. */
static void exchange(const char *request, struct resp *r)
{
    struct gh_conn *c = conn_new(NULL);
    feeds(c, request);
    assert_true(take(c, r));
    conn_free(c);
}

static const char *ECHO = "{\"using\":[\"urn:ietf:params:jmap:core\"],"
                          "\"methodCalls\":[[\"Core/echo\",{\"k\":42},\"c\"]]}";

static char *post_api(const char *auth_header, const char *content_type, const char *body)
{
    static char buf[4096];
    snprintf(buf, sizeof buf,
             "POST /api HTTP/1.1\r\nHost: localhost\r\n%s%s%s%sContent-Length: %zu\r\n\r\n%s",
             auth_header ? auth_header : "", auth_header ? "\r\n" : "",
             content_type ? content_type : "", content_type ? "\r\n" : "", strlen(body), body);
    return buf;
}

static int setup(void **state)
{
    gh_api_init(&(struct gh_api_hooks){
        .authenticate = fake_auth,
        .schema = gh_objects_schema,
        .status = gh_objects_listener_status,
    });
    gh_http_set_handler(&gh_api_http);
    return 0;
}

static void test_methods_and_unknown(void **state)
{
    struct resp r;
    char v[256];
    exchange("GET /api HTTP/1.1\r\nHost: x\r\n\r\n", &r);
    assert_int_equal(r.status, 405);
    assert_non_null(header(&r, "Allow", v, sizeof v));
    assert_non_null(strstr(v, "POST"));
    resp_free(&r);
    exchange("OPTIONS /api HTTP/1.1\r\nHost: x\r\n\r\n", &r);
    assert_int_equal(r.status, 204);
    assert_null(header(&r, "Access-Control-Allow-Origin", v, sizeof v));
    resp_free(&r);
    exchange("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", &r);
    assert_int_equal(r.status, 404);
    assert_string_equal(header(&r, "Content-Type", v, sizeof v), "application/problem+json");
    json_t *j = json_loads(r.body, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 404);
    json_decref(j);
    resp_free(&r);
    exchange("GET / HTTP/1.1\r\nHost: x\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(header(&r, "Content-Type", v, sizeof v), "text/html"));
    /* the page has no inline code: only what the daemon serves may run, never in a frame */
    assert_string_equal(header(&r, "Content-Security-Policy", v, sizeof v),
                        "default-src 'self'; frame-ancestors 'none'");
    resp_free(&r);
    exchange("GET /app.js HTTP/1.1\r\nHost: x\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "Content-Security-Policy", v, sizeof v),
                        "default-src 'self'; frame-ancestors 'none'");
    resp_free(&r);
}

static void test_unauthorized_is_uniform(void **state)
{
    struct resp none, wrong, basic;
    exchange(post_api(NULL, "Content-Type: application/json", ECHO), &none);
    exchange(post_api("Authorization: Bearer nope", "Content-Type: application/json", ECHO),
             &wrong);
    exchange(post_api("Authorization: Basic YWRtaW46bm9wZQ==", NULL, ECHO), &basic);
    assert_int_equal(none.status, 401);
    assert_int_equal(wrong.status, 401);
    assert_int_equal(basic.status, 401);
    char v[256];
    assert_string_equal(header(&none, "WWW-Authenticate", v, sizeof v),
                        "Bearer realm=\"gatehouse\", Basic realm=\"gatehouse\"");
    assert_string_equal(none.head, wrong.head);
    assert_string_equal(none.body, wrong.body);
    resp_free(&none);
    resp_free(&wrong);
    resp_free(&basic);
    exchange("GET /jmap/session HTTP/1.1\r\nHost: x\r\n\r\n", &none);
    assert_int_equal(none.status, 401);
    resp_free(&none);
}

static void test_api_with_credentials(void **state)
{
    struct resp r;
    char v[256];
    exchange(post_api("Authorization: Bearer good", "Content-Type: application/json", ECHO), &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "Content-Type", v, sizeof v), "application/json");
    assert_non_null(strstr(r.body, "[\"Core/echo\",{\"k\":42},\"c\"]"));
    resp_free(&r);
    /* Basic admin:good, and a Content-Type with parameters */
    exchange(post_api("Authorization: Basic YWRtaW46Z29vZA==",
                      "Content-Type: application/json; charset=utf-8", ECHO),
             &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    /* wrong Content-Type: notJSON */
    exchange(post_api("Authorization: Bearer good", "Content-Type: text/plain", ECHO), &r);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, GH_JMAP_PROBLEM_NOT_JSON));
    resp_free(&r);
    /* request problems come through with their status */
    exchange(post_api("Authorization: Bearer good", NULL, "{nope"), &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(header(&r, "Content-Type", v, sizeof v), "application/problem+json");
    resp_free(&r);
}

static void test_pipelining_in_order(void **state)
{
    struct gh_conn *c = conn_new(NULL);
    char all[8192];
    snprintf(all, sizeof all, "%s%s%s", "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
             post_api("Authorization: Bearer good", NULL, ECHO),
             "OPTIONS /api HTTP/1.1\r\nHost: x\r\n\r\n");
    /* byte by byte: the parser must cope with every split */
    for (size_t i = 0; all[i]; i++)
        feed(c, all + i, 1);
    struct resp r;
    assert_true(take(c, &r));
    assert_int_equal(r.status, 404);
    resp_free(&r);
    assert_true(take(c, &r));
    assert_int_equal(r.status, 200);
    resp_free(&r);
    assert_true(take(c, &r));
    assert_int_equal(r.status, 204);
    resp_free(&r);
    assert_false(closing(c));
    conn_free(c);

    /* all in one read */
    c = conn_new(NULL);
    feeds(c, all);
    int want[] = {404, 200, 204};
    for (int i = 0; i < 3; i++) {
        assert_true(take(c, &r));
        assert_int_equal(r.status, want[i]);
        resp_free(&r);
    }
    conn_free(c);
}

static void test_keep_alive_rules(void **state)
{
    struct resp r;
    char v[64];
    struct gh_conn *c = conn_new(NULL);
    feeds(c, "GET /nope HTTP/1.0\r\n\r\n");
    assert_true(take(c, &r));
    assert_string_equal(header(&r, "Connection", v, sizeof v), "close");
    assert_true(closing(c));
    resp_free(&r);
    conn_free(c);
    c = conn_new(NULL);
    feeds(c, "GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_true(take(c, &r));
    assert_true(closing(c));
    resp_free(&r);
    conn_free(c);
}

static void test_limits(void **state)
{
    struct resp r;
    struct gh_conn *c = conn_new(NULL);
    /* decided from Content-Length before any of the body arrives */
    feeds(c, "POST /api HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good\r\n"
             "Content-Length: 10000001\r\n\r\n");
    assert_true(take(c, &r));
    assert_int_equal(r.status, 413);
    assert_non_null(strstr(r.body, "\"limit\":\"maxSizeRequest\""));
    char v[32];
    assert_string_equal(header(&r, "Connection", v, sizeof v), "close");
    resp_free(&r);
    /* the connection ends at once (the body is dropped by the connection, not parsed) */
    assert_true(closing(c));
    assert_int_equal(gh_buf_len(&c->out), 0);
    conn_free(c);
    /* with Expect: 100-continue, no 100 Continue: the 413 alone, at once */
    c = conn_new(NULL);
    feeds(c, "POST /api HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
             "Content-Length: 10000001\r\n\r\n");
    assert_true(take(c, &r));
    assert_int_equal(r.status, 413);
    assert_null(strstr(r.head, "100 Continue"));
    assert_true(closing(c));
    resp_free(&r);
    assert_int_equal(gh_buf_len(&c->out), 0);
    conn_free(c);
    /* a chunked body with 100-continue: 411 and no 100 Continue either */
    c = conn_new(NULL);
    feeds(c, "POST /api HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
             "Transfer-Encoding: chunked\r\n\r\n");
    assert_true(take(c, &r));
    assert_int_equal(r.status, 411);
    assert_true(closing(c));
    resp_free(&r);
    conn_free(c);
    /* far over the limit: closed at once */
    c = conn_new(NULL);
    feeds(c, "POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 900000000\r\n\r\n");
    assert_true(take(c, &r));
    assert_int_equal(r.status, 413);
    assert_true(closing(c));
    resp_free(&r);
    conn_free(c);

    exchange("POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0"
             "\r\n\r\n",
             &r);
    assert_int_equal(r.status, 411);
    resp_free(&r);

    c = conn_new(NULL);
    size_t big = 70 * 1024;
    char *huge = malloc(big + 64);
    strcpy(huge, "GET / HTTP/1.1\r\nX-Big: ");
    size_t n = strlen(huge);
    memset(huge + n, 'a', big);
    huge[n + big] = '\0';
    feeds(c, huge);
    assert_true(take(c, &r));
    assert_int_equal(r.status, 431);
    assert_true(closing(c));
    resp_free(&r);
    free(huge);
    conn_free(c);

    c = conn_new(NULL);
    feeds(c, "\x16\x03\x01garbage\r\n\r\n");
    assert_true(take(c, &r));
    assert_int_equal(r.status, 400);
    assert_true(closing(c));
    resp_free(&r);
    conn_free(c);

    exchange("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", &r);
    assert_int_equal(r.status, 400);
    resp_free(&r);
}

/* A GET / whose head is exactly size bytes, made of many small headers. */
static char *head_of_size(size_t size)
{
    char *req = malloc(size + 1);
    size_t n = (size_t)snprintf(req, size + 1, "GET /nope HTTP/1.1\r\nHost: x\r\n");
    while (size - n - 2 > 40) {
        n += (size_t)snprintf(req + n, size + 1 - n, "X-Filler: %026zu\r\n", n); /* 38 bytes */
    }
    size_t pad = size - n - 2 - 5; /* "X: " + value + "\r\n" */
    memcpy(req + n, "X: ", 3);
    memset(req + n + 3, 'v', pad);
    n += 3 + pad;
    memcpy(req + n, "\r\n\r\n", 4);
    n += 4;
    req[n] = '\0';
    assert_int_equal(n, size);
    return req;
}

static int status_of(const char *request, size_t step, bool *closed)
{
    struct gh_conn *c = conn_new(NULL);
    size_t len = strlen(request);
    for (size_t i = 0; i < len; i += step)
        feed(c, request + i, len - i < step ? len - i : step);
    struct resp r;
    int status = take(c, &r) ? r.status : 0;
    if (status)
        resp_free(&r);
    *closed = closing(c);
    conn_free(c);
    return status;
}

static void test_head_limit_is_64k(void **state)
{
    bool closed;
    size_t steps[] = {1 << 20, 4096, 7};
    for (int s = 0; s < 3; s++) {
        char *req = head_of_size(GH_HTTP_HEADER_LIMIT);
        assert_int_equal(status_of(req, steps[s], &closed), 404);
        assert_false(closed);
        free(req);
        req = head_of_size(GH_HTTP_HEADER_LIMIT + 1);
        assert_int_equal(status_of(req, steps[s], &closed), 431);
        assert_true(closed);
        free(req);
    }
    /* 72 KB and 96 KB of small headers: 431, not taken nor a parser error */
    char *req = head_of_size(72 * 1000);
    assert_int_equal(status_of(req, 1 << 20, &closed), 431);
    free(req);
    req = head_of_size(96 * 1024);
    assert_int_equal(status_of(req, 1 << 20, &closed), 431);
    free(req);
}

static void test_header_name_whitespace_and_versions(void **state)
{
    bool closed;
    /* "Content-Length : 56" would leave the body to be read as the next request */
    char req[512];
    snprintf(req, sizeof req,
             "POST /api HTTP/1.1\r\nHost: x\r\nContent-Length : 33\r\n\r\n"
             "GET /jmap/session HTTP/1.1\r\n\r\n");
    assert_int_equal(status_of(req, 1 << 20, &closed), 400);
    assert_true(closed);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost\t: x\r\n\r\n", 1 << 20, &closed), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHo st: x\r\n\r\n", 3, &closed), 400);
    /* HTTP/0.9 (no version) and versions other than 1.x are refused */
    assert_int_equal(status_of("GET /\r\n\r\n", 1 << 20, &closed), 400);
    assert_true(closed);
    assert_int_equal(status_of("GET /\r\n", 1 << 20, &closed), 400); /* at once */
    assert_int_equal(status_of("GET /\n", 1, &closed), 400);
    assert_int_equal(status_of("GET / HTTP/2.0\r\nHost: x\r\n\r\n", 1 << 20, &closed), 400);
    assert_int_equal(status_of("GET / HTTP/0.9\r\nHost: x\r\n\r\n", 1 << 20, &closed), 400);
    /* still fine: HTTP/1.0 and 1.1 */
    assert_int_equal(status_of("GET /nope HTTP/1.0\r\n\r\n", 1 << 20, &closed), 404);
    assert_int_equal(status_of("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 1, &closed), 404);
    assert_false(closed);
}

static void test_expect_continue(void **state)
{
    struct gh_conn *c = conn_new(NULL);
    char head[512];
    snprintf(head, sizeof head,
             "POST /api HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good\r\n"
             "Expect: 100-continue\r\nContent-Length: %zu\r\n\r\n",
             strlen(ECHO));
    feeds(c, head);
    assert_int_equal(gh_buf_len(&c->out), 25);
    assert_memory_equal(gh_buf_head(&c->out), "HTTP/1.1 100 Continue\r\n\r\n", 25);
    gh_buf_consume(&c->out, 25);
    feeds(c, ECHO);
    struct resp r;
    assert_true(take(c, &r));
    assert_int_equal(r.status, 200);
    resp_free(&r);
    conn_free(c);
}

static void test_session_urls(void **state)
{
    struct resp r;
    exchange("GET /jmap/session HTTP/1.1\r\nHost: example.com:8080\r\n"
             "Authorization: Bearer good\r\n\r\n",
             &r);
    assert_int_equal(r.status, 200);
    char v[128];
    assert_non_null(strstr(header(&r, "Cache-Control", v, sizeof v), "no-store"));
    json_t *s = json_loads(r.body, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(s, "apiUrl")),
                        "http://example.com:8080/api");
    json_decref(s);
    resp_free(&r);

    /* a Host that is not host[:port] is never put into URLs */
    struct gh_conn *c = conn_new(NULL);
    gh_err err;
    assert_true(gh_sockaddr_parse("127.0.0.1:9999", &c->local, &err));
    feeds(c, "GET /jmap/session HTTP/1.1\r\nHost: evil.com/x?\r\n"
             "Authorization: Bearer good\r\n\r\n");
    assert_true(take(c, &r));
    s = json_loads(r.body, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(s, "apiUrl")),
                        "http://127.0.0.1:9999/api");
    json_decref(s);
    resp_free(&r);
    conn_free(c);

    exchange("GET /.well-known/jmap HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good\r\n\r\n", &r);
    assert_int_equal(r.status, 307);
    assert_string_equal(header(&r, "Location", v, sizeof v), "/jmap/session");
    resp_free(&r);
    exchange("GET /jmap/download/a/b/c?accept=x HTTP/1.1\r\nHost: x\r\n"
             "Authorization: Bearer good\r\n\r\n",
             &r);
    assert_true(r.status >= 400 && r.status < 500);
    assert_string_equal(header(&r, "Content-Type", v, sizeof v), "application/problem+json");
    resp_free(&r);
}

static void test_cookie_sign_in_and_csrf(void **state)
{
    struct resp r;
    char v[256], cookie[128];
    const char *body = "{\"secret\":\"good\"}";
    char req[1024];
    snprintf(req, sizeof req,
             "POST /auth/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    exchange(req, &r);
    assert_int_equal(r.status, 204);
    assert_non_null(header(&r, "Set-Cookie", v, sizeof v));
    assert_non_null(strstr(v, "HttpOnly"));
    assert_non_null(strstr(v, "SameSite=Strict"));
    assert_non_null(strstr(v, "Path=/"));
    snprintf(cookie, sizeof cookie, "Cookie: other=1; %.*s", (int)strcspn(v, ";"), v);
    resp_free(&r);

    /* cookie alone: refused for the API */
    exchange(post_api(cookie, NULL, ECHO), &r);
    assert_int_equal(r.status, 403);
    resp_free(&r);
    char both[256];
    snprintf(both, sizeof both, "%s\r\nX-Gatehouse-Csrf: 1", cookie);
    exchange(post_api(both, NULL, ECHO), &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    snprintf(req, sizeof req, "GET /api/status HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n", both);
    exchange(req, &r);
    assert_int_equal(r.status, 200);
    json_t *j = json_loads(r.body, 0, NULL);
    assert_true(json_is_object(json_object_get(j, "listeners")));
    json_decref(j);
    resp_free(&r);
    snprintf(req, sizeof req, "GET /api/schema HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n", cookie);
    exchange(req, &r);
    assert_int_equal(r.status, 403);
    resp_free(&r);

    /* sign out: the cookie stops working */
    snprintf(req, sizeof req, "DELETE /auth/session HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n", cookie);
    exchange(req, &r);
    assert_int_equal(r.status, 204);
    resp_free(&r);
    exchange(post_api(both, NULL, ECHO), &r);
    assert_int_equal(r.status, 401);
    resp_free(&r);

    /* a wrong secret */
    body = "{\"secret\":\"bad\"}";
    snprintf(req, sizeof req,
             "POST /auth/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    exchange(req, &r);
    assert_int_equal(r.status, 401);
    assert_null(header(&r, "Set-Cookie", v, sizeof v));
    resp_free(&r);
}

static void test_failures_take_turns(void **state)
{
    unsigned ms = 1;
    assert_int_equal(gh_auth_turn("10.9.9.9", NULL, &ms), GH_AUTH_NOW);
    assert_int_equal(ms, 0);
    for (int i = 0; i < 3; i++) {
        struct gh_conn *c = conn_new("10.9.9.9");
        feeds(c, post_api("Authorization: Bearer wrong", NULL, ECHO));
        struct resp r;
        assert_true(take(c, &r));
        assert_int_equal(r.status, 401);
        resp_free(&r);
        conn_free(c);
    }
    /* each check waits for its own turn: 0.5 s, then 1, 2 and 4 s further apart, however
     * many ask at once; one further than 10 s is refused */
    unsigned expect[] = {500, 1500, 3500, 7500};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(gh_auth_turn("10.9.9.9", NULL, &ms), GH_AUTH_WAIT);
        assert_true(ms <= expect[i] && ms + 200 > expect[i]);
    }
    assert_int_equal(gh_auth_turn("10.9.9.9", NULL, &ms), GH_AUTH_REFUSE);
    assert_true(ms > 10000 && ms <= 11500);
    assert_int_equal(gh_auth_turn("10.9.9.9", NULL, &ms), GH_AUTH_REFUSE); /* not queued */
    assert_true(ms <= 11500);
    /* other addresses are not slowed */
    assert_int_equal(gh_auth_turn("10.9.9.8", NULL, &ms), GH_AUTH_NOW);
}

static void test_failures_per_login_name(void **state)
{
    unsigned ms;
    char client[32];
    for (int i = 0; i < 3; i++) {
        snprintf(client, sizeof client, "10.7.0.%d", i + 1);
        gh_auth_failed(client, "Victim");
    }
    /* a fresh address trying the same name (in any case) waits; other names do not */
    assert_int_equal(gh_auth_turn("10.7.1.1", "vICTIM", &ms), GH_AUTH_WAIT);
    assert_true(ms > 0 && ms <= 500);
    assert_int_equal(gh_auth_turn("10.7.1.1", "someone", &ms), GH_AUTH_NOW);
    assert_int_equal(gh_auth_turn("10.7.1.1", NULL, &ms), GH_AUTH_NOW);
}

static void test_failures_ipv6_per_64(void **state)
{
    unsigned ms;
    gh_auth_failed("2001:db8:5::1", NULL);
    gh_auth_failed("2001:db8:5::2", NULL);
    gh_auth_failed("2001:db8:5:0:ffff::9", NULL);
    assert_int_equal(gh_auth_turn("2001:db8:5::abcd", NULL, &ms), GH_AUTH_WAIT);
    assert_int_equal(gh_auth_turn("2001:db8:5:1::1", NULL, &ms), GH_AUTH_NOW);
    /* IPv4 addresses are counted one by one */
    gh_auth_failed("10.8.0.1", NULL);
    gh_auth_failed("10.8.0.1", NULL);
    gh_auth_failed("10.8.0.1", NULL);
    assert_int_equal(gh_auth_turn("10.8.0.2", NULL, &ms), GH_AUTH_NOW);
}

static void test_failure_table_is_bounded(void **state)
{
    /* a flood of addresses evicts the oldest entries and never grows the table */
    char client[32];
    unsigned ms;
    for (int i = 0; i < 3; i++)
        gh_auth_failed("10.6.6.6", NULL);
    assert_int_equal(gh_auth_turn("10.6.6.6", NULL, &ms), GH_AUTH_WAIT);
    for (int i = 0; i < 20000; i++) {
        snprintf(client, sizeof client, "172.16.%d.%d", i / 250, i % 250);
        gh_auth_failed(client, NULL);
    }
    assert_int_equal(gh_auth_turn("10.6.6.6", NULL, &ms), GH_AUTH_NOW);
}

/* Two workers recording failures for one address at once: a check that read the clock
 * before another worker stamped the entry later must not take the entry for stale and
 * start it over (which would hand out 3 free checks again). */
static void *fail_often(void *key)
{
    for (int i = 0; i < 20000; i++)
        gh_auth_failed(key, NULL);
    return NULL;
}

static void test_concurrent_failures_keep_the_entry(void **state)
{
    unsigned ms;
    for (int i = 0; i < 3; i++)
        gh_auth_failed("10.5.5.5", NULL);
    for (int i = 0; i < 4; i++)
        assert_int_equal(gh_auth_turn("10.5.5.5", NULL, &ms), GH_AUTH_WAIT);
    pthread_t a, b;
    assert_int_equal(pthread_create(&a, NULL, fail_often, "10.5.5.5"), 0);
    assert_int_equal(pthread_create(&b, NULL, fail_often, "10.5.5.5"), 0);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    /* the four turns taken still stand: the next is more than 10 s away */
    assert_int_equal(gh_auth_turn("10.5.5.5", NULL, &ms), GH_AUTH_REFUSE);
}

static json_t *event_data(const char *text, const char *event)
{
    char key[64];
    snprintf(key, sizeof key, "event: %s\n", event);
    const char *p = strstr(text, key);
    if (!p)
        return NULL;
    p = strstr(p, "data: ");
    return p ? json_loadb(p + 6, strcspn(p + 6, "\n"), 0, NULL) : NULL;
}

static void test_event_source(void **state)
{
    struct gh_conn *c = conn_new(NULL);
    feeds(c, "GET /jmap/eventsource/?types=*&closeafter=no&ping=0 HTTP/1.1\r\nHost: x\r\n"
             "Authorization: Bearer good\r\n\r\n");
    gh_buf_append(&c->out, "", 1);
    const char *out = gh_buf_head(&c->out);
    assert_non_null(strstr(out, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(out, "Content-Type: text/event-stream\r\n"));
    assert_null(strstr(out, "Content-Length"));
    gh_buf_consume(&c->out, gh_buf_len(&c->out));

    gh_jmap_state_changed("x:NetworkListener", "T1");
    gh_buf_append(&c->out, "", 1);
    json_t *d = event_data(gh_buf_head(&c->out), "state");
    assert_non_null(d);
    assert_string_equal(json_string_value(json_object_get(d, "@type")), "StateChange");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(json_object_get(d, "changed"), "a"),
                                          "x:NetworkListener")),
        "T1");
    json_decref(d);
    char id[64];
    const char *idp = strstr(gh_buf_head(&c->out), "\nid: ");
    assert_non_null(idp);
    snprintf(id, sizeof id, "%.*s", (int)strcspn(idp + 5, "\n"), idp + 5);
    gh_buf_consume(&c->out, gh_buf_len(&c->out));

    /* only what changed is told */
    gh_jmap_state_changed("x:Certificate", "C1");
    gh_buf_append(&c->out, "", 1);
    d = event_data(gh_buf_head(&c->out), "state");
    json_t *changed = json_object_get(json_object_get(d, "changed"), "a");
    assert_int_equal(json_object_size(changed), 1);
    assert_non_null(json_object_get(changed, "x:Certificate"));
    json_decref(d);
    gh_buf_consume(&c->out, gh_buf_len(&c->out));
    assert_false(closing(c));
    conn_free(c);

    /* types filter, percent-encoded; closeafter=state */
    c = conn_new(NULL);
    feeds(c, "GET /jmap/eventsource/?types=x%3ACertificate&closeafter=state&ping=0 HTTP/1.1\r\n"
             "Host: x\r\nAuthorization: Bearer good\r\n\r\n");
    gh_buf_consume(&c->out, gh_buf_len(&c->out));
    gh_jmap_state_changed("x:NetworkListener", "T2");
    assert_int_equal(gh_buf_len(&c->out), 0);
    gh_jmap_state_changed("x:Certificate", "C2");
    assert_true(gh_buf_len(&c->out) > 0);
    assert_true(closing(c));
    gh_buf_consume(&c->out, gh_buf_len(&c->out));
    gh_jmap_state_changed("x:Certificate", "C3"); /* ended: nothing more is written */
    assert_int_equal(gh_buf_len(&c->out), 0);
    conn_free(c);

    /* permissions: a credential without sysNetworkListenerGet never learns its state */
    c = conn_new(NULL);
    feeds(c, "GET /jmap/eventsource/?types=*&closeafter=no&ping=0 HTTP/1.1\r\n"
             "Host: x\r\nAuthorization: Bearer reader\r\n\r\n");
    gh_buf_consume(&c->out, gh_buf_len(&c->out));
    gh_jmap_state_changed("x:NetworkListener", "T3");
    assert_int_equal(gh_buf_len(&c->out), 0);
    conn_free(c);

    /* Last-Event-ID: a client that missed a change hears of it at once */
    c = conn_new(NULL);
    char req[512];
    snprintf(req, sizeof req,
             "GET /jmap/eventsource/?types=*&closeafter=no&ping=0 HTTP/1.1\r\nHost: x\r\n"
             "Authorization: Bearer good\r\nLast-Event-ID: %s\r\n\r\n",
             id);
    feeds(c, req);
    gh_buf_append(&c->out, "", 1);
    assert_non_null(strstr(gh_buf_head(&c->out), "event: state\n"));
    conn_free(c);

    struct resp r;
    exchange("GET /jmap/eventsource/?types=*&closeafter=maybe&ping=0 HTTP/1.1\r\nHost: x\r\n"
             "Authorization: Bearer good\r\n\r\n",
             &r);
    assert_int_equal(r.status, 400);
    resp_free(&r);
    exchange("GET /jmap/eventsource/?types=*&closeafter=no&ping=-1 HTTP/1.1\r\nHost: x\r\n"
             "Authorization: Bearer good\r\n\r\n",
             &r);
    assert_int_equal(r.status, 400);
    resp_free(&r);
    exchange("GET /jmap/eventsource/?types=*&closeafter=no&ping=0 HTTP/1.1\r\nHost: x\r\n\r\n", &r);
    assert_int_equal(r.status, 401);
    resp_free(&r);
}

static void test_over_limit_response(void **state)
{
    const char *s = gh_proto_http.over_limit;
    assert_non_null(strstr(s, "HTTP/1.1 503 Service Unavailable\r\n"));
    assert_non_null(strstr(s, "\r\nRetry-After: "));
    assert_non_null(strstr(s, "\r\nConnection: close\r\n"));
    const char *body = strstr(s, "\r\n\r\n") + 4;
    const char *cl = strstr(s, "Content-Length: ");
    assert_int_equal(strtoul(cl + 16, NULL, 10), strlen(body));
    json_t *j = json_loads(body, 0, NULL);
    assert_non_null(j);
    json_decref(j);
}

/* No destination could take a handed-off session: a complete answer, then close. */
static void test_unavailable_response(void **state)
{
    assert_string_equal(
        gh_proto_http.unavailable,
        "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_methods_and_unknown),
        cmocka_unit_test(test_unauthorized_is_uniform),
        cmocka_unit_test(test_api_with_credentials),
        cmocka_unit_test(test_pipelining_in_order),
        cmocka_unit_test(test_keep_alive_rules),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_head_limit_is_64k),
        cmocka_unit_test(test_header_name_whitespace_and_versions),
        cmocka_unit_test(test_session_urls),
        cmocka_unit_test(test_cookie_sign_in_and_csrf),
        cmocka_unit_test(test_failures_take_turns),
        cmocka_unit_test(test_failures_per_login_name),
        cmocka_unit_test(test_failures_ipv6_per_64),
        cmocka_unit_test(test_concurrent_failures_keep_the_entry),
        cmocka_unit_test(test_failure_table_is_bounded),
        cmocka_unit_test(test_event_source),
        cmocka_unit_test(test_over_limit_response),
        cmocka_unit_test(test_unavailable_response),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}

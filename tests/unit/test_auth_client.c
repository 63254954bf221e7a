/*
 * Unit tests for the auth service client on a real loop against a tiny HTTP server on
 * loopback: the request on the wire (method, path, nginx's headers and the extra ones),
 * each verdict, a time-out and a refused connection as temporary failures, and many
 * calls in flight against a slow service while a loop timer still fires on time.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "auth/client.h"
#include "core/loop.h"

/* ---- a scripted HTTP service ---- */

struct service {
    int fd;
    unsigned port;
    const char *answer; /* NULL: never answer */
    unsigned delay_ms;
    pthread_mutex_t mu;
    char last[4096];
};

struct session {
    struct service *s;
    int fd;
};

static void *serve_one(void *arg)
{
    struct session *ss = arg;
    char buf[4096];
    size_t len = 0;
    while (len < sizeof buf - 1) {
        ssize_t n = recv(ss->fd, buf + len, sizeof buf - 1 - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = 0;
        if (strstr(buf, "\r\n\r\n"))
            break;
    }
    buf[len] = 0;
    pthread_mutex_lock(&ss->s->mu);
    snprintf(ss->s->last, sizeof ss->s->last, "%s", buf);
    pthread_mutex_unlock(&ss->s->mu);
    if (ss->s->answer) {
        usleep(ss->s->delay_ms * 1000);
        send(ss->fd, ss->s->answer, strlen(ss->s->answer), MSG_NOSIGNAL);
    } else {
        usleep(2000 * 1000);
    }
    close(ss->fd);
    free(ss);
    return NULL;
}

static void *accept_loop(void *arg)
{
    struct service *s = arg;
    for (;;) {
        int fd = accept(s->fd, NULL, NULL);
        if (fd < 0)
            return NULL;
        struct session *ss = malloc(sizeof *ss);
        ss->s = s;
        ss->fd = fd;
        pthread_t t;
        pthread_create(&t, NULL, serve_one, ss);
        pthread_detach(t);
    }
}

static void service_start(struct service *s, const char *answer, unsigned delay_ms)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    s->answer = answer;
    s->delay_ms = delay_ms;
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    assert_int_equal(bind(s->fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s->fd, 512), 0);
    getsockname(s->fd, (struct sockaddr *)&a, &alen);
    s->port = ntohs(a.sin_port);
    pthread_t t;
    pthread_create(&t, NULL, accept_loop, s);
    pthread_detach(t);
}

/* ---- the loop side ---- */

struct outcome {
    struct gh_loop *loop;
    unsigned want, got;
    enum gh_auth_verdict v;
    struct gh_auth_answer a;
    char why[256];
};

static void done(void *arg, enum gh_auth_verdict v, struct gh_auth_answer *a, const char *why)
{
    struct outcome *o = arg;
    o->v = v;
    o->a = *a;
    snprintf(o->why, sizeof o->why, "%s", why ? why : "");
    if (++o->got == o->want)
        gh_loop_stop(o->loop);
}

static struct gh_auth_service svc_for(unsigned port, char *url, size_t cap, uint32_t timeout)
{
    snprintf(url, cap, "http://127.0.0.1:%u/mail/auth", port);
    static char *headers[] = {"X-Auth-Key: s3cret"};
    return (struct gh_auth_service){
        .url = url, .timeout_ms = timeout, .nheaders = 1, .headers = headers};
}

static const struct gh_auth_request login = {.user = "jo doe",
                                             .user_len = 6,
                                             .pass = "p%ss",
                                             .pass_len = 4,
                                             .protocol = "imap",
                                             .attempt = 1,
                                             .client_ip = "192.0.2.7"};

static struct outcome ask(const char *answer, unsigned delay_ms, uint32_t timeout,
                          struct service *s)
{
    service_start(s, answer, delay_ms);
    char url[128];
    struct gh_auth_service svc = svc_for(s->port, url, sizeof url, timeout);
    gh_err err = {0};
    struct outcome o = {.loop = gh_loop_new(&err), .want = 1};
    assert_non_null(o.loop);
    assert_non_null(gh_auth_call_start(o.loop, &svc, &login, true, done, &o, &err));
    assert_int_equal(gh_auth_calls_in_flight(), 1);
    assert_true(gh_loop_run(o.loop, &err));
    assert_int_equal(gh_auth_calls_in_flight(), 0);
    gh_auth_client_thread_end();
    gh_loop_free(o.loop);
    close(s->fd);
    return o;
}

static void ok_and_request_on_the_wire(void **state)
{
    struct service s;
    struct outcome o = ask("HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 127.0.0.1\r\n"
                           "Auth-Port: 1143\r\nAuth-Pass: backend-pw\r\n\r\n",
                           0, 5000, &s);
    assert_int_equal(o.v, GH_AUTH_OK);
    assert_string_equal(o.a.server, "127.0.0.1");
    assert_int_equal(o.a.port, 1143);
    assert_true(!strncmp(s.last, "GET /mail/auth HTTP/1.0\r\n", 25));
    const char *want[] = {"\r\nAuth-Method: plain\r\n",    "\r\nAuth-User: jo%20doe\r\n",
                          "\r\nAuth-Pass: p%25ss\r\n",     "\r\nAuth-Protocol: imap\r\n",
                          "\r\nAuth-Login-Attempt: 1\r\n", "\r\nClient-IP: 192.0.2.7\r\n",
                          "\r\nX-Auth-Key: s3cret\r\n",    "\r\nHost: 127.0.0.1:"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        assert_non_null(strstr(s.last, want[i]));
    assert_null(strstr(s.last, "Accept:"));
}

static void failure_and_non_200(void **state)
{
    struct service s;
    struct outcome o =
        ask("HTTP/1.0 200 OK\r\nAuth-Status: Invalid login\r\nAuth-Wait: 2\r\n\r\n", 0, 5000, &s);
    assert_int_equal(o.v, GH_AUTH_FAILED);
    assert_string_equal(o.a.message, "Invalid login");
    assert_int_equal(o.a.wait_s, 2);
    o = ask("HTTP/1.0 503 Busy\r\nAuth-Status: OK\r\n\r\n", 0, 5000, &s);
    assert_int_equal(o.v, GH_AUTH_TEMPFAIL);
    assert_non_null(strstr(o.why, "503"));
    o = ask("this is not HTTP at all\r\n\r\n", 0, 5000, &s);
    assert_int_equal(o.v, GH_AUTH_TEMPFAIL);
}

static void timeout_and_refused(void **state)
{
    struct service s;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct outcome o = ask(NULL, 0, 300, &s); /* never answers */
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    assert_int_equal(o.v, GH_AUTH_TEMPFAIL);
    assert_true(ms >= 250 && ms < 1900);
    assert_non_null(strstr(o.why, "could not be asked"));

    /* a port nobody listens on */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &alen);
    close(fd);
    char url[128];
    struct gh_auth_service svc = svc_for(ntohs(a.sin_port), url, sizeof url, 2000);
    gh_err err = {0};
    struct outcome r = {.loop = gh_loop_new(&err), .want = 1};
    assert_non_null(gh_auth_call_start(r.loop, &svc, &login, true, done, &r, &err));
    assert_true(gh_loop_run(r.loop, &err));
    assert_int_equal(r.v, GH_AUTH_TEMPFAIL);
    gh_auth_client_thread_end();
    gh_loop_free(r.loop);
}

/* ---- many in flight, the loop stays responsive ---- */

#define MANY 200

struct ticker {
    struct gh_timer t;
    struct gh_loop *loop;
    uint64_t due, worst_late;
    unsigned ticks;
};

static void tick(struct gh_timer *t)
{
    struct ticker *k = gh_container_of(t, struct ticker, t);
    uint64_t now = gh_loop_now(k->loop);
    if (now > k->due && now - k->due > k->worst_late)
        k->worst_late = now - k->due;
    k->ticks++;
    k->due = now + 10;
    gh_timer_set(k->loop, &k->t, 10);
}

static void many_in_flight_do_not_block_the_loop(void **state)
{
    struct service s;
    service_start(&s,
                  "HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 10.0.0.1\r\n"
                  "Auth-Port: 143\r\nAuth-Pass: x\r\n\r\n",
                  400);
    char url[128];
    struct gh_auth_service svc = svc_for(s.port, url, sizeof url, 10000);
    gh_err err = {0};
    struct outcome o = {.loop = gh_loop_new(&err), .want = MANY};
    struct gh_auth_call *calls[MANY];
    for (unsigned i = 0; i < MANY; i++)
        assert_non_null(calls[i] = gh_auth_call_start(o.loop, &svc, &login, true, done, &o, &err));
    /* one is cancelled at once and never reports */
    gh_auth_call_cancel(calls[MANY - 1]);
    o.want = MANY - 1;
    assert_int_equal(gh_auth_calls_in_flight(), MANY - 1);
    struct ticker k = {.t.fn = tick, .loop = o.loop, .due = gh_loop_now(o.loop) + 10};
    gh_timer_set(o.loop, &k.t, 10);
    assert_true(gh_loop_run(o.loop, &err));
    gh_timer_cancel(o.loop, &k.t);
    assert_int_equal(o.got, MANY - 1);
    assert_int_equal(o.v, GH_AUTH_OK);
    assert_true(k.ticks >= 20);      /* the 400 ms the service took were spent ticking */
    assert_true(k.worst_late < 250); /* generous: a shared, loaded machine */
    gh_auth_client_thread_end();
    gh_loop_free(o.loop);
    close(s.fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ok_and_request_on_the_wire),
        cmocka_unit_test(failure_and_non_200),
        cmocka_unit_test(timeout_and_refused),
        cmocka_unit_test(many_in_flight_do_not_block_the_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

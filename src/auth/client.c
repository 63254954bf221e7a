/*
 * client: one libcurl multi handle per worker thread, created on first use. libcurl tells
 * us which sockets to watch (CURLMOPT_SOCKETFUNCTION) and when to wake it
 * (CURLMOPT_TIMERFUNCTION); the loop calls back into curl_multi_socket_action. Nothing
 * here blocks, sleeps or takes a lock.
 */
#include "auth/client.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "core/loop.h"

#define HEADERS_MAX (16 * 1024) /* the answer's headers, all lines together */
#define BODY_MAX    (64 * 1024) /* a body is read and dropped, up to this */

struct gh_auth_call {
    CURL *easy;
    struct curl_slist *headers;
    struct gh_auth_answer answer;
    size_t header_bytes, body_bytes;
    bool need_pass;
    gh_auth_done_fn fn;
    void *arg;
    struct gh_auth_call *prev, *next; /* the thread's calls in flight */
};

/* One per worker thread. Owner: that thread. */
struct multi {
    CURLM *m;
    struct gh_loop *loop;
    struct gh_timer timer;
    unsigned in_flight;
    struct gh_auth_call *calls;
};

/* One socket libcurl asked us to watch. Owner: the multi (freed on CURL_POLL_REMOVE). */
struct watch {
    struct gh_io io;
    struct multi *mu;
    bool added;
};

static _Thread_local struct multi *thread_multi;

static void check_done(struct multi *mu);

static void on_socket_event(struct gh_io *io, uint32_t events)
{
    struct watch *w = gh_container_of(io, struct watch, io);
    struct multi *mu = w->mu;
    int mask = 0, running;
    if (events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP))
        mask |= CURL_CSELECT_IN;
    if (events & EPOLLOUT)
        mask |= CURL_CSELECT_OUT;
    if (events & EPOLLERR)
        mask |= CURL_CSELECT_ERR;
    curl_multi_socket_action(mu->m, io->fd, mask, &running);
    check_done(mu);
}

static int socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct multi *mu = userp;
    struct watch *w = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (w) {
            if (w->added)
                gh_io_del(mu->loop, &w->io);
            free(w);
            curl_multi_assign(mu->m, s, NULL);
        }
        return 0;
    }
    if (!w) {
        if (!(w = calloc(1, sizeof *w)))
            return -1;
        w->io.fd = s;
        w->io.fn = on_socket_event;
        w->mu = mu;
        curl_multi_assign(mu->m, s, w);
    }
    uint32_t ev = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
    if (w->added)
        return gh_io_mod(mu->loop, &w->io, ev) ? 0 : -1;
    gh_err err = {0};
    w->added = gh_io_add(mu->loop, &w->io, ev, &err);
    return w->added ? 0 : -1;
}

static void on_timer(struct gh_timer *t)
{
    struct multi *mu = gh_container_of(t, struct multi, timer);
    int running;
    curl_multi_socket_action(mu->m, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(mu);
}

static int timer_cb(CURLM *m, long timeout_ms, void *userp)
{
    struct multi *mu = userp;
    if (timeout_ms < 0)
        gh_timer_cancel(mu->loop, &mu->timer);
    else
        gh_timer_set(mu->loop, &mu->timer, (uint64_t)timeout_ms);
    return 0;
}

static struct multi *multi_for(struct gh_loop *loop, gh_err *err)
{
    if (thread_multi)
        return thread_multi;
    struct multi *mu = calloc(1, sizeof *mu);
    if (!mu || !(mu->m = curl_multi_init())) {
        free(mu);
        gh_fail(err, "out of memory for the auth service client");
        return NULL;
    }
    mu->loop = loop;
    mu->timer.fn = on_timer;
    curl_multi_setopt(mu->m, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(mu->m, CURLMOPT_SOCKETDATA, mu);
    curl_multi_setopt(mu->m, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(mu->m, CURLMOPT_TIMERDATA, mu);
    return thread_multi = mu;
}

/* ---- one call ---- */

static size_t on_header(char *data, size_t size, size_t n, void *userp)
{
    struct gh_auth_call *c = userp;
    size_t len = size * n;
    if ((c->header_bytes += len) > HEADERS_MAX) {
        c->answer.bad = true;
        return 0; /* aborts the transfer */
    }
    gh_auth_answer_line(&c->answer, data, len);
    return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *userp)
{
    struct gh_auth_call *c = userp;
    size_t len = size * n;
    return (c->body_bytes += len) > BODY_MAX ? 0 : len;
}

static void call_free(struct gh_auth_call *c)
{
    for (struct curl_slist *h = c->headers; h; h = h->next)
        explicit_bzero(h->data, strlen(h->data)); /* the password is in one of them */
    curl_slist_free_all(c->headers);
    gh_auth_answer_wipe(&c->answer);
    free(c);
}

static void unlink_call(struct multi *mu, struct gh_auth_call *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        mu->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    curl_multi_remove_handle(mu->m, c->easy);
    mu->in_flight--;
}

static void finish(struct multi *mu, struct gh_auth_call *c, CURLcode result)
{
    unlink_call(mu, c);
    long status = 0;
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c->easy);
    c->easy = NULL;
    gh_err err = {0};
    enum gh_auth_verdict v;
    if (result != CURLE_OK && !(result == CURLE_WRITE_ERROR && c->body_bytes > BODY_MAX)) {
        v = GH_AUTH_TEMPFAIL;
        gh_fail(&err, "the auth service could not be asked: %s", curl_easy_strerror(result));
    } else {
        v = gh_auth_answer_finish(&c->answer, status, c->need_pass, &err);
    }
    c->fn(c->arg, v, &c->answer, err.msg);
    call_free(c);
}

static void check_done(struct multi *mu)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(mu->m, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct gh_auth_call *c = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&c);
        if (c)
            finish(mu, c, msg->data.result);
    }
}

static bool add_headers(struct gh_auth_call *c, const struct gh_auth_service *svc,
                        const struct gh_auth_request *r)
{
    struct gh_buf b = {0};
    bool ok = gh_auth_request_headers(r, &b);
    size_t pos = b.start;
    while (ok && pos < b.end) {
        char *crlf = memmem(b.data + pos, b.end - pos, "\r\n", 2);
        if (!crlf)
            break;
        *crlf = 0;
        /* an empty value ("Auth-User: ") is written "Auth-User;" for curl to send it */
        if (crlf - (b.data + pos) >= 2 && crlf[-1] == ' ' && crlf[-2] == ':') {
            crlf[-2] = ';';
            crlf[-1] = 0;
        }
        struct curl_slist *n = curl_slist_append(c->headers, b.data + pos);
        ok = n != NULL;
        c->headers = n ? n : c->headers;
        pos = (size_t)(crlf - b.data) + 2;
    }
    if (b.data)
        explicit_bzero(b.data, b.cap);
    gh_buf_free(&b);
    for (unsigned i = 0; ok && i < svc->nheaders; i++) {
        struct curl_slist *n = curl_slist_append(c->headers, svc->headers[i]);
        ok = n != NULL;
        c->headers = n ? n : c->headers;
    }
    /* curl's own defaults that nginx does not send */
    struct curl_slist *n = ok ? curl_slist_append(c->headers, "Accept:") : NULL;
    c->headers = n ? n : c->headers;
    return n != NULL;
}

struct gh_auth_call *gh_auth_call_start(struct gh_loop *loop, const struct gh_auth_service *svc,
                                        const struct gh_auth_request *r, bool need_pass,
                                        gh_auth_done_fn fn, void *arg, gh_err *err)
{
    struct multi *mu = multi_for(loop, err);
    if (!mu)
        return NULL;
    struct gh_auth_call *c = calloc(1, sizeof *c);
    if (!c) {
        gh_fail(err, "out of memory for an auth request");
        return NULL;
    }
    gh_auth_answer_init(&c->answer);
    c->need_pass = need_pass;
    c->fn = fn;
    c->arg = arg;
    if (!add_headers(c, svc, r) || !(c->easy = curl_easy_init())) {
        call_free(c);
        gh_fail(err, "out of memory for an auth request");
        return NULL;
    }
    CURL *e = c->easy;
    curl_easy_setopt(e, CURLOPT_URL, svc->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_0);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(svc->timeout_ms ? svc->timeout_ms : 10000));
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)c);
    if (curl_multi_add_handle(mu->m, e) != CURLM_OK) {
        curl_easy_cleanup(e);
        call_free(c);
        gh_fail(err, "the auth request could not be started");
        return NULL;
    }
    mu->in_flight++;
    c->next = mu->calls;
    if (c->next)
        c->next->prev = c;
    mu->calls = c;
    return c;
}

void gh_auth_call_cancel(struct gh_auth_call *c)
{
    if (!c)
        return;
    if (c->easy) {
        if (thread_multi)
            unlink_call(thread_multi, c);
        curl_easy_cleanup(c->easy);
    }
    call_free(c);
}

void gh_auth_client_thread_end(void)
{
    struct multi *mu = thread_multi;
    if (!mu)
        return;
    /* Calls still in flight stay with their sessions, which cancel them later (from
     * another thread): only their transfers end here. */
    while (mu->calls) {
        struct gh_auth_call *c = mu->calls;
        unlink_call(mu, c);
        curl_easy_cleanup(c->easy);
        c->easy = NULL;
    }
    gh_timer_cancel(mu->loop, &mu->timer);
    curl_multi_cleanup(mu->m);
    free(mu);
    thread_multi = NULL;
}

unsigned gh_auth_calls_in_flight(void)
{
    return thread_multi ? thread_multi->in_flight : 0;
}

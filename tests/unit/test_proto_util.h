/*
 * test_proto_util: a hand-built connection for driving a protocol front door in unit
 * tests. Without a worker, conn.c only queues output in c->out, so replies can be read back.
 */
#ifndef TEST_PROTO_UTIL_H
#define TEST_PROTO_UTIL_H
#include <stdlib.h>
#include <string.h>

#include "net/conn.h"
#include "proto/proto.h"

/* A connection to a listener with STARTTLS available (tls) or plain, already greeted. */
static inline struct gh_conn *conn_open(const struct gh_proto *p, bool tls)
{
    struct gh_conn *c = calloc(1, sizeof *c);
    c->conf = gh_listener_conf_new(1, 0);
    c->conf->use_tls = tls;
    c->conf->tls_timeout_ms = 60000;
    c->proto = p;
    c->phase = GH_PHASE_PROTOCOL;
    strcpy(c->peer_text, "192.0.2.7");
    p->open(c);
    return c;
}

/* What the front door has written since the last call, as a NUL-terminated string. */
static inline char *conn_out(struct gh_conn *c)
{
    size_t n = gh_buf_len(&c->out);
    char *s = malloc(n + 1);
    memcpy(s, gh_buf_head(&c->out), n);
    s[n] = '\0';
    gh_buf_clear(&c->out);
    return s;
}

/* Feeds bytes as one read and returns the replies. */
static inline char *conn_say(struct gh_conn *c, const char *bytes)
{
    gh_buf_append(&c->in, bytes, strlen(bytes));
    c->proto->input(c);
    return conn_out(c);
}

static inline char *conn_say_n(struct gh_conn *c, const void *bytes, size_t n)
{
    gh_buf_append(&c->in, bytes, n);
    c->proto->input(c);
    return conn_out(c);
}

/* What the engine does once a STARTTLS handshake has succeeded. */
static inline char *conn_tls_done(struct gh_conn *c)
{
    c->phase = GH_PHASE_PROTOCOL;
    c->tls_active = true;
    c->tls_done_once = true;
    c->proto->tls_ready(c);
    return conn_out(c);
}

static inline void conn_free(struct gh_conn *c)
{
    if (c->proto->release)
        c->proto->release(c);
    gh_listener_conf_unref(c->conf);
    gh_buf_free(&c->in);
    gh_buf_free(&c->out);
    free(c);
}

/* Asserts a reply and frees it. */
#define assert_reply(got, want)                                                                    \
    do {                                                                                           \
        char *got_ = (got);                                                                        \
        assert_string_equal(got_, want);                                                           \
        free(got_);                                                                                \
    } while (0)

#endif

/*
 * pop3: the AUTHORIZATION state of POP3 (RFC 1939), with CAPA (RFC 2449), response codes
 * (RFC 3206) and STLS (RFC 2595). Without a destination to hand the session to, USER, PASS,
 * AUTH and the mailbox commands get -ERR [SYS/TEMP].
 */
#include "proto/proto.h"

#include <stdlib.h>
#include <string.h>

#include "proto/line.h"

#define POP3_MAX_LINE   4096             /* RFC 2449 says 255; SASL responses run longer */
#define POP3_IDLE_MS    (10 * 60 * 1000) /* RFC 1939 §3: at least 10 minutes */
#define POP3_MAX_ERRORS 20               /* error replies before the session is dropped */

/* Owner: the connection (c->proto_state), freed by pop3_release. */
struct pop3 {
    bool skipping; /* the line reader is discarding the rest of an over-long line */
    bool stopped;  /* QUIT, STLS or a goodbye: input that follows is not ours */
    unsigned errors;
};

/* Logging in, and the mailbox commands that follow it. */
static const char *const login_cmds[] = {"USER", "PASS", "APOP", "AUTH"};
static const char *const mailbox_cmds[] = {"STAT", "LIST", "RETR", "DELE", "RSET",
                                           "TOP",  "UIDL", "UTF8", "LANG"};

static bool is_one_of(const char *verb, size_t len, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (gh_line_is(verb, len, list[i]))
            return true;
    return false;
}

static void stop(struct gh_conn *c, struct pop3 *s)
{
    s->stopped = true;
    gh_conn_close_after_flush(c);
}

static void error_reply(struct gh_conn *c, struct pop3 *s, const char *reply)
{
    gh_conn_printf(c, "%s\r\n", reply);
    if (++s->errors >= POP3_MAX_ERRORS) {
        gh_conn_printf(c, "-ERR Too many invalid commands, closing connection\r\n");
        stop(c, s);
    }
}

static void capa(struct gh_conn *c)
{
    gh_conn_printf(c, "+OK Capability list follows\r\n");
    /* Credentials wait for the upgrade when there is one (RFC 2595 §4). */
    if (gh_conn_can_starttls(c))
        gh_conn_printf(c, "STLS\r\n");
    else
        gh_conn_printf(c, "USER\r\nSASL PLAIN\r\n");
    gh_conn_printf(c, "RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
                      "IMPLEMENTATION Gatehouse\r\n.\r\n");
}

static void stls(struct gh_conn *c, struct pop3 *s, const char *args)
{
    if (*args) {
        error_reply(c, s, "-ERR STLS takes no arguments");
    } else if (c->tls_active || c->tls_done_once) {
        error_reply(c, s, "-ERR Command not permitted when TLS active");
    } else if (!gh_conn_can_starttls(c)) {
        error_reply(c, s, "-ERR TLS not available");
    } else {
        gh_conn_printf(c, "+OK Begin TLS negotiation now\r\n");
        /* Commands pipelined behind STLS were sent in plaintext: never act on them. */
        s->stopped = true;
        gh_conn_starttls(c);
    }
}

static void command(struct gh_conn *c, struct pop3 *s, const char *line, size_t len)
{
    size_t vlen;
    const char *args = gh_line_word(line, &vlen);
    if (strlen(line) != len)
        error_reply(c, s, "-ERR Syntax error");
    else if (gh_line_is(line, vlen, "CAPA"))
        capa(c);
    else if (gh_line_is(line, vlen, "NOOP"))
        gh_conn_printf(c, "+OK\r\n");
    else if (gh_line_is(line, vlen, "QUIT")) {
        gh_conn_printf(c, "+OK %s signing off\r\n", gh_conn_hostname(c));
        stop(c, s);
    } else if (gh_line_is(line, vlen, "STLS"))
        stls(c, s, args);
    else if (is_one_of(line, vlen, login_cmds, sizeof login_cmds / sizeof *login_cmds) &&
             gh_conn_can_starttls(c))
        gh_conn_printf(c, "-ERR Use STLS first\r\n");
    else if (is_one_of(line, vlen, login_cmds, sizeof login_cmds / sizeof *login_cmds) ||
             is_one_of(line, vlen, mailbox_cmds, sizeof mailbox_cmds / sizeof *mailbox_cmds))
        gh_conn_printf(c, "-ERR [SYS/TEMP] Service temporarily unavailable, try again later\r\n");
    else
        error_reply(c, s, "-ERR Unknown command");
}

static void pop3_input(struct gh_conn *c)
{
    struct pop3 *s = c->proto_state;
    bool active = false;
    while (s && !s->stopped && gh_buf_len(&c->out) < GH_LINE_OUT_MAX) {
        char *line;
        size_t len;
        enum gh_line_result r = gh_line_take(&c->in, POP3_MAX_LINE, &s->skipping, &line, &len);
        if (r == GH_LINE_MORE)
            break;
        active = true;
        if (r == GH_LINE_TOO_LONG)
            error_reply(c, s, "-ERR Line too long");
        else
            command(c, s, line, len);
    }
    /* Only complete commands count as activity, so a trickle of bytes cannot hold a slot. */
    if (s && active && !s->stopped)
        gh_conn_set_idle(c, gh_line_idle_ms(POP3_IDLE_MS));
}

static void pop3_open(struct gh_conn *c)
{
    struct pop3 *s = calloc(1, sizeof *s);
    if (!s) {
        gh_conn_close(c);
        return;
    }
    c->proto_state = s;
    gh_conn_printf(c, "+OK %s ready\r\n", gh_conn_hostname(c));
    gh_conn_set_idle(c, gh_line_idle_ms(POP3_IDLE_MS));
}

static void pop3_tls_ready(struct gh_conn *c)
{
    struct pop3 *s = c->proto_state;
    if (!s)
        return;
    /* RFC 2595 §4: the client asks CAPA again; nothing is sent. */
    s->stopped = false;
    s->skipping = false;
    gh_conn_set_idle(c, gh_line_idle_ms(POP3_IDLE_MS));
    pop3_input(c);
}

/* Marks the session as ending; false when it already was (a goodbye was said, or a TLS
 * handshake is running where plaintext cannot go), and then it only closes. */
static bool say_goodbye(struct gh_conn *c)
{
    struct pop3 *s = c->proto_state;
    if (s && s->stopped) {
        gh_conn_close_after_flush(c);
        return false;
    }
    if (s)
        s->stopped = true;
    return true;
}

static void pop3_idle(struct gh_conn *c)
{
    if (say_goodbye(c))
        gh_conn_printf(c, "-ERR %s autologout; idle for too long\r\n", gh_conn_hostname(c));
    gh_conn_close_after_flush(c);
}

static void pop3_shutdown(struct gh_conn *c)
{
    if (say_goodbye(c))
        gh_conn_printf(c, "-ERR [SYS/TEMP] shutting down\r\n");
    gh_conn_close_after_flush(c);
}

static void pop3_release(struct gh_conn *c)
{
    free(c->proto_state);
    c->proto_state = NULL;
}

const struct gh_proto gh_proto_pop3 = {
    .name = "pop3",
    .open = pop3_open,
    .input = pop3_input,
    .tls_ready = pop3_tls_ready,
    .idle = pop3_idle,
    .shutdown = pop3_shutdown,
    .release = pop3_release,
    .over_limit = "-ERR [SYS/TEMP] Too many connections\r\n",
    .unavailable = "-ERR [SYS/TEMP] Service not available\r\n",
};

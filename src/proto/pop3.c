/*
 * pop3: the AUTHORIZATION state of POP3 (RFC 1939), with CAPA (RFC 2449), response codes
 * (RFC 3206) and STLS (RFC 2595). Without a destination to hand the session to, USER, PASS,
 * AUTH and the mailbox commands get -ERR [SYS/TEMP].
 */
#include "proto/proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>

#include "proto/frontauth.h"
#include "proto/line.h"

#define POP3_MAX_LINE 4096             /* RFC 2449 says 255; SASL responses run longer */
#define POP3_IDLE_MS  (10 * 60 * 1000) /* RFC 1939 §3: at least 10 minutes */

/* Logging in, and the mailbox commands that follow it. */
static const char *const login_cmds[] = {"USER", "PASS", "APOP", "AUTH", NULL};
static const char *const mailbox_cmds[] = {"STAT", "LIST", "RETR", "DELE", "RSET",
                                           "TOP",  "UIDL", "UTF8", "LANG", NULL};

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

static void stls(struct gh_conn *c, const char *args)
{
    if (*args) {
        gh_line_error(c, "-ERR STLS takes no arguments");
    } else if (c->tls_active || c->tls_done_once) {
        gh_line_error(c, "-ERR Command not permitted when TLS active");
    } else if (!gh_conn_can_starttls(c)) {
        gh_line_error(c, "-ERR TLS not available");
    } else {
        gh_conn_printf(c, "+OK Begin TLS negotiation now\r\n");
        gh_line_starttls(c);
    }
}

/* Owner: the connection (c->proto_state), allocated by gh_line_open, freed by pop3_release. */
struct pop3 {
    struct gh_line_reader lines; /* first, where gh_line_* find it */
    char *user;                  /* USER's name, waiting for PASS; owned */
    bool sasl_wait;              /* AUTH PLAIN sent "+": the next line is the response */
    struct gh_front_auth *fa;    /* logins through the listener's auth service; owned */
};
_Static_assert(offsetof(struct pop3, lines) == 0, "gh_line_* find the reader at proto_state");

/* ---- logins through the auth service ---- */

#define POP3_UNAVAILABLE "-ERR [SYS/TEMP] Service temporarily unavailable, try again later\r\n"

static void pop3_failed(struct gh_conn *c, bool temporary, const char *message,
                        const char *smtp_code, bool last)
{
    struct pop3 *s = c->proto_state;
    if (temporary)
        gh_conn_printf(c, POP3_UNAVAILABLE);
    else if (!s->fa || s->fa->stage != 3) /* the backend's own -ERR was passed on already */
        gh_conn_printf(c, "-ERR [AUTH] %s\r\n", message ? message : "Authentication failed");
}

static void pop3_resume(struct gh_conn *c)
{
    struct pop3 *s = c->proto_state;
    s->lines.stopped = false;
    gh_line_input(c);
}

static bool sendable(const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] == '\r' || v[i] == '\n' || v[i] == 0)
            return false;
    return n > 0;
}

/* Stages: 0 greeting, 1 USER sent, 2 PASS sent, 3 refused (reply passed on). */
static enum gh_login_step pop3_backend_line(struct gh_front_auth *fa, struct gh_conn *c,
                                            const char *line, size_t len, struct gh_buf *to_backend)
{
    bool ok = !strncmp(line, "+OK", 3);
    if (fa->stage == 0 && ok && sendable(fa->user, fa->user_len) &&
        sendable(fa->pass, fa->pass_len)) {
        gh_buf_printf(to_backend, "USER %s\r\n", fa->user);
        fa->stage = 1;
        return GH_LOGIN_CONTINUE;
    }
    if (fa->stage == 1 && ok) {
        gh_buf_printf(to_backend, "PASS %s\r\n", fa->pass);
        fa->stage = 2;
        return GH_LOGIN_CONTINUE;
    }
    if (fa->stage == 2 && ok) {
        gh_conn_printf(c, "%s\r\n", line);
        return GH_LOGIN_DONE;
    }
    if (fa->stage > 0 && !strncmp(line, "-ERR", 4))
        gh_conn_printf(c, "%s\r\n", line);
    else
        gh_conn_printf(c, POP3_UNAVAILABLE);
    fa->stage = 3;
    return GH_LOGIN_REFUSED;
}

static const struct gh_front_auth_ops pop3_auth = {
    .protocol = "pop3",
    .need_pass = true,
    .failed = pop3_failed,
    .backend_line = pop3_backend_line,
    .resume = pop3_resume,
};

static void start_login(struct gh_conn *c, struct pop3 *s, const char *user, size_t ul,
                        const char *pass, size_t pl)
{
    s->lines.stopped = true; /* until the verdict */
    gh_front_auth_start(&s->fa, c, &pop3_auth, NULL, user, ul, pass, pl);
}

static void sasl_response(struct gh_conn *c, struct pop3 *s, const char *line, size_t len)
{
    char user[GH_FRONT_USER_MAX + 1], pass[GH_FRONT_PASS_MAX + 1];
    size_t ul, pl;
    s->sasl_wait = false;
    if (len == 1 && line[0] == '*')
        gh_line_error(c, "-ERR Authentication cancelled");
    else if (strlen(line) != len || !gh_sasl_plain(line, len, user, &ul, pass, &pl))
        gh_line_error(c, "-ERR Invalid SASL PLAIN response");
    else
        start_login(c, s, user, ul, pass, pl);
    explicit_bzero(pass, sizeof pass);
}

/* USER, PASS and AUTH on a listener served by an auth service (TLS first when offered);
 * false leaves the command to the usual answers. */
static bool front_login(struct gh_conn *c, struct pop3 *s, const char *verb, size_t vlen,
                        const char *args)
{
    if (!gh_front_auth_serves(c) || gh_conn_can_starttls(c))
        return false;
    size_t alen = strlen(args);
    if (gh_line_is(verb, vlen, "USER")) {
        if (!alen || alen > GH_FRONT_USER_MAX) {
            gh_line_error(c, "-ERR Invalid user name");
            return true;
        }
        free(s->user);
        s->user = strdup(args);
        gh_conn_printf(c, s->user ? "+OK\r\n" : POP3_UNAVAILABLE);
    } else if (gh_line_is(verb, vlen, "PASS")) {
        char *user = s->user;
        s->user = NULL;
        if (!user)
            gh_line_error(c, "-ERR USER first");
        else if (!alen || alen > GH_FRONT_PASS_MAX)
            gh_line_error(c, "-ERR Invalid password");
        else
            start_login(c, s, user, strlen(user), args, alen);
        free(user);
    } else if (gh_line_is(verb, vlen, "AUTH")) {
        size_t mlen;
        const char *ir = gh_line_word(args, &mlen);
        if (!gh_line_is(args, mlen, "PLAIN")) {
            gh_conn_printf(c, "-ERR Unsupported authentication mechanism\r\n");
        } else if (!*ir) {
            gh_conn_printf(c, "+ \r\n");
            s->sasl_wait = true;
        } else {
            sasl_response(c, s, ir, strlen(ir));
        }
    } else {
        return false;
    }
    return true;
}

static void command(struct gh_conn *c, const char *line, size_t len)
{
    struct pop3 *s = c->proto_state;
    size_t vlen;
    const char *args = gh_line_word(line, &vlen);
    if (s->sasl_wait)
        sasl_response(c, s, line, len);
    else if (strlen(line) != len)
        gh_line_error(c, "-ERR Syntax error");
    else if (front_login(c, s, line, vlen, args))
        ;
    else if (gh_line_is(line, vlen, "CAPA"))
        capa(c);
    else if (gh_line_is(line, vlen, "NOOP"))
        gh_conn_printf(c, "+OK\r\n");
    else if (gh_line_is(line, vlen, "QUIT")) {
        gh_conn_printf(c, "+OK %s signing off\r\n", gh_conn_hostname(c));
        gh_line_stop(c);
    } else if (gh_line_is(line, vlen, "STLS"))
        stls(c, args);
    else if (gh_line_is_any(line, vlen, login_cmds) && gh_conn_can_starttls(c))
        gh_conn_printf(c, "-ERR Use STLS first\r\n");
    else if (gh_line_is_any(line, vlen, login_cmds) || gh_line_is_any(line, vlen, mailbox_cmds))
        gh_conn_printf(c, "-ERR [SYS/TEMP] Service temporarily unavailable, try again later\r\n");
    else
        gh_line_error(c, "-ERR Unknown command");
}

static const struct gh_line_proto pop3_lines = {
    .max_line = POP3_MAX_LINE,
    .idle_ms = POP3_IDLE_MS,
    .too_many_errors = "-ERR Too many invalid commands, closing connection\r\n",
    .idle_goodbye = "-ERR %s autologout; idle for too long\r\n",
    .shutdown_goodbye = "-ERR [SYS/TEMP] shutting down\r\n",
    .line = command,
    .too_long_reply = "-ERR Line too long",
};

static void pop3_open(struct gh_conn *c)
{
    if (gh_line_open(c, sizeof(struct pop3), &pop3_lines))
        gh_conn_printf(c, "+OK %s ready\r\n", gh_conn_hostname(c));
}

static void pop3_release(struct gh_conn *c)
{
    struct pop3 *s = c->proto_state;
    if (s) {
        gh_front_auth_free(s->fa);
        free(s->user);
    }
    gh_line_release(c);
}

static void pop3_tls_ready(struct gh_conn *c)
{
    struct pop3 *s = c->proto_state;
    if (s) {
        free(s->user);
        s->user = NULL;
        s->sasl_wait = false;
    }
    gh_line_restart(c); /* RFC 2595 §4: the client asks CAPA again; nothing is sent */
}

const struct gh_proto gh_proto_pop3 = {
    .name = "pop3",
    .open = pop3_open,
    .input = gh_line_input,
    .tls_ready = pop3_tls_ready,
    .idle = gh_line_idle,
    .shutdown = gh_line_shutdown,
    .release = pop3_release,
    .over_limit = "-ERR [SYS/TEMP] Too many connections\r\n",
    .unavailable = "-ERR [SYS/TEMP] Service not available\r\n",
    .end_command = "QUIT",
};

/*
 * smtp: the opening dialogue of SMTP (RFC 5321, STARTTLS per RFC 3207) and of LMTP
 * (RFC 2033), which differs only in its greeting command, LHLO. Without a destination to
 * hand the session to, everything past the opening is answered with a temporary failure.
 */
#include "net/handoff.h"
#include "proto/proto.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/line.h"

#define SMTP_MAX_LINE 4096            /* RFC 5321 allows 512; extensions make lines longer */
#define SMTP_IDLE_MS  (5 * 60 * 1000) /* RFC 5321 §4.5.3.2.7: the server waits 5 minutes */

/* Owner: the connection (c->proto_state), allocated by gh_line_open, freed by gh_line_release. */
struct smtp {
    struct gh_line_reader lines; /* first, where gh_line_* find it */
    bool lmtp;
    bool greeted; /* EHLO/HELO/LHLO seen since the start or the last TLS upgrade */
    char *helo;   /* the name the client gave, to say hello for it to a destination; owned */
};
_Static_assert(offsetof(struct smtp, lines) == 0, "gh_line_* find the reader at proto_state");

/* Commands of a mail transaction or of its extensions: real, but served by a destination. */
static const char *const transaction_cmds[] = {
    "MAIL", "RCPT", "DATA", "BDAT", "AUTH", "VRFY",    "EXPN",     "ETRN", "ATRN",
    "BURL", "TURN", "SEND", "SOML", "SAML", "XCLIENT", "XFORWARD", NULL,
};

/* A domain or address literal as the client named itself: printable, no spaces. */
static bool valid_name(const char *name, size_t len)
{
    if (len == 0 || len > 255)
        return false;
    for (size_t i = 0; i < len; i++)
        if (name[i] <= ' ' || name[i] > '~')
            return false;
    return true;
}

static void hello(struct gh_conn *c, struct smtp *s, const char *args, bool extended)
{
    size_t name_len;
    gh_line_word(args, &name_len);
    if (!valid_name(args, name_len)) {
        gh_line_error(c, s->lmtp    ? "501 5.5.4 Syntax: LHLO hostname"
                         : extended ? "501 5.5.4 Syntax: EHLO hostname"
                                    : "501 5.5.4 Syntax: HELO hostname");
        return;
    }
    s->greeted = true;
    free(s->helo); /* kept apart from the state: most sessions never say hello */
    s->helo = strndup(args, name_len);
    const char *host = gh_conn_hostname(c);
    if (!extended) {
        gh_conn_printf(c, "250 %s Hello %.*s [%s]\r\n", host, (int)name_len, args, c->peer_text);
        return;
    }
    gh_conn_printf(c, "250-%s Hello %.*s [%s]\r\n", host, (int)name_len, args, c->peer_text);
    gh_conn_printf(c, "250-PIPELINING\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n");
    if (gh_conn_can_starttls(c))
        gh_conn_printf(c, "250-SIZE\r\n250 STARTTLS\r\n");
    else
        gh_conn_printf(c, "250 SIZE\r\n");
}

static void starttls(struct gh_conn *c, struct smtp *s, const char *args)
{
    if (*args) {
        gh_line_error(c, "501 5.5.4 Syntax error (no parameters allowed)");
    } else if (c->tls_active || c->tls_done_once) {
        gh_line_error(c, "503 5.5.1 TLS already active");
    } else if (!gh_conn_can_starttls(c)) {
        gh_line_error(c, "502 5.7.0 TLS not available");
    } else {
        gh_conn_printf(c, "220 2.0.0 Ready to start TLS\r\n");
        /* RFC 3207 §4.2: the session starts over; nothing the client said before counts,
         * and nothing it pipelined behind STARTTLS is read (gh_conn_starttls drops it). */
        s->greeted = false;
        gh_line_starttls(c);
    }
}

/* Opportunistic SMTP: the client stayed in clear and began a transaction, so the opening is
 * over. The destination hears the client's hello from us, then this command. */
static void hand_off(struct gh_conn *c, struct smtp *s, const char *line)
{
    char hello_line[300];
    snprintf(hello_line, sizeof hello_line, "%s %s", s->lmtp ? "LHLO" : "EHLO",
             s->helo ? s->helo : "");
    s->lines.stopped = true;
    gh_conn_handoff(c, true, hello_line, line);
}

static void command(struct gh_conn *c, const char *line, size_t len)
{
    struct smtp *s = c->proto_state;
    size_t vlen;
    const char *args = gh_line_word(line, &vlen);

    if (strlen(line) != len) {
        gh_line_error(c, "500 5.5.2 Syntax error");
    } else if (gh_line_is(line, vlen, "EHLO") || gh_line_is(line, vlen, "HELO")) {
        if (s->lmtp)
            gh_line_error(c, "500 5.5.1 Command not recognized: this is LMTP, use LHLO");
        else
            hello(c, s, args, gh_line_is(line, vlen, "EHLO"));
    } else if (gh_line_is(line, vlen, "LHLO")) {
        if (s->lmtp)
            hello(c, s, args, true);
        else
            gh_line_error(c, "500 5.5.1 Command not recognized: this is SMTP, use EHLO");
    } else if (gh_line_is(line, vlen, "NOOP") || gh_line_is(line, vlen, "RSET")) {
        gh_conn_printf(c, "250 2.0.0 OK\r\n");
    } else if (gh_line_is(line, vlen, "HELP")) {
        gh_conn_printf(c, "214 2.0.0 Commands: %s NOOP RSET HELP QUIT%s\r\n",
                       s->lmtp ? "LHLO" : "EHLO HELO", gh_conn_can_starttls(c) ? " STARTTLS" : "");
    } else if (gh_line_is(line, vlen, "QUIT")) {
        gh_conn_printf(c, "221 2.0.0 %s closing connection\r\n", gh_conn_hostname(c));
        gh_line_stop(c);
    } else if (gh_line_is(line, vlen, "STARTTLS")) {
        starttls(c, s, args);
    } else if (gh_line_is_any(line, vlen, transaction_cmds)) {
        if (!s->greeted)
            gh_line_error(c, s->lmtp ? "503 5.5.1 Send LHLO first" : "503 5.5.1 Send EHLO first");
        else if (gh_conn_has_destination(c))
            hand_off(c, s, line);
        else
            gh_line_error(c, "451 4.3.0 Service temporarily unavailable, try again later");
    } else {
        gh_line_error(c, "500 5.5.1 Command not recognized");
    }
}

static const struct gh_line_proto smtp_lines = {
    .max_line = SMTP_MAX_LINE,
    .idle_ms = SMTP_IDLE_MS,
    .too_many_errors = "421 4.7.0 %s Too many errors, closing connection\r\n",
    .idle_goodbye = "421 4.4.2 %s Error: timeout exceeded\r\n",
    .shutdown_goodbye = "421 4.3.0 %s shutting down\r\n",
    .line = command,
    .too_long_reply = "500 5.5.2 Line too long",
};

static void open_as(struct gh_conn *c, bool lmtp)
{
    struct smtp *s = gh_line_open(c, sizeof *s, &smtp_lines);
    if (!s)
        return;
    s->lmtp = lmtp;
    gh_conn_printf(c, "220 %s ESMTP\r\n", gh_conn_hostname(c));
}

static void smtp_open(struct gh_conn *c)
{
    open_as(c, false);
}

static void lmtp_open(struct gh_conn *c)
{
    open_as(c, true);
}

static void smtp_tls_ready(struct gh_conn *c)
{
    struct smtp *s = c->proto_state;
    if (!s)
        return;
    s->greeted = false;
    /* Bytes that arrived encrypted right behind the handshake are the client's next command. */
    gh_line_restart(c);
}

static void smtp_release(struct gh_conn *c)
{
    struct smtp *s = c->proto_state;
    if (s)
        free(s->helo);
    gh_line_release(c);
}

const struct gh_proto gh_proto_smtp = {
    .name = "smtp",
    .open = smtp_open,
    .input = gh_line_input,
    .tls_ready = smtp_tls_ready,
    .idle = gh_line_idle,
    .shutdown = gh_line_shutdown,
    .release = smtp_release,
    .over_limit = "421 4.3.2 Too many connections\r\n",
    .unavailable = "421 4.3.0 Service not available, try again later\r\n",
};

const struct gh_proto gh_proto_lmtp = {
    .name = "lmtp",
    .open = lmtp_open,
    .input = gh_line_input,
    .tls_ready = smtp_tls_ready,
    .idle = gh_line_idle,
    .shutdown = gh_line_shutdown,
    .release = smtp_release,
    .over_limit = "421 4.3.2 Too many connections\r\n",
    .unavailable = "421 4.3.0 Service not available, try again later\r\n",
};

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
#include <strings.h>

#include "proto/frontauth.h"
#include "proto/line.h"

#define SMTP_MAX_LINE 4096            /* RFC 5321 allows 512; extensions make lines longer */
#define SMTP_IDLE_MS  (5 * 60 * 1000) /* RFC 5321 §4.5.3.2.7: the server waits 5 minutes */

/* Owner: the connection (c->proto_state), allocated by gh_line_open, freed by gh_line_release. */
struct smtp {
    struct gh_line_reader lines; /* first, where gh_line_* find it */
    bool lmtp;
    bool greeted; /* EHLO/HELO/LHLO seen since the start or the last TLS upgrade */
    char *helo;   /* the name the client gave, to say hello for it to a destination; owned */
    /* logins through the listener's auth service */
    enum { SASL_NONE, SASL_PLAIN, SASL_LOGIN_USER, SASL_LOGIN_PASS } sasl;
    char *sasl_user;          /* AUTH LOGIN's user name, waiting for the password; owned */
    char *mail_from;          /* MAIL, held until RCPT routes the session; owned */
    struct gh_front_auth *fa; /* owned */
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
    if (!s->lmtp && gh_front_auth_serves(c) && !gh_conn_can_starttls(c))
        gh_conn_printf(c, "250-AUTH PLAIN LOGIN\r\n");
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

/* ---- logins through the auth service ---- */

#define SMTP_TEMPFAIL "454 4.7.0 Temporary authentication failure, try again later"

static void smtp_failed(struct gh_conn *c, bool temporary, const char *message,
                        const char *smtp_code, bool last)
{
    struct smtp *s = c->proto_state;
    bool none = s->fa && s->fa->method_none;
    if (temporary)
        gh_conn_printf(c, "%s\r\n",
                       none ? "451 4.3.0 Temporary failure, try again later" : SMTP_TEMPFAIL);
    else if (!s->fa || s->fa->stage != 99) /* the backend's own reply went out already */
        gh_conn_printf(c, "%s %s\r\n",
                       smtp_code ? smtp_code
                       : none    ? "550 5.7.1"
                                 : "535 5.7.8",
                       message ? message
                       : none  ? "Recipient refused"
                               : "Authentication credentials invalid");
    if (last)
        gh_conn_printf(c, "421 4.7.0 %s Too many failed logins, closing connection\r\n",
                       gh_conn_hostname(c));
}

static void smtp_resume(struct gh_conn *c)
{
    struct smtp *s = c->proto_state;
    s->lines.stopped = false;
    gh_line_input(c);
}

/* RFC 3461 xtext, as XCLIENT attribute values are written. */
static void xtext(struct gh_buf *b, const char *v)
{
    for (; *v; v++) {
        unsigned char ch = (unsigned char)*v;
        if (ch < '!' || ch > '~' || ch == '+' || ch == '=')
            gh_buf_printf(b, "+%02X", ch);
        else
            gh_buf_append(b, v, 1);
    }
}

enum {
    SB_GREETING,
    SB_EHLO,    /* EHLO sent: its reply tells whether XCLIENT is offered */
    SB_XCLIENT, /* XCLIENT sent: a new greeting follows */
    SB_EHLO2,   /* EHLO again after XCLIENT */
    SB_MAIL,    /* Auth-Method none: MAIL sent */
    SB_RCPT,    /* ... and RCPT: its reply is the client's */
    SB_REFUSED = 99,
};
#define SB_OFFERS_XCLIENT 1u

static void smtp_hello(struct gh_front_auth *fa, struct gh_conn *c, struct gh_buf *to_backend)
{
    struct smtp *s = c->proto_state;
    gh_buf_printf(to_backend, "EHLO %s\r\n", s->helo ? s->helo : gh_conn_hostname(c));
}

/* The opening is over at the backend: answer the client (235, or the RCPT reply). */
static enum gh_login_step smtp_ready(struct gh_front_auth *fa, struct gh_conn *c,
                                     struct gh_buf *to_backend)
{
    if (!fa->method_none) {
        gh_conn_printf(c, "235 2.7.0 Authentication successful\r\n");
        return GH_LOGIN_DONE;
    }
    gh_buf_printf(to_backend, "%s\r\n", fa->smtp_from);
    fa->stage = SB_MAIL;
    return GH_LOGIN_CONTINUE;
}

static enum gh_login_step smtp_backend_line(struct gh_front_auth *fa, struct gh_conn *c,
                                            const char *line, size_t len, struct gh_buf *to_backend)
{
    bool more = len >= 4 && line[3] == '-';
    bool positive = line[0] == '2';
    if (fa->stage == SB_EHLO && len > 4 && !strncasecmp(line + 4, "XCLIENT", 7))
        fa->flags |= SB_OFFERS_XCLIENT;
    if (more && positive)
        return GH_LOGIN_CONTINUE; /* the rest of a multi-line reply */
    switch (positive ? fa->stage : SB_REFUSED) {
    case SB_GREETING:
    case SB_XCLIENT:
        smtp_hello(fa, c, to_backend);
        fa->stage = fa->stage == SB_GREETING ? SB_EHLO : SB_EHLO2;
        return GH_LOGIN_CONTINUE;
    case SB_EHLO:
        if (fa->xclient && (fa->flags & SB_OFFERS_XCLIENT)) {
            struct smtp *s = c->proto_state;
            gh_buf_printf(to_backend, "XCLIENT ADDR=%s%s", strchr(c->peer_text, ':') ? "IPV6:" : "",
                          c->peer_text);
            if (!fa->method_none) {
                gh_buf_append(to_backend, " LOGIN=", 7);
                xtext(to_backend, fa->login_user);
            }
            if (s->helo) {
                gh_buf_append(to_backend, " HELO=", 6);
                xtext(to_backend, s->helo);
            }
            gh_buf_append(to_backend, "\r\n", 2);
            fa->stage = SB_XCLIENT;
            return GH_LOGIN_CONTINUE;
        }
        return smtp_ready(fa, c, to_backend);
    case SB_EHLO2:
        return smtp_ready(fa, c, to_backend);
    case SB_MAIL:
        gh_buf_printf(to_backend, "%s\r\n", fa->smtp_to);
        fa->stage = SB_RCPT;
        return GH_LOGIN_CONTINUE;
    case SB_RCPT:
        gh_conn_printf(c, "%s\r\n", line);
        return GH_LOGIN_DONE;
    default:
        break;
    }
    if (fa->stage == SB_RCPT) { /* a refused recipient is the backend's answer to give */
        gh_conn_printf(c, "%s\r\n", line);
        return more ? GH_LOGIN_CONTINUE : GH_LOGIN_DONE;
    }
    if (more)
        return GH_LOGIN_CONTINUE;
    gh_conn_printf(c, "%s\r\n",
                   fa->method_none ? "451 4.3.0 Temporary failure, try again later"
                                   : SMTP_TEMPFAIL);
    fa->stage = SB_REFUSED;
    return GH_LOGIN_REFUSED;
}

static const struct gh_front_auth_ops smtp_auth = {
    .protocol = "smtp",
    .need_pass = false,
    .failed = smtp_failed,
    .backend_line = smtp_backend_line,
    .resume = smtp_resume,
};

static void start_login(struct gh_conn *c, struct smtp *s, const char *user, size_t ul,
                        const char *pass, size_t pl)
{
    s->lines.stopped = true; /* until the verdict */
    gh_front_auth_start(&s->fa, c, &smtp_auth, NULL, user, ul, pass, pl);
}

static void sasl_step(struct gh_conn *c, struct smtp *s, const char *text, size_t len)
{
    char user[GH_FRONT_USER_MAX + 1], pass[GH_FRONT_PASS_MAX + 1];
    size_t ul, pl;
    int step = s->sasl;
    s->sasl = SASL_NONE;
    if (len == 1 && text[0] == '*') {
        gh_line_error(c, "501 5.7.0 Authentication cancelled");
    } else if (step == SASL_PLAIN) {
        if (strlen(text) == len && gh_sasl_plain(text, len, user, &ul, pass, &pl))
            start_login(c, s, user, ul, pass, pl);
        else
            gh_line_error(c, "501 5.5.2 Invalid SASL PLAIN response");
    } else if (step == SASL_LOGIN_USER) {
        if (strlen(text) == len && gh_base64_decode(text, len, user, GH_FRONT_USER_MAX, &ul) &&
            ul && !memchr(user, 0, ul)) {
            free(s->sasl_user);
            s->sasl_user = strndup(user, ul);
            s->sasl = SASL_LOGIN_PASS;
            gh_conn_printf(c, "334 UGFzc3dvcmQ6\r\n"); /* "Password:" */
        } else {
            gh_line_error(c, "501 5.5.2 Invalid user name");
        }
    } else if (step == SASL_LOGIN_PASS) {
        if (strlen(text) == len && gh_base64_decode(text, len, pass, GH_FRONT_PASS_MAX, &pl) &&
            pl && !memchr(pass, 0, pl) && s->sasl_user)
            start_login(c, s, s->sasl_user, strlen(s->sasl_user), pass, pl);
        else
            gh_line_error(c, "501 5.5.2 Invalid password");
        free(s->sasl_user);
        s->sasl_user = NULL;
    }
    explicit_bzero(pass, sizeof pass);
}

static void auth_command(struct gh_conn *c, struct smtp *s, const char *args)
{
    size_t mlen;
    const char *ir = gh_line_word(args, &mlen);
    if (!s->greeted) {
        gh_line_error(c, "503 5.5.1 Send EHLO first");
    } else if (gh_conn_can_starttls(c)) {
        gh_line_error(c, "530 5.7.0 Must issue a STARTTLS command first");
    } else if (s->mail_from) {
        gh_line_error(c, "503 5.5.1 AUTH not allowed during a mail transaction");
    } else if (gh_line_is(args, mlen, "PLAIN")) {
        s->sasl = SASL_PLAIN;
        if (*ir && strcmp(ir, "="))
            sasl_step(c, s, ir, strlen(ir));
        else if (*ir)
            sasl_step(c, s, "", 0);
        else
            gh_conn_printf(c, "334 \r\n");
    } else if (gh_line_is(args, mlen, "LOGIN")) {
        s->sasl = SASL_LOGIN_USER;
        if (*ir)
            sasl_step(c, s, ir, strlen(ir));
        else
            gh_conn_printf(c, "334 VXNlcm5hbWU6\r\n"); /* "Username:" */
    } else {
        gh_line_error(c, "504 5.5.4 Unrecognized authentication type");
    }
}

/* A transaction without AUTH: MAIL is held, the first RCPT asks the service where the
 * session goes (Auth-Method: none), and the backend's answer to both is the client's. */
static void routed_transaction(struct gh_conn *c, struct smtp *s, const char *line, size_t vlen)
{
    if (!s->greeted) {
        gh_line_error(c, "503 5.5.1 Send EHLO first");
    } else if (gh_line_is(line, vlen, "MAIL")) {
        if (s->mail_from) {
            gh_line_error(c, "503 5.5.1 Nested MAIL command");
            return;
        }
        s->mail_from = strdup(line);
        gh_conn_printf(c, s->mail_from ? "250 2.1.0 Ok\r\n" : "451 4.3.0 Try again later\r\n");
    } else if (gh_line_is(line, vlen, "RCPT")) {
        if (!s->mail_from) {
            gh_line_error(c, "503 5.5.1 Need MAIL command");
            return;
        }
        s->lines.stopped = true;
        gh_front_auth_start_none(&s->fa, c, &smtp_auth, s->helo, s->mail_from, line);
    } else {
        gh_line_error(c, "503 5.5.1 Need MAIL command");
    }
}

static void command(struct gh_conn *c, const char *line, size_t len)
{
    struct smtp *s = c->proto_state;
    size_t vlen;
    const char *args = gh_line_word(line, &vlen);
    bool front = !s->lmtp && gh_front_auth_serves(c);

    if (s->sasl != SASL_NONE) {
        sasl_step(c, s, line, len);
    } else if (strlen(line) != len) {
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
        if (gh_line_is(line, vlen, "RSET")) {
            free(s->mail_from);
            s->mail_from = NULL;
        }
        gh_conn_printf(c, "250 2.0.0 OK\r\n");
    } else if (gh_line_is(line, vlen, "HELP")) {
        gh_conn_printf(c, "214 2.0.0 Commands: %s NOOP RSET HELP QUIT%s\r\n",
                       s->lmtp ? "LHLO" : "EHLO HELO", gh_conn_can_starttls(c) ? " STARTTLS" : "");
    } else if (gh_line_is(line, vlen, "QUIT")) {
        gh_conn_printf(c, "221 2.0.0 %s closing connection\r\n", gh_conn_hostname(c));
        gh_line_stop(c);
    } else if (gh_line_is(line, vlen, "STARTTLS")) {
        starttls(c, s, args);
    } else if (front && gh_line_is(line, vlen, "AUTH")) {
        auth_command(c, s, args);
    } else if (front && (gh_line_is(line, vlen, "MAIL") || gh_line_is(line, vlen, "RCPT") ||
                         gh_line_is(line, vlen, "DATA") || gh_line_is(line, vlen, "BDAT"))) {
        routed_transaction(c, s, line, vlen);
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
    s->sasl = SASL_NONE;
    free(s->mail_from);
    s->mail_from = NULL;
    /* Bytes that arrived encrypted right behind the handshake are the client's next command. */
    gh_line_restart(c);
}

static void smtp_release(struct gh_conn *c)
{
    struct smtp *s = c->proto_state;
    if (s) {
        free(s->helo);
        free(s->sasl_user);
        free(s->mail_from);
        gh_front_auth_free(s->fa);
    }
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
    .end_command = "QUIT",
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
    .end_command = "QUIT",
};

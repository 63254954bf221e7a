/*
 * pop3: the AUTHORIZATION state of POP3 (RFC 1939), with CAPA (RFC 2449), response codes
 * (RFC 3206) and STLS (RFC 2595). Without a destination to hand the session to, USER, PASS,
 * AUTH and the mailbox commands get -ERR [SYS/TEMP].
 */
#include "proto/proto.h"

#include <string.h>

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

static void command(struct gh_conn *c, const char *line, size_t len)
{
    size_t vlen;
    const char *args = gh_line_word(line, &vlen);
    if (strlen(line) != len)
        gh_line_error(c, "-ERR Syntax error");
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

/* Before login POP3 keeps no state but the line reader's (c->proto_state). */
static void pop3_open(struct gh_conn *c)
{
    if (gh_line_open(c, sizeof(struct gh_line_reader), &pop3_lines))
        gh_conn_printf(c, "+OK %s ready\r\n", gh_conn_hostname(c));
}

const struct gh_proto gh_proto_pop3 = {
    .name = "pop3",
    .open = pop3_open,
    .input = gh_line_input,
    .tls_ready = gh_line_restart, /* RFC 2595 §4: the client asks CAPA again; nothing is sent */
    .idle = gh_line_idle,
    .shutdown = gh_line_shutdown,
    .release = gh_line_release,
    .over_limit = "-ERR [SYS/TEMP] Too many connections\r\n",
    .unavailable = "-ERR [SYS/TEMP] Service not available\r\n",
};

/*
 * imap: the not-authenticated state of IMAP (RFC 9051 and RFC 3501): greeting with its
 * capabilities, CAPABILITY, NOOP, LOGOUT and STARTTLS. Without a destination to hand the
 * session to, LOGIN and every other real command get NO [UNAVAILABLE]. Literals are skipped,
 * so their bytes are never read as commands.
 */
#include "proto/proto.h"

#include <stdlib.h>
#include <string.h>

#include "proto/line.h"

#define IMAP_MAX_LINE    8192             /* a command line, literals apart */
#define IMAP_MAX_LITERAL 4096             /* LITERAL- (RFC 7888), part of IMAP4rev2 */
#define IMAP_IDLE_MS     (30 * 60 * 1000) /* RFC 9051 §5.4: at least 30 minutes */
#define IMAP_MAX_ERRORS  20               /* BAD replies before the session is dropped */
#define IMAP_TAG_MAX     64

/* What a command asks for; decided on its first line, done once its last line is in. */
enum action {
    A_CAPABILITY,
    A_NOOP,
    A_LOGOUT,
    A_STARTTLS,
    A_LOGIN,       /* LOGIN or AUTHENTICATE */
    A_UNAVAILABLE, /* a real IMAP command, served by a destination */
    A_UNKNOWN,
    A_ARGS,   /* a command that takes no arguments got some */
    A_NO_CMD, /* a tag and nothing else */
    A_BAD_TAG,
};

/* Owner: the connection (c->proto_state), freed by imap_release. */
struct imap {
    bool skipping;    /* the line reader is discarding the rest of an over-long line */
    bool stopped;     /* LOGOUT, STARTTLS or a goodbye: input that follows is not ours */
    bool continued;   /* the next line continues the current command, after a literal */
    uint64_t literal; /* bytes of a non-synchronizing literal still to discard */
    enum action pending;
    char tag[IMAP_TAG_MAX + 1];
    unsigned errors;
};

/* Real IMAP commands (RFC 9051 and common extensions) that need a mail store. */
static const char *const store_cmds[] = {
    "ID",       "ENABLE",     "SELECT",       "EXAMINE",     "CREATE",   "DELETE",
    "RENAME",   "SUBSCRIBE",  "UNSUBSCRIBE",  "LIST",        "LSUB",     "NAMESPACE",
    "STATUS",   "APPEND",     "IDLE",         "CHECK",       "CLOSE",    "UNSELECT",
    "EXPUNGE",  "SEARCH",     "FETCH",        "STORE",       "COPY",     "MOVE",
    "UID",      "GETQUOTA",   "GETQUOTAROOT", "SETQUOTA",    "GETACL",   "SETACL",
    "MYRIGHTS", "LISTRIGHTS", "GETMETADATA",  "SETMETADATA", "COMPRESS", "UNAUTHENTICATE",
};

static void stop(struct gh_conn *c, struct imap *s)
{
    s->stopped = true;
    gh_conn_close_after_flush(c);
}

static void capability_list(struct gh_conn *c)
{
    /* Before the upgrade no credentials may travel: LOGINDISABLED (RFC 9051 §6.2.3) and
     * no AUTH= mechanism. A listener without TLS lets the administrator's choice stand. */
    if (gh_conn_can_starttls(c))
        gh_conn_printf(c, "IMAP4rev1 IMAP4rev2 STARTTLS LOGINDISABLED");
    else
        gh_conn_printf(c, "IMAP4rev1 IMAP4rev2 AUTH=PLAIN SASL-IR");
}

static void error_reply(struct gh_conn *c, struct imap *s, const char *tag, const char *text)
{
    gh_conn_printf(c, "%s %s\r\n", tag, text);
    if (++s->errors >= IMAP_MAX_ERRORS) {
        gh_conn_printf(c, "* BYE Too many invalid commands\r\n");
        stop(c, s);
    }
}

static bool valid_tag(const char *t, size_t len)
{
    if (len == 0 || len > IMAP_TAG_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (t[i] <= ' ' || t[i] > '~' || strchr("(){%*\"\\+", t[i]))
            return false;
    return true;
}

static bool is_store_cmd(const char *verb, size_t len)
{
    for (size_t i = 0; i < sizeof store_cmds / sizeof *store_cmds; i++)
        if (gh_line_is(verb, len, store_cmds[i]))
            return true;
    return false;
}

/* The first line of a command: note its tag and what it asks for. */
static void begin(struct imap *s, const char *line, size_t len)
{
    size_t tag_len, verb_len;
    const char *verb = gh_line_word(line, &tag_len);
    s->tag[0] = '\0';
    if (strlen(line) != len || !valid_tag(line, tag_len)) {
        s->pending = A_BAD_TAG;
        return;
    }
    memcpy(s->tag, line, tag_len);
    s->tag[tag_len] = '\0';
    const char *args = gh_line_word(verb, &verb_len);
    bool bare = *args == '\0';
    if (verb_len == 0)
        s->pending = A_NO_CMD;
    else if (gh_line_is(verb, verb_len, "CAPABILITY"))
        s->pending = bare ? A_CAPABILITY : A_ARGS;
    else if (gh_line_is(verb, verb_len, "NOOP"))
        s->pending = bare ? A_NOOP : A_ARGS;
    else if (gh_line_is(verb, verb_len, "LOGOUT"))
        s->pending = bare ? A_LOGOUT : A_ARGS;
    else if (gh_line_is(verb, verb_len, "STARTTLS"))
        s->pending = bare ? A_STARTTLS : A_ARGS;
    else if (gh_line_is(verb, verb_len, "LOGIN") || gh_line_is(verb, verb_len, "AUTHENTICATE"))
        s->pending = A_LOGIN;
    else if (is_store_cmd(verb, verb_len))
        s->pending = A_UNAVAILABLE;
    else
        s->pending = A_UNKNOWN;
}

static void starttls(struct gh_conn *c, struct imap *s)
{
    if (c->tls_active || c->tls_done_once) {
        error_reply(c, s, s->tag, "BAD TLS already active");
    } else if (!gh_conn_can_starttls(c)) {
        gh_conn_printf(c, "%s NO TLS not available\r\n", s->tag);
    } else {
        gh_conn_printf(c, "%s OK Begin TLS negotiation now\r\n", s->tag);
        /* Commands pipelined behind STARTTLS were sent in plaintext: never act on them. */
        s->stopped = true;
        gh_conn_starttls(c);
    }
}

/* The command is complete: answer it. */
static void finish(struct gh_conn *c, struct imap *s)
{
    const char *tag = s->tag;
    switch (s->pending) {
    case A_CAPABILITY:
        gh_conn_printf(c, "* CAPABILITY ");
        capability_list(c);
        gh_conn_printf(c, "\r\n%s OK CAPABILITY completed\r\n", tag);
        break;
    case A_NOOP:
        gh_conn_printf(c, "%s OK NOOP completed\r\n", tag);
        break;
    case A_LOGOUT:
        gh_conn_printf(c, "* BYE %s logging out\r\n%s OK LOGOUT completed\r\n", gh_conn_hostname(c),
                       tag);
        stop(c, s);
        break;
    case A_STARTTLS:
        starttls(c, s);
        break;
    case A_LOGIN:
        if (gh_conn_can_starttls(c))
            gh_conn_printf(c, "%s NO [PRIVACYREQUIRED] Use STARTTLS first\r\n", tag);
        else
            gh_conn_printf(c,
                           "%s NO [UNAVAILABLE] Service temporarily unavailable, try again "
                           "later\r\n",
                           tag);
        break;
    case A_UNAVAILABLE:
        gh_conn_printf(
            c, "%s NO [UNAVAILABLE] Service temporarily unavailable, try again later\r\n", tag);
        break;
    case A_UNKNOWN:
        error_reply(c, s, tag, "BAD Unknown command");
        break;
    case A_ARGS:
        error_reply(c, s, tag, "BAD Invalid arguments");
        break;
    case A_NO_CMD:
        error_reply(c, s, tag, "BAD Missing command");
        break;
    case A_BAD_TAG:
        error_reply(c, s, "*", "BAD Missing or invalid tag");
        break;
    }
}

static void line_in(struct gh_conn *c, struct imap *s, const char *line, size_t len)
{
    if (!s->continued)
        begin(s, line, len);
    s->continued = false;
    uint64_t n;
    bool nonsync;
    if (gh_line_literal(line, len, &n, &nonsync) && nonsync) {
        if (n > IMAP_MAX_LITERAL) {
            /* Its bytes are on their way and cannot be told apart from commands: end here. */
            gh_conn_printf(c, "* BYE [TOOBIG] Literal too large\r\n");
            stop(c, s);
            return;
        }
        s->literal = n;
        s->continued = true;
        return;
    }
    /* A synchronizing literal waits for "+": answering now tells the client not to send
     * it (RFC 9051 §7.5). */
    finish(c, s);
}

static void imap_input(struct gh_conn *c)
{
    struct imap *s = c->proto_state;
    bool active = false;
    while (s && !s->stopped && gh_buf_len(&c->out) < GH_LINE_OUT_MAX) {
        if (s->literal && !gh_line_skip(&c->in, &s->literal))
            break;
        char *line;
        size_t len;
        enum gh_line_result r = gh_line_take(&c->in, IMAP_MAX_LINE, &s->skipping, &line, &len);
        if (r == GH_LINE_MORE)
            break;
        active = true;
        if (r == GH_LINE_TOO_LONG) {
            bool tagged = s->continued && s->tag[0];
            s->continued = false;
            error_reply(c, s, tagged ? s->tag : "*", "BAD [TOOBIG] Line too long");
        } else {
            line_in(c, s, line, len);
        }
    }
    /* Only complete commands count as activity, so a trickle of bytes cannot hold a slot. */
    if (s && active && !s->stopped)
        gh_conn_set_idle(c, gh_line_idle_ms(IMAP_IDLE_MS));
}

static void imap_open(struct gh_conn *c)
{
    struct imap *s = calloc(1, sizeof *s);
    if (!s) {
        gh_conn_close(c);
        return;
    }
    c->proto_state = s;
    gh_conn_printf(c, "* OK [CAPABILITY ");
    capability_list(c);
    gh_conn_printf(c, "] %s ready\r\n", gh_conn_hostname(c));
    gh_conn_set_idle(c, gh_line_idle_ms(IMAP_IDLE_MS));
}

static void imap_tls_ready(struct gh_conn *c)
{
    struct imap *s = c->proto_state;
    if (!s)
        return;
    /* RFC 9051 §6.2.1: the client asks for the capabilities again; nothing is sent. */
    *s = (struct imap){.errors = s->errors};
    gh_conn_set_idle(c, gh_line_idle_ms(IMAP_IDLE_MS));
    imap_input(c);
}

static void goodbye(struct gh_conn *c, const char *fmt)
{
    struct imap *s = c->proto_state;
    if (s && s->stopped) {
        /* Already saying goodbye, or inside a TLS handshake where plaintext cannot go. */
        gh_conn_close_after_flush(c);
        return;
    }
    gh_conn_printf(c, fmt, gh_conn_hostname(c));
    if (s)
        s->stopped = true;
    gh_conn_close_after_flush(c);
}

static void imap_idle(struct gh_conn *c)
{
    goodbye(c, "* BYE %s autologout; idle for too long\r\n");
}

static void imap_shutdown(struct gh_conn *c)
{
    goodbye(c, "* BYE %s shutting down\r\n");
}

static void imap_release(struct gh_conn *c)
{
    free(c->proto_state);
    c->proto_state = NULL;
}

const struct gh_proto gh_proto_imap = {
    .name = "imap",
    .open = imap_open,
    .input = imap_input,
    .tls_ready = imap_tls_ready,
    .idle = imap_idle,
    .shutdown = imap_shutdown,
    .release = imap_release,
    .over_limit = "* BYE Too many connections\r\n",
    .unavailable = "* BYE [UNAVAILABLE] Service not available\r\n",
};

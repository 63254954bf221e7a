/*
 * imap: the not-authenticated state of IMAP (RFC 9051 and RFC 3501): greeting with its
 * capabilities, CAPABILITY, NOOP, LOGOUT and STARTTLS. Without a destination to hand the
 * session to, LOGIN and every other real command get NO [UNAVAILABLE]. Literals are skipped,
 * so their bytes are never read as commands.
 */
#include "proto/proto.h"

#include <stddef.h>
#include <string.h>

#include "proto/line.h"

#define IMAP_MAX_LINE    8192             /* a command line, literals apart */
#define IMAP_MAX_LITERAL 4096             /* LITERAL- (RFC 7888), part of IMAP4rev2 */
#define IMAP_IDLE_MS     (30 * 60 * 1000) /* RFC 9051 §5.4: at least 30 minutes */
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

/* Owner: the connection (c->proto_state), allocated by gh_line_open, freed by gh_line_release. */
struct imap {
    struct gh_line_reader lines; /* first, where gh_line_* find it; literals: non-synchronizing */
    enum action pending;
    char tag[IMAP_TAG_MAX + 1];
};
_Static_assert(offsetof(struct imap, lines) == 0, "gh_line_* find the reader at proto_state");

/* Real IMAP commands (RFC 9051 and common extensions) that need a mail store. */
static const char *const store_cmds[] = {
    "ID",       "ENABLE",     "SELECT",       "EXAMINE",     "CREATE",   "DELETE",
    "RENAME",   "SUBSCRIBE",  "UNSUBSCRIBE",  "LIST",        "LSUB",     "NAMESPACE",
    "STATUS",   "APPEND",     "IDLE",         "CHECK",       "CLOSE",    "UNSELECT",
    "EXPUNGE",  "SEARCH",     "FETCH",        "STORE",       "COPY",     "MOVE",
    "UID",      "GETQUOTA",   "GETQUOTAROOT", "SETQUOTA",    "GETACL",   "SETACL",
    "MYRIGHTS", "LISTRIGHTS", "GETMETADATA",  "SETMETADATA", "COMPRESS", "UNAUTHENTICATE",
    NULL,
};

static void capability_list(struct gh_conn *c)
{
    /* Before the upgrade no credentials may travel: LOGINDISABLED (RFC 9051 §6.2.3) and
     * no AUTH= mechanism. A listener without TLS lets the administrator's choice stand. */
    if (gh_conn_can_starttls(c))
        gh_conn_printf(c, "IMAP4rev1 IMAP4rev2 STARTTLS LOGINDISABLED");
    else
        gh_conn_printf(c, "IMAP4rev1 IMAP4rev2 AUTH=PLAIN SASL-IR");
}

/* A BAD reply, which counts as an error. */
static void error_reply(struct gh_conn *c, const char *tag, const char *text)
{
    gh_conn_printf(c, "%s ", tag);
    gh_line_error(c, text);
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

/* The first line of a command: note its tag and what it asks for. */
static void begin(struct gh_conn *c, const char *line, size_t len)
{
    struct imap *s = c->proto_state;
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
    else if (gh_line_is_any(verb, verb_len, store_cmds))
        s->pending = A_UNAVAILABLE;
    else
        s->pending = A_UNKNOWN;
}

static void starttls(struct gh_conn *c, struct imap *s)
{
    if (c->tls_active || c->tls_done_once) {
        error_reply(c, s->tag, "BAD TLS already active");
    } else if (!gh_conn_can_starttls(c)) {
        gh_conn_printf(c, "%s NO TLS not available\r\n", s->tag);
    } else {
        gh_conn_printf(c, "%s OK Begin TLS negotiation now\r\n", s->tag);
        gh_line_starttls(c);
    }
}

/* The command is complete: answer it. A synchronizing literal waits for "+": answering now
 * tells the client not to send it (RFC 9051 §7.5). */
static void finish(struct gh_conn *c)
{
    struct imap *s = c->proto_state;
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
        gh_line_stop(c);
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
        error_reply(c, tag, "BAD Unknown command");
        break;
    case A_ARGS:
        error_reply(c, tag, "BAD Invalid arguments");
        break;
    case A_NO_CMD:
        error_reply(c, tag, "BAD Missing command");
        break;
    case A_BAD_TAG:
        error_reply(c, "*", "BAD Missing or invalid tag");
        break;
    }
}

static void too_long(struct gh_conn *c)
{
    struct imap *s = c->proto_state;
    bool tagged = s->lines.continued && s->tag[0];
    error_reply(c, tagged ? s->tag : "*", "BAD [TOOBIG] Line too long");
}

static const struct gh_line_proto imap_lines = {
    .max_line = IMAP_MAX_LINE,
    .idle_ms = IMAP_IDLE_MS,
    .too_many_errors = "* BYE Too many invalid commands\r\n",
    .idle_goodbye = "* BYE %s autologout; idle for too long\r\n",
    .shutdown_goodbye = "* BYE %s shutting down\r\n",
    .max_literal = IMAP_MAX_LITERAL,
    .literal_too_large = "* BYE [TOOBIG] Literal too large\r\n",
    .line = begin,
    .finish = finish,
    .too_long = too_long,
};

static void imap_open(struct gh_conn *c)
{
    if (!gh_line_open(c, sizeof(struct imap), &imap_lines))
        return;
    gh_conn_printf(c, "* OK [CAPABILITY ");
    capability_list(c);
    gh_conn_printf(c, "] %s ready\r\n", gh_conn_hostname(c));
}

static void imap_tls_ready(struct gh_conn *c)
{
    struct imap *s = c->proto_state;
    if (!s)
        return;
    /* RFC 9051 §6.2.1: the client asks for the capabilities again; nothing is sent. */
    *s = (struct imap){.lines = s->lines};
    gh_line_restart(c);
}

const struct gh_proto gh_proto_imap = {
    .name = "imap",
    .open = imap_open,
    .input = gh_line_input,
    .tls_ready = imap_tls_ready,
    .idle = gh_line_idle,
    .shutdown = gh_line_shutdown,
    .release = gh_line_release,
    .over_limit = "* BYE Too many connections\r\n",
    .unavailable = "* BYE [UNAVAILABLE] Service not available\r\n",
};

/*
 * sieve: the non-authenticated state of ManageSieve (RFC 5804): the capability block as
 * greeting, CAPABILITY, NOOP, LOGOUT and STARTTLS (the capabilities are sent again after
 * the handshake). Without a destination, AUTHENTICATE and the script commands get
 * NO (TRYLATER). Literals are skipped, so their bytes are never read as commands.
 */
#include "proto/proto.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "proto/line.h"

#define SIEVE_MAX_LINE    4096             /* a command line, literals apart */
#define SIEVE_MAX_LITERAL (64 * 1024)      /* before login only SASL data is expected */
#define SIEVE_IDLE_MS     (10 * 60 * 1000) /* RFC 5804 names none; as POP3's minimum */
#define SIEVE_TAG_MAX     128

#define SIEVE_EXTENSIONS                                                                           \
    "fileinto reject envelope encoded-character vacation subaddress comparator-i;ascii-numeric "   \
    "relational regex imap4flags copy include variables body enotify environment mailbox date "    \
    "index ihave duplicate mime foreverypart extracttext"

#define TRYLATER "NO (TRYLATER) \"Service temporarily unavailable, try again later\""

/* What a command asks for; decided on its first line, done once its last line is in. */
enum action {
    A_CAPABILITY,
    A_NOOP,
    A_LOGOUT,
    A_STARTTLS,
    A_AUTHENTICATE,
    A_UNAVAILABLE, /* a real ManageSieve command, served by a destination */
    A_UNKNOWN,
    A_ARGS,
};

/* Owner: the connection (c->proto_state), allocated by gh_line_open, freed by gh_line_release. */
struct sieve {
    struct gh_line_reader lines; /* first, where gh_line_* find it */
    enum action pending;
    bool has_tag; /* NOOP's tag, echoed in its reply (RFC 5804 §2.13) */
    char tag[SIEVE_TAG_MAX + 1];
};
_Static_assert(offsetof(struct sieve, lines) == 0, "gh_line_* find the reader at proto_state");

static const char *const script_cmds[] = {
    "HAVESPACE",    "PUTSCRIPT",    "LISTSCRIPTS", "SETACTIVE",      "GETSCRIPT",
    "DELETESCRIPT", "RENAMESCRIPT", "CHECKSCRIPT", "UNAUTHENTICATE", NULL,
};

/* Writes s as a quoted string, escaping what the grammar requires. */
static void put_quoted(struct gh_conn *c, const char *s)
{
    gh_conn_write(c, "\"", 1);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            gh_conn_write(c, "\\", 1);
        gh_conn_write(c, s, 1);
    }
    gh_conn_write(c, "\"", 1);
}

static void capabilities(struct gh_conn *c)
{
    bool upgrade = gh_conn_can_starttls(c);
    gh_conn_printf(c, "\"IMPLEMENTATION\" \"Gatehouse\"\r\n");
    /* RFC 5804 §1.7: an empty SASL list tells the client to negotiate TLS first. */
    gh_conn_printf(c, "\"SASL\" \"%s\"\r\n", upgrade ? "" : "PLAIN");
    gh_conn_printf(c, "\"SIEVE\" \"" SIEVE_EXTENSIONS "\"\r\n");
    /* RFC 5804 §1.7: "enotify" in SIEVE requires the NOTIFY line with its methods. */
    gh_conn_printf(c, "\"NOTIFY\" \"mailto\"\r\n");
    if (upgrade)
        gh_conn_printf(c, "\"STARTTLS\"\r\n");
    gh_conn_printf(c, "\"VERSION\" \"1.0\"\r\n");
}

/* Reads a quoted string that is the whole of args into tag; false when it is not one. */
static bool parse_tag(const char *args, char *tag)
{
    if (*args++ != '"')
        return false;
    size_t n = 0;
    for (; *args && *args != '"'; args++) {
        if (*args == '\\') {
            args++;
            if (*args != '"' && *args != '\\')
                return false;
        }
        if (n == SIEVE_TAG_MAX)
            return false;
        tag[n++] = *args;
    }
    tag[n] = '\0';
    if (*args != '"')
        return false;
    for (args++; *args == ' '; args++)
        ;
    return *args == '\0';
}

/* The first line of a command: note what it asks for. */
static void begin(struct gh_conn *c, const char *line, size_t len)
{
    struct sieve *s = c->proto_state;
    size_t vlen;
    const char *args = gh_line_word(line, &vlen);
    bool bare = *args == '\0';
    s->has_tag = false;
    if (strlen(line) != len || vlen == 0)
        s->pending = A_UNKNOWN;
    else if (gh_line_is(line, vlen, "CAPABILITY"))
        s->pending = bare ? A_CAPABILITY : A_ARGS;
    else if (gh_line_is(line, vlen, "LOGOUT"))
        s->pending = bare ? A_LOGOUT : A_ARGS;
    else if (gh_line_is(line, vlen, "STARTTLS"))
        s->pending = bare ? A_STARTTLS : A_ARGS;
    else if (gh_line_is(line, vlen, "NOOP")) {
        /* A tag sent as a literal is skipped, and the reply goes without it. */
        if (bare || *args == '{')
            s->pending = A_NOOP;
        else
            s->pending = (s->has_tag = parse_tag(args, s->tag)) ? A_NOOP : A_ARGS;
    } else if (gh_line_is(line, vlen, "AUTHENTICATE"))
        s->pending = A_AUTHENTICATE;
    else if (gh_line_is_any(line, vlen, script_cmds))
        s->pending = A_UNAVAILABLE;
    else
        s->pending = A_UNKNOWN;
}

static void starttls(struct gh_conn *c, struct sieve *s)
{
    if (c->tls_active || c->tls_done_once) {
        gh_line_error(c, "NO \"TLS already active\"");
    } else if (!gh_conn_can_starttls(c)) {
        gh_line_error(c, "NO \"TLS not available\"");
    } else {
        gh_conn_printf(c, "OK \"Begin TLS negotiation now\"\r\n");
        gh_line_starttls(c);
    }
}

/* The command is complete: answer it. */
static void finish(struct gh_conn *c)
{
    struct sieve *s = c->proto_state;
    switch (s->pending) {
    case A_CAPABILITY:
        capabilities(c);
        gh_conn_printf(c, "OK \"Capability completed\"\r\n");
        break;
    case A_NOOP:
        if (s->has_tag) {
            gh_conn_printf(c, "OK (TAG ");
            put_quoted(c, s->tag);
            gh_conn_printf(c, ") \"Done\"\r\n");
        } else {
            gh_conn_printf(c, "OK \"Done\"\r\n");
        }
        break;
    case A_LOGOUT:
        gh_conn_printf(c, "OK \"Logout completed\"\r\n");
        gh_line_stop(c);
        break;
    case A_STARTTLS:
        starttls(c, s);
        break;
    case A_AUTHENTICATE:
        if (gh_conn_can_starttls(c))
            gh_conn_printf(c, "NO (ENCRYPT-NEEDED) \"Use STARTTLS first\"\r\n");
        else
            gh_conn_printf(c, TRYLATER "\r\n");
        break;
    case A_UNAVAILABLE:
        gh_conn_printf(c, TRYLATER "\r\n");
        break;
    case A_UNKNOWN:
        gh_line_error(c, "NO \"Unknown command\"");
        break;
    case A_ARGS:
        gh_line_error(c, "NO \"Invalid arguments\"");
        break;
    }
}

static const struct gh_line_proto sieve_lines = {
    .max_line = SIEVE_MAX_LINE,
    .idle_ms = SIEVE_IDLE_MS,
    .too_many_errors = "BYE \"Too many invalid commands\"\r\n",
    .idle_goodbye = "BYE \"Idle timeout, closing connection\"\r\n",
    .shutdown_goodbye = "BYE \"shutting down\"\r\n",
    .max_literal = SIEVE_MAX_LITERAL,
    .literal_too_large = "BYE \"Literal too large\"\r\n",
    .sync_literal_follows = true, /* no continuation request: {N} and {N+} both follow */
    .line = begin,
    .finish = finish,
    .too_long_reply = "NO \"Line too long\"",
};

static void sieve_open(struct gh_conn *c)
{
    if (!gh_line_open(c, sizeof(struct sieve), &sieve_lines))
        return;
    capabilities(c);
    char text[320];
    snprintf(text, sizeof text, "%s ready", gh_conn_hostname(c));
    gh_conn_printf(c, "OK ");
    put_quoted(c, text);
    gh_conn_printf(c, "\r\n");
}

static void sieve_tls_ready(struct gh_conn *c)
{
    struct sieve *s = c->proto_state;
    if (!s)
        return;
    *s = (struct sieve){.lines = s->lines};
    /* RFC 5804 §2.2: after the handshake the server sends its capabilities again. */
    capabilities(c);
    gh_conn_printf(c, "OK \"TLS negotiation successful\"\r\n");
    gh_line_restart(c);
}

const struct gh_proto gh_proto_managesieve = {
    .name = "manageSieve",
    .open = sieve_open,
    .input = gh_line_input,
    .tls_ready = sieve_tls_ready,
    .idle = gh_line_idle,
    .shutdown = gh_line_shutdown,
    .release = gh_line_release,
    .over_limit = "BYE \"Too many connections\"\r\n",
    .unavailable = "BYE (TRYLATER) \"Service not available\"\r\n",
    .greets_after_tls = true,
};

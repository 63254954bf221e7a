/*
 * sieve: the non-authenticated state of ManageSieve (RFC 5804): the capability block as
 * greeting, CAPABILITY, NOOP, LOGOUT and STARTTLS (the capabilities are sent again after
 * the handshake). Without a destination, AUTHENTICATE and the script commands get
 * NO (TRYLATER). Literals are skipped, so their bytes are never read as commands.
 */
#include "proto/proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/line.h"

#define SIEVE_MAX_LINE    4096             /* a command line, literals apart */
#define SIEVE_MAX_LITERAL (64 * 1024)      /* before login only SASL data is expected */
#define SIEVE_IDLE_MS     (10 * 60 * 1000) /* RFC 5804 names none; as POP3's minimum */
#define SIEVE_MAX_ERRORS  20               /* error replies before the session is dropped */
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

/* Owner: the connection (c->proto_state), freed by sieve_release. */
struct sieve {
    bool skipping;    /* the line reader is discarding the rest of an over-long line */
    bool stopped;     /* LOGOUT, STARTTLS or a goodbye: input that follows is not ours */
    bool continued;   /* the next line continues the current command, after a literal */
    uint64_t literal; /* bytes of a literal still to discard */
    enum action pending;
    bool has_tag; /* NOOP's tag, echoed in its reply (RFC 5804 §2.13) */
    char tag[SIEVE_TAG_MAX + 1];
    unsigned errors;
};

static const char *const script_cmds[] = {
    "HAVESPACE",    "PUTSCRIPT",    "LISTSCRIPTS", "SETACTIVE",      "GETSCRIPT",
    "DELETESCRIPT", "RENAMESCRIPT", "CHECKSCRIPT", "UNAUTHENTICATE",
};

static void stop(struct gh_conn *c, struct sieve *s)
{
    s->stopped = true;
    gh_conn_close_after_flush(c);
}

static void error_reply(struct gh_conn *c, struct sieve *s, const char *reply)
{
    gh_conn_printf(c, "%s\r\n", reply);
    if (++s->errors >= SIEVE_MAX_ERRORS) {
        gh_conn_printf(c, "BYE \"Too many invalid commands\"\r\n");
        stop(c, s);
    }
}

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

static bool is_script_cmd(const char *verb, size_t len)
{
    for (size_t i = 0; i < sizeof script_cmds / sizeof *script_cmds; i++)
        if (gh_line_is(verb, len, script_cmds[i]))
            return true;
    return false;
}

/* The first line of a command: note what it asks for. */
static void begin(struct sieve *s, const char *line, size_t len)
{
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
    else if (is_script_cmd(line, vlen))
        s->pending = A_UNAVAILABLE;
    else
        s->pending = A_UNKNOWN;
}

static void starttls(struct gh_conn *c, struct sieve *s)
{
    if (c->tls_active || c->tls_done_once) {
        error_reply(c, s, "NO \"TLS already active\"");
    } else if (!gh_conn_can_starttls(c)) {
        error_reply(c, s, "NO \"TLS not available\"");
    } else {
        gh_conn_printf(c, "OK \"Begin TLS negotiation now\"\r\n");
        /* Commands pipelined behind STARTTLS were sent in plaintext: never act on them. */
        s->stopped = true;
        gh_conn_starttls(c);
    }
}

/* The command is complete: answer it. */
static void finish(struct gh_conn *c, struct sieve *s)
{
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
        stop(c, s);
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
        error_reply(c, s, "NO \"Unknown command\"");
        break;
    case A_ARGS:
        error_reply(c, s, "NO \"Invalid arguments\"");
        break;
    }
}

static void line_in(struct gh_conn *c, struct sieve *s, const char *line, size_t len)
{
    if (!s->continued)
        begin(s, line, len);
    s->continued = false;
    uint64_t n;
    bool nonsync;
    /* ManageSieve has no continuation request: the bytes of {N} and {N+} both follow. */
    if (gh_line_literal(line, len, &n, &nonsync)) {
        if (n > SIEVE_MAX_LITERAL) {
            gh_conn_printf(c, "BYE \"Literal too large\"\r\n");
            stop(c, s);
            return;
        }
        s->literal = n;
        s->continued = true;
        return;
    }
    finish(c, s);
}

static void sieve_input(struct gh_conn *c)
{
    struct sieve *s = c->proto_state;
    bool active = false;
    while (s && !s->stopped && gh_buf_len(&c->out) < GH_LINE_OUT_MAX) {
        if (s->literal && !gh_line_skip(&c->in, &s->literal))
            break;
        char *line;
        size_t len;
        enum gh_line_result r = gh_line_take(&c->in, SIEVE_MAX_LINE, &s->skipping, &line, &len);
        if (r == GH_LINE_MORE)
            break;
        active = true;
        if (r == GH_LINE_TOO_LONG) {
            s->continued = false;
            error_reply(c, s, "NO \"Line too long\"");
        } else {
            line_in(c, s, line, len);
        }
    }
    /* Only complete commands count as activity, so a trickle of bytes cannot hold a slot. */
    if (s && active && !s->stopped)
        gh_conn_set_idle(c, gh_line_idle_ms(SIEVE_IDLE_MS));
}

static void sieve_open(struct gh_conn *c)
{
    struct sieve *s = calloc(1, sizeof *s);
    if (!s) {
        gh_conn_close(c);
        return;
    }
    c->proto_state = s;
    capabilities(c);
    char text[320];
    snprintf(text, sizeof text, "%s ready", gh_conn_hostname(c));
    gh_conn_printf(c, "OK ");
    put_quoted(c, text);
    gh_conn_printf(c, "\r\n");
    gh_conn_set_idle(c, gh_line_idle_ms(SIEVE_IDLE_MS));
}

static void sieve_tls_ready(struct gh_conn *c)
{
    struct sieve *s = c->proto_state;
    if (!s)
        return;
    *s = (struct sieve){.errors = s->errors};
    /* RFC 5804 §2.2: after the handshake the server sends its capabilities again. */
    capabilities(c);
    gh_conn_printf(c, "OK \"TLS negotiation successful\"\r\n");
    gh_conn_set_idle(c, gh_line_idle_ms(SIEVE_IDLE_MS));
    sieve_input(c);
}

/* Marks the session as ending; false when it already was (a goodbye was said, or a TLS
 * handshake is running where plaintext cannot go), and then it only closes. */
static bool say_goodbye(struct gh_conn *c)
{
    struct sieve *s = c->proto_state;
    if (s && s->stopped)
        return false;
    if (s)
        s->stopped = true;
    return true;
}

static void sieve_idle(struct gh_conn *c)
{
    if (say_goodbye(c))
        gh_conn_printf(c, "BYE \"Idle timeout, closing connection\"\r\n");
    gh_conn_close_after_flush(c);
}

static void sieve_shutdown(struct gh_conn *c)
{
    if (say_goodbye(c))
        gh_conn_printf(c, "BYE \"shutting down\"\r\n");
    gh_conn_close_after_flush(c);
}

static void sieve_release(struct gh_conn *c)
{
    free(c->proto_state);
    c->proto_state = NULL;
}

const struct gh_proto gh_proto_managesieve = {
    .name = "manageSieve",
    .open = sieve_open,
    .input = sieve_input,
    .tls_ready = sieve_tls_ready,
    .idle = sieve_idle,
    .shutdown = sieve_shutdown,
    .release = sieve_release,
    .over_limit = "BYE \"Too many connections\"\r\n",
    .unavailable = "BYE (TRYLATER) \"Service not available\"\r\n",
    .greets_after_tls = true,
};

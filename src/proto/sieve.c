/*
 * sieve: the non-authenticated state of ManageSieve (RFC 5804): the capability block as
 * greeting, CAPABILITY, NOOP, LOGOUT and STARTTLS (the capabilities are sent again after
 * the handshake). Without a destination, AUTHENTICATE and the script commands get
 * NO (TRYLATER). Literals are skipped, so their bytes are never read as commands.
 */
#include "proto/proto.h"

#include <openssl/evp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proto/frontauth.h"
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
    A_MECH, /* AUTHENTICATE with a mechanism other than PLAIN */
    A_DONE, /* answered already (a login under way at the auth service) */
};

#define SASL_B64_MAX 2048 /* a PLAIN response: user, password and authzid in base64 */

/* Owner: the connection (c->proto_state), allocated by gh_line_open, freed by gh_line_release. */
struct sieve {
    struct gh_line_reader lines; /* first, where gh_line_* find it */
    enum action pending;
    bool has_tag; /* NOOP's tag, echoed in its reply (RFC 5804 §2.13) */
    char tag[SIEVE_TAG_MAX + 1];
    bool sasl_wait;           /* AUTHENTICATE sent "": the next line is the response */
    size_t capture;           /* a response sent as a literal of this many bytes is awaited */
    struct gh_front_auth *fa; /* logins through the listener's auth service; owned */
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

/* ---- logins through the auth service ---- */

static void sieve_failed(struct gh_conn *c, bool temporary, const char *message,
                         const char *smtp_code, bool last)
{
    struct sieve *s = c->proto_state;
    if (temporary) {
        gh_conn_printf(c, TRYLATER "\r\n");
    } else if (!s->fa || s->fa->stage != 3) { /* the backend's own NO went out already */
        gh_conn_printf(c, "NO ");
        put_quoted(c, message ? message : "Authentication failed");
        gh_conn_printf(c, "\r\n");
    }
    if (last)
        gh_conn_printf(c, "BYE \"Too many failed logins\"\r\n");
}

static void sieve_input(struct gh_conn *c);

static void sieve_resume(struct gh_conn *c)
{
    struct sieve *s = c->proto_state;
    s->lines.stopped = false;
    sieve_input(c);
}

/* Stages: 0 capabilities until OK, 1 AUTHENTICATE sent, 3 refused (reply passed on). */
static enum gh_login_step sieve_backend_line(struct gh_front_auth *fa, struct gh_conn *c,
                                             const char *line, size_t len,
                                             struct gh_buf *to_backend)
{
    bool ok = !strncasecmp(line, "OK", 2),
         no = !strncasecmp(line, "NO", 2) || !strncasecmp(line, "BYE", 3);
    if (fa->stage == 0 && ok) {
        char raw[2 * GH_AUTH_USER_MAX + 2];
        unsigned char b64[sizeof raw * 4 / 3 + 8];
        size_t n = 0;
        raw[n++] = 0;
        memcpy(raw + n, fa->user, fa->user_len);
        n += fa->user_len;
        raw[n++] = 0;
        memcpy(raw + n, fa->pass, fa->pass_len);
        n += fa->pass_len;
        EVP_EncodeBlock(b64, (const unsigned char *)raw, (int)n);
        gh_buf_printf(to_backend, "AUTHENTICATE \"PLAIN\" \"%s\"\r\n", (char *)b64);
        explicit_bzero(raw, sizeof raw);
        explicit_bzero(b64, sizeof b64);
        fa->stage = 1;
        return GH_LOGIN_CONTINUE;
    }
    if (fa->stage == 1 && ok) {
        gh_conn_printf(c, "%s\r\n", line);
        return GH_LOGIN_DONE;
    }
    if (fa->stage == 1 && no) {
        gh_conn_printf(c, "%s\r\n", line);
        fa->stage = 3;
        return GH_LOGIN_REFUSED;
    }
    if (!no)
        return GH_LOGIN_CONTINUE; /* capabilities, a challenge */
    gh_conn_printf(c, TRYLATER "\r\n");
    fa->stage = 3;
    return GH_LOGIN_REFUSED;
}

static const struct gh_front_auth_ops sieve_auth = {
    .protocol = "sieve",
    .need_pass = true,
    .failed = sieve_failed,
    .backend_line = sieve_backend_line,
    .resume = sieve_resume,
};

/* The PLAIN response, base64 text: starts the login or answers NO. */
static void sasl_response(struct gh_conn *c, struct sieve *s, const char *b64, size_t len)
{
    char user[GH_FRONT_USER_MAX + 1], pass[GH_FRONT_PASS_MAX + 1];
    size_t ul, pl;
    if (len == 1 && b64[0] == '*') {
        gh_line_error(c, "NO \"Authentication cancelled\"");
    } else if (!gh_sasl_plain(b64, len, user, &ul, pass, &pl)) {
        gh_line_error(c, "NO \"Invalid SASL PLAIN response\"");
    } else {
        s->lines.stopped = true; /* until the verdict */
        gh_front_auth_start(&s->fa, c, &sieve_auth, NULL, user, ul, pass, pl);
    }
    explicit_bzero(pass, sizeof pass);
}

/* A quoted string that runs to the end of text (spaces allowed after it) into out. */
static bool parse_quoted(const char *text, char *out, size_t cap, size_t *out_len)
{
    if (*text++ != '"')
        return false;
    size_t n = 0;
    for (; *text && *text != '"'; text++) {
        if (*text == '\\' && (text[1] == '"' || text[1] == '\\'))
            text++;
        else if (*text == '\\')
            return false;
        if (n + 1 >= cap)
            return false;
        out[n++] = *text;
    }
    if (*text != '"')
        return false;
    for (text++; *text == ' '; text++)
        ;
    out[n] = 0;
    *out_len = n;
    return *text == '\0';
}

/* The response as a string argument: quoted (answered now) or a literal (captured from
 * the input, see sieve_input). False when it is neither. */
static bool sasl_value(struct gh_conn *c, struct sieve *s, const char *text)
{
    char b64[SASL_B64_MAX + 1];
    size_t n;
    uint64_t lit;
    bool nonsync;
    if (parse_quoted(text, b64, sizeof b64, &n)) {
        sasl_response(c, s, b64, n);
        return true;
    }
    if (gh_line_literal(text, strlen(text), &lit, &nonsync) && *text == '{' && lit &&
        lit <= SASL_B64_MAX) {
        s->capture = (size_t)lit;
        s->lines.stopped = true; /* the literal is read by sieve_input, not skipped */
        return true;
    }
    return false;
}

/* AUTHENTICATE on a listener served by an auth service; false leaves the command to the
 * usual answers (STARTTLS first). */
static bool front_login(struct gh_conn *c, struct sieve *s, const char *args)
{
    if (!gh_front_auth_serves(c) || gh_conn_can_starttls(c))
        return false;
    char mech[32];
    size_t n;
    const char *end = strchr(args + (*args == '"'), '"');
    const char *rest = end ? end + 1 : "";
    while (*rest == ' ')
        rest++;
    char first[64];
    size_t flen = end ? (size_t)(end + 1 - args) : 0;
    if (!end || flen >= sizeof first) {
        s->pending = A_ARGS;
        return true;
    }
    memcpy(first, args, flen);
    first[flen] = 0;
    if (!parse_quoted(first, mech, sizeof mech, &n) || strcasecmp(mech, "PLAIN")) {
        s->pending = end ? A_MECH : A_ARGS;
        return true;
    }
    s->pending = A_DONE;
    if (!*rest) {
        gh_conn_printf(c, "\"\"\r\n"); /* an empty challenge: the response follows */
        s->sasl_wait = true;
    } else if (!sasl_value(c, s, rest)) {
        s->pending = A_ARGS;
    }
    return true;
}

/* The literal response, once it and the line end after it are in; false while they are
 * not (or the session ended). */
static bool take_literal_response(struct gh_conn *c, struct sieve *s)
{
    size_t have = gh_buf_len(&c->in);
    const char *head = gh_buf_head(&c->in);
    if (have < s->capture)
        return false;
    const char *nl = memchr(head + s->capture, '\n', have - s->capture);
    if (!nl)
        return false; /* the command's line end is still to come */
    char b64[SASL_B64_MAX + 1];
    size_t n = s->capture;
    memcpy(b64, head, n);
    b64[n] = 0;
    bool clean = (size_t)(nl - head) == n || ((size_t)(nl - head) == n + 1 && head[n] == '\r');
    gh_conn_consume(c, (size_t)(nl - head) + 1);
    s->capture = 0;
    s->lines.stopped = false;
    if (!clean || strlen(b64) != n)
        gh_line_error(c, "NO \"Invalid SASL PLAIN response\"");
    else
        sasl_response(c, s, b64, n);
    explicit_bzero(b64, sizeof b64);
    return !c->closed;
}

/* gh_proto.input: a response sent as a literal is taken here (the line reader would skip
 * it), then lines as usual. */
static void sieve_input(struct gh_conn *c)
{
    for (;;) {
        struct sieve *s = c->proto_state;
        if (!s || c->closed)
            return;
        if (s->capture && !take_literal_response(c, s))
            return;
        if (s->lines.stopped)
            return; /* a login under way */
        gh_line_input(c);
        s = c->proto_state;
        if (c->closed || !s || !s->capture)
            return;
        /* the command line announced a literal that may already be here */
    }
}

/* The first line of a command: note what it asks for. */
static void begin(struct gh_conn *c, const char *line, size_t len)
{
    struct sieve *s = c->proto_state;
    size_t vlen;
    const char *args = gh_line_word(line, &vlen);
    bool bare = *args == '\0';
    s->has_tag = false;
    if (s->sasl_wait) {
        s->sasl_wait = false;
        s->pending = A_DONE;
        if (strlen(line) != len || !sasl_value(c, s, line))
            gh_line_error(c, "NO \"Invalid SASL PLAIN response\"");
        return;
    }
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
    } else if (gh_line_is(line, vlen, "AUTHENTICATE") && front_login(c, s, args))
        return;
    else if (gh_line_is(line, vlen, "AUTHENTICATE"))
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
    case A_MECH:
        gh_conn_printf(c, "NO \"Unsupported authentication mechanism\"\r\n");
        break;
    case A_DONE:
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
    *s = (struct sieve){.lines = s->lines, .fa = s->fa};
    /* RFC 5804 §2.2: after the handshake the server sends its capabilities again. */
    capabilities(c);
    gh_conn_printf(c, "OK \"TLS negotiation successful\"\r\n");
    gh_line_restart(c);
}

static void sieve_release(struct gh_conn *c)
{
    struct sieve *s = c->proto_state;
    if (s)
        gh_front_auth_free(s->fa);
    gh_line_release(c);
}

const struct gh_proto gh_proto_managesieve = {
    .name = "manageSieve",
    .open = sieve_open,
    .input = sieve_input,
    .tls_ready = sieve_tls_ready,
    .idle = gh_line_idle,
    .shutdown = gh_line_shutdown,
    .release = sieve_release,
    .over_limit = "BYE \"Too many connections\"\r\n",
    .unavailable = "BYE (TRYLATER) \"Service not available\"\r\n",
    .end_command = "LOGOUT",
    .greets_after_tls = true,
};

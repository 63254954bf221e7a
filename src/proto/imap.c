/*
 * imap: the not-authenticated state of IMAP (RFC 9051 and RFC 3501): greeting with its
 * capabilities, CAPABILITY, NOOP, LOGOUT and STARTTLS. Without a destination to hand the
 * session to, LOGIN and every other real command get NO [UNAVAILABLE]. Literals are skipped,
 * so their bytes are never read as commands.
 */
#include "proto/proto.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proto/frontauth.h"
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
    A_DONE, /* answered already (a login under way at the auth service) */
};

/* LOGIN's arguments while they arrive as literals. Owner: struct imap (acc). */
struct login_acc {
    char v[2][GH_FRONT_PASS_MAX + 1];
    size_t len[2];
    unsigned n;
    size_t capture; /* bytes of a literal still to come before the rest of the line */
};

/* Owner: the connection (c->proto_state), allocated by gh_line_open, freed by gh_line_release. */
struct imap {
    struct gh_line_reader lines; /* first, where gh_line_* find it; literals: non-synchronizing */
    enum action pending;
    char tag[IMAP_TAG_MAX + 1];
    bool sasl_wait;           /* AUTHENTICATE PLAIN sent "+": the next line is the response */
    struct login_acc *acc;    /* LOGIN with literals, being read; owned */
    struct gh_front_auth *fa; /* logins through the listener's auth service; owned */
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

/* ---- logins through the auth service ---- */

static void imap_failed(struct gh_conn *c, bool temporary, const char *message,
                        const char *smtp_code, bool last)
{
    struct imap *s = c->proto_state;
    const char *tag = s->fa && s->fa->tag[0] ? s->fa->tag : "*";
    if (temporary)
        gh_conn_printf(
            c, "%s NO [UNAVAILABLE] Service temporarily unavailable, try again later\r\n", tag);
    else if (!s->fa || s->fa->stage != 3) /* the backend's own NO was passed on already */
        gh_conn_printf(c, "%s NO [AUTHENTICATIONFAILED] %s\r\n", tag,
                       message ? message : "Authentication failed");
    if (last)
        gh_conn_printf(c, "* BYE Too many failed logins\r\n");
}

static void imap_input(struct gh_conn *c);

static void imap_resume(struct gh_conn *c)
{
    struct imap *s = c->proto_state;
    s->lines.stopped = false;
    imap_input(c);
}

/* A string IMAP can carry quoted: printable ASCII, not too long. */
static bool quotable(const char *v, size_t n)
{
    if (n > 1000)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] < 0x20 || (unsigned char)v[i] > 0x7e)
            return false;
    return true;
}

/* Appends v as an astring; a literal ends the current piece (a NUL marks where the backend's
 * "+" is awaited) and its bytes begin the next. */
static void astring(struct gh_buf *b, const char *v, size_t n)
{
    if (quotable(v, n)) {
        gh_buf_append(b, "\"", 1);
        for (size_t i = 0; i < n; i++) {
            if (v[i] == '"' || v[i] == '\\')
                gh_buf_append(b, "\\", 1);
            gh_buf_append(b, v + i, 1);
        }
        gh_buf_append(b, "\"", 1);
    } else {
        gh_buf_printf(b, "{%zu}\r\n", n);
        gh_buf_append(b, "", 1);
        gh_buf_append(b, v, n);
    }
}

/* Sends the next piece of the LOGIN command; true when it was the last. */
static bool send_piece(struct gh_front_auth *fa, struct gh_buf *to_backend)
{
    const char *head = gh_buf_head(&fa->pieces);
    size_t len = gh_buf_len(&fa->pieces);
    const char *nul = memchr(head, 0, len);
    size_t n = nul ? (size_t)(nul - head) : len;
    gh_buf_append(to_backend, head, n);
    gh_buf_consume(&fa->pieces, nul ? n + 1 : n);
    return !nul;
}

/* Stages: 0 greeting, 1 waiting for "+" (literals), 2 waiting for the tagged reply,
 * 3 refused (the backend's NO went to the client). */
static enum gh_login_step imap_backend_line(struct gh_front_auth *fa, struct gh_conn *c,
                                            const char *line, size_t len, struct gh_buf *to_backend)
{
    size_t tl = strlen(fa->tag);
    if (fa->stage == 0) {
        if (strncasecmp(line, "* OK", 4)) {
            gh_conn_printf(c,
                           "%s NO [UNAVAILABLE] Service temporarily unavailable, try again "
                           "later\r\n",
                           fa->tag);
            fa->stage = 3;
            return GH_LOGIN_REFUSED;
        }
        gh_buf_clear(&fa->pieces);
        gh_buf_printf(&fa->pieces, "%s LOGIN ", fa->tag);
        astring(&fa->pieces, fa->user, fa->user_len);
        gh_buf_append(&fa->pieces, " ", 1);
        astring(&fa->pieces, fa->pass, fa->pass_len);
        gh_buf_append(&fa->pieces, "\r\n", 2);
        fa->stage = send_piece(fa, to_backend) ? 2 : 1;
        return GH_LOGIN_CONTINUE;
    }
    if (fa->stage == 1 && line[0] == '+') {
        fa->stage = send_piece(fa, to_backend) ? 2 : 1;
        return GH_LOGIN_CONTINUE;
    }
    if (len > tl && !strncmp(line, fa->tag, tl) && line[tl] == ' ') {
        gh_conn_printf(c, "%s\r\n", line); /* the client's own command, the backend's answer */
        if (!strncasecmp(line + tl + 1, "OK", 2))
            return GH_LOGIN_DONE;
        fa->stage = 3;
        return GH_LOGIN_REFUSED;
    }
    if (line[0] == '*') {
        gh_conn_printf(c, "%s\r\n", line); /* untagged data (capabilities) goes through */
        return GH_LOGIN_CONTINUE;
    }
    gh_conn_printf(c, "%s NO [UNAVAILABLE] Service temporarily unavailable, try again later\r\n",
                   fa->tag);
    fa->stage = 3;
    return GH_LOGIN_REFUSED;
}

static const struct gh_front_auth_ops imap_auth = {
    .protocol = "imap",
    .need_pass = true,
    .failed = imap_failed,
    .backend_line = imap_backend_line,
    .resume = imap_resume,
};

/* One astring argument: an atom or a quoted string (literals are not taken here). Returns
 * the rest of the line after it and its spaces, or NULL when malformed. */
static const char *take_astring(const char *p, char *out, size_t cap, size_t *out_len)
{
    size_t n = 0;
    if (*p == '"') {
        for (p++; *p && *p != '"'; p++) {
            if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
                p++;
            else if (*p == '\\')
                return NULL;
            if (n + 1 >= cap)
                return NULL;
            out[n++] = *p;
        }
        if (*p != '"')
            return NULL;
        p++;
    } else {
        for (; *p && *p != ' '; p++) {
            if (strchr("(){%*\"\\", *p) || (unsigned char)*p < 0x20 || n + 1 >= cap)
                return NULL;
            out[n++] = *p;
        }
        if (!n)
            return NULL;
    }
    if (*p && *p != ' ')
        return NULL;
    while (*p == ' ')
        p++;
    out[n] = 0;
    *out_len = n;
    return p;
}

static void start_login(struct gh_conn *c, struct imap *s, const char *user, size_t ul,
                        const char *pass, size_t pl)
{
    s->pending = A_DONE;
    s->lines.stopped = true; /* until the verdict */
    gh_front_auth_start(&s->fa, c, &imap_auth, s->tag, user, ul, pass, pl);
}

/* LOGIN's arguments in text: astrings into a, and a literal announced at its end sets
 * a->capture (a "+" is sent for a synchronizing one). False when malformed. */
static bool login_values(struct gh_conn *c, struct login_acc *a, const char *text)
{
    const char *p = text;
    while (*p == ' ')
        p++;
    while (*p) {
        uint64_t n;
        bool nonsync;
        if (*p == '{' && !strchr(p, ' ') && gh_line_literal(p, strlen(p), &n, &nonsync)) {
            if (a->n >= 2 || n == 0 || n > GH_FRONT_PASS_MAX)
                return false;
            a->capture = (size_t)n;
            if (!nonsync)
                gh_conn_printf(c, "+ Ready for literal data\r\n");
            return true;
        }
        if (a->n >= 2 || !(p = take_astring(p, a->v[a->n], sizeof a->v[0], &a->len[a->n])))
            return false;
        a->n++;
    }
    return true;
}

static bool login_complete(const struct login_acc *a)
{
    return a->n == 2 && !a->capture && a->len[0] && a->len[0] <= GH_FRONT_USER_MAX &&
           !memchr(a->v[0], 0, a->len[0]) && !memchr(a->v[1], 0, a->len[1]);
}

static void acc_free(struct imap *s)
{
    if (s->acc) {
        explicit_bzero(s->acc, sizeof *s->acc);
        free(s->acc);
        s->acc = NULL;
    }
}

static void login_command(struct gh_conn *c, struct imap *s, const char *args)
{
    struct login_acc a = {0};
    if (!login_values(c, &a, args)) {
        s->pending = A_ARGS;
    } else if (a.capture) {
        /* the literal is read by imap_input, not skipped by the line reader */
        s->pending = A_DONE;
        s->lines.stopped = true;
        if ((s->acc = malloc(sizeof *s->acc)))
            *s->acc = a;
        else
            gh_conn_close(c);
    } else if (!login_complete(&a)) {
        s->pending = A_ARGS;
    } else {
        start_login(c, s, a.v[0], a.len[0], a.v[1], a.len[1]);
    }
    explicit_bzero(&a, sizeof a);
}

/* Reads LOGIN's literals and the rest of its lines; false while more input is needed. */
static bool take_login_literals(struct gh_conn *c, struct imap *s)
{
    struct login_acc *a = s->acc;
    for (;;) {
        if (a->capture) {
            if (gh_buf_len(&c->in) < a->capture)
                return false;
            memcpy(a->v[a->n], gh_buf_head(&c->in), a->capture);
            a->v[a->n][a->capture] = 0;
            a->len[a->n++] = a->capture;
            gh_conn_consume(c, a->capture);
            a->capture = 0;
        }
        char *line;
        size_t len;
        bool skipping = false;
        enum gh_line_result r = gh_line_take(&c->in, IMAP_MAX_LINE, &skipping, &line, &len);
        if (r == GH_LINE_MORE)
            return false;
        bool ok = r == GH_LINE_OK && strlen(line) == len && login_values(c, a, line);
        if (ok && a->capture)
            continue;
        struct login_acc done = *a;
        acc_free(s);
        s->lines.stopped = false;
        if (r == GH_LINE_TOO_LONG) {
            error_reply(c, s->tag, "BAD [TOOBIG] Line too long");
            gh_conn_printf(c, "* BYE Line too long\r\n");
            gh_line_stop(c);
        } else if (!ok || !login_complete(&done)) {
            error_reply(c, s->tag, "BAD Invalid arguments");
        } else {
            start_login(c, s, done.v[0], done.len[0], done.v[1], done.len[1]);
        }
        explicit_bzero(&done, sizeof done);
        return true;
    }
}

static void sasl_response(struct gh_conn *c, struct imap *s, const char *line, size_t len)
{
    char user[GH_FRONT_USER_MAX + 1], pass[GH_FRONT_PASS_MAX + 1];
    size_t ul, pl;
    s->sasl_wait = false;
    s->pending = A_DONE;
    if (len == 1 && line[0] == '*') {
        error_reply(c, s->tag, "BAD Authentication cancelled");
    } else if (!gh_sasl_plain(line, len, user, &ul, pass, &pl)) {
        error_reply(c, s->tag, "BAD Invalid SASL PLAIN response");
    } else {
        start_login(c, s, user, ul, pass, pl);
    }
    explicit_bzero(pass, sizeof pass);
}

static void authenticate_command(struct gh_conn *c, struct imap *s, const char *args)
{
    size_t mlen;
    const char *ir = gh_line_word(args, &mlen);
    s->pending = A_DONE;
    if (!gh_line_is(args, mlen, "PLAIN")) {
        gh_conn_printf(c, "%s NO Unsupported authentication mechanism\r\n", s->tag);
    } else if (!*ir) {
        gh_conn_printf(c, "+ \r\n");
        s->sasl_wait = true;
    } else {
        sasl_response(c, s, ir, strlen(ir));
    }
}

/* LOGIN or AUTHENTICATE on a listener served by an auth service; false leaves the
 * command to the usual answers (STARTTLS first, or a literal this front door skips). */
static bool front_login(struct gh_conn *c, struct imap *s, const char *verb, size_t verb_len,
                        const char *args, size_t line_len)
{
    if (!gh_front_auth_serves(c) || gh_conn_can_starttls(c))
        return false;
    uint64_t n;
    bool nonsync;
    bool login = gh_line_is(verb, verb_len, "LOGIN");
    if (!login && gh_line_literal(args, strlen(args), &n, &nonsync)) {
        s->pending = A_ARGS;
        return true;
    }
    if (login)
        login_command(c, s, args);
    else
        authenticate_command(c, s, args);
    return true;
}

/* The first line of a command: note its tag and what it asks for. */
static void begin(struct gh_conn *c, const char *line, size_t len)
{
    struct imap *s = c->proto_state;
    size_t tag_len, verb_len;
    if (s->sasl_wait) {
        if (strlen(line) != len) {
            s->sasl_wait = false;
            s->pending = A_DONE;
            error_reply(c, s->tag, "BAD Invalid SASL PLAIN response");
        } else {
            sasl_response(c, s, line, len);
        }
        return;
    }
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
    else if ((gh_line_is(verb, verb_len, "LOGIN") || gh_line_is(verb, verb_len, "AUTHENTICATE")) &&
             front_login(c, s, verb, verb_len, args, len))
        return;
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
    case A_DONE:
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

/* gh_proto.input: LOGIN's literals are taken here (the line reader would skip them), then
 * lines as usual. */
static void imap_input(struct gh_conn *c)
{
    for (;;) {
        struct imap *s = c->proto_state;
        if (!s || c->closed)
            return;
        if (s->acc && !take_login_literals(c, s))
            return;
        if (c->closed || s->lines.stopped)
            return;
        gh_line_input(c);
        s = c->proto_state;
        if (c->closed || !s || !s->acc)
            return;
    }
}

static void imap_release(struct gh_conn *c)
{
    struct imap *s = c->proto_state;
    if (s) {
        gh_front_auth_free(s->fa);
        acc_free(s);
    }
    gh_line_release(c);
}

static void imap_tls_ready(struct gh_conn *c)
{
    struct imap *s = c->proto_state;
    if (!s)
        return;
    /* RFC 9051 §6.2.1: the client asks for the capabilities again; nothing is sent. */
    acc_free(s);
    *s = (struct imap){.lines = s->lines, .fa = s->fa};
    gh_line_restart(c);
}

const struct gh_proto gh_proto_imap = {
    .name = "imap",
    .open = imap_open,
    .input = imap_input,
    .tls_ready = imap_tls_ready,
    .idle = gh_line_idle,
    .shutdown = gh_line_shutdown,
    .release = imap_release,
    .over_limit = "* BYE Too many connections\r\n",
    .unavailable = "* BYE [UNAVAILABLE] Service not available\r\n",
    .end_command = "LOGOUT",
};

/*
 * auth_http: nginx's mail auth_http protocol as text. The request mirrors what nginx's
 * mail module sends (same header names, order and percent-encoding) so existing services
 * work unchanged; the answer is read defensively, since a header copied into a client
 * reply or used as a backend address must never carry a line break or a surprise.
 */
#include "auth/auth_http.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- the request ---- */

/* nginx's NGX_ESCAPE_MAIL_AUTH: space, "%" and the bytes 0x00-0x1F; nothing else. */
static bool needs_escape(unsigned char ch)
{
    return ch < 0x20 || ch == ' ' || ch == '%';
}

bool gh_auth_escape(const char *s, size_t n, struct gh_buf *out)
{
    static const char hex[] = "0123456789ABCDEF";
    if (!gh_buf_reserve(out, n * 3))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char *p = out->data + out->end;
        if (needs_escape(ch)) {
            p[0] = '%';
            p[1] = hex[ch >> 4];
            p[2] = hex[ch & 15];
            out->end += 3;
        } else {
            p[0] = (char)ch;
            out->end++;
        }
    }
    return true;
}

/* "Name: value\r\n" with control characters left out of the value: values the client
 * chose (HELO name, envelope) can never start a header of their own. */
static bool add_plain(struct gh_buf *out, const char *name, const char *value)
{
    if (!gh_buf_printf(out, "%s: ", name))
        return false;
    for (const char *p = value ? value : ""; *p; p++)
        if ((unsigned char)*p >= 0x20 && *p != 0x7f && !gh_buf_append(out, p, 1))
            return false;
    return gh_buf_append(out, "\r\n", 2);
}

static bool add_escaped(struct gh_buf *out, const char *name, const char *value, size_t n)
{
    return gh_buf_printf(out, "%s: ", name) && gh_auth_escape(value ? value : "", n, out) &&
           gh_buf_append(out, "\r\n", 2);
}

static bool given(const char *s)
{
    return s && *s;
}

bool gh_auth_request_headers(const struct gh_auth_request *r, struct gh_buf *out)
{
    bool ok = add_plain(out, "Auth-Method", r->method_none ? "none" : "plain") &&
              add_escaped(out, "Auth-User", r->method_none ? "" : r->user,
                          r->method_none ? 0 : r->user_len) &&
              add_escaped(out, "Auth-Pass", r->method_none ? "" : r->pass,
                          r->method_none ? 0 : r->pass_len) &&
              add_plain(out, "Auth-Protocol", r->protocol) &&
              gh_buf_printf(out, "Auth-Login-Attempt: %u\r\n", r->attempt) &&
              add_plain(out, "Client-IP", r->client_ip);
    if (ok && given(r->client_host))
        ok = add_plain(out, "Client-Host", r->client_host);
    if (ok && r->method_none)
        ok = add_plain(out, "Auth-SMTP-Helo", r->smtp_helo) &&
             add_plain(out, "Auth-SMTP-From", r->smtp_from) &&
             add_plain(out, "Auth-SMTP-To", r->smtp_to);
    if (ok && r->ssl) {
        ok = gh_buf_append(out, "Auth-SSL: on\r\n", 14);
        if (ok && given(r->ssl_protocol))
            ok = add_plain(out, "Auth-SSL-Protocol", r->ssl_protocol);
        if (ok && given(r->ssl_cipher))
            ok = add_plain(out, "Auth-SSL-Cipher", r->ssl_cipher);
    }
    return ok;
}

/* ---- the answer ---- */

void gh_auth_answer_init(struct gh_auth_answer *a)
{
    memset(a, 0, sizeof *a);
    a->wait_s = -1;
}

void gh_auth_answer_wipe(struct gh_auth_answer *a)
{
    explicit_bzero(a->pass, sizeof a->pass);
    explicit_bzero(a->user, sizeof a->user);
}

static bool has_control(const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)v[i] < 0x20 && v[i] != '\t') || v[i] == 0x7f)
            return true;
    return false;
}

/* Copies v[0..n) into dst (cap bytes with the NUL); false when it does not fit. */
static bool copy_value(char *dst, size_t cap, const char *v, size_t n)
{
    if (n >= cap)
        return false;
    memcpy(dst, v, n);
    dst[n] = 0;
    return true;
}

/* Digits only, at most max; -1 otherwise. */
static long parse_number(const char *v, size_t n, long max)
{
    if (!n || n > 9)
        return -1;
    long x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (v[i] - '0');
    }
    return x <= max ? x : -1;
}

/* An SMTP reply code nginx would put before the message: "4xx" or "5xx", optionally an
 * enhanced status code; printable, no CR/LF. */
static bool smtp_code(const char *v, size_t n)
{
    if (n < 3 || (v[0] != '4' && v[0] != '5') || v[1] < '0' || v[1] > '9' || v[2] < '0' ||
        v[2] > '9')
        return false;
    for (size_t i = 3; i < n; i++)
        if (!(v[i] == ' ' || v[i] == '.' || (v[i] >= '0' && v[i] <= '9')))
            return false;
    return true;
}

static bool name_is(const char *name, size_t n, const char *want)
{
    return n == strlen(want) && !strncasecmp(name, want, n);
}

static void set_status(struct gh_auth_answer *a, const char *v, size_t n)
{
    a->has_status = true;
    a->status_ok = n == 2 && !memcmp(v, "OK", 2);
    a->status_wait = n == 4 && !memcmp(v, "WAIT", 4);
    if (n >= sizeof a->message)
        n = sizeof a->message - 1;
    memcpy(a->message, v, n);
    a->message[n] = 0;
}

void gh_auth_answer_line(struct gh_auth_answer *a, const char *line, size_t len)
{
    while (len && (line[len - 1] == '\r' || line[len - 1] == '\n'))
        len--;
    const char *colon = memchr(line, ':', len);
    if (!colon || !len || line[0] == ' ' || line[0] == '\t')
        return; /* the status line, the blank end, or a folded line: nothing nginx reads */
    size_t nlen = (size_t)(colon - line);
    const char *v = colon + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    size_t n = (size_t)(end - v);
    bool known = name_is(line, nlen, "Auth-Status") || name_is(line, nlen, "Auth-Server") ||
                 name_is(line, nlen, "Auth-Port") || name_is(line, nlen, "Auth-User") ||
                 name_is(line, nlen, "Auth-Pass") || name_is(line, nlen, "Auth-Wait") ||
                 name_is(line, nlen, "Auth-Error-Code");
    if (!known)
        return;
    if (has_control(v, n)) {
        a->bad = true;
        return;
    }
    if (name_is(line, nlen, "Auth-Status")) {
        set_status(a, v, n);
    } else if (name_is(line, nlen, "Auth-Server")) {
        if (n >= 2 && v[0] == '[' && v[n - 1] == ']') {
            v++;
            n -= 2;
        }
        char tmp[GH_AUTH_SERVER_MAX];
        unsigned char bin[16];
        if (!copy_value(tmp, sizeof tmp, v, n) ||
            (inet_pton(AF_INET, tmp, bin) != 1 && inet_pton(AF_INET6, tmp, bin) != 1))
            a->bad = true;
        else
            memcpy(a->server, tmp, n + 1);
    } else if (name_is(line, nlen, "Auth-Port")) {
        long port = parse_number(v, n, 65535);
        if (port < 1)
            a->bad = true;
        else
            a->port = (unsigned)port;
    } else if (name_is(line, nlen, "Auth-User")) {
        a->has_user = copy_value(a->user, sizeof a->user, v, n);
        a->bad |= !a->has_user;
    } else if (name_is(line, nlen, "Auth-Pass")) {
        a->has_pass = copy_value(a->pass, sizeof a->pass, v, n);
        a->bad |= !a->has_pass;
    } else if (name_is(line, nlen, "Auth-Wait")) {
        long w = parse_number(v, n, 999999999);
        if (w >= 0) /* nginx ignores a value that is not a number */
            a->wait_s = w > GH_AUTH_WAIT_MAX ? GH_AUTH_WAIT_MAX : (int)w;
    } else if (name_is(line, nlen, "Auth-Error-Code")) {
        if (smtp_code(v, n) && n < sizeof a->error_code)
            copy_value(a->error_code, sizeof a->error_code, v, n);
    }
}

enum gh_auth_verdict gh_auth_answer_finish(struct gh_auth_answer *a, long http_status,
                                           bool need_pass, gh_err *err)
{
    if (http_status != 200)
        return gh_fail(err, "the auth service answered HTTP status %ld", http_status),
               GH_AUTH_TEMPFAIL;
    if (a->bad)
        return gh_fail(err, "the auth service sent a malformed or over-long header"),
               GH_AUTH_TEMPFAIL;
    if (!a->has_status)
        return gh_fail(err, "the auth service sent no Auth-Status"), GH_AUTH_TEMPFAIL;
    if (a->status_wait) {
        if (a->wait_s < 1)
            a->wait_s = 1; /* never ask again in a tight loop */
        return GH_AUTH_WAIT;
    }
    if (!a->status_ok)
        return GH_AUTH_FAILED;
    if (!a->server[0] || !a->port)
        return gh_fail(err, "the auth service did not name Auth-Server and Auth-Port"),
               GH_AUTH_TEMPFAIL;
    if (need_pass && !a->has_pass)
        return gh_fail(err, "the auth service did not send Auth-Pass for the backend login"),
               GH_AUTH_TEMPFAIL;
    return GH_AUTH_OK;
}

/* "HTTP/1.x NNN ...": NNN, or 0 when the line is not a status line. */
static long status_code(const char *line, size_t len)
{
    if (len < 12 || strncmp(line, "HTTP/", 5))
        return 0;
    const char *sp = memchr(line, ' ', len);
    if (!sp || (size_t)(line + len - sp) < 4)
        return 0;
    long code = parse_number(sp + 1, 3, 999);
    return code < 100 ? 0 : code;
}

enum gh_auth_verdict gh_auth_answer_parse(struct gh_auth_answer *a, const char *text, size_t len,
                                          bool need_pass, gh_err *err)
{
    long http_status = 0;
    size_t pos = 0;
    bool first = true;
    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - (text + pos)) : len - pos;
        if (first)
            http_status = status_code(text + pos, n);
        else if (n == 0 || (n == 1 && text[pos] == '\r'))
            break; /* the end of the headers */
        else
            gh_auth_answer_line(a, text + pos, n);
        first = false;
        pos += n + (nl != NULL);
    }
    return gh_auth_answer_finish(a, http_status, need_pass, err);
}

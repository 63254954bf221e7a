/*
 * auth_http: the request and answer of nginx's mail auth_http protocol, as text — the
 * header lines a login sends to the service and the parsed headers it answers with. No
 * I/O here (see client.h), so both sides are unit-tested and fuzzed on their own.
 */
#ifndef GH_AUTH_HTTP_H
#define GH_AUTH_HTTP_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/err.h"

#define GH_AUTH_USER_MAX   512 /* a login name or password, as the client or service gives it */
#define GH_AUTH_SERVER_MAX 64  /* an IP address literal */
#define GH_AUTH_MSG_MAX    256 /* Auth-Status text */
#define GH_AUTH_CODE_MAX   32  /* Auth-Error-Code, e.g. "535 5.7.8" */
#define GH_AUTH_WAIT_MAX   300 /* seconds: a larger Auth-Wait is cut to this */

/* One login to ask about. Strings are borrowed; NULL or "" leaves an optional header out. */
struct gh_auth_request {
    bool method_none; /* SMTP without AUTH: "Auth-Method: none", user and password empty */
    const char *user; /* raw bytes: percent-encoded here */
    size_t user_len;
    const char *pass;
    size_t pass_len;
    const char *protocol; /* "smtp", "imap", "pop3", "sieve" */
    unsigned attempt;     /* 1 for the first login of the connection */
    const char *client_ip;
    const char *client_host; /* SMTP: "[UNAVAILABLE]" as nginx sends without a resolver */
    bool ssl;
    const char *ssl_protocol, *ssl_cipher;
    const char *smtp_helo, *smtp_from, *smtp_to; /* method_none only */
};

/*
 * Appends the request's header lines ("Name: value\r\n" each, in nginx's order) to out.
 * User and password are percent-encoded as nginx does (space, "%" and bytes below 0x20,
 * upper-case hex); other values have control characters dropped so no header can be
 * forged. False only when memory runs out.
 */
bool gh_auth_request_headers(const struct gh_auth_request *r, struct gh_buf *out);

/* Percent-encodes s[0..n) as nginx's NGX_ESCAPE_MAIL_AUTH does. */
bool gh_auth_escape(const char *s, size_t n, struct gh_buf *out);

enum gh_auth_verdict {
    GH_AUTH_OK,      /* go to server:port */
    GH_AUTH_FAILED,  /* a failed login: the protocol's failure reply */
    GH_AUTH_WAIT,    /* "Auth-Status: WAIT": ask again after wait_s */
    GH_AUTH_TEMPFAIL /* unreachable, time-out, non-200 or an answer that cannot be used */
};

/* The service's answer. Fill with gh_auth_answer_line for each header line, then
 * gh_auth_answer_finish. Secrets (pass) are wiped by gh_auth_answer_wipe. */
struct gh_auth_answer {
    bool has_status, bad; /* bad: a header was malformed or too long */
    bool status_ok, status_wait;
    char message[GH_AUTH_MSG_MAX]; /* the Auth-Status text of a failure */
    char server[GH_AUTH_SERVER_MAX];
    unsigned port; /* 0: none given */
    bool has_user, has_pass;
    char user[GH_AUTH_USER_MAX], pass[GH_AUTH_USER_MAX];
    int wait_s; /* -1: none given */
    char error_code[GH_AUTH_CODE_MAX];
};

void gh_auth_answer_init(struct gh_auth_answer *a);
/* One header line without its line end (a trailing CR is dropped). The status line and
 * headers the protocol does not define are ignored. */
void gh_auth_answer_line(struct gh_auth_answer *a, const char *line, size_t len);
/* The verdict for an answer with HTTP status http_status; err says why on TEMPFAIL.
 * need_pass: a password for the backend login is required (every protocol but SMTP). */
enum gh_auth_verdict gh_auth_answer_finish(struct gh_auth_answer *a, long http_status,
                                           bool need_pass, gh_err *err);
/* A whole header block ("HTTP/1.0 200 OK\r\nAuth-Status: OK\r\n..."): each line fed to
 * gh_auth_answer_line, then finished with the status line's code. For tests and fuzzing. */
enum gh_auth_verdict gh_auth_answer_parse(struct gh_auth_answer *a, const char *text, size_t len,
                                          bool need_pass, gh_err *err);
void gh_auth_answer_wipe(struct gh_auth_answer *a);

#endif

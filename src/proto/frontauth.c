/*
 * frontauth: the part of a front-door login every protocol shares: the request to the
 * auth service (on the loop, see auth/client.h), its verdict, Auth-Wait as a loop timer,
 * failure counting (x:Security.authBanRate through the security layer) and the hand-off to
 * the backend the service names. The session log names the user, never the password.
 */
#include "proto/frontauth.h"

#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/client.h"
#include "auth/service.h"
#include "core/log.h"
#include "net/worker.h"
#include "security/security.h"

bool gh_front_auth_serves(const struct gh_conn *c)
{
    return gh_auth_service_for(gh_auth_set_current(), c->conf->name) != NULL;
}

static void wipe(struct gh_front_auth *fa)
{
    explicit_bzero(fa->pass, sizeof fa->pass);
    explicit_bzero(fa->user, sizeof fa->user);
    fa->pass_len = fa->user_len = 0;
    if (fa->pieces.data)
        explicit_bzero(fa->pieces.data, fa->pieces.cap);
    gh_buf_free(&fa->pieces);
}

void gh_front_auth_free(struct gh_front_auth *fa)
{
    if (!fa)
        return;
    gh_auth_call_cancel(fa->call);
    if (fa->c && fa->c->worker)
        gh_timer_cancel(fa->c->worker->loop, &fa->wait);
    wipe(fa);
    free(fa->smtp_helo);
    free(fa->smtp_from);
    free(fa->smtp_to);
    free(fa);
}

/* ---- the verdict ---- */

/* The session is saying goodbye (a graceful stop): a verdict arriving now is dropped. */
static bool ending(struct gh_front_auth *fa)
{
    if (!fa->c->closed && fa->c->phase != GH_PHASE_CLOSING)
        return false;
    wipe(fa);
    return true;
}

static void answer_failure(struct gh_front_auth *fa)
{
    struct gh_conn *c = fa->c;
    bool last = fa->failures >= GH_FRONT_MAX_FAILURES;
    fa->ops->failed(c, fa->last_temporary,
                    fa->pass_error_message && fa->message[0] ? fa->message : NULL,
                    fa->smtp_code[0] ? fa->smtp_code : NULL, last);
    wipe(fa);
    if (last) {
        gh_conn_close_after_flush(c);
        return;
    }
    /* reading resumes from the loop, never inside the protocol's own callback */
    fa->timer_job = FA_RESUME;
    gh_timer_set(c->worker->loop, &fa->wait, 0);
}

static void ask(struct gh_front_auth *fa);

static void on_wait(struct gh_timer *t)
{
    struct gh_front_auth *fa = gh_container_of(t, struct gh_front_auth, wait);
    if (ending(fa))
        return;
    switch (fa->timer_job) {
    case FA_RETRY:
        ask(fa);
        break;
    case FA_ANSWER:
        answer_failure(fa);
        break;
    case FA_RESUME:
        gh_conn_pause_input(fa->c, false);
        fa->ops->resume(fa->c);
        break;
    }
}

static void temporary(struct gh_front_auth *fa, const char *why)
{
    gh_conn_log(fa->c, "login-unavailable", "user \"%s\": %s", fa->login_user, why);
    fa->last_temporary = true;
    fa->message[0] = fa->smtp_code[0] = 0;
    answer_failure(fa);
}

static enum gh_login_step backend_line(void *ctx, struct gh_conn *c, const char *line, size_t len,
                                       struct gh_buf *to_backend)
{
    struct gh_front_auth *fa = ctx;
    enum gh_login_step step = fa->ops->backend_line(fa, c, line, len, to_backend);
    if (step == GH_LOGIN_DONE) {
        gh_conn_log(c, "login", "user \"%s\" logged in at the backend", fa->login_user);
        wipe(fa);
    }
    return step;
}

/* The backend refused (the driver answered the client) or could not be used. */
static void backend_failed(void *ctx, struct gh_conn *c, const char *why)
{
    struct gh_front_auth *fa = ctx;
    fa->failures++;
    if (why) {
        temporary(fa, why);
        return;
    }
    gh_conn_log(c, "login-failed", "user \"%s\": refused by the backend", fa->login_user);
    wipe(fa);
    if (fa->failures >= GH_FRONT_MAX_FAILURES) {
        fa->ops->failed(c, false, NULL, NULL, true);
        gh_conn_close_after_flush(c);
    } else {
        fa->timer_job = FA_RESUME;
        gh_timer_set(c->worker->loop, &fa->wait, 0);
    }
}

static void go_to_backend(struct gh_front_auth *fa, struct gh_auth_answer *a)
{
    struct gh_sockaddr addr;
    char text[GH_AUTH_SERVER_MAX + 16];
    snprintf(text, sizeof text, strchr(a->server, ':') ? "[%s]:%u" : "%s:%u", a->server, a->port);
    if (!gh_sockaddr_parse(text, &addr, NULL)) {
        temporary(fa, "the auth service named an unusable backend address");
        return;
    }
    if (a->has_user) {
        fa->user_len = strlen(a->user);
        memcpy(fa->user, a->user, fa->user_len + 1);
    }
    if (a->has_pass) {
        fa->pass_len = strlen(a->pass);
        memcpy(fa->pass, a->pass, fa->pass_len + 1);
    }
    gh_conn_log(fa->c, "login-routed", "user \"%s\" to %s", fa->login_user, text);
    fa->stage = 0;
    struct gh_backend_login login = {.line = backend_line, .failed = backend_failed, .ctx = fa};
    gh_conn_handoff_to(fa->c, &addr, fa->forwarding, fa->timeout_ms, &login);
}

static void done(void *arg, enum gh_auth_verdict v, struct gh_auth_answer *a, const char *why)
{
    struct gh_front_auth *fa = arg;
    struct gh_conn *c = fa->c;
    fa->call = NULL;
    if (ending(fa))
        return;
    switch (v) {
    case GH_AUTH_OK:
        go_to_backend(fa, a);
        return;
    case GH_AUTH_WAIT:
        fa->timer_job = FA_RETRY;
        gh_timer_set(c->worker->loop, &fa->wait, (uint64_t)a->wait_s * 1000);
        return;
    case GH_AUTH_TEMPFAIL:
        temporary(fa, why);
        return;
    case GH_AUTH_FAILED:
        break;
    }
    fa->failures++;
    fa->last_temporary = false;
    snprintf(fa->message, sizeof fa->message, "%s", a->message);
    snprintf(fa->smtp_code, sizeof fa->smtp_code, "%s", a->error_code);
    gh_conn_log(c, "login-failed", "user \"%s\": refused by the auth service", fa->login_user);
    if (!fa->method_none)
        gh_security_auth_failure(c->peer_text, fa->login_user);
    if (a->wait_s > 0) {
        fa->timer_job = FA_ANSWER;
        gh_timer_set(c->worker->loop, &fa->wait, (uint64_t)a->wait_s * 1000);
    } else {
        answer_failure(fa);
    }
}

static void ask(struct gh_front_auth *fa)
{
    struct gh_conn *c = fa->c;
    const struct gh_auth_service *svc = gh_auth_service_for(gh_auth_set_current(), c->conf->name);
    if (!svc) {
        temporary(fa, "no auth service serves this listener any more");
        return;
    }
    fa->xclient = svc->xclient;
    fa->forwarding = svc->forwarding;
    fa->timeout_ms = svc->timeout_ms;
    fa->pass_error_message = svc->pass_error_message;
    struct gh_auth_request r = {
        .method_none = fa->method_none,
        .user = fa->user,
        .user_len = fa->user_len,
        .pass = fa->pass,
        .pass_len = fa->pass_len,
        .protocol = fa->ops->protocol,
        .attempt = ++fa->attempts,
        .client_ip = c->peer_text,
        .client_host = !strcmp(fa->ops->protocol, "smtp") ? "[UNAVAILABLE]" : NULL,
        .ssl = c->tls_active,
        .ssl_protocol = c->ssl ? SSL_get_version(c->ssl) : NULL,
        .ssl_cipher = c->ssl ? SSL_get_cipher_name(c->ssl) : NULL,
        .smtp_helo = fa->smtp_helo,
        .smtp_from = fa->smtp_from,
        .smtp_to = fa->smtp_to,
    };
    gh_err err = {0};
    gh_conn_pause_input(c, true); /* nothing more is read until the verdict */
    fa->call = gh_auth_call_start(c->worker->loop, svc, &r, fa->ops->need_pass && !fa->method_none,
                                  done, fa, &err);
    if (!fa->call)
        temporary(fa, err.msg);
}

static struct gh_front_auth *prepare(struct gh_front_auth **pfa, struct gh_conn *c,
                                     const struct gh_front_auth_ops *ops)
{
    struct gh_front_auth *fa = *pfa;
    if (!fa && !(fa = *pfa = calloc(1, sizeof *fa)))
        return NULL;
    fa->ops = ops;
    fa->c = c;
    fa->wait.fn = on_wait;
    fa->message[0] = fa->smtp_code[0] = 0;
    fa->stage = 0;
    return fa;
}

void gh_front_auth_start(struct gh_front_auth **pfa, struct gh_conn *c,
                         const struct gh_front_auth_ops *ops, const char *tag, const char *user,
                         size_t user_len, const char *pass, size_t pass_len)
{
    struct gh_front_auth *fa = prepare(pfa, c, ops);
    if (!fa) {
        gh_conn_close(c);
        return;
    }
    snprintf(fa->tag, sizeof fa->tag, "%s", tag ? tag : "");
    user_len = user_len < sizeof fa->user ? user_len : sizeof fa->user - 1;
    pass_len = pass_len < sizeof fa->pass ? pass_len : sizeof fa->pass - 1;
    memcpy(fa->user, user, user_len);
    fa->user[user_len] = 0;
    fa->user_len = user_len;
    memcpy(fa->pass, pass, pass_len);
    fa->pass[pass_len] = 0;
    fa->pass_len = pass_len;
    /* for logs: printable characters only */
    size_t k = 0;
    for (size_t i = 0; i < user_len && k < sizeof fa->login_user - 1; i++)
        fa->login_user[k++] = user[i] >= ' ' && user[i] < 0x7f && user[i] != '"' ? user[i] : '?';
    fa->login_user[k] = 0;
    fa->method_none = false;
    ask(fa);
}

void gh_front_auth_start_none(struct gh_front_auth **pfa, struct gh_conn *c,
                              const struct gh_front_auth_ops *ops, const char *helo,
                              const char *from, const char *to)
{
    struct gh_front_auth *fa = prepare(pfa, c, ops);
    if (!fa) {
        gh_conn_close(c);
        return;
    }
    fa->method_none = true;
    free(fa->smtp_helo);
    free(fa->smtp_from);
    free(fa->smtp_to);
    fa->smtp_helo = strdup(helo ? helo : "");
    fa->smtp_from = strdup(from ? from : "");
    fa->smtp_to = strdup(to ? to : "");
    fa->user_len = fa->pass_len = 0;
    snprintf(fa->login_user, sizeof fa->login_user, "%s", "");
    ask(fa);
}

/* ---- SASL PLAIN ---- */

static int b64_value(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    return ch == '+' ? 62 : ch == '/' ? 63 : -1;
}

bool gh_base64_decode(const char *in, size_t len, char *out, size_t cap, size_t *out_len)
{
    if (len % 4)
        return false;
    size_t n = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char ch = (unsigned char)in[i + k];
            if (ch == '=' && i + 4 == len && k >= 2) {
                v[k] = 0;
                pad++;
                continue;
            }
            if (pad || (v[k] = b64_value(ch)) < 0)
                return false;
        }
        unsigned bits =
            (unsigned)v[0] << 18 | (unsigned)v[1] << 12 | (unsigned)v[2] << 6 | (unsigned)v[3];
        if (n + 3 - (size_t)pad > cap)
            return false;
        out[n++] = (char)(bits >> 16);
        if (pad < 2)
            out[n++] = (char)(bits >> 8 & 0xff);
        if (pad < 1)
            out[n++] = (char)(bits & 0xff);
    }
    *out_len = n;
    return true;
}

bool gh_sasl_plain(const char *b64, size_t len, char *user, size_t *user_len, char *pass,
                   size_t *pass_len)
{
    char buf[GH_FRONT_USER_MAX + GH_FRONT_PASS_MAX + 256 + 2];
    size_t n;
    if (!gh_base64_decode(b64, len, buf, sizeof buf, &n))
        return false;
    char *nul1 = memchr(buf, 0, n);
    char *nul2 = nul1 ? memchr(nul1 + 1, 0, n - (size_t)(nul1 + 1 - buf)) : NULL;
    bool ok = false;
    if (nul1 && nul2 && !memchr(nul2 + 1, 0, n - (size_t)(nul2 + 1 - buf))) {
        size_t ul = (size_t)(nul2 - nul1 - 1), pl = n - (size_t)(nul2 + 1 - buf);
        if (ul && pl && ul <= GH_FRONT_USER_MAX && pl <= GH_FRONT_PASS_MAX) {
            memcpy(user, nul1 + 1, ul);
            user[ul] = 0;
            memcpy(pass, nul2 + 1, pl);
            pass[pl] = 0;
            *user_len = ul;
            *pass_len = pl;
            ok = true;
        }
    }
    explicit_bzero(buf, sizeof buf);
    return ok;
}

/*
 * backend: a connection to a destination, driven by its loop through these stages:
 * connect → PROXY header → [implicit TLS] → [greeting] → [STARTTLS dialogue → TLS →
 * ManageSieve's capabilities again] → ready. Every reply must be complete and alone: a
 * backend that sends more than the reply before TLS (STARTTLS injection) is refused.
 */
#include "net/backend.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "net/fd_reserve.h"
#include "net/tls_io.h"
#include "net/worker.h"

#define REPLY_MAX       16384
#define STEP_DEFAULT_MS 30000
#define IMAP_TAG        "gh1"

enum stage {
    B_CONNECTING,
    B_HEADER,    /* the PROXY header is still being written */
    B_HANDSHAKE, /* TLS handshake (implicit, or after STARTTLS) */
    B_GREETING,
    B_HELLO,    /* SMTP/LMTP: EHLO/LHLO before STARTTLS */
    B_STARTTLS, /* waiting for the upgrade reply */
    B_CAPS,     /* ManageSieve: capabilities again after TLS */
    B_READY,
};

static void backend_io(struct gh_io *io, uint32_t events);
static void backend_timeout(struct gh_timer *t);

/* ---- TLS context ---- */

static bool add_anchors(SSL_CTX *ctx, const char *pem, gh_err *err)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    unsigned added = 0;
    X509 *x;
    while (bio && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
        if (X509_STORE_add_cert(store, x) == 1)
            added++;
        X509_free(x);
    }
    BIO_free(bio);
    ERR_clear_error();
    return added ? true : gh_fail(err, "the trust anchor holds no usable certificate");
}

/* The slot of this worker for the destination of ssl's connection, or NULL (a health check,
 * which runs on no worker, neither keeps nor resumes sessions). */
static SSL_SESSION **session_slot(const struct gh_destination *d)
{
    struct gh_worker *w = gh_worker_current();
    return w && d->tls_sessions && w->index < GH_WORKERS_MAX ? &d->tls_sessions[w->index] : NULL;
}

/* A session the backend gave (TLS 1.3: a ticket after the handshake): kept for the worker's
 * next connect there, as nginx's proxy_ssl_session_reuse does. A resumed handshake skips the
 * certificate's signature checks on both sides. */
static int keep_session(SSL *ssl, SSL_SESSION *session)
{
    const struct gh_backend *b = SSL_get_app_data(ssl);
    SSL_SESSION **slot = b ? session_slot(b->dest) : NULL;
    if (!slot)
        return 0;
    SSL_SESSION_free(*slot);
    *slot = session;
    return 1; /* the reference is the slot's now */
}

SSL_CTX *gh_backend_tls_ctx(bool verify, const char *ca_pem, gh_err *err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) {
        SSL_CTX_free(ctx);
        gh_fail(err, "cannot create a TLS client context");
        return NULL;
    }
    /* The relay retries a write from a buffer that may have moved or grown. A quiet leg gives
     * its record buffers back (about 34 KB), as the client's leg does: a busy one takes them
     * again per record from memory still warm from the last. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    /* A backend that closes without close_notify (many do after QUIT) ends the session as an
     * EOF, as nginx takes it: the protocols relayed frame their own ends, and a fatal alert
     * would spoil the session kept for the next connect. */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, keep_session);
    if (verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        bool ok = ca_pem ? add_anchors(ctx, ca_pem, err)
                         : SSL_CTX_set_default_verify_paths(ctx) == 1 ||
                               gh_fail(err, "cannot load the system CA store");
        if (!ok) {
            SSL_CTX_free(ctx);
            return NULL;
        }
    }
    return ctx;
}

/* SNI and the name checked: tlsServerName when given; otherwise the address itself, which
 * must then be in the certificate's IP names (no SNI: RFC 6066 has none for addresses). */
static bool tls_start(struct gh_backend *b)
{
    const struct gh_destination *d = b->dest;
    if (!d->tls_ctx || !(b->ssl = SSL_new(d->tls_ctx)) || !gh_tls_io_attach(b->ssl, &b->io))
        return false;
    SSL_set_app_data(b->ssl, b);
    SSL_SESSION **slot = session_slot(d);
    if (slot && *slot)
        SSL_set_session(b->ssl, *slot); /* refused by the backend: a full handshake */
    if (d->tls_server_name[0]) {
        SSL_set_tlsext_host_name(b->ssl, d->tls_server_name);
        if (d->tls_verify && SSL_set1_host(b->ssl, d->tls_server_name) != 1)
            return false;
    } else if (d->tls_verify && !d->is_unix) {
        char text[GH_ADDR_TEXT];
        gh_ip_format(&d->addr.u.sa, text);
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(b->ssl), text) != 1)
            return false;
    }
    SSL_set_connect_state(b->ssl);
    b->stage = B_HANDSHAKE;
    return true;
}

/* ---- reading and writing ---- */

ssize_t gh_backend_recv(struct gh_backend *b, void *buf, size_t len)
{
    if (!b->ssl)
        return gh_io_recv(b->loop, &b->io, buf, len);
    ERR_clear_error();
    int n = SSL_read(b->ssl, buf, (int)(len > 1 << 30 ? 1 << 30 : len));
    if (n > 0)
        return n;
    int e = SSL_get_error(b->ssl, n);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        errno = EAGAIN;
        return -1;
    }
    if (e == SSL_ERROR_ZERO_RETURN)
        return 0;
    errno = ECONNRESET;
    return -1;
}

ssize_t gh_backend_send(struct gh_backend *b, const void *buf, size_t len)
{
    if (!b->ssl)
        return gh_io_send(b->loop, &b->io, buf, len);
    ssize_t n = gh_tls_io_write(b->ssl, buf, len);
    if (n > 0)
        return n;
    errno = n == 0 ? EAGAIN : ECONNRESET;
    return -1;
}

int gh_backend_flush(struct gh_backend *b)
{
    return b->ssl ? gh_tls_io_flush(b->ssl) : 1;
}

bool gh_backend_pending(const struct gh_backend *b)
{
    return b->ssl && SSL_pending(b->ssl) > 0;
}

bool gh_backend_buffered(const struct gh_backend *b)
{
    return b->ssl && SSL_has_pending(b->ssl);
}

/* ---- replies ---- */

static size_t line_end(const char *buf, size_t from, size_t len)
{
    for (size_t i = from; i < len; i++)
        if (buf[i] == '\n')
            return i + 1;
    return 0;
}

/* The line begins with word, compared without reading past the line (the buffer may end
 * with it, unterminated). */
static bool line_starts(const char *line, size_t linelen, const char *word)
{
    size_t n = strlen(word);
    return linelen >= n && !strncasecmp(line, word, n);
}

size_t gh_backend_reply_length(enum gh_protocol p, const char *buf, size_t len)
{
    size_t at = 0, next;
    while ((next = line_end(buf, at, len))) {
        const char *line = buf + at;
        size_t linelen = next - at;
        bool last = true;
        if (p == GH_PROTO_SMTP || p == GH_PROTO_LMTP)
            last = linelen < 4 || line[3] != '-'; /* "250-..." continues, "250 ..." ends */
        else if (p == GH_PROTO_MANAGESIEVE)
            last = line_starts(line, linelen, "OK") || line_starts(line, linelen, "NO") ||
                   line_starts(line, linelen, "BYE");
        if (last)
            return next;
        at = next;
    }
    return 0;
}

bool gh_backend_reply_positive(enum gh_protocol p, const char *buf)
{
    switch (p) {
    case GH_PROTO_SMTP:
    case GH_PROTO_LMTP:
        return buf[0] == '2';
    case GH_PROTO_IMAP:
        return !strncasecmp(buf, "* OK", 4) || !strncasecmp(buf, "* PREAUTH", 9);
    case GH_PROTO_POP3:
        return !strncmp(buf, "+OK", 3);
    case GH_PROTO_MANAGESIEVE: {
        /* the block's last line decides */
        const char *last = buf, *nl;
        while ((nl = strchr(last, '\n')) && nl[1])
            last = nl + 1;
        return !strncasecmp(last, "OK", 2);
    }
    default:
        return true;
    }
}

/* IMAP's STARTTLS answer ends with our tagged line (untagged lines may come first). */
static size_t imap_tagged_length(const char *buf, size_t len, const char **tagged)
{
    size_t at = 0, next;
    while ((next = line_end(buf, at, len))) {
        if (!strncasecmp(buf + at, IMAP_TAG " ", sizeof IMAP_TAG)) {
            *tagged = buf + at;
            return next;
        }
        at = next;
    }
    return 0;
}

/* ---- the stages ---- */

static void finish(struct gh_backend *b, const char *error)
{
    gh_timer_cancel(b->loop, &b->timer);
    if (!error)
        b->stage = B_READY;
    b->done(b, error);
}

static void watch(struct gh_backend *b, uint32_t events)
{
    gh_io_mod(b->loop, &b->io, events | EPOLLRDHUP);
}

static void step_deadline(struct gh_backend *b)
{
    gh_timer_set(b->loop, &b->timer, b->step_timeout_ms ? b->step_timeout_ms : STEP_DEFAULT_MS);
}

static bool send_line(struct gh_backend *b, const char *fmt, const char *arg)
{
    char line[300];
    int n = snprintf(line, sizeof line, fmt, arg);
    if (n < 0 || (size_t)n >= sizeof line)
        return false;
    /* a command line is far below the socket buffer; a short write is a failure */
    return gh_backend_send(b, line, (size_t)n) == n;
}

/* The greeting a client will see: IMAP's pre-TLS capabilities would tell it that login is
 * disabled, so the response code goes and the client asks again over the secured leg. */
static void keep_greeting(struct gh_backend *b, const char *reply, size_t len)
{
    free(b->greeting);
    b->greeting = malloc(len + 1);
    if (!b->greeting)
        return;
    memcpy(b->greeting, reply, len);
    b->greeting[len] = '\0';
    b->greeting_len = len;
    if (b->dest->tls == GH_BTLS_STARTTLS && b->dest->protocol == GH_PROTO_IMAP &&
        !strncasecmp(b->greeting, "* OK [CAPABILITY ", 17)) {
        char *close = strchr(b->greeting + 17, ']');
        if (close && close < b->greeting + len) {
            char *rest = close + 1 + (close[1] == ' ');
            size_t tail = len - (size_t)(rest - b->greeting);
            memmove(b->greeting + 5, rest, tail + 1);
            b->greeting_len = 5 + tail;
        }
    }
}

static const char *start_upgrade(struct gh_backend *b)
{
    bool ok;
    switch (b->dest->protocol) {
    case GH_PROTO_SMTP:
    case GH_PROTO_LMTP:
        ok = send_line(b, b->dest->protocol == GH_PROTO_LMTP ? "LHLO %s\r\n" : "EHLO %s\r\n",
                       b->hello_name ? b->hello_name : "localhost");
        b->stage = B_HELLO;
        break;
    case GH_PROTO_IMAP:
        ok = send_line(b, "%s STARTTLS\r\n", IMAP_TAG);
        b->stage = B_STARTTLS;
        break;
    case GH_PROTO_POP3:
        ok = send_line(b, "%sSTLS\r\n", "");
        b->stage = B_STARTTLS;
        break;
    case GH_PROTO_MANAGESIEVE:
        ok = send_line(b, "%sSTARTTLS\r\n", "");
        b->stage = B_STARTTLS;
        break;
    default:
        return "this protocol has no STARTTLS";
    }
    step_deadline(b);
    return ok ? NULL : "connection lost";
}

/* The greeting (or another reply) is complete: what comes next. NULL, or why it failed. */
static const char *reply_done(struct gh_backend *b, const char *reply, size_t len)
{
    enum gh_protocol p = b->dest->protocol;
    switch (b->stage) {
    case B_GREETING:
        if (!gh_backend_reply_positive(p, reply))
            return "the greeting is a refusal";
        keep_greeting(b, reply, len);
        if (b->dest->tls == GH_BTLS_STARTTLS && !b->ssl)
            return start_upgrade(b);
        finish(b, NULL);
        return NULL;
    case B_HELLO:
        if (!gh_backend_reply_positive(p, reply))
            return "EHLO refused";
        if (!send_line(b, "%sSTARTTLS\r\n", ""))
            return "connection lost";
        b->stage = B_STARTTLS;
        step_deadline(b);
        return NULL;
    case B_STARTTLS:
        if (p == GH_PROTO_IMAP ? strncasecmp(reply, IMAP_TAG " OK", sizeof IMAP_TAG + 2)
                               : !gh_backend_reply_positive(p, reply))
            return "STARTTLS refused";
        if (!tls_start(b))
            return "cannot start TLS";
        step_deadline(b);
        watch(b, EPOLLOUT);
        return NULL;
    case B_CAPS:
        if (!gh_backend_reply_positive(p, reply))
            return "capabilities after STARTTLS refused";
        keep_greeting(b, reply, len);
        finish(b, NULL);
        return NULL;
    default:
        return "unexpected reply";
    }
}

static const char *read_reply(struct gh_backend *b)
{
    char chunk[4096];
    ssize_t n = gh_backend_recv(b, chunk, sizeof chunk);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return NULL;
    if (n <= 0)
        return b->stage == B_GREETING ? "closed before its greeting" : "connection lost";
    if (!gh_buf_append(&b->in, chunk, (size_t)n) || gh_buf_len(&b->in) > REPLY_MAX)
        return "reply too long";
    const char *tagged = NULL;
    size_t len =
        b->stage == B_STARTTLS && b->dest->protocol == GH_PROTO_IMAP
            ? imap_tagged_length(gh_buf_head(&b->in), gh_buf_len(&b->in), &tagged)
            : gh_backend_reply_length(b->dest->protocol, gh_buf_head(&b->in), gh_buf_len(&b->in));
    if (!len)
        return NULL;
    if (gh_buf_len(&b->in) > len || gh_backend_pending(b))
        return "the backend spoke ahead of its turn";
    gh_buf_append(&b->in, "", 1);
    char *reply = strdup(tagged ? tagged : gh_buf_head(&b->in));
    gh_buf_clear(&b->in);
    if (!reply)
        return "out of memory";
    const char *why = reply_done(b, reply, tagged ? strlen(reply) : len);
    free(reply);
    return why;
}

static const char *handshake(struct gh_backend *b)
{
    ERR_clear_error();
    int rc = SSL_do_handshake(b->ssl);
    if (rc != 1) {
        int e = SSL_get_error(b->ssl, rc);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            watch(b, e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT);
            return NULL;
        }
        long v = SSL_get_verify_result(b->ssl);
        static char why[200];
        snprintf(why, sizeof why, "TLS handshake failed: %s",
                 v != X509_V_OK ? X509_verify_cert_error_string(v) : "protocol error");
        return why;
    }
    watch(b, EPOLLIN);
    step_deadline(b);
    if (b->dest->tls == GH_BTLS_STARTTLS) {
        if (b->dest->protocol == GH_PROTO_MANAGESIEVE) {
            b->stage = B_CAPS;
            return NULL;
        }
        finish(b, NULL);
        return NULL;
    }
    if (b->want_greeting) {
        b->stage = B_GREETING;
        return NULL;
    }
    finish(b, NULL);
    return NULL;
}

/* Connected and the PROXY header written: TLS, the greeting, or ready. */
static const char *after_header(struct gh_backend *b)
{
    step_deadline(b);
    if (b->dest->tls == GH_BTLS_IMPLICIT) {
        if (!tls_start(b))
            return "cannot start TLS";
        return handshake(b);
    }
    if (b->want_greeting || b->dest->tls == GH_BTLS_STARTTLS) {
        b->stage = B_GREETING;
        watch(b, EPOLLIN);
        return NULL;
    }
    finish(b, NULL);
    return NULL;
}

static const char *write_header(struct gh_backend *b)
{
    while (gh_buf_len(&b->out)) {
        ssize_t n = gh_io_send(b->loop, &b->io, gh_buf_head(&b->out), gh_buf_len(&b->out));
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            b->stage = B_HEADER;
            watch(b, EPOLLOUT);
            return NULL;
        }
        if (n <= 0)
            return "connection lost";
        gh_buf_consume(&b->out, (size_t)n);
    }
    gh_buf_free(&b->out);
    return after_header(b);
}

static const char *connected(struct gh_backend *b, uint32_t events)
{
    int soerr = gh_io_connect_error(b->loop, &b->io, events);
    if (soerr)
        return strerror(soerr);
    gh_io_ring(b->loop, &b->io, true); /* connected: reads and writes go through the ring */
    return write_header(b);
}

static void backend_io(struct gh_io *io, uint32_t events)
{
    struct gh_backend *b = gh_container_of(io, struct gh_backend, io);
    const char *why = NULL;
    switch (b->stage) {
    case B_CONNECTING:
        why = connected(b, events);
        break;
    case B_HEADER:
        why = write_header(b);
        break;
    case B_HANDSHAKE:
        why = handshake(b);
        break;
    case B_READY:
        return;
    default:
        why = read_reply(b);
    }
    if (why)
        finish(b, why);
}

static void backend_timeout(struct gh_timer *t)
{
    struct gh_backend *b = gh_container_of(t, struct gh_backend, timer);
    finish(b, b->stage == B_CONNECTING  ? "connect timed out"
              : b->stage == B_HANDSHAKE ? "TLS handshake timed out"
                                        : "no reply in time");
}

bool gh_backend_open(struct gh_backend *b, struct gh_loop *loop, const struct gh_destination *d,
                     const void *header, size_t header_len, bool want_greeting,
                     gh_backend_done_fn done)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    const struct sockaddr *sa = &d->addr.u.sa;
    socklen_t len = d->addr.len;
    if (d->is_unix) {
        memcpy(un.sun_path, d->unix_path, sizeof un.sun_path - 1);
        sa = (const struct sockaddr *)&un;
        len = sizeof un;
    }
    b->loop = loop;
    b->dest = d;
    b->done = done;
    b->want_greeting = want_greeting;
    b->timer.fn = backend_timeout;
    b->stage = B_CONNECTING;
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    if (gh_worker_current() && gh_fd_in_reserve(fd)) { /* a hand-off: kept for the API */
        close(fd);
        return false;
    }
    b->io.fd = fd;
    b->io.fn = backend_io;
    if (!gh_io_connect(loop, &b->io, EPOLLOUT | EPOLLRDHUP, sa, len)) {
        close(fd);
        return false;
    }
    b->registered = true;
    if (header_len)
        gh_buf_append(&b->out, header, header_len);
    gh_timer_set(loop, &b->timer, d->connect_timeout_ms);
    return true;
}

void gh_backend_close(struct gh_backend *b)
{
    if (b->loop)
        gh_timer_cancel(b->loop, &b->timer);
    if (b->registered) {
        gh_io_close(b->loop, &b->io); /* after what was written to it */
        if (b->ssl && SSL_is_init_finished(b->ssl))
            /* no close_notify: the session is over either way; marked as ended cleanly all
             * the same, or OpenSSL would spoil the session kept for the next connect */
            SSL_set_shutdown(b->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
        SSL_free(b->ssl);
        b->registered = false;
    }
    b->ssl = NULL;
    gh_buf_free(&b->out);
    gh_buf_free(&b->in);
    free(b->greeting);
    b->greeting = NULL;
    b->greeting_len = 0;
    free(b->hello_name);
    b->hello_name = NULL;
}

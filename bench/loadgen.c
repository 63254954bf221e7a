/*
 * loadgen: the benchmark client for what wrk and `openssl s_time` cannot express: SMTP
 * sessions, implicit-TLS and STARTTLS handshakes, idle connections held open, JMAP requests
 * and live listener changes. One epoll thread drives the connections (a second, blocking
 * thread makes the listener changes); every loop is bounded in count and time.
 *
 * Loopback only: the server address must be in 127.0.0.0/8, and client sockets are bound
 * to 127.0.0.1..127.0.0.N so that tens of thousands of connections find ephemeral ports.
 * Results are printed as `RESULT`, `IDLE` and `CHURN` lines of key=value pairs.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PORTS             2048
#define MAX_PIDS              64
#define HIST_STEP_US          10
#define HIST_BUCKETS          200000 /* 10 µs steps up to 2 s; slower samples go to the last one */
#define SMTP_BUF              2048
#define HTTP_BUF              (256 * 1024)
#define IDLE_INFLIGHT_DEFAULT 512
#define IDLE_RAMP_LIMIT_S     180.0 /* opening the idle set never takes longer than this */

/* ---- options ---- */

enum mode {
    MODE_NONE,
    MODE_SMTP,
    MODE_TLS,
    MODE_STARTTLS,
    MODE_HTTP,
    MODE_STREAM,
    MODE_SINK,
    MODE_TRANSACTION,
    MODE_STREAM_PLAIN
};
static const char *const mode_names[] = {"none",   "smtp", "tls",         "starttls",    "http",
                                         "stream", "sink", "transaction", "stream-plain"};

struct opts {
    enum mode mode;
    const char *label;
    struct in_addr host;
    unsigned ports[MAX_PORTS], nports;
    unsigned conc;
    double duration;
    uint64_t max_ops;
    bool resume;
    unsigned nsrc;
    unsigned timeout_ms;
    unsigned idle;
    unsigned idle_ports[MAX_PORTS], nidle_ports;
    bool idle_tls;
    unsigned idle_inflight;
    double hold;
    double warm_up; /* stream modes: seconds of streaming before the window opens */
    int pids[MAX_PIDS], npids;
    unsigned api_port;
    const char *token;
    const char *http_body;
    unsigned churn_port;
    const char *churn_update_id; /* a listener updated on every cycle (optional) */
    unsigned churn_interval_ms;
    const char *sink_cert, *sink_key; /* sink: speak implicit TLS with this certificate */
};

static struct opts O = {
    .label = "-",
    .conc = 1,
    .duration = 5,
    .nsrc = 16,
    .timeout_ms = 5000,
    .idle_inflight = IDLE_INFLIGHT_DEFAULT,
    .hold = 1,
    .warm_up = 1,
    .churn_interval_ms = 50,
    .http_body = "{\"using\":[\"urn:ietf:params:jmap:core\",\"urn:stalwart:jmap\"],"
                 "\"methodCalls\":[[\"x:NetworkListener/get\",{\"ids\":null},\"0\"]]}",
};

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- latency histograms ---- */

struct hist {
    uint32_t *b;
    uint64_t n, max_us, sum_us;
};

static void hist_init(struct hist *h)
{
    h->b = calloc(HIST_BUCKETS, sizeof *h->b);
    if (!h->b)
        die("out of memory");
}

static void hist_add(struct hist *h, double secs)
{
    uint64_t us = secs <= 0 ? 0 : (uint64_t)(secs * 1e6);
    uint64_t i = us / HIST_STEP_US;
    h->b[i < HIST_BUCKETS ? i : HIST_BUCKETS - 1]++;
    h->n++;
    h->sum_us += us;
    if (us > h->max_us)
        h->max_us = us;
}

/* The upper edge of the bucket holding quantile q, in µs (0 when empty). */
static uint64_t hist_q(const struct hist *h, double q)
{
    if (!h->n)
        return 0;
    uint64_t want = (uint64_t)(q * (double)h->n), seen = 0;
    if (want >= h->n)
        want = h->n - 1;
    for (uint64_t i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen > want) {
            uint64_t edge = (i + 1) * HIST_STEP_US;
            return edge < h->max_us ? edge : h->max_us;
        }
    }
    return h->max_us;
}

/* ---- /proc readings of the server under test ---- */

static long proc_rss_kb(void)
{
    long total = 0;
    for (int i = 0; i < O.npids; i++) {
        char path[64], line[256];
        snprintf(path, sizeof path, "/proc/%d/status", O.pids[i]);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "VmRSS:", 6))
                total += strtol(line + 6, NULL, 10);
        fclose(f);
    }
    return total;
}

/* utime + stime of every listed process (all its threads), in seconds. */
static double proc_cpu_s(void)
{
    double total = 0;
    long hz = sysconf(_SC_CLK_TCK);
    for (int i = 0; i < O.npids; i++) {
        char path[64], buf[2048];
        snprintf(path, sizeof path, "/proc/%d/stat", O.pids[i]);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        char *p = strrchr(buf, ')'); /* the command name may hold spaces */
        if (!p)
            continue;
        unsigned long ut = 0, st = 0;
        /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
         * utime stime */
        if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
            total += (double)(ut + st) / (double)hz;
    }
    return total;
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* ---- TLS client ---- */

static SSL_CTX *client_ctx;
/* Tickets for resumption: each workload slot offers the newest one its own previous
 * session on the same port received, as a real client would (a server may take a ticket
 * only once, and only its own); last_session[port] seeds slots that have none yet. Owner:
 * these arrays (one reference each). */
static SSL_SESSION *last_session[MAX_PORTS];
static SSL_SESSION **slot_session; /* conc × nports, slot-major */

/* Where a connection's ticket goes: its slot (or -1) and the index of its port. */
struct ticket_key {
    int slot;
    unsigned port;
};

static void replace_session(SSL_SESSION **where, SSL_SESSION *s)
{
    if (*where)
        SSL_SESSION_free(*where);
    *where = s;
}

static int keep_session(SSL *ssl, SSL_SESSION *s)
{
    const struct ticket_key *k = SSL_get_app_data(ssl);
    if (!k) {
        SSL_SESSION_free(s);
        return 1;
    }
    if (k->slot >= 0 && slot_session) {
        SSL_SESSION_up_ref(s);
        replace_session(&slot_session[(size_t)k->slot * O.nports + k->port], s);
    }
    replace_session(&last_session[k->port], s);
    return 1; /* we keep the reference */
}

static void tls_init(void)
{
    client_ctx = SSL_CTX_new(TLS_client_method());
    if (!client_ctx)
        die("SSL_CTX_new failed");
    SSL_CTX_set_min_proto_version(client_ctx, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(client_ctx, TLS1_3_VERSION);
    SSL_CTX_set_verify(client_ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_mode(client_ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(client_ctx,
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(client_ctx, keep_session);
}

/* ---- connections ---- */

/* What a session does, as a list of steps run in order. */
enum step_kind { S_HANDSHAKE, S_EXPECT, S_SEND, S_DONE, S_HOLD, S_HTTP, S_STREAM };
struct step {
    enum step_kind kind;
    const char *arg; /* reply code to expect, or text to send */
};

static const struct step script_smtp[] = {
    {S_EXPECT, "220"}, {S_SEND, "QUIT\r\n"}, {S_EXPECT, "221"}, {S_DONE, NULL}};
static const struct step script_tls[] = {{S_HANDSHAKE, NULL}, {S_EXPECT, "220"}, {S_DONE, NULL}};
static const struct step script_starttls[] = {{S_EXPECT, "220"},
                                              {S_SEND, "EHLO bench.example\r\n"},
                                              {S_EXPECT, "250"},
                                              {S_SEND, "STARTTLS\r\n"},
                                              {S_EXPECT, "220"},
                                              {S_HANDSHAKE, NULL},
                                              {S_SEND, "EHLO bench.example\r\n"},
                                              {S_EXPECT, "250"},
                                              {S_SEND, "QUIT\r\n"},
                                              {S_EXPECT, "221"},
                                              {S_DONE, NULL}};
static const struct step script_idle[] = {{S_EXPECT, "220"}, {S_HOLD, NULL}};
static const struct step script_idle_tls[] = {
    {S_HANDSHAKE, NULL}, {S_EXPECT, "220"}, {S_HOLD, NULL}};
static const struct step script_http[] = {{S_HTTP, NULL}};
/* Relay throughput: the greeting comes from the backend behind the server. */
static const struct step script_stream[] = {
    {S_HANDSHAKE, NULL}, {S_EXPECT, "220"}, {S_STREAM, NULL}};
/* The same without TLS on either side of the server: a relay it may splice. */
static const struct step script_stream_plain[] = {{S_EXPECT, "220"}, {S_STREAM, NULL}};
/* A short handed-off session: one small message through the server to the backend (a sink,
 * which answers each command), the way every real session goes. */
static const struct step script_transaction[] = {
    {S_EXPECT, "220"},
    {S_SEND, "EHLO bench.example\r\n"},
    {S_EXPECT, "250"},
    {S_SEND, "MAIL FROM:<sender@bench.example>\r\n"},
    {S_EXPECT, "250"},
    {S_SEND, "RCPT TO:<rcpt@bench.example>\r\n"},
    {S_EXPECT, "250"},
    {S_SEND, "DATA\r\n"},
    {S_EXPECT, "354"},
    {S_SEND, "From: <sender@bench.example>\r\nTo: <rcpt@bench.example>\r\n"
             "Subject: bench\r\n\r\nA short message.\r\nIts second line.\r\n.\r\n"},
    {S_EXPECT, "250"},
    {S_SEND, "QUIT\r\n"},
    {S_EXPECT, "221"},
    {S_DONE, NULL}};

enum err_kind { E_REFUSED, E_NOADDR, E_CONNECT, E_TIMEOUT, E_EOF, E_PROTO, E_TLS, E_IO, E_COUNT };
static const char *const err_names[E_COUNT] = {"refused", "noaddr", "connect", "timeout",
                                               "eof",     "proto",  "tls",     "io"};

struct lconn {
    int fd;
    SSL *ssl;
    const struct step *step;
    bool connecting, idle, http;
    bool first_seen;
    bool streaming; /* reached S_STREAM (counted in `streaming`) */
    int slot;       /* the workload slot it runs in, or -1 */
    struct ticket_key ticket;
    uint32_t events;
    double t0, deadline, req_t0;
    char *in;
    size_t len, cap;
    size_t http_need; /* total bytes of the response being read, once known */
};

struct stats {
    uint64_t ops, reused, bytes, errs[E_COUNT];
    struct hist lat, first;
};

static int ep;
static unsigned src_next, port_next, idle_port_next;
static struct stats W;        /* the measured workload */
static bool counting = true;  /* sessions ending now are counted */
static bool launching = true; /* new sessions are started (until the end of the window) */
static uint64_t idle_ready, idle_failed, idle_dropped;
static unsigned streaming;  /* workload connections writing their stream */
static struct lconn **work; /* the conc workload slots */
static char *http_request;
static size_t http_request_len;

static void set_events(struct lconn *c, uint32_t ev)
{
    if (ev == c->events)
        return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e) == 0)
        c->events = ev;
}

/* Frees without sending anything; marking the shutdown done keeps OpenSSL from flagging the
 * session (the ticket we resume with) as not resumable, as it does for an unclean close. */
static void ssl_drop(SSL *ssl)
{
    if (!ssl)
        return;
    SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(ssl);
}

static void conn_free(struct lconn *c)
{
    if (c->fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    ssl_drop(c->ssl);
    free(c->in);
    free(c);
}

/* Opens a non-blocking connection from 127.0.0.(1 + n % nsrc). NULL with *e set on error. */
static struct lconn *conn_open(unsigned port, const struct step *script, bool idle, size_t cap,
                               enum err_kind *e)
{
    struct lconn *c = calloc(1, sizeof *c);
    if (!c)
        die("out of memory");
    c->fd = -1;
    c->slot = -1;
    c->in = malloc(cap);
    c->cap = cap;
    if (!c->in)
        die("out of memory");
    c->step = script;
    c->idle = idle;
    c->http = script == script_http;
    c->t0 = now_s();
    c->deadline = c->t0 + O.timeout_ms / 1000.0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *e = E_IO;
        conn_free(c);
        return NULL;
    }
    c->fd = fd;
    int one = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f000001u + (src_next++ % O.nsrc));
    struct sockaddr_in dst = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr = O.host};
    if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
        *e = E_NOADDR;
        conn_free(c);
        return NULL;
    }
    c->connecting = true;
    if (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS) {
        *e = errno == ECONNREFUSED ? E_REFUSED : errno == EADDRNOTAVAIL ? E_NOADDR : E_CONNECT;
        conn_free(c);
        return NULL;
    }
    c->events = EPOLLOUT;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        *e = E_IO;
        conn_free(c);
        return NULL;
    }
    return c;
}

/* Reads what is there. Returns 1 when bytes came, 0 when none yet, -1 on EOF/error. */
static int conn_read(struct lconn *c)
{
    int got = 0;
    for (;;) {
        if (c->len >= c->cap)
            return -1; /* a reply larger than any this client expects */
        if (c->ssl) {
            ERR_clear_error();
            int r = SSL_read(c->ssl, c->in + c->len, (int)(c->cap - c->len));
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                    return got;
                return -1;
            }
            c->len += (size_t)r;
        } else {
            ssize_t r = recv(c->fd, c->in + c->len, c->cap - c->len, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                return got;
            if (r <= 0)
                return -1;
            c->len += (size_t)r;
        }
        got = 1;
    }
}

static bool conn_send(struct lconn *c, const char *data, size_t n)
{
    if (c->ssl) {
        ERR_clear_error();
        return SSL_write(c->ssl, data, (int)n) == (int)n;
    }
    return send(c->fd, data, n, MSG_NOSIGNAL) == (ssize_t)n;
}

/* Finds a complete SMTP reply at the start of the input; returns its length or 0. */
static size_t smtp_reply(const char *b, size_t n)
{
    size_t pos = 0;
    while (pos < n) {
        const char *eol = memchr(b + pos, '\n', n - pos);
        if (!eol)
            return 0;
        size_t line = (size_t)(eol - (b + pos)) + 1;
        bool last = line < 5 || b[pos + 3] != '-';
        pos += line;
        if (last)
            return pos;
    }
    return 0;
}

static void finish(struct lconn *c, int err);

static void http_send(struct lconn *c)
{
    c->req_t0 = now_s();
    c->deadline = c->req_t0 + O.timeout_ms / 1000.0;
    c->len = 0;
    c->http_need = 0;
    if (!conn_send(c, http_request, http_request_len))
        finish(c, E_IO);
}

/* Parses the response in c->in; true once complete. *status gets the HTTP status. */
static bool http_response(struct lconn *c, int *status)
{
    if (!c->http_need) {
        char *end = memmem(c->in, c->len, "\r\n\r\n", 4);
        if (!end)
            return false;
        size_t head = (size_t)(end - c->in) + 4;
        *status = c->len > 12 ? atoi(c->in + 9) : 0;
        size_t body = 0;
        for (char *p = c->in; p < end; p++) {
            if ((p == c->in || p[-1] == '\n') && !strncasecmp(p, "content-length:", 15)) {
                body = strtoul(p + 15, NULL, 10);
                break;
            }
        }
        c->http_need = head + body;
    }
    *status = atoi(c->in + 9);
    return c->len >= c->http_need;
}

/* Writes part of a stream, TLS or not: bytes written, 0 when the socket is full, -1 on
 * error. */
static int stream_write(struct lconn *c, const char *p, size_t n)
{
    if (!c->ssl) {
        ssize_t r = send(c->fd, p, n, MSG_NOSIGNAL);
        if (r < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        return (int)r;
    }
    ERR_clear_error();
    int r = SSL_write(c->ssl, p, (int)n);
    if (r > 0)
        return r;
    int e = SSL_get_error(c->ssl, r);
    return e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? 0 : -1;
}

/* Runs the script from the current step until it must wait for the network. */
static void advance(struct lconn *c)
{
    for (;;) {
        switch (c->step->kind) {
        case S_SEND:
            if (!conn_send(c, c->step->arg, strlen(c->step->arg))) {
                finish(c, E_IO);
                return;
            }
            c->step++;
            continue;
        case S_HANDSHAKE: {
            if (!c->ssl) {
                c->ssl = SSL_new(client_ctx);
                if (!c->ssl || !SSL_set_fd(c->ssl, c->fd)) {
                    finish(c, E_TLS);
                    return;
                }
                c->ticket.slot = c->slot;
                SSL_set_app_data(c->ssl, c->idle ? NULL : &c->ticket); /* keeps no ticket */
                SSL_SESSION *own =
                    c->slot >= 0 ? slot_session[(size_t)c->slot * O.nports + c->ticket.port] : NULL;
                SSL_SESSION *offer = own ? own : last_session[c->ticket.port];
                if (O.resume && offer)
                    SSL_set_session(c->ssl, offer);
                SSL_set_connect_state(c->ssl);
            }
            ERR_clear_error();
            int r = SSL_do_handshake(c->ssl);
            if (r == 1) {
                if (!c->idle && counting && SSL_session_reused(c->ssl))
                    W.reused++;
                c->step++;
                continue;
            }
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ) {
                set_events(c, EPOLLIN);
                return;
            }
            if (e == SSL_ERROR_WANT_WRITE) {
                set_events(c, EPOLLOUT);
                return;
            }
            finish(c, E_TLS);
            return;
        }
        case S_EXPECT: {
            size_t n = smtp_reply(c->in, c->len);
            if (!n && c->ssl && SSL_has_pending(c->ssl)) { /* epoll cannot see these bytes */
                if (conn_read(c) < 0) {
                    finish(c, E_EOF);
                    return;
                }
                continue;
            }
            if (!n) {
                set_events(c, EPOLLIN);
                return;
            }
            if (memcmp(c->in, c->step->arg, 3) != 0) {
                finish(c, E_PROTO);
                return;
            }
            memmove(c->in, c->in + n, c->len - n);
            c->len -= n;
            if (!c->first_seen) {
                c->first_seen = true;
                if (!c->idle && counting)
                    hist_add(&W.first, now_s() - c->t0);
            }
            c->step++;
            continue;
        }
        case S_HOLD:
            ssl_drop(c->ssl); /* the server keeps its state; this side needs none of it */
            c->ssl = NULL;
            free(c->in);
            c->in = NULL;
            c->cap = c->len = 0;
            idle_ready++;
            set_events(c, EPOLLIN | EPOLLRDHUP); /* any event now means the server dropped it */
            return;
        case S_HTTP: {
            int status = 0;
            if (c->req_t0 == 0) {
                http_send(c);
                set_events(c, EPOLLIN);
                return;
            }
            if (!http_response(c, &status)) {
                set_events(c, EPOLLIN);
                return;
            }
            if (status != 200) {
                finish(c, E_PROTO);
                return;
            }
            if (counting) {
                W.ops++;
                hist_add(&W.lat, now_s() - c->req_t0);
            }
            if (!launching || (O.max_ops && W.ops >= O.max_ops)) {
                finish(c, -1);
                return;
            }
            http_send(c);
            if (c->fd < 0)
                return;
            continue;
        }
        case S_STREAM: {
            static char chunk[16384];
            if (!c->streaming) {
                c->streaming = true;
                streaming++;
            }
            for (int i = 0; i < 64; i++) { /* bounded, so one client cannot starve the rest */
                if (!launching) {
                    finish(c, -1);
                    return;
                }
                int r = stream_write(c, chunk, sizeof chunk);
                if (r == 0) {
                    set_events(c, EPOLLOUT);
                    return;
                }
                if (r < 0) {
                    finish(c, E_IO);
                    return;
                }
                if (counting)
                    W.bytes += (uint64_t)r;
                c->deadline = now_s() + O.timeout_ms / 1000.0; /* progress, not a stall */
            }
            set_events(c, EPOLLOUT);
            return;
        }
        case S_DONE:
            finish(c, -1);
            return;
        }
    }
}

static void on_event(struct lconn *c, uint32_t ev)
{
    if (c->idle && c->in == NULL) { /* held: the server closed it or sent something */
        char b[256];
        ssize_t n = recv(c->fd, b, sizeof b, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) || (ev & EPOLLRDHUP)) {
            idle_dropped++;
            idle_ready--;
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            close(c->fd);
            c->fd = -1;
        }
        return;
    }
    if (c->connecting) {
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        if (soerr) {
            finish(c, soerr == ECONNREFUSED ? E_REFUSED : E_CONNECT);
            return;
        }
        c->connecting = false;
        set_events(c, EPOLLIN);
        advance(c);
        return;
    }
    if (c->step->kind == S_STREAM && (ev & (EPOLLHUP | EPOLLERR))) {
        finish(c, E_EOF);
        return;
    }
    if (c->step->kind != S_HANDSHAKE && c->step->kind != S_STREAM &&
        (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
        if (conn_read(c) < 0) {
            /* A complete reply may have come with the close: the script decides. */
            if (c->step->kind == S_EXPECT && smtp_reply(c->in, c->len))
                advance(c);
            else
                finish(c, E_EOF);
            return;
        }
    }
    advance(c);
}

/* ---- the workload: conc slots, each running sessions back to back ---- */

static double t_end;
static unsigned live_work;

static void start_slot(unsigned slot);

/* Ends a session: err < 0 is success. Workload slots start their next session. */
static void finish(struct lconn *c, int err)
{
    if (c->idle) {
        if (err >= 0) {
            idle_failed++;
            if (idle_failed <= 5)
                fprintf(stderr, "loadgen: idle connection failed: %s\n", err_names[err]);
        }
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
        ssl_drop(c->ssl);
        c->ssl = NULL;
        free(c->in);
        c->in = NULL;
        return;
    }
    if (counting) {
        if (err >= 0)
            W.errs[err]++;
        else if (!c->http) {
            W.ops++;
            hist_add(&W.lat, now_s() - c->t0);
        }
    }
    if (c->streaming)
        streaming--;
    int slot = c->slot;
    conn_free(c);
    if (slot >= 0) {
        work[slot] = NULL;
        live_work--;
        if (launching && !(O.max_ops && W.ops >= O.max_ops))
            start_slot((unsigned)slot);
    }
}

static const struct step *work_script(void)
{
    switch (O.mode) {
    case MODE_SMTP:
        return script_smtp;
    case MODE_TLS:
        return script_tls;
    case MODE_STARTTLS:
        return script_starttls;
    case MODE_HTTP:
        return script_http;
    case MODE_STREAM:
        return script_stream;
    case MODE_STREAM_PLAIN:
        return script_stream_plain;
    case MODE_TRANSACTION:
        return script_transaction;
    default:
        return NULL;
    }
}

static void start_slot(unsigned slot)
{
    /* A refused connect fails at once: bounded retries keep a dead server from spinning. */
    for (int tries = 0; tries < 1000 && launching; tries++) {
        enum err_kind e = E_IO;
        unsigned pi = port_next++ % O.nports;
        struct lconn *c = conn_open(O.ports[pi], work_script(), false,
                                    O.mode == MODE_HTTP ? HTTP_BUF : SMTP_BUF, &e);
        if (c) {
            c->ticket.port = pi;
            c->slot = (int)slot;
            work[slot] = c;
            live_work++;
            return;
        }
        W.errs[e]++;
    }
}

/* Times out sessions that have waited too long (the workload slots only). */
static void check_deadlines(double now)
{
    for (unsigned i = 0; i < O.conc; i++)
        if (work[i] && now > work[i]->deadline)
            finish(work[i], E_TIMEOUT);
}

static void poll_once(int ms)
{
    struct epoll_event evs[512];
    int n = epoll_wait(ep, evs, 512, ms);
    for (int i = 0; i < n; i++) {
        struct lconn *c = evs[i].data.ptr;
        if (c->fd >= 0)
            on_event(c, evs[i].events);
    }
}

/* ---- idle connections ---- */

static struct lconn **idles;

/* Opens O.idle connections, at most idle_inflight at a time, and returns once each is held
 * or failed, or the ramp limit passed. */
static double open_idle(void)
{
    idles = calloc(O.idle, sizeof *idles);
    if (!idles)
        die("out of memory");
    double t0 = now_s(), limit = t0 + IDLE_RAMP_LIMIT_S;
    unsigned next = 0;
    const struct step *script = O.idle_tls ? script_idle_tls : script_idle;
    while (now_s() < limit) {
        uint64_t pending = next - idle_ready - idle_failed;
        while (next < O.idle && pending < O.idle_inflight) {
            enum err_kind e = E_IO;
            unsigned port = O.idle_ports[idle_port_next++ % O.nidle_ports];
            idles[next] = conn_open(port, script, true, SMTP_BUF, &e);
            if (!idles[next]) {
                idle_failed++;
                if (idle_failed <= 5)
                    fprintf(stderr, "loadgen: idle connect failed: %s\n", err_names[e]);
            }
            next++;
            pending++;
        }
        if (next >= O.idle && idle_ready + idle_failed + idle_dropped >= O.idle)
            break;
        poll_once(20);
        double now = now_s();
        for (unsigned i = 0; i < next; i++) { /* handshake or greeting stuck too long */
            struct lconn *c = idles[i];
            if (c && c->fd >= 0 && c->in && now > c->deadline)
                finish(c, E_TIMEOUT);
        }
    }
    return now_s() - t0;
}

static void close_idle(void)
{
    for (unsigned i = 0; i < O.idle; i++)
        if (idles && idles[i])
            conn_free(idles[i]);
    free(idles);
}

/* ---- listener churn through the management API (its own thread, blocking I/O) ---- */

struct churn_stats {
    uint64_t cycles, set_errors, ready_fail, refused_tries;
    struct hist set, ready;
};
static struct churn_stats C;
static volatile bool churn_stop;

static int api_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)O.api_port), .sin_addr = O.host};
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* POSTs one JMAP request on the keep-alive connection *fd (reconnecting when needed).
 * The response body goes to out (NUL-terminated). Returns the HTTP status, or -1. */
static int api_post(int *fd, const char *body, char *out, size_t cap)
{
    char head[1024];
    int hn = snprintf(head, sizeof head,
                      "POST /jmap HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                      O.token ? O.token : "", strlen(body));
    for (int attempt = 0; attempt < 2; attempt++) {
        if (*fd < 0 && (*fd = api_connect()) < 0)
            return -1;
        if (send(*fd, head, (size_t)hn, MSG_NOSIGNAL) != hn ||
            send(*fd, body, strlen(body), MSG_NOSIGNAL) != (ssize_t)strlen(body)) {
            close(*fd);
            *fd = -1;
            continue;
        }
        size_t len = 0, need = 0;
        while (len < cap - 1) {
            ssize_t r = recv(*fd, out + len, cap - 1 - len, 0);
            if (r <= 0)
                break;
            len += (size_t)r;
            out[len] = 0;
            char *end = strstr(out, "\r\n\r\n");
            if (end && !need) {
                char *cl = strcasestr(out, "\r\ncontent-length:");
                need = (size_t)(end - out) + 4 + (cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0);
            }
            if (need && len >= need)
                break;
        }
        if (!need || len < need) {
            close(*fd);
            *fd = -1;
            if (len == 0)
                continue; /* the server closed an idle keep-alive connection: retry once */
            return -1;
        }
        int status = atoi(out + 9);
        char *end = strstr(out, "\r\n\r\n") + 4;
        memmove(out, end, strlen(end) + 1);
        return status;
    }
    return -1;
}

/* Finds the value of the first "id" after `after` in a JSON text (server-set ids are
 * plain strings). */
static bool json_id_after(const char *json, const char *after, char *id, size_t cap)
{
    const char *p = strstr(json, after);
    if (!p || !(p = strstr(p, "\"id\"")))
        return false;
    p += 4;
    while (*p == ' ' || *p == ':')
        p++;
    if (*p++ != '"')
        return false;
    size_t n = 0;
    while (*p && *p != '"' && n + 1 < cap)
        id[n++] = *p++;
    id[n] = 0;
    return n > 0;
}

#define USING "\"using\":[\"urn:ietf:params:jmap:core\",\"urn:stalwart:jmap\"]"

static bool timed_set(int *fd, const char *body, char *resp, size_t cap, const char *want)
{
    double t = now_s();
    int status = api_post(fd, body, resp, cap);
    hist_add(&C.set, now_s() - t);
    if (status != 200 || !strstr(resp, want)) {
        if (C.set_errors++ < 3)
            fprintf(stderr, "loadgen: /set failed (%d): %.300s\n", status, resp);
        return false;
    }
    return true;
}

/* From the end of a /set response to a greeting from the new port: connects in a loop
 * (bounded to 1 s) and reads the first reply. */
static void time_ready(unsigned port, double t_resp)
{
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr = O.host};
    for (int tries = 0; tries < 10000 && now_s() - t_resp < 1.0; tries++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct timeval tv = {.tv_sec = 1};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
            C.refused_tries++;
            close(fd);
            continue;
        }
        char b[256];
        ssize_t n = recv(fd, b, sizeof b, 0);
        if (n >= 3 && !memcmp(b, "220", 3)) {
            hist_add(&C.ready, now_s() - t_resp);
            send(fd, "QUIT\r\n", 6, MSG_NOSIGNAL);
            close(fd);
            return;
        }
        close(fd);
        break;
    }
    C.ready_fail++;
}

/* Each cycle: create a listener on churn_port and time until it greets; add a second
 * address to it; update the given listener (if any); destroy the new one. */
static void *churn_main(void *arg)
{
    (void)arg;
    int fd = -1;
    static char body[4096], resp[1 << 20];
    char id[128];
    unsigned port = O.churn_port;
    for (uint64_t n = 0; !churn_stop && n < 100000; n++) {
        snprintf(body, sizeof body,
                 "{" USING ",\"methodCalls\":[[\"x:NetworkListener/set\",{\"create\":{\"c\":{"
                 "\"name\":\"churn-%d-%llu\",\"protocol\":\"smtp\",\"useTls\":false,"
                 "\"bind\":[\"127.0.0.1:%u\"]}}},\"0\"]]}",
                 (int)getpid(), (unsigned long long)n, port);
        if (!timed_set(&fd, body, resp, sizeof resp, "\"created\"") ||
            !json_id_after(resp, "\"created\"", id, sizeof id))
            break;
        time_ready(port, now_s());
        snprintf(body, sizeof body,
                 "{" USING ",\"methodCalls\":[[\"x:NetworkListener/set\",{\"update\":{\"%s\":{"
                 "\"bind\":[\"127.0.0.1:%u\",\"127.0.0.1:%u\"]}}},\"0\"]]}",
                 id, port, port + 1);
        timed_set(&fd, body, resp, sizeof resp, "\"updated\"");
        if (O.churn_update_id) {
            snprintf(body, sizeof body,
                     "{" USING ",\"methodCalls\":[[\"x:NetworkListener/set\",{\"update\":{\"%s\":{"
                     "\"maxConnections\":%llu}}},\"0\"]]}",
                     O.churn_update_id, 60000ull + (n % 2));
            timed_set(&fd, body, resp, sizeof resp, "\"updated\"");
        }
        snprintf(body, sizeof body,
                 "{" USING ",\"methodCalls\":[[\"x:NetworkListener/set\",{\"destroy\":[\"%s\"]},"
                 "\"0\"]]}",
                 id);
        timed_set(&fd, body, resp, sizeof resp, "\"destroyed\"");
        C.cycles++;
        struct timespec ts = {.tv_sec = O.churn_interval_ms / 1000,
                              .tv_nsec = (long)(O.churn_interval_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

/* ---- options parsing ---- */

static unsigned parse_list(const char *s, unsigned *out, unsigned max, const char *what)
{
    unsigned n = 0;
    char *copy = strdup(s), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *dash = strchr(t, '-');
        unsigned a = (unsigned)strtoul(t, NULL, 10), b = dash ? (unsigned)atoi(dash + 1) : a;
        for (unsigned p = a; p <= b; p++) {
            if (n >= max || p == 0 || p > 65535)
                die("bad %s list: %s", what, s);
            out[n++] = p;
        }
    }
    free(copy);
    return n;
}

/* A relay's rate is its steady state. Until every client streams, the window would hold
 * the handshakes of the late ones (their own workload) and count each early client's first
 * megabyte, which the kernel's socket buffers take whether the server relays it or not. So
 * every client is started, and the window opens once all stream and the buffers have filled
 * (within the per-session time-out; the handshake latencies are still recorded). */
static void warm_up_streams(void)
{
    for (unsigned i = 0; i < O.conc; i++)
        start_slot(i);
    double give_up = now_s() + O.timeout_ms / 1000.0, open_at = 0;
    for (;;) {
        double now = now_s();
        if (!open_at && streaming == O.conc)
            open_at = now + O.warm_up;
        if (open_at ? now >= open_at : now >= give_up)
            break;
        poll_once(10);
        check_deadlines(now_s());
    }
    if (streaming < O.conc)
        fprintf(stderr, "loadgen: %u of %u clients streaming after the warm-up\n", streaming,
                O.conc);
    W.bytes = 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen --mode MODE [options]\n"
            "  MODE smtp|tls|starttls|http|transaction|stream|stream-plain|sink|none\n"
            "  transaction: greeting, EHLO, MAIL, RCPT, DATA, a short message, QUIT\n"
            "  stream: implicit TLS, then write 16 KB chunks for the whole run (relay\n"
            "          throughput); stream-plain: the same without TLS. The window opens\n"
            "          once every client streams, plus --warm-up seconds\n"
            "  sink: be the backend on --ports: greet, answer SMTP commands (250, 354 to\n"
            "        DATA, 221 to QUIT), discard everything else\n"
            "  --label TEXT        name echoed in the result lines\n"
            "  --host A            server address in 127.0.0.0/8 (default 127.0.0.1)\n"
            "  --ports LIST        workload ports, e.g. 2525 or 2525,2526 or 3000-3003\n"
            "  --conc N            concurrent sessions (default 1)\n"
            "  --duration S        measured seconds (default 5, at most 600)\n"
            "  --max-ops N         stop after N sessions/requests\n"
            "  --resume            tls: offer the last session ticket (resumed handshakes)\n"
            "  --src N             source addresses 127.0.0.1..N (default 16)\n"
            "  --timeout MS        per-session time-out (default 5000)\n"
            "  --idle N            hold N idle connections (greeted) during the run\n"
            "  --idle-ports LIST   ports for them; --idle-tls: implicit TLS\n"
            "  --idle-inflight N   connection attempts in flight while opening (default 512)\n"
            "  --hold S            seconds to hold them before measuring memory (default 1)\n"
            "  --warm-up S         stream: seconds streaming before measuring (default 1)\n"
            "  --pid LIST          server processes: CPU time and VmRSS are read from /proc\n"
            "  --api PORT --token T   JMAP endpoint (http mode and churn)\n"
            "  --body JSON         http: the JMAP request (default x:NetworkListener/get)\n"
            "  --churn-port P      create/update/destroy a listener on P (and P+1) in a loop\n"
            "  --churn-update ID   also update this listener's maxConnections each cycle\n"
            "  --churn-interval MS pause between cycles (default 50)\n"
            "  --sink-cert F --sink-key F  sink: implicit TLS with this certificate and key\n");
    exit(2);
}

static void parse_opts(int argc, char **argv)
{
    static const struct option lo[] = {{"mode", 1, 0, 'm'},
                                       {"label", 1, 0, 'L'},
                                       {"host", 1, 0, 'H'},
                                       {"ports", 1, 0, 'p'},
                                       {"conc", 1, 0, 'c'},
                                       {"duration", 1, 0, 'd'},
                                       {"max-ops", 1, 0, 'n'},
                                       {"resume", 0, 0, 'r'},
                                       {"src", 1, 0, 's'},
                                       {"timeout", 1, 0, 't'},
                                       {"idle", 1, 0, 'i'},
                                       {"idle-ports", 1, 0, 'I'},
                                       {"idle-tls", 0, 0, 'T'},
                                       {"idle-inflight", 1, 0, 'f'},
                                       {"hold", 1, 0, 'h'},
                                       {"warm-up", 1, 0, 'w'},
                                       {"pid", 1, 0, 'P'},
                                       {"api", 1, 0, 'a'},
                                       {"token", 1, 0, 'k'},
                                       {"body", 1, 0, 'b'},
                                       {"churn-port", 1, 0, 'C'},
                                       {"churn-update", 1, 0, 'U'},
                                       {"churn-interval", 1, 0, 'V'},
                                       {"sink-cert", 1, 0, 'E'},
                                       {"sink-key", 1, 0, 'K'},
                                       {0, 0, 0, 0}};
    int ch;
    unsigned pids[MAX_PIDS];
    inet_pton(AF_INET, "127.0.0.1", &O.host);
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'm':
            O.mode = !strcmp(optarg, "smtp")           ? MODE_SMTP
                     : !strcmp(optarg, "tls")          ? MODE_TLS
                     : !strcmp(optarg, "starttls")     ? MODE_STARTTLS
                     : !strcmp(optarg, "http")         ? MODE_HTTP
                     : !strcmp(optarg, "stream")       ? MODE_STREAM
                     : !strcmp(optarg, "sink")         ? MODE_SINK
                     : !strcmp(optarg, "transaction")  ? MODE_TRANSACTION
                     : !strcmp(optarg, "stream-plain") ? MODE_STREAM_PLAIN
                     : !strcmp(optarg, "none")         ? MODE_NONE
                                               : (die("unknown mode %s", optarg), MODE_NONE);
            break;
        case 'L':
            O.label = optarg;
            break;
        case 'E':
            O.sink_cert = optarg;
            break;
        case 'K':
            O.sink_key = optarg;
            break;
        case 'H':
            if (inet_pton(AF_INET, optarg, &O.host) != 1 || (ntohl(O.host.s_addr) >> 24) != 127)
                die("--host must be a loopback address (127.0.0.0/8)");
            break;
        case 'p':
            O.nports = parse_list(optarg, O.ports, MAX_PORTS, "port");
            break;
        case 'c':
            O.conc = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'd':
            O.duration = strtod(optarg, NULL);
            break;
        case 'n':
            O.max_ops = strtoull(optarg, NULL, 10);
            break;
        case 'r':
            O.resume = true;
            break;
        case 's':
            O.nsrc = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 't':
            O.timeout_ms = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'i':
            O.idle = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'I':
            O.nidle_ports = parse_list(optarg, O.idle_ports, MAX_PORTS, "idle port");
            break;
        case 'T':
            O.idle_tls = true;
            break;
        case 'f':
            O.idle_inflight = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'h':
            O.hold = strtod(optarg, NULL);
            break;
        case 'w':
            O.warm_up = strtod(optarg, NULL);
            break;
        case 'P':
            O.npids = (int)parse_list(optarg, pids, MAX_PIDS, "pid");
            for (int i = 0; i < O.npids; i++)
                O.pids[i] = (int)pids[i];
            break;
        case 'a':
            O.api_port = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'k':
            O.token = optarg;
            break;
        case 'b':
            O.http_body = optarg;
            break;
        case 'C':
            O.churn_port = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'U':
            O.churn_update_id = optarg;
            break;
        case 'V':
            O.churn_interval_ms = (unsigned)strtoul(optarg, NULL, 10);
            break;
        default:
            usage();
        }
    }
    if (O.conc < 1 || O.conc > 100000 || O.duration <= 0 || O.duration > 600 || O.nsrc < 1 ||
        O.nsrc > 250 || O.idle > 200000 || O.hold < 0 || O.hold > 600 || O.idle_inflight < 1)
        die("an option is out of range (conc 1..100000, duration 0..600 s, src 1..250, "
            "idle ..200000, hold ..600 s)");
    if (O.mode != MODE_NONE && O.mode != MODE_HTTP && !O.nports)
        die("--ports is required for this mode");
    if (O.mode == MODE_HTTP && !O.api_port)
        die("http mode needs --api PORT");
    if (O.mode == MODE_HTTP) {
        O.nports = 1;
        O.ports[0] = O.api_port;
    }
    if (O.idle && !O.nidle_ports)
        die("--idle needs --idle-ports");
    if (O.churn_port && !O.api_port)
        die("--churn-port needs --api PORT");
}

/* Room for every descriptor this run may hold; root may raise the hard limit. */
static void raise_nofile(void)
{
    rlim_t want = (rlim_t)O.idle + O.conc + 4096;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur >= want)
        return;
    struct rlimit nl = {.rlim_cur = want, .rlim_max = want > rl.rlim_max ? want : rl.rlim_max};
    if (setrlimit(RLIMIT_NOFILE, &nl) < 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        fprintf(stderr, "loadgen: descriptor limit %llu, below the %llu wanted\n",
                (unsigned long long)rl.rlim_max, (unsigned long long)want);
    }
}

/* One blocking implicit-TLS handshake on each port, so resumed runs start with a ticket
 * from every server in hand. */
static void warm_up_ticket(unsigned pi)
{
    unsigned port = O.ports[pi];
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr = O.host};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        die("warm-up connect to port %u failed: %s", port, strerror(errno));
    SSL *ssl = SSL_new(client_ctx);
    struct ticket_key key = {.slot = -1, .port = pi};
    SSL_set_app_data(ssl, &key);
    SSL_set_fd(ssl, fd);
    char b[512];
    if (SSL_connect(ssl) != 1 || SSL_read(ssl, b, sizeof b) <= 0)
        die("warm-up handshake on port %u failed", port);
    ssl_drop(ssl);
    close(fd);
    if (!last_session[pi])
        die("the server on port %u issued no session ticket", port);
}

/* The sink's state per descriptor: its TLS session (--sink-cert: a server context) and
 * where it is in the SMTP dialogue. */
struct sink_smtp {
    bool data;     /* between 354 and the final "." */
    bool overlong; /* the command line outgrew line[]: dropped up to its end */
    int dot;       /* in data: 1 at a line start, 2 after ".", 3 after ".\r", else 0 */
    size_t len;
    char line[256];
};
static SSL_CTX *sink_ctx;
static SSL **sink_ssl;
static struct sink_smtp **sink_state;
static int sink_nfd;

static void sink_init(void)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    sink_nfd = (int)(rl.rlim_cur > 1048576 ? 1048576 : rl.rlim_cur);
    sink_state = calloc((size_t)sink_nfd, sizeof *sink_state);
    if (!sink_state)
        die("sink: out of memory");
    if (!O.sink_cert)
        return;
    sink_ctx = SSL_CTX_new(TLS_server_method());
    if (!sink_ctx || SSL_CTX_use_certificate_chain_file(sink_ctx, O.sink_cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(sink_ctx, O.sink_key ? O.sink_key : O.sink_cert,
                                    SSL_FILETYPE_PEM) != 1)
        die("sink: cannot load %s", O.sink_cert);
    sink_ssl = calloc((size_t)sink_nfd, sizeof *sink_ssl);
    if (!sink_ssl)
        die("sink: out of memory");
}

static void sink_close(int fd)
{
    if (sink_ssl && fd < sink_nfd && sink_ssl[fd]) {
        SSL_free(sink_ssl[fd]);
        sink_ssl[fd] = NULL;
    }
    if (fd < sink_nfd) {
        free(sink_state[fd]);
        sink_state[fd] = NULL;
    }
    close(fd); /* also leaves the epoll set */
}

static void sink_reply(int fd, const char *text)
{
    SSL *ssl = sink_ssl && fd < sink_nfd ? sink_ssl[fd] : NULL;
    if (ssl) {
        ERR_clear_error();
        SSL_write(ssl, text, (int)strlen(text));
    } else {
        send(fd, text, strlen(text), MSG_NOSIGNAL);
    }
}

/* Answers one command line; false after QUIT (the connection is to be closed). */
static bool sink_command(int fd, struct sink_smtp *st)
{
    char verb[5] = {0};
    for (size_t i = 0; i < 4 && i < st->len; i++)
        verb[i] = (char)(st->line[i] & ~0x20); /* upper case, enough for the verbs */
    if (!strcmp(verb, "QUIT")) {
        sink_reply(fd, "221 2.0.0 Bye\r\n");
        return false;
    }
    if (!strcmp(verb, "DATA")) {
        st->data = true;
        st->dot = 1;
        sink_reply(fd, "354 End data with <CR><LF>.<CR><LF>\r\n");
    } else if (!strcmp(verb, "EHLO") || !strcmp(verb, "HELO")) {
        sink_reply(fd, "250 backend.localhost\r\n");
    } else if (!strcmp(verb, "MAIL") || !strcmp(verb, "RCPT") || !strcmp(verb, "RSET") ||
               !strcmp(verb, "NOOP")) {
        sink_reply(fd, "250 2.0.0 OK\r\n");
    } else {
        sink_reply(fd, "500 5.5.2 Command not recognized\r\n");
    }
    return true;
}

/* Follows the message until its final ".": returns the bytes of p it took. */
static size_t sink_data(int fd, struct sink_smtp *st, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (ch == '\n' && st->dot >= 2) {
            st->data = false;
            sink_reply(fd, "250 2.0.0 Queued\r\n");
            return i + 1;
        }
        st->dot = ch == '\n'                   ? 1
                  : ch == '.' && st->dot == 1  ? 2
                  : ch == '\r' && st->dot == 2 ? 3
                                               : 0;
    }
    return n;
}

/* Takes received bytes: complete command lines are answered, a message is followed to its
 * end; anything else (a relay's stream has no line ends) is dropped, in bounded memory.
 * False once the connection is to be closed. */
static bool sink_feed(int fd, const char *p, size_t n)
{
    if (fd >= sink_nfd)
        return true;
    struct sink_smtp *st = sink_state[fd];
    if (!st && !(st = sink_state[fd] = calloc(1, sizeof *st)))
        die("sink: out of memory");
    while (n) {
        size_t took;
        if (st->data) {
            took = sink_data(fd, st, p, n);
        } else {
            const char *eol = memchr(p, '\n', n);
            took = eol ? (size_t)(eol - p) + 1 : n;
            size_t room = sizeof st->line - st->len, copy = took < room ? took : room;
            memcpy(st->line + st->len, p, copy);
            st->len += copy;
            st->overlong |= copy < took;
            if (eol) {
                bool keep = st->overlong || sink_command(fd, st);
                st->len = 0;
                st->overlong = false;
                if (!keep)
                    return false;
            }
        }
        p += took;
        n -= took;
    }
    return true;
}

/* Reads (TLS or not): >0 bytes, 0 when there is nothing more for now, -1 when closed. */
static ssize_t sink_read(int fd, char *buf, size_t len)
{
    static const char greeting[] = "220 backend.localhost ESMTP\r\n";
    SSL *ssl = sink_ssl && fd < sink_nfd ? sink_ssl[fd] : NULL;
    if (!ssl) {
        ssize_t r = recv(fd, buf, len, 0);
        return r > 0 ? r : r == 0 || (errno != EAGAIN && errno != EINTR) ? -1 : 0;
    }
    /* the error queue is shared by every connection: one connection's failure left there
     * would make SSL_get_error report it for the next one */
    ERR_clear_error();
    if (!SSL_is_init_finished(ssl)) {
        int rc = SSL_do_handshake(ssl);
        if (rc != 1) {
            int e = SSL_get_error(ssl, rc);
            return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
        }
        SSL_write(ssl, greeting, sizeof greeting - 1);
        ERR_clear_error();
    }
    int r = SSL_read(ssl, buf, (int)len);
    if (r > 0)
        return r;
    int e = SSL_get_error(ssl, r);
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
}

/* The backend for relays and hand-offs: greets each connection (after a TLS handshake with
 * --sink-cert), answers SMTP commands and discards everything else until the run ends.
 * Reports the bytes received. */
static void run_sink(void)
{
    sink_init();
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)O.ports[0]), .sin_addr = O.host};
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 1024) < 0)
        die("sink: bind/listen on port %u: %s", O.ports[0], strerror(errno));
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    static char buf[1 << 16];
    static const char greeting[] = "220 backend.localhost ESMTP\r\n";
    uint64_t bytes = 0, conns = 0;
    for (double end = now_s() + O.duration; now_s() < end;) {
        struct epoll_event evs[256];
        int n = epoll_wait(ep, evs, 256, 50);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                int cfd;
                while ((cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    conns++;
                    if (sink_ctx && cfd < sink_nfd) {
                        sink_ssl[cfd] = SSL_new(sink_ctx);
                        SSL_set_fd(sink_ssl[cfd], cfd);
                        SSL_set_accept_state(sink_ssl[cfd]);
                    } else {
                        send(cfd, greeting, sizeof greeting - 1, MSG_NOSIGNAL);
                    }
                    struct epoll_event ce = {.events = EPOLLIN, .data.fd = cfd};
                    epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ce);
                }
                continue;
            }
            for (int k = 0; k < 16; k++) {
                ssize_t r = sink_read(fd, buf, sizeof buf);
                if (r > 0) {
                    bytes += (uint64_t)r;
                    if (sink_feed(fd, buf, (size_t)r))
                        continue;
                    r = -1; /* QUIT answered */
                }
                if (r < 0)
                    sink_close(fd);
                break;
            }
        }
    }
    printf("SINK label=%s conns=%llu bytes=%llu\n", O.label, (unsigned long long)conns,
           (unsigned long long)bytes);
}

static void print_hist(const char *prefix, const struct hist *h)
{
    printf(" %s_p50_us=%llu %s_p99_us=%llu %s_max_us=%llu", prefix,
           (unsigned long long)hist_q(h, 0.50), prefix, (unsigned long long)hist_q(h, 0.99), prefix,
           (unsigned long long)h->max_us);
}

int main(int argc, char **argv)
{
    parse_opts(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    tls_init();
    hist_init(&W.lat);
    hist_init(&W.first);
    hist_init(&C.set);
    hist_init(&C.ready);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1: %s", strerror(errno));
    if (O.mode == MODE_HTTP) {
        size_t bl = strlen(O.http_body);
        http_request = malloc(bl + 1024);
        http_request_len =
            (size_t)sprintf(http_request,
                            "POST /jmap HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
                            "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                            O.token ? O.token : "", bl, O.http_body);
    }

    if (O.mode == MODE_SINK) {
        run_sink();
        return 0;
    }

    /* 1. the idle set, with the server's memory before and after */
    if (O.idle) {
        long rss0 = proc_rss_kb();
        double cpu0 = proc_cpu_s();
        double secs = open_idle();
        double cpu1 = proc_cpu_s();
        for (double t = now_s() + O.hold; now_s() < t;)
            poll_once(50);
        long rss1 = proc_rss_kb();
        printf("IDLE label=%s tls=%d wanted=%u held=%llu failed=%llu dropped=%llu "
               "open_s=%.2f accepts_per_s=%.0f rss_before_kb=%ld rss_after_kb=%ld "
               "bytes_per_conn=%.0f server_cpu_s=%.2f\n",
               O.label, O.idle_tls, O.idle, (unsigned long long)idle_ready,
               (unsigned long long)idle_failed, (unsigned long long)idle_dropped, secs,
               secs > 0 ? (double)idle_ready / secs : 0, rss0, rss1,
               idle_ready ? (double)(rss1 - rss0) * 1024.0 / (double)idle_ready : 0, cpu1 - cpu0);
        fflush(stdout);
    }

    /* 2. the measured workload (and the churn thread beside it) */
    pthread_t churn;
    bool churning = O.churn_port != 0;
    if (O.mode == MODE_TLS && O.resume)
        for (unsigned i = 0; i < O.nports; i++)
            warm_up_ticket(i);
    work = calloc(O.conc, sizeof *work);
    slot_session = calloc((size_t)O.conc * O.nports, sizeof *slot_session);
    if (!work || !slot_session)
        die("out of memory");
    bool streams = O.mode == MODE_STREAM || O.mode == MODE_STREAM_PLAIN;
    if (streams)
        warm_up_streams();
    double cpu0 = proc_cpu_s(), self0 = self_cpu_s(), t0 = now_s();
    t_end = t0 + O.duration;
    if (churning && pthread_create(&churn, NULL, churn_main, NULL) != 0)
        die("cannot start the churn thread");
    if (O.mode != MODE_NONE)
        for (unsigned i = 0; i < O.conc; i++)
            if (!work[i]) /* the stream modes' are running */
                start_slot(i);
    while (now_s() < t_end) {
        if (O.mode != MODE_NONE && O.max_ops && W.ops >= O.max_ops)
            break;
        poll_once(10);
        check_deadlines(now_s());
        if (O.mode != MODE_NONE)
            for (unsigned i = 0; i < O.conc; i++)
                if (!work[i] && !(O.max_ops && W.ops >= O.max_ops))
                    start_slot(i);
    }
    /* A stream's bytes count as they are written, so its window ends here: the servers'
     * draining of what the kernel still buffers afterwards is outside it. */
    double elapsed = now_s() - t0;
    double cpu1 = proc_cpu_s(), self1 = self_cpu_s();
    uint64_t bytes = W.bytes;
    /* No new sessions; those in flight still count (a session slower than the window, as a
     * TLS handshake among 1,024 clients can be, would otherwise never be seen), within the
     * per-session time-out. */
    launching = false;
    if (churning) {
        churn_stop = true;
        pthread_join(churn, NULL);
    }
    for (double lim = now_s() + O.timeout_ms / 1000.0; live_work && now_s() < lim;) {
        poll_once(10);
        check_deadlines(now_s());
    }
    counting = false;
    if (!streams) {
        elapsed = now_s() - t0;
        cpu1 = proc_cpu_s();
        self1 = self_cpu_s();
    }
    uint64_t still_held = idle_ready;

    if (O.mode != MODE_NONE) {
        uint64_t errs = 0;
        for (int i = 0; i < E_COUNT; i++)
            errs += W.errs[i];
        double scpu = cpu1 - cpu0;
        printf("RESULT label=%s mode=%s conc=%u secs=%.2f ops=%llu rate=%.1f errors=%llu", O.label,
               mode_names[O.mode], O.conc, elapsed, (unsigned long long)W.ops,
               (double)W.ops / elapsed, (unsigned long long)errs);
        for (int i = 0; i < E_COUNT; i++)
            if (W.errs[i])
                printf(" err_%s=%llu", err_names[i], (unsigned long long)W.errs[i]);
        if (O.mode == MODE_TLS || O.mode == MODE_STARTTLS)
            printf(" reused=%llu", (unsigned long long)W.reused);
        if (streams)
            printf(" bytes=%llu mbytes_per_s=%.1f mbytes_per_server_cpu_s=%.1f",
                   (unsigned long long)bytes, (double)bytes / 1e6 / elapsed,
                   scpu > 0 ? (double)bytes / 1e6 / scpu : 0);
        print_hist("lat", &W.lat);
        if (O.mode != MODE_HTTP)
            print_hist("first", &W.first);
        printf(" server_cpu_s=%.2f ops_per_server_cpu_s=%.0f client_cpu_s=%.2f", scpu,
               scpu > 0 ? (double)W.ops / scpu : 0, self1 - self0);
        if (O.idle)
            printf(" idle_held=%llu idle_dropped=%llu", (unsigned long long)still_held,
                   (unsigned long long)idle_dropped);
        printf("\n");
    }
    if (churning) {
        printf("CHURN label=%s cycles=%llu set_errors=%llu ready_fail=%llu refused_tries=%llu",
               O.label, (unsigned long long)C.cycles, (unsigned long long)C.set_errors,
               (unsigned long long)C.ready_fail, (unsigned long long)C.refused_tries);
        print_hist("set", &C.set);
        print_hist("ready", &C.ready);
        printf("\n");
    }
    fflush(stdout);
    for (unsigned i = 0; i < O.conc; i++)
        if (work[i])
            conn_free(work[i]);
    close_idle();
    return 0;
}

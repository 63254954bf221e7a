/*
 * log: formats an event line and writes it with a single write(2), so lines from
 * several worker threads never interleave. Session lines are many and collected per worker
 * thread in a buffer written when it fills and by a loop timer, so a busy worker pays one
 * system call for many sessions. The log file is reopened onto the same descriptor
 * (dup2), so no writer ever sees it change.
 */
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/loop.h"

#define THREAD_BUF   65536
#define FLUSH_MS     500 /* a buffered line waits at most this long (plus one loop turn) */
#define LOG_PATH_MAX 4096

static enum gh_log_format log_format = GH_LOG_TEXT;
static int log_fd = STDERR_FILENO;
static char log_path[LOG_PATH_MAX]; /* set once at start, before any thread */
static atomic_bool sessions_on = true;

/* Owner: the thread it belongs to (gh_log_attach/gh_log_detach). */
struct thread_buf {
    struct gh_loop *loop;
    struct gh_timer timer;
    size_t len;
    char data[THREAD_BUF];
};
static _Thread_local struct thread_buf *tbuf;

static void write_all(const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(log_fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* nowhere to report it: the log is where errors go */
        p += w;
        n -= (size_t)w;
    }
}

bool gh_log_open_file(const char *path, gh_err *err)
{
    if (strlen(path) >= sizeof log_path)
        return gh_fail(err, "--log-file: the path is too long");
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return gh_fail_sys(err, errno, "--log-file %s", path);
    snprintf(log_path, sizeof log_path, "%s", path);
    log_fd = fd;
    return true;
}

bool gh_log_reopen(gh_err *err)
{
    if (!log_path[0])
        return true;
    int fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return gh_fail_sys(err, errno, "reopening %s", log_path);
    bool ok = dup3(fd, log_fd, O_CLOEXEC) >= 0;
    int e = errno;
    close(fd);
    return ok || gh_fail_sys(err, e, "reopening %s", log_path);
}

void gh_log_set_sessions(bool on)
{
    atomic_store(&sessions_on, on);
}

bool gh_log_sessions(void)
{
    return atomic_load_explicit(&sessions_on, memory_order_relaxed);
}

void gh_log_flush(void)
{
    if (!tbuf || !tbuf->len)
        return;
    write_all(tbuf->data, tbuf->len);
    tbuf->len = 0;
}

static void on_flush(struct gh_timer *t)
{
    gh_log_flush();
}

void gh_log_attach(struct gh_loop *loop)
{
    if (tbuf || !(tbuf = malloc(sizeof *tbuf)))
        return;
    tbuf->loop = loop;
    tbuf->timer = (struct gh_timer){.fn = on_flush};
    tbuf->len = 0;
}

void gh_log_detach(void)
{
    if (!tbuf)
        return;
    gh_log_flush();
    gh_timer_cancel(tbuf->loop, &tbuf->timer);
    free(tbuf);
    tbuf = NULL;
}

/* n more bytes of the thread's buffer hold lines: they go out within FLUSH_MS. */
static void keep(size_t n)
{
    tbuf->len += n;
    if (!gh_timer_armed(&tbuf->timer))
        gh_timer_set(tbuf->loop, &tbuf->timer, FLUSH_MS);
}

void gh_log_init(enum gh_log_format format)
{
    log_format = format;
}

/* Appends s to out as the inside of a JSON string. */
static size_t json_escape(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    for (; *s && n + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
        } else {
            out[n++] = (char)c;
        }
    }
    out[n] = 0;
    return n;
}

/* when[0..] gets the time and its NUL; returns its length. coarse: the clock's tick (a few
 * ms) is enough and costs no system call (session lines). */
static size_t timestamp_clock(char when[64], clockid_t clock)
{
    static _Thread_local time_t cached_sec = -1;
    static _Thread_local char cached[80]; /* "YYYY-MM-DDTHH:MM:SS" of cached_sec */
    static _Thread_local size_t cached_len;
    struct timespec ts;
    clock_gettime(clock, &ts);
    if (ts.tv_sec != cached_sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        int n = snprintf(cached, sizeof cached, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
                         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        cached_len = n < 0 ? 0 : (size_t)n < 58 ? (size_t)n : 58; /* room for ".mmmZ" */
        cached_sec = ts.tv_sec;
    }
    unsigned ms = (unsigned)(ts.tv_nsec / 1000000);
    size_t n = cached_len;
    memcpy(when, cached, n);
    when[n] = '.';
    when[n + 1] = (char)('0' + ms / 100);
    when[n + 2] = (char)('0' + ms / 10 % 10);
    when[n + 3] = (char)('0' + ms % 10);
    when[n + 4] = 'Z';
    when[n + 5] = 0;
    return n + 5;
}

static void timestamp(char when[64])
{
    timestamp_clock(when, CLOCK_REALTIME);
}

void gh_log(const char *listener, const char *client, const char *event, const char *fmt, ...)
{
    char text[1024], line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);

    char when[64];
    timestamp(when);

    int n;
    if (log_format == GH_LOG_JSON) {
        char l[160], c[160], m[1100];
        json_escape(l, sizeof l, listener ? listener : "");
        json_escape(c, sizeof c, client ? client : "");
        json_escape(m, sizeof m, text);
        n = snprintf(line, sizeof line,
                     "{\"time\":\"%s\",\"event\":\"%s\",\"listener\":\"%s\",\"client\":\"%s\","
                     "\"message\":\"%s\"}\n",
                     when, event, l, c, m);
    } else {
        n = snprintf(line, sizeof line, "%s %s listener=%s client=%s %s\n", when, event,
                     listener ? listener : "-", client ? client : "-", text);
    }
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line) {
        n = sizeof line - 1;
        line[n - 1] = '\n';
    }
    write_all(line, (size_t)n);
}

/* A session line being built in place: bytes up to cap, with room kept for the closing
 * "}\n". Each value is copied once, checked as it goes. The loops work on locals: a store
 * through a char pointer could alias the struct, which would keep them from registers. */
struct line {
    char *p;
    size_t n, cap;
};

#define VALUE_MAX 599 /* bytes of one value, at most */

static void put_n(struct line *l, const char *s, size_t len)
{
    size_t room = l->cap - 3 - l->n;
    len = len < room ? len : room;
    memcpy(l->p + l->n, s, len);
    l->n += len;
}

static void put(struct line *l, const char *s)
{
    put_n(l, s, strlen(s));
}

/* Where a value must stop: its own bound or the end of the line's room. */
static size_t value_stop(const struct line *l)
{
    size_t room = l->cap - 3, own = l->n + VALUE_MAX;
    return room < own ? room : own;
}

/* A text value: characters that would split or fake a field become '?'. */
static void put_text(struct line *l, const char *s)
{
    char *p = l->p;
    size_t n = l->n, stop = value_stop(l);
    for (; *s && n < stop; s++) {
        unsigned char c = (unsigned char)*s;
        p[n++] = (c <= 0x20 || c == 0x7f || c == '"' || c == '=') ? '?' : (char)c;
    }
    l->n = n;
}

/* The inside of a JSON string, within the value's bound and the line's room. */
static void put_json(struct line *l, const char *s)
{
    l->n += json_escape(l->p + l->n, value_stop(l) - l->n + 1, s);
}

static void put_field(struct line *l, bool json, const struct gh_log_key *k, const char *value)
{
    if (json)
        put_n(l, k->json, k->json_len);
    else
        put_n(l, k->text, k->text_len);
    bool quoted = json && k->kind != GH_LOG_NUM;
    const char *v = *value || quoted ? value : "-";
    if (quoted)
        put(l, "\"");
    if (k->kind != GH_LOG_FOREIGN)
        put(l, v);
    else if (json)
        put_json(l, v);
    else
        put_text(l, v);
    if (quoted)
        put(l, "\"");
}

#define LINE_CAP 2048 /* bytes of a structured line, at most, its newline included */

void gh_log_fields(const char *event, const struct gh_log_key *keys, const char *const *values,
                   unsigned nf)
{
    char own[LINE_CAP];
    /* made in place in the thread's buffer when it has one: no second copy */
    if (tbuf && sizeof tbuf->data - tbuf->len < LINE_CAP)
        gh_log_flush();
    struct line l = {tbuf ? tbuf->data + tbuf->len : own, 0, LINE_CAP};
    bool json = log_format == GH_LOG_JSON;
    if (json)
        put(&l, "{\"time\":\"");
    l.n += timestamp_clock(l.p + l.n, CLOCK_REALTIME_COARSE);
    put(&l, json ? "\",\"event\":\"" : " ");
    put(&l, event);
    if (json)
        put(&l, "\"");
    for (unsigned i = 0; i < nf; i++)
        if (values[i])
            put_field(&l, json, &keys[i], values[i]);
    if (json)
        l.p[l.n++] = '}';
    l.p[l.n++] = '\n';
    if (tbuf)
        keep(l.n);
    else
        write_all(own, l.n);
}

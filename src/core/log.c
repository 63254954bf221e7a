/*
 * log: formats an event line and writes it with a single write(2), so lines from
 * several worker threads never interleave.
 */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum gh_log_format log_format = GH_LOG_TEXT;

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

void gh_log(const char *listener, const char *client, const char *event, const char *fmt, ...)
{
    char text[1024], line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[64];
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);

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
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

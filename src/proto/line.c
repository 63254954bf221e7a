/*
 * line: cuts the input of the text protocols into lines, keeps an over-long line from
 * growing the buffer (it is reported once and its rest thrown away), and recognises the
 * literals of IMAP and ManageSieve so their bytes are skipped instead of parsed. It also
 * runs the input loop, error count and goodbyes that SMTP, IMAP, POP3 and ManageSieve share.
 */
#include "proto/line.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/mem.h"

enum gh_line_result gh_line_take(struct gh_buf *in, size_t max, bool *skipping, char **line,
                                 size_t *len)
{
    for (;;) {
        char *head = gh_buf_head(in);
        size_t avail = gh_buf_len(in);
        char *lf = avail ? memchr(head, '\n', avail) : NULL;

        if (*skipping) {
            /* The rest of a line already reported as too long: drop it through its LF. */
            if (!lf) {
                gh_buf_consume(in, avail);
                return GH_LINE_MORE;
            }
            gh_buf_consume(in, (size_t)(lf - head) + 1);
            *skipping = false;
            continue;
        }
        if (!lf) {
            /* max content bytes plus a CR may still be waiting for their LF. */
            if (avail <= max + 1)
                return GH_LINE_MORE;
            gh_buf_consume(in, avail);
            *skipping = true;
            return GH_LINE_TOO_LONG;
        }
        size_t n = (size_t)(lf - head);
        size_t taken = n + 1;
        if (n && head[n - 1] == '\r')
            n--;
        gh_buf_consume(in, taken);
        if (n > max)
            return GH_LINE_TOO_LONG;
        head[n] = '\0';
        *line = head;
        *len = n;
        return GH_LINE_OK;
    }
}

bool gh_line_literal(const char *line, size_t len, uint64_t *n, bool *nonsync)
{
    if (len < 3 || line[len - 1] != '}')
        return false;
    size_t end = len - 1;
    bool plus = line[end - 1] == '+' || line[end - 1] == '-';
    if (plus)
        end--;
    size_t start = end;
    while (start > 0 && line[start - 1] >= '0' && line[start - 1] <= '9')
        start--;
    /* 1 to 19 digits, so the value fits in 64 bits. */
    if (start == end || end - start > 19 || start == 0 || line[start - 1] != '{')
        return false;
    uint64_t v = 0;
    for (size_t i = start; i < end; i++)
        v = v * 10 + (uint64_t)(line[i] - '0');
    *n = v;
    *nonsync = plus;
    return true;
}

bool gh_line_skip(struct gh_buf *in, uint64_t *remaining)
{
    size_t avail = gh_buf_len(in);
    size_t n = *remaining < avail ? (size_t)*remaining : avail;
    gh_buf_consume(in, n);
    *remaining -= n;
    return *remaining == 0;
}

const char *gh_line_word(const char *line, size_t *word_len)
{
    size_t n = 0;
    while (line[n] && line[n] != ' ')
        n++;
    *word_len = n;
    const char *args = line + n;
    while (*args == ' ')
        args++;
    return args;
}

bool gh_line_is_any(const char *word, size_t word_len, const char *const *names)
{
    for (; *names; names++)
        if (gh_line_is(word, word_len, *names))
            return true;
    return false;
}

static uint32_t idle_override;
static pthread_once_t idle_once = PTHREAD_ONCE_INIT;

static void read_idle_env(void)
{
    const char *env = getenv("GATEHOUSE_MAIL_IDLE_MS");
    long ms = env ? strtol(env, NULL, 10) : 0;
    if (ms >= 100 && ms <= 86400000)
        idle_override = (uint32_t)ms;
}

uint32_t gh_line_idle_ms(uint32_t dflt)
{
    pthread_once(&idle_once, read_idle_env);
    return idle_override ? idle_override : dflt;
}

void *gh_line_open(struct gh_conn *c, size_t size, const struct gh_line_proto *proto)
{
    struct gh_line_reader *r = gh_zalloc(size);
    if (!r) {
        gh_conn_close(c);
        return NULL;
    }
    r->proto = proto;
    c->proto_state = r;
    gh_conn_set_idle(c, gh_line_idle_ms(proto->idle_ms));
    return r;
}

/* IMAP and ManageSieve: true when the line announces a literal that follows at once, so its
 * command goes on after it; its bytes will be skipped, never read as commands. A literal over
 * max_literal cannot be told apart from commands: the session ends (false, r stopped). */
static bool literal_follows(struct gh_conn *c, struct gh_line_reader *r, const char *line,
                            size_t len)
{
    const struct gh_line_proto *p = r->proto;
    uint64_t n;
    bool nonsync;
    if (!gh_line_literal(line, len, &n, &nonsync) || !(nonsync || p->sync_literal_follows))
        return false;
    if (n > p->max_literal) {
        gh_conn_printf(c, "%s", p->literal_too_large);
        gh_line_stop(c);
        return false;
    }
    r->literal = n;
    return true;
}

/* The first line of a command goes to the protocol; with literals, the command is answered
 * at the first line that announces none to follow. */
static void take(struct gh_conn *c, struct gh_line_reader *r, const char *line, size_t len)
{
    const struct gh_line_proto *p = r->proto;
    if (!r->continued)
        p->line(c, line, len);
    if (!p->finish || r->stopped)
        return;
    r->continued = literal_follows(c, r, line, len);
    if (!r->continued && !r->stopped)
        p->finish(c);
}

void gh_line_input(struct gh_conn *c)
{
    struct gh_line_reader *r = c->proto_state;
    if (!r)
        return;
    const struct gh_line_proto *p = r->proto;
    bool active = false;
    /* A connection closed at once (a hand-off that ran out of memory) has freed r already. */
    while (!c->closed && !r->stopped && gh_buf_len(&c->out) < GH_LINE_OUT_MAX) {
        if (r->literal && !gh_line_skip(&c->in, &r->literal))
            break;
        char *line;
        size_t len;
        enum gh_line_result got = gh_line_take(&c->in, p->max_line, &r->skipping, &line, &len);
        if (got == GH_LINE_MORE)
            break;
        active = true;
        if (got == GH_LINE_TOO_LONG) {
            if (p->too_long)
                p->too_long(c);
            else
                gh_line_error(c, p->too_long_reply);
            r->continued = false;
        } else {
            take(c, r, line, len);
        }
    }
    /* Only complete commands count as activity, so a trickle of bytes cannot hold a slot. */
    if (active && !c->closed && !r->stopped)
        gh_conn_set_idle(c, gh_line_idle_ms(p->idle_ms));
}

void gh_line_stop(struct gh_conn *c)
{
    struct gh_line_reader *r = c->proto_state;
    r->stopped = true;
    gh_conn_close_after_flush(c);
}

void gh_line_error(struct gh_conn *c, const char *reply)
{
    struct gh_line_reader *r = c->proto_state;
    gh_conn_printf(c, "%s\r\n", reply);
    if (++r->errors >= GH_LINE_MAX_ERRORS) {
        gh_conn_printf(c, r->proto->too_many_errors, gh_conn_hostname(c));
        gh_line_stop(c);
    }
}

void gh_line_starttls(struct gh_conn *c)
{
    struct gh_line_reader *r = c->proto_state;
    r->stopped = true;
    gh_conn_starttls(c);
}

void gh_line_restart(struct gh_conn *c)
{
    struct gh_line_reader *r = c->proto_state;
    if (!r)
        return;
    r->stopped = false;
    r->skipping = false;
    r->literal = 0;
    r->continued = false;
    gh_conn_set_idle(c, gh_line_idle_ms(r->proto->idle_ms));
    gh_line_input(c);
}

/* Without a state the connection was closed at open, so there is nothing to say. */
static void goodbye(struct gh_conn *c, bool idle)
{
    struct gh_line_reader *r = c->proto_state;
    if (r && !r->stopped) {
        const struct gh_line_proto *p = r->proto;
        gh_conn_printf(c, idle ? p->idle_goodbye : p->shutdown_goodbye, gh_conn_hostname(c));
        r->stopped = true;
    }
    gh_conn_close_after_flush(c);
}

void gh_line_idle(struct gh_conn *c)
{
    goodbye(c, true);
}

void gh_line_shutdown(struct gh_conn *c)
{
    goodbye(c, false);
}

void gh_line_release(struct gh_conn *c)
{
    free(c->proto_state);
    c->proto_state = NULL;
}

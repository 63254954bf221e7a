/*
 * line: cuts the input of the text protocols into lines, keeps an over-long line from
 * growing the buffer (it is reported once and its rest thrown away), and recognises the
 * literals of IMAP and ManageSieve so their bytes are skipped instead of parsed.
 */
#include "proto/line.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

bool gh_line_is(const char *word, size_t word_len, const char *name)
{
    return strlen(name) == word_len && strncasecmp(word, name, word_len) == 0;
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

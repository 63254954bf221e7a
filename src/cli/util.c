/*
 * util: the shared helpers of gatehouse-cli (see util.h).
 */
#include "cli/util.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

int gh_cli_fail(gh_cli_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

void gh_cli_err_context(gh_cli_err *err, const char *fmt, ...)
{
    char old[sizeof err->msg];
    memcpy(old, err->msg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof err->msg)
        snprintf(err->msg + n, sizeof err->msg - (size_t)n, ": %s", old);
}

int gh_cli_read_file(const char *path, size_t max, char **out, gh_cli_err *err)
{
    bool is_stdin = strcmp(path, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f)
        return gh_cli_fail(err, GH_CLI_USAGE, "cannot read %s: %s", path, strerror(errno));
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    int status = GH_CLI_OK;
    while (buf) {
        if (len + 1 >= cap) {
            if (cap >= max + 2) {
                status = gh_cli_fail(err, GH_CLI_USAGE, "%s: larger than %zu bytes",
                                     is_stdin ? "stdin" : path, max);
                break;
            }
            size_t want = cap * 2 < max + 2 ? cap * 2 : max + 2;
            char *grown = realloc(buf, want);
            if (!grown) {
                status = gh_cli_fail(err, GH_CLI_USAGE, "out of memory reading %s", path);
                break;
            }
            buf = grown;
            cap = want;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0) {
            if (ferror(f))
                status = gh_cli_fail(err, GH_CLI_USAGE, "cannot read %s: %s",
                                     is_stdin ? "stdin" : path, strerror(errno));
            break;
        }
    }
    if (!is_stdin)
        fclose(f);
    if (!buf)
        return gh_cli_fail(err, GH_CLI_USAGE, "out of memory reading %s", path);
    if (status != GH_CLI_OK) {
        free(buf);
        return status;
    }
    buf[len] = '\0';
    *out = buf;
    return GH_CLI_OK;
}

static const char *skip_prefix(const char *s)
{
    return (s[0] == 'x' || s[0] == 'X') && s[1] == ':' ? s + 2 : s;
}

bool gh_cli_same_name(const char *a, const char *b)
{
    a = skip_prefix(a);
    b = skip_prefix(b);
    for (;;) {
        while (*a == '-' || *a == '_')
            a++;
        while (*b == '-' || *b == '_')
            b++;
        if (!*a || !*b)
            return !*a && !*b;
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
            return false;
        a++;
        b++;
    }
}

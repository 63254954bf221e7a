/*
 * err: the error value's constructors. Messages are truncated, never overflowed.
 */
#include "core/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

bool gh_fail(gh_err *e, const char *fmt, ...)
{
    if (!e)
        return false;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    e->sys = 0;
    return false;
}

bool gh_fail_sys(gh_err *e, int errnum, const char *fmt, ...)
{
    if (!e)
        return false;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof e->msg)
        snprintf(e->msg + n, sizeof e->msg - (size_t)n, ": %s", strerror(errnum));
    e->sys = errnum;
    return false;
}

void gh_err_context(gh_err *e, const char *fmt, ...)
{
    if (!e)
        return;
    char old[GH_ERR_MAX];
    memcpy(old, e->msg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof e->msg)
        snprintf(e->msg + n, sizeof e->msg - (size_t)n, ": %s", old);
}

/*
 * buf: growth doubles from 1 KiB; consumed bytes are reclaimed by sliding the unread
 * part to the front before growing.
 */
#include "core/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool gh_buf_reserve(struct gh_buf *b, size_t n)
{
    if (b->cap - b->end >= n)
        return true;
    size_t len = gh_buf_len(b);
    if (b->start && b->cap - len >= n) {
        memmove(b->data, b->data + b->start, len);
        b->start = 0;
        b->end = len;
        return true;
    }
    size_t cap = b->cap ? b->cap : 1024;
    while (cap - len < n)
        cap *= 2;
    char *d = malloc(cap);
    if (!d)
        return false;
    if (len)
        memcpy(d, b->data + b->start, len);
    free(b->data);
    b->data = d;
    b->cap = cap;
    b->start = 0;
    b->end = len;
    return true;
}

bool gh_buf_append(struct gh_buf *b, const void *data, size_t n)
{
    if (n == 0)
        return true; /* an empty buffer's data may be NULL, which memcpy may not take */
    if (!gh_buf_reserve(b, n))
        return false;
    memcpy(b->data + b->end, data, n);
    b->end += n;
    return true;
}

bool gh_buf_printf(struct gh_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !gh_buf_reserve(b, (size_t)n + 1))
        return false;
    va_start(ap, fmt);
    vsnprintf(b->data + b->end, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->end += (size_t)n;
    return true;
}

void gh_buf_consume(struct gh_buf *b, size_t n)
{
    b->start += n;
    if (b->start >= b->end)
        b->start = b->end = 0;
}

void gh_buf_clear(struct gh_buf *b)
{
    b->start = b->end = 0;
}

void gh_buf_release_if_empty(struct gh_buf *b)
{
    if (b->start == b->end && b->data) {
        free(b->data);
        *b = (struct gh_buf){0};
    }
}

void gh_buf_free(struct gh_buf *b)
{
    free(b->data);
    *b = (struct gh_buf){0};
}

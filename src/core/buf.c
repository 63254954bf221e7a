/*
 * buf: growth doubles from 1 KiB; consumed bytes are reclaimed by sliding the unread
 * part to the front before growing. Each thread keeps some freed blocks of each size up to
 * 32 KiB (what a short session takes, and what a relay passes a TLS record on in) to hand
 * out again without malloc: a relay takes and gives back several per record.
 */
#include "core/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

#define CACHE_CLASSES 6 /* 1, 2, 4, 8, 16 and 32 KiB */
/* At most, of one size: with a thousand sessions a worker has hundreds of sends in flight,
 * each holding a block, and fewer spares sent most of them back through malloc. */
#define CACHE_BLOCKS      256
#define CACHE_CLASS_BYTES (256 * 1024) /* and at most this much of one size */

struct block_cache {
    unsigned n;
    void *blocks[CACHE_BLOCKS];
};

static _Thread_local struct block_cache caches[CACHE_CLASSES];

/* Capacities are 1 KiB doubled, so the class is the power of two above it: its bit, counted
 * without a loop (twice per session). */
static struct block_cache *cache_for(size_t cap, unsigned *limit)
{
    if (cap < 1024 || (cap & (cap - 1)))
        return NULL;
    unsigned i = (unsigned)__builtin_ctzl(cap) - 10;
    if (i >= CACHE_CLASSES)
        return NULL;
    unsigned by_bytes = CACHE_CLASS_BYTES / (unsigned)cap;
    *limit = by_bytes < CACHE_BLOCKS ? by_bytes : CACHE_BLOCKS;
    return &caches[i];
}

static void *block_take(size_t cap)
{
    unsigned limit;
    struct block_cache *c = cache_for(cap, &limit);
    return c && c->n ? c->blocks[--c->n] : malloc(cap);
}

static void block_give(void *data, size_t cap)
{
    unsigned limit;
    struct block_cache *c = cache_for(cap, &limit);
    if (GH_KEEP_SPARES && data && c && c->n < limit)
        c->blocks[c->n++] = data;
    else
        free(data);
}

void gh_buf_cache_drain(void)
{
    for (unsigned i = 0; i < CACHE_CLASSES; i++)
        while (caches[i].n)
            free(caches[i].blocks[--caches[i].n]);
}

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
    char *d = block_take(cap);
    if (!d)
        return false;
    if (len)
        memcpy(d, b->data + b->start, len);
    block_give(b->data, b->cap);
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

bool gh_buf_move(struct gh_buf *to, struct gh_buf *from)
{
    if (gh_buf_len(to) == 0) {
        struct gh_buf spare = *to;
        *to = *from;
        *from = spare;
        gh_buf_clear(from);
        return true;
    }
    if (!gh_buf_append(to, gh_buf_head(from), gh_buf_len(from)))
        return false;
    gh_buf_clear(from);
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
        block_give(b->data, b->cap);
        *b = (struct gh_buf){0};
    }
}

void gh_buf_free(struct gh_buf *b)
{
    block_give(b->data, b->cap);
    *b = (struct gh_buf){0};
}

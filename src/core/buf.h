/*
 * buf: a growable byte buffer with a read cursor, for connection input and output.
 * Memory is taken on first use and can be released when idle, to keep idle sessions small.
 */
#ifndef GH_BUF_H
#define GH_BUF_H
#include <stdbool.h>
#include <stddef.h>

struct gh_buf {
    char *data;
    size_t start, end, cap; /* unread bytes are data[start..end) */
};

static inline size_t gh_buf_len(const struct gh_buf *b)
{
    return b->end - b->start;
}
static inline char *gh_buf_head(const struct gh_buf *b)
{
    return b->data + b->start;
}

/* Makes room for at least n more bytes at the end; false when memory runs out. */
bool gh_buf_reserve(struct gh_buf *b, size_t n);
bool gh_buf_append(struct gh_buf *b, const void *data, size_t n);
bool gh_buf_printf(struct gh_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends from's unread bytes to `to` and empties from: when `to` is empty, the two trade
 * memory instead of copying. False when memory runs out (from is then left as it was). */
bool gh_buf_move(struct gh_buf *to, struct gh_buf *from);
/* Marks n unread bytes as consumed. */
void gh_buf_consume(struct gh_buf *b, size_t n);
/* Drops everything; keeps the memory. */
void gh_buf_clear(struct gh_buf *b);
/* Gives the memory back when the buffer is empty. */
void gh_buf_release_if_empty(struct gh_buf *b);
void gh_buf_free(struct gh_buf *b);
/* Frees the calling thread's cached blocks; call before a thread that used buffers ends. */
void gh_buf_cache_drain(void);

#endif

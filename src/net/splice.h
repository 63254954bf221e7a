/*
 * splice: moving a relay's bytes between two plain sockets through a kernel pipe, so they are
 * never copied into user space. One leg per direction; the relay decides when to use it.
 */
#ifndef GH_SPLICE_H
#define GH_SPLICE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* One direction. Closed (fds -1) until gh_splice_leg_open. */
struct gh_splice_leg {
    int rd, wr;        /* the pipe */
    size_t held;       /* bytes in the pipe, taken from src and not yet given to dst */
    bool eof;          /* src has ended */
    bool shut;         /* ... and dst was told so (SHUT_WR) once everything before it was through */
    bool grow_refused; /* the kernel would not grow the pipe: not asked again */
    long pages;        /* of the pipe, counted in the process's pipe budget */
};

/* A pipe of the kernel's default size, which grows while the leg fills it (net/splice.c).
 * False when no pipe could be had (out of descriptors): the relay goes on copying. */
bool gh_splice_leg_open(struct gh_splice_leg *l);
/* The user's pipe limit in pages (fs.pipe-user-pages-soft, read by default; -1: none). */
void gh_splice_set_pipe_budget(long soft_pages);
void gh_splice_leg_close(struct gh_splice_leg *l);

/* Moves what is ready from src through the pipe into dst, and passes src's end on. Returns
 * the bytes given to dst (0: none were ready), or -1 on a failure that ends the relay. */
ssize_t gh_splice_pump(struct gh_splice_leg *l, int src, int dst);

/* The EPOLL* events src and dst are to be watched for on behalf of this leg: src for input
 * while the pipe is empty (so a full pipe never spins), dst for room while the pipe holds
 * bytes. */
uint32_t gh_splice_src_events(const struct gh_splice_leg *l);
uint32_t gh_splice_dst_events(const struct gh_splice_leg *l);

/* src has ended and dst has been told. */
static inline bool gh_splice_leg_done(const struct gh_splice_leg *l)
{
    return l->shut;
}

#endif
